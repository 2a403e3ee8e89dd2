/**
 * What a worker computes: its groups' contribution to a layer's phase, with the engine's own
 * group functions, its own buffers and a KV cache holding only its attention groups. A position
 * whose input never arrived is never written, so it stays masked in later attention.
 *
 * It runs from either the whole model's weights (any placement, changeable) or a DeviceSlice
 * (compact tensors of one fixed set of groups). Callers speak global group ranges either way;
 * with a slice, each layer's groups run as the local range [0, n) over the compact tensors,
 * with a per-layer layout, and the KV cache is indexed by local group.
 */
import { HaloError } from "../base/index.js";
import { ForwardState, KvCache, attentionContribution, ffnContribution, type GroupComputeContext } from "../engine/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import { localRanges, type DeviceGroups, type DeviceSlice } from "../loader/index.js";
import type { LayerWeights, LlamaWeights, ModelConfig } from "../model/index.js";
import { groupsOfDevice, rangesFromIndices, type GroupKind, type GroupLayout, type GroupRange, type Placement } from "../partition/index.js";

/** The group functions read no norms; a slice has none, and these stand in for the unused fields. */
const NO_NORM = new Float32Array(0);

export class GroupWorker {
  private readonly state: ForwardState;
  private readonly kvCache: KvCache;
  /** [layer] the context the group functions run with (per layer for a slice: its local layout). */
  private readonly contexts: readonly GroupComputeContext[];
  /** [layer] the weights they multiply. */
  private readonly layerWeights: readonly LayerWeights[];
  /** [layer][phase] → this device's groups, global */
  private groups: Array<Record<GroupKind, GroupRange[]>> = [];
  /** [layer][phase] → the ranges passed to the group functions (local for a slice) */
  private computeRanges: Array<Record<GroupKind, GroupRange[]>> = [];
  /** Set when running from a slice: its groups can't change. */
  private readonly slice: DeviceSlice | undefined;

  /**
   * `weights` is the whole model (then `setPlacement` chooses the groups) or a DeviceSlice of
   * the same model and layout (its groups are taken at once; see `fromSlice`).
   */
  constructor(
    readonly config: ModelConfig,
    weights: LlamaWeights | DeviceSlice,
    kernels: MatrixKernels,
    readonly layout: GroupLayout,
    readonly contextLength: number,
    readonly maxBatch: number,
  ) {
    this.state = new ForwardState(config, maxBatch, contextLength);
    if (isSlice(weights)) {
      checkSliceFits(weights, config, layout);
      this.slice = weights;
      const maxLocalGroups = Math.max(0, ...weights.localLayouts.map((l) => l.nAttentionGroups));
      this.kvCache = new KvCache(config.nLayers, maxLocalGroups, contextLength, config.headDim);
      this.contexts = weights.localLayouts.map((local) => ({ config, layout: local, kernels, state: this.state, kvCache: this.kvCache }));
      this.layerWeights = weights.layers.map((layer) => ({ ...layer, attnNorm: NO_NORM, ffnNorm: NO_NORM }));
      this.groups = weights.groups.map((g) => ({ attention: [...g.attention], ffn: [...g.ffn] }));
      this.computeRanges = weights.groups.map(localRanges);
    } else {
      this.slice = undefined;
      this.kvCache = new KvCache(config.nLayers, layout.nAttentionGroups, contextLength, config.headDim);
      const ctx: GroupComputeContext = { config, layout, kernels, state: this.state, kvCache: this.kvCache };
      this.contexts = Array.from({ length: config.nLayers }, () => ctx);
      this.layerWeights = weights.layers;
    }
  }

  /** A worker computing exactly the groups of `slice`. */
  static fromSlice(slice: DeviceSlice, kernels: MatrixKernels, contextLength: number, maxBatch: number): GroupWorker {
    return new GroupWorker(slice.config, slice, kernels, slice.layout, contextLength, maxBatch);
  }

  /** True when running from a slice (fixed groups). */
  get holdsSlice(): boolean {
    return this.slice !== undefined;
  }

  /**
   * Takes the groups `deviceIndex` holds under `placement`. From a slice, the placement must give
   * this device exactly the slice's groups (HALO_ERR_USAGE otherwise: load the new plan's slice).
   */
  setPlacement(placement: Placement, deviceIndex: number): void {
    const groups = placement.layers.map((_, l) => ({
      attention: groupsOfDevice(placement, l, "attention", deviceIndex),
      ffn: groupsOfDevice(placement, l, "ffn", deviceIndex),
    }));
    if (this.slice !== undefined) {
      if (!sameGroups(groups, this.slice.groups)) throw new HaloError("HALO_ERR_USAGE", `device ${deviceIndex}'s groups under this placement differ from the slice this worker holds; load the slice of the new plan`);
      return;
    }
    this.groups = groups;
    this.computeRanges = groups;
  }

  groupsOf(layerIndex: number, phase: GroupKind): readonly GroupRange[] {
    return this.groups[layerIndex]?.[phase] ?? [];
  }

  /**
   * Takes over `previous`'s KV cache of every attention group both hold (live re-planning: FFN
   * blocks moved, the attention groups stayed and keep what they cached). Groups new here start
   * empty, so the positions before they arrived stay masked.
   */
  carryKvFrom(previous: GroupWorker): number {
    if (previous.config.nLayers !== this.config.nLayers || previous.contextLength !== this.contextLength) throw new HaloError("HALO_ERR_USAGE", "the KV cache can only be carried between workers of one model and context");
    let carried = 0;
    for (let l = 0; l < this.config.nLayers; l++) {
      for (const range of this.groupsOf(l, "attention")) {
        for (let g = range.start; g < range.end; g++) {
          const from = previous.localIndex(l, "attention", g);
          if (from === undefined) continue;
          this.kvCache.adopt(previous.kvCache, l, from, this.localIndex(l, "attention", g)!);
          carried++;
        }
      }
    }
    return carried;
  }

  /** Where group `group` (global) of (layer, phase) sits in this worker's tensors and KV cache: itself, or its rank among a slice's groups; undefined when not held. */
  private localIndex(layer: number, phase: GroupKind, group: number): number | undefined {
    let rank = 0;
    for (const range of this.groupsOf(layer, phase)) {
      if (group >= range.start && group < range.end) return this.slice === undefined ? group : rank + group - range.start;
      rank += range.end - range.start;
    }
    return undefined;
  }

  /** Forgets every cached position (a new sequence). */
  reset(): void {
    this.kvCache.truncate(0);
  }

  /**
   * This device's partial sum (nTokens, dim) for `phase` of `layerIndex` at positions
   * [positionStart, positionStart + nTokens), from the normed input (nTokens, dim). The result
   * is a view of an internal buffer, valid until the next call.
   */
  compute(phase: GroupKind, layerIndex: number, positionStart: number, nTokens: number, input: Float32Array, only?: readonly GroupRange[]): Float32Array {
    const { config, state } = this;
    if (!(Number.isInteger(layerIndex) && layerIndex >= 0 && layerIndex < config.nLayers)) throw new HaloError("HALO_ERR_USAGE", `layer ${layerIndex} outside [0, ${config.nLayers})`);
    if (!(Number.isInteger(nTokens) && nTokens >= 1 && nTokens <= this.maxBatch)) throw new HaloError("HALO_ERR_USAGE", `${nTokens} tokens per step; this worker takes 1..${this.maxBatch}`);
    if (!(Number.isInteger(positionStart) && positionStart >= 0 && positionStart + nTokens <= this.contextLength)) throw new HaloError("HALO_ERR_CONTEXT", `positions [${positionStart}, ${positionStart + nTokens}) outside the context of ${this.contextLength}`);
    const n = nTokens * config.dim;
    if (input.length < n) throw new HaloError("HALO_ERR_USAGE", `input has ${input.length} values, ${n} needed`);
    state.normed.set(input.subarray(0, n));
    const batch = { layerIndex, positionStart, nTokens };
    const ctx = this.contexts[layerIndex]!;
    const layer = this.layerWeights[layerIndex]!;
    const ranges = only === undefined ? this.computeRanges[layerIndex]?.[phase] ?? [] : this.rangesToCompute(layerIndex, phase, only);
    if (phase === "attention") attentionContribution(ctx, layer, batch, ranges);
    else ffnContribution(ctx, layer, batch, ranges);
    return state.partial.subarray(0, n);
  }

  /** `only` (global ranges, a subset of this worker's groups: compute skipping) as the ranges the group functions take. */
  private rangesToCompute(layerIndex: number, phase: GroupKind, only: readonly GroupRange[]): GroupRange[] {
    const local: number[] = [];
    for (const range of only) {
      for (let g = range.start; g < range.end; g++) {
        const index = this.localIndex(layerIndex, phase, g);
        if (index === undefined) throw new HaloError("HALO_ERR_USAGE", `group ${g} of layer ${layerIndex} ${phase} is not this worker's`);
        local.push(index);
      }
    }
    return rangesFromIndices(local, Math.max(0, ...local) + 1);
  }
}

function isSlice(weights: LlamaWeights | DeviceSlice): weights is DeviceSlice {
  return "localLayouts" in weights;
}

function checkSliceFits(slice: DeviceSlice, config: ModelConfig, layout: GroupLayout): void {
  const same = slice.config.dim === config.dim && slice.config.nLayers === config.nLayers && slice.config.nHeads === config.nHeads &&
    slice.config.nKvHeads === config.nKvHeads && slice.config.hiddenDim === config.hiddenDim &&
    slice.layout.ffnBlockSize === layout.ffnBlockSize && slice.layout.nAttentionGroups === layout.nAttentionGroups;
  if (!same) throw new HaloError("HALO_ERR_USAGE", "the slice was cut from another model shape or FFN block size than this worker's");
}

function sameGroups(a: readonly DeviceGroups[], b: readonly DeviceGroups[]): boolean {
  if (a.length !== b.length) return false;
  const eq = (x: readonly GroupRange[], y: readonly GroupRange[]): boolean => x.length === y.length && x.every((r, i) => r.start === y[i]!.start && r.end === y[i]!.end);
  return a.every((g, l) => eq(g.attention, b[l]!.attention) && eq(g.ffn, b[l]!.ffn));
}
