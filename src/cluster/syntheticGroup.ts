/**
 * Neuron groups of a model's shape in chosen tensor types, built to be timed: a one-layer model
 * whose attention holds just enough KV-head bundles for wo's columns to be whole quantization
 * blocks (one, for any real model's own types) and whose FFN is one block. They run through the
 * engine's own group functions, so what is timed is what a device computes. The weights are
 * seeded values: these kernels take the same time whatever the values, so a real model's group
 * and this one cost the same, and a device without the model file can be measured too.
 */
import { HaloError, SeededRandom } from "../base/index.js";
import { QUANT_TRAITS, computableType, createMatrix, rowBytes, type GgmlType, type Matrix, type MatrixKernels } from "../kernels/index.js";
import { ForwardState, KvCache, attentionContribution, ffnContribution, type GroupComputeContext } from "../engine/index.js";
import { LLAMA_TENSOR_NAMES, type GgufFile, type LayerWeights, type ModelConfig } from "../model/index.js";
import { createGroupLayout } from "../partition/index.js";

export const LAYER_MATRICES = ["wq", "wk", "wv", "wo", "ffnGate", "ffnUp", "ffnDown"] as const;
export type LayerMatrix = (typeof LAYER_MATRICES)[number];
/** The tensor type of each matrix of a layer. */
export type LayerTensorTypes = Readonly<Record<LayerMatrix, GgmlType>>;

/** The matrices whose columns are the residual stream (dim): they multiply the normed input. */
const INPUT_MATRICES = ["wq", "wk", "wv", "ffnGate", "ffnUp"] as const satisfies readonly LayerMatrix[];

export function uniformTypes(type: GgmlType): LayerTensorTypes {
  return { wq: type, wk: type, wv: type, wo: type, ffnGate: type, ffnUp: type, ffnDown: type };
}

/** "Q4_0" for a layer of one type; the distinct types joined by "+" for a layer that mixes them. */
export function tensorTypesLabel(types: LayerTensorTypes): string {
  return [...new Set(LAYER_MATRICES.map((m) => types[m]))].sort().join("+");
}

export function tensorTypesOfLayer(layer: Readonly<Record<LayerMatrix, Matrix>>): LayerTensorTypes {
  return { wq: layer.wq.type, wk: layer.wk.type, wv: layer.wv.type, wo: layer.wo.type, ffnGate: layer.ffnGate.type, ffnUp: layer.ffnUp.type, ffnDown: layer.ffnDown.type };
}

/** Layer 0's types as the file's tensor table gives them; no weights are read. */
export function tensorTypesOfFile(file: GgufFile): LayerTensorTypes {
  const typeOf = (matrix: LayerMatrix): GgmlType => {
    const name = LLAMA_TENSOR_NAMES[matrix](0);
    const info = file.tensor(name);
    if (info === undefined) throw new HaloError("HALO_ERR_GGUF_TENSOR", `${file.path}: missing tensor '${name}'`);
    const type = computableType(info.typeId);
    if (type === undefined) throw new HaloError("HALO_ERR_UNSUPPORTED_TYPE", `${file.path}: tensor '${name}' has type ${info.typeName}; halo computes with ${Object.keys(QUANT_TRAITS).join(", ")}`);
    return type;
  };
  return { wq: typeOf("wq"), wk: typeOf("wk"), wv: typeOf("wv"), wo: typeOf("wo"), ffnGate: typeOf("ffnGate"), ffnUp: typeOf("ffnUp"), ffnDown: typeOf("ffnDown") };
}

/** Groups ready to run one decode token through, on the kernels they were bound to. */
export interface BoundGroups {
  attention(): void;
  ffn(): void;
}

export interface SyntheticGroups {
  /** Attention groups one attention() run covers: divide its time by this for one group's. */
  readonly nAttentionGroups: number;
  bind(kernels: MatrixKernels): BoundGroups;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** A (nRows, nCols) matrix of seeded values of std 1/√nCols, encoded as `type`. */
function seededMatrix(name: string, type: GgmlType, nRows: number, nCols: number, random: SeededRandom): Matrix {
  const bytesPerRow = rowBytes(type, nCols);
  const data = new Uint8Array(bytesPerRow * nRows);
  const row = new Float32Array(nCols);
  const halfWidth = Math.sqrt(3 / nCols);
  for (let r = 0; r < nRows; r++) {
    for (let c = 0; c < nCols; c++) row[c] = (2 * random.nextFloat() - 1) * halfWidth;
    QUANT_TRAITS[type].quantizeRowRef(row, data, r * bytesPerRow);
  }
  return createMatrix(name, type, nRows, nCols, data);
}

/**
 * One FFN block and the fewest attention groups whose wo columns are whole blocks, for `config`
 * in `types`; undefined when the shape cannot be split in these types (dim or the FFN block not
 * a whole number of blocks, or more groups needed than the model has): no model of this shape
 * and these types could be placed group by group, so there is nothing to time.
 */
export function createSyntheticGroups(config: ModelConfig, ffnBlockSize: number, types: LayerTensorTypes, seed = 1): SyntheticGroups | undefined {
  const blockOf = (matrix: LayerMatrix): number => QUANT_TRAITS[types[matrix]].blockSize;
  if (INPUT_MATRICES.some((m) => config.dim % blockOf(m) !== 0) || ffnBlockSize % blockOf("ffnDown") !== 0) return undefined;
  const queryHeadsPerGroup = config.nHeads / config.nKvHeads;
  const qColsPerGroup = queryHeadsPerGroup * config.headDim;
  const nGroups = blockOf("wo") / gcd(qColsPerGroup, blockOf("wo"));
  if (nGroups > config.nKvHeads) return undefined;
  // The model cut down to the timed groups: one layer, one position, no vocabulary to speak of.
  const shape: ModelConfig = {
    ...config, nLayers: 1, nHeads: nGroups * queryHeadsPerGroup, nKvHeads: nGroups, kvDim: nGroups * config.headDim, hiddenDim: ffnBlockSize, vocabSize: 1, contextLength: 1,
  };
  const layout = createGroupLayout(shape, ffnBlockSize);
  const random = new SeededRandom(seed);
  const qDim = shape.nHeads * shape.headDim;
  const layer: LayerWeights = {
    attnNorm: new Float32Array(shape.dim).fill(1),
    wq: seededMatrix("wq", types.wq, qDim, shape.dim, random),
    wk: seededMatrix("wk", types.wk, shape.kvDim, shape.dim, random),
    wv: seededMatrix("wv", types.wv, shape.kvDim, shape.dim, random),
    wo: seededMatrix("wo", types.wo, shape.dim, qDim, random),
    ffnNorm: new Float32Array(shape.dim).fill(1),
    ffnGate: seededMatrix("ffnGate", types.ffnGate, ffnBlockSize, shape.dim, random),
    ffnUp: seededMatrix("ffnUp", types.ffnUp, ffnBlockSize, shape.dim, random),
    ffnDown: seededMatrix("ffnDown", types.ffnDown, shape.dim, ffnBlockSize, random),
  };
  const batch = { layerIndex: 0, positionStart: 0, nTokens: 1 };
  const attentionGroups = [{ start: 0, end: nGroups }];
  const ffnGroups = [{ start: 0, end: 1 }];
  return {
    nAttentionGroups: nGroups,
    bind(kernels) {
      const state = new ForwardState(shape, 1, 1);
      for (let i = 0; i < shape.dim; i++) state.normed[i] = 2 * random.nextFloat() - 1;
      const ctx: GroupComputeContext = { config: shape, layout, kernels, state, kvCache: new KvCache(1, nGroups, 1, shape.headDim) };
      // Each run writes position 0 again: the cache never grows, so every run costs the same.
      return {
        attention: () => attentionContribution(ctx, layer, batch, attentionGroups),
        ffn: () => ffnContribution(ctx, layer, batch, ffnGroups),
      };
    },
  };
}
