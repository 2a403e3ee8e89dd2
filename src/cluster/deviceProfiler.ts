/**
 * Measures this device for the scheduler (scheduler/deviceProfile.ts): compute per neuron group
 * for one decode token, memory, and how fast it reads its model file. `halo profile` prints it,
 * a worker measures it once its weights are loaded and again when asked, and the coordinator
 * measures its own.
 *
 * Compute: one attention group and one FFN block of the model's shape (syntheticGroup.ts), in
 * the model's own tensor types and in each extra type, on each kernel set given (the configured
 * thread count first). A figure is the median of a few timed runs, each repeating the group
 * until it lasts long enough for the clock's resolution not to matter; only a few groups are
 * ever timed, so a large model costs about what a small one does. Attention is timed at
 * position 0: the weight products, without the attention over cached positions, which grows
 * with the context and is no property of the device.
 *
 * Slowdown: a worker emulating a slower device (--slowdown X) holds each result back
 * (X − 1) × the compute it really did, so it is X times slower to the coordinator. Its figures
 * are the measured ones multiplied by X, as that wait would be paid for every group; timing a
 * timer-driven wait instead would measure the timer's granularity on small groups.
 */
import { open, type FileHandle } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { freemem } from "node:os";
import { FileError, HaloError, systemClock, type Clock } from "../base/index.js";
import type { GgmlType, MatrixKernels, NativeMatrixKernels } from "../kernels/index.js";
import type { ModelConfig } from "../model/index.js";
import type { MeasuredProfile } from "../net/index.js";
import { DEFAULT_FFN_BLOCK_SIZE } from "../partition/index.js";
import { createSyntheticGroups, tensorTypesLabel, uniformTypes, type LayerTensorTypes } from "./syntheticGroup.js";

export interface DeviceProfilerOptions {
  config: ModelConfig;
  /** The model's layer types: the figures the scheduler uses are for these. */
  tensorTypes: LayerTensorTypes;
  /** Neurons per FFN group. Defaults to DEFAULT_FFN_BLOCK_SIZE (32). */
  ffnBlockSize?: number;
  /** The kernels this device computes with, first; then any others to time too (e.g. one thread). */
  kernels: readonly MatrixKernels[];
  /** Types also timed on the model's shape, where the shape allows them. Defaults to F32, Q8_0 and Q4_0. */
  extraTypes?: readonly GgmlType[];
  /** The emulated slowdown (≥ 1) the device applies to its compute; every time is multiplied by it. Defaults to 1. */
  slowdown?: number;
  /** The model file, for its read throughput; without one the throughput is 0. */
  modelPath?: string;
  /** Bytes of weights the device may keep (its memory budget). Defaults to its free memory. */
  memoryBudgetBytes?: number;
  /** Reads the time. Defaults to the system clock. */
  clock?: Clock;
  /** Timed runs per figure, of which the median is kept. Defaults to 5. */
  repeats?: number;
  /** Each timed run repeats its group until it lasts this long, ms. Defaults to 2. */
  minRunMs?: number;
  /** Untimed runs of each group first: at least 500 of them and this long, ms, at most ten times this long. Defaults to 10. */
  warmupMs?: number;
  /** Most bytes of the model file read. Defaults to 64 MiB. */
  maxReadBytes?: number;
  /** Free memory in bytes. Defaults to freeMemoryBytes(). */
  freeMemory?: () => number;
}

export const DEFAULT_PROFILE_TYPES: readonly GgmlType[] = ["F32", "Q8_0", "Q4_0"];

/** Runs of one group per warm-up or timed run, at most: a frozen or coarse clock must not make either endless. */
const MAX_RUNS_PER_SAMPLE = 1 << 14;
/** Warm-up runs of each group: at least this many, for at least warmupMs, for at most WARMUP_CAP_FACTOR × warmupMs. */
const WARMUP_RUNS = 500;
const WARMUP_CAP_FACTOR = 10;
const READ_CHUNK_BYTES = 8 << 20;

/** Threads a kernel set runs on: the native kernels say; the TS reference runs on the calling thread. */
export function kernelThreads(kernels: MatrixKernels): number {
  const nThreads = (kernels as Partial<NativeMatrixKernels>).nThreads;
  return typeof nThreads === "number" && Number.isInteger(nThreads) && nThreads >= 1 ? nThreads : 1;
}

export async function measureDeviceProfile(options: DeviceProfilerOptions): Promise<MeasuredProfile> {
  const clock = options.clock ?? systemClock;
  const slowdown = options.slowdown ?? 1;
  if (!(Number.isFinite(slowdown) && slowdown >= 1)) throw new HaloError("HALO_ERR_USAGE", `profile: slowdown must be a number ≥ 1, got ${slowdown}`);
  if (options.kernels.length === 0) throw new HaloError("HALO_ERR_USAGE", "profile: no kernels to time");
  const ffnBlockSize = options.ffnBlockSize ?? DEFAULT_FFN_BLOCK_SIZE;
  const ownLabel = tensorTypesLabel(options.tensorTypes);
  const typeSets = [
    { label: ownLabel, types: options.tensorTypes },
    ...(options.extraTypes ?? DEFAULT_PROFILE_TYPES).filter((t) => t !== ownLabel).map((t) => ({ label: t as string, types: uniformTypes(t) })),
  ];
  // One kernel set per thread count: two sets on the same count would time the same thing.
  const kernelSets = options.kernels.filter((k, i, all) => all.findIndex((other) => kernelThreads(other) === kernelThreads(k)) === i);
  const timing = { clock, repeats: options.repeats ?? 5, minRunMs: options.minRunMs ?? 2, warmupMs: options.warmupMs ?? 10 };
  const compute: MeasuredProfile["compute"] = [];
  for (const { label, types } of typeSets) {
    const groups = createSyntheticGroups(options.config, ffnBlockSize, types);
    if (groups === undefined) {
      if (label === ownLabel) throw new HaloError("HALO_ERR_USAGE", `profile: the model's ${label} layers cannot be split into groups of ${ffnBlockSize} FFN neurons`);
      continue;
    }
    for (const kernels of kernelSets) {
      const bound = groups.bind(kernels);
      const attentionMs = (await medianRunMs(bound.attention, timing)) / groups.nAttentionGroups;
      const ffnMs = await medianRunMs(bound.ffn, timing);
      compute.push({ tensorType: label, threads: kernelThreads(kernels), attentionGroupMs: attentionMs * slowdown, ffnGroupMs: ffnMs * slowdown });
    }
  }
  const headline = compute[0]!;
  const free = Math.max(0, Math.floor((options.freeMemory ?? freeMemoryBytes)()));
  return {
    compute,
    attentionGroupMs: headline.attentionGroupMs,
    ffnGroupMs: headline.ffnGroupMs,
    freeMemoryBytes: free,
    memoryBudgetBytes: options.memoryBudgetBytes ?? free,
    readBytesPerSecond: options.modelPath === undefined ? 0 : await readThroughput(options.modelPath, options.maxReadBytes ?? 64 << 20, clock),
  };
}

/** The median of `repeats` timed runs of `run`, per call, in ms. */
async function medianRunMs(run: () => void, timing: { clock: Clock; repeats: number; minRunMs: number; warmupMs: number }): Promise<number> {
  const { clock, minRunMs } = timing;
  const timeRuns = (n: number): number => {
    const start = clock.now();
    for (let i = 0; i < n; i++) run();
    return Math.max(0, clock.now() - start);
  };
  // Warm-up, which also calibrates: the first runs pay page faults, scratch growth and code the
  // JIT has not optimized yet (V8 needs some hundreds of calls); none of them is counted. A
  // group slow enough to reach the cap has its loops optimized within a run anyway.
  const warmupStart = clock.now();
  let warmupRuns = 0;
  let warmupMs = 0;
  do {
    run();
    warmupRuns++;
    warmupMs = clock.now() - warmupStart;
  } while ((warmupMs < timing.warmupMs || warmupRuns < WARMUP_RUNS) && warmupMs < WARMUP_CAP_FACTOR * timing.warmupMs && warmupRuns < MAX_RUNS_PER_SAMPLE);
  const perRunMs = warmupMs / warmupRuns;
  const perSample = perRunMs > 0 ? Math.min(MAX_RUNS_PER_SAMPLE, Math.max(1, Math.ceil(minRunMs / perRunMs))) : 1;
  const samples: number[] = [];
  for (let r = 0; r < Math.max(1, timing.repeats); r++) {
    samples.push(timeRuns(perSample) / perSample);
    // Between runs the event loop turns, so a worker's heartbeats and datagrams are not held up.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  samples.sort((a, b) => a - b);
  const mid = samples.length >> 1;
  return samples.length % 2 === 1 ? samples[mid]! : (samples[mid - 1]! + samples[mid]!) / 2;
}

/**
 * Sequential read throughput of `path`: its first `maxBytes` in large positioned reads, bytes/s.
 * Pages already cached read at memory speed, which is also how fast the weights would load now.
 * 0 when the clock did not move (a frozen test clock).
 */
export async function readThroughput(path: string, maxBytes: number, clock: Clock = systemClock): Promise<number> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    throw new FileError(path, `cannot open: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
  try {
    const buffer = Buffer.allocUnsafe(Math.max(1, Math.min(READ_CHUNK_BYTES, maxBytes)));
    let total = 0;
    const start = clock.now();
    while (total < maxBytes) {
      const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, maxBytes - total), total);
      if (bytesRead === 0) break;
      total += bytesRead;
    }
    const elapsedMs = clock.now() - start;
    return elapsedMs > 0 ? (total * 1000) / elapsedMs : 0;
  } catch (error) {
    throw new FileError(path, `cannot read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  } finally {
    await handle.close();
  }
}

/** cgroup v2, then v1: a memory limit and the usage it is counted against. */
const CGROUP_MEMORY_FILES = [
  { limit: "/sys/fs/cgroup/memory.max", usage: "/sys/fs/cgroup/memory.current" },
  { limit: "/sys/fs/cgroup/memory/memory.limit_in_bytes", usage: "/sys/fs/cgroup/memory/memory.usage_in_bytes" },
] as const;

/**
 * Bytes this process could still allocate: the OS's free memory, or less when a cgroup (a
 * container) limits memory to less than that. `readText` returns a file's text, or undefined
 * when it does not exist (no cgroup of that version: nothing to apply).
 */
export function freeMemoryBytes(source: { osFreeBytes?: number; readText?: (path: string) => string | undefined } = {}): number {
  const readText = source.readText ?? readTextIfPresent;
  let free = source.osFreeBytes ?? freemem();
  for (const files of CGROUP_MEMORY_FILES) {
    const limit = parseByteCount(readText(files.limit));
    if (limit === undefined) continue;
    const usage = parseByteCount(readText(files.usage)) ?? 0;
    free = Math.min(free, Math.max(0, limit - usage));
  }
  return free;
}

/** A cgroup byte count; "max" (no limit) and anything unreadable are undefined. */
function parseByteCount(text: string | undefined): number | undefined {
  const trimmed = text?.trim();
  if (trimmed === undefined || !/^\d+$/.test(trimmed)) return undefined;
  const value = Number(trimmed);
  return Number.isSafeInteger(value) ? value : undefined;
}

function readTextIfPresent(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    // No such cgroup file (another cgroup version, or none): there is no limit to apply.
    return undefined;
  }
}
