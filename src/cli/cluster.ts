/** `halo cluster --local N`: a coordinator and N−1 worker processes on loopback, with emulated links. */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { HaloError, UsageError } from "../base/index.js";
import { booleanFlag, integerFlag, parseFlags, stringFlag, type ParsedFlags } from "./flags.js";
import type { CommandIo } from "./io.js";
import { LINK_FLAGS, LINK_FLAGS_HELP, LOOPBACK_DEV_KEY, linkProfileOf, linkSpecArgs, readLinkSpec, readSeed } from "./clusterFlags.js";
import { MAX_LOCAL_DEVICES, describeLocalDevices, localDevicesFromFlags, readClusterSpec, type LocalDevice } from "./clusterSpec.js";
import { COORDINATOR_FLAGS_HELP, GENERATION_FLAGS, GENERATION_FLAGS_HELP, executeGeneration, readGenerationFlags } from "./run.js";

export const CLUSTER_HELP = `usage: halo cluster --local N [--loss PCT] [--delay MS] [--jitter MS] [--bandwidth MBIT] [--links FILE] [--seed S]
                   [--devices LIST | --spec FILE] [--sync relaxed|strict] [every flag of halo run]

Starts N−1 worker processes and this coordinator on loopback, each worker link emulated in
userspace (seeded loss, delay, jitter, bandwidth), and generates like halo run. With --json the
stats include every device's measured profile (cluster.profiles, coordinator first).
      --local N          devices, the coordinator included (1..64; with --spec, its device count)
${COORDINATOR_FLAGS_HELP}
${LINK_FLAGS_HELP}
      --devices LIST     a preset per device, the coordinator first: pi4, pi5, jetson-nano, x86. Each
                         process is slowed to its preset's speed against the fastest one listed (a
                         wait of (×−1) times the compute it did) and, unless link flags are given,
                         its worker link is the preset's (Wi-Fi for the boards, Ethernet otherwise)
      --links FILE       per-worker links: a JSON array, one {loss, lossBurst, delay, jitter, bandwidth}
                         per worker; fields left out take the flags' values
      --spec FILE        every device at once, instead of --devices and --links: a JSON array, the
                         coordinator first, of {name, preset, slowdown, memoryMB, loss, lossBurst,
                         delay, jitter, bandwidth}, all optional (links on workers only). A field
                         left out takes the preset's value, else the flags' (docs/cluster.md)
${GENERATION_FLAGS_HELP}`;

const WORKER_START_TIMEOUT_MS = 60_000;

function startWorker(args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const main = fileURLToPath(new URL("./main.js", import.meta.url));
  const child = spawn(process.execPath, [main, "worker", ...args], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new HaloError("HALO_ERR_DEADLINE", `a worker did not start within ${WORKER_START_TIMEOUT_MS} ms`)), WORKER_START_TIMEOUT_MS);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new HaloError("HALO_ERR_CONNECTION_CLOSED", `a worker exited with status ${code} before listening`));
    });
    createInterface({ input: child.stdout! }).once("line", (line) => {
      clearTimeout(timer);
      try {
        const event = JSON.parse(line) as { event: string; tcpPort: number };
        if (event.event !== "listening") throw new Error(line);
        resolve({ child, port: event.tcpPort });
      } catch {
        reject(new HaloError("HALO_ERR_MESSAGE_INVALID", `a worker printed '${line.slice(0, 200)}' instead of its port`));
      }
    });
  });
}

/** Every device of the cluster, from --spec or from --local with --devices and --links. */
function readLocalDevices(flags: ParsedFlags): LocalDevice[] {
  const defaults = readLinkSpec(flags);
  // A preset brings its typical link unless the flags say otherwise.
  const explicitLink = ["delay", "jitter", "bandwidth"].some((name) => stringFlag(flags, name) !== undefined);
  const specPath = stringFlag(flags, "spec");
  const nDevices = integerFlag(flags, "local", 1, MAX_LOCAL_DEVICES);
  if (specPath === undefined) {
    if (nDevices === undefined) throw new UsageError("--local N is required (the number of devices on this machine)");
    return localDevicesFromFlags(flags, nDevices, defaults, explicitLink);
  }
  for (const other of ["devices", "links"]) {
    if (stringFlag(flags, other) !== undefined) throw new UsageError(`--spec and --${other} conflict: the spec gives each device's ${other === "devices" ? "preset" : "link"}`);
  }
  const devices = readClusterSpec(specPath, defaults, explicitLink);
  if (nDevices !== undefined && nDevices !== devices.length) throw new UsageError(`--spec ${specPath} describes ${devices.length} devices; --local ${nDevices} needs one per device, the coordinator first`);
  return devices;
}

export async function clusterCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { ...GENERATION_FLAGS, ...LINK_FLAGS, local: { type: "string" }, links: { type: "string" }, devices: { type: "string" }, spec: { type: "string" } });
  if (booleanFlag(flags, "help")) {
    io.stdout(CLUSTER_HELP + "\n");
    return 0;
  }
  const devices = readLocalDevices(flags);
  const request = readGenerationFlags(flags);
  const seed = readSeed(flags) ?? 1;
  const forwarded = ["--host", "127.0.0.1", "--port", "0", "--cluster-key", LOOPBACK_DEV_KEY, "--model", request.modelFlags.modelPath, "--threads", String(request.modelFlags.threads ?? 1)];
  if (request.modelFlags.contextLength !== undefined) forwarded.push("--ctx-size", String(request.modelFlags.contextLength));
  const children: ChildProcess[] = [];
  const stopChildren = (): void => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGTERM");
  };
  process.once("exit", stopChildren);
  try {
    const started = await Promise.all(devices.slice(1).map((device, i) => {
      const slowdown = device.slowdown === 1 ? [] : ["--slowdown", String(device.slowdown)];
      return startWorker([...forwarded, ...linkSpecArgs(device.link!), "--seed", String(seed * 1000 + i + 1), ...slowdown]);
    }));
    children.push(...started.map((s) => s.child));
    const described = stringFlag(flags, "spec") !== undefined || devices.some((d) => d.preset !== undefined);
    if (described) io.stderr(`halo cluster: devices ${describeLocalDevices(devices)}\n`);
    const cluster = {
      workers: started.map((s) => ({ host: "127.0.0.1", port: s.port })), mode: request.mode, wire: request.wire, shares: request.shares, copies: request.copies, ffnBlockSize: request.ffnBlockSize,
      deadlines: request.deadlines, clusterKey: Buffer.from(LOOPBACK_DEV_KEY),
      linkProfiles: devices.slice(1).map((d) => linkProfileOf(d.link!)), seed, computeSlowdown: devices[0]!.slowdown,
      devicePresets: described ? devices.map((d) => d.preset ?? null) : undefined, slowdowns: described ? devices.map((d) => d.slowdown) : undefined,
      devices: devices.map((d) => ({ name: d.name, memoryBudgetBytes: d.memoryBudgetBytes })),
    };
    return await executeGeneration({ ...request, cluster }, io);
  } finally {
    stopChildren();
  }
}
