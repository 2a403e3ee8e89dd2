/**
 * The group probe on stories260K: computing every group on its own reproduces the dense model;
 * each group's contribution norm is observed with the layer input a predictor would see; and
 * dropping the groups that truly matter least costs less perplexity than dropping at random
 * (the premise of predictor-guided relaxed synchronization).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { SeededRandom } from "../../src/base/index.js";
import { Engine, GroupProbe, perplexity, type GroupObservation } from "../../src/engine/index.js";
import { createGroupLayout } from "../../src/partition/index.js";
import { loadStories, maxAbsDiff, readGolden, testKernels } from "../helpers/golden.js";
import { sharedModelsDir } from "../helpers/paths.js";

const golden = readGolden();

async function probedEngine(options: { onPhase?: (o: GroupObservation) => void; choose?: (o: GroupObservation, keep: Uint8Array) => void } = {}) {
  const { model } = await loadStories();
  const layout = createGroupLayout(model.config);
  const kernels = testKernels();
  const probe = new GroupProbe({ config: model.config, weights: model.weights, kernels, layout, contextLength: 256, maxBatch: 64, ...options });
  return { model, engine: new Engine(model.config, model.weights, { kernels, contextLength: 256, synchronizer: probe }) };
}

test("every group computed on its own adds up to the dense model: the golden logits", async () => {
  const observed: Array<{ layer: number; phase: string; nGroups: number; minNorm: number }> = [];
  const { engine } = await probedEngine({
    onPhase: (o) => observed.push({ layer: o.layerIndex, phase: o.phase, nGroups: o.nGroups, minNorm: Math.min(...o.norms) }),
  });
  const logits = Float32Array.from((await engine.evaluate(golden.logits.input_ids, 0, "last"))!);
  assert.ok(maxAbsDiff(logits, golden.logits.last) < 1e-4, `max diff ${maxAbsDiff(logits, golden.logits.last)}`);
  // 5 layers × 2 phases per batch; 4 KV-head bundles, and FFN blocks of 32 neurons.
  assert.equal(observed.length % 10, 0);
  assert.ok(observed.every((o) => o.minNorm > 0 && o.nGroups === (o.phase === "attention" ? 4 : Math.ceil(engine.config.hiddenDim / 32))));
});

test("dropping the 20% of groups that matter least (by their true norms) costs less perplexity than dropping 20% at random", async () => {
  const { model } = await loadStories();
  const text = readFileSync(path.join(sharedModelsDir(), "corpora", "tinystories_valid_excerpt.txt"), "utf8").slice(0, 6000);
  const tokens = model.tokenizer.encode(text, { addBos: false });
  const bos = model.tokenizer.bosId;
  const measure = async (choose?: (o: GroupObservation, keep: Uint8Array) => void) => {
    const { engine } = await probedEngine({ choose });
    return (await perplexity(engine, tokens, bos, 128)).perplexity;
  };
  const dropLowest = (o: GroupObservation, keep: Uint8Array): void => {
    const nDrop = Math.round(0.2 * o.nGroups);
    for (let t = 0; t < o.nTokens; t++) {
      const order = Array.from({ length: o.nGroups }, (_, g) => g).sort((a, b) => o.norms[t * o.nGroups + a]! - o.norms[t * o.nGroups + b]!);
      for (const g of order.slice(0, nDrop)) keep[t * o.nGroups + g] = 0;
    }
  };
  const random = new SeededRandom(7);
  const dropRandom = (o: GroupObservation, keep: Uint8Array): void => {
    const nDrop = Math.round(0.2 * o.nGroups);
    for (let t = 0; t < o.nTokens; t++) {
      const order = Array.from({ length: o.nGroups }, (_, g) => g);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(random.nextFloat() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      for (const g of order.slice(0, nDrop)) keep[t * o.nGroups + g] = 0;
    }
  };
  const dense = await measure();
  const oracle = await measure(dropLowest);
  const randomPpl = await measure(dropRandom);
  assert.ok(dense < oracle && oracle < randomPpl, `dense ${dense}, oracle-lowest ${oracle}, random ${randomPpl}`);
  console.log(`perplexity over ${tokens.length} tokens: dense ${dense.toFixed(4)}, 20% oracle-lowest dropped ${oracle.toFixed(4)}, 20% random dropped ${randomPpl.toFixed(4)}`);
  // The oracle's loss is a small fraction of random's (DESIGN's anchor: about 12x less on this model).
  assert.ok((oracle - dense) * 3 < randomPpl - dense, `dense ${dense}, oracle-lowest ${oracle}, random ${randomPpl}`);
});
