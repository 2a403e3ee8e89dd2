/**
 * Device slices: for random placements, the devices' slice workers add up to the whole layer
 * (and each equals the full-weights worker of its device), through several positions of KV
 * cache; the reads touch exactly the device's bytes, and together the devices' reads tile the
 * layer tensors; a quantized column cut off its blocks fails before anything is read.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import fc from "fast-check";
import { SliceAlignmentError } from "../../src/base/index.js";
import { GroupWorker } from "../../src/cluster/index.js";
import { SLICE_ROLES, layerSlicePlans, readDeviceSlice, type TensorByteReader } from "../../src/loader/index.js";
import type { GgufTensorInfo } from "../../src/model/index.js";
import { createGroupLayout, proportionalPlacement } from "../../src/partition/index.js";
import { testKernels } from "../helpers/golden.js";
import { assertClose, deviceGroups, openTestModels, placementArbitrary, runLockstep, sum, tempDir, type TestModel } from "./sliceHelpers.js";

const dir = tempDir("halo-slice-");
let models: TestModel[] = [];
before(async () => {
  models = await openTestModels(dir.path);
});
after(() => {
  for (const { model } of models) model.file.close();
  dir.cleanup();
});

const CONTEXT = 16;
const MAX_BATCH = 4;

test("for random placements the slice workers' partials add up to the whole layer, and each equals its full-weights worker", () => {
  const kernels = testKernels();
  for (const [m, { label, model, ffnBlockSizes }] of models.entries()) {
    const { config, weights, file } = model;
    const setup = fc.constantFrom(...ffnBlockSizes).chain((blockSize) => {
      const layout = createGroupLayout(config, blockSize);
      return placementArbitrary(layout, config.nLayers, 5).map((placement) => ({ layout, placement }));
    });
    fc.assert(
      fc.property(setup, fc.integer({ min: 1, max: 1 << 30 }), ({ layout, placement }, seed) => {
        const whole = new GroupWorker(config, weights, kernels, layout, CONTEXT, MAX_BATCH);
        whole.setPlacement(proportionalPlacement(layout, config.nLayers, [1]), 0);
        const sliced: GroupWorker[] = [];
        const full: GroupWorker[] = [];
        for (let d = 0; d < placement.nDevices; d++) {
          const slice = readDeviceSlice(file, config, layout, deviceGroups(placement, d));
          sliced.push(GroupWorker.fromSlice(slice, kernels, CONTEXT, MAX_BATCH));
          const f = new GroupWorker(config, weights, kernels, layout, CONTEXT, MAX_BATCH);
          f.setPlacement(placement, d);
          full.push(f);
          for (let l = 0; l < config.nLayers; l++) {
            for (const phase of ["attention", "ffn"] as const) assert.deepEqual(sliced[d]!.groupsOf(l, phase), f.groupsOf(l, phase), "callers see global groups");
          }
        }
        const n = placement.nDevices;
        runLockstep([whole, ...sliced, ...full], config.dim, config.nLayers, seed, (where, partials) => {
          const length = partials[0]!.length;
          assertClose(sum(partials.slice(1, 1 + n), length), partials[0]!, 1e-5, `${label} ${where}: Σ slices vs all groups`);
          for (let d = 0; d < n; d++) assertClose(partials[1 + d]!, partials[1 + n + d]!, 1e-5, `${label} ${where}: device ${d} slice vs full weights`);
        });
      }),
      { seed: 0x51ce + m, numRuns: 12 },
    );
  }
});

test("a slice reads exactly its bytes, and the devices' reads together tile every layer tensor once", () => {
  for (const { label, model } of models) {
    const { config, file } = model;
    const layout = createGroupLayout(config, model.config.hiddenDim % 32 === 0 ? 32 : 16);
    for (const shares of [[1, 1], [1, 1, 1, 1, 1, 1, 1, 1], [3, 1, 2]]) {
      const placement = proportionalPlacement(layout, config.nLayers, shares);
      const reads = new Map<string, Array<[number, number]>>();
      let totalRead = 0;
      shares.forEach((_, d) => {
        let deviceRead = 0;
        const read: TensorByteReader = (tensor: GgufTensorInfo, start: number, length: number) => {
          reads.set(tensor.name, [...(reads.get(tensor.name) ?? []), [start, start + length]]);
          deviceRead += length;
          return file.readTensorBytes(tensor, start, length);
        };
        const slice = readDeviceSlice(file, config, layout, deviceGroups(placement, d), { read, maxReadBytes: 4096 });
        assert.equal(deviceRead, slice.sizeBytes, `${label}: device ${d} read its slice's bytes and nothing more`);
        totalRead += deviceRead;
      });
      const layerTensors = file.tensors.filter((t) => /^blk\.\d+\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight$/.test(t.name));
      assert.equal(layerTensors.length, 7 * config.nLayers);
      assert.equal(totalRead, layerTensors.reduce((n, t) => n + t.byteLength, 0), `${label}: the devices read the layer tensors once in all`);
      for (const tensor of layerTensors) {
        const spans = (reads.get(tensor.name) ?? []).sort((a, b) => a[0] - b[0]);
        let covered = 0;
        for (const [start, end] of spans) {
          assert.equal(start, covered, `${label} ${tensor.name}: reads neither overlap nor leave gaps`);
          covered = end;
        }
        assert.equal(covered, tensor.byteLength);
      }
      assert.ok(![...reads.keys()].some((name) => /token_embd|^output|norm/.test(name)), "no embeddings, classifier or norms");
    }
  }
});

test("slice sizes are each device's share of the layer tensors", () => {
  const { model } = models.find((m) => m.label === "tiny q4_0")!;
  const { config, file } = model;
  const layout = createGroupLayout(config, 32);
  const layerBytes = file.tensors.filter((t) => t.name.startsWith("blk.") && !t.name.includes("norm")).reduce((n, t) => n + t.byteLength, 0);
  for (const nDevices of [2, 4]) {
    const placement = proportionalPlacement(layout, config.nLayers, Array.from({ length: nDevices }, () => 1));
    for (let d = 0; d < nDevices; d++) {
      const slice = readDeviceSlice(file, config, layout, deviceGroups(placement, d));
      // nKvHeads = 4 and 24 FFN blocks split evenly over 2 and 4 devices.
      assert.equal(slice.sizeBytes, layerBytes / nDevices);
      for (const layer of slice.layers) {
        assert.equal(layer.wq.nRows, (config.nHeads / nDevices) * config.headDim);
        assert.equal(layer.wo.nCols, (config.nHeads / nDevices) * config.headDim);
        assert.equal(layer.ffnDown.nCols, config.hiddenDim / nDevices);
        assert.equal(layer.ffnDown.nRows, config.dim);
      }
    }
  }
});

test("a device with no groups of a kind gets empty tensors and returns zeros for that phase", () => {
  const { model } = models[0]!;
  const { config, file } = model;
  const layout = createGroupLayout(config, 16);
  const groups = Array.from({ length: config.nLayers }, (_, l) => ({ attention: l === 0 ? [] : [{ start: 1, end: 2 }], ffn: l === 1 ? [] : [{ start: 0, end: 3 }] }));
  const slice = readDeviceSlice(file, config, layout, groups);
  assert.equal(slice.layers[0]!.wq.nRows, 0);
  assert.equal(slice.layers[1]!.ffnDown.nCols, 0);
  const worker = GroupWorker.fromSlice(slice, testKernels(), CONTEXT, MAX_BATCH);
  const input = Float32Array.from({ length: config.dim }, (_, i) => Math.sin(i));
  assert.ok(worker.compute("attention", 0, 0, 1, input).every((v) => v === 0));
  assert.ok(worker.compute("ffn", 1, 0, 1, input).every((v) => v === 0));
  assert.ok(worker.compute("ffn", 0, 0, 1, input).some((v) => v !== 0));
});

test("a quantized column cut off its 32-element blocks is a SliceAlignmentError before any read", () => {
  for (const label of ["tiny q8_0", "tiny q4_0"]) {
    const { model } = models.find((m) => m.label === label)!;
    const { config, file } = model;
    const layout = createGroupLayout(config, 16);
    let bytesRead = 0;
    const read: TensorByteReader = (tensor, start, length) => {
      bytesRead += length;
      return file.readTensorBytes(tensor, start, length);
    };
    const groups = Array.from({ length: config.nLayers }, () => ({ attention: [{ start: 0, end: 1 }], ffn: [{ start: 3, end: 4 }] }));
    assert.throws(
      () => readDeviceSlice(file, config, layout, groups, { read }),
      (error: unknown) => {
        assert.ok(error instanceof SliceAlignmentError, String(error));
        assert.equal(error.code, "HALO_ERR_SLICE_ALIGNMENT");
        assert.equal(error.tensorName, "blk.0.ffn_down.weight");
        assert.deepEqual([error.columnStart, error.columnEnd, error.blockSize], [48, 64, 32]);
        assert.match(error.message, /multiple of 32/);
        return true;
      },
    );
    assert.equal(bytesRead, 0);
  }
  // The same cut is fine for F32.
  const stories = models[0]!.model;
  const layout = createGroupLayout(stories.config, 16);
  const plans = layerSlicePlans(stories.config, layout, 0, { attention: [], ffn: [{ start: 3, end: 4 }] });
  assert.deepEqual(plans.map((p) => p.role), SLICE_ROLES);
  assert.deepEqual(plans.find((p) => p.role === "ffnDown")!.ranges, [{ start: 48, end: 64 }]);
});

test("a slice worker refuses a placement that gives its device other groups", () => {
  const { model } = models[0]!;
  const layout = createGroupLayout(model.config, 16);
  const placement = proportionalPlacement(layout, model.config.nLayers, [1, 1]);
  const worker = GroupWorker.fromSlice(readDeviceSlice(model.file, model.config, layout, deviceGroups(placement, 1)), testKernels(), CONTEXT, MAX_BATCH);
  worker.setPlacement(placement, 1);
  assert.throws(() => worker.setPlacement(placement, 0), { code: "HALO_ERR_USAGE" });
  assert.deepEqual(worker.groupsOf(0, "attention"), [{ start: 2, end: 4 }]);
});
