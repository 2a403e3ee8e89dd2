/**
 * `halo testbed up|status|down`. The flag checks, the non-root error and the state file's round
 * trip run everywhere, in process, with an injected uid and a fake `ip`/`nft`/`tc`; the real round
 * trip runs the compiled CLI as root and checks that no namespace is left behind.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { HaloError, TestbedError } from "../../src/base/index.js";
import { testbedCommand, type TestbedCommandDeps } from "../../src/cli/testbed.js";
import { parseNamespaceList, runCommand, type Argv } from "../../src/testbed/index.js";
import { describeRun, parseJsonLine, runHalo } from "../helpers/cliRunner.js";

const stateDir = mkdtempSync(path.join(tmpdir(), "halo-testbed-cli-"));
after(() => rmSync(stateDir, { recursive: true, force: true }));

function bufferIo() {
  const out = { stdout: "", stderr: "" };
  return { out, io: { stdout: (text: string) => void (out.stdout += text), stderr: (text: string) => void (out.stderr += text) } };
}

/** A fake `ip`/`nft`/`tc` that keeps the namespaces `ip netns add` made; nft and tc print what the parsers expect. */
function fakeSystem(uid: number | undefined) {
  const ran: string[] = [];
  const namespaces = new Set<string>();
  const run = async (argv: Argv): Promise<string> => {
    ran.push(argv.join(" "));
    if (argv.join(" ") === "ip netns list") return [...namespaces].join("\n");
    if (argv[1] === "netns" && argv[2] === "add") namespaces.add(argv[3]!);
    if (argv[1] === "netns" && argv[2] === "del") namespaces.delete(argv[3]!);
    if (argv.includes("counters")) {
      const ports = [...namespaces].filter((ns) => /-n\d+$/.test(ns)).map((ns) => `hp${/-n(\d+)$/.exec(ns)![1]}`);
      return JSON.stringify({ nftables: ports.flatMap((p) => [`${p}_from`, `${p}_to`].map((name) => ({ counter: { name, packets: 2, bytes: 100 } }))) });
    }
    if (argv.includes("qdisc") && argv.includes("show")) return "[]";
    return "";
  };
  const deps: TestbedCommandDeps = { getuid: () => uid, run };
  return { ran, namespaces, deps };
}

test("without root every subcommand fails with HALO_ERR_TESTBED, names the uid, and points to halo cluster --local", async () => {
  for (const sub of ["up", "status", "down"]) {
    const fake = fakeSystem(1000);
    const { io, out } = bufferIo();
    const argv = sub === "up" ? [sub, "--devices", "3", "--state-dir", stateDir] : [sub, "--state-dir", stateDir];
    await assert.rejects(testbedCommand(argv, io, fake.deps), (error: unknown) =>
      error instanceof TestbedError && error.code === "HALO_ERR_TESTBED" && /^halo testbed \w+: needs root \(running as uid 1000\)/.test(error.message) && error.message.includes("halo cluster --local N --loss PCT"));
    assert.deepEqual(fake.ran, [], "nothing runs before the check");
    assert.equal(out.stdout, "");
  }
});

test("bad flags are usage errors, raised before the root check and before any command runs", async () => {
  const cases: Array<[string[], RegExp]> = [
    [[], /takes one of up, status, down/],
    [["sideways"], /got 'sideways'/],
    [["up", "extra"], /no arguments besides flags, got 'extra'/],
    [["up"], /needs --devices N \(or --spec FILE\)/],
    [["up", "--devices", "0"], /--devices must be an integer from 1 to 254, got '0'/],
    [["up", "--devices", "300"], /--devices must be an integer from 1 to 254/],
    [["up", "--devices", "2", "--loss", "101"], /--loss must be a number from 0 to 100/],
    [["up", "--devices", "2", "--loss", "-1"], /--loss must be a number from 0 to 100, got '-1'/],
    [["up", "--devices", "2", "--bandwidth", "fast"], /--bandwidth must be a number/],
    [["up", "--devices", "2", "--name", "Has-Dash"], /--name 'Has-Dash' must be a lowercase letter/],
    [["up", "--devices", "2", "--name", "waytoolongname1"], /--name 'waytoolongname1'/],
    [["up", "--devices", "2", "--spec", path.join(stateDir, "missing.json")], /missing\.json/],
    [["status", "--loss", "5"], /--loss applies to halo testbed up only/],
    [["down", "--devices", "2"], /--devices applies to halo testbed up only/],
    [["down", "--json"], /--json applies to halo testbed up and status only/],
    [["up", "--devices", "2", "--delay", "3"], /unknown flag '--delay'/],
  ];
  for (const [argv, message] of cases) {
    const fake = fakeSystem(1000);
    await assert.rejects(testbedCommand(argv, bufferIo().io, fake.deps), (error: unknown) => error instanceof HaloError && (error.code === "HALO_ERR_USAGE" || error.code === "HALO_ERR_FILE") && message.test(error.message), argv.join(" "));
    assert.deepEqual(fake.ran, [], argv.join(" "));
  }
});

test("up writes a state file that status reads and down removes, with every namespace it made", async () => {
  const fake = fakeSystem(0);
  const flags = ["--name", "halofakecli", "--state-dir", stateDir];
  const up = bufferIo();
  assert.equal(await testbedCommand(["up", "--devices", "3", "--loss", "5", "--bandwidth", "20", "--json", ...flags], up.io, fake.deps), 0);
  const made = JSON.parse(up.out.stdout) as { stateFile: string; testbed: string; nodes: Array<{ role: string; namespace: string; address: string; lossPercent: number; bandwidthMbit: number }> };
  assert.match(made.testbed, /^halofakecli-0-[0-9a-f]{6}$/, "owner pid 0: a persistent testbed");
  assert.deepEqual(made.nodes.map((n) => [n.role, n.address, n.lossPercent, n.bandwidthMbit]), [["coordinator", "10.201.77.1", 0, 20], ["worker", "10.201.77.2", 5, 20], ["worker", "10.201.77.3", 5, 20]]);
  assert.ok(existsSync(made.stateFile) && readFileSync(made.stateFile, "utf8").includes(made.testbed));
  assert.equal(fake.namespaces.size, 4);
  assert.ok(fake.ran.some((line) => line.includes("tc qdisc add dev hp2 root tbf rate 20000kbit")));

  await assert.rejects(testbedCommand(["up", "--devices", "2", ...flags], bufferIo().io, fake.deps), /'halofakecli' is already up/);
  const status = bufferIo();
  await testbedCommand(["status", "--json", ...flags], status.io, fake.deps);
  const seen = JSON.parse(status.out.stdout) as { up: boolean; nodes: Array<{ present: boolean; drops: { fromNodePackets: number } }> };
  assert.equal(seen.up, true);
  assert.deepEqual(seen.nodes.map((n) => [n.present, n.drops.fromNodePackets]), [[true, 2], [true, 2], [true, 2]]);

  // A namespace of the same name without a state file (a lost file) is swept by down too.
  fake.namespaces.add("halofakecli-0-abcdef-n0");
  const down = bufferIo();
  await testbedCommand(["down", ...flags], down.io, fake.deps);
  assert.match(down.out.stdout, /removed 'halofakecli': 5 namespaces/);
  assert.deepEqual([...fake.namespaces], []);
  assert.equal(existsSync(made.stateFile), false);
  const again = bufferIo();
  await testbedCommand(["status", ...flags], again.io, fake.deps);
  assert.match(again.out.stdout, /'halofakecli' is not up/);
});

test("up --spec: a worker's own memoryMB becomes its --memory-budget (a preset's memory and the coordinator's memoryMB do not), its slowdownAfter its --slowdown-after", async () => {
  const fake = fakeSystem(0);
  const spec = path.join(stateDir, "budget-spec.json");
  writeFileSync(spec, JSON.stringify([{ memoryMB: 512 }, { preset: "pi4", slowdownAfter: "30:4" }, { memoryMB: 0.5, delay: 2 }]));
  const flags = ["--name", "halofakemem", "--state-dir", stateDir];
  const up = bufferIo();
  assert.equal(await testbedCommand(["up", "--spec", spec, "--json", ...flags], up.io, fake.deps), 0);
  const made = JSON.parse(up.out.stdout) as { nodes: Array<{ processFlags: string[] }> };
  const budgets = made.nodes.map((n) => n.processFlags.flatMap((flag, i, all) => (flag === "--memory-budget" ? [all[i + 1]!] : [])));
  assert.deepEqual(budgets, [[], [], ["0.5"]], JSON.stringify(made.nodes));
  const later = made.nodes.map((n) => n.processFlags.flatMap((flag, i, all) => (flag === "--slowdown-after" ? [all[i + 1]!] : [])));
  assert.deepEqual(later, [[], ["30:4"], []]);
  await testbedCommand(["down", ...flags], bufferIo().io, fake.deps);
  assert.deepEqual([...fake.namespaces], []);
});

const isRoot = process.getuid?.() === 0;
// CI runs as root and sets HALO_REQUIRE_NETNS=1, so that a lost privilege fails there instead of skipping.
const skip = isRoot || process.env["HALO_REQUIRE_NETNS"] === "1" ? false : "needs root to create network namespaces (CI runs as root)";

describe("halo testbed as root, for real", { skip }, () => {
  test("up, status and down leave no namespace behind", async () => {
    assert.ok(isRoot, "HALO_REQUIRE_NETNS=1, but not running as root");
    const family = `hcli${process.pid % 100_000_000}`;
    const flags = ["--name", family, "--state-dir", stateDir];
    const ours = async (): Promise<string[]> => parseNamespaceList(await runCommand(["ip", "netns", "list"])).filter((ns) => ns.startsWith(`${family}-`));
    try {
      const upArgs = ["testbed", "up", "--devices", "3", "--loss", "2", "--bandwidth", "50", "--json", ...flags];
      const made = parseJsonLine<{ nodes: Array<{ namespace: string }>; bridgeNamespace: string }>(upArgs, await runHalo(upArgs));
      assert.deepEqual(new Set(await ours()), new Set([made.bridgeNamespace, ...made.nodes.map((n) => n.namespace)]));
      const statusArgs = ["testbed", "status", "--json", ...flags];
      const status = parseJsonLine<{ up: boolean; nodes: Array<{ present: boolean; shaped: { shaped: boolean } }> }>(statusArgs, await runHalo(statusArgs));
      assert.equal(status.up, true);
      assert.ok(status.nodes.every((n) => n.present && n.shaped.shaped), JSON.stringify(status));
      const downArgs = ["testbed", "down", ...flags];
      const down = await runHalo(downArgs);
      assert.equal(down.code, 0, describeRun(downArgs, down));
      assert.match(down.stdout, /removed .*: 4 namespaces/);
      assert.deepEqual(await ours(), []);
    } finally {
      await runHalo(["testbed", "down", ...flags]);
    }
  });
});
