/**
 * A Synchronizer that computes every neuron group on its own, so the forward pass can be
 * observed and steered group by group: the true importance of each group for each token
 * (s_g = ‖W_out[:, g] · h_g‖₂, DESIGN "Importance label") next to the layer input that a
 * predictor sees, and, for fidelity experiments, a per-token choice of which groups' contributions
 * count (a dropped group adds zero, as a late device's groups do in relaxed mode).
 *
 * It holds its own state and KV cache; the engine it serves computes nothing itself.
 */
import type { MatrixKernels } from "../kernels/index.js";
import type { LlamaWeights, ModelConfig } from "../model/index.js";
import { groupCount, type GroupKind, type GroupLayout, type GroupRange } from "../partition/index.js";
import { attentionContribution, ffnContribution, type GroupComputeContext } from "./groupCompute.js";
import { KvCache } from "./kvCache.js";
import { ForwardState } from "./state.js";
import type { PhaseStep, Synchronizer } from "./synchronizer.js";

/** One phase of a batch, as the probe saw it. Views valid only during the callback. */
export interface GroupObservation {
  readonly layerIndex: number;
  readonly phase: GroupKind;
  readonly positionStart: number;
  readonly nTokens: number;
  readonly nGroups: number;
  /** (nTokens, dim) the normed layer input: what the predictor sees. */
  readonly input: Float32Array;
  /** (nTokens, nGroups) each group's contribution norm per token. */
  readonly norms: Float32Array;
}

export interface GroupProbeOptions {
  config: ModelConfig;
  weights: LlamaWeights;
  kernels: MatrixKernels;
  layout: GroupLayout;
  contextLength: number;
  maxBatch: number;
  /** Called for every phase, after all groups were computed. */
  onPhase?: (observation: GroupObservation) => void;
  /**
   * Writes into keep (nTokens, nGroups) 1 for each group whose contribution counts, 0 for a
   * dropped one. Called after onPhase. Without it every group counts (the dense model).
   */
  choose?: (observation: GroupObservation, keep: Uint8Array) => void;
}

export class GroupProbe implements Synchronizer {
  readonly layout: GroupLayout;
  private readonly ctx: GroupComputeContext;
  private readonly none: readonly GroupRange[] = [];
  /** (maxBatch, maxGroups, dim) each group's contribution, for choosing after seeing them all. */
  private readonly contributions: Float32Array;
  private readonly norms: Float32Array;
  private readonly keep: Uint8Array;

  constructor(private readonly options: GroupProbeOptions) {
    const { config, layout, kernels, contextLength, maxBatch } = options;
    this.layout = layout;
    const state = new ForwardState(config, maxBatch, contextLength);
    const kvCache = new KvCache(config.nLayers, layout.nAttentionGroups, contextLength, config.headDim);
    this.ctx = { config, layout, kernels, state, kvCache };
    const maxGroups = Math.max(groupCount(layout, "attention"), groupCount(layout, "ffn"));
    this.contributions = new Float32Array(maxBatch * maxGroups * config.dim);
    this.norms = new Float32Array(maxBatch * maxGroups);
    this.keep = new Uint8Array(maxBatch * maxGroups);
  }

  localGroups(): readonly GroupRange[] {
    return this.none;
  }

  beginPhase(step: PhaseStep): void {
    // A new sequence starts over: the probe's KV cache holds this sequence only.
    if (step.positionStart === 0 && step.layerIndex === 0 && step.phase === "attention") this.ctx.kvCache.truncate(0);
  }

  endPhase(step: PhaseStep, partial: Float32Array): void {
    const { config } = this.options;
    const { dim } = config;
    const { layerIndex, phase, positionStart, nTokens } = step;
    const nGroups = groupCount(this.layout, phase);
    const { state } = this.ctx;
    state.normed.set(step.input.subarray(0, nTokens * dim));
    const layer = this.options.weights.layers[layerIndex]!;
    const batch = { layerIndex, positionStart, nTokens };
    for (let g = 0; g < nGroups; g++) {
      const one = [{ start: g, end: g + 1 }];
      if (phase === "attention") attentionContribution(this.ctx, layer, batch, one);
      else ffnContribution(this.ctx, layer, batch, one);
      for (let t = 0; t < nTokens; t++) {
        const row = state.partial.subarray(t * dim, (t + 1) * dim);
        this.contributions.set(row, (t * nGroups + g) * dim);
        let sumSquares = 0;
        for (let i = 0; i < dim; i++) sumSquares += row[i]! * row[i]!;
        this.norms[t * nGroups + g] = Math.sqrt(sumSquares);
      }
    }
    const observation: GroupObservation = { layerIndex, phase, positionStart, nTokens, nGroups, input: step.input.subarray(0, nTokens * dim), norms: this.norms.subarray(0, nTokens * nGroups) };
    this.options.onPhase?.(observation);
    const keep = this.keep.subarray(0, nTokens * nGroups);
    keep.fill(1);
    this.options.choose?.(observation, keep);
    // The phase output: the kept contributions, added in group order (as the dense layer adds ranges).
    partial.fill(0, 0, nTokens * dim);
    for (let t = 0; t < nTokens; t++) {
      for (let g = 0; g < nGroups; g++) {
        if (keep[t * nGroups + g] === 0) continue;
        const base = (t * nGroups + g) * dim;
        for (let i = 0; i < dim; i++) partial[t * dim + i] = partial[t * dim + i]! + this.contributions[base + i]!;
      }
    }
  }
}
