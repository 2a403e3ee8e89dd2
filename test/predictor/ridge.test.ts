/**
 * The predictor's fit on synthetic data with a planted structure: log-importances that are a
 * low-rank linear function of the input plus noise. Ridge regression must recover the ranking
 * (recall@k ≥ 0.9 on held-out samples) and the map itself.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { SeededRandom } from "../../src/base/index.js";
import { RidgeAccumulator, applyLinearMap, recallAtK, spearman, symmetricEigen, topK } from "../../src/predictor/index.js";

function planted(seed: number, d: number, g: number, rank: number) {
  const random = new SeededRandom(seed);
  const a = Float64Array.from({ length: d * rank }, () => random.nextGaussian() / Math.sqrt(d));
  const b = Float64Array.from({ length: rank * g }, () => random.nextGaussian());
  const bias = Float64Array.from({ length: g }, () => random.nextGaussian());
  const sample = (x: Float64Array, y: Float64Array, noise: number): void => {
    for (let i = 0; i < d; i++) x[i] = random.nextGaussian();
    for (let k = 0; k < g; k++) {
      let s = bias[k]!;
      for (let r = 0; r < rank; r++) {
        let u = 0;
        for (let i = 0; i < d; i++) u += x[i]! * a[i * rank + r]!;
        s += u * b[r * g + k]!;
      }
      y[k] = s + noise * random.nextGaussian();
    }
  };
  return { sample };
}

/** A ridge fit on 3000 noisy samples of a planted structure, and its sampler for held-out data. */
function fitPlanted(seed: number, d: number, g: number, rank: number) {
  const { sample } = planted(seed, d, g, rank);
  const fit = new RidgeAccumulator(d, g);
  const x = new Float64Array(d);
  const y = new Float64Array(g);
  for (let n = 0; n < 3000; n++) {
    sample(x, y, 0.1);
    fit.add(x, 0, y, 0);
  }
  return { fit, sample, x, y };
}

test("ridge regression recovers a planted low-rank importance structure: recall@3 ≥ 0.9, Spearman ≥ 0.9 on held-out samples", () => {
  const d = 32;
  const g = 12;
  const { fit, sample, x, y } = fitPlanted(11, d, g, 3);
  const map = fit.solve(1e-3);
  const predicted = new Float64Array(g);
  let recall = 0;
  let rho = 0;
  const nTest = 500;
  for (let n = 0; n < nTest; n++) {
    sample(x, y, 0.1);
    applyLinearMap(map, x, 0, predicted);
    recall += recallAtK(predicted, 0, y, 0, g, 3);
    rho += spearman(predicted, 0, y, 0, g);
  }
  assert.ok(recall / nTest >= 0.9, `recall@3 ${recall / nTest}`);
  assert.ok(rho / nTest >= 0.9, `Spearman ${rho / nTest}`);
});

test("an exact linear relation is solved exactly (up to the tiny penalty), intercept included", () => {
  const fit = new RidgeAccumulator(2, 2);
  const random = new SeededRandom(3);
  for (let n = 0; n < 200; n++) {
    const x = [random.nextGaussian(), random.nextGaussian()];
    fit.add(x, 0, [1 + 2 * x[0]! - 3 * x[1]!, -4 + 0.5 * x[1]!], 0);
  }
  const map = fit.solve(1e-9);
  const close = (a: number, b: number) => Math.abs(a - b) < 1e-5;
  assert.ok(close(map.weights[0]!, 2) && close(map.weights[1]!, 0) && close(map.weights[2]!, -3) && close(map.weights[3]!, 0.5), String(map.weights));
  assert.ok(close(map.bias[0]!, 1) && close(map.bias[1]!, -4), String(map.bias));
});

test("metrics: top-k, recall@k and Spearman on hand-made cases; bad fits are refused", () => {
  assert.deepEqual(topK([0.1, 5, 3, 5], 0, 4, 3), [1, 3, 2]);
  assert.equal(recallAtK([1, 2, 3, 4], 0, [4, 3, 2, 1], 0, 4, 2), 0);
  assert.equal(recallAtK([9, 1, 8, 0], 0, [5, 0, 6, 1], 0, 4, 2), 1);
  assert.equal(spearman([1, 2, 3, 4], 0, [10, 20, 30, 40], 0, 4), 1);
  assert.equal(spearman([1, 2, 3, 4], 0, [4, 3, 2, 1], 0, 4), -1);
  assert.throws(() => new RidgeAccumulator(0, 3), /ridge sizes must be positive integers, got 0 × 3/);
  const one = new RidgeAccumulator(2, 1);
  one.add([1, 2], 0, [3], 0);
  assert.throws(() => one.solve(1), /at least 2 samples, got 1/);
  one.add([2, 1], 0, [1], 0);
  assert.throws(() => one.solve(0), /ridge penalty must be a positive number, got 0/);
  const bad = new RidgeAccumulator(1, 1);
  bad.add([NaN], 0, [1], 0);
  bad.add([1], 0, [1], 0);
  assert.throws(() => bad.solve(1), /not positive definite/);
});

test("reduced rank: a planted rank-3 structure is kept at rank 3 (recall@3 ≥ 0.9), the factors multiply to the map, and applying them agrees", () => {
  const d = 32;
  const g = 12;
  const { fit, sample, x, y } = fitPlanted(5, d, g, 3);
  const full = fit.solve(1e-3);
  const low = fit.solve(1e-3, 3);
  assert.equal(low.factors?.rank, 3);
  assert.equal(low.factors!.down.length, d * 3);
  assert.equal(low.factors!.up.length, 3 * g);
  assert.equal(fit.solve(1e-3, g).factors, undefined, "a rank at the full size is the full map");
  // The rows of `up` are orthonormal directions of the output space.
  for (let r = 0; r < 3; r++) {
    for (let q = 0; q < 3; q++) {
      let dot = 0;
      for (let k = 0; k < g; k++) dot += low.factors!.up[r * g + k]! * low.factors!.up[q * g + k]!;
      assert.ok(Math.abs(dot - (r === q ? 1 : 0)) < 1e-9, `up rows ${r}·${q} = ${dot}`);
    }
  }
  const viaFactors = new Float64Array(g);
  const viaWeights = new Float64Array(g);
  const viaFull = new Float64Array(g);
  let recall = 0;
  let maxGap = 0;
  for (let n = 0; n < 300; n++) {
    sample(x, y, 0.1);
    applyLinearMap(low, x, 0, viaFactors);
    applyLinearMap({ ...low, factors: undefined }, x, 0, viaWeights);
    applyLinearMap(full, x, 0, viaFull);
    for (let k = 0; k < g; k++) {
      assert.ok(Math.abs(viaFactors[k]! - viaWeights[k]!) < 1e-9);
      maxGap = Math.max(maxGap, Math.abs(viaFactors[k]! - viaFull[k]!));
    }
    recall += recallAtK(viaFactors, 0, y, 0, g, 3);
  }
  assert.ok(recall / 300 >= 0.9, `recall@3 ${recall / 300}`);
  // A rank-3 truth loses little at rank 3; rank 1 must lose more.
  assert.ok(maxGap < 0.5, `rank-3 map strays ${maxGap} from the full one`);
  const one = fit.solve(1e-3, 1);
  let gapOne = 0;
  for (let n = 0; n < 100; n++) {
    sample(x, y, 0);
    applyLinearMap(one, x, 0, viaFactors);
    applyLinearMap(full, x, 0, viaFull);
    for (let k = 0; k < g; k++) gapOne = Math.max(gapOne, Math.abs(viaFactors[k]! - viaFull[k]!));
  }
  assert.ok(gapOne > 1, `rank 1 cannot hold a rank-3 map, yet strays only ${gapOne}`);
  assert.throws(() => fit.solve(1e-3, 0), /predictor rank must be a positive integer, got 0/);
  assert.throws(() => fit.solve(1e-3, 2.5), /predictor rank must be a positive integer, got 2.5/);
});

test("symmetricEigen: a known 3 × 3 spectrum, eigenvectors satisfying A·v = λ·v", () => {
  // [[2,1,0],[1,2,0],[0,0,5]] has eigenvalues 1, 3 and 5.
  const a = Float64Array.from([2, 1, 0, 1, 2, 0, 0, 0, 5]);
  const { values, vectors } = symmetricEigen(a, 3);
  assert.deepEqual([...values].map((v) => Math.round(v * 1e9) / 1e9).sort(), [1, 3, 5]);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < 3; i++) {
      let av = 0;
      for (let k = 0; k < 3; k++) av += a[i * 3 + k]! * vectors[k * 3 + c]!;
      assert.ok(Math.abs(av - values[c]! * vectors[i * 3 + c]!) < 1e-12);
    }
  }
});
