/**
 * `npm run bench:predictor`: what the importance predictor costs beside the layer it predicts for,
 * on a synthetic TinyLlama-1.1B-shape Q4_0 model (4 layers; shape is what matters). Interleaved
 * in one run: decode steps of the plain engine, and of the engine predicting every phase's groups
 * (compute skipping at a zero threshold: the prediction runs, nothing is skipped), with full-rank
 * and reduced-rank maps. Prints ms per token and the prediction's share of the layers' compute
 * (a decode step minus the output projection, measured here too). Target: ≤ 3%.
 * Env: HALO_BENCH_TOKENS (default 48), HALO_BENCH_THREADS (default: all cores).
 */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SeededRandom } from "../../src/base/index.js";
import { Engine, LocalSynchronizer } from "../../src/engine/index.js";
import { createKernels, defaultThreadCount } from "../../src/kernels/index.js";
import { loadModel, writeSyntheticModel } from "../../src/model/index.js";
import { createGroupLayout, groupCount, type GroupLayout } from "../../src/partition/index.js";
import { GroupSkipper, ImportancePredictor, type GroupPredictor, type LinearMap } from "../../src/predictor/index.js";
import { describeRun } from "../report.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const cacheDir = join(here, "..", "..", "..", "bench", ".cache");
const nTokens = Number(process.env["HALO_BENCH_TOKENS"] ?? 48);
const threads = Number(process.env["HALO_BENCH_THREADS"] ?? defaultThreadCount());

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** A predictor of the model's shapes with seeded random maps: its cost does not depend on its values. */
function randomPredictor(layout: GroupLayout, dim: number, nLayers: number, rank: number | undefined): GroupPredictor {
  const random = new SeededRandom(3);
  const values = (n: number): Float64Array => Float64Array.from({ length: n }, () => random.nextGaussian() * 0.01);
  const map = (nOutputs: number): LinearMap => {
    const base = { nInputs: dim, nOutputs, weights: values(dim * nOutputs), bias: values(nOutputs), mean: values(nOutputs) };
    if (rank === undefined || rank >= nOutputs) return base;
    return { ...base, factors: { rank, down: values(dim * rank), up: values(rank * nOutputs) } };
  };
  const maps = {
    attention: Array.from({ length: nLayers }, () => map(groupCount(layout, "attention"))),
    ffn: Array.from({ length: nLayers }, () => map(groupCount(layout, "ffn"))),
  };
  return { modelSha256: "00".repeat(32), nLayers, inputDim: dim, ffnBlockSize: layout.ffnBlockSize, maps };
}

async function main(): Promise<void> {
  mkdirSync(cacheDir, { recursive: true });
  const path = join(cacheDir, "tinyllama-1.1b-4l-q4_0.gguf");
  if (!existsSync(path)) writeSyntheticModel(path, { shape: "tinyllama-1.1b", type: "q4_0", seed: 1, nLayers: 4 });
  const model = await loadModel(path);
  const kernels = createKernels({ nThreads: threads });
  const { config } = model;
  const layout = createGroupLayout(config);
  const variants = [
    { name: "plain engine", rank: undefined as number | undefined, predict: false },
    { name: "predictor, full rank", rank: undefined, predict: true },
    { name: "predictor, rank 32", rank: 32, predict: true },
  ];
  const runs = variants.map((v) => {
    const skipper = v.predict ? new GroupSkipper(new ImportancePredictor(randomPredictor(layout, config.dim, config.nLayers, v.rank), kernels), layout, 0) : undefined;
    const synchronizer = new LocalSynchronizer(layout, skipper === undefined ? undefined : (step, candidates) => skipper.select(step.layerIndex, step.phase, step.input, step.nTokens, candidates));
    return { ...v, skipper, engine: new Engine(config, model.weights, { kernels, contextLength: nTokens + 1, synchronizer }), stepMs: [] as number[] };
  });
  // The output projection, timed alone: the layers' share of a step is the rest.
  const normed = new Float32Array(config.dim).fill(0.01);
  const logits = new Float32Array(config.vocabSize);
  const outputMs: number[] = [];
  for (let t = 0; t < nTokens; t++) {
    for (const run of runs) {
      const started = performance.now();
      await run.engine.step(1 + (t % 100), t);
      run.stepMs.push(performance.now() - started);
    }
    const started = performance.now();
    kernels.matvec(model.weights.output, normed, 0, logits, 0, 0, config.vocabSize, 0, config.dim);
    outputMs.push(performance.now() - started);
  }
  const output = median(outputMs);
  const plain = median(runs[0]!.stepMs);
  const layersMs = plain - output;
  process.stdout.write(`${describeRun().line}\nTinyLlama-1.1B shape, Q4_0, ${config.nLayers} layers, ${layout.nAttentionGroups} attention + ${layout.nFfnGroups} FFN groups per layer, ${kernels.name} × ${threads} threads, ${nTokens} decode steps\n`);
  process.stdout.write(`decode step ${plain.toFixed(2)} ms (median), of which output projection ${output.toFixed(2)} ms → layers ${layersMs.toFixed(2)} ms\n\n`);
  process.stdout.write(`| variant | step ms (median) | predicting ms/token | share of the layers' compute |\n| --- | --- | --- | --- |\n`);
  for (const run of runs) {
    const predictPerToken = run.skipper === undefined ? 0 : run.skipper.totals.predictMs / nTokens;
    process.stdout.write(`| ${run.name} | ${median(run.stepMs).toFixed(2)} | ${predictPerToken.toFixed(3)} | ${run.skipper === undefined ? "-" : `${((100 * predictPerToken) / layersMs).toFixed(2)}%`} |\n`);
  }
  model.file.close();
}

await main();
