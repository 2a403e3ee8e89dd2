/**
 * Converts a llama2.c checkpoint (`model.bin`: seven int32 hyperparameters, then float32
 * tensors) and its tokenizer (`tokenizer.bin`) to GGUF. llama2.c's matrices are row-major
 * (out, in), which is GGUF's [in, out], and its RoPE pairs neighbours as ggml's "normal" mode
 * does, so tensors are copied unchanged.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { ConvertError, FileError, UsageError } from "../base/index.js";
import { GGML_TYPE_ID } from "../kernels/index.js";
import { GgufValueType } from "./ggufFormat.js";
import { LLAMA_TENSOR_NAMES } from "./llamaWeights.js";
import { writeGguf, type GgufWriteTensor, type GgufWriteValue } from "./ggufWriter.js";

export interface Llama2cConfig {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
}

const HEADER_BYTES = 7 * 4;
/**
 * Largest header values accepted: config.ts's limits, so that a converted file always loads. A
 * bound on n_layers also keeps a 28-byte file from making planTensors build millions of entries.
 */
const HEADER_LIMITS = { dim: 1 << 16, hidden_dim: 1 << 18, n_layers: 1024, n_heads: 1024, n_kv_heads: 1024, vocab_size: 1 << 22, seq_len: 1 << 24 };

export function readLlama2cConfig(header: Uint8Array, fileSize: number): Llama2cConfig {
  if (header.length < HEADER_BYTES || fileSize < HEADER_BYTES) throw new ConvertError(`a llama2.c checkpoint starts with a ${HEADER_BYTES}-byte header; the file has ${fileSize} bytes`);
  const view = new DataView(header.buffer, header.byteOffset, HEADER_BYTES);
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabRaw, seqLen] = Array.from({ length: 7 }, (_, i) => view.getInt32(i * 4, true)) as [number, number, number, number, number, number, number];
  const vocabSize = Math.abs(vocabRaw);
  const fields = { dim, hidden_dim: hiddenDim, n_layers: nLayers, n_heads: nHeads, n_kv_heads: nKvHeads, vocab_size: vocabSize, seq_len: seqLen };
  for (const [name, value] of Object.entries(fields)) {
    const max = HEADER_LIMITS[name as keyof typeof HEADER_LIMITS];
    if (!(value > 0 && value <= max)) throw new ConvertError(`header field ${name} = ${value} is out of range (1..${max})`);
  }
  if (dim % nHeads !== 0) throw new ConvertError(`n_heads ${nHeads} does not divide dim ${dim}`);
  // RoPE rotates pairs, and the checkpoint's freq_cis tables hold head_size / 2 columns.
  if ((dim / nHeads) % 2 !== 0) throw new ConvertError(`head size dim / n_heads = ${dim / nHeads} must be even`);
  if (nHeads % nKvHeads !== 0) throw new ConvertError(`n_kv_heads ${nKvHeads} does not divide n_heads ${nHeads}`);
  return { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen, sharedClassifier: vocabRaw > 0 };
}

interface TensorPlan {
  name: string;
  /** ggml ne */
  shape: number[];
  /** float32 elements */
  count: number;
}

/** The checkpoint's tensors in file order, with the GGUF name of each (undefined: skipped). */
function planTensors(c: Llama2cConfig): Array<TensorPlan & { gguf: boolean }> {
  const headDim = c.dim / c.nHeads;
  const kvDim = c.nKvHeads * headDim;
  const plan: Array<TensorPlan & { gguf: boolean }> = [];
  const add = (name: string, shape: number[], gguf = true): void => {
    plan.push({ name, shape, count: shape.reduce((a, b) => a * b, 1), gguf });
  };
  const perLayer = (base: (l: number) => string, shape: number[]): void => {
    for (let l = 0; l < c.nLayers; l++) add(base(l), shape);
  };
  const n = LLAMA_TENSOR_NAMES;
  add(n.tokenEmbedding, [c.dim, c.vocabSize]);
  perLayer(n.attnNorm, [c.dim]);
  perLayer(n.wq, [c.dim, c.dim]);
  perLayer(n.wk, [c.dim, kvDim]);
  perLayer(n.wv, [c.dim, kvDim]);
  perLayer(n.wo, [c.dim, c.dim]);
  perLayer(n.ffnNorm, [c.dim]);
  perLayer(n.ffnGate, [c.dim, c.hiddenDim]);
  perLayer(n.ffnDown, [c.hiddenDim, c.dim]);
  perLayer(n.ffnUp, [c.dim, c.hiddenDim]);
  add(n.outputNorm, [c.dim]);
  // The legacy format keeps precomputed RoPE tables; halo computes them.
  add("freq_cis_real", [headDim / 2, c.seqLen], false);
  add("freq_cis_imag", [headDim / 2, c.seqLen], false);
  if (!c.sharedClassifier) add(n.output, [c.dim, c.vocabSize]);
  return plan;
}

export interface Llama2cVocab {
  tokens: string[];
  scores: number[];
  types: number[];
}

/** Reads a llama2.c tokenizer.bin: int32 max_token_length, then per token float32 score, int32 length, bytes. */
export function readLlama2cTokenizer(bytes: Uint8Array, vocabSize: number): Llama2cVocab {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 4;
  if (bytes.length < 4) throw new ConvertError("tokenizer file is shorter than its 4-byte header");
  const tokens: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  const decoder = new TextDecoder("utf-8", { fatal: false });
  for (let i = 0; i < vocabSize; i++) {
    if (offset + 8 > bytes.length) throw new ConvertError(`tokenizer file ends at token ${i} of ${vocabSize}`);
    const score = view.getFloat32(offset, true);
    const length = view.getInt32(offset + 4, true);
    offset += 8;
    if (length < 0 || offset + length > bytes.length) throw new ConvertError(`token ${i}: length ${length} exceeds the ${bytes.length - offset} bytes left`);
    const raw = decoder.decode(bytes.subarray(offset, offset + length));
    offset += length;
    // llama2.c's exporter wrote BOS/EOS as "\n<s>\n" / "\n</s>\n" and SentencePiece's '▁' as ' '.
    const piece = raw === "\n<s>\n" ? "<s>" : raw === "\n</s>\n" ? "</s>" : raw.replaceAll(" ", "\u2581");
    tokens.push(piece);
    scores.push(score);
    types.push(i === 0 ? 2 : i === 1 || i === 2 ? 3 : /^<0x[0-9A-F]{2}>$/.test(piece) ? 6 : 1);
  }
  return { tokens, scores, types };
}

export interface ConvertResult {
  config: Llama2cConfig;
  bytesWritten: number;
  nTensors: number;
}

function statIfExists(path: string): { dev: number; ino: number } | undefined {
  try {
    return statSync(path);
  } catch {
    // Absent or unreadable: it cannot be the same file as an open input, and writeGguf reports its own errors.
    return undefined;
  }
}

export function convertLlama2cToGguf(modelPath: string, tokenizerPath: string, outPath: string, name = "llama2c"): ConvertResult {
  let fd: number;
  try {
    fd = openSync(modelPath, "r");
  } catch (error) {
    throw new FileError(modelPath, `cannot open: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
  try {
    const modelStat = fstatSync(fd);
    // writeGguf truncates its output first; onto the input it would read back zeros and destroy the checkpoint.
    for (const input of [modelStat, statIfExists(tokenizerPath)]) {
      const out = statIfExists(outPath);
      if (input !== undefined && out !== undefined && input.dev === out.dev && input.ino === out.ino) {
        throw new UsageError(`output ${outPath} is the same file as an input; choose another output path`);
      }
    }
    const fileSize = modelStat.size;
    const header = new Uint8Array(HEADER_BYTES);
    readSync(fd, header, 0, HEADER_BYTES, 0);
    const config = readLlama2cConfig(header, fileSize);
    const plan = planTensors(config);
    const expectedBytes = HEADER_BYTES + plan.reduce((sum, t) => sum + t.count * 4, 0);
    if (expectedBytes !== fileSize) {
      throw new ConvertError(`${modelPath}: the header implies ${expectedBytes} bytes, the file has ${fileSize} (truncated, or not a llama2.c checkpoint)`);
    }
    let tokenizerBytes: Uint8Array;
    try {
      tokenizerBytes = readFileSync(tokenizerPath);
    } catch (error) {
      throw new FileError(tokenizerPath, `cannot read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
    }
    const vocab = readLlama2cTokenizer(tokenizerBytes, config.vocabSize);
    const tensors: GgufWriteTensor[] = [];
    let offset = HEADER_BYTES;
    for (const t of plan) {
      const start = offset;
      offset += t.count * 4;
      if (!t.gguf) continue;
      tensors.push({
        name: t.name,
        typeId: GGML_TYPE_ID.F32,
        shape: t.shape,
        data: () => {
          const bytes = new Uint8Array(t.count * 4);
          readSync(fd, bytes, 0, bytes.length, start);
          return bytes;
        },
      });
    }
    const u32 = (value: number): GgufWriteValue => ({ type: GgufValueType.UINT32, value });
    const metadata: Array<readonly [string, GgufWriteValue]> = [
      ["general.architecture", { type: GgufValueType.STRING, value: "llama" }],
      ["general.name", { type: GgufValueType.STRING, value: name }],
      ["llama.context_length", u32(config.seqLen)],
      ["llama.embedding_length", u32(config.dim)],
      ["llama.feed_forward_length", u32(config.hiddenDim)],
      ["llama.block_count", u32(config.nLayers)],
      ["llama.attention.head_count", u32(config.nHeads)],
      ["llama.attention.head_count_kv", u32(config.nKvHeads)],
      ["llama.rope.dimension_count", u32(config.dim / config.nHeads)],
      ["llama.attention.layer_norm_rms_epsilon", { type: GgufValueType.FLOAT32, value: 1e-5 }],
      ["tokenizer.ggml.model", { type: GgufValueType.STRING, value: "llama" }],
      ["tokenizer.ggml.tokens", { type: GgufValueType.ARRAY, elementType: GgufValueType.STRING, value: vocab.tokens }],
      ["tokenizer.ggml.scores", { type: GgufValueType.ARRAY, elementType: GgufValueType.FLOAT32, value: vocab.scores }],
      ["tokenizer.ggml.token_type", { type: GgufValueType.ARRAY, elementType: GgufValueType.INT32, value: vocab.types }],
      ["tokenizer.ggml.unknown_token_id", u32(0)],
      ["tokenizer.ggml.bos_token_id", u32(1)],
      ["tokenizer.ggml.eos_token_id", u32(2)],
    ];
    const bytesWritten = writeGguf(outPath, { metadata, tensors });
    return { config, bytesWritten, nTensors: tensors.length };
  } finally {
    closeSync(fd);
  }
}
