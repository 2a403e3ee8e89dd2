/** The order a memory-limited worker reads its streamed groups in: by the latest input's predicted importance, else by the calibration averages. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { budgetOptions } from "../../src/cluster/budgetedSteps.js";
import { createReferenceKernels } from "../../src/kernels/index.js";
import { ImportancePredictor, type GroupPredictor, type LinearMap } from "../../src/predictor/index.js";

const DIM = 4;
/** score_g = input[g] + log(mean share): the input decides when there is one. */
function identityMap(means: number[]): LinearMap {
  const weights = new Float64Array(DIM * means.length);
  // (nInputs, nOutputs) row-major: input g feeds group g.
  for (let g = 0; g < means.length; g++) weights[g * means.length + g] = 1;
  return { nInputs: DIM, nOutputs: means.length, weights, bias: new Float64Array(means.length), mean: Float64Array.from(means) };
}
const predictor: GroupPredictor = { modelSha256: "00".repeat(32), nLayers: 1, inputDim: DIM, ffnBlockSize: 32, maps: { attention: [identityMap([4, 3, 2, 1])], ffn: [identityMap([1, 2, 3])] } };

test("look-ahead: a part's reads follow the predictor's scores for the latest input; before any input, the calibration averages", () => {
  let latest: Float32Array | undefined;
  const options = budgetOptions(1 << 20, predictor, 32, () => undefined, { predictor: new ImportancePredictor(predictor, createReferenceKernels()), latestInput: () => latest })!;
  assert.deepEqual(options.rank!(0, "attention"), [0, 1, 2, 3]);
  assert.deepEqual(options.rank!(0, "ffn"), [2, 1, 0]);
  latest = Float32Array.from([0, 3, 1, 2]);
  assert.deepEqual(options.rank!(0, "attention"), [1, 3, 2, 0]);
  assert.deepEqual(options.rank!(0, "ffn"), [1, 2, 0]);
  // Ties keep group order.
  latest = new Float32Array(DIM);
  assert.deepEqual(options.rank!(0, "attention"), [0, 1, 2, 3]);
  // Without an input again, the calibration order, unchanged by the predictions in between.
  latest = undefined;
  assert.deepEqual(options.rank!(0, "ffn"), [2, 1, 0]);
  assert.equal(options.rank!(0, "ffn"), options.rank!(0, "ffn"), "sorted once, not per read");
});

test("without a look-ahead the averages rank; without a budget nothing streams; another block size ranks nothing", () => {
  assert.deepEqual(budgetOptions(1 << 20, predictor, 32, () => undefined)!.rank!(0, "ffn"), [2, 1, 0]);
  assert.equal(budgetOptions(undefined, predictor, 32, () => undefined), undefined);
  const logs: string[] = [];
  assert.deepEqual(budgetOptions(1 << 20, predictor, 64, (line) => logs.push(line)), { budgetBytes: 1 << 20 });
  assert.deepEqual(logs, ["the predictor's FFN blocks are 32 neurons, the plan's 64: resident groups are chosen in group order"]);
});
