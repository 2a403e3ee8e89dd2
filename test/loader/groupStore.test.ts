/**
 * The budgeted group store: a worker streaming part of its share from the model file (or its
 * shard) computes bit-identical partial sums to the fully resident worker, for budgets from the
 * least that fits to unlimited, with and without static importance and a prefetch ranking, and
 * when steps are skipped; a budget below the minimum names it; a file truncated or rewritten
 * under the store is a FileChangedError, never a result.
 */
import assert from "node:assert/strict";
import { copyFileSync, openSync, truncateSync, writeSync, closeSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { FileChangedError, MemoryBudgetError, SeededRandom } from "../../src/base/index.js";
import { GroupWorker } from "../../src/cluster/index.js";
import {
  GroupStore, checkShard, modelStreamSource, readDeviceSlice, rowSplitKernels, shardStreamSource, writeShardFromModel,
  type DeviceGroups, type GroupStoreOptions, type StreamSource,
} from "../../src/loader/index.js";
import { loadModel, openGguf, readModelConfig, writeSyntheticModel, type LoadedModel } from "../../src/model/index.js";
import { createGroupLayout, type GroupKind, type GroupLayout } from "../../src/partition/index.js";
import { stories260KPath, testKernels } from "../helpers/golden.js";
import { tempDir } from "./sliceHelpers.js";

const dir = tempDir("halo-store-");
const CONTEXT = 16;
const MAX_BATCH = 4;
const PHASES: readonly GroupKind[] = ["attention", "ffn"];
/** (positionStart, nTokens): a prefill batch, then single tokens. */
const BATCHES: ReadonlyArray<readonly [number, number]> = [[0, 3], [3, 1], [4, 1], [5, 2]];

interface Case {
  label: string;
  path: string;
  model: LoadedModel;
  layout: GroupLayout;
  /** Scattered groups, so parts hold several ranges and reads cross other devices' rows. */
  groups: DeviceGroups[];
}
let cases: Case[] = [];

before(async () => {
  const synthPath = join(dir.path, "tiny8-q4_0.gguf");
  writeSyntheticModel(synthPath, { shape: "tiny", type: "q4_0", seed: 5, nLayers: 8 });
  const synth = await loadModel(synthPath);
  const stories = await loadModel(stories260KPath());
  cases = [
    { label: "tiny 8-layer Q4_0", path: synthPath, model: synth, layout: createGroupLayout(synth.config, 32), groups: [] },
    { label: "stories260K F32", path: stories260KPath(), model: stories, layout: createGroupLayout(stories.config, 16), groups: [] },
  ];
  for (const c of cases) {
    const { nAttentionGroups, nFfnGroups } = c.layout;
    c.groups = Array.from({ length: c.model.config.nLayers }, (_, l) => ({
      attention: [{ start: 0, end: 1 }, { start: 2, end: Math.min(4, nAttentionGroups) }],
      ffn: [{ start: 1, end: 5 }, { start: 7 + (l % 2), end: 10 }, { start: nFfnGroups - 1, end: nFfnGroups }],
    }));
  }
});
after(() => {
  for (const c of cases) c.model.file.close();
  dir.cleanup();
});

function shareBytes(source: StreamSource): number {
  return source.parts.reduce((n, p) => n + p.sizeBytes, 0);
}

/** Every worker through BATCHES × layers × phases (optionally only `keep` steps) with the same seeded input; returns each step's partial bytes. */
async function run(worker: GroupWorker, store: GroupStore | undefined, nLayers: number, dim: number, keep: (step: number) => boolean = () => true): Promise<Buffer[]> {
  const random = new SeededRandom(77);
  const out: Buffer[] = [];
  let step = 0;
  for (const [positionStart, nTokens] of BATCHES) {
    for (let layer = 0; layer < nLayers; layer++) {
      for (const phase of PHASES) {
        const input = Float32Array.from({ length: nTokens * dim }, () => random.nextGaussian());
        if (!keep(step++)) continue;
        await store?.acquire(layer, phase);
        const partial = worker.compute(phase, layer, positionStart, nTokens, input);
        out.push(Buffer.from(Float32Array.from(partial).buffer));
        store?.release(layer, phase);
      }
    }
  }
  return out;
}

async function reference(c: Case, keep?: (step: number) => boolean): Promise<Buffer[]> {
  const slice = readDeviceSlice(c.model.file, c.model.config, c.layout, c.groups);
  return run(GroupWorker.fromSlice(slice, testKernels(), CONTEXT, MAX_BATCH), undefined, c.model.config.nLayers, c.model.config.dim, keep);
}

async function streamed(c: Case, source: StreamSource, options: GroupStoreOptions, keep?: (step: number) => boolean): Promise<{ partials: Buffer[]; store: GroupStore }> {
  const store = await GroupStore.open(source, options);
  try {
    const worker = GroupWorker.fromSlice(store.slice, rowSplitKernels(testKernels()), CONTEXT, MAX_BATCH);
    const partials = await run(worker, store, c.model.config.nLayers, c.model.config.dim, keep);
    // Outside acquire/release a streamed part has no bytes: computing it throws instead of reading a slot's stale contents.
    if (store.residency.streamedBytesPerToken > 0) {
      const streamedPart = source.parts[store.residency.parts.findIndex((p) => p.streamedBytes > 0)]!;
      assert.throws(() => worker.compute(streamedPart.kind, streamedPart.layerIndex, 0, 1, new Float32Array(c.model.config.dim)), /not loaded/);
    }
    return { partials, store };
  } finally {
    await store.close();
  }
}

function assertIdentical(actual: Buffer[], expected: Buffer[], where: string): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((bytes, i) => assert.ok(bytes.equals(expected[i]!), `${where}: step ${i} differs`));
}

test("partial sums are bit-identical to the fully resident worker at 30%, 60% and unlimited budgets", async () => {
  for (const c of cases) {
    const expected = await reference(c);
    const source = modelStreamSource(c.model.file, c.model.config, c.layout, c.groups);
    const share = shareBytes(source);
    for (const fraction of [0.3, 0.6, Infinity]) {
      const { partials, store } = await streamed(c, source, { budgetBytes: fraction * share, scratchBytes: 4096 });
      assertIdentical(partials, expected, `${c.label} budget ${fraction}`);
      const plan = store.residency;
      assert.ok(plan.residentBytes + plan.stagingBytes + plan.scratchBytes <= fraction * share, `${c.label} ${fraction}: plan within budget`);
      if (fraction === Infinity) assert.equal(plan.streamedBytesPerToken, 0);
      // stories260K's 5 layers at 30% leave room for one slot only; the 8-layer model double-buffers.
      else assert.ok(plan.streamedBytesPerToken > 0 && plan.nSlots >= (c.model.config.nLayers >= 8 ? 2 : 1), `${c.label} ${fraction}: streams (${plan.nSlots} slots)`);
      const stats = store.stats();
      assert.equal(stats.passes, BATCHES.length - 1, "a pass ends when layer 0 comes round again");
      if (fraction !== Infinity) {
        assert.equal(stats.lastPass!.reads, store.readsPerPass);
        assert.equal(stats.lastPass!.bytesRead, store.bytesReadPerPass);
        assert.ok(stats.exposedIoMs >= 0 && stats.hiddenIoMs >= 0 && stats.exposedIoMs + stats.hiddenIoMs > 0);
      }
    }
  }
});

test("static importance pins the most important groups, a ranking orders the reads, and results stay identical", async () => {
  for (const c of cases) {
    const expected = await reference(c);
    const source = modelStreamSource(c.model.file, c.model.config, c.layout, c.groups);
    const random = new SeededRandom(3);
    const scores = source.parts.map((p) => Float64Array.from({ length: p.kind === "attention" ? c.layout.nAttentionGroups : c.layout.nFfnGroups }, () => random.nextFloat()));
    const partOf = (layer: number, kind: GroupKind): number => source.parts.findIndex((p) => p.layerIndex === layer && p.kind === kind);
    const ranked: string[] = [];
    const { partials, store } = await streamed(c, source, {
      budgetBytes: 0.6 * shareBytes(source),
      scratchBytes: 4096,
      importance: (layer, kind) => scores[partOf(layer, kind)],
      rank: (layer, kind) => {
        ranked.push(`${layer}/${kind}`);
        const part = source.parts[partOf(layer, kind)]!;
        return [...part.globalGroups].sort((a, b) => scores[partOf(layer, kind)]![b]! - scores[partOf(layer, kind)]![a]!);
      },
    });
    assertIdentical(partials, expected, c.label);
    assert.ok(ranked.length > 0, "the ranking is asked as reads start");
    store.residency.parts.forEach((plan, p) => {
      const part = source.parts[p]!;
      const score = (g: number): number => scores[p]![part.globalGroups[g]!]!;
      const resident = plan.residentGroups.flatMap((r, g) => (r ? [score(g)] : []));
      const evicted = plan.residentGroups.flatMap((r, g) => (r ? [] : [score(g)]));
      if (resident.length > 0 && evicted.length > 0) assert.ok(Math.min(...resident) >= Math.max(...evicted), `${c.label} part ${p}: evicted by importance`);
    });
  }
});

test("a budget below the minimum names it; the minimum itself runs (one slot: reads cannot overlap) and stays identical", async () => {
  const c = cases[0]!;
  const source = modelStreamSource(c.model.file, c.model.config, c.layout, c.groups);
  const error = await GroupStore.open(source, { budgetBytes: 0.05 * shareBytes(source), scratchBytes: 4096 }).then(() => undefined, (e: unknown) => e);
  assert.ok(error instanceof MemoryBudgetError, String(error));
  assert.equal(error.code, "HALO_ERR_MEMORY_BUDGET");
  assert.ok(error.minimumBytes > error.budgetBytes && error.message.includes(`${error.minimumBytes} bytes`), error.message);
  const { partials, store } = await streamed(c, source, { budgetBytes: error.minimumBytes, scratchBytes: 4096 });
  assertIdentical(partials, await reference(c), "at the minimum");
  assert.equal(store.residency.nSlots, 1);
});

test("skipped steps restart the prefetch cycle where the worker is, and the results match a worker skipping the same steps", async () => {
  const c = cases[0]!;
  const keep = (step: number): boolean => step % 7 !== 3 && !(step >= 20 && step < 26);
  const source = modelStreamSource(c.model.file, c.model.config, c.layout, c.groups);
  const { partials } = await streamed(c, source, { budgetBytes: 0.3 * shareBytes(source), scratchBytes: 4096 }, keep);
  assertIdentical(partials, await reference(c, keep), "skipping");
});

test("from a shard the same rows read in fewer reads, with identical results", async () => {
  const c = cases[0]!;
  const shardPath = join(dir.path, "device.shard.gguf");
  writeShardFromModel(shardPath, c.model.file, c.model.config, c.layout, c.groups, "ab".repeat(32));
  const shardFile = await openGguf(shardPath);
  try {
    const shardSource = shardStreamSource(shardFile, checkShard(shardPath, shardFile));
    const modelSource = modelStreamSource(c.model.file, c.model.config, c.layout, c.groups);
    const budgetBytes = 0.3 * shareBytes(modelSource);
    const fromShard = await streamed(c, shardSource, { budgetBytes, scratchBytes: 4096 });
    const fromModel = await streamed(c, modelSource, { budgetBytes, scratchBytes: 4096 });
    assertIdentical(fromShard.partials, await reference(c), "shard");
    assert.ok(fromShard.store.readsPerPass < fromModel.store.readsPerPass, `${fromShard.store.readsPerPass} vs ${fromModel.store.readsPerPass} reads`);
    assert.ok(fromShard.store.bytesReadPerPass < fromModel.store.bytesReadPerPass);
  } finally {
    shardFile.close();
  }
});

async function failsWhenChanged(change: (path: string, store: GroupStore) => void): Promise<unknown> {
  const c = cases[0]!;
  const path = join(dir.path, `changed-${Math.random().toString(36).slice(2)}.gguf`);
  copyFileSync(c.path, path);
  const file = await openGguf(path);
  const model = { file, config: readModelConfig(file.metadata) };
  try {
    const source = modelStreamSource(model.file, model.config, c.layout, c.groups);
    const store = await GroupStore.open(source, { budgetBytes: 0.3 * shareBytes(source), scratchBytes: 4096 });
    const worker = GroupWorker.fromSlice(store.slice, rowSplitKernels(testKernels()), CONTEXT, MAX_BATCH);
    const input = new Float32Array(model.config.dim).fill(0.5);
    try {
      change(path, store);
      for (let pass = 0; pass < 3; pass++) {
        for (let layer = 0; layer < model.config.nLayers; layer++) {
          for (const phase of PHASES) {
            await store.acquire(layer, phase);
            worker.compute(phase, layer, pass, 1, input);
            store.release(layer, phase);
          }
        }
      }
      return undefined;
    } catch (error) {
      return error;
    } finally {
      await store.close();
    }
  } finally {
    model.file.close();
  }
}

test("a file truncated or rewritten under the store is a FileChangedError before any compute uses its bytes", async () => {
  const truncated = await failsWhenChanged((path) => truncateSync(path, 4096));
  assert.ok(truncated instanceof FileChangedError, String(truncated));
  const rewritten = await failsWhenChanged((path) => {
    const fd = openSync(path, "r+");
    writeSync(fd, new Uint8Array(64).fill(0x55), 0, 64, 1 << 16);
    closeSync(fd);
  });
  assert.ok(rewritten instanceof FileChangedError, String(rewritten));
  assert.equal((rewritten as FileChangedError).code, "HALO_ERR_FILE_CHANGED");
});

test("a file shorter than its header said when opened is refused at open", async () => {
  const c = cases[0]!;
  const path = join(dir.path, "short.gguf");
  copyFileSync(c.path, path);
  const file = await openGguf(path);
  const model = { file, config: readModelConfig(file.metadata) };
  try {
    const source = modelStreamSource(model.file, model.config, c.layout, c.groups);
    truncateSync(path, source.fileSize - 1);
    await assert.rejects(GroupStore.open(source, { budgetBytes: 0.3 * shareBytes(source) }), (e: unknown) => e instanceof FileChangedError && /header was read with/.test(e.message));
  } finally {
    model.file.close();
  }
});
