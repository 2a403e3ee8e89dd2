/** `halo cluster --local N`: a coordinator and N−1 worker processes on loopback, with emulated links. */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { HaloError, UsageError } from "../base/index.js";
import { booleanFlag, integerFlag, parseFlags, stringFlag, type ParsedFlags } from "./flags.js";
import type { CommandIo } from "./io.js";
import { DEVICE_PRESETS, DEVICE_PRESET_NAMES, slowdownFactors, type DevicePresetName } from "../cluster/index.js";
import { LINK_FLAGS, LINK_FLAGS_HELP, LOOPBACK_DEV_KEY, linkProfileOf, linkSpecArgs, readLinkSpec, readLinksFile, readSeed, type LinkSpec } from "./clusterFlags.js";
import { GENERATION_FLAGS, GENERATION_FLAGS_HELP, executeGeneration, readGenerationFlags } from "./run.js";

export const CLUSTER_HELP = `usage: halo cluster --local N [--loss PCT] [--delay MS] [--jitter MS] [--bandwidth MBIT] [--links FILE] [--seed S]
                   [--sync relaxed|strict] [every flag of halo run]

Starts N−1 worker processes and this coordinator on loopback, each worker link emulated in
userspace (seeded loss, delay, jitter, bandwidth), and generates like halo run.
      --local N          devices, the coordinator included (1..64)
      --sync MODE        relaxed (UDP, deadlines; default) or strict (TCP, wait for all)
      --wire FORMAT      q8_0 (default), q4_0, f16 or f32: how hidden states and partial sums travel
      --shares LIST      relative compute share of each device, the coordinator first (default: equal)
      --copies N         send every datagram N times (1-4, default 1: a loss costs a NACK round trip)
      --ffn-block N      neurons per FFN group, a multiple of the weights' block size (default 32)
      --deadline-min MS  relaxed mode: the shortest soft deadline per phase (default 5)
      --deadline-max MS  relaxed mode: the hard deadline per phase, for critical contributions (default 250)
${LINK_FLAGS_HELP}
      --devices LIST     a preset per device, the coordinator first: pi4, pi5, jetson-nano, x86. Each
                         process is slowed to its preset's speed against the fastest one listed (a
                         wait of (×−1) times the compute it did) and, unless link flags are given,
                         its worker link is the preset's (Wi-Fi for the boards, Ethernet otherwise)
      --links FILE       per-worker links: a JSON array, one {loss, lossBurst, delay, jitter, bandwidth}
                         per worker; fields left out take the flags' values
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

/** --devices pi4,pi4,pi5,pi5 → one preset per device, the coordinator first. */
function readDevicePresets(flags: ParsedFlags, nDevices: number): DevicePresetName[] | undefined {
  const value = stringFlag(flags, "devices");
  if (value === undefined) return undefined;
  const names = value.split(",").map((name) => name.trim());
  for (const name of names) {
    if (!(DEVICE_PRESET_NAMES as readonly string[]).includes(name)) throw new UsageError(`--devices: '${name}' is not one of ${DEVICE_PRESET_NAMES.join(", ")}`);
  }
  if (names.length !== nDevices) throw new UsageError(`--devices lists ${names.length} devices; --local ${nDevices} needs one per device, the coordinator first`);
  return names as DevicePresetName[];
}

export async function clusterCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { ...GENERATION_FLAGS, ...LINK_FLAGS, local: { type: "string" }, links: { type: "string" }, devices: { type: "string" } });
  if (booleanFlag(flags, "help")) {
    io.stdout(CLUSTER_HELP + "\n");
    return 0;
  }
  const nDevices = integerFlag(flags, "local", 1, 64);
  if (nDevices === undefined) throw new UsageError("--local N is required (the number of devices on this machine)");
  const request = readGenerationFlags(flags);
  const presets = readDevicePresets(flags, nDevices);
  const slowdowns = presets === undefined ? undefined : slowdownFactors(presets);
  const defaultLink = readLinkSpec(flags);
  const linksPath = stringFlag(flags, "links");
  // A preset brings its typical link unless the flags or a --links file say otherwise.
  const explicitLink = ["delay", "jitter", "bandwidth"].some((name) => stringFlag(flags, name) !== undefined);
  const presetLink = (i: number): LinkSpec => {
    if (presets === undefined || explicitLink) return defaultLink;
    const link = DEVICE_PRESETS[presets[i + 1]!].link;
    return { ...defaultLink, delay: link.delayMs, jitter: link.jitterMs, bandwidth: link.bandwidthMbit };
  };
  const links = linksPath === undefined ? Array.from({ length: nDevices - 1 }, (_, i) => presetLink(i)) : readLinksFile(linksPath, nDevices - 1, defaultLink);
  const linkProfiles = links.map(linkProfileOf);
  const seed = readSeed(flags) ?? 1;
  const forwarded = ["--host", "127.0.0.1", "--port", "0", "--cluster-key", LOOPBACK_DEV_KEY, "--model", request.modelFlags.modelPath, "--threads", String(request.modelFlags.threads ?? 1)];
  if (request.modelFlags.contextLength !== undefined) forwarded.push("--ctx-size", String(request.modelFlags.contextLength));
  const children: ChildProcess[] = [];
  const stopChildren = (): void => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGTERM");
  };
  process.once("exit", stopChildren);
  try {
    const started = await Promise.all(Array.from({ length: nDevices - 1 }, (_, i) => startWorker([...forwarded, ...linkSpecArgs(links[i]!), "--seed", String(seed * 1000 + i + 1), ...(slowdowns === undefined ? [] : ["--slowdown", String(slowdowns[i + 1])])])));
    children.push(...started.map((s) => s.child));
    if (presets !== undefined) {
      io.stderr(`halo cluster: devices ${presets.map((name, i) => `${i === 0 ? "coordinator" : `worker ${i}`} ${name} (${DEVICE_PRESETS[name].weightGBps.toFixed(1)} GB/s, compute ×${slowdowns![i]!.toFixed(2)})`).join(", ")}\n`);
    }
    return await executeGeneration(
      { ...request, cluster: { workers: started.map((s) => ({ host: "127.0.0.1", port: s.port })), mode: request.mode, wire: request.wire, shares: request.shares, copies: request.copies, ffnBlockSize: request.ffnBlockSize, deadlines: request.deadlines, clusterKey: Buffer.from(LOOPBACK_DEV_KEY), linkProfiles, seed, computeSlowdown: slowdowns?.[0], devicePresets: presets, slowdowns } },
      io,
    );
  } finally {
    stopChildren();
  }
}
