/**
 * The LLaMA forward pass for a batch of consecutive tokens of one sequence. Each layer is two
 * phases whose outputs are sums of neuron-group contributions (groupCompute.ts); the
 * Synchronizer decides which groups run here and merges the rest.
 */
import type { MatrixKernels } from "../kernels/index.js";
import type { LlamaWeights } from "../model/index.js";
import { attentionContribution, ffnContribution, type GroupComputeContext } from "./groupCompute.js";
import { addInPlace, rmsNorm } from "./ops.js";
import type { MutablePhaseStep, Synchronizer } from "./synchronizer.js";

export interface ForwardContext extends GroupComputeContext {
  readonly weights: LlamaWeights;
  readonly kernels: MatrixKernels;
  readonly synchronizer: Synchronizer;
}

export type LogitsRequest = "last" | "all" | "none";

function setStep(step: MutablePhaseStep, layerIndex: number, positionStart: number, nTokens: number): void {
  step.layerIndex = layerIndex;
  step.positionStart = positionStart;
  step.nTokens = nTokens;
}

/**
 * Runs tokens[0..n) at positions [positionStart, positionStart + n) (n ≤ state.maxBatch).
 * Returns the last token's logits (vocabSize), every token's (n, vocabSize), or nothing.
 */
export async function forward(ctx: ForwardContext, tokens: ArrayLike<number>, positionStart: number, logits: LogitsRequest): Promise<Float32Array | undefined> {
  const { config, weights, kernels, state, synchronizer } = ctx;
  const { dim, rmsNormEps: eps } = config;
  const nTokens = tokens.length;
  const x = state.x;

  // x = token_embd[token]
  for (let t = 0; t < nTokens; t++) kernels.getRow(weights.tokenEmbedding, tokens[t]!, state.xRows[t]!);

  // One reusable step per phase, so decoding allocates nothing per layer.
  const { attention, ffn } = state.steps;
  for (let l = 0; l < config.nLayers; l++) {
    const layer = weights.layers[l]!;

    // x = x + Σ_g W_o[:, g] · Attn_g(RoPE(W_q[g]·u), K_g, V_g),  u = rmsnorm(x) ⊙ attn_norm
    for (let t = 0; t < nTokens; t++) rmsNorm(state.normed, t * dim, x, t * dim, layer.attnNorm, eps);
    setStep(attention, l, positionStart, nTokens);
    synchronizer.beginPhase(attention);
    attentionContribution(ctx, layer, attention, synchronizer.localGroups(l, "attention"));
    const attentionMerged = synchronizer.endPhase(attention, state.partial);
    if (attentionMerged !== undefined) await attentionMerged;
    addInPlace(x, state.partial, nTokens * dim);

    // x = x + Σ_b W_2[:, b] · (silu(W_1[b]·u) ⊙ W_3[b]·u),  u = rmsnorm(x) ⊙ ffn_norm
    for (let t = 0; t < nTokens; t++) rmsNorm(state.normed, t * dim, x, t * dim, layer.ffnNorm, eps);
    setStep(ffn, l, positionStart, nTokens);
    synchronizer.beginPhase(ffn);
    ffnContribution(ctx, layer, ffn, synchronizer.localGroups(l, "ffn"));
    const ffnMerged = synchronizer.endPhase(ffn, state.partial);
    if (ffnMerged !== undefined) await ffnMerged;
    addInPlace(x, state.partial, nTokens * dim);
  }

  if (logits === "none") return undefined;
  // logits = W_cls · (rmsnorm(x) ⊙ output_norm), for the last token or all of them
  const first = logits === "last" ? nTokens - 1 : 0;
  for (let t = first; t < nTokens; t++) rmsNorm(state.normed, t * dim, x, t * dim, weights.outputNorm, eps);
  const out = logits === "last" ? state.logits : state.allLogits();
  const vocabSize = config.vocabSize;
  kernels.matmul(weights.output, nTokens - first, state.normed, first * dim, dim, out, 0, vocabSize, 0, vocabSize, 0, dim);
  return logits === "last" ? out : out.subarray(0, nTokens * vocabSize);
}
