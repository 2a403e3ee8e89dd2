/**
 * `halo testbed up|status|down`: a cluster's network built from Linux network namespaces on this
 * machine (src/testbed), kept after the command exits so that workers and a coordinator can be
 * started in it by hand or by a script, and removed later from its state file.
 */
import { TestbedError, UsageError } from "../base/index.js";
import {
  NetnsTestbed, PERSISTENT_OWNER_PID, TESTBED_FAMILY_PATTERN, parseNamespaceList, parseTestbedNamespace, removeFamilyTestbeds, runCommand, LIST_NAMESPACES,
  type CommandRunner, type TestbedLink,
} from "../testbed/index.js";
import { DEFAULT_LINK_SPEC } from "./clusterFlags.js";
import { readClusterSpec, type LocalDevice } from "./clusterSpec.js";
import { booleanFlag, integerFlag, numberFlag, parseFlags, stringFlag, type ParsedFlags } from "./flags.js";
import type { CommandIo } from "./io.js";
import { DEFAULT_TESTBED_STATE_DIR, readTestbedState, removeTestbedState, testbedStatePath, writeTestbedState, type TestbedState } from "./testbedState.js";

export const TESTBED_HELP = `usage: halo testbed up --devices N [--spec FILE] [--loss PCT] [--bandwidth MBIT] [--name PREFIX] [--json]
       halo testbed status [--name PREFIX] [--json]
       halo testbed down [--name PREFIX]

Builds a cluster's network from Linux network namespaces on this machine, one per device, each
joined by a veth pair to a bridge in a namespace of its own. Loss is dropped on the wire by nft
in the bridge's forward hook, on every worker link, each way; bandwidth is a tbf qdisc on each
device's bridge port (frames toward the device). The kernel's network stack carries everything,
TCP retransmission timers included. Delay and jitter are not on the wire (no netem here): up
prints them as flags for each device's halo process. Needs root, ip (iproute2), nft (nftables)
and tc; without root, halo cluster --local N --loss PCT emulates the links in userspace.
  up                     build it; prints every device's namespace, address and process flags,
                         and the state file that status and down read
      --devices N        devices, the coordinator first (1..254; with --spec, its device count)
      --spec FILE        per-device links and speeds, as for halo cluster --spec: loss and bandwidth
                         go on the wire; delay, jitter, slowdown and a worker's memoryMB (its
                         --memory-budget; not a preset's memory) become process flags
      --loss PCT         loss on every worker link, each way (default 0, resolution 0.01)
      --bandwidth MBIT   rate toward every device in Mbit/s, 0 = unlimited (default 0)
      --subnet A.B.C     the devices' /24, inside 10.0.0.0/8 (default 10.201.77)
  status                 its devices, whether their namespaces exist, frames dropped and shaped
  down                   delete it: the namespaces of its state file, then any left under its name
      --name PREFIX      the testbed's name, the prefix of its namespaces (default halo)
      --state-dir DIR    where state files are kept (default ${DEFAULT_TESTBED_STATE_DIR}: emptied at boot, like the namespaces)
      --json             print one JSON object instead (up, status)`;

/** What the command needs from the system; tests inject them (a non-root uid, a recording runner). */
export interface TestbedCommandDeps {
  getuid: () => number | undefined;
  run: CommandRunner;
}

const SYSTEM: TestbedCommandDeps = { getuid: () => process.getuid?.(), run: runCommand };
const SUBCOMMANDS = ["up", "status", "down"] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];
const UP_ONLY_FLAGS = ["devices", "spec", "loss", "bandwidth", "subnet"] as const;
const MAX_DEVICES = 254;

interface Common {
  family: string;
  /** The flags that name this testbed again, for the hints printed. */
  nameFlags: string;
  stateDir: string;
  statePath: string;
  json: boolean;
  deps: TestbedCommandDeps;
  io: CommandIo;
}

export async function testbedCommand(argv: readonly string[], io: CommandIo, deps: TestbedCommandDeps = SYSTEM): Promise<number> {
  const flags = parseFlags(argv, {
    devices: { type: "string" }, spec: { type: "string" }, loss: { type: "string" }, bandwidth: { type: "string" }, subnet: { type: "string" },
    name: { type: "string" }, "state-dir": { type: "string" }, json: { type: "boolean" },
  }, true);
  if (booleanFlag(flags, "help")) {
    io.stdout(TESTBED_HELP + "\n");
    return 0;
  }
  const [sub, ...extra] = flags.positionals;
  if (sub === undefined || !(SUBCOMMANDS as readonly string[]).includes(sub)) throw new UsageError(`halo testbed takes one of ${SUBCOMMANDS.join(", ")}${sub === undefined ? "" : `, got '${sub}'`}`);
  if (extra.length > 0) throw new UsageError(`halo testbed ${sub} takes no arguments besides flags, got '${extra.join(" ")}'`);
  const family = stringFlag(flags, "name") ?? "halo";
  if (!TESTBED_FAMILY_PATTERN.test(family)) throw new UsageError(`--name '${family}' must be a lowercase letter then up to 11 lowercase letters or digits (${TESTBED_FAMILY_PATTERN}): it prefixes every namespace`);
  const stateDir = stringFlag(flags, "state-dir") ?? DEFAULT_TESTBED_STATE_DIR;
  const nameFlags = `--name ${family}${stringFlag(flags, "state-dir") === undefined ? "" : ` --state-dir ${stateDir}`}`;
  const common: Common = { family, nameFlags, stateDir, statePath: testbedStatePath(stateDir, family), json: booleanFlag(flags, "json"), deps, io };
  const command = sub as Subcommand;
  if (command !== "up") {
    const misplaced = UP_ONLY_FLAGS.find((name) => flags.values[name] !== undefined);
    if (misplaced !== undefined) throw new UsageError(`--${misplaced} applies to halo testbed up only`);
    if (command === "down" && common.json) throw new UsageError("--json applies to halo testbed up and status only");
  }
  const devices = command === "up" ? readDevices(flags) : undefined;
  requireRoot(command, deps);
  switch (command) {
    case "up":
      return up(common, devices!, numberFlag(flags, "bandwidth", 0, 1e6) ?? 0, stringFlag(flags, "subnet"));
    case "status":
      return status(common);
    case "down":
      return down(common);
    default:
      return command satisfies never;
  }
}

function requireRoot(command: Subcommand, deps: TestbedCommandDeps): void {
  const uid = deps.getuid();
  if (uid === 0) return;
  throw new TestbedError(["halo", "testbed", command], `needs root (running as uid ${uid ?? "unknown"}): it creates network namespaces, veth pairs, nft rules and tc qdiscs. ` +
    "Run it with sudo, or emulate the links in userspace without root: halo cluster --local N --loss PCT (docs/testbed.md)");
}

/** Every device from --spec, else --devices N with --loss on every worker link; bandwidth from --bandwidth unless the spec gives it. */
function readDevices(flags: ParsedFlags): LocalDevice[] {
  const nDevices = integerFlag(flags, "devices", 1, MAX_DEVICES);
  const lossPercent = numberFlag(flags, "loss", 0, 100) ?? 0;
  const bandwidth = numberFlag(flags, "bandwidth", 0, 1e6) ?? 0;
  const defaults = { ...DEFAULT_LINK_SPEC, loss: lossPercent, bandwidth };
  const specPath = stringFlag(flags, "spec");
  if (specPath === undefined) {
    if (nDevices === undefined) throw new UsageError("halo testbed up needs --devices N (or --spec FILE): how many namespaces to build, the coordinator's included");
    return Array.from({ length: nDevices }, (_, i) => ({ name: undefined, preset: undefined, slowdown: 1, memoryBudgetBytes: undefined, memoryMB: undefined, link: i === 0 ? undefined : defaults }));
  }
  const devices = readClusterSpec(specPath, defaults, stringFlag(flags, "bandwidth") !== undefined);
  if (nDevices !== undefined && nDevices !== devices.length) throw new UsageError(`--spec ${specPath} describes ${devices.length} devices; --devices ${nDevices} needs one per device, the coordinator first`);
  devices.forEach((device, i) => {
    if ((device.link?.lossBurst ?? 1) > 1) throw new UsageError(`--spec ${specPath}: device ${i}: lossBurst ${device.link!.lossBurst} cannot be dropped on the wire (nft draws each frame independently); halo cluster --local --spec emulates bursts`);
  });
  return devices;
}

/** Flags for a device's own process: what its spec asks for that the wire does not do. */
function processFlagsOf(device: LocalDevice): string[] {
  const flags: string[] = [];
  if ((device.link?.delay ?? 0) > 0) flags.push("--delay", String(device.link!.delay));
  if ((device.link?.jitter ?? 0) > 0) flags.push("--jitter", String(device.link!.jitter));
  if (device.slowdown > 1) flags.push("--slowdown", device.slowdown.toFixed(2));
  if (device.slowdownAfter !== undefined) flags.push("--slowdown-after", device.slowdownAfter);
  // As on halo cluster: only a worker's explicit memoryMB limits its process (a preset's memory does not);
  // the coordinator holds the whole model, and its budget reaches the scheduler through --spec on halo cluster alone.
  if (device.link !== undefined && device.memoryMB !== undefined) flags.push("--memory-budget", String(device.memoryMB));
  return flags;
}

/** The namespaces of `family` that exist, from `ip netns list`. */
async function familyNamespaces(common: Common): Promise<string[]> {
  return parseNamespaceList(await common.deps.run(LIST_NAMESPACES)).filter((ns) => parseTestbedNamespace(ns)?.family === common.family);
}

async function up(common: Common, devices: readonly LocalDevice[], coordinatorMbit: number, subnet: string | undefined): Promise<number> {
  const { family, statePath, deps, io } = common;
  const previous = readTestbedState(statePath);
  const present = previous === undefined ? [] : (await NetnsTestbed.attach(previous.topology, deps.run).presentNamespaces()).present;
  if (present.length > 0) throw new TestbedError(["halo", "testbed", "up"], `testbed '${family}' is already up (${statePath}); remove it with halo testbed down ${common.nameFlags}, or choose another --name`);
  const strays = (await familyNamespaces(common)).filter((ns) => parseTestbedNamespace(ns)?.ownerPid === PERSISTENT_OWNER_PID);
  if (strays.length > 0) throw new TestbedError(["halo", "testbed", "up"], `namespaces named '${family}' exist without a state file (${strays.join(", ")}); halo testbed down ${common.nameFlags} removes them`);
  const links: TestbedLink[] = devices.map((d, i) => ({ lossPercent: i === 0 ? 0 : d.link!.loss, bandwidthMbit: i === 0 ? coordinatorMbit : d.link!.bandwidth }));
  const testbed = await NetnsTestbed.create({ family, links, subnet, persistent: true, run: deps.run });
  const state: TestbedState = {
    version: 1, family, topology: testbed.topology, bridgeNamespace: testbed.plan.bridgeNamespace, createdAt: new Date().toISOString(),
    nodes: devices.map((d, i) => ({ namespace: testbed.plan.nodeNamespaces[i]!, address: testbed.address(i), name: d.name, processFlags: processFlagsOf(d) })),
  };
  try {
    writeTestbedState(statePath, common.stateDir, state);
  } catch (error) {
    await testbed.close(); // a testbed nobody can find again is worse than none
    throw error;
  }
  if (common.json) io.stdout(JSON.stringify({ name: family, stateFile: statePath, ...describeState(state) }) + "\n");
  else io.stdout(renderUp(state, statePath, common.nameFlags));
  return 0;
}

function describeState(state: TestbedState) {
  return {
    testbed: state.topology.name, bridgeNamespace: state.bridgeNamespace,
    nodes: state.nodes.map((node, i) => ({
      index: i, role: i === 0 ? "coordinator" : "worker", name: node.name, namespace: node.namespace, address: node.address,
      lossPercent: state.topology.links[i]!.lossPercent ?? 0, bandwidthMbit: state.topology.links[i]!.bandwidthMbit ?? 0, processFlags: node.processFlags,
    })),
  };
}

function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  return [header, ...rows].map((row) => "  " + row.map((cell, c) => cell.padEnd(widths[c]!)).join("  ").trimEnd()).join("\n") + "\n";
}

const mbit = (value: number): string => (value === 0 ? "unlimited" : `${value} Mbit/s`);

function renderUp(state: TestbedState, statePath: string, nameFlags: string): string {
  const { nodes } = describeState(state);
  const rows = nodes.map((n) => [String(n.index), n.role + (n.name === undefined ? "" : ` "${n.name}"`), n.namespace, n.address, `${n.lossPercent}%`, mbit(n.bandwidthMbit), n.processFlags.join(" ")]);
  const worker = nodes[1];
  const workers = nodes.slice(1).map((n) => `${n.address}:9998`).join(",");
  const usage = worker === undefined ? "" :
    `start each worker in its namespace, e.g.\n  ip netns exec ${worker.namespace} halo worker --host ${worker.address} --port 9998 --cluster-key "$KEY" --model F.gguf${worker.processFlags.map((f) => ` ${f}`).join("")}\n` +
    `then the coordinator:\n  ip netns exec ${nodes[0]!.namespace} halo run --workers ${workers} --cluster-key "$KEY" --model F.gguf ${nodes[0]!.processFlags.map((f) => `${f} `).join("")}--prompt "…"\n`;
  return `halo testbed: '${state.family}' is up: ${nodes.length} device${nodes.length === 1 ? "" : "s"} on a bridge (namespace ${state.bridgeNamespace}); loss is dropped on the wire, each way\n` +
    table(["device", "role", "namespace", "address", "loss", "bandwidth", "process flags"], rows) +
    `state: ${statePath}\n${usage}remove it: halo testbed down ${nameFlags}\n`;
}

async function status(common: Common): Promise<number> {
  const { family, statePath, deps, io } = common;
  const state = readTestbedState(statePath);
  const namespaces = await familyNamespaces(common);
  if (state === undefined) {
    if (common.json) io.stdout(JSON.stringify({ name: family, stateFile: statePath, up: false, strayNamespaces: namespaces }) + "\n");
    else io.stdout(`halo testbed: '${family}' is not up (no ${statePath})${namespaces.length === 0 ? "" : `; namespaces under its name: ${namespaces.join(", ")} (halo testbed down ${common.nameFlags} removes them)`}\n`);
    return 0;
  }
  const testbed = NetnsTestbed.attach(state.topology, deps.run);
  const { present, missing } = await testbed.presentNamespaces();
  const complete = missing.length === 0;
  // Counters need the bridge namespace and its nft table; a half-removed testbed has neither.
  const drops = complete ? await testbed.dropCounters() : undefined;
  const shaped = complete ? await testbed.qdiscStats() : undefined;
  const described = describeState(state);
  const nodes = described.nodes.map((n, i) => ({ ...n, present: present.includes(n.namespace), drops: drops?.[i], shaped: shaped?.[i] }));
  const strayNamespaces = namespaces.filter((ns) => ns !== state.bridgeNamespace && !state.nodes.some((n) => n.namespace === ns));
  if (common.json) {
    io.stdout(JSON.stringify({ name: family, stateFile: statePath, up: complete, ...described, nodes, missingNamespaces: missing, strayNamespaces }) + "\n");
    return 0;
  }
  const rows = nodes.map((n) => [
    String(n.index), n.role, n.namespace, n.address, n.present ? "yes" : "MISSING", `${n.lossPercent}%`, mbit(n.bandwidthMbit),
    n.drops === undefined ? "–" : `${n.drops.fromNodePackets} / ${n.drops.toNodePackets}`, n.shaped?.shaped === true ? `${(n.shaped.sentBytes / 1024).toFixed(0)} KiB, ${n.shaped.drops} dropped` : "–",
  ]);
  io.stdout(`halo testbed: '${family}' is ${complete ? "up" : `incomplete (missing ${missing.join(", ")}; halo testbed down ${common.nameFlags} removes the rest)`}, built ${state.createdAt} (${statePath})\n` +
    table(["device", "role", "namespace", "address", "exists", "loss", "bandwidth", "frames dropped from / to", "shaped toward it"], rows) +
    (strayNamespaces.length === 0 ? "" : `other namespaces under its name: ${strayNamespaces.join(", ")}\n`));
  return 0;
}

async function down(common: Common): Promise<number> {
  const { family, statePath, deps, io } = common;
  const state = readTestbedState(statePath);
  let removed: string[] = [];
  if (state !== undefined) {
    const testbed = NetnsTestbed.attach(state.topology, deps.run);
    removed = (await testbed.presentNamespaces()).present;
    await testbed.close();
  }
  // The sweep by name finds what a lost or stale state file no longer lists.
  removed.push(...(await removeFamilyTestbeds(family, deps.run)));
  removeTestbedState(statePath);
  io.stdout(removed.length === 0 ? `halo testbed: nothing named '${family}' to remove\n` : `halo testbed: removed '${family}': ${removed.length} namespaces (${removed.join(", ")})\n`);
  return 0;
}
