/**
 * `npm run bench:scheduler`: the scheduler against the uniform split on a heterogeneous local
 * cluster, measured in one run, plus the planner's own time for a 7B-shape model.
 *
 * The cluster (halo cluster --local --spec): 8 devices, 2 fast, 4 at half their speed, 2 fast
 * ones on lossy links, running a synthetic TinyLlama-1.1B-shape Q4_0 model (4 layers). This
 * machine has 2 cores for 8 processes, so real compute contends; every device is also slowed by
 * a base factor (default 8: a Pi 4 core is several times slower than this x86 one), so that most of a
 * device's time is its emulated slowdown, which runs in parallel as Pi cores would. For each
 * placement and repeat it records decode tok/s and the greedy tokens, and compares the tokens
 * with a single-node run of the same prompt (positions equal, and the prefix before the first
 * difference). Env: HALO_BENCH_TOKENS (32), HALO_BENCH_REPEATS (2), HALO_BENCH_BASE_SLOWDOWN (8),
 * HALO_BENCH_LOSS (5 percent). Last, live re-planning: on a worker leaving (migration.ts), how
 * long loading the moved groups takes while tokens go on and the stall at the switch; and on a
 * worker slowing down mid-run (drift.ts), tok/s afterwards with and without re-planning.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeSyntheticModel } from "../../src/model/index.js";
import { describeRun, mean } from "../report.js";
import { benchDrift, renderDrift } from "./drift.js";
import { benchMigration, renderMigration } from "./migration.js";
import { benchPlannerTime, renderPlannerTime } from "./plannerTime.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const root = join(here, "..", "..", "..");
const haloMain = join(root, "dist", "src", "cli", "main.js");
const env = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);
const nTokens = env("HALO_BENCH_TOKENS", 32);
const repeats = env("HALO_BENCH_REPEATS", 2);
const base = env("HALO_BENCH_BASE_SLOWDOWN", 8);
const lossPercent = env("HALO_BENCH_LOSS", 5);
const PROMPT = "Once upon a time";

interface RunResult {
  decodeTokS: number;
  tokens: number[];
  dropped: number;
  expected: number;
  groupsPerDevice: number[];
  migrationMs: number | undefined;
  /** Each device's measured ms per FFN group (its slowdown included), as the scheduler saw it. */
  ffnGroupMs: number[];
}

function haloJson(args: string[]): Record<string, unknown> {
  const out = execFileSync(process.execPath, [haloMain, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 600_000 });
  return JSON.parse(out.trim().split("\n").at(-1)!) as Record<string, unknown>;
}

function clusterRun(model: string, spec: string, placement: string): RunResult {
  const j = haloJson(["cluster", "--model", model, "--spec", spec, "--placement", placement, "--prompt", PROMPT, "-n", String(nTokens), "--ignore-eos", "--temperature", "0", "--seed", "1", "--json"]) as {
    tokens: number[]; timings: { decodeTokensPerSecond: number };
    cluster: { totals: { droppedContributions: number; expectedContributions: number }; placement: { groupsPerDevice: number[]; replanned?: { migrationMs: number } }; profiles: Array<{ ffnGroupMs: number } | null> };
  };
  return {
    decodeTokS: j.timings.decodeTokensPerSecond, tokens: j.tokens, dropped: j.cluster.totals.droppedContributions, expected: j.cluster.totals.expectedContributions,
    groupsPerDevice: j.cluster.placement.groupsPerDevice, migrationMs: j.cluster.placement.replanned?.migrationMs,
    ffnGroupMs: j.cluster.profiles.map((p) => p?.ffnGroupMs ?? Number.NaN),
  };
}

function agreement(tokens: readonly number[], dense: readonly number[]): { equal: number; prefix: number } {
  let prefix = 0;
  while (prefix < dense.length && tokens[prefix] === dense[prefix]) prefix++;
  return { equal: tokens.filter((t, i) => t === dense[i]).length / dense.length, prefix };
}

async function main(): Promise<void> {
  const cacheDir = join(root, "bench", ".cache");
  mkdirSync(cacheDir, { recursive: true });
  const model = join(cacheDir, "tinyllama-1.1b-4l-q4_0.gguf");
  if (!existsSync(model)) writeSyntheticModel(model, { shape: "tinyllama-1.1b", type: "q4_0", seed: 1, nLayers: 4 });
  const dir = mkdtempSync(join(tmpdir(), "halo-bench-scheduler-"));
  try {
    const spec = join(dir, "spec.json");
    const devices = [
      ...[0, 1].map((i) => ({ name: `fast${i}`, slowdown: base })),
      ...[2, 3, 4, 5].map((i) => ({ name: `slow${i}`, slowdown: 2 * base })),
      ...[6, 7].map((i) => ({ name: `lossy${i}`, slowdown: base, loss: lossPercent })),
    ];
    writeFileSync(spec, JSON.stringify(devices));
    process.stdout.write(`${describeRun().line}\nheterogeneous local cluster: ${devices.map((d) => `${d.name} ×${d.slowdown}${"loss" in d ? ` ${d.loss}% loss` : ""}`).join(", ")}\n`);
    const dense = (haloJson(["run", "--model", model, "--prompt", PROMPT, "-n", String(nTokens), "--ignore-eos", "--temperature", "0", "--json"]) as { tokens: number[] }).tokens;
    const results: Record<string, RunResult[]> = { uniform: [], halo: [] };
    for (let r = 0; r < repeats; r++) {
      for (const placement of ["uniform", "halo"] as const) {
        process.stderr.write(`bench:scheduler: ${placement}, repeat ${r + 1}/${repeats}\n`);
        results[placement]!.push(clusterRun(model, spec, placement));
      }
    }
    process.stdout.write(`\n| placement | decode tok/s (mean) | runs | tokens equal to single node | matching prefix | contributions dropped | groups per device | migration ms |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n`);
    for (const [placement, runs] of Object.entries(results)) {
      const agree = runs.map((run) => agreement(run.tokens, dense));
      const migration = runs.map((run) => run.migrationMs).filter((ms): ms is number => ms !== undefined);
      process.stdout.write(`| ${placement} | ${mean(runs.map((run) => run.decodeTokS)).toFixed(2)} | ${runs.map((run) => run.decodeTokS.toFixed(2)).join(", ")} | ${(100 * mean(agree.map((a) => a.equal))).toFixed(1)}% | ${agree.map((a) => a.prefix).join(", ")} of ${nTokens} | ${runs.map((run) => `${run.dropped}/${run.expected}`).join(", ")} | ${runs[0]!.groupsPerDevice.join(" ")} | ${migration.length === 0 ? "-" : migration.map((ms) => ms.toFixed(0)).join(", ")} |\n`);
    }
    const ratio = mean(results["halo"]!.map((run) => run.decodeTokS)) / mean(results["uniform"]!.map((run) => run.decodeTokS));
    process.stdout.write(`\nhalo ÷ uniform decode tok/s: ${ratio.toFixed(2)}x (target ≥ 1.5x)\n`);
    // What the placements alone allow: the slowest device's groups × its measured ms per group.
    const busiestMs = (run: RunResult): number => Math.max(...run.groupsPerDevice.map((n, d) => n * run.ffnGroupMs[d]!));
    const [uniformMs, haloMs] = [busiestMs(results["uniform"]![0]!), busiestMs(results["halo"]![0]!)];
    process.stdout.write(`compute balance of the first runs' placements (the busiest device's groups × its measured ms per group, per token): uniform ${uniformMs.toFixed(1)} ms, halo ${haloMs.toFixed(1)} ms, ${(uniformMs / haloMs).toFixed(2)}x; the rest of a token is the protocol, and the 2 cores every device's real compute shares\n\nplanner time, 8 devices × a Llama-2-7B-shape model (target < 50 ms):\n`);
    process.stdout.write(renderPlannerTime(benchPlannerTime({ runs: 5 })) + "\n");
    process.stdout.write("\nlive re-plan: worker 3 of 3 leaves after 8 tokens; its groups go to workers 1 and 2, which load them while generating (in-process workers, same model):\n");
    process.stdout.write(renderMigration(await benchMigration(model)) + "\n");
    process.stdout.write("\nlive re-plan on drift: 3 worker processes from the uniform split, worker 1 six times slower 2 s into the run (--slowdown-after 2:6), with and without re-planning:\n");
    process.stdout.write(renderDrift(await benchDrift(root, model)) + "\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
