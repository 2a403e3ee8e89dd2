/**
 * Small llama-shaped GGUF models for the model and CLI tests, written with the library's own
 * `writeGguf`, plus the golden-reference data and temp-directory handling those tests share.
 *
 * `tinyLlamaSpec()` is a complete, loadable model (8-token SentencePiece vocabulary, seeded F32
 * weights). A test changes exactly one thing through `metadata` / `tensors` overrides, so a
 * rejection can only come from that change; the unmodified spec is checked to load as a control.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { SeededRandom } from "../../src/base/random.js";
import { GGML_TYPE_ID } from "../../src/kernels/index.js";
import { GgufValueType } from "../../src/model/ggufFormat.js";
import { tensorByteLength, writeGguf, type GgufWriteSpec, type GgufWriteTensor, type GgufWriteValue } from "../../src/model/ggufWriter.js";
import { LLAMA_TENSOR_NAMES } from "../../src/model/llamaWeights.js";
import { sharedModelsDir } from "./paths.js";

export interface TinyLlamaDims {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  contextLength: number;
}

export const TINY_DIMS: Readonly<TinyLlamaDims> = { dim: 16, hiddenDim: 32, nLayers: 2, nHeads: 4, nKvHeads: 2, contextLength: 64 };

/** A SentencePiece vocabulary: <unk>, <s>, </s> (ids 0-2, llama.cpp's defaults), then five pieces. */
export const TINY_VOCAB: readonly string[] = ["<unk>", "<s>", "</s>", "\u2581a", "\u2581b", "a", "b", "\u2581"];
const TINY_TOKEN_TYPES: readonly number[] = [2, 3, 3, 1, 1, 1, 1, 1];

/** rope.freq_base in the unmodified spec: not the converters' default 10000, so reading the key is observable. */
export const TINY_ROPE_FREQ_BASE = 500000;

export interface TinyLlamaOptions {
  dims?: Partial<TinyLlamaDims>;
  /** Entries to replace or append (in key order of the base spec); `undefined` removes the key. */
  metadata?: Record<string, GgufWriteValue | undefined>;
  /**
   * Tensors to change by name: the given fields replace the default ones (a new typeId or shape
   * without `data` gets seeded bytes of the right size); `null` removes the tensor.
   */
  tensors?: Record<string, Partial<GgufWriteTensor> | null>;
  /** Seed of the weights. Defaults to 1. */
  seed?: number;
}

export const u32 = (value: number): GgufWriteValue => ({ type: GgufValueType.UINT32, value });
export const i32 = (value: number): GgufWriteValue => ({ type: GgufValueType.INT32, value });
export const f32 = (value: number): GgufWriteValue => ({ type: GgufValueType.FLOAT32, value });
export const str = (value: string): GgufWriteValue => ({ type: GgufValueType.STRING, value });

/** The llama tensor names and ggml shapes ([ne0 = columns, ne1 = rows]) for `dims` and `vocabSize`. */
export function tinyLlamaTensorShapes(dims: TinyLlamaDims, vocabSize: number): Array<[string, number[]]> {
  const n = LLAMA_TENSOR_NAMES;
  const kvDim = (dims.dim / dims.nHeads) * dims.nKvHeads;
  const shapes: Array<[string, number[]]> = [[n.tokenEmbedding, [dims.dim, vocabSize]], [n.outputNorm, [dims.dim]], [n.output, [dims.dim, vocabSize]]];
  for (let l = 0; l < dims.nLayers; l++) {
    shapes.push(
      [n.attnNorm(l), [dims.dim]],
      [n.wq(l), [dims.dim, dims.dim]],
      [n.wk(l), [dims.dim, kvDim]],
      [n.wv(l), [dims.dim, kvDim]],
      [n.wo(l), [dims.dim, dims.dim]],
      [n.ffnNorm(l), [dims.dim]],
      [n.ffnGate(l), [dims.dim, dims.hiddenDim]],
      [n.ffnUp(l), [dims.dim, dims.hiddenDim]],
      [n.ffnDown(l), [dims.hiddenDim, dims.dim]],
    );
  }
  return shapes;
}

/**
 * Seeded bytes for tensor number `index`: N(0, 0.1²) floats for F32 (1-D norm weights centred on
 * 1), arbitrary bytes otherwise. One generator per tensor, so changing one leaves the others' bytes alone.
 */
function seededTensorData(seed: number, index: number, typeId: number, shape: readonly number[]): Uint8Array {
  const random = new SeededRandom(seed * 7919 + index);
  const byteLength = tensorByteLength(typeId, shape);
  if (typeId !== GGML_TYPE_ID.F32) return Uint8Array.from({ length: byteLength }, () => random.nextInt(256));
  const isNorm = shape.length === 1;
  const values = Float32Array.from({ length: byteLength / 4 }, () => (isNorm ? 1 : 0) + 0.1 * random.nextGaussian());
  return new Uint8Array(values.buffer);
}

export function tinyLlamaSpec(options: TinyLlamaOptions = {}): GgufWriteSpec {
  const dims: TinyLlamaDims = { ...TINY_DIMS, ...options.dims };
  const seed = options.seed ?? 1;
  const base: Array<[string, GgufWriteValue]> = [
    ["general.architecture", str("llama")],
    ["general.name", str("tiny")],
    ["llama.context_length", u32(dims.contextLength)],
    ["llama.embedding_length", u32(dims.dim)],
    ["llama.feed_forward_length", u32(dims.hiddenDim)],
    ["llama.block_count", u32(dims.nLayers)],
    ["llama.attention.head_count", u32(dims.nHeads)],
    ["llama.attention.head_count_kv", u32(dims.nKvHeads)],
    ["llama.rope.dimension_count", u32(dims.dim / dims.nHeads)],
    ["llama.rope.freq_base", f32(TINY_ROPE_FREQ_BASE)],
    ["llama.attention.layer_norm_rms_epsilon", f32(1e-5)],
    ["tokenizer.ggml.model", str("llama")],
    ["tokenizer.ggml.tokens", { type: GgufValueType.ARRAY, elementType: GgufValueType.STRING, value: TINY_VOCAB }],
    ["tokenizer.ggml.scores", { type: GgufValueType.ARRAY, elementType: GgufValueType.FLOAT32, value: TINY_VOCAB.map((_, i) => -i) }],
    ["tokenizer.ggml.token_type", { type: GgufValueType.ARRAY, elementType: GgufValueType.INT32, value: TINY_TOKEN_TYPES }],
    ["tokenizer.ggml.bos_token_id", u32(1)],
    ["tokenizer.ggml.eos_token_id", u32(2)],
  ];
  const overrides = options.metadata ?? {};
  const metadata: Array<readonly [string, GgufWriteValue]> = [];
  for (const [key, value] of base) {
    const replaced = Object.hasOwn(overrides, key) ? overrides[key] : value;
    if (replaced !== undefined) metadata.push([key, replaced]);
  }
  for (const [key, value] of Object.entries(overrides)) {
    if (value !== undefined && !base.some(([k]) => k === key)) metadata.push([key, value]);
  }

  const tensorOverrides = options.tensors ?? {};
  const tensors: GgufWriteTensor[] = [];
  const shapes = tinyLlamaTensorShapes(dims, TINY_VOCAB.length);
  shapes.forEach(([name, shape], index) => {
    const override = Object.hasOwn(tensorOverrides, name) ? tensorOverrides[name] : {};
    if (override === null) return;
    const typeId = override?.typeId ?? GGML_TYPE_ID.F32;
    const finalShape = override?.shape ?? shape;
    tensors.push({ name: override?.name ?? name, typeId, shape: finalShape, data: override?.data ?? seededTensorData(seed, index, typeId, finalShape) });
  });
  for (const [name, t] of Object.entries(tensorOverrides)) {
    if (t === null || shapes.some(([n]) => n === name)) continue;
    if (t.typeId === undefined || t.shape === undefined) throw new Error(`new tensor '${name}' needs typeId and shape`);
    tensors.push({ name, typeId: t.typeId, shape: t.shape, data: t.data ?? seededTensorData(seed, shapes.length + tensors.length, t.typeId, t.shape) });
  }
  return { metadata, tensors };
}

/** F32 bytes of `values`. */
export function f32Bytes(values: ArrayLike<number>): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** A temp directory removed by `cleanup()`; `file(name)` is a path inside it. */
export interface TempDir {
  readonly path: string;
  file(name: string): string;
  cleanup(): void;
}

export function createTempDir(prefix: string): TempDir {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return {
    path: dir,
    file: (name) => path.join(dir, name),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Writes `spec` to `dir/name` and returns the path. */
export function writeModelFile(dir: TempDir, name: string, spec: GgufWriteSpec): string {
  const p = dir.file(name);
  writeGguf(p, spec);
  return p;
}

// ---------------------------------------------------------------------------------------------
// Shared model files and golden data

export const SHARED_MODELS = {
  storiesGguf: path.join(sharedModelsDir(), "stories260K", "stories260K.gguf"),
  storiesBin: path.join(sharedModelsDir(), "stories260K", "stories260K.bin"),
  storiesTokenizer: path.join(sharedModelsDir(), "stories260K", "tok512.bin"),
  aidreamsBin: path.join(sharedModelsDir(), "aidreams260K", "aidreams260K.bin"),
  aidreamsTokenizer: path.join(sharedModelsDir(), "aidreams260K", "tok512.bin"),
  tinyStories: path.join(sharedModelsDir(), "corpora", "tinystories_valid_excerpt.txt"),
  golden: path.join(sharedModelsDir(), "golden-reference.json"),
} as const;

/** The parts of golden-reference.json the CLI and model tests use. */
export interface GoldenReference {
  greedy_prompt: { prompt: string; prompt_ids: number[]; generated_ids: number[]; text_including_prompt: string };
  greedy_from_bos: { prompt_ids: number[]; generated_ids: number[]; text: string };
  aidreams260K_greedy_from_bos: { steps: number; generated_ids: number[]; text: string };
}

export function readGolden(): GoldenReference {
  return JSON.parse(readFileSync(SHARED_MODELS.golden, "utf8")) as GoldenReference;
}
