/**
 * `npm run bench:loader`: one worker's share of a synthetic TinyLlama-1.1B-shape Q4_0 model
 * (1/4 of every layer's groups by default), computed token by token fully resident and with a
 * memory budget of half the share, its other rows read from the model file or from the
 * worker's shard while it computes. Measured in the same run, rounds interleaved: tok/s of each
 * and their ratio, the share of read time hidden behind compute, reads and bytes per token.
 *
 * The compute is back to back (no network between layer phases), the hardest case for hiding
 * reads; in a cluster each phase also waits a sync round trip, during which reads continue.
 * The file stays in the page cache (Node has no posix_fadvise to drop it), so a read here is a
 * copy from memory: on a device whose model does not fit its RAM, reads come from the disk.
 *
 * Env: HALO_BENCH_LAYERS (4), HALO_BENCH_SHARE (4: the worker holds 1/N of the groups),
 * HALO_BENCH_BUDGET (0.5 of the share), HALO_BENCH_TOKENS (16 per round), HALO_BENCH_ROUNDS (6).
 * Writes bench/results/loader/<timestamp>.json.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SeededRandom } from "../../src/base/index.js";
import { GroupWorker } from "../../src/cluster/index.js";
import { createKernels } from "../../src/kernels/index.js";
import {
  GroupStore, checkShard, modelStreamSource, readDeviceSlice, rowSplitKernels, shardStreamSource, writeShardFromModel,
  type DeviceGroups, type LoaderIoStats, type StreamSource,
} from "../../src/loader/index.js";
import { openGguf, readModelConfig, writeSyntheticModel, type GgufFile } from "../../src/model/index.js";
import { createGroupLayout, groupsOfDevice, proportionalPlacement, type GroupKind } from "../../src/partition/index.js";
import { describeRun, mean, stddev } from "../report.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const root = join(here, "..", "..", "..");
const cacheDir = join(root, "bench", ".cache");
const env = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);
const nLayers = env("HALO_BENCH_LAYERS", 4);
const nShares = env("HALO_BENCH_SHARE", 4);
const budgetFraction = env("HALO_BENCH_BUDGET", 0.5);
const nTokens = env("HALO_BENCH_TOKENS", 16);
const nRounds = env("HALO_BENCH_ROUNDS", 6);
const PHASES: readonly GroupKind[] = ["attention", "ffn"];
const MiB = 2 ** 20;

function ensureModel(): string {
  mkdirSync(cacheDir, { recursive: true });
  const path = join(cacheDir, `tinyllama-1.1b-${nLayers}l-q4_0.gguf`);
  if (!existsSync(path)) {
    process.stderr.write(`writing ${path}…\n`);
    writeSyntheticModel(path, { shape: "tinyllama-1.1b", type: "q4_0", seed: 1, nLayers });
  }
  return path;
}

interface Variant {
  name: string;
  worker: GroupWorker;
  store: GroupStore | undefined;
  tokS: number[];
  io: LoaderIoStats[];
}

/** Runs `nTokens` decode steps from position 0; returns tok/s and the store's I/O over them. */
async function round(variant: Variant, inputs: readonly Float32Array[]): Promise<void> {
  const { worker, store } = variant;
  worker.reset();
  const before = store?.stats();
  const started = performance.now();
  for (let position = 0; position < nTokens; position++) {
    for (let layer = 0; layer < nLayers; layer++) {
      for (const [p, phase] of PHASES.entries()) {
        await store?.acquire(layer, phase);
        worker.compute(phase, layer, position, 1, inputs[(position * nLayers + layer) * 2 + p]!);
        store?.release(layer, phase);
      }
    }
  }
  variant.tokS.push(nTokens / ((performance.now() - started) / 1000));
  const after = store?.stats();
  if (before !== undefined && after !== undefined) {
    variant.io.push({ exposedIoMs: after.exposedIoMs - before.exposedIoMs, hiddenIoMs: after.hiddenIoMs - before.hiddenIoMs, reads: after.reads - before.reads, bytesRead: after.bytesRead - before.bytesRead });
  }
}

async function budgeted(name: string, source: StreamSource, budgetBytes: number, kernels: ReturnType<typeof createKernels>, lookahead?: "layer" | "phase"): Promise<Variant> {
  const store = await GroupStore.open(source, { budgetBytes, lookahead });
  return { name, worker: GroupWorker.fromSlice(store.slice, rowSplitKernels(kernels), nTokens + 1, 1), store, tokS: [], io: [] };
}

const modelPath = ensureModel();
const file = await openGguf(modelPath);
const config = readModelConfig(file.metadata);
const layout = createGroupLayout(config, 32);
const placement = proportionalPlacement(layout, nLayers, Array.from({ length: nShares }, () => 1));
const groups: DeviceGroups[] = placement.layers.map((_, l) => ({ attention: groupsOfDevice(placement, l, "attention", 1), ffn: groupsOfDevice(placement, l, "ffn", 1) }));
const kernels = createKernels({ nThreads: 1 });
const modelSource = modelStreamSource(file, config, layout, groups);
const shareBytes = modelSource.parts.reduce((n, p) => n + p.sizeBytes, 0);
const budgetBytes = Math.floor(budgetFraction * shareBytes);

const shardPath = join(cacheDir, `tinyllama-1.1b-${nLayers}l-q4_0.share-1-of-${nShares}.shard.gguf`);
if (!existsSync(shardPath)) writeShardFromModel(shardPath, file, config, layout, groups, "0".repeat(64));
const shardFile: GgufFile = await openGguf(shardPath);
const shardSource = shardStreamSource(shardFile, checkShard(shardPath, shardFile));

const variants: Variant[] = [
  { name: "resident", worker: GroupWorker.fromSlice(readDeviceSlice(file, config, layout, groups), kernels, nTokens + 1, 1), store: undefined, tokS: [], io: [] },
  await budgeted("budget, model file", modelSource, budgetBytes, kernels),
  await budgeted("budget, shard", shardSource, budgetBytes, kernels),
  await budgeted("budget, shard, phase lookahead", shardSource, budgetBytes, kernels, "phase"),
];
const random = new SeededRandom(1);
const inputs = Array.from({ length: nTokens * nLayers * 2 }, () => Float32Array.from({ length: config.dim }, () => random.nextGaussian()));
for (const variant of variants) await round(variant, inputs.slice(0, nTokens * nLayers * 2));
for (const variant of variants) {
  variant.tokS.length = 0;
  variant.io.length = 0;
}
for (let r = 0; r < nRounds; r++) for (const variant of variants) await round(variant, inputs);

const run = describeRun();
const resident = variants[0]!;
const rows = variants.map((v) => {
  const io = v.io.reduce((a, b) => ({ exposedIoMs: a.exposedIoMs + b.exposedIoMs, hiddenIoMs: a.hiddenIoMs + b.hiddenIoMs, reads: a.reads + b.reads, bytesRead: a.bytesRead + b.bytesRead }), { exposedIoMs: 0, hiddenIoMs: 0, reads: 0, bytesRead: 0 });
  const tokens = v.io.length * nTokens;
  const plan = v.store?.residency;
  return {
    variant: v.name,
    tokS: mean(v.tokS),
    tokSStddev: stddev(v.tokS),
    ratio: mean(v.tokS) / mean(resident.tokS),
    hiddenPercent: v.store === undefined ? undefined : (100 * io.hiddenIoMs) / Math.max(1e-9, io.hiddenIoMs + io.exposedIoMs),
    exposedIoMsPerToken: v.store === undefined ? undefined : io.exposedIoMs / tokens,
    hiddenIoMsPerToken: v.store === undefined ? undefined : io.hiddenIoMs / tokens,
    readsPerToken: v.store === undefined ? undefined : io.reads / tokens,
    mibReadPerToken: v.store === undefined ? undefined : io.bytesRead / tokens / MiB,
    mibStreamedPerToken: plan === undefined ? undefined : plan.streamedBytesPerToken / MiB,
    residentMiB: plan === undefined ? shareBytes / MiB : plan.residentBytes / MiB,
    slots: plan === undefined ? undefined : `slots ${plan.slotBytes.map((b) => (b / MiB).toFixed(2)).join(" + ")} MiB, scratch ${(plan.scratchBytes / MiB).toFixed(2)} MiB`,
  };
});
const fmt = (x: number | undefined, digits = 2): string => (x === undefined ? "–" : x.toFixed(digits));
console.log(`\n${run.line}`);
console.log(`${nLayers}-layer TinyLlama-1.1B-shape Q4_0; the worker holds 1/${nShares} of every layer's groups (${(shareBytes / MiB).toFixed(1)} MiB); budget ${(budgetFraction * 100).toFixed(0)}% = ${(budgetBytes / MiB).toFixed(1)} MiB; 1 compute thread; ${nRounds} rounds × ${nTokens} tokens, interleaved; file in the page cache\n`);
console.log("| variant | tok/s | × resident | I/O hidden | exposed ms/tok | hidden ms/tok | reads/tok | MiB read/tok | MiB streamed/tok | resident MiB | staging |");
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
for (const r of rows) {
  console.log(`| ${r.variant} | ${fmt(r.tokS, 1)} ± ${fmt(r.tokSStddev, 1)} | ${fmt(r.ratio)} | ${r.hiddenPercent === undefined ? "–" : `${r.hiddenPercent.toFixed(0)}%`} | ${fmt(r.exposedIoMsPerToken)} | ${fmt(r.hiddenIoMsPerToken)} | ${fmt(r.readsPerToken, 0)} | ${fmt(r.mibReadPerToken)} | ${fmt(r.mibStreamedPerToken)} | ${fmt(r.residentMiB)} | ${r.slots ?? "–"} |`);
}
const outDir = join(root, "bench", "results", "loader");
mkdirSync(outDir, { recursive: true });
const outPath = join(outDir, `${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
writeFileSync(outPath, JSON.stringify({ ...run.record, nLayers, nShares, budgetFraction, budgetBytes, shareBytes, nTokens, nRounds, threads: 1, rows, tokS: Object.fromEntries(variants.map((v) => [v.name, v.tokS])) }, null, 2));
console.log(`\nwrote ${outPath}`);
for (const v of variants) await v.store?.close();
shardFile.close();
file.close();
