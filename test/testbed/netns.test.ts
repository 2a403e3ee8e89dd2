/**
 * The namespace testbed. The planner's command lists and parsers, and the executor's order and
 * teardown (through a recording runner), run everywhere. The real network test runs the
 * compiled `halo` CLI in three namespaces on a Linux bridge and needs root.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, describe, test } from "node:test";
import { HaloError, TestbedError } from "../../src/base/index.js";
import {
  NetnsTestbed, PERSISTENT_OWNER_PID, parseDropCounters, parseNamespaceList, parseQdiscStats, parseTestbedNamespace, planFamilyTeardown, planLeftoverTeardown,
  planLossUpdate, planTestbed, runCommand, testbedName, waitForJsonEvent,
  type Argv, type LinkDropCounters, type LinkQdiscStats, type TestbedTopology,
} from "../../src/testbed/index.js";
import { describeRun, haloMainPath, parseJsonLine, runHalo, type HaloRun } from "../helpers/cliRunner.js";
import { projectRoot } from "../helpers/paths.js";

const topology: TestbedTopology = { name: "t-42-ab", links: [{ bandwidthMbit: 50 }, { lossPercent: 5 }] };
const br = "t-42-ab-br";
const n0 = "t-42-ab-n0";
const n1 = "t-42-ab-n1";

test("the planner builds a bridge namespace, one namespace per node, veths, tbf and nft, exactly", () => {
  const plan = planTestbed(topology);
  assert.equal(plan.bridgeNamespace, br);
  assert.deepEqual(plan.nodeNamespaces, [n0, n1]);
  assert.deepEqual(plan.addresses, ["10.201.77.1", "10.201.77.2"]);
  assert.deepEqual(plan.bridgePorts, ["hp0", "hp1"]);
  const rule = (direction: string, port: string, counter: string): string[] =>
    [";", "add", "rule", "bridge", "halo_wire", "wire", direction, `"${port}"`, "ether", "type", "ip", "numgen", "random", "mod", "10000", "<", "500", "counter", "name", `"${counter}"`, "drop"];
  const expected: Argv[] = [
    ["ip", "netns", "add", br],
    ["ip", "netns", "add", n0],
    ["ip", "netns", "add", n1],
    ["ip", "-n", br, "link", "set", "lo", "up"],
    ["ip", "-n", br, "link", "add", "hbr", "type", "bridge"],
    ["ip", "-n", br, "link", "set", "hbr", "up"],
    ["ip", "-n", br, "link", "add", "hp0", "type", "veth", "peer", "name", "eth0", "netns", n0],
    ["ip", "-n", br, "link", "set", "hp0", "master", "hbr"],
    ["ip", "-n", br, "link", "set", "hp0", "up"],
    ["ip", "-n", n0, "link", "set", "lo", "up"],
    ["ip", "-n", n0, "link", "set", "eth0", "addrgenmode", "none"],
    ["ip", "-n", n0, "addr", "add", "10.201.77.1/24", "dev", "eth0"],
    ["ip", "-n", n0, "link", "set", "eth0", "up"],
    ["ip", "-n", br, "link", "add", "hp1", "type", "veth", "peer", "name", "eth0", "netns", n1],
    ["ip", "-n", br, "link", "set", "hp1", "master", "hbr"],
    ["ip", "-n", br, "link", "set", "hp1", "up"],
    ["ip", "-n", n1, "link", "set", "lo", "up"],
    ["ip", "-n", n1, "link", "set", "eth0", "addrgenmode", "none"],
    ["ip", "-n", n1, "addr", "add", "10.201.77.2/24", "dev", "eth0"],
    ["ip", "-n", n1, "link", "set", "eth0", "up"],
    // 50 Mbit/s is 62,500 bytes per 10 ms tick.
    ["ip", "netns", "exec", br, "tc", "qdisc", "add", "dev", "hp0", "root", "tbf", "rate", "50000kbit", "burst", "62500", "latency", "50ms"],
    ["ip", "netns", "exec", br, "nft", "add", "table", "bridge", "halo_wire", ";", "add", "chain", "bridge", "halo_wire", "wire", "{ type filter hook forward priority 0 ; policy accept ; }",
      ";", "add", "counter", "bridge", "halo_wire", "hp0_from", ";", "add", "counter", "bridge", "halo_wire", "hp0_to",
      ";", "add", "counter", "bridge", "halo_wire", "hp1_from", ";", "add", "counter", "bridge", "halo_wire", "hp1_to"],
    ["ip", "netns", "exec", br, "nft", "flush", "chain", "bridge", "halo_wire", "wire", ...rule("iifname", "hp1", "hp1_from"), ...rule("oifname", "hp1", "hp1_to")],
  ];
  assert.deepEqual(plan.setup, expected);
  assert.deepEqual(plan.teardown, [["ip", "netns", "del", n0], ["ip", "netns", "del", n1], ["ip", "netns", "del", br]]);
});

test("a loss update is one nft transaction; 0% links get no rule, small rates and the subnet are exact", () => {
  assert.deepEqual(planLossUpdate(topology, [0, 0]), ["ip", "netns", "exec", br, "nft", "flush", "chain", "bridge", "halo_wire", "wire"]);
  const update = planLossUpdate(topology, [0.01, 100]);
  assert.deepEqual(update.filter((token) => token === "<" ).length, 4);
  assert.deepEqual(update.filter((_, i) => update[i - 1] === "<"), ["1", "1", "10000", "10000"]);
  const custom = planTestbed({ name: "t-42-ab", links: [{ bandwidthMbit: 0.5 }], subnet: "10.9.8", queueLatencyMs: 20 });
  assert.deepEqual(custom.addresses, ["10.9.8.1"]);
  // Below a tick's worth, the bucket still holds ten full frames.
  assert.ok(custom.setup.some((argv) => argv.join(" ").endsWith("tc qdisc add dev hp0 root tbf rate 500kbit burst 15140 latency 20ms")));
});

test("the planner rejects topologies it cannot build, naming the field", () => {
  const rejects = (bad: Partial<TestbedTopology> & { links?: TestbedTopology["links"] }, pattern: RegExp): void =>
    assert.throws(() => planTestbed({ ...topology, ...bad }), (error: unknown) => error instanceof HaloError && error.code === "HALO_ERR_USAGE" && pattern.test(error.message));
  rejects({ name: "Bad Name" }, /testbed name 'Bad Name'/);
  rejects({ links: [] }, /1\.\.254 nodes, got 0/);
  rejects({ links: Array.from({ length: 255 }, () => ({})) }, /got 255/);
  rejects({ links: [{ lossPercent: 101 }] }, /link 0: lossPercent must be in \[0, 100\], got 101/);
  rejects({ links: [{}, { bandwidthMbit: -1 }] }, /link 1: bandwidthMbit/);
  rejects({ subnet: "192.168.1" }, /10\.0\.0\.0\/8/);
  rejects({ subnet: "10.300.1" }, /subnet '10\.300\.1'/);
  assert.throws(() => planLossUpdate(topology, [5]), /expected 2 loss values/);
  assert.throws(() => testbedName("Has-Dash", 1, "x"), /family 'Has-Dash'/);
  assert.equal(testbedName("halotest", 1234, "0a1b2c"), "halotest-1234-0a1b2c");
});

test("leftovers: only the family's namespaces whose owner died, nodes before bridges", () => {
  const listed = parseNamespaceList("halotest-100-aa-n1 (id: 3)\nhalotest-100-aa-br (id: 2)\nhalotest-100-aa-n0\nhalotest-200-bb-br\nhalobench-100-cc-br\nsomeone-else\nhalotest-100-aa\n\n");
  assert.deepEqual(listed, ["halotest-100-aa-n1", "halotest-100-aa-br", "halotest-100-aa-n0", "halotest-200-bb-br", "halobench-100-cc-br", "someone-else", "halotest-100-aa"]);
  const alive = new Set([200]);
  assert.deepEqual(planLeftoverTeardown(listed, "halotest", (pid) => alive.has(pid)), [
    ["ip", "netns", "del", "halotest-100-aa-n0"],
    ["ip", "netns", "del", "halotest-100-aa-n1"],
    ["ip", "netns", "del", "halotest-100-aa-br"],
  ]);
});

test("persistent testbeds (owner pid 0) survive leftover sweeps; the family sweep takes them and dead owners' leftovers only", () => {
  const listed = ["halotb-0-aa-n0", "halotb-0-aa-br", "halotb-100-bb-br", "halotb-200-cc-n0", "other-0-dd-br", "halotb-0"];
  const alive = (pid: number): boolean => pid === 200;
  assert.deepEqual(planLeftoverTeardown(listed, "halotb", alive), [["ip", "netns", "del", "halotb-100-bb-br"]]);
  assert.deepEqual(planFamilyTeardown(listed, "halotb", alive), [
    ["ip", "netns", "del", "halotb-0-aa-n0"],
    ["ip", "netns", "del", "halotb-0-aa-br"],
    ["ip", "netns", "del", "halotb-100-bb-br"],
  ]);
  assert.deepEqual(parseTestbedNamespace("halotb-0-aa-n12"), { namespace: "halotb-0-aa-n12", name: "halotb-0-aa", family: "halotb", ownerPid: 0, role: 12 });
  assert.equal(parseTestbedNamespace("halotb-0-aa")?.role, undefined);
  assert.equal(PERSISTENT_OWNER_PID, 0);
});

test("nft counters and tc statistics are read per link", () => {
  const counter = (name: string, packets: number, bytes: number) => ({ counter: { family: "bridge", name, table: "halo_wire", handle: 1, packets, bytes } });
  const nft = JSON.stringify({ nftables: [{ metainfo: { version: "1.0.6" } }, counter("hp0_from", 0, 0), counter("hp0_to", 0, 0), counter("hp1_from", 3, 300), counter("hp1_to", 7, 910)] });
  assert.deepEqual(parseDropCounters(topology, nft), [
    { fromNodePackets: 0, fromNodeBytes: 0, toNodePackets: 0, toNodeBytes: 0 },
    { fromNodePackets: 3, fromNodeBytes: 300, toNodePackets: 7, toNodeBytes: 910 },
  ]);
  assert.throws(() => parseDropCounters(topology, JSON.stringify({ nftables: [counter("hp0_from", 0, 0)] })), (e: unknown) => e instanceof TestbedError && /no counters hp0_from and hp0_to/.test(e.message));
  assert.throws(() => parseDropCounters(topology, JSON.stringify({ nftables: [counter("hp0_from", -1, 0), counter("hp0_to", 0, 0), counter("hp1_from", 0, 0), counter("hp1_to", 0, 0)] })), /'packets' is -1/);
  assert.throws(() => parseDropCounters(topology, "Error: no such table"), (e: unknown) => e instanceof TestbedError && e.code === "HALO_ERR_TESTBED");
  const tc = JSON.stringify([
    { kind: "noqueue", handle: "0:", dev: "hbr", bytes: 0, packets: 0 },
    { kind: "tbf", handle: "8001:", dev: "hp0", root: true, bytes: 123456, packets: 100, drops: 2, overlimits: 9, requeues: 0 },
    { kind: "noqueue", handle: "0:", dev: "hp1", bytes: 0, packets: 0 },
  ]);
  assert.deepEqual(parseQdiscStats(topology, tc), [
    { shaped: true, sentBytes: 123456, sentPackets: 100, drops: 2, overlimits: 9 },
    { shaped: false, sentBytes: 0, sentPackets: 0, drops: 0, overlimits: 0 },
  ]);
});

/** A fake `ip`/`nft`/`tc`: records every command, lists what `ip netns add` made, fails on request. */
function recordingRunner(failWhen?: (argv: Argv) => boolean) {
  const ran: string[] = [];
  const namespaces = new Set<string>(["halofake-999999999-dead00-n0", "halofake-999999999-dead00-br"]);
  const run = async (argv: Argv): Promise<string> => {
    ran.push(argv.join(" "));
    if (failWhen?.(argv) === true) throw new TestbedError(argv, "exited with status 1: injected failure");
    if (argv.join(" ") === "ip netns list") return [...namespaces].join("\n");
    if (argv[1] === "netns" && argv[2] === "add") namespaces.add(argv[3]!);
    if (argv[1] === "netns" && argv[2] === "del") namespaces.delete(argv[3]!);
    return "";
  };
  return { ran, namespaces, run };
}

test("the executor removes a dead owner's leftovers, builds in plan order, and tears down on close", async () => {
  const fake = recordingRunner();
  const testbed = await NetnsTestbed.create({ family: "halofake", links: [{}, { lossPercent: 2 }], run: fake.run });
  assert.deepEqual(fake.ran.slice(0, 3), ["ip netns list", "ip netns del halofake-999999999-dead00-n0", "ip netns del halofake-999999999-dead00-br"]);
  assert.deepEqual(fake.ran.slice(3), testbed.plan.setup.map((argv) => argv.join(" ")));
  assert.match(testbed.topology.name, new RegExp(`^halofake-${process.pid}-[0-9a-f]{6}$`));
  assert.equal(testbed.address(1), "10.201.77.2");
  assert.throws(() => testbed.address(2), /no such node; the testbed has 2/);
  await testbed.setLoss([1, 0]);
  assert.equal(fake.ran.at(-1), planLossUpdate(testbed.topology, [1, 0]).join(" "));
  fake.ran.length = 0;
  await testbed.close();
  await testbed.close();
  assert.deepEqual(fake.ran, ["ip netns list", ...testbed.plan.teardown.map((argv) => argv.join(" "))]);
  assert.deepEqual([...fake.namespaces], []);
});

test("a persistent testbed is not torn down with its process; attach() finds it again and close() removes it", async () => {
  const fake = recordingRunner();
  const hooks = (): number => process.listenerCount("exit") + process.listenerCount("SIGINT");
  const before = hooks();
  const made = await NetnsTestbed.create({ family: "halofake", links: [{}, {}], persistent: true, run: fake.run });
  assert.match(made.topology.name, /^halofake-0-[0-9a-f]{6}$/);
  assert.equal(hooks(), before, "no exit or signal hooks");
  const attached = NetnsTestbed.attach(made.topology, fake.run);
  assert.deepEqual((await attached.presentNamespaces()).missing, []);
  await attached.close();
  assert.deepEqual([...fake.namespaces], []);
  const transient = await NetnsTestbed.create({ family: "halofake", links: [{}], run: fake.run });
  assert.equal(hooks(), before + 2, "an owned testbed hooks exit and SIGINT");
  await transient.close();
  assert.equal(hooks(), before);
});

test("a failed setup tears down what it built and reports the command that failed", async () => {
  const fake = recordingRunner((argv) => argv.includes("veth"));
  await assert.rejects(NetnsTestbed.create({ family: "halofake", links: [{}, {}], run: fake.run }), (error: unknown) => error instanceof TestbedError && error.argv.includes("veth") && /injected failure/.test(error.message));
  const deleted = fake.ran.filter((line) => line.startsWith("ip netns del halofake-" + process.pid));
  assert.equal(deleted.length, 3, fake.ran.join("\n"));
  assert.deepEqual([...fake.namespaces], []);
});

const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : "needs root to create network namespaces, nft rules and tc qdiscs (CI runs as root)";
if (!isRoot) process.stderr.write(`# netns.test: the real network tests are skipped: ${skip}\n`);

describe("a testbed's owner interrupted", { skip }, () => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    test(`${signal} removes its namespaces, then ends the process as the signal would`, async () => {
      const testbedIndex = pathToFileURL(path.join(projectRoot(), "dist", "src", "testbed", "index.js")).href;
      const script = `const { NetnsTestbed } = await import(${JSON.stringify(testbedIndex)});
        const testbed = await NetnsTestbed.create({ family: "halosig", links: [{}, { lossPercent: 1 }] });
        console.log(testbed.topology.name);
        setInterval(() => {}, 1000);`;
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
      const name = await new Promise<string>((resolve, reject) => {
        child.stdout.setEncoding("utf8").once("data", (text: string) => resolve(text.trim()));
        child.once("exit", (code) => reject(new Error(`exited ${code} before building its testbed`)));
      });
      const ours = async (): Promise<string[]> => parseNamespaceList(await runCommand(["ip", "netns", "list"])).filter((ns) => ns.startsWith(`${name}-`));
      assert.equal((await ours()).length, 3);
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once("exit", (_code, how) => resolve(how)));
      child.kill(signal);
      assert.equal(await exited, signal);
      assert.deepEqual(await ours(), []);
    });
  }
});

const modelPath = path.join(projectRoot(), "models", "stories260K.gguf");
const clusterKey = "netns test cluster key, 32 bytes";
const workerPort = 9998;
const linkMbit = 50;
const nTokens = 40;
/** Strict mode at 5% loss waits out TCP retransmission timeouts (≥ 200 ms each); fewer tokens keep the file near its time budget. */
const nTokensStrictLossy = 20;
const generation = ["--model", modelPath, "--threads", "1", "--prompt", "Once upon a time", "--temperature", "0", "--json"];

interface RunJson {
  tokens: number[];
  cluster?: { devices: number; mode: string; lostWorkers: number[]; totals: { droppedContributions: number; expectedContributions: number; bytesSent: number } };
  perToken?: Array<{ ms: number; dropped: number }>;
}

/** node --test marks its children through NODE_TEST_CONTEXT; the CLI is not a test process. */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env["NODE_TEST_CONTEXT"];
  return env;
}

describe("the cluster CLI in namespaces on a bridge, loss dropped by nft, links shaped by tbf", { skip }, () => {
  let testbed: NetnsTestbed | undefined;
  const workerLogs: string[] = [];

  before(async () => {
    if (!isRoot) return;
    testbed = await NetnsTestbed.create({ family: "halotest", links: [0, 1, 2].map(() => ({ bandwidthMbit: linkMbit })) });
    // Loss stays off while the workers load their weights (DESIGN.md, "Testbed lessons").
    const workers: ChildProcess[] = [1, 2].map((node) => {
      const child = testbed!.spawn(node, process.execPath, [haloMainPath(), "worker", "--host", testbed!.address(node), "--port", String(workerPort), "--cluster-key", clusterKey, "--model", modelPath, "--threads", "1"], { env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
      child.stderr!.setEncoding("utf8").on("data", (text: string) => workerLogs.push(`[worker ${node}] ${text}`));
      return child;
    });
    const events = await Promise.all(workers.map((child) => waitForJsonEvent(child, "listening", 30_000)));
    assert.deepEqual(events.map((e) => [e["host"], e["tcpPort"]]), [[testbed.address(1), workerPort], [testbed.address(2), workerPort]]);
  });

  after(async () => {
    await testbed?.close();
  });

  async function clusterRun(mode: "relaxed" | "strict", maxTokens: number, extra: readonly string[] = []): Promise<{ args: string[]; run: HaloRun; json: RunJson }> {
    const workers = [1, 2].map((node) => `${testbed!.address(node)}:${workerPort}`).join(",");
    const args = [haloMainPath(), "run", ...generation, "--max-tokens", String(maxTokens), "--workers", workers, "--sync", mode, "--placement", "uniform", "--cluster-key", clusterKey, ...extra];
    const result = await testbed!.exec(0, process.execPath, args, { timeoutMs: 45_000, env: childEnv() });
    const run: HaloRun = { code: result.code, signal: result.signal, stdout: result.stdout, stderr: result.stderr + workerLogs.join("") };
    return { args, run, json: parseJsonLine<RunJson>(args, run) };
  }

  async function singleNodeTokens(maxTokens: number): Promise<number[]> {
    const args = ["run", ...generation, "--max-tokens", String(maxTokens)];
    return parseJsonLine<RunJson>(args, await runHalo(args)).tokens;
  }

  function sumDrops(counters: readonly LinkDropCounters[]): number {
    return counters.reduce((sum, link) => sum + link.fromNodePackets + link.toNodePackets, 0);
  }

  /**
   * At 0% loss both modes must reproduce the single-node tokens. Relaxed gives up on a
   * contribution at its soft deadline (at least 5 ms by default), and with three processes on two
   * cores a worker is sometimes descheduled that long; a 1 s floor makes it wait them out.
   */
  test("at 0% loss, both modes across the bridge give exactly the single-node tokens", async () => {
    const expected = await singleNodeTokens(nTokens);
    assert.equal(expected.length, nTokens);
    for (const mode of ["strict", "relaxed"] as const) {
      const { args, run, json } = await clusterRun(mode, nTokens, ["--deadline-min", "1000", "--deadline-max", "2000"]);
      const context = describeRun(args, run);
      assert.equal(json.cluster?.devices, 3, context);
      assert.equal(json.cluster.mode, mode, context);
      assert.deepEqual(json.cluster.lostWorkers, [], context);
      const { droppedContributions, expectedContributions } = json.cluster.totals;
      assert.equal(expectedContributions, nTokens * 2 * 2 * 5, `(a prefill and ${nTokens - 1} decode steps) × 2 workers × 2 phases × 5 layers: ${context}`);
      assert.deepEqual(json.tokens, expected, context);
      assert.equal(droppedContributions, 0, context);
    }
    assert.equal(sumDrops(await testbed!.dropCounters()), 0, "no rule drops anything at 0% loss");
  });

  test("5% loss dropped on the wire: strict stays exact, relaxed completes and drops contributions", async () => {
    const expected = await singleNodeTokens(nTokens);
    const dropsBefore = sumDrops(await testbed!.dropCounters());
    await testbed!.setLoss([0, 5, 5]);
    try {
      const strict = await clusterRun("strict", nTokensStrictLossy);
      assert.deepEqual(strict.json.tokens, expected.slice(0, nTokensStrictLossy), describeRun(strict.args, strict.run));
      assert.deepEqual(strict.json.cluster?.lostWorkers, [], describeRun(strict.args, strict.run));
      const relaxed = await clusterRun("relaxed", nTokens);
      const context = describeRun(relaxed.args, relaxed.run);
      assert.equal(relaxed.json.tokens.length, nTokens, context);
      assert.ok(relaxed.json.cluster!.totals.droppedContributions > 0, `5% loss on the datagrams of 40 tokens must drop some contributions: ${context}`);
      assert.ok(relaxed.json.cluster!.totals.droppedContributions < relaxed.json.cluster!.totals.expectedContributions, context);
    } finally {
      await testbed!.setLoss([0, 0, 0]);
    }
    const counters = await testbed!.dropCounters();
    assert.equal(counters[0]!.fromNodePackets + counters[0]!.toNodePackets, 0, "the coordinator's own link is lossless");
    for (const worker of [1, 2]) assert.ok(counters[worker]!.fromNodePackets > 0 && counters[worker]!.toNodePackets > 0, `worker ${worker}'s link dropped both ways: ${JSON.stringify(counters)}`);
    assert.ok(sumDrops(counters) > dropsBefore);
  });

  test("through a 50 Mbit tbf on every link the run completes and the shapers carry its bytes", async () => {
    const before = await testbed!.qdiscStats();
    const { args, run, json } = await clusterRun("relaxed", nTokens);
    const stats = await testbed!.qdiscStats();
    const context = describeRun(args, run);
    assert.equal(json.tokens.length, nTokens, context);
    const sent = (link: LinkQdiscStats, i: number): number => link.sentBytes - before[i]!.sentBytes;
    assert.ok(stats.every((link) => link.shaped), JSON.stringify(stats));
    // The worker ports carry what the coordinator sent (UDP payloads plus headers); the coordinator's port carries the replies.
    assert.ok(sent(stats[1]!, 1) + sent(stats[2]!, 2) > json.cluster!.totals.bytesSent, `${JSON.stringify(stats)} vs ${json.cluster!.totals.bytesSent} bytes sent: ${context}`);
    assert.ok(sent(stats[0]!, 0) > 0, JSON.stringify(stats));
  });
});
