/**
 * Compute skipping on the workers (--skip-below): the plan carries the threshold, and each worker
 * with its own copy of the predictor leaves out its unimportant groups, as the coordinator does
 * with its own. A cluster then computes exactly what a single node skipping the same groups does.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { ClusterCoordinator, WorkerNode, modelSha256 } from "../../src/cluster/index.js";
import { Engine, LocalSynchronizer, argmax } from "../../src/engine/index.js";
import { createGroupLayout } from "../../src/partition/index.js";
import { GroupSkipper, ImportancePredictor, type GroupPredictor, type LinearMap } from "../../src/predictor/index.js";
import { loadStories, readGolden, stories260KPath, testKernels } from "../helpers/golden.js";

const clusterKey = Buffer.from("a worker skipping test key, 32 B");
const sha = modelSha256(stories260KPath());
const golden = readGolden();
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Scores that ignore the input: the log of fixed shares, the same in every layer, so which groups are skipped is known. */
function constantPredictor(dim: number, nLayers: number, attention: number[], ffn: number[]): GroupPredictor {
  const map = (shares: number[]): LinearMap => ({ nInputs: dim, nOutputs: shares.length, weights: new Float64Array(dim * shares.length), bias: Float64Array.from(shares, Math.log), mean: Float64Array.from(shares, Math.log) });
  return { modelSha256: sha, nLayers, inputDim: dim, ffnBlockSize: 32, maps: { attention: Array.from({ length: nLayers }, () => map(attention)), ffn: Array.from({ length: nLayers }, () => map(ffn)) } };
}

async function greedyTokens(engine: Engine, n: number): Promise<number[]> {
  const prompt = golden.greedy_prompt.prompt_ids;
  let logits = (await engine.evaluate(prompt, 0, "last"))!;
  const tokens: number[] = [];
  while (tokens.length < n) {
    tokens.push(argmax(logits));
    logits = await engine.step(tokens.at(-1)!, prompt.length + tokens.length - 1);
  }
  return tokens;
}

test("workers skip their groups under the threshold: strict f32 tokens equal a single node skipping the same groups, and each worker counts what it skipped", async () => {
  const { model } = await loadStories();
  const layout = createGroupLayout(model.config, 32);
  // Groups 1 and 3 of attention, and every other FFN block, are under 10%.
  const ffnShares = Array.from({ length: layout.nFfnGroups }, (_, g) => (g % 2 === 1 ? 0.01 : 1));
  const predictor = constantPredictor(model.config.dim, model.config.nLayers, [0.4, 0.05, 0.5, 0.05], ffnShares);
  const kernels = testKernels();

  const single = new GroupSkipper(new ImportancePredictor(predictor, kernels), layout, 0.1);
  const alone = new Engine(model.config, model.weights, { kernels, contextLength: 256, synchronizer: new LocalSynchronizer(layout, (step, candidates) => single.select(step.layerIndex, step.phase, step.input, step.nTokens, candidates)) });
  const expected = await greedyTokens(alone, 12);
  assert.notDeepEqual(expected, golden.greedy_prompt.generated_ids.slice(0, 12), "skipping this much changes the text, so the comparison below means something");

  const logs: string[] = [];
  const workers = await Promise.all([0, 1].map(async () => {
    const worker = await WorkerNode.start({ model: { file: model.file, config: model.config, sha256: sha }, kernels, clusterKey, contextLength: 256, predictor, log: (line) => logs.push(line) });
    cleanups.push(() => worker.close());
    return worker;
  }));
  const withoutPredictor = await WorkerNode.start({ model: { file: model.file, config: model.config, sha256: sha }, kernels, clusterKey, contextLength: 256, log: (line) => logs.push(line) });
  cleanups.push(() => withoutPredictor.close());

  const coordinator = await ClusterCoordinator.connect({
    model, modelSha256: sha, clusterKey, mode: "strict", wire: "f32", workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
    predictor: new ImportancePredictor(predictor, kernels), skipBelow: 0.1,
  });
  cleanups.push(() => coordinator.close());
  const engine = new Engine(model.config, model.weights, { kernels, contextLength: 256, synchronizer: coordinator });
  assert.deepEqual(await greedyTokens(engine, 12), expected);
  for (const worker of workers) {
    const totals = worker.skipTotals();
    assert.ok(totals !== undefined && totals.skipped > 0 && totals.skipped < totals.considered, JSON.stringify(totals));
  }
  assert.ok(coordinator.skipper !== undefined && coordinator.skipper.totals.skipped > 0);

  // A worker without the predictor says so and computes all of its groups.
  const other = await ClusterCoordinator.connect({
    model, modelSha256: sha, clusterKey, mode: "strict", wire: "f32", workers: [{ host: "127.0.0.1", port: withoutPredictor.tcpPort }],
    predictor: new ImportancePredictor(predictor, kernels), skipBelow: 0.1,
  });
  cleanups.push(() => other.close());
  await greedyTokens(new Engine(model.config, model.weights, { kernels, contextLength: 256, synchronizer: other }), 2);
  assert.equal(withoutPredictor.skipTotals(), undefined);
  assert.ok(logs.some((line) => line.includes("the plan skips groups under 10.0% of their phase's predicted importance, but this worker has no --predictor: it computes all of its groups")), logs.join("\n"));
});
