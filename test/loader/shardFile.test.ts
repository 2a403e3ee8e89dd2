/**
 * Shard files: byte-exact round trips (in memory → file → mapped → file), the same bytes
 * whether cut from memory or streamed from the model, workers from a loaded shard computing
 * exactly what the slice computes, the coordinator's shard index, and every crafted or
 * truncated shard refused with a ShardInvalidError.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import fc from "fast-check";
import { HaloError, ShardInvalidError } from "../../src/base/index.js";
import { GroupWorker } from "../../src/cluster/index.js";
import { loadNativeAddon, mmapFile } from "../../src/kernels/index.js";
import {
  SHARD_KEYS, loadShard, prepareShard, readDeviceSlice, readDeviceSliceAsync, sha256OfFile, writeShard, writeShardFromModel, writeShardFromModelAsync,
  type DeviceSlice, type LoadShardOptions,
} from "../../src/loader/index.js";
import { GgufValueType, openGguf, writeGguf, type GgufWriteSpec, type GgufWriteValue } from "../../src/model/index.js";
import { createGroupLayout, proportionalPlacement, type Placement } from "../../src/partition/index.js";
import { testKernels } from "../helpers/golden.js";
import { deviceGroups, openTestModels, placementArbitrary, runLockstep, tempDir, type TestModel } from "./sliceHelpers.js";

const SOURCE_SHA = "5e".repeat(32);
const map = loadNativeAddon() === undefined ? undefined : mmapFile;
const dir = tempDir("halo-shard-");
let models: TestModel[] = [];
before(async () => {
  models = await openTestModels(dir.path);
});
after(() => {
  for (const { model } of models) model.file.close();
  dir.cleanup();
});

function assertSameSlice(actual: DeviceSlice, expected: DeviceSlice): void {
  assert.deepEqual(actual.groups, expected.groups);
  assert.deepEqual(actual.localLayouts, expected.localLayouts);
  assert.equal(actual.sizeBytes, expected.sizeBytes);
  actual.layers.forEach((layer, l) => {
    for (const [role, matrix] of Object.entries(layer)) {
      const other = expected.layers[l]![role as keyof typeof layer];
      assert.deepEqual([matrix.type, matrix.nRows, matrix.nCols], [other.type, other.nRows, other.nCols], `layer ${l} ${role}`);
      assert.ok(Buffer.from(matrix.data).equals(Buffer.from(other.data)), `layer ${l} ${role} bytes`);
    }
  });
}

test("a shard round-trips byte for byte, streamed or from memory, and computes exactly what its slice does", async () => {
  const kernels = testKernels();
  for (const [m, { label, model, ffnBlockSizes }] of models.entries()) {
    const { config, file } = model;
    const layout = createGroupLayout(config, ffnBlockSizes[0]!);
    const [placement] = fc.sample(placementArbitrary(layout, config.nLayers, 3).filter((p) => p.nDevices === 3), { seed: 7 + m, numRuns: 1 }) as [Placement];
    for (let d = 0; d < placement.nDevices; d++) {
      const groups = deviceGroups(placement, d);
      const slice = readDeviceSlice(file, config, layout, groups);
      const fromMemory = join(dir.path, `${m}-${d}-memory.gguf`);
      const streamed = join(dir.path, `${m}-${d}-streamed.gguf`);
      const again = join(dir.path, `${m}-${d}-again.gguf`);
      const yielding = join(dir.path, `${m}-${d}-yielding.gguf`);
      const size = writeShard(fromMemory, slice, SOURCE_SHA);
      assert.equal(writeShardFromModel(streamed, file, config, layout, groups, SOURCE_SHA), size);
      assert.equal(await writeShardFromModelAsync(yielding, file, config, layout, groups, SOURCE_SHA), size);
      assert.ok(readFileSync(fromMemory).equals(readFileSync(streamed)), `${label}: the same bytes either way`);
      assert.ok(readFileSync(fromMemory).equals(readFileSync(yielding)), `${label}: the same bytes from the yielding writer`);
      assertSameSlice(await readDeviceSliceAsync(file, config, layout, groups), slice);
      assert.ok(size < file.fileSize, `${label}: ${size} bytes of a ${file.fileSize}-byte model`);
      const loaded = await loadShard(fromMemory, { map, expect: { sourceSha256: SOURCE_SHA, groups, ffnBlockSize: layout.ffnBlockSize, config } });
      assert.equal(loaded.identity.sourceSha256, SOURCE_SHA);
      assert.deepEqual(loaded.slice.config, config);
      assertSameSlice(loaded.slice, slice);
      writeShard(again, loaded.slice, loaded.identity.sourceSha256);
      assert.ok(readFileSync(again).equals(readFileSync(fromMemory)), `${label}: loaded and rewritten, the same bytes`);
      const workers = [GroupWorker.fromSlice(slice, kernels, 8, 4), GroupWorker.fromSlice(loaded.slice, kernels, 8, 4)];
      runLockstep(workers, config.dim, config.nLayers, 3, (where, [a, b]) => assert.deepEqual(b, a, `${label} ${where}`));
    }
  }
});

test("prepareShard cuts once into the cache, then finds it through its index", async () => {
  const { model } = models.find((m) => m.label === "tiny q8_0")!;
  const { config, file } = model;
  const layout = createGroupLayout(config, 32);
  const groups = deviceGroups(proportionalPlacement(layout, config.nLayers, [1, 2]), 1);
  const cacheDir = join(dir.path, "coordinator-cache");
  const first = await prepareShard({ file, config, layout, groups, sourceSha256: SOURCE_SHA, cacheDir });
  assert.equal(first.reused, false);
  assert.equal(first.path, join(cacheDir, `${first.sha256}.gguf`));
  assert.equal(await sha256OfFile(first.path), first.sha256);
  assert.equal(readFileSync(first.path).length, first.sizeBytes);
  const second = await prepareShard({ file, config, layout, groups, sourceSha256: SOURCE_SHA, cacheDir });
  assert.deepEqual(second, { ...first, reused: true });
  const other = await prepareShard({ file, config, layout, groups: deviceGroups(proportionalPlacement(layout, config.nLayers, [1, 2]), 0), sourceSha256: SOURCE_SHA, cacheDir });
  assert.notEqual(other.sha256, first.sha256);
});

/** The spec of an existing GGUF file, to change one thing and write it again. */
async function specOf(path: string): Promise<{ metadata: Array<[string, GgufWriteValue]>; tensors: GgufWriteSpec["tensors"][number][] }> {
  const file = await openGguf(path);
  const metadata = file.metadata.keys().map((key): [string, GgufWriteValue] => {
    const type = file.metadata.typeOf(key)!;
    const value = file.metadata.raw(key)!;
    return [key, (type.type === GgufValueType.ARRAY ? { type: type.type, elementType: type.elementType!, value } : { type: type.type, value }) as GgufWriteValue];
  });
  const tensors = file.tensors.map((t) => ({ name: t.name, typeId: t.typeId, shape: [...t.shape], data: file.readTensorBytes(t) }));
  file.close();
  return { metadata, tensors };
}

function setKey(spec: { metadata: Array<[string, GgufWriteValue]> }, key: string, value: GgufWriteValue): void {
  const i = spec.metadata.findIndex(([k]) => k === key);
  spec.metadata[i] = [key, value];
}

const triples = (values: number[]): GgufWriteValue => ({ type: GgufValueType.ARRAY, elementType: GgufValueType.UINT32, value: values });

test("crafted, truncated and mismatched shards are ShardInvalidErrors naming the problem", async () => {
  const { model } = models[0]!;
  const { config, file } = model;
  const layout = createGroupLayout(config, 16);
  // Device 0 of two: attention groups [0, 2), FFN blocks [0, 6) in every layer.
  const groups = deviceGroups(proportionalPlacement(layout, config.nLayers, [1, 1]), 0);
  const good = join(dir.path, "good.gguf");
  writeShard(good, readDeviceSlice(file, config, layout, groups), SOURCE_SHA);
  const bytes = readFileSync(good);
  const rejects = async (path: string, pattern: RegExp, options: LoadShardOptions = {}): Promise<void> => {
    await assert.rejects(loadShard(path, { map, ...options }), (error: unknown) => {
      assert.ok(error instanceof ShardInvalidError, String(error));
      assert.equal(error.code, "HALO_ERR_SHARD_INVALID");
      assert.match(error.message, pattern);
      return true;
    });
  };
  const crafted = async (name: string, edit: (spec: Awaited<ReturnType<typeof specOf>>) => void): Promise<string> => {
    const spec = await specOf(good);
    edit(spec);
    const path = join(dir.path, `${name}.gguf`);
    writeGguf(path, spec);
    return path;
  };
  await loadShard(good, { map });

  for (const length of [0, 7, 100, 600, bytes.length - 1, bytes.length - 1000]) {
    const path = join(dir.path, `truncated-${length}.gguf`);
    writeFileSync(path, bytes.subarray(0, length));
    await rejects(path, /./);
  }
  await rejects(join(dir.path, "absent.gguf"), /cannot open/);
  await rejects(await crafted("version", (s) => setKey(s, SHARD_KEYS.version, { type: GgufValueType.UINT32, value: 2 })), /version is 2, this build reads 1/);
  await rejects(await crafted("sha", (s) => setKey(s, SHARD_KEYS.sourceSha256, { type: GgufValueType.STRING, value: "XYZ" })), /source_sha256 must be 64 lowercase hex/);
  await rejects(await crafted("no-groups", (s) => s.metadata.splice(s.metadata.findIndex(([k]) => k === SHARD_KEYS.ffnGroups), 1)), /ffn_groups is missing/);
  await rejects(await crafted("not-triples", (s) => setKey(s, SHARD_KEYS.ffnGroups, triples([0, 0]))), /not \(layer, start, end\) triples/);
  await rejects(await crafted("past-groups", (s) => setKey(s, SHARD_KEYS.attentionGroups, triples([0, 0, 9]))), /outside \[0, 4\)/);
  await rejects(await crafted("past-layers", (s) => setKey(s, SHARD_KEYS.attentionGroups, triples([5, 0, 2]))), /layer 5 out of order or past the model's 5/);
  await rejects(await crafted("split-range", (s) => setKey(s, SHARD_KEYS.attentionGroups, triples([0, 0, 1, 0, 1, 2]))), /not sorted, disjoint, non-empty and merged/);
  // Claims one FFN block fewer in layer 0 than its tensors hold.
  const ffnClaim = groups.flatMap((g, l) => g.ffn.flatMap((r) => [l, r.start, l === 0 ? r.end - 1 : r.end]));
  await rejects(await crafted("shape", (s) => setKey(s, SHARD_KEYS.ffnGroups, triples(ffnClaim))), /blk\.0\.ffn_gate\.weight' has shape \[64, 96\], its groups need \[64, 80\]/);
  await rejects(await crafted("missing", (s) => s.tensors.splice(s.tensors.findIndex((t) => t.name === "blk.3.attn_v.weight"), 1)), /tensor 'blk\.3\.attn_v\.weight' is missing/);
  await rejects(await crafted("extra", (s) => s.tensors.push({ name: "token_embd.weight", typeId: 0, shape: [64, 2], data: new Uint8Array(512) })), /unexpected tensor 'token_embd\.weight'/);
  await rejects(await crafted("block-size", (s) => setKey(s, SHARD_KEYS.ffnBlockSize, { type: GgufValueType.UINT32, value: 0 })), /ffn_block_size is 0/);

  await rejects(good, /cut from model 5e5e.*, expected abab/, { expect: { sourceSha256: "ab".repeat(32) } });
  await rejects(good, /holds other groups than the plan gives this device/, { expect: { groups: deviceGroups(proportionalPlacement(layout, config.nLayers, [1, 1]), 1) } });
  await rejects(good, /FFN block size 16, expected 32/, { expect: { ffnBlockSize: 32 } });
  await rejects(good, /hyperparameter dim is 64, expected 128/, { expect: { config: { ...config, dim: 128 } } });
});

test("random byte damage to a shard's header never escapes as anything but a coded error", async () => {
  const { model } = models[1]!;
  const { config, file } = model;
  const layout = createGroupLayout(config, 32);
  const good = join(dir.path, "fuzz-source.gguf");
  writeShard(good, readDeviceSlice(file, config, layout, deviceGroups(proportionalPlacement(layout, config.nLayers, [1, 3]), 1)), SOURCE_SHA);
  const bytes = readFileSync(good);
  const damaged = join(dir.path, "fuzz.gguf");
  let nRejected = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(fc.nat({ max: 1500 }), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }), async (edits) => {
      const copy = Buffer.from(bytes);
      for (const [offset, xor] of edits) copy[offset] = copy[offset]! ^ xor;
      writeFileSync(damaged, copy);
      try {
        await loadShard(damaged, { map });
      } catch (error) {
        assert.ok(error instanceof HaloError && error.code === "HALO_ERR_SHARD_INVALID", String(error));
        nRejected++;
      }
    }),
    { seed: 0xbad, numRuns: 300 },
  );
  assert.ok(nRejected > 150, `only ${nRejected} of 300 damaged headers were refused`);
});
