/**
 * A fitted predictor and its sidecar file. The predictor maps each layer phase's normed input
 * (dim) to the predicted log-importance of each of its groups; the file is a small GGUF (the
 * project's own reader and writer) holding one weight matrix and one bias vector per layer and
 * phase, and the SHA-256 of the model it was fitted on:
 *
 *   halo.predictor.version       uint32  PREDICTOR_FORMAT_VERSION
 *   halo.predictor.model_sha256  string  the model file's SHA-256, lowercase hex
 *   halo.predictor.input         string  "normed-input" (what the maps read)
 *   halo.predictor.n_layers, .input_dim, .ffn_block_size  uint32
 *   halo.predictor.rank          uint32  0 for full maps, else R: each map is stored as two factors
 *   blk.{l}.{attn,ffn}_pred.weight  F32 (ne = [nGroups, dim]),  .bias and .mean  F32 (ne = [nGroups])
 *     or, with a rank R below the group count:  .down  F32 (ne = [R, dim])  and  .up  F32 (ne = [nGroups, R])
 * (.mean: the calibration's average log-importance per group, the static fallback)
 */
import { PredictorFileError, describeError } from "../base/index.js";
import { GGML_TYPE_ID } from "../kernels/index.js";
import { GgufValueType, openGguf, writeGguf, type GgufFile } from "../model/index.js";
import type { GroupKind } from "../partition/index.js";
import { applyLinearMap, type LinearMap } from "./ridge.js";

export const PREDICTOR_FORMAT_VERSION = 1;

export interface GroupPredictor {
  readonly modelSha256: string;
  readonly nLayers: number;
  readonly inputDim: number;
  readonly ffnBlockSize: number;
  /** (nLayers) per phase: normed input → log-importance of every group. */
  readonly maps: Readonly<Record<GroupKind, readonly LinearMap[]>>;
}

const PHASE_TENSOR: Record<GroupKind, string> = { attention: "attn_pred", ffn: "ffn_pred" };

/** Predicted log-importance of every group of (layer, phase) for one token's input at input[offset…). */
export function predictImportance(predictor: GroupPredictor, layer: number, phase: GroupKind, input: ArrayLike<number>, offset: number, out: Float64Array | Float32Array): void {
  applyLinearMap(predictor.maps[phase][layer]!, input, offset, out);
}

function f32Bytes(values: Float64Array): Uint8Array {
  const f32 = Float32Array.from(values);
  return new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
}

/** The rank of the predictor's reduced maps, 0 when every map is full (a map with fewer groups than the rank stays full). */
export function predictorRank(predictor: GroupPredictor): number {
  const ranks = [...predictor.maps.attention, ...predictor.maps.ffn].map((map) => map.factors?.rank ?? 0);
  return Math.max(0, ...ranks);
}

export function writePredictor(path: string, predictor: GroupPredictor): number {
  const tensors = [];
  for (let l = 0; l < predictor.nLayers; l++) {
    for (const phase of ["attention", "ffn"] as const) {
      const map = predictor.maps[phase][l]!;
      const name = `blk.${l}.${PHASE_TENSOR[phase]}`;
      if (map.factors === undefined) tensors.push({ name: `${name}.weight`, typeId: GGML_TYPE_ID.F32, shape: [map.nOutputs, map.nInputs], data: f32Bytes(map.weights) });
      else {
        tensors.push({ name: `${name}.down`, typeId: GGML_TYPE_ID.F32, shape: [map.factors.rank, map.nInputs], data: f32Bytes(map.factors.down) });
        tensors.push({ name: `${name}.up`, typeId: GGML_TYPE_ID.F32, shape: [map.nOutputs, map.factors.rank], data: f32Bytes(map.factors.up) });
      }
      tensors.push({ name: `${name}.bias`, typeId: GGML_TYPE_ID.F32, shape: [map.nOutputs], data: f32Bytes(map.bias) });
      tensors.push({ name: `${name}.mean`, typeId: GGML_TYPE_ID.F32, shape: [map.nOutputs], data: f32Bytes(map.mean) });
    }
  }
  return writeGguf(path, {
    metadata: [
      ["general.architecture", { type: GgufValueType.STRING, value: "halo-predictor" }],
      ["halo.predictor.version", { type: GgufValueType.UINT32, value: PREDICTOR_FORMAT_VERSION }],
      ["halo.predictor.model_sha256", { type: GgufValueType.STRING, value: predictor.modelSha256 }],
      ["halo.predictor.input", { type: GgufValueType.STRING, value: "normed-input" }],
      ["halo.predictor.n_layers", { type: GgufValueType.UINT32, value: predictor.nLayers }],
      ["halo.predictor.input_dim", { type: GgufValueType.UINT32, value: predictor.inputDim }],
      ["halo.predictor.ffn_block_size", { type: GgufValueType.UINT32, value: predictor.ffnBlockSize }],
      ["halo.predictor.rank", { type: GgufValueType.UINT32, value: predictorRank(predictor) }],
    ],
    tensors,
  });
}

/** (d, g) = down (d, r) · up (r, g) */
function productOf(down: Float64Array, up: Float64Array, d: number, r: number, g: number): Float64Array {
  const out = new Float64Array(d * g);
  for (let i = 0; i < d; i++) {
    for (let k = 0; k < r; k++) {
      const dik = down[i * r + k]!;
      for (let c = 0; c < g; c++) out[i * g + c] = out[i * g + c]! + dik * up[k * g + c]!;
    }
  }
  return out;
}

/**
 * Reads a predictor file and checks it was fitted for the model whose SHA-256 is
 * `expectedModelSha256`. Throws PredictorFileError for anything wrong, naming both hashes on a
 * mismatch.
 */
export async function readPredictor(path: string, expectedModelSha256: string): Promise<GroupPredictor> {
  let file: GgufFile;
  try {
    file = await openGguf(path);
  } catch (error) {
    throw new PredictorFileError(path, describeError(error), { cause: error });
  }
  try {
    const meta = file.metadata;
    const fail = (message: string): never => {
      throw new PredictorFileError(path, message);
    };
    const version = meta.integer("halo.predictor.version");
    if (version !== PREDICTOR_FORMAT_VERSION) fail(`format version ${version ?? "missing"}, this build reads ${PREDICTOR_FORMAT_VERSION}`);
    const modelSha256 = meta.string("halo.predictor.model_sha256") ?? "";
    if (modelSha256 !== expectedModelSha256) fail(`fitted for the model ${modelSha256 || "(missing)"}, not this one (${expectedModelSha256}); calibrate again`);
    if (meta.string("halo.predictor.input") !== "normed-input") fail(`reads '${meta.string("halo.predictor.input") ?? "(missing)"}', this build predicts from 'normed-input'`);
    const nLayers = meta.integer("halo.predictor.n_layers") ?? 0;
    const inputDim = meta.integer("halo.predictor.input_dim") ?? 0;
    const ffnBlockSize = meta.integer("halo.predictor.ffn_block_size") ?? 0;
    if (!(nLayers >= 1 && nLayers <= 4096 && inputDim >= 1 && inputDim <= 1 << 20 && ffnBlockSize >= 1)) fail(`bad sizes: ${nLayers} layers, input ${inputDim}, FFN block ${ffnBlockSize}`);
    const readF32 = (name: string, shape: readonly number[]): Float64Array => {
      const info = file.tensor(name) ?? fail(`tensor ${name} is missing`);
      if (info.typeId !== GGML_TYPE_ID.F32 || info.shape.length !== shape.length || info.shape.some((n, i) => n !== shape[i])) {
        fail(`tensor ${name} is ${info.typeName} [${info.shape.join(", ")}], expected F32 [${shape.join(", ")}]`);
      }
      const bytes = file.tensorBytes(info);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const out = new Float64Array(info.nElements);
      for (let i = 0; i < out.length; i++) {
        out[i] = view.getFloat32(4 * i, true);
        if (!Number.isFinite(out[i])) fail(`tensor ${name} holds a non-finite value at ${i}`);
      }
      return out;
    };
    const rank = meta.integer("halo.predictor.rank") ?? 0;
    if (!(rank >= 0 && rank <= inputDim)) fail(`bad rank ${rank} for input ${inputDim}`);
    const maps: Record<GroupKind, LinearMap[]> = { attention: [], ffn: [] };
    for (let l = 0; l < nLayers; l++) {
      for (const phase of ["attention", "ffn"] as const) {
        const name = `blk.${l}.${PHASE_TENSOR[phase]}`;
        const info = file.tensor(`${name}.mean`) ?? fail(`tensor ${name}.mean is missing`);
        const nOutputs = info.shape[0] ?? 0;
        if (!(nOutputs >= 1 && nOutputs <= 1 << 20)) fail(`tensor ${name}.mean has ${nOutputs} groups`);
        const common = { nInputs: inputDim, nOutputs, bias: readF32(`${name}.bias`, [nOutputs]), mean: readF32(`${name}.mean`, [nOutputs]) };
        // A layer with fewer groups than the rank keeps its full map, so each map says which it is.
        if (file.tensor(`${name}.down`) === undefined) {
          maps[phase].push({ ...common, weights: readF32(`${name}.weight`, [nOutputs, inputDim]) });
          continue;
        }
        if (rank === 0) fail(`tensor ${name}.down in a full-rank predictor`);
        const down = readF32(`${name}.down`, [rank, inputDim]);
        const up = readF32(`${name}.up`, [nOutputs, rank]);
        maps[phase].push({ ...common, weights: productOf(down, up, inputDim, rank, nOutputs), factors: { rank, down, up } });
      }
    }
    return { modelSha256, nLayers, inputDim, ffnBlockSize, maps };
  } finally {
    file.close();
  }
}
