/**
 * Calibration on real data (stories260K): fit on the first half of the TinyStories excerpt,
 * then on held-out text drop 20% of the groups per token by the predictor's lowest scores, by
 * the true lowest norms (oracle) and at random, and compare the perplexity each loses.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { SeededRandom } from "../../src/base/index.js";
import { calibratePredictor } from "../../src/cli/calibrate.js";
import { Engine, GroupProbe, perplexity, type GroupObservation } from "../../src/engine/index.js";
import { createGroupLayout } from "../../src/partition/index.js";
import { predictImportance, recallAtK, spearman, type GroupPredictor } from "../../src/predictor/index.js";
import { loadStories, testKernels } from "../helpers/golden.js";
import { sharedModelsDir } from "../helpers/paths.js";

type Choose = (o: GroupObservation, keep: Uint8Array) => void;

function dropLowest(fraction: number, score: (o: GroupObservation, t: number, scores: Float64Array) => void): Choose {
  const scores = new Float64Array(512);
  return (o, keep) => {
    const nDrop = Math.round(fraction * o.nGroups);
    for (let t = 0; t < o.nTokens; t++) {
      score(o, t, scores);
      const order = Array.from({ length: o.nGroups }, (_, g) => g).sort((a, b) => scores[a]! - scores[b]!);
      for (const g of order.slice(0, nDrop)) keep[t * o.nGroups + g] = 0;
    }
  };
}

test("a predictor calibrated on one half of a corpus ranks held-out groups far better than chance", async () => {
  const { model } = await loadStories();
  const kernels = testKernels();
  const text = readFileSync(path.join(sharedModelsDir(), "corpora", "tinystories_valid_excerpt.txt"), "utf8");
  const tokens = model.tokenizer.encode(text, { addBos: false });
  const half = Math.floor(tokens.length / 2);
  const predictor: GroupPredictor = await calibratePredictor(model, "00".repeat(32), tokens.slice(0, Math.min(half, 8192)), { kernels, window: 256, lambda: 1e-3 });
  const heldOut = tokens.slice(half, half + 2048);
  const layout = createGroupLayout(model.config);
  let recall = 0;
  let rho = 0;
  let nSamples = 0;
  const measure = async (choose?: Choose) => {
    const probe = new GroupProbe({ config: model.config, weights: model.weights, kernels, layout, contextLength: 128, maxBatch: 64, choose });
    const engine = new Engine(model.config, model.weights, { kernels, contextLength: 128, maxBatch: 64, synchronizer: probe });
    return (await perplexity(engine, heldOut, model.tokenizer.bosId, 128)).perplexity;
  };
  const byPredictor = dropLowest(0.2, (o, t, scores) => {
    predictImportance(predictor, o.layerIndex, o.phase, o.input, t * model.config.dim, scores);
    if (o.phase === "ffn") {
      recall += recallAtK(scores, 0, o.norms, t * o.nGroups, o.nGroups, 2);
      rho += spearman(scores, 0, o.norms, t * o.nGroups, o.nGroups);
      nSamples++;
    }
  });
  const byOracle = dropLowest(0.2, (o, t, scores) => {
    for (let g = 0; g < o.nGroups; g++) scores[g] = o.norms[t * o.nGroups + g]!;
  });
  const random = new SeededRandom(9);
  const byChance = dropLowest(0.2, (o, _t, scores) => {
    for (let g = 0; g < o.nGroups; g++) scores[g] = random.nextFloat();
  });
  const dense = await measure();
  const predicted = await measure(byPredictor);
  const oracle = await measure(byOracle);
  const chance = await measure(byChance);
  const ratio = (chance - dense) / (predicted - dense);
  console.log(`held-out ${heldOut.length} tokens, 20% of groups dropped: dense ${dense.toFixed(4)}, predictor ${predicted.toFixed(4)}, oracle ${oracle.toFixed(4)}, random ${chance.toFixed(4)}; ` +
    `random loses ${ratio.toFixed(1)}x the predictor's increase, ${((chance - dense) / (oracle - dense)).toFixed(1)}x the oracle's; FFN recall@2 ${(recall / nSamples).toFixed(3)}, Spearman ${(rho / nSamples).toFixed(3)}`);
  assert.ok(dense < oracle && oracle <= predicted && predicted < chance, `dense ${dense}, oracle ${oracle}, predictor ${predicted}, random ${chance}`);
  assert.ok(ratio >= 2.5, `the predictor's increase is only ${ratio.toFixed(2)}x smaller than random's`);
});
