/** The golden reference of stories260K (an independent float64 implementation) and model loading for tests. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Engine, perplexity, type EngineOptions } from "../../src/engine/index.js";
import { createKernels, parseKernelChoice } from "../../src/kernels/index.js";
import { loadModel, type LoadedModel } from "../../src/model/index.js";
import { sharedModelsDir } from "./paths.js";

export interface GoldenReference {
  greedy_from_bos: { prompt_ids: number[]; steps: number; generated_ids: number[]; text: string };
  greedy_prompt: { prompt: string; prompt_ids: number[]; steps_total: number; generated_ids: number[]; text_including_prompt: string };
  logits: { input_ids: number[]; pos0: number[]; last: number[]; top5_last: Array<[number, number]> };
  perplexity_reference: { n_tokens: number; results: Array<{ window: number; tokens_scored: number; mean_nll: number; ppl: number }> };
  aidreams260K_greedy_from_bos: { steps: number; generated_ids: number[] };
}

export function readGolden(): GoldenReference {
  return JSON.parse(readFileSync(join(sharedModelsDir(), "golden-reference.json"), "utf8")) as GoldenReference;
}

export function stories260KPath(): string {
  return join(sharedModelsDir(), "stories260K", "stories260K.gguf");
}

/** The kernels tests run with: HALO_KERNELS (auto: native when built), one thread since test files run in parallel. */
export function testKernels() {
  return createKernels({ choice: parseKernelChoice(process.env["HALO_KERNELS"]), nThreads: 1 });
}

export async function loadStories(options: EngineOptions = {}): Promise<{ model: LoadedModel; engine: Engine }> {
  const model = await loadModel(stories260KPath());
  return { model, engine: new Engine(model.config, model.weights, { kernels: testKernels(), ...options }) };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** Scores the golden protocol's text at `window` and checks it against the reference. */
export async function checkGoldenPerplexity(window: number): Promise<void> {
  const golden = readGolden();
  const reference = golden.perplexity_reference.results.find((r) => r.window === window)!;
  const { model, engine } = await loadStories({ maxBatch: window });
  const text = readFileSync(join(sharedModelsDir(), "corpora", "tinystories_valid_excerpt.txt"), "utf8").slice(0, 100_000);
  const tokens = model.tokenizer.encode(text, { addBos: false });
  assert.equal(tokens.length, golden.perplexity_reference.n_tokens);
  const result = await perplexity(engine, tokens, model.tokenizer.bosId, window);
  assert.equal(result.tokensScored, reference.tokens_scored);
  assert.ok(Math.abs(result.perplexity - reference.ppl) < 0.005, `perplexity ${result.perplexity} vs ${reference.ppl}`);
  assert.ok(Math.abs(result.meanNll - reference.mean_nll) < 1e-4, `mean NLL ${result.meanNll} vs ${reference.mean_nll}`);
  model.file.close();
}
