/**
 * The seam that makes a layer divisible: the contribution of any set of neuron groups to the
 * residual stream, for a batch of tokens. A full layer is the case "all groups".
 *
 *   attention:  Σ_{g∈G} W_o[:, heads(g)] · Attn_g(RoPE(W_q[heads(g)]·u), K_g, V_g)
 *   FFN:        Σ_{b∈B} W_2[:, b] · (silu(W_1[b]·u) ⊙ W_3[b]·u)
 *
 * Workers in a cluster call these directly with the groups they hold; the coordinator's
 * forward pass calls them with its own.
 */
import type { MatrixKernels } from "../kernels/index.js";
import type { LayerWeights, ModelConfig } from "../model/index.js";
import { ffnNeuronRange, type GroupLayout, type GroupRange } from "../partition/index.js";
import type { KvCache } from "./kvCache.js";
import { applyRope, ropeAngles, swiglu } from "./ops.js";
import type { ForwardState } from "./state.js";

export interface GroupComputeContext {
  readonly config: ModelConfig;
  readonly layout: GroupLayout;
  readonly kernels: MatrixKernels;
  readonly state: ForwardState;
  readonly kvCache: KvCache;
}

/** A batch of consecutive positions and its normed input (nTokens, dim) in state.normed. */
export interface PhaseBatch {
  readonly layerIndex: number;
  readonly positionStart: number;
  readonly nTokens: number;
}

/** Writes the attention contribution of `groups` for the batch into state.partial (nTokens, dim). */
export function attentionContribution(ctx: GroupComputeContext, layer: LayerWeights, batch: PhaseBatch, groups: readonly GroupRange[]): void {
  const { config, layout, kernels, state } = ctx;
  const { dim, headDim } = config;
  const qDim = config.nHeads * headDim;
  const { nTokens } = batch;
  const half = config.ropeDim / 2;
  for (let t = 0; t < nTokens; t++) {
    ropeAngles(batch.positionStart + t, config.ropeDim, config.ropeFreqBase, state.ropeCos, state.ropeSin, t * half);
  }
  if (groups.length === 0) state.partial.fill(0, 0, nTokens * dim);
  for (let i = 0; i < groups.length; i++) {
    const range = groups[i]!;
    const qHeadStart = range.start * layout.queryHeadsPerGroup;
    const qHeadEnd = range.end * layout.queryHeadsPerGroup;
    const qRowStart = qHeadStart * headDim;
    const qRowEnd = qHeadEnd * headDim;
    const kvRowStart = range.start * headDim;
    const kvRowEnd = range.end * headDim;
    // q = W_q[heads]·u, k = W_k[g]·u, v = W_v[g]·u for every token of the batch
    kernels.matmul(layer.wq, nTokens, state.normed, 0, dim, state.q, qRowStart, qDim, qRowStart, qRowEnd, 0, dim);
    kernels.matmul(layer.wk, nTokens, state.normed, 0, dim, state.k, kvRowStart, config.kvDim, kvRowStart, kvRowEnd, 0, dim);
    kernels.matmul(layer.wv, nTokens, state.normed, 0, dim, state.v, kvRowStart, config.kvDim, kvRowStart, kvRowEnd, 0, dim);
    for (let t = 0; t < nTokens; t++) {
      applyRope(state.q, t * qDim, qHeadStart, qHeadEnd, headDim, config.ropeDim, config.ropeStyle, state.ropeCos, state.ropeSin, t * half);
      applyRope(state.k, t * config.kvDim, range.start, range.end, headDim, config.ropeDim, config.ropeStyle, state.ropeCos, state.ropeSin, t * half);
    }
    for (let g = range.start; g < range.end; g++) storeKv(ctx, batch, g);
    for (let g = range.start; g < range.end; g++) attendGroup(ctx, batch, g);
    // partial = Σ_heads W_o[:, heads] · attn(heads); a second range goes through scratch.
    const target = i === 0 ? state.partial : state.partialScratch;
    kernels.matmul(layer.wo, nTokens, state.attnOut, qRowStart, qDim, target, 0, dim, 0, dim, qRowStart, qRowEnd);
    if (i > 0) for (let j = 0; j < nTokens * dim; j++) state.partial[j] = state.partial[j]! + target[j]!;
  }
}

function storeKv(ctx: GroupComputeContext, batch: PhaseBatch, group: number): void {
  const { config, state, kvCache } = ctx;
  const { headDim, kvDim } = config;
  const keys = kvCache.keysOf(batch.layerIndex, group);
  const values = kvCache.valuesOf(batch.layerIndex, group);
  const valid = kvCache.validityOf(batch.layerIndex, group);
  for (let t = 0; t < batch.nTokens; t++) {
    const position = batch.positionStart + t;
    const source = t * kvDim + group * headDim;
    for (let d = 0; d < headDim; d++) {
      keys[position * headDim + d] = state.k[source + d]!;
      values[position * headDim + d] = state.v[source + d]!;
    }
    valid[position] = 1;
  }
}

/** attnOut[t, h] = Σ_s softmax_s(q_h·k_s / √headDim) · v_s over valid s ≤ position(t), for h in group. */
function attendGroup(ctx: GroupComputeContext, batch: PhaseBatch, group: number): void {
  const { config, layout, kernels, state, kvCache } = ctx;
  const { headDim } = config;
  const qDim = config.nHeads * headDim;
  const keys = kvCache.keysOf(batch.layerIndex, group);
  const values = kvCache.valuesOf(batch.layerIndex, group);
  const valid = kvCache.validityOf(batch.layerIndex, group);
  const scale = 1 / Math.sqrt(headDim);
  const groupOffset = group * layout.queryHeadsPerGroup * headDim;
  for (let t = 0; t < batch.nTokens; t++) {
    // Token t sees positions [0, position(t)]; invalid ones (never computed here) get no weight.
    const offset = t * qDim + groupOffset;
    kernels.attend(layout.queryHeadsPerGroup, headDim, state.q, offset, keys, values, valid, batch.positionStart + t + 1, scale, state.attnOut, offset);
  }
}

/** Writes the FFN contribution of `groups` (neuron blocks) for the batch into state.partial (nTokens, dim). */
export function ffnContribution(ctx: GroupComputeContext, layer: LayerWeights, batch: PhaseBatch, groups: readonly GroupRange[]): void {
  const { config, layout, kernels, state } = ctx;
  const { dim, hiddenDim } = config;
  const { nTokens } = batch;
  if (groups.length === 0) state.partial.fill(0, 0, nTokens * dim);
  for (let i = 0; i < groups.length; i++) {
    const blocks = groups[i]!;
    const neurons = ffnNeuronRange(layout, blocks);
    const width = neurons.end - neurons.start;
    // gate = W_1[b]·u, up = W_3[b]·u, gate ← silu(gate) ⊙ up
    kernels.matmul(layer.ffnGate, nTokens, state.normed, 0, dim, state.gate, neurons.start, hiddenDim, neurons.start, neurons.end, 0, dim);
    kernels.matmul(layer.ffnUp, nTokens, state.normed, 0, dim, state.up, neurons.start, hiddenDim, neurons.start, neurons.end, 0, dim);
    for (let t = 0; t < nTokens; t++) swiglu(state.gate, state.up, t * hiddenDim + neurons.start, width);
    // partial = W_2[:, b] · gate[b]
    const target = i === 0 ? state.partial : state.partialScratch;
    kernels.matmul(layer.ffnDown, nTokens, state.gate, neurons.start, hiddenDim, target, 0, dim, 0, dim, neurons.start, neurons.end);
    if (i > 0) for (let j = 0; j < nTokens * dim; j++) state.partial[j] = state.partial[j]! + target[j]!;
  }
}
