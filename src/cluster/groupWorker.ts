/**
 * What a worker computes: its groups' contribution to a layer's phase, with the engine's own
 * group functions, its own buffers and a KV cache holding only its attention groups. A position
 * whose input never arrived is never written, so it stays masked in later attention.
 */
import { HaloError } from "../base/index.js";
import { ForwardState, KvCache, attentionContribution, ffnContribution, type GroupComputeContext } from "../engine/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import type { LlamaWeights, ModelConfig } from "../model/index.js";
import { groupsOfDevice, type GroupKind, type GroupLayout, type GroupRange, type Placement } from "../partition/index.js";

export class GroupWorker {
  private readonly ctx: GroupComputeContext;
  /** [layer][phase] → this device's groups */
  private groups: Array<Record<GroupKind, GroupRange[]>> = [];

  constructor(
    readonly config: ModelConfig,
    private readonly weights: LlamaWeights,
    kernels: MatrixKernels,
    readonly layout: GroupLayout,
    readonly contextLength: number,
    readonly maxBatch: number,
  ) {
    const state = new ForwardState(config, maxBatch, contextLength);
    const kvCache = new KvCache(config.nLayers, layout.nAttentionGroups, contextLength, config.headDim);
    this.ctx = { config, layout, kernels, state, kvCache };
  }

  /** Takes the groups `deviceIndex` holds under `placement`. */
  setPlacement(placement: Placement, deviceIndex: number): void {
    this.groups = placement.layers.map((_, l) => ({
      attention: groupsOfDevice(placement, l, "attention", deviceIndex),
      ffn: groupsOfDevice(placement, l, "ffn", deviceIndex),
    }));
  }

  groupsOf(layerIndex: number, phase: GroupKind): readonly GroupRange[] {
    return this.groups[layerIndex]?.[phase] ?? [];
  }

  /** Forgets every cached position (a new sequence). */
  reset(): void {
    this.ctx.kvCache.truncate(0);
  }

  /**
   * This device's partial sum (nTokens, dim) for `phase` of `layerIndex` at positions
   * [positionStart, positionStart + nTokens), from the normed input (nTokens, dim). The result
   * is a view of an internal buffer, valid until the next call.
   */
  compute(phase: GroupKind, layerIndex: number, positionStart: number, nTokens: number, input: Float32Array): Float32Array {
    const { config, state } = this.ctx;
    if (!(Number.isInteger(layerIndex) && layerIndex >= 0 && layerIndex < config.nLayers)) throw new HaloError("HALO_ERR_USAGE", `layer ${layerIndex} outside [0, ${config.nLayers})`);
    if (!(Number.isInteger(nTokens) && nTokens >= 1 && nTokens <= this.maxBatch)) throw new HaloError("HALO_ERR_USAGE", `${nTokens} tokens per step; this worker takes 1..${this.maxBatch}`);
    if (!(Number.isInteger(positionStart) && positionStart >= 0 && positionStart + nTokens <= this.contextLength)) throw new HaloError("HALO_ERR_CONTEXT", `positions [${positionStart}, ${positionStart + nTokens}) outside the context of ${this.contextLength}`);
    const n = nTokens * config.dim;
    if (input.length < n) throw new HaloError("HALO_ERR_USAGE", `input has ${input.length} values, ${n} needed`);
    state.normed.set(input.subarray(0, n));
    const batch = { layerIndex, positionStart, nTokens };
    const layer = this.weights.layers[layerIndex]!;
    if (phase === "attention") attentionContribution(this.ctx, layer, batch, this.groupsOf(layerIndex, phase));
    else ffnContribution(this.ctx, layer, batch, this.groupsOf(layerIndex, phase));
    return state.partial.subarray(0, n);
  }
}
