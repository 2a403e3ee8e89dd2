/**
 * llama.cpp (node-llama-cpp's prebuilt binary, pinned) as an oracle on the same GGUF files:
 * small synthetic Q8_0 and Q4_0 models with the Llama 2 vocabulary. halo's native kernels
 * quantize activations to Q8_0 as ggml does, so both engines make the same greedy choices.
 *
 * On random-weight models activation quantization alone moves logits by ~0.05, so a
 * near-tie can flip a greedy choice between any two correct engines. The seeds below were
 * checked to have no near-tie in 32 steps; the probability comparison is the quantitative
 * check and would catch a real divergence on any seed.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { Engine, argmax } from "../../src/engine/index.js";
import { createKernels, mmapFile } from "../../src/kernels/index.js";
import { loadModel, openGguf, writeSyntheticModel, type SynthTypeName } from "../../src/model/index.js";
import { sharedModelsDir } from "../helpers/paths.js";

const STEPS = 32;
/** "Once upon a time" in the Llama 2 vocabulary, after BOS. */
const PROMPT = [1, 9038, 2501, 263, 931];
const dir = mkdtempSync(join(tmpdir(), "halo-oracle-"));
after(() => rmSync(dir, { recursive: true, force: true }));

async function synthesize(type: SynthTypeName, seed: number): Promise<string> {
  const path = join(dir, `tiny-${type}-${seed}.gguf`);
  const vocab = await openGguf(join(sharedModelsDir(), "llama2-tokenizer", "ggml-vocab-llama-spm.gguf"));
  writeSyntheticModel(path, { shape: "tiny", type, seed, vocab: vocab.metadata });
  vocab.close();
  return path;
}

async function llamaCppRun(path: string): Promise<{ tokens: number[]; firstProbabilities: Map<number, number> }> {
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: path });
  const context = await model.createContext({ contextSize: 128, batchSize: 64, threads: 1, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
  const tokens: number[] = [];
  let firstProbabilities = new Map<number, number>();
  for await (const output of context.getSequence().evaluateWithMetadata(PROMPT as never[], { probabilities: true }, { temperature: 0 })) {
    if (tokens.length === 0) firstProbabilities = output.probabilities as Map<number, number>;
    tokens.push(output.token as number);
    if (tokens.length >= STEPS) break;
  }
  await context.dispose();
  await model.dispose();
  return { tokens, firstProbabilities };
}

async function haloRun(path: string): Promise<{ tokens: number[]; firstProbabilities: Float64Array }> {
  const model = await loadModel(path, { map: mmapFile });
  const engine = new Engine(model.config, model.weights, { kernels: createKernels({ choice: "native", nThreads: 1 }), contextLength: 128 });
  let logits = (await engine.evaluate(PROMPT, 0, "last"))!;
  const max = Math.max(...logits);
  const exps = Float64Array.from(logits, (v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  const firstProbabilities = exps.map((e) => e / sum);
  const tokens: number[] = [];
  for (let position = PROMPT.length; tokens.length < STEPS; position++) {
    const token = argmax(logits);
    tokens.push(token);
    logits = await engine.step(token, position);
  }
  model.file.close();
  return { tokens, firstProbabilities };
}

for (const [type, seed] of [["q8_0", 3], ["q4_0", 3]] as const) {
  test(`${type}: halo and llama.cpp agree on ${STEPS} greedy tokens and on the next-token probabilities`, async () => {
    const path = await synthesize(type, seed);
    const reference = await llamaCppRun(path);
    const ours = await haloRun(path);
    assert.equal(reference.tokens.length, STEPS);
    assert.deepEqual(ours.tokens, reference.tokens);
    const top = [...reference.firstProbabilities.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
    assert.equal(top.length, 5);
    for (const [id, p] of top) assert.ok(Math.abs(ours.firstProbabilities[id]! - p) < 0.03, `token ${id}: halo ${ours.firstProbabilities[id]} vs llama.cpp ${p}`);
  });
}
