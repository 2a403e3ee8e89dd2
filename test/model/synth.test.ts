/** `halo synth` models: real shapes, reproducible bytes, loadable and finite. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { Engine, argmax } from "../../src/engine/index.js";
import { SYNTH_SHAPES, loadModel, openGguf, syntheticVocab, writeSyntheticModel } from "../../src/model/index.js";
import { testKernels } from "../helpers/golden.js";
import { sharedModelsDir } from "../helpers/paths.js";

const dir = mkdtempSync(join(tmpdir(), "halo-synth-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const sha = (path: string): string => createHash("sha256").update(readFileSync(path)).digest("hex");

test("the same seed writes identical bytes, another seed different weights", () => {
  const a = join(dir, "a.gguf");
  const b = join(dir, "b.gguf");
  const c = join(dir, "c.gguf");
  writeSyntheticModel(a, { shape: "tiny", type: "q4_0", seed: 5 });
  writeSyntheticModel(b, { shape: "tiny", type: "q4_0", seed: 5 });
  writeSyntheticModel(c, { shape: "tiny", type: "q4_0", seed: 6 });
  assert.equal(sha(a), sha(b));
  assert.notEqual(sha(a), sha(c));
});

for (const type of ["f32", "f16", "q8_0", "q4_0"] as const) {
  test(`a ${type} model has the shape's tensors, loads, and gives finite logits`, async () => {
    const path = join(dir, `tiny-${type}.gguf`);
    const result = writeSyntheticModel(path, { shape: "tiny", type, seed: 1, nLayers: 3 });
    assert.equal(result.nTensors, 3 + 9 * 3);
    const model = await loadModel(path);
    const shape = SYNTH_SHAPES.tiny;
    assert.equal(model.config.dim, shape.dim);
    assert.equal(model.config.nLayers, 3);
    assert.equal(model.config.nKvHeads, shape.nKvHeads);
    const expectedType = { f32: "F32", f16: "F16", q8_0: "Q8_0", q4_0: "Q4_0" }[type];
    assert.equal(model.file.tensor("blk.2.ffn_down.weight")?.typeName, expectedType);
    assert.equal(model.file.tensor("blk.2.ffn_norm.weight")?.typeName, "F32");
    const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 64 });
    const logits = (await engine.evaluate([1, 300, 301, 302], 0, "last"))!;
    assert.ok(logits.every(Number.isFinite));
    // Logits are spread (std ≈ 4), so greedy choices are not near-ties.
    const mean = logits.reduce((s, v) => s + v, 0) / logits.length;
    const std = Math.sqrt(logits.reduce((s, v) => s + (v - mean) ** 2, 0) / logits.length);
    assert.ok(std > 2 && std < 8, `logit std ${std}`);
    assert.ok(argmax(logits) >= 0);
    model.file.close();
  });
}

test("a copied vocabulary sets the vocab size; the generated one is SentencePiece-shaped and unique", async () => {
  const vocab = await openGguf(join(sharedModelsDir(), "llama2-tokenizer", "ggml-vocab-llama-spm.gguf"));
  const path = join(dir, "vocab.gguf");
  const result = writeSyntheticModel(path, { shape: "tiny", type: "q8_0", seed: 1, nLayers: 1, vocab: vocab.metadata });
  vocab.close();
  assert.equal(result.shape.vocabSize, 32000);
  const model = await loadModel(path);
  assert.deepEqual(model.tokenizer.encode("Hello world", { addBos: false }), [15043, 3186]);
  model.file.close();
  const generated = syntheticVocab(1000);
  assert.equal(new Set(generated.tokens).size, 1000);
  assert.deepEqual(generated.tokens.slice(0, 4), ["<unk>", "<s>", "</s>", "<0x00>"]);
  assert.equal(generated.tokens[3 + 0x0a], "<0x0A>");
  assert.throws(() => syntheticVocab(100), /more than 259 tokens/);
});
