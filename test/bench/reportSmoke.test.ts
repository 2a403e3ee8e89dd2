/**
 * CI smoke test of `npm run bench:report` in its smallest form: two loss rates, 2 devices (each
 * in its own network namespace), a 1-layer synthetic model, 4 tokens, one repeat, and fidelity on
 * stories260K at both loss rates; then the same command again, which must resume every cell.
 * Needs root, `ip` and `nft`; it skips without them, unless HALO_REQUIRE_NETNS=1 (CI) makes that
 * a failure.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { parseNamespaceList } from "../../src/testbed/index.js";
import { projectRoot } from "../helpers/paths.js";

function hasTool(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: "ignore" });
    return true;
  } catch {
    return false; // not installed, or cannot run: either way the testbed cannot be built
  }
}

const missing = [...(process.getuid?.() === 0 ? [] : ["root"]), ...(hasTool("ip", ["-V"]) ? [] : ["ip (iproute2)"]), ...(hasTool("nft", ["--version"]) ? [] : ["nft (nftables)"])];
const requireNetns = process.env["HALO_REQUIRE_NETNS"] === "1";
const skip = missing.length > 0 && !requireNetns ? `bench:report builds network namespaces and needs ${missing.join(", ")} (CI runs as root with both installed)` : false;
if (skip !== false) process.stderr.write(`# reportSmoke.test: skipped: ${skip}\n`);

const outDir = mkdtempSync(path.join(tmpdir(), "halo-report-smoke-"));
after(() => rmSync(outDir, { recursive: true, force: true }));
const args = [
  path.join(projectRoot(), "dist", "bench", "report", "main.js"), "--shape", "tiny", "--layers", "1", "--tokens", "4", "--devices", "2", "--loss", "0,5", "--repeats", "1",
  "--eval-tokens", "128", "--eval-window", "64", "--calibration-tokens", "512", "--out", outDir,
];
const nTokens = 4;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  pid: number | undefined;
}

function runReport(): Promise<Result> {
  const env = { ...process.env };
  delete env["NODE_TEST_CONTEXT"];
  return new Promise((resolve) => {
    const child = execFile(process.execPath, args, { env, timeout: 180_000, maxBuffer: 16 * 1024 * 1024, encoding: "utf8" }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr, pid: child.pid }));
  });
}

interface Results {
  speed: Array<{ devices: number; lossPercent: number; mode: string; tpotMs: number[]; tpotMeanMs: number; expectedContributions: number; wireDrops: number; groupsPerDevice: number[] }>;
  fidelity: Array<{ devices: number; lossPercent: number; placement: string; densePerplexity: number; rows: Array<{ critical: string; perplexity: number; top1Agreement: number }> }>;
  summary: { fullHaloOverStrict: number; text: string[] };
}

test("bench:report end to end in namespaces: results.json, report.md and the SVG plots, with sane values; a second run resumes", { skip, timeout: 300_000 }, async () => {
  assert.deepEqual(missing, [], "the namespace testbed needs root, ip and nft");
  const first = await runReport();
  const context = `exit ${first.code}\n--- stdout ---\n${first.stdout}\n--- stderr ---\n${first.stderr.slice(-4000)}`;
  assert.equal(first.code, 0, context);
  assert.match(first.stdout, /headline \(2 devices, 5% loss\): full halo ÷ strict TCP = \d+\.\d\dx tok\/s {3}\[paper: ≥ 3\.41x/, context);
  assert.match(first.stdout, /distributed-llama baseline: skipped \(no --baseline-dllama\)/, context);
  assert.match(first.stderr, /\[#{24}\] 12\/12 fidelity, 2 devices, 5%, halo placement \| elapsed \d+s, ETA 0s/, context);

  const results = JSON.parse(readFileSync(path.join(outDir, "results.json"), "utf8")) as Results;
  assert.deepEqual(results.speed.map((c) => `${c.lossPercent}/${c.mode}`).sort(), ["0/halo", "0/predictor", "0/relaxed", "0/strict", "5/halo", "5/predictor", "5/relaxed", "5/strict"]);
  for (const cell of results.speed) {
    const where = `${cell.lossPercent}% ${cell.mode}: ${JSON.stringify(cell)}`;
    assert.equal(cell.devices, 2, where);
    assert.equal(cell.tpotMs.length, nTokens - 1, where);
    assert.ok(cell.tpotMs.every((ms) => ms > 0 && ms < 10_000), where);
    assert.ok(Math.abs(cell.tpotMeanMs - cell.tpotMs.reduce((a, b) => a + b, 0) / cell.tpotMs.length) < 1e-9, where);
    assert.equal(cell.groupsPerDevice.length, 2, where);
    if (cell.lossPercent === 0) assert.equal(cell.wireDrops, 0, `no rule drops anything at 0%: ${where}`);
    if (cell.mode !== "halo") assert.ok(cell.expectedContributions > 0, `the uniform split gives the worker groups: ${where}`);
  }
  assert.deepEqual(results.fidelity.map((c) => `${c.lossPercent}/${c.placement}`).sort(), ["0/halo", "0/uniform", "5/halo", "5/uniform"]);
  for (const cell of results.fidelity) {
    const where = JSON.stringify(cell);
    assert.ok(cell.densePerplexity > 1 && cell.densePerplexity < 100, where);
    assert.deepEqual(cell.rows.map((r) => r.critical), ["none", "predictor"], where);
    for (const row of cell.rows) assert.ok(row.perplexity >= cell.densePerplexity * 0.9 && row.perplexity < cell.densePerplexity * 50 && row.top1Agreement >= 0 && row.top1Agreement <= 1, where);
  }
  assert.ok(Number.isFinite(results.summary.fullHaloOverStrict) && results.summary.fullHaloOverStrict > 0, JSON.stringify(results.summary));

  const svgs = readdirSync(outDir).filter((name) => name.endsWith(".svg")).sort();
  assert.deepEqual(svgs, ["agreement-vs-loss.svg", "perplexity-vs-loss.svg", "scaling-vs-devices.svg", "speedup-vs-loss.svg", "tpot-vs-loss.svg"]);
  for (const name of svgs) {
    const svg = readFileSync(path.join(outDir, name), "utf8");
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[\s\S]*<\/svg>\n$/, name);
    assert.ok(!/NaN|Infinity|undefined/.test(svg), `${name} has a non-number in it`);
    assert.ok((svg.match(/<circle /g) ?? []).length >= 2, `${name} plots points`);
  }
  assert.match(readFileSync(path.join(outDir, "report.md"), "utf8"), /\| 2 \| 5 \| full halo \|/);
  const leftovers = parseNamespaceList(execFileSync("ip", ["netns", "list"], { encoding: "utf8" })).filter((ns) => ns.startsWith(`haloreport-${first.pid}-`));
  assert.deepEqual(leftovers, [], "the testbed is gone when the report ends");

  const second = await runReport();
  assert.equal(second.code, 0, second.stderr.slice(-4000));
  assert.equal((second.stderr.match(/\(resumed\)/g) ?? []).length, 12, `every cell comes from results.json:\n${second.stderr}`);
  const again = JSON.parse(readFileSync(path.join(outDir, "results.json"), "utf8")) as Results;
  assert.deepEqual(again.speed, results.speed);
  assert.equal(again.summary.fullHaloOverStrict, results.summary.fullHaloOverStrict);
});
