/**
 * `npm run bench:cluster`: relaxed against strict synchronization on a real network stack. Each
 * device is a `halo` process in its own network namespace on a Linux bridge (src/testbed); loss
 * is dropped on the wire by nft in the bridge, switched on after the workers have loaded their
 * weights; Wi-Fi-like delay and jitter are emulated in userspace by the senders' --delay/--jitter.
 * The model is a synthetic TinyLlama-1.1B-shape Q4_0 file with fewer layers (2 cores).
 * Prints a markdown table and writes bench/results/cluster/<timestamp>.json. Needs root.
 *
 * Flags: --layers N (4) --tokens N (24) --devices 4,8 --loss 0,1,2,5,10 --repeats N (1)
 * --modes relaxed,strict --delay MS (3) --jitter MS (1) --copies N (1: every datagram sent N times in relaxed mode)
 * --presets pi4,pi5 (device presets, cycled over the devices, coordinator first: each process slowed to its
 * preset's speed against the fastest listed) --quick (2 layers, 12 tokens, 4 devices, 0 and 5%).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEVICE_PRESET_NAMES, slowdownFactors, type DevicePresetName } from "../../src/cluster/index.js";
import { describeRun } from "../report.js";
import { BENCH_CLUSTER_KEY, BENCH_PROMPT, NamespaceCluster, PROJECT_ROOT, decodeTpotMs, ensureSynthModel, haloSync } from "./namespaceCluster.js";
import { renderReport, summarize, type RunRecord } from "./report.js";

const workerPort = 9998;
const RUN_TIMEOUT_MS = 20 * 60_000;

const { values: flags } = parseArgs({
  options: {
    layers: { type: "string" }, tokens: { type: "string" }, devices: { type: "string" }, loss: { type: "string" }, repeats: { type: "string" },
    modes: { type: "string" }, delay: { type: "string" }, jitter: { type: "string" }, copies: { type: "string" }, presets: { type: "string" }, quick: { type: "boolean" },
  },
});
const quick = flags.quick === true;
const list = (value: string | undefined, fallback: string): number[] => (value ?? fallback).split(",").map(Number);
const config = {
  nLayers: Number(flags.layers ?? (quick ? 2 : 4)),
  nTokens: Number(flags.tokens ?? (quick ? 12 : 24)),
  devices: list(flags.devices, quick ? "4" : "4,8"),
  lossPercents: list(flags.loss, quick ? "0,5" : "0,1,2,5,10"),
  repeats: Number(flags.repeats ?? 1),
  modes: (flags.modes ?? "relaxed,strict").split(",") as Array<"relaxed" | "strict">,
  delayMs: Number(flags.delay ?? 3),
  jitterMs: Number(flags.jitter ?? 1),
  copies: Number(flags.copies ?? 1),
  presets: flags.presets === undefined ? [] : (flags.presets.split(",") as DevicePresetName[]),
};
for (const preset of config.presets) if (!(DEVICE_PRESET_NAMES as readonly string[]).includes(preset)) throw new Error(`--presets: '${preset}' is not one of ${DEVICE_PRESET_NAMES.join(", ")}`);
/** Each device's compute slowdown under --presets (1 without). */
function slowdownsFor(nDevices: number): number[] {
  if (config.presets.length === 0) return new Array<number>(nDevices).fill(1);
  return slowdownFactors(Array.from({ length: nDevices }, (_, i) => config.presets[i % config.presets.length]!));
}
for (const [name, value] of Object.entries(config)) {
  const values = Array.isArray(value) ? value : [value];
  if (values.some((v) => typeof v === "number" && !(Number.isFinite(v) && v >= 0))) throw new Error(`--${name}: not a non-negative number: ${String(value)}`);
}
if (config.devices.some((n) => !(Number.isInteger(n) && n >= 2))) throw new Error(`--devices: each count must be an integer ≥ 2, got ${config.devices.join(",")}`);
if (config.modes.some((m) => m !== "relaxed" && m !== "strict")) throw new Error(`--modes takes relaxed,strict; got ${config.modes.join(",")}`);
if (process.getuid?.() !== 0) throw new Error("bench:cluster builds network namespaces, nft rules and qdiscs: run it as root");

const modelPath = ensureSynthModel("tinyllama-1.1b", config.nLayers);
const linkFlags = ["--delay", String(config.delayMs), "--jitter", String(config.jitterMs)];
// Workers emulate delay on what they send. The coordinator does too once halo run takes the same flags; until then its sends are undelayed.
const coordinatorEmulatesDelay = haloSync(["run", "--help"]).includes("--delay");
const common = ["--model", modelPath, "--threads", "1", "--cluster-key", BENCH_CLUSTER_KEY];

async function measure(cluster: NamespaceCluster, mode: "relaxed" | "strict", nTokens: number): ReturnType<NamespaceCluster["runCoordinator"]> {
  // The equal split: this benchmark compares the sync modes, not placements (halo run's default is the scheduler's).
  const args = [...common, "--workers", cluster.workerList(workerPort), "--sync", mode, "--placement", "uniform", "--prompt", BENCH_PROMPT, "--max-tokens", String(nTokens), "--ignore-eos", "--temperature", "0"];
  if (coordinatorEmulatesDelay) args.push(...linkFlags);
  if (mode === "relaxed" && config.copies !== 1) args.push("--copies", String(config.copies));
  const coordinatorSlowdown = slowdownsFor(cluster.nDevices)[0]!;
  if (coordinatorSlowdown > 1) args.push("--slowdown", String(coordinatorSlowdown));
  return cluster.runCoordinator(args, RUN_TIMEOUT_MS);
}

async function benchDevices(nDevices: number, runs: RunRecord[]): Promise<void> {
  const cluster = await NamespaceCluster.start({
    family: "halobench", nDevices,
    workerSets: [{ port: workerPort, args: (node) => [...common, ...linkFlags, "--seed", String(node), "--slowdown", String(slowdownsFor(nDevices)[node])] }],
  });
  try {
    // One short run pages the weights in on every device, so the first measured run does not pay for it.
    await measure(cluster, "relaxed", 2);
    for (const lossPercent of config.lossPercents) {
      await cluster.setWorkerLoss(lossPercent);
      for (let repeat = 0; repeat < config.repeats; repeat++) {
        for (const mode of config.modes) {
          const { json, wireDrops, wallMs } = await measure(cluster, mode, config.nTokens);
          const totals = json.cluster!.totals;
          runs.push({ devices: nDevices, lossPercent, mode, repeat, tpotMs: decodeTpotMs(json), droppedContributions: totals.droppedContributions, expectedContributions: totals.expectedContributions, lostWorkers: json.cluster!.lostWorkers, wireDrops, syncWaitMs: totals.syncWaitMs, wallMs });
          process.stderr.write(`${nDevices} devices, ${lossPercent}% loss, ${mode} #${repeat + 1}: ${wallMs.toFixed(0)} ms, ${totals.droppedContributions}/${totals.expectedContributions} dropped, ${wireDrops} wire drops, lost ${JSON.stringify(json.cluster!.lostWorkers)}\n`);
        }
      }
    }
  } finally {
    await cluster.close();
  }
}

/** One device, no network: what the cluster's TPOT compares against. */
function singleDeviceMsPerToken(): number {
  const json = JSON.parse(haloSync(["run", "--model", modelPath, "--threads", "1", "--prompt", BENCH_PROMPT, "--max-tokens", String(config.nTokens), "--ignore-eos", "--temperature", "0", "--json"])) as { timings: { msPerToken: number } };
  return json.timings.msPerToken;
}

const runs: RunRecord[] = [];
const singleDeviceMs = singleDeviceMsPerToken();
for (const nDevices of config.devices) await benchDevices(nDevices, runs);
const summary = summarize(runs);
const run = describeRun();
const setting = `${config.nLayers}-layer TinyLlama-1.1B-shape Q4_0, ${config.nTokens} tokens (TPOT over the last ${config.nTokens - 1}), ${config.repeats} repeat(s), --threads 1 per process; ` +
  `${config.presets.length === 0 ? "" : `device presets ${config.presets.join(",")} (cycled, coordinator first); `}${config.copies === 1 ? "" : `relaxed sends every datagram ${config.copies} times; `}links: ${config.delayMs} ms delay ± ${config.jitterMs} ms jitter emulated on everything each device sends${coordinatorEmulatesDelay ? "" : " but the coordinator (halo run has no --delay)"} (datagrams and, in order, TCP messages); loss dropped by nft on every worker link`;
console.log(`\n${run.line}\n${setting}\none device, no network, 1 thread: ${singleDeviceMs.toFixed(1)} ms/token (${(1000 / singleDeviceMs).toFixed(2)} tok/s)\n\n${renderReport(summary)}\n`);
const outDir = join(PROJECT_ROOT, "bench", "results", "cluster");
mkdirSync(outDir, { recursive: true });
const outPath = join(outDir, `${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
writeFileSync(outPath, JSON.stringify({ ...run.record, config, coordinatorEmulatesDelay, setting, singleDeviceMsPerToken: singleDeviceMs, summary, runs }, null, 2));
console.log(`wrote ${outPath}`);
