/**
 * Model hyperparameters (src/model/config.ts) and their agreement with the tensors, through
 * `loadModel` on small GGUF files written with `writeGguf`: RELIABILITY.md G14 (zero, absurd or
 * inconsistent hyperparameters rejected with the key named), the vocab_size part of G13, the
 * converters' defaults, and tensors of a type halo cannot compute with.
 *
 * Each case changes one thing in `tinyLlamaSpec()` (test/helpers/modelFiles.ts); the unchanged
 * spec is asserted to load first, so every rejection below comes from its one change.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { GgufShapeError, GgufTensorError, HaloError, ModelConfigError, UnsupportedTypeError } from "../../src/base/errors.js";
import { GgufValueType } from "../../src/model/ggufFormat.js";
import type { GgufWriteValue } from "../../src/model/ggufWriter.js";
import { loadModel, type LoadedModel } from "../../src/model/loadModel.js";
import {
  TINY_DIMS, TINY_ROPE_FREQ_BASE, TINY_VOCAB, createTempDir, f32, i32, str, tinyLlamaSpec, u32, writeModelFile, type TempDir, type TinyLlamaOptions,
} from "../helpers/modelFiles.js";

let tmp: TempDir;
let fileCounter = 0;
before(() => {
  tmp = createTempDir("halo-config-test-");
});
after(() => tmp.cleanup());

function writeTiny(options: TinyLlamaOptions = {}): string {
  return writeModelFile(tmp, `m${fileCounter++}.gguf`, tinyLlamaSpec(options));
}

async function loadTiny(options: TinyLlamaOptions = {}): Promise<LoadedModel> {
  const model = await loadModel(writeTiny(options));
  model.file.close();
  return model;
}

/** Loads the changed model and returns the error it must be rejected with. */
async function rejection<E extends HaloError>(options: TinyLlamaOptions, errorClass: new (...args: never[]) => E): Promise<E> {
  let caught: unknown;
  try {
    const model = await loadModel(writeTiny(options));
    model.file.close();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof errorClass, `expected ${errorClass.name}, got ${caught === undefined ? "a loaded model" : String(caught)}`);
  return caught;
}

describe("the unchanged tiny model (control)", () => {
  test("loads with exactly the hyperparameters written", async () => {
    const model = await loadTiny();
    const { dim, hiddenDim, nLayers, nHeads, nKvHeads, contextLength } = TINY_DIMS;
    assert.deepEqual(model.config, {
      architecture: "llama",
      name: "tiny",
      dim,
      hiddenDim,
      nLayers,
      nHeads,
      nKvHeads,
      headDim: dim / nHeads,
      kvDim: (dim / nHeads) * nKvHeads,
      vocabSize: TINY_VOCAB.length,
      contextLength,
      rmsNormEps: Math.fround(1e-5),
      ropeFreqBase: TINY_ROPE_FREQ_BASE,
      ropeDim: dim / nHeads,
      ropeStyle: "normal",
    });
    assert.equal(model.weights.layers.length, nLayers);
    assert.equal(model.tokenizer.vocabSize, TINY_VOCAB.length);
  });
});

describe("defaults of absent keys", () => {
  test("no llama.rope.freq_base → 10000", async () => {
    assert.equal((await loadTiny({ metadata: { "llama.rope.freq_base": undefined } })).config.ropeFreqBase, 10000);
  });

  test("no llama.vocab_size → the token count; an equal vocab_size is accepted", async () => {
    assert.equal((await loadTiny()).config.vocabSize, TINY_VOCAB.length);
    assert.equal((await loadTiny({ metadata: { "llama.vocab_size": u32(TINY_VOCAB.length) } })).config.vocabSize, TINY_VOCAB.length);
  });

  test("no head_count_kv → head_count (MHA); no rope.dimension_count → the head size; no general.name → the architecture", async () => {
    const config = (await loadTiny({
      metadata: { "llama.attention.head_count_kv": undefined, "llama.rope.dimension_count": undefined, "general.name": undefined },
      tensors: { "blk.0.attn_k.weight": { shape: [16, 16] }, "blk.0.attn_v.weight": { shape: [16, 16] }, "blk.1.attn_k.weight": { shape: [16, 16] }, "blk.1.attn_v.weight": { shape: [16, 16] } },
    })).config;
    assert.equal(config.nKvHeads, TINY_DIMS.nHeads);
    assert.equal(config.ropeDim, TINY_DIMS.dim / TINY_DIMS.nHeads);
    assert.equal(config.name, "llama");
  });
});

describe("G14: bad hyperparameters → HALO_ERR_MODEL_CONFIG naming the key", () => {
  const cases: Array<{ name: string; metadata: Record<string, GgufWriteValue | undefined>; key: string; message: RegExp }> = [
    { name: "block_count 0", metadata: { "llama.block_count": u32(0) }, key: "llama.block_count", message: /^llama\.block_count: 0 is out of range \(1\.\.1024\)$/ },
    { name: "block_count 10^9", metadata: { "llama.block_count": u32(1e9) }, key: "llama.block_count", message: /^llama\.block_count: 1000000000 is out of range \(1\.\.1024\)$/ },
    { name: "block_count -1 (int32)", metadata: { "llama.block_count": i32(-1) }, key: "llama.block_count", message: /-1 is out of range/ },
    { name: "block_count 2^63 (uint64)", metadata: { "llama.block_count": { type: GgufValueType.UINT64, value: 2n ** 63n } }, key: "llama.block_count", message: /9223372036854775808 is out of range/ },
    { name: "block_count missing", metadata: { "llama.block_count": undefined }, key: "llama.block_count", message: /^llama\.block_count: missing$/ },
    { name: "head_count 0", metadata: { "llama.attention.head_count": u32(0) }, key: "llama.attention.head_count", message: /0 is out of range \(1\.\.1024\)/ },
    { name: "head_count 4096", metadata: { "llama.attention.head_count": u32(4096) }, key: "llama.attention.head_count", message: /4096 is out of range \(1\.\.1024\)/ },
    { name: "head_count_kv 0", metadata: { "llama.attention.head_count_kv": u32(0) }, key: "llama.attention.head_count_kv", message: /0 is out of range \(1\.\.4\)/ },
    { name: "head_count_kv 3 does not divide head_count 4", metadata: { "llama.attention.head_count_kv": u32(3) }, key: "llama.attention.head_count_kv", message: /^llama\.attention\.head_count_kv: 3 does not divide head_count 4$/ },
    { name: "head_count_kv 8 > head_count 4", metadata: { "llama.attention.head_count_kv": u32(8) }, key: "llama.attention.head_count_kv", message: /8 is out of range \(1\.\.4\)/ },
    { name: "embedding_length 18 not divisible by head_count 4", metadata: { "llama.embedding_length": u32(18) }, key: "llama.attention.head_count", message: /^llama\.attention\.head_count: 4 does not divide embedding_length 18$/ },
    { name: "embedding_length 0", metadata: { "llama.embedding_length": u32(0) }, key: "llama.embedding_length", message: /0 is out of range/ },
    { name: "feed_forward_length 0", metadata: { "llama.feed_forward_length": u32(0) }, key: "llama.feed_forward_length", message: /0 is out of range/ },
    { name: "context_length missing", metadata: { "llama.context_length": undefined }, key: "llama.context_length", message: /^llama\.context_length: missing$/ },
    { name: "rope.dimension_count 3 (odd)", metadata: { "llama.rope.dimension_count": u32(3) }, key: "llama.rope.dimension_count", message: /3 must be even/ },
    { name: "rope.dimension_count 8 > head size 4", metadata: { "llama.rope.dimension_count": u32(8) }, key: "llama.rope.dimension_count", message: /8 is out of range \(1\.\.4\)/ },
    { name: "rope.freq_base 0", metadata: { "llama.rope.freq_base": f32(0) }, key: "llama.rope.freq_base", message: /0 must be a positive finite number/ },
    { name: "rope.freq_base NaN", metadata: { "llama.rope.freq_base": f32(Number.NaN) }, key: "llama.rope.freq_base", message: /NaN must be a positive finite number/ },
    { name: "layer_norm_rms_epsilon -1", metadata: { "llama.attention.layer_norm_rms_epsilon": f32(-1) }, key: "llama.attention.layer_norm_rms_epsilon", message: /-1 must be a positive finite number/ },
    { name: "vocab_size 9 ≠ 8 tokens", metadata: { "llama.vocab_size": u32(9) }, key: "llama.vocab_size", message: /^llama\.vocab_size: 9 differs from the 8 tokens in tokenizer\.ggml\.tokens$/ },
    // A key of the wrong type.
    { name: "block_count as a string", metadata: { "llama.block_count": str("2") }, key: "llama.block_count", message: /must be an integer, got string/ },
    { name: "embedding_length as a float32", metadata: { "llama.embedding_length": f32(16) }, key: "llama.embedding_length", message: /must be an integer, got float32/ },
    { name: "head_count as a bool", metadata: { "llama.attention.head_count": { type: GgufValueType.BOOL, value: true } }, key: "llama.attention.head_count", message: /must be an integer, got bool/ },
    { name: "rope.freq_base as a string", metadata: { "llama.rope.freq_base": str("10000") }, key: "llama.rope.freq_base", message: /must be a number, got string/ },
    { name: "general.architecture as a uint32", metadata: { "general.architecture": u32(1) }, key: "general.architecture", message: /must be a string, got uint32/ },
    { name: "general.name as an array", metadata: { "general.name": { type: GgufValueType.ARRAY, elementType: GgufValueType.STRING, value: ["a"] } }, key: "general.name", message: /must be a string, got array of string/ },
    // Architecture.
    { name: "unsupported architecture", metadata: { "general.architecture": str("mamba") }, key: "general.architecture", message: /^general\.architecture: 'mamba' is not supported \(supported: llama\)$/ },
    { name: "missing architecture", metadata: { "general.architecture": undefined }, key: "general.architecture", message: /^general\.architecture: missing$/ },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const error = await rejection({ metadata: c.metadata }, ModelConfigError);
      assert.equal(error.code, "HALO_ERR_MODEL_CONFIG");
      assert.equal(error.key, c.key);
      assert.ok(error.message.startsWith(`${c.key}: `), error.message);
      assert.match(error.message, c.message);
    });
  }

  test("an inherited property name is not an architecture", async () => {
    const error = await rejection({ metadata: { "general.architecture": str("constructor") } }, ModelConfigError);
    assert.equal(error.key, "general.architecture");
    assert.match(error.message, /'constructor' is not supported/);
  });
});

describe("hyperparameters that disagree with the tensors → HALO_ERR_GGUF_SHAPE with expected and actual shapes", () => {
  const cases: Array<{ name: string; options: TinyLlamaOptions; tensor: string; expected: number[]; actual: number[] }> = [
    { name: "embedding_length 32, tensors built for 16", options: { metadata: { "llama.embedding_length": u32(32) } }, tensor: "token_embd.weight", expected: [32, 8], actual: [16, 8] },
    { name: "feed_forward_length 64, tensors built for 32", options: { metadata: { "llama.feed_forward_length": u32(64) } }, tensor: "blk.0.ffn_gate.weight", expected: [16, 64], actual: [16, 32] },
    { name: "head_count_kv 4, attn_k/attn_v built for 2", options: { metadata: { "llama.attention.head_count_kv": u32(4) } }, tensor: "blk.0.attn_k.weight", expected: [16, 16], actual: [16, 8] },
    { name: "one layer's ffn_down transposed", options: { tensors: { "blk.1.ffn_down.weight": { shape: [16, 32] } } }, tensor: "blk.1.ffn_down.weight", expected: [32, 16], actual: [16, 32] },
    { name: "output_norm of the wrong length", options: { tensors: { "output_norm.weight": { shape: [15] } } }, tensor: "output_norm.weight", expected: [16], actual: [15] },
    // G13: vocab_size ≠ embedding rows.
    { name: "G13: 7 embedding rows, 8 tokens", options: { tensors: { "token_embd.weight": { shape: [16, 7] } } }, tensor: "token_embd.weight", expected: [16, 8], actual: [16, 7] },
    { name: "G13: 7 embedding rows, vocab_size 8", options: { metadata: { "llama.vocab_size": u32(8) }, tensors: { "token_embd.weight": { shape: [16, 7] } } }, tensor: "token_embd.weight", expected: [16, 8], actual: [16, 7] },
    { name: "G13: 9 output rows, 8 tokens", options: { tensors: { "output.weight": { shape: [16, 9] } } }, tensor: "output.weight", expected: [16, 8], actual: [16, 9] },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const error = await rejection(c.options, GgufShapeError);
      assert.equal(error.code, "HALO_ERR_GGUF_SHAPE");
      assert.equal(error.tensorName, c.tensor);
      assert.deepEqual(error.expectedShape, c.expected);
      assert.deepEqual(error.actualShape, c.actual);
      assert.equal(error.message, `tensor '${c.tensor}' has shape [${c.actual.join(", ")}], expected [${c.expected.join(", ")}]`);
    });
  }

  test("block_count 3 with tensors for 2 blocks → HALO_ERR_GGUF_TENSOR naming the first missing tensor", async () => {
    const error = await rejection({ metadata: { "llama.block_count": u32(3) } }, GgufTensorError);
    assert.equal(error.code, "HALO_ERR_GGUF_TENSOR");
    assert.equal(error.tensorName, "blk.2.attn_norm.weight");
    assert.equal(error.message, "missing tensor 'blk.2.attn_norm.weight'");
  });

  test("a model without output.weight ties the classifier to the embedding", async () => {
    const model = await loadTiny({ tensors: { "output.weight": null } });
    assert.equal(model.weights.output, model.weights.tokenEmbedding);
  });
});

describe("tensors of a type halo cannot compute with → HALO_ERR_UNSUPPORTED_TYPE naming the type and the tensor", () => {
  test("Q6_K (id 14) with a correctly sized data block", async () => {
    // ne[0] = hidden 256 = one Q6_K block per row: 16 rows × 210 bytes.
    const error = await rejection({ dims: { hiddenDim: 256 }, tensors: { "blk.0.ffn_down.weight": { typeId: 14, data: new Uint8Array(16 * 210) } } }, UnsupportedTypeError);
    assert.equal(error.code, "HALO_ERR_UNSUPPORTED_TYPE");
    assert.match(error.message, /^tensor 'blk\.0\.ffn_down\.weight' has type Q6_K; halo computes with .*F32/);
  });

  test("I32 (id 26) for a norm vector", async () => {
    const error = await rejection({ tensors: { "blk.1.attn_norm.weight": { typeId: 26 } } }, UnsupportedTypeError);
    assert.match(error.message, /^tensor 'blk\.1\.attn_norm\.weight' has type I32;/);
  });

  test("the same shapes in F32 load (the type is the only change)", async () => {
    const model = await loadTiny({ dims: { hiddenDim: 256 } });
    assert.equal(model.config.hiddenDim, 256);
  });
});
