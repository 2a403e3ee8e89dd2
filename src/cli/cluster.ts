/** `halo cluster --local N`: a coordinator and N−1 worker processes on loopback, with emulated links. */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { HaloError, UsageError } from "../base/index.js";
import { booleanFlag, integerFlag, parseFlags, stringFlag, type FlagSpec, type ParsedFlags } from "./flags.js";
import type { CommandIo } from "./io.js";
import { LINK_FLAGS, LINK_FLAGS_HELP, LOOPBACK_DEV_KEY, linkProfileOf, linkSpecArgs, readLinkSpec, readSeed } from "./clusterFlags.js";
import { MODEL_FLAGS_HELP, SAMPLING_FLAGS_HELP } from "./modelFlags.js";
import { MAX_LOCAL_DEVICES, describeLocalDevices, localDevicesFromFlags, readClusterSpec, type LocalDevice } from "./clusterSpec.js";
import { COORDINATOR_FLAGS_HELP, GENERATION_FLAGS, GENERATION_FLAGS_HELP, executeGeneration, readGenerationFlags, workersCluster, type GenerationRequest } from "./run.js";

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
      --spec FILE        every device at once, instead of --devices and --links: a JSON array (or
                         YAML list, for a file named .yaml or .yml), the coordinator first, of
                         {name, preset, slowdown, slowdownAfter, memoryMB, loss, lossBurst, delay,
                         jitter, bandwidth}, all optional (links and slowdownAfter on workers only).
                         A field left out takes the preset's value, else the flags' (docs/cluster.md).
                         memoryMB is the device's memory budget for the scheduler and, on a worker,
                         its --memory-budget too (it streams the groups that do not fit); a preset's
                         memory informs the scheduler only, and so does the coordinator's memoryMB
                         (it holds the whole model). slowdownAfter "S:X" makes a worker X times
                         slower S seconds into the run (--slowdown-after): a drift to re-plan for
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
export function readLocalDevices(flags: ParsedFlags): LocalDevice[] {
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

/** The flags that describe a local cluster (halo cluster, serve and chat --local). */
export const LOCAL_CLUSTER_FLAGS = { local: { type: "string" }, links: { type: "string" }, devices: { type: "string" }, spec: { type: "string" } } as const satisfies FlagSpec;

export async function clusterCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { ...GENERATION_FLAGS, ...LINK_FLAGS, ...LOCAL_CLUSTER_FLAGS });
  if (booleanFlag(flags, "help")) {
    io.stdout(CLUSTER_HELP + "\n");
    return 0;
  }
  const devices = readLocalDevices(flags);
  const local = await startLocalCluster(devices, flags, readGenerationFlags(flags), io);
  try {
    return await executeGeneration({ ...local.request, cluster: local.cluster }, io);
  } finally {
    local.stop();
  }
}

export interface LocalCluster {
  request: ReturnType<typeof readGenerationFlags>;
  cluster: NonNullable<GenerationRequest["cluster"]>;
  /** Stops the worker processes (also done at process exit). */
  stop(): void;
}

/** Starts the N−1 worker processes of `devices` (readLocalDevices) on loopback; the caller coordinates. */
export async function startLocalCluster(devices: readonly LocalDevice[], flags: ParsedFlags, request: ReturnType<typeof readGenerationFlags>, io: CommandIo): Promise<LocalCluster> {
  const seed = readSeed(flags) ?? 1;
  const forwarded = ["--host", "127.0.0.1", "--port", "0", "--cluster-key", LOOPBACK_DEV_KEY, "--model", request.modelFlags.modelPath, "--threads", String(request.modelFlags.threads ?? 1)];
  if (request.modelFlags.contextLength !== undefined) forwarded.push("--ctx-size", String(request.modelFlags.contextLength));
  // Workers apply --skip-below to their own groups with their own copy of the predictor.
  if (request.importance.predictorPath !== undefined && request.importance.skipBelow !== undefined) forwarded.push("--predictor", request.importance.predictorPath);
  const children: ChildProcess[] = [];
  const stop = (): void => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  };
  process.once("exit", stop);
  try {
    const started = await Promise.allSettled(devices.slice(1).map((device, i) => {
      const slowdown = device.slowdown === 1 ? [] : ["--slowdown", String(device.slowdown)];
      // Only the spec's own memoryMB limits the process; a preset's memory informs the scheduler alone.
      const budget = device.memoryMB === undefined ? [] : ["--memory-budget", String(device.memoryMB)];
      const later = device.slowdownAfter === undefined ? [] : ["--slowdown-after", device.slowdownAfter];
      return startWorker([...forwarded, ...linkSpecArgs(device.link!), "--seed", String(seed * 1000 + i + 1), ...slowdown, ...later, ...budget]);
    }));
    for (const result of started) if (result.status === "fulfilled") children.push(result.value.child);
    const failed = started.find((r) => r.status === "rejected");
    if (failed !== undefined) throw failed.reason;
    const ports = started.map((r) => (r as PromiseFulfilledResult<{ port: number }>).value.port);
    const described = stringFlag(flags, "spec") !== undefined || devices.some((d) => d.preset !== undefined);
    if (described) io.stderr(`halo cluster: devices ${describeLocalDevices(devices)}\n`);
    const cluster = {
      workers: ports.map((port) => ({ host: "127.0.0.1", port })), mode: request.mode, wire: request.wire, shares: request.shares, copies: request.copies, ffnBlockSize: request.ffnBlockSize,
      deadlines: request.deadlines, clusterKey: Buffer.from(LOOPBACK_DEV_KEY),
      linkProfiles: devices.slice(1).map((d) => linkProfileOf(d.link!)), seed, computeSlowdown: devices[0]!.slowdown,
      devicePresets: described ? devices.map((d) => d.preset ?? null) : undefined, slowdowns: described ? devices.map((d) => d.slowdown) : undefined,
      devices: devices.map((d) => ({ name: d.name, memoryBudgetBytes: d.memoryBudgetBytes })),
    };
    return { request, cluster, stop };
  } catch (error) {
    stop();
    throw error;
  }
}

/**
 * What serve and chat generate with: this machine alone, the workers of --workers, or a local
 * cluster of --local N (started here; `stop` ends its processes).
 */
export async function generationTarget(flags: ParsedFlags, io: CommandIo): Promise<{ request: GenerationRequest; stop(): void }> {
  const local = stringFlag(flags, "local") !== undefined || stringFlag(flags, "spec") !== undefined;
  if (local && stringFlag(flags, "workers") !== undefined) throw new UsageError("--workers and --local conflict: give the workers' addresses, or start local ones");
  if (local) {
    const devices = readLocalDevices(flags);
    const started = await startLocalCluster(devices, flags, readGenerationFlags(flags), io);
    return { request: { ...started.request, cluster: started.cluster }, stop: started.stop };
  }
  const request = readGenerationFlags(flags);
  return { request: { ...request, cluster: workersCluster(flags, request) }, stop: () => undefined };
}

const { prompt: _prompt, json: _json, "ignore-eos": _ignoreEos, ...SESSION_GENERATION_FLAGS } = GENERATION_FLAGS;

/** The flags of the long-lived commands (serve, chat): a model or a cluster, and sampling defaults. */
export const TARGET_FLAGS = { ...SESSION_GENERATION_FLAGS, ...LINK_FLAGS, ...LOCAL_CLUSTER_FLAGS, workers: { type: "string", short: "w" }, slowdown: { type: "string" } } as const satisfies FlagSpec;

export const TARGET_FLAGS_HELP = `${MODEL_FLAGS_HELP}
  -n, --max-tokens N     tokens to generate when a request does not say (default 256)
${SAMPLING_FLAGS_HELP}
A cluster (default: this machine alone):
  -w, --workers LIST     host:port of each worker (halo worker); this process coordinates
      --cluster-key K    shared secret, at least 16 bytes (or HALO_CLUSTER_KEY); required off loopback
      --local N          start N−1 local worker processes on loopback, as halo cluster does, with
                         --devices, --links, --spec and the link flags below
${COORDINATOR_FLAGS_HELP}
${LINK_FLAGS_HELP}`;
