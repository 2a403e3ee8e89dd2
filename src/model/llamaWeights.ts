/**
 * The tensor-name table of the llama architecture and the loader that turns GGUF tensors into
 * shaped matrices. Every tensor's shape is checked against the hyperparameters before use.
 */
import { GgufShapeError, GgufTensorError, UnsupportedTypeError } from "../base/index.js";
import { QUANT_TRAITS, computableType, createMatrix, type Matrix } from "../kernels/index.js";
import type { ModelConfig } from "./config.js";
import type { GgufFile, GgufTensorInfo } from "./ggufReader.js";

export interface LayerWeights {
  /** (dim) */
  readonly attnNorm: Float32Array;
  /** (nHeads·headDim rows, dim cols) */
  readonly wq: Matrix;
  /** (kvDim, dim) */
  readonly wk: Matrix;
  /** (kvDim, dim) */
  readonly wv: Matrix;
  /** (dim, nHeads·headDim) */
  readonly wo: Matrix;
  /** (dim) */
  readonly ffnNorm: Float32Array;
  /** W1, the gate: (hiddenDim, dim) */
  readonly ffnGate: Matrix;
  /** W3: (hiddenDim, dim) */
  readonly ffnUp: Matrix;
  /** W2: (dim, hiddenDim) */
  readonly ffnDown: Matrix;
}

export interface LlamaWeights {
  /** (vocabSize, dim) */
  readonly tokenEmbedding: Matrix;
  readonly layers: readonly LayerWeights[];
  /** (dim) */
  readonly outputNorm: Float32Array;
  /** (vocabSize, dim); the embedding itself when the model ties them. */
  readonly output: Matrix;
}

/** GGUF tensor names, as llama.cpp's converters write them. */
export const LLAMA_TENSOR_NAMES = {
  tokenEmbedding: "token_embd.weight",
  outputNorm: "output_norm.weight",
  output: "output.weight",
  attnNorm: (l: number) => `blk.${l}.attn_norm.weight`,
  wq: (l: number) => `blk.${l}.attn_q.weight`,
  wk: (l: number) => `blk.${l}.attn_k.weight`,
  wv: (l: number) => `blk.${l}.attn_v.weight`,
  wo: (l: number) => `blk.${l}.attn_output.weight`,
  ffnNorm: (l: number) => `blk.${l}.ffn_norm.weight`,
  ffnGate: (l: number) => `blk.${l}.ffn_gate.weight`,
  ffnUp: (l: number) => `blk.${l}.ffn_up.weight`,
  ffnDown: (l: number) => `blk.${l}.ffn_down.weight`,
} as const;

function requireTensor(file: GgufFile, name: string): GgufTensorInfo {
  const info = file.tensor(name);
  if (info === undefined) throw new GgufTensorError(`missing tensor '${name}'`, name);
  return info;
}

function checkShape(info: GgufTensorInfo, expected: readonly number[]): void {
  if (info.shape.length !== expected.length || info.shape.some((ne, i) => ne !== expected[i])) {
    throw new GgufShapeError(info.name, expected, info.shape);
  }
}

/** Loads a (nRows, nCols) matrix; GGUF shape is [nCols, nRows]. */
export function loadMatrix(file: GgufFile, name: string, nRows: number, nCols: number): Matrix {
  const info = requireTensor(file, name);
  checkShape(info, [nCols, nRows]);
  return matrixFromTensor(file, info, nRows, nCols);
}

function matrixFromTensor(file: GgufFile, info: GgufTensorInfo, nRows: number, nCols: number): Matrix {
  const name = info.name;
  const type = computableType(info.typeId);
  if (type === undefined) {
    throw new UnsupportedTypeError(`tensor '${name}' has type ${info.typeName}; halo computes with ${Object.keys(QUANT_TRAITS).join(", ")}`);
  }
  return createMatrix(name, type, nRows, nCols, file.tensorBytes(info));
}

/** Loads a 1-D tensor of any computable type as floats. */
export function loadVector(file: GgufFile, name: string, length: number): Float32Array {
  const info = requireTensor(file, name);
  checkShape(info, [length]);
  const matrix = matrixFromTensor(file, info, 1, length);
  const out = new Float32Array(length);
  QUANT_TRAITS[matrix.type].dequantizeRowRef(matrix.data, 0, out, length);
  return out;
}

export function loadLlamaWeights(file: GgufFile, config: ModelConfig): LlamaWeights {
  const { dim, hiddenDim, kvDim, vocabSize, nHeads, headDim } = config;
  const qDim = nHeads * headDim;
  const names = LLAMA_TENSOR_NAMES;
  const tokenEmbedding = loadMatrix(file, names.tokenEmbedding, vocabSize, dim);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    layers.push({
      attnNorm: loadVector(file, names.attnNorm(l), dim),
      wq: loadMatrix(file, names.wq(l), qDim, dim),
      wk: loadMatrix(file, names.wk(l), kvDim, dim),
      wv: loadMatrix(file, names.wv(l), kvDim, dim),
      wo: loadMatrix(file, names.wo(l), dim, qDim),
      ffnNorm: loadVector(file, names.ffnNorm(l), dim),
      ffnGate: loadMatrix(file, names.ffnGate(l), hiddenDim, dim),
      ffnUp: loadMatrix(file, names.ffnUp(l), hiddenDim, dim),
      ffnDown: loadMatrix(file, names.ffnDown(l), dim, hiddenDim),
    });
  }
  const outputNorm = loadVector(file, names.outputNorm, dim);
  const output = file.tensor(names.output) === undefined ? tokenEmbedding : loadMatrix(file, names.output, vocabSize, dim);
  return { tokenEmbedding, layers, outputNorm, output };
}
