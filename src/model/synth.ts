/**
 * Synthetic models with real shapes and real quantization types, for measuring speed at real
 * sizes without shipping real weights. Each tensor's values come from a PRNG seeded by the
 * model seed and the tensor's name, so a file is reproducible and can be written tensor by
 * tensor. Weights are scaled so activations stay finite through any number of layers:
 * projections keep unit variance (std 1/√fan_in), the residual branches are damped by
 * 1/√(2·layers), and the classifier gives logits of std ≈ 4 so greedy choices are clear-cut.
 */
import { HaloError, SeededRandom } from "../base/index.js";
import { GGML_TYPE_ID, QUANT_TRAITS, rowBytes, type GgmlType } from "../kernels/index.js";
import { GgufValueType } from "./ggufFormat.js";
import type { GgufMetadata } from "./ggufReader.js";
import { writeGguf, type GgufWriteTensor, type GgufWriteValue } from "./ggufWriter.js";
import { LLAMA_TENSOR_NAMES } from "./llamaWeights.js";

export interface SynthShape {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  contextLength: number;
  ropeFreqBase: number;
}

/** Published shapes (from each model's config.json). */
export const SYNTH_SHAPES = {
  "tinyllama-1.1b": { dim: 2048, hiddenDim: 5632, nLayers: 22, nHeads: 32, nKvHeads: 4, vocabSize: 32000, contextLength: 2048, ropeFreqBase: 10000 },
  "llama2-7b": { dim: 4096, hiddenDim: 11008, nLayers: 32, nHeads: 32, nKvHeads: 32, vocabSize: 32000, contextLength: 4096, ropeFreqBase: 10000 },
  "llama2-13b": { dim: 5120, hiddenDim: 13824, nLayers: 40, nHeads: 40, nKvHeads: 40, vocabSize: 32000, contextLength: 4096, ropeFreqBase: 10000 },
  "llama3-8b": { dim: 4096, hiddenDim: 14336, nLayers: 32, nHeads: 32, nKvHeads: 8, vocabSize: 128256, contextLength: 8192, ropeFreqBase: 500000 },
  /** Small enough for tests, with every dimension a multiple of the quantization block. */
  tiny: { dim: 256, hiddenDim: 768, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 1024, contextLength: 512, ropeFreqBase: 10000 },
} as const satisfies Record<string, SynthShape>;

export type SynthShapeName = keyof typeof SYNTH_SHAPES;
export const SYNTH_TYPES = ["f32", "f16", "q8_0", "q4_0"] as const;
export type SynthTypeName = (typeof SYNTH_TYPES)[number];

const TYPE_BY_NAME = { f32: "F32", f16: "F16", q8_0: "Q8_0", q4_0: "Q4_0" } as const satisfies Record<SynthTypeName, GgmlType>;

export interface SynthOptions {
  shape: SynthShapeName;
  type: SynthTypeName;
  seed: number;
  /** Overrides the shape's layer count. */
  nLayers?: number;
  /** A GGUF whose tokenizer.ggml.* keys are copied (its token count sets the vocab size). */
  vocab?: GgufMetadata;
  onTensor?: (done: number, total: number, name: string) => void;
}

/** FNV-1a of a string, mixed with the seed: one PRNG stream per tensor. */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

/** A (nRows, nCols) tensor of uniform values with standard deviation `std`, encoded as `type`. */
function randomTensor(type: GgmlType, nRows: number, nCols: number, std: number, seed: number, offset = 0): Uint8Array {
  const random = new SeededRandom(seed);
  const halfWidth = std * Math.sqrt(3);
  const bytesPerRow = rowBytes(type, nCols);
  const out = new Uint8Array(bytesPerRow * nRows);
  const row = new Float32Array(nCols);
  for (let r = 0; r < nRows; r++) {
    for (let c = 0; c < nCols; c++) row[c] = offset + (2 * random.nextFloat() - 1) * halfWidth;
    QUANT_TRAITS[type].quantizeRowRef(row, out, r * bytesPerRow);
  }
  return out;
}

/** SentencePiece-style: <unk>, <s>, </s>, the 256 byte tokens, then distinct synthetic pieces. */
export function syntheticVocab(vocabSize: number): { tokens: string[]; scores: number[]; types: number[] } {
  if (vocabSize < 259 + 1) throw new HaloError("HALO_ERR_USAGE", `a synthetic vocabulary needs more than 259 tokens, got ${vocabSize}`);
  const tokens = ["<unk>", "<s>", "</s>"];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(6);
  }
  for (let k = 0; tokens.length < vocabSize; k++) {
    // Bijective base 26 gives every k its own letter string; every third piece starts a word.
    let n = k + 1;
    let letters = "";
    while (n > 0) {
      n--;
      letters = String.fromCharCode(97 + (n % 26)) + letters;
      n = Math.floor(n / 26);
    }
    tokens.push(k % 3 === 0 ? `\u2581${letters}` : letters);
    types.push(1);
  }
  const scores = tokens.map((_, i) => (i < 259 ? 0 : -(i - 259)));
  return { tokens, scores, types };
}

const TOKENIZER_KEYS = ["tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix"];

function copiedVocab(vocab: GgufMetadata): { entries: Array<readonly [string, GgufWriteValue]>; vocabSize: number } {
  const entries: Array<readonly [string, GgufWriteValue]> = [];
  let vocabSize = 0;
  for (const key of TOKENIZER_KEYS) {
    const type = vocab.typeOf(key);
    const value = vocab.raw(key);
    if (type === undefined || value === undefined) continue;
    if (type.type === GgufValueType.ARRAY) {
      const values = value as Array<number | bigint | boolean | string>;
      entries.push([key, { type: GgufValueType.ARRAY, elementType: type.elementType as 0, value: values }]);
      if (key === "tokenizer.ggml.tokens") vocabSize = values.length;
    } else {
      entries.push([key, { type: type.type, value } as GgufWriteValue]);
    }
  }
  if (vocabSize === 0) throw new HaloError("HALO_ERR_USAGE", "the --vocab file has no tokenizer.ggml.tokens");
  return { entries, vocabSize };
}

export interface SynthResult {
  shape: SynthShape;
  bytesWritten: number;
  nTensors: number;
}

export function writeSyntheticModel(outPath: string, options: SynthOptions): SynthResult {
  const base: SynthShape = SYNTH_SHAPES[options.shape];
  const type = TYPE_BY_NAME[options.type];
  const vocab = options.vocab === undefined ? undefined : copiedVocab(options.vocab);
  const shape: SynthShape = { ...base, nLayers: options.nLayers ?? base.nLayers, vocabSize: vocab?.vocabSize ?? base.vocabSize };
  const { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize } = shape;
  const headDim = dim / nHeads;
  const kvDim = nKvHeads * headDim;
  const residualDamping = 1 / Math.sqrt(2 * nLayers);
  const names = LLAMA_TENSOR_NAMES;
  const tensors: GgufWriteTensor[] = [];
  const matrix = (name: string, nRows: number, nCols: number, std: number, tensorType: GgmlType = type): void => {
    tensors.push({ name, typeId: GGML_TYPE_ID[tensorType], shape: [nCols, nRows], data: () => randomTensor(tensorType, nRows, nCols, std, tensorSeed(options.seed, name)) });
  };
  const norm = (name: string): void => {
    tensors.push({ name, typeId: GGML_TYPE_ID.F32, shape: [dim], data: () => randomTensor("F32", 1, dim, 0.05, tensorSeed(options.seed, name), 1) });
  };
  matrix(names.tokenEmbedding, vocabSize, dim, 1);
  for (let l = 0; l < nLayers; l++) {
    norm(names.attnNorm(l));
    matrix(names.wq(l), dim, dim, 1 / Math.sqrt(dim));
    matrix(names.wk(l), kvDim, dim, 1 / Math.sqrt(dim));
    matrix(names.wv(l), kvDim, dim, 1 / Math.sqrt(dim));
    matrix(names.wo(l), dim, dim, residualDamping / Math.sqrt(dim));
    norm(names.ffnNorm(l));
    matrix(names.ffnGate(l), hiddenDim, dim, 1 / Math.sqrt(dim));
    matrix(names.ffnUp(l), hiddenDim, dim, 1 / Math.sqrt(dim));
    matrix(names.ffnDown(l), dim, hiddenDim, (2 * residualDamping) / Math.sqrt(hiddenDim));
  }
  norm(names.outputNorm);
  matrix(names.output, vocabSize, dim, 4 / Math.sqrt(dim));

  const u32 = (value: number): GgufWriteValue => ({ type: GgufValueType.UINT32, value });
  const generated = vocab === undefined ? syntheticVocab(vocabSize) : undefined;
  const vocabEntries: Array<readonly [string, GgufWriteValue]> = vocab?.entries ?? [
    ["tokenizer.ggml.model", { type: GgufValueType.STRING, value: "llama" }],
    ["tokenizer.ggml.tokens", { type: GgufValueType.ARRAY, elementType: GgufValueType.STRING, value: generated!.tokens }],
    ["tokenizer.ggml.scores", { type: GgufValueType.ARRAY, elementType: GgufValueType.FLOAT32, value: generated!.scores }],
    ["tokenizer.ggml.token_type", { type: GgufValueType.ARRAY, elementType: GgufValueType.INT32, value: generated!.types }],
    ["tokenizer.ggml.unknown_token_id", u32(0)],
    ["tokenizer.ggml.bos_token_id", u32(1)],
    ["tokenizer.ggml.eos_token_id", u32(2)],
  ];
  const fileType = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7 }[type];
  const metadata: Array<readonly [string, GgufWriteValue]> = [
    ["general.architecture", { type: GgufValueType.STRING, value: "llama" }],
    ["general.name", { type: GgufValueType.STRING, value: `synthetic ${options.shape} ${options.type} seed ${options.seed}` }],
    ["general.file_type", u32(fileType)],
    ["llama.context_length", u32(shape.contextLength)],
    ["llama.embedding_length", u32(dim)],
    ["llama.feed_forward_length", u32(hiddenDim)],
    ["llama.block_count", u32(nLayers)],
    ["llama.attention.head_count", u32(nHeads)],
    ["llama.attention.head_count_kv", u32(nKvHeads)],
    ["llama.rope.dimension_count", u32(headDim)],
    ["llama.rope.freq_base", { type: GgufValueType.FLOAT32, value: shape.ropeFreqBase }],
    ["llama.attention.layer_norm_rms_epsilon", { type: GgufValueType.FLOAT32, value: 1e-5 }],
    ["llama.vocab_size", u32(vocabSize)],
    ...vocabEntries,
  ];
  let done = 0;
  const streamed = tensors.map((t) => ({
    ...t,
    data: () => {
      const bytes = (t.data as () => Uint8Array)();
      options.onTensor?.(++done, tensors.length, t.name);
      return bytes;
    },
  }));
  const bytesWritten = writeGguf(outPath, { metadata, tensors: streamed });
  return { shape, bytesWritten, nTensors: tensors.length };
}
