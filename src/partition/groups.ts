/**
 * Neuron groups: the unit that halo places on devices, predicts importance for, and drops.
 * - Attention group g is a KV-head bundle: KV head g with its query heads
 *   [g·nRep, (g+1)·nRep), so GQA works and the KV cache stays with its group.
 * - FFN group b is a contiguous block of neurons [b·ffnBlockSize, min((b+1)·ffnBlockSize, hiddenDim)).
 * A layer's output is the sum of its groups' contributions, which is what makes a layer
 * divisible across devices as additive partial sums.
 */
import { HaloError } from "../base/index.js";

export type GroupKind = "attention" | "ffn";

export const GROUP_KINDS: readonly GroupKind[] = ["attention", "ffn"];

/** A half-open range [start, end) of group indices of one kind. */
export interface GroupRange {
  readonly start: number;
  readonly end: number;
}

export interface GroupShape {
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  readonly hiddenDim: number;
}

export interface GroupLayout {
  readonly nAttentionGroups: number;
  readonly nFfnGroups: number;
  /** Query heads per attention group (nHeads / nKvHeads). */
  readonly queryHeadsPerGroup: number;
  readonly headDim: number;
  readonly ffnBlockSize: number;
  readonly hiddenDim: number;
}

/**
 * The default FFN block: 32 neurons, the Q8_0/Q4_0 block size, which is the finest split
 * that keeps every block's W2 columns whole quantization blocks.
 */
export const DEFAULT_FFN_BLOCK_SIZE = 32;

export function createGroupLayout(shape: GroupShape, ffnBlockSize = DEFAULT_FFN_BLOCK_SIZE): GroupLayout {
  if (!Number.isInteger(ffnBlockSize) || ffnBlockSize <= 0) throw new HaloError("HALO_ERR_USAGE", `FFN block size must be a positive integer, got ${ffnBlockSize}`);
  return {
    nAttentionGroups: shape.nKvHeads,
    nFfnGroups: Math.ceil(shape.hiddenDim / ffnBlockSize),
    queryHeadsPerGroup: shape.nHeads / shape.nKvHeads,
    headDim: shape.headDim,
    ffnBlockSize,
    hiddenDim: shape.hiddenDim,
  };
}

export function groupCount(layout: GroupLayout, kind: GroupKind): number {
  return kind === "attention" ? layout.nAttentionGroups : layout.nFfnGroups;
}

/** All groups of a kind, as one range. */
export function allGroups(layout: GroupLayout, kind: GroupKind): GroupRange[] {
  return [{ start: 0, end: groupCount(layout, kind) }];
}

/** The FFN neurons [start, end) of blocks [range.start, range.end). */
export function ffnNeuronRange(layout: GroupLayout, range: GroupRange): GroupRange {
  return { start: range.start * layout.ffnBlockSize, end: Math.min(range.end * layout.ffnBlockSize, layout.hiddenDim) };
}

/** Sorts, merges adjacent and checks a list of group ranges (so contiguous groups run as one matvec). */
export function normalizeRanges(ranges: readonly GroupRange[], nGroups: number): GroupRange[] {
  const sorted = ranges.filter((r) => r.end > r.start).sort((a, b) => a.start - b.start);
  const merged: GroupRange[] = [];
  for (const r of sorted) {
    if (!(Number.isInteger(r.start) && Number.isInteger(r.end) && r.start >= 0 && r.end <= nGroups)) {
      throw new HaloError("HALO_ERR_USAGE", `group range [${r.start}, ${r.end}) outside [0, ${nGroups})`);
    }
    const last = merged[merged.length - 1];
    if (last !== undefined && r.start < last.end) throw new HaloError("HALO_ERR_USAGE", `group ranges overlap at group ${r.start}`);
    if (last !== undefined && r.start === last.end) merged[merged.length - 1] = { start: last.start, end: r.end };
    else merged.push({ start: r.start, end: r.end });
  }
  return merged;
}

/** The ranges covering a set of group indices. */
export function rangesFromIndices(indices: Iterable<number>, nGroups: number): GroupRange[] {
  return normalizeRanges([...indices].map((i) => ({ start: i, end: i + 1 })), nGroups);
}
