/**
 * The cluster's arithmetic without a network: N devices (coordinator + N−1 GroupWorkers, each
 * with its own KV cache) with any shares reproduce the single-device golden logits and tokens.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Engine, Sampler, generate } from "../../src/engine/index.js";
import { GroupWorker, InProcessSynchronizer } from "../../src/cluster/index.js";
import { createGroupLayout, proportionalPlacement } from "../../src/partition/index.js";
import { loadStories, maxAbsDiff, readGolden, testKernels } from "../helpers/golden.js";

const golden = readGolden();

for (const shares of [[1], [1, 1], [1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1], [3, 1, 0.5, 2]]) {
  test(`${shares.length} devices with shares [${shares.join(", ")}] reproduce the golden logits and 60 greedy tokens`, async () => {
    const { model } = await loadStories();
    const layout = createGroupLayout(model.config, 16);
    const placement = proportionalPlacement(layout, model.config.nLayers, shares);
    const workers = shares.map((_, d) => (d === 0 ? undefined : new GroupWorker(model.config, model.weights, testKernels(), layout, 256, 8)));
    workers.forEach((w, d) => w?.setPlacement(placement, d));
    const synchronizer = new InProcessSynchronizer(placement, workers);
    const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, maxBatch: 8, ffnBlockSize: 16, synchronizer });
    const logits = (await engine.evaluate(golden.logits.input_ids, 0, "last"))!;
    assert.ok(maxAbsDiff(logits, golden.logits.last) < 1e-4, `max diff ${maxAbsDiff(logits, golden.logits.last)}`);
    const result = await generate(engine, model.tokenizer, new Sampler(model.config.vocabSize, { temperature: 0, seed: 1 }), golden.greedy_prompt.prompt_ids, { maxTokens: 60 });
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids);
    assert.equal(synchronizer.dropped.length, 0);
    model.file.close();
  });
}

test("a dropped worker contribution changes the output and is recorded; positions it missed stay masked", async () => {
  const { model } = await loadStories();
  const layout = createGroupLayout(model.config, 16);
  const placement = proportionalPlacement(layout, model.config.nLayers, [1, 1]);
  const worker = new GroupWorker(model.config, model.weights, testKernels(), layout, 256, 8);
  worker.setPlacement(placement, 1);
  const synchronizer = new InProcessSynchronizer(placement, [undefined, worker], { dropContribution: (c) => c.layerIndex === 2 && c.phase === "ffn" });
  const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, maxBatch: 8, ffnBlockSize: 16, synchronizer });
  const logits = (await engine.evaluate(golden.logits.input_ids, 0, "last"))!;
  assert.ok(maxAbsDiff(logits, golden.logits.last) > 1e-3, "dropping half of layer 2's FFN must change the logits");
  assert.ok(logits.every(Number.isFinite));
  assert.deepEqual(synchronizer.dropped.map((d) => [d.device, d.layerIndex, d.phase]), Array.from({ length: Math.ceil(golden.logits.input_ids.length / 8) }, () => [1, 2, "ffn"]));
  model.file.close();
});
