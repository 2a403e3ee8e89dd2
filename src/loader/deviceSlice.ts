/**
 * A device's slice of a model: for each layer, compact tensors holding only the rows of W_q,
 * W_k, W_v, W_1, W_3 and the columns of W_o, W_2 of the device's neuron groups, read from the
 * model file with positioned reads of exactly those bytes. A worker's resident weights are its
 * share, never the whole model.
 */
import { GgufShapeError, GgufTensorError, UnsupportedTypeError } from "../base/index.js";
import { QUANT_TRAITS, computableType, createMatrix, rowBytes, type GgmlType, type Matrix } from "../kernels/index.js";
import type { GgufFile, GgufTensorInfo, ModelConfig } from "../model/index.js";
import type { GroupLayout } from "../partition/index.js";
import {
  SLICE_ROLES, checkSliceAlignment, compactShape, layerSlicePlans, localLayout, normalizeDeviceGroups, sliceByteSpans,
  type DeviceGroups, type SliceRole, type TensorSlicePlan,
} from "./sliceGeometry.js";

/** One layer's compact tensors. A kind the device holds no groups of has 0-row or 0-column matrices. */
export interface SliceLayerWeights {
  /** (localQueryHeads·headDim, dim) */
  readonly wq: Matrix;
  /** (localKvHeads·headDim, dim) */
  readonly wk: Matrix;
  /** (localKvHeads·headDim, dim) */
  readonly wv: Matrix;
  /** (dim, localQueryHeads·headDim) */
  readonly wo: Matrix;
  /** W1: (localNeurons, dim) */
  readonly ffnGate: Matrix;
  /** W3: (localNeurons, dim) */
  readonly ffnUp: Matrix;
  /** W2: (dim, localNeurons) */
  readonly ffnDown: Matrix;
}

export interface DeviceSlice {
  /** The whole model's hyperparameters (the compute buffers keep their full size). */
  readonly config: ModelConfig;
  /** The whole model's group layout. */
  readonly layout: GroupLayout;
  /** (nLayers) the device's global groups per layer, normalized. */
  readonly groups: readonly DeviceGroups[];
  /** (nLayers) the compact tensors' layouts: group counts and neurons held per layer. */
  readonly localLayouts: readonly GroupLayout[];
  /** (nLayers) */
  readonly layers: readonly SliceLayerWeights[];
  /** Bytes of all compact tensors. */
  readonly sizeBytes: number;
}

/** Reads `length` bytes at byte `start` of a tensor's data; GgufFile.readTensorBytes by default. Injected to count reads in tests. */
export type TensorByteReader = (tensor: GgufTensorInfo, start: number, length: number) => Uint8Array;

export interface SliceReadOptions {
  /** Defaults to the file's own positioned reads. */
  read?: TensorByteReader;
  /** Largest single read; longer spans are read in pieces so no temporary is large. Defaults to 8 MiB. */
  maxReadBytes?: number;
}

const DEFAULT_MAX_READ_BYTES = 8 << 20;

/** The tensor a plan slices, checked to have the whole model's shape, a computable type and block-aligned column cuts. */
export function resolveSlicedTensor(file: GgufFile, plan: TensorSlicePlan): { info: GgufTensorInfo; type: GgmlType } {
  const info = file.tensor(plan.name);
  if (info === undefined) throw new GgufTensorError(`missing tensor '${plan.name}'`, plan.name);
  const expected = [plan.nCols, plan.nRows];
  if (info.shape.length !== 2 || info.shape[0] !== expected[0] || info.shape[1] !== expected[1]) throw new GgufShapeError(plan.name, expected, info.shape);
  const type = computableType(info.typeId);
  if (type === undefined) throw new UnsupportedTypeError(`tensor '${plan.name}' has type ${info.typeName}; halo computes with ${Object.keys(QUANT_TRAITS).join(", ")}`);
  checkSliceAlignment(plan, type);
  return { info, type };
}

/** The compact bytes of one tensor plan, (compact rows, compact rowBytes), read span by span. */
export function readTensorSlice(file: GgufFile, plan: TensorSlicePlan, options: SliceReadOptions = {}): Matrix {
  const { info, type } = resolveSlicedTensor(file, plan);
  if (plan.nKept === 0) return emptySliceMatrix(plan);
  const read = options.read ?? ((tensor, start, length) => file.readTensorBytes(tensor, start, length));
  const maxRead = options.maxReadBytes ?? DEFAULT_MAX_READ_BYTES;
  const { nRows, nCols } = compactShape(plan);
  const out = new Uint8Array(nRows * rowBytes(type, nCols));
  let filled = 0;
  for (const span of sliceByteSpans(plan, type)) {
    for (let done = 0; done < span.length; ) {
      const n = Math.min(maxRead, span.length - done);
      const bytes = read(info, span.start + done, n);
      if (bytes.length !== n) throw new GgufTensorError(`short read of tensor '${plan.name}': ${bytes.length} of ${n} bytes`, plan.name);
      out.set(bytes, filled);
      filled += n;
      done += n;
    }
  }
  if (filled !== out.length) throw new GgufTensorError(`tensor '${plan.name}': read ${filled} bytes for a ${out.length}-byte slice`, plan.name);
  return createMatrix(plan.name, type, nRows, nCols, out);
}

/**
 * Reads a device's slice from the model file. Every tensor is checked (shape, type, column
 * alignment) before the first byte of weights is read, so a bad placement fails fast.
 */
export function readDeviceSlice(file: GgufFile, config: ModelConfig, layout: GroupLayout, groups: readonly DeviceGroups[], options: SliceReadOptions = {}): DeviceSlice {
  const steps = sliceSteps(file, config, layout, groups, options);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/**
 * The same, yielding to the event loop after every tensor: the reads are synchronous, and a
 * worker that blocks its loop for seconds misses heartbeats and is taken for lost.
 */
export async function readDeviceSliceAsync(file: GgufFile, config: ModelConfig, layout: GroupLayout, groups: readonly DeviceGroups[], options: SliceReadOptions = {}): Promise<DeviceSlice> {
  const steps = sliceSteps(file, config, layout, groups, options);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Reads the slice one tensor per step. */
function* sliceSteps(file: GgufFile, config: ModelConfig, layout: GroupLayout, groups: readonly DeviceGroups[], options: SliceReadOptions): Generator<void, DeviceSlice> {
  const normalized = normalizeDeviceGroups(groups, layout, config.nLayers);
  const plans = normalized.map((g, l) => layerSlicePlans(config, layout, l, g));
  for (const plan of plans.flat()) resolveSlicedTensor(file, plan);
  const layers: SliceLayerWeights[] = [];
  for (const layerPlans of plans) {
    const matrices: Matrix[] = [];
    for (const plan of layerPlans) {
      matrices.push(readTensorSlice(file, plan, options));
      yield;
    }
    layers.push(layerFromMatrices(matrices));
  }
  return assembleSlice(config, layout, normalized, layers);
}

/** The layer record from the seven matrices in SLICE_ROLES order. */
export function layerFromMatrices(matrices: readonly Matrix[]): SliceLayerWeights {
  const byRole = Object.fromEntries(SLICE_ROLES.map((role, i) => [role, matrices[i]!])) as Record<SliceRole, Matrix>;
  return byRole;
}

/** A DeviceSlice from compact layers already checked against `groups` (normalized). */
export function assembleSlice(config: ModelConfig, layout: GroupLayout, groups: readonly DeviceGroups[], layers: readonly SliceLayerWeights[]): DeviceSlice {
  let sizeBytes = 0;
  for (const layer of layers) for (const role of SLICE_ROLES) sizeBytes += layer[role].data.byteLength;
  return { config, layout, groups, localLayouts: groups.map((g) => localLayout(layout, g)), layers, sizeBytes };
}

/**
 * An empty compact tensor for a kind the device holds nothing of. It is never multiplied, and
 * its type is always F32 so that a slice read from the model and one loaded from a shard (which
 * has no tensor to take a type from) are the same.
 */
export function emptySliceMatrix(plan: TensorSlicePlan): Matrix {
  const { nRows, nCols } = compactShape(plan);
  return createMatrix(plan.name, "F32", nRows, nCols, new Uint8Array(0));
}
