/**
 * Which rows and columns of each layer tensor a device needs for its neuron groups, and where
 * those lie in the file's bytes. Pure functions: no I/O.
 *
 * A device's groups in a layer, renumbered 0, 1, … in ascending order, index its compact
 * tensors: local attention group i is its i-th KV head, whose query heads are rows
 * [i·nRep·headDim, (i+1)·nRep·headDim) of the compact W_q and the same columns of the compact
 * W_o; local FFN block b is its b-th neuron block. Only the global last FFN block can be short,
 * and it stays last locally, so `ffnNeuronRange` on the local layout (hiddenDim = neurons held)
 * clamps it as it does globally. The group computations therefore run unchanged on the compact
 * tensors with the single local range [0, nLocalGroups).
 */
import { SliceAlignmentError, UsageError } from "../base/index.js";
import { QUANT_TRAITS, type GgmlType } from "../kernels/index.js";
import { LLAMA_TENSOR_NAMES, type ModelConfig } from "../model/index.js";
import { ffnNeuronRange, normalizeRanges, type GroupLayout, type GroupRange } from "../partition/index.js";

/** The groups one device holds in one layer, as global [start, end) ranges. */
export interface DeviceGroups {
  readonly attention: readonly GroupRange[];
  readonly ffn: readonly GroupRange[];
}

/** The layer tensors a device slices; embeddings, norms and the classifier stay on the coordinator. */
export type SliceRole = "wq" | "wk" | "wv" | "wo" | "ffnGate" | "ffnUp" | "ffnDown";

export const SLICE_ROLES: readonly SliceRole[] = ["wq", "wk", "wv", "wo", "ffnGate", "ffnUp", "ffnDown"];

/** One tensor's part for one device. */
export interface TensorSlicePlan {
  readonly role: SliceRole;
  readonly layerIndex: number;
  /** The GGUF tensor name (the same in the model and in a shard). */
  readonly name: string;
  /** The dimension the groups select: rows of W_q, W_k, W_v, W_1, W_3; columns of W_o, W_2. */
  readonly axis: "rows" | "columns";
  /** Rows of the whole tensor. */
  readonly nRows: number;
  /** Columns of the whole tensor (ggml ne[0]). */
  readonly nCols: number;
  /** Element ranges kept along `axis`, ascending and disjoint. */
  readonly ranges: readonly GroupRange[];
  /** Rows or columns kept: the compact tensor is (nKept, nCols) for rows, (nRows, nKept) for columns. */
  readonly nKept: number;
}

/** A byte range of a tensor's data. */
export interface ByteSpan {
  readonly start: number;
  readonly length: number;
}

/** Checks and normalizes a device's groups for every layer (sorted, merged, inside the layout). */
export function normalizeDeviceGroups(groups: readonly DeviceGroups[], layout: GroupLayout, nLayers: number): DeviceGroups[] {
  if (groups.length !== nLayers) throw new UsageError(`device groups for ${groups.length} layers, the model has ${nLayers}`);
  return groups.map((layer) => ({
    attention: normalizeRanges(layer.attention, layout.nAttentionGroups),
    ffn: normalizeRanges(layer.ffn, layout.nFfnGroups),
  }));
}

function countGroups(ranges: readonly GroupRange[]): number {
  return ranges.reduce((n, r) => n + r.end - r.start, 0);
}

/** The layout of a device's compact tensors in one layer (its groups renumbered from 0). */
export function localLayout(layout: GroupLayout, groups: DeviceGroups): GroupLayout {
  const neurons = groups.ffn.reduce((n, r) => {
    const span = ffnNeuronRange(layout, r);
    return n + span.end - span.start;
  }, 0);
  return { ...layout, nAttentionGroups: countGroups(groups.attention), nFfnGroups: countGroups(groups.ffn), hiddenDim: neurons };
}

/** The local ranges the group computations run on: [0, n) for each kind the device holds. */
export function localRanges(groups: DeviceGroups): { attention: GroupRange[]; ffn: GroupRange[] } {
  const one = (n: number): GroupRange[] => (n === 0 ? [] : [{ start: 0, end: n }]);
  return { attention: one(countGroups(groups.attention)), ffn: one(countGroups(groups.ffn)) };
}

function scaled(ranges: readonly GroupRange[], factor: number): GroupRange[] {
  return ranges.map((r) => ({ start: r.start * factor, end: r.end * factor }));
}

/** The seven tensor plans of `layerIndex` for a device holding `groups` (normalized) there. */
export function layerSlicePlans(config: ModelConfig, layout: GroupLayout, layerIndex: number, groups: DeviceGroups): TensorSlicePlan[] {
  const { dim, hiddenDim, kvDim, headDim } = config;
  const qDim = config.nHeads * headDim;
  const qRows = scaled(groups.attention, layout.queryHeadsPerGroup * headDim);
  const kvRows = scaled(groups.attention, headDim);
  const neurons = groups.ffn.map((r) => ffnNeuronRange(layout, r));
  const plan = (role: SliceRole, axis: "rows" | "columns", nRows: number, nCols: number, ranges: GroupRange[]): TensorSlicePlan => ({
    role,
    layerIndex,
    name: LLAMA_TENSOR_NAMES[role](layerIndex),
    axis,
    nRows,
    nCols,
    ranges,
    nKept: countGroups(ranges),
  });
  return [
    plan("wq", "rows", qDim, dim, qRows),
    plan("wk", "rows", kvDim, dim, kvRows),
    plan("wv", "rows", kvDim, dim, kvRows),
    plan("wo", "columns", dim, qDim, qRows),
    plan("ffnGate", "rows", hiddenDim, dim, neurons),
    plan("ffnUp", "rows", hiddenDim, dim, neurons),
    plan("ffnDown", "columns", dim, hiddenDim, neurons),
  ];
}

/** (rows, cols) of the compact tensor. */
export function compactShape(plan: TensorSlicePlan): { nRows: number; nCols: number } {
  return plan.axis === "rows" ? { nRows: plan.nKept, nCols: plan.nCols } : { nRows: plan.nRows, nCols: plan.nKept };
}

/**
 * Throws a SliceAlignmentError unless every kept column range of a column slice starts and ends
 * on a quantization block: a block shares one scale, so part of it cannot be read alone.
 */
export function checkSliceAlignment(plan: TensorSlicePlan, type: GgmlType): void {
  const { blockSize } = QUANT_TRAITS[type];
  if (plan.axis !== "columns" || blockSize === 1) return;
  for (const r of plan.ranges) {
    if (r.start % blockSize !== 0 || r.end % blockSize !== 0) {
      const hint = plan.role === "wo"
        ? `a query head bundle is ${r.end - r.start} columns here; ${type} needs head dimensions that are multiples of ${blockSize}`
        : `use an FFN block size that is a multiple of ${blockSize}`;
      throw new SliceAlignmentError(plan.name, blockSize, r.start, r.end, hint);
    }
  }
}

/**
 * The byte ranges of the tensor's data that hold the kept part, in the order of the compact
 * tensor's bytes (row-major), adjacent ranges merged. Call checkSliceAlignment first.
 */
export function sliceByteSpans(plan: TensorSlicePlan, type: GgmlType): ByteSpan[] {
  const { blockSize, blockBytes } = QUANT_TRAITS[type];
  const bytesOf = (nElements: number): number => (nElements / blockSize) * blockBytes;
  const rowBytes = bytesOf(plan.nCols);
  const spans: ByteSpan[] = [];
  const push = (start: number, length: number): void => {
    if (length === 0) return;
    const last = spans[spans.length - 1];
    if (last !== undefined && last.start + last.length === start) spans[spans.length - 1] = { start: last.start, length: last.length + length };
    else spans.push({ start, length });
  };
  if (plan.axis === "rows") {
    for (const r of plan.ranges) push(r.start * rowBytes, (r.end - r.start) * rowBytes);
  } else {
    for (let row = 0; row < plan.nRows; row++) {
      for (const r of plan.ranges) push(row * rowBytes + bytesOf(r.start), bytesOf(r.end - r.start));
    }
  }
  return spans;
}
