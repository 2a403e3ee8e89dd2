/**
 * bench:report's speed cells: TPOT of each mode at each loss rate on N devices in namespaces
 * (bench/cluster's NamespaceCluster), and of one device without a network.
 *
 * Two sets of workers share the testbed: fully resident ones for strict, relaxed and relaxed +
 * predictor, and ones under a memory budget for full halo, so that each mode adds exactly one
 * mechanism to the one before: relaxed synchronization, then the predictor's critical sets,
 * then the scheduler's placement together with budgeted, streaming workers.
 */
import { join } from "node:path";
import { BENCH_CACHE_DIR, BENCH_CLUSTER_KEY, BENCH_PROMPT, NamespaceCluster, decodeTpotMs, haloSync, type HaloRunJson } from "../cluster/namespaceCluster.js";
import { mean } from "../report.js";
import { MODE_LABELS, speedKey, type SpeedCell, type SpeedMode } from "./results.js";

const PLAIN_PORT = 9998;
const BUDGET_PORT = 9997;
const RUN_TIMEOUT_MS = 20 * 60_000;

export interface SpeedSettings {
  modelPath: string;
  predictorPath: string;
  nTokens: number;
  repeats: number;
  lossPercents: readonly number[];
  modes: readonly SpeedMode[];
  delayMs: number;
  jitterMs: number;
  /** Each full-halo worker's --memory-budget in MiB for N devices; undefined: no budget. */
  budgetMiB: (nDevices: number) => number | undefined;
  /** Datagram copies in the relaxed modes (halo run --copies). */
  copies: number;
  configHash: string;
  commit: string;
}

/** What the matrix loop needs from its caller: which cells exist, where new ones go, and the progress line. */
export interface CellSink {
  isDone(key: string): boolean;
  record(cell: SpeedCell): void;
  progress(label: string, ms: number | undefined): void;
}

function modeArgs(mode: SpeedMode, predictorPath: string, copies: number): string[] {
  // Every mode but full halo is measured on the equal split: halo run's default placement is the scheduler's.
  const uniform = ["--placement", "uniform"];
  const relaxed = ["--sync", "relaxed", ...(copies === 1 ? [] : ["--copies", String(copies)])];
  switch (mode) {
    case "strict":
      return ["--sync", "strict", ...uniform];
    case "relaxed":
      return [...relaxed, ...uniform];
    case "predictor":
      return [...relaxed, ...uniform, "--predictor", predictorPath];
    case "halo":
      return [...relaxed, "--predictor", predictorPath, "--placement", "halo"];
    default:
      return mode satisfies never;
  }
}

function generationArgs(settings: SpeedSettings, nTokens: number): string[] {
  return ["--model", settings.modelPath, "--threads", "1", "--prompt", BENCH_PROMPT, "--max-tokens", String(nTokens), "--ignore-eos", "--temperature", "0"];
}

function cellOf(settings: SpeedSettings, devices: number, lossPercent: number, mode: SpeedMode | "single", repeat: number, json: HaloRunJson, wireDrops: number, wallMs: number): SpeedCell {
  const tpotMs = decodeTpotMs(json);
  const totals = json.cluster?.totals;
  return {
    key: speedKey(devices, lossPercent, mode, repeat), configHash: settings.configHash, devices, lossPercent, mode, repeat,
    tpotMs, tpotMeanMs: tpotMs.length > 0 ? mean(tpotMs) : json.timings.msPerToken,
    droppedContributions: totals?.droppedContributions ?? 0, expectedContributions: totals?.expectedContributions ?? 0, criticalContributions: totals?.criticalContributions ?? 0,
    wireDrops, lostWorkers: json.cluster?.lostWorkers ?? [], groupsPerDevice: json.cluster?.placement?.groupsPerDevice ?? [], wallMs, commit: settings.commit,
  };
}

/** One device, no network: the reference every cluster size scales from (loss cannot touch it; recorded at 0%). */
export function measureSingleDevice(settings: SpeedSettings, sink: CellSink): void {
  for (let repeat = 0; repeat < settings.repeats; repeat++) {
    const key = speedKey(1, 0, "single", repeat);
    const label = `1 device #${repeat + 1}`;
    if (sink.isDone(key)) {
      sink.progress(label, undefined);
      continue;
    }
    const started = performance.now();
    const json = JSON.parse(haloSync(["run", ...generationArgs(settings, settings.nTokens), "--json"])) as HaloRunJson;
    const wallMs = performance.now() - started;
    sink.record(cellOf(settings, 1, 0, "single", repeat, json, 0, wallMs));
    sink.progress(label, wallMs);
  }
}

/** Every (loss, repeat, mode) cell of `nDevices` devices not already done, in one testbed. */
export async function measureDevices(nDevices: number, settings: SpeedSettings, sink: CellSink): Promise<void> {
  const pending = settings.lossPercents.flatMap((lossPercent) => Array.from({ length: settings.repeats }, (_, repeat) => settings.modes.map((mode) => ({ lossPercent, repeat, mode })))).flat();
  const todo = pending.filter((c) => !sink.isDone(speedKey(nDevices, c.lossPercent, c.mode, c.repeat)));
  for (const c of pending) if (!todo.includes(c)) sink.progress(`${nDevices} devices, ${c.lossPercent}%, ${MODE_LABELS[c.mode]} #${c.repeat + 1}`, undefined);
  if (todo.length === 0) return;
  const linkFlags = ["--delay", String(settings.delayMs), "--jitter", String(settings.jitterMs)];
  const shardCache = ["--shard-cache", join(BENCH_CACHE_DIR, "shards")];
  const common = ["--model", settings.modelPath, "--threads", "1", "--cluster-key", BENCH_CLUSTER_KEY, ...linkFlags, ...shardCache];
  const budget = settings.budgetMiB(nDevices);
  const budgeted = budget !== undefined && settings.modes.includes("halo");
  const cluster = await NamespaceCluster.start({
    family: "haloreport", nDevices,
    workerSets: [
      { port: PLAIN_PORT, args: (node) => [...common, "--seed", String(node)] },
      ...(budgeted ? [{ port: BUDGET_PORT, args: (node: number) => [...common, "--seed", String(node), "--memory-budget", budget.toFixed(2), "--predictor", settings.predictorPath] }] : []),
    ],
  });
  try {
    const run = (mode: SpeedMode, nTokens: number) => {
      const port = mode === "halo" && budgeted ? BUDGET_PORT : PLAIN_PORT;
      return cluster.runCoordinator([...generationArgs(settings, nTokens), "--cluster-key", BENCH_CLUSTER_KEY, ...linkFlags, "--workers", cluster.workerList(port), ...modeArgs(mode, settings.predictorPath, settings.copies)], RUN_TIMEOUT_MS);
    };
    // A short run per worker set pages its weights in (and cuts the budgeted workers' shards), so no measured run pays for it.
    await run("relaxed", 2);
    if (budgeted) await run("halo", 2);
    let lossOn: number | undefined;
    for (const c of todo) {
      if (c.lossPercent !== lossOn) await cluster.setWorkerLoss((lossOn = c.lossPercent));
      const { json, wireDrops, wallMs } = await run(c.mode, settings.nTokens);
      sink.record(cellOf(settings, nDevices, c.lossPercent, c.mode, c.repeat, json, wireDrops, wallMs));
      sink.progress(`${nDevices} devices, ${c.lossPercent}%, ${MODE_LABELS[c.mode]} #${c.repeat + 1}`, wallMs);
    }
  } finally {
    await cluster.close();
  }
}
