/**
 * The predictor at run time: the F32 kernel path gives the fit's float64 predictions (full and
 * reduced-rank maps, reference and native kernels), and compute skipping keeps exactly the groups
 * whose predicted share reaches the threshold.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { SeededRandom } from "../../src/base/index.js";
import { createKernels, createReferenceKernels } from "../../src/kernels/index.js";
import { createGroupLayout } from "../../src/partition/index.js";
import { GroupSkipper, ImportancePredictor, RidgeAccumulator, predictImportance, type GroupPredictor, type LinearMap } from "../../src/predictor/index.js";

const DIM = 48;

function fittedMap(seed: number, nGroups: number, rank?: number): LinearMap {
  const random = new SeededRandom(seed);
  const fit = new RidgeAccumulator(DIM, nGroups);
  const x = new Float64Array(DIM);
  const y = new Float64Array(nGroups);
  for (let n = 0; n < 400; n++) {
    for (let i = 0; i < DIM; i++) x[i] = random.nextGaussian();
    for (let g = 0; g < nGroups; g++) y[g] = x[g % DIM]! - 0.5 * x[(3 * g + 1) % DIM]! + 0.1 * random.nextGaussian();
    fit.add(x, 0, y, 0);
  }
  return fit.solve(1e-3, rank);
}

function predictorOf(maps: { attention: LinearMap[]; ffn: LinearMap[] }): GroupPredictor {
  return { modelSha256: "00".repeat(32), nLayers: maps.attention.length, inputDim: DIM, ffnBlockSize: 32, maps };
}

for (const [name, kernels] of [["reference", createReferenceKernels()], ["auto", createKernels({ nThreads: 2 })]] as const) {
  test(`the F32 kernel predictor matches the float64 fit (${name} kernels), full and reduced rank`, () => {
    const predictor = predictorOf({ attention: [fittedMap(1, 4), fittedMap(2, 4)], ffn: [fittedMap(3, 40, 6), fittedMap(4, 40)] });
    const runtime = new ImportancePredictor(predictor, kernels);
    const random = new SeededRandom(8);
    const input = Float32Array.from({ length: 3 * DIM }, () => random.nextGaussian());
    const expected = new Float64Array(40);
    const got = new Float64Array(40);
    for (const [layer, phase, nGroups] of [[0, "attention", 4], [1, "attention", 4], [0, "ffn", 40], [1, "ffn", 40]] as const) {
      for (let t = 0; t < 3; t++) {
        predictImportance(predictor, layer, phase, input, t * DIM, expected);
        runtime.predict(layer, phase, input, t * DIM, got);
        for (let g = 0; g < nGroups; g++) assert.ok(Math.abs(got[g]! - expected[g]!) < 1e-4 * (1 + Math.abs(expected[g]!)), `${phase} ${layer} token ${t} group ${g}: ${got[g]} vs ${expected[g]}`);
      }
    }
    runtime.staticImportance(0, "ffn", got);
    assert.deepEqual([...got], [...predictor.maps.ffn[0]!.mean]);
  });
}

/** A predictor whose scores ignore the input: the log of fixed shares. */
function constantPredictor(attentionShares: number[], ffnShares: number[]): GroupPredictor {
  const map = (shares: number[]): LinearMap => ({ nInputs: DIM, nOutputs: shares.length, weights: new Float64Array(DIM * shares.length), bias: Float64Array.from(shares, Math.log), mean: Float64Array.from(shares, Math.log) });
  return predictorOf({ attention: [map(attentionShares)], ffn: [map(ffnShares)] });
}

test("compute skipping keeps the groups at or above the threshold share, among this device's candidates, and counts the rest", () => {
  const layout = createGroupLayout({ nHeads: 8, nKvHeads: 4, headDim: 8, hiddenDim: 96 });
  const predictor = new ImportancePredictor(constantPredictor([0.4, 0.05, 0.5, 0.05], [0.5, 0.49, 0.01]), createReferenceKernels());
  const skipper = new GroupSkipper(predictor, layout, 0.1, () => 0);
  const input = new Float32Array(2 * DIM);
  assert.deepEqual(skipper.select(0, "attention", input, 2, [{ start: 0, end: 4 }]), [{ start: 0, end: 1 }, { start: 2, end: 3 }]);
  // Only the candidates count: a device holding groups 1..3 computes group 2 alone.
  assert.deepEqual(skipper.select(0, "attention", input, 1, [{ start: 1, end: 4 }]), [{ start: 2, end: 3 }]);
  assert.deepEqual(skipper.select(0, "ffn", input, 1, [{ start: 0, end: 3 }]), [{ start: 0, end: 2 }]);
  assert.deepEqual(skipper.totals, { considered: 10, skipped: 5, predictMs: 0 });
  assert.deepEqual(new GroupSkipper(predictor, layout, 0).select(0, "attention", input, 1, [{ start: 0, end: 4 }]), [{ start: 0, end: 4 }]);
  assert.throws(() => new GroupSkipper(predictor, layout, 1), /--skip-below takes a share between 0 and 1, got 1/);
  assert.throws(() => new GroupSkipper(predictor, createGroupLayout({ nHeads: 8, nKvHeads: 4, headDim: 8, hiddenDim: 96 }, 16), 0.1), /the predictor was fitted for FFN blocks of 32, the run uses 16/);
});
