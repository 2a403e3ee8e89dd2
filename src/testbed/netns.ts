/**
 * The network-namespace testbed, planned as data: from a topology it returns the exact argv of
 * every `ip`, `nft` and `tc` command that builds it, changes its loss and tears it down, plus
 * the parsers of what `nft -j` and `tc -j` print. No I/O here (`netnsTestbed.ts` runs the plans),
 * so every command is unit-tested as written.
 *
 * Topology (DESIGN.md, "Testbed lessons"):
 *
 *     node 0 (coordinator)   node 1 … node n−1 (workers)      one namespace each, eth0 = 10.a.b.(i+1)/24
 *          eth0                  eth0
 *           │ veth                │ veth
 *          hp0 ──── bridge hbr ── hp1 …                         all in the bridge namespace
 *
 * - Nothing is created in the caller's namespace: each veth pair is created in the bridge
 *   namespace with its peer moved straight into the node's, so interface names only need to be
 *   unique inside a namespace and cannot collide with the host or with a concurrent testbed.
 * - Loss is dropped on the wire, in the bridge namespace's `bridge` family forward hook, per link
 *   by the bridge-side port: `iifname hp<i>` (frames node i sent) and `oifname hp<i>` (frames to
 *   node i). A drop in a sender's output hook would return an error to the sender's own stack.
 *   A frame between two lossy links passes both rules, as it crosses both links.
 * - Only IPv4 is dropped: ARP losses would add multi-second neighbour-resolution stalls that a
 *   measurement of the cluster protocol should not contain (a real Wi-Fi retries ARP at layer 2 too).
 * - Bandwidth is a tbf qdisc on the bridge-side port, so it shapes frames *to* node i; the
 *   coordinator's port carries every worker's partial sums, like an access point's downlink.
 * - IPv6 address generation is off on the nodes, so no router solicitations or DAD chatter ride
 *   the links: the only traffic is what the processes under test send to each other.
 */
import { TestbedError, UsageError } from "../base/index.js";

/** One command, program first; run with execFile, never through a shell. */
export type Argv = readonly [string, ...string[]];

/** A node's link to the bridge. */
export interface TestbedLink {
  /** Frames dropped on the wire, each direction independently, in percent [0, 100] (resolution 0.01). Defaults to 0. */
  lossPercent?: number;
  /** Rate of frames toward the node, Mbit/s (10^6 bit/s); 0 = unlimited. Defaults to 0. */
  bandwidthMbit?: number;
}

export interface TestbedTopology {
  /** Unique per testbed, from `testbedName()`: every namespace of the testbed starts with it. */
  name: string;
  /** One entry per node: node i's link to the bridge. Node 0 is the coordinator by convention. */
  links: readonly TestbedLink[];
  /** The first three octets of the nodes' /24. Defaults to `DEFAULT_TESTBED_SUBNET`. */
  subnet?: string;
  /** How long a tbf queue may hold a frame before dropping it, ms. Defaults to 50. */
  queueLatencyMs?: number;
}

export interface TestbedPlan {
  readonly bridgeNamespace: string;
  /** (nNodes) */
  readonly nodeNamespaces: readonly string[];
  /** (nNodes) node i's IPv4 address on eth0. */
  readonly addresses: readonly string[];
  /** (nNodes) node i's port on the bridge, in the bridge namespace. */
  readonly bridgePorts: readonly string[];
  readonly setup: readonly Argv[];
  /** Deleting a namespace removes its interfaces, veth peers, qdiscs and nft tables with it. */
  readonly teardown: readonly Argv[];
}

/** Drops counted on one link, by direction, since the testbed was built. */
export interface LinkDropCounters {
  fromNodePackets: number;
  fromNodeBytes: number;
  toNodePackets: number;
  toNodeBytes: number;
}

/** `tc -s` statistics of the tbf on one link (all zero when the link is unlimited). */
export interface LinkQdiscStats {
  shaped: boolean;
  sentBytes: number;
  sentPackets: number;
  drops: number;
  overlimits: number;
}

/** A private-use /24 that home and office networks rarely use; it only ever exists inside the testbed's namespaces. */
export const DEFAULT_TESTBED_SUBNET = "10.201.77";
const BRIDGE = "hbr";
const NODE_INTERFACE = "eth0";
const NFT_TABLE = "halo_wire";
const NFT_CHAIN = "wire";
const MAX_NODES = 254;
/** Linux's IFNAMSIZ minus the terminating NUL. */
const MAX_INTERFACE_NAME = 15;
/** Kernel tick rates go down to 100 Hz; tbf needs a bucket that holds a tick's worth of bytes, and at least a few full frames. */
const MIN_TICK_HZ = 100;
const MIN_BURST_BYTES = 10 * 1514;
/** nft's `numgen random mod` range: loss has a resolution of 0.01%. */
const LOSS_DRAW_RANGE = 10_000;

/** A family is also a prefix of namespace names, so it stays short and shell-safe. */
export const TESTBED_FAMILY_PATTERN = /^[a-z][a-z0-9]{0,11}$/;
const NAME_PATTERN = /^([a-z][a-z0-9]{0,11})-(\d{1,10})-([0-9a-z]{1,8})$/;

/**
 * The owner pid of a testbed that outlives the process that built it (`halo testbed up`): a state
 * file owns it instead, so sweeps for a dead owner's leftovers must never take it.
 */
export const PERSISTENT_OWNER_PID = 0;

/**
 * `<family>-<ownerPid>-<tag>`: the family groups the testbeds of one tool (a test file, a
 * benchmark), the owner's pid tells a crashed run's leftovers from a live concurrent run's
 * (`PERSISTENT_OWNER_PID`: no owning process), and the tag tells apart several testbeds of one process.
 */
export function testbedName(family: string, ownerPid: number, tag: string): string {
  if (!TESTBED_FAMILY_PATTERN.test(family)) throw new UsageError(`testbed family '${family}' must match ${TESTBED_FAMILY_PATTERN}`);
  const name = `${family}-${ownerPid}-${tag}`;
  if (!NAME_PATTERN.test(name)) throw new UsageError(`testbed name '${name}' must match ${NAME_PATTERN}`);
  return name;
}

function namespaceNames(name: string, nNodes: number): { bridge: string; nodes: string[] } {
  return { bridge: `${name}-br`, nodes: Array.from({ length: nNodes }, (_, i) => `${name}-n${i}`) };
}

function checkTopology(topology: TestbedTopology): void {
  if (!NAME_PATTERN.test(topology.name)) throw new UsageError(`testbed name '${topology.name}' must come from testbedName() (${NAME_PATTERN})`);
  const n = topology.links.length;
  if (n < 1 || n > MAX_NODES) throw new UsageError(`a testbed has 1..${MAX_NODES} nodes, got ${n}`);
  if (!/^10\.\d{1,3}\.\d{1,3}$/.test(subnetOf(topology)) || subnetOf(topology).split(".").some((o) => Number(o) > 255)) {
    throw new UsageError(`testbed subnet '${subnetOf(topology)}' must be the first three octets of a 10.0.0.0/8 /24, like ${DEFAULT_TESTBED_SUBNET}`);
  }
  topology.links.forEach((link, i) => {
    checkLossPercent(link.lossPercent ?? 0, i);
    const mbit = link.bandwidthMbit ?? 0;
    if (!(Number.isFinite(mbit) && mbit >= 0)) throw new UsageError(`link ${i}: bandwidthMbit must be ≥ 0, got ${mbit}`);
  });
  const latencyMs = topology.queueLatencyMs ?? 50;
  if (!(Number.isInteger(latencyMs) && latencyMs >= 1)) throw new UsageError(`queueLatencyMs must be a positive integer, got ${latencyMs}`);
}

function checkLossPercent(lossPercent: number, linkIndex: number): void {
  if (!(Number.isFinite(lossPercent) && lossPercent >= 0 && lossPercent <= 100)) throw new UsageError(`link ${linkIndex}: lossPercent must be in [0, 100], got ${lossPercent}`);
}

function subnetOf(topology: TestbedTopology): string {
  return topology.subnet ?? DEFAULT_TESTBED_SUBNET;
}

function bridgePort(nodeIndex: number): string {
  const port = `hp${nodeIndex}`;
  // Cannot trip with MAX_NODES 254, but the limit is the kernel's, so it is checked where names are made.
  if (port.length > MAX_INTERFACE_NAME) throw new UsageError(`interface name '${port}' is longer than ${MAX_INTERFACE_NAME} characters`);
  return port;
}

function inNamespace(namespace: string, argv: Argv): Argv {
  return ["ip", "netns", "exec", namespace, ...argv];
}

/** Byte-exact tbf arguments for a rate. */
function tbfArguments(mbit: number, queueLatencyMs: number): string[] {
  const bytesPerSecond = (mbit * 1e6) / 8;
  const burstBytes = Math.max(MIN_BURST_BYTES, Math.ceil(bytesPerSecond / MIN_TICK_HZ));
  return ["tbf", "rate", `${Math.round(mbit * 1000)}kbit`, "burst", String(burstBytes), "latency", `${queueLatencyMs}ms`];
}

export function planTestbed(topology: TestbedTopology): TestbedPlan {
  checkTopology(topology);
  const n = topology.links.length;
  const names = namespaceNames(topology.name, n);
  const addresses = names.nodes.map((_, i) => `${subnetOf(topology)}.${i + 1}`);
  const ports = names.nodes.map((_, i) => bridgePort(i));
  const br = names.bridge;
  const setup: Argv[] = [
    ["ip", "netns", "add", br],
    ...names.nodes.map((ns): Argv => ["ip", "netns", "add", ns]),
    ["ip", "-n", br, "link", "set", "lo", "up"],
    // STP stays off (the default), so ports forward as soon as they are up.
    ["ip", "-n", br, "link", "add", BRIDGE, "type", "bridge"],
    ["ip", "-n", br, "link", "set", BRIDGE, "up"],
  ];
  names.nodes.forEach((ns, i) => {
    const port = ports[i]!;
    setup.push(
      ["ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", NODE_INTERFACE, "netns", ns],
      ["ip", "-n", br, "link", "set", port, "master", BRIDGE],
      ["ip", "-n", br, "link", "set", port, "up"],
      ["ip", "-n", ns, "link", "set", "lo", "up"],
      ["ip", "-n", ns, "link", "set", NODE_INTERFACE, "addrgenmode", "none"],
      ["ip", "-n", ns, "addr", "add", `${addresses[i]}/24`, "dev", NODE_INTERFACE],
      ["ip", "-n", ns, "link", "set", NODE_INTERFACE, "up"],
    );
  });
  const latencyMs = topology.queueLatencyMs ?? 50;
  topology.links.forEach((link, i) => {
    if ((link.bandwidthMbit ?? 0) > 0) setup.push(["ip", "netns", "exec", br, "tc", "qdisc", "add", "dev", ports[i]!, "root", ...tbfArguments(link.bandwidthMbit!, latencyMs)]);
  });
  setup.push(
    inNamespace(br, [
      "nft",
      "add", "table", "bridge", NFT_TABLE, ";",
      "add", "chain", "bridge", NFT_TABLE, NFT_CHAIN, "{ type filter hook forward priority 0 ; policy accept ; }",
      ...ports.flatMap((port) => [";", "add", "counter", "bridge", NFT_TABLE, `${port}_from`, ";", "add", "counter", "bridge", NFT_TABLE, `${port}_to`]),
    ]),
    planLossUpdate(topology, topology.links.map((link) => link.lossPercent ?? 0)),
  );
  // Node namespaces first: deleting one removes its eth0 and with it the bridge-side port.
  const teardown: Argv[] = [...names.nodes.map((ns): Argv => ["ip", "netns", "del", ns]), ["ip", "netns", "del", br]];
  return { bridgeNamespace: br, nodeNamespaces: names.nodes, addresses, bridgePorts: ports, setup, teardown };
}

/**
 * One nft transaction that replaces every link's drop rules, so a loss change is atomic and
 * the named counters (which the rules only reference) keep counting across changes.
 */
export function planLossUpdate(topology: TestbedTopology, lossPercents: readonly number[]): Argv {
  if (lossPercents.length !== topology.links.length) throw new UsageError(`expected ${topology.links.length} loss values (one per node), got ${lossPercents.length}`);
  lossPercents.forEach((loss, i) => checkLossPercent(loss, i));
  const br = namespaceNames(topology.name, topology.links.length).bridge;
  const rules = lossPercents.flatMap((lossPercent, i) => {
    const threshold = Math.round((lossPercent * LOSS_DRAW_RANGE) / 100);
    if (threshold === 0) return [];
    const port = bridgePort(i);
    const draw = ["ether", "type", "ip", "numgen", "random", "mod", String(LOSS_DRAW_RANGE), "<", String(threshold)];
    return [
      ";", "add", "rule", "bridge", NFT_TABLE, NFT_CHAIN, "iifname", `"${port}"`, ...draw, "counter", "name", `"${port}_from"`, "drop",
      ";", "add", "rule", "bridge", NFT_TABLE, NFT_CHAIN, "oifname", `"${port}"`, ...draw, "counter", "name", `"${port}_to"`, "drop",
    ];
  });
  return inNamespace(br, ["nft", "flush", "chain", "bridge", NFT_TABLE, NFT_CHAIN, ...rules]);
}

export function planDropCounterRead(topology: TestbedTopology): Argv {
  return inNamespace(namespaceNames(topology.name, topology.links.length).bridge, ["nft", "-j", "list", "counters", "table", "bridge", NFT_TABLE]);
}

export function planQdiscRead(topology: TestbedTopology): Argv {
  return inNamespace(namespaceNames(topology.name, topology.links.length).bridge, ["tc", "-s", "-j", "qdisc", "show"]);
}

export const LIST_NAMESPACES: Argv = ["ip", "netns", "list"];

/** `ip netns list` prints `name` or `name (id: N)` per line. */
export function parseNamespaceList(text: string): string[] {
  return text.split("\n").map((line) => line.trim().split(/\s+/)[0] ?? "").filter((name) => name !== "");
}

/** What a namespace's name says about the testbed it belongs to; undefined for anyone else's namespace. */
export interface TestbedNamespace {
  namespace: string;
  /** The testbed's name (`testbedName()`). */
  name: string;
  family: string;
  ownerPid: number;
  /** The bridge, or node i. */
  role: "bridge" | number;
}

export function parseTestbedNamespace(namespace: string): TestbedNamespace | undefined {
  const match = /^(.+)-(br|n(\d+))$/.exec(namespace);
  const name = match === null ? null : NAME_PATTERN.exec(match[1]!);
  if (match === null || name === null) return undefined;
  return { namespace, name: match[1]!, family: name[1]!, ownerPid: Number(name[2]), role: match[2] === "br" ? "bridge" : Number(match[3]) };
}

/** Deletions of the listed namespaces of `family` that `remove` selects, nodes before bridges (as in planTestbed's teardown). */
function planFamilyDeletion(existingNamespaces: readonly string[], family: string, remove: (ownerPid: number) => boolean): Argv[] {
  const doomed = existingNamespaces.map(parseTestbedNamespace).filter((ns): ns is TestbedNamespace => ns !== undefined && ns.family === family && remove(ns.ownerPid)).map((ns) => ns.namespace);
  doomed.sort((a, b) => Number(a.endsWith("-br")) - Number(b.endsWith("-br")) || a.localeCompare(b));
  return doomed.map((ns): Argv => ["ip", "netns", "del", ns]);
}

/**
 * Deletes the namespaces of `family`'s testbeds whose owner process is gone (a crashed or
 * killed run); a live owner's testbed is left alone, since test files and benchmarks may run
 * side by side, and so is a persistent one (`halo testbed up`), which has no owner process.
 */
export function planLeftoverTeardown(existingNamespaces: readonly string[], family: string, isProcessAlive: (pid: number) => boolean): Argv[] {
  return planFamilyDeletion(existingNamespaces, family, (pid) => pid !== PERSISTENT_OWNER_PID && !isProcessAlive(pid));
}

/**
 * `halo testbed down`'s sweep by name, for when the state file is lost: every persistent testbed
 * of `family` and every leftover of a dead owner; a live process's testbed is still left alone.
 */
export function planFamilyTeardown(existingNamespaces: readonly string[], family: string, isProcessAlive: (pid: number) => boolean): Argv[] {
  return planFamilyDeletion(existingNamespaces, family, (pid) => pid === PERSISTENT_OWNER_PID || !isProcessAlive(pid));
}

function parseJson(argv: Argv, text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new TestbedError(argv, `printed output that is not JSON: ${text.slice(0, 200)}`, { cause: error });
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function countOf(argv: Argv, record: Record<string, unknown>, key: string): number {
  const value = record[key];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) throw new TestbedError(argv, `field '${key}' is ${JSON.stringify(value)}, expected a count`);
  return value;
}

/** The per-link drops from `nft -j list counters` (planDropCounterRead's output). */
export function parseDropCounters(topology: TestbedTopology, text: string): LinkDropCounters[] {
  const argv = planDropCounterRead(topology);
  const document = parseJson(argv, text);
  const items = isRecord(document) && Array.isArray(document["nftables"]) ? (document["nftables"] as unknown[]) : undefined;
  if (items === undefined) throw new TestbedError(argv, `printed no 'nftables' array: ${text.slice(0, 200)}`);
  const counters = new Map<string, Record<string, unknown>>();
  for (const item of items) if (isRecord(item) && isRecord(item["counter"]) && typeof item["counter"]["name"] === "string") counters.set(item["counter"]["name"], item["counter"]);
  return topology.links.map((_, i) => {
    const port = bridgePort(i);
    const from = counters.get(`${port}_from`);
    const to = counters.get(`${port}_to`);
    if (from === undefined || to === undefined) throw new TestbedError(argv, `has no counters ${port}_from and ${port}_to; was the testbed built by planTestbed?`);
    return { fromNodePackets: countOf(argv, from, "packets"), fromNodeBytes: countOf(argv, from, "bytes"), toNodePackets: countOf(argv, to, "packets"), toNodeBytes: countOf(argv, to, "bytes") };
  });
}

/** The per-link tbf statistics from `tc -s -j qdisc show` (planQdiscRead's output). */
export function parseQdiscStats(topology: TestbedTopology, text: string): LinkQdiscStats[] {
  const argv = planQdiscRead(topology);
  const document = parseJson(argv, text);
  if (!Array.isArray(document)) throw new TestbedError(argv, `printed no qdisc array: ${text.slice(0, 200)}`);
  const tbfByDevice = new Map<string, Record<string, unknown>>();
  for (const qdisc of document) if (isRecord(qdisc) && qdisc["kind"] === "tbf" && typeof qdisc["dev"] === "string") tbfByDevice.set(qdisc["dev"], qdisc);
  return topology.links.map((_, i) => {
    const tbf = tbfByDevice.get(bridgePort(i));
    if (tbf === undefined) return { shaped: false, sentBytes: 0, sentPackets: 0, drops: 0, overlimits: 0 };
    return { shaped: true, sentBytes: countOf(argv, tbf, "bytes"), sentPackets: countOf(argv, tbf, "packets"), drops: countOf(argv, tbf, "drops"), overlimits: countOf(argv, tbf, "overlimits") };
  });
}
