/**
 * One sequence's inference state over a loaded model: weights, kernels, buffers, KV cache and
 * the Synchronizer. `evaluate` feeds any number of tokens, in batches, through `forward`.
 */
import { ContextOverflowError, HaloError } from "../base/index.js";
import { createReferenceKernels, type MatrixKernels } from "../kernels/index.js";
import type { LlamaWeights, ModelConfig } from "../model/index.js";
import { DEFAULT_FFN_BLOCK_SIZE, createGroupLayout, type GroupLayout } from "../partition/index.js";
import { forward, type ForwardContext, type LogitsRequest } from "./forward.js";
import { KvCache } from "./kvCache.js";
import { ForwardState } from "./state.js";
import { LocalSynchronizer, type Synchronizer } from "./synchronizer.js";

export interface EngineOptions {
  /** Matrix kernels. Defaults to the pure-TS reference. */
  kernels?: MatrixKernels;
  /** KV cache length in tokens. Defaults to the model's context length, capped at 4096. */
  contextLength?: number;
  /** Tokens per forward batch during prefill. Defaults to 64. */
  maxBatch?: number;
  /** Neurons per FFN group. Defaults to DEFAULT_FFN_BLOCK_SIZE (32). */
  ffnBlockSize?: number;
  /** Defaults to a LocalSynchronizer (every group on this device). */
  synchronizer?: Synchronizer;
}

export const DEFAULT_CONTEXT_CAP = 4096;
export const DEFAULT_MAX_BATCH = 64;

export class Engine {
  readonly layout: GroupLayout;
  readonly contextLength: number;
  readonly kernels: MatrixKernels;
  readonly state: ForwardState;
  readonly kvCache: KvCache;
  readonly synchronizer: Synchronizer;
  private readonly ctx: ForwardContext;

  constructor(readonly config: ModelConfig, readonly weights: LlamaWeights, options: EngineOptions = {}) {
    this.contextLength = options.contextLength ?? Math.min(config.contextLength, DEFAULT_CONTEXT_CAP);
    if (!Number.isInteger(this.contextLength) || this.contextLength < 1) throw new HaloError("HALO_ERR_USAGE", `context length must be a positive integer, got ${this.contextLength}`);
    const maxBatch = Math.min(options.maxBatch ?? DEFAULT_MAX_BATCH, this.contextLength);
    // Group ranges mean nothing without their layout: a synchronizer that fixed one decides it.
    const planned = options.synchronizer?.layout?.ffnBlockSize;
    if (planned !== undefined && options.ffnBlockSize !== undefined && planned !== options.ffnBlockSize) {
      throw new HaloError("HALO_ERR_USAGE", `FFN block size ${options.ffnBlockSize} differs from the synchronizer's ${planned}`);
    }
    this.layout = createGroupLayout(config, options.ffnBlockSize ?? planned ?? DEFAULT_FFN_BLOCK_SIZE);
    this.kernels = options.kernels ?? createReferenceKernels();
    this.state = new ForwardState(config, maxBatch, this.contextLength);
    this.kvCache = new KvCache(config.nLayers, this.layout.nAttentionGroups, this.contextLength, config.headDim);
    this.synchronizer = options.synchronizer ?? new LocalSynchronizer(this.layout);
    this.ctx = { config, weights, kernels: this.kernels, layout: this.layout, state: this.state, kvCache: this.kvCache, synchronizer: this.synchronizer };
  }

  /**
   * Runs `tokens` at positions [positionStart, positionStart + n). With "last", returns the last
   * token's logits; with "all", calls onLogits for each batch's (nTokens, vocabSize) logits.
   */
  async evaluate(
    tokens: readonly number[],
    positionStart: number,
    logits: LogitsRequest,
    onLogits?: (batchLogits: Float32Array, batchStart: number, nTokens: number) => void,
  ): Promise<Float32Array | undefined> {
    if (positionStart + tokens.length > this.contextLength) throw new ContextOverflowError(positionStart + tokens.length, this.contextLength);
    for (const token of tokens) {
      if (!Number.isInteger(token) || token < 0 || token >= this.config.vocabSize) throw new HaloError("HALO_ERR_USAGE", `token id ${token} is outside the vocabulary (0..${this.config.vocabSize - 1})`);
    }
    if (positionStart === 0) this.kvCache.truncate(0);
    let result: Float32Array | undefined;
    for (let start = 0; start < tokens.length; start += this.state.maxBatch) {
      const batch = tokens.slice(start, start + this.state.maxBatch);
      const isLast = start + batch.length === tokens.length;
      const request: LogitsRequest = logits === "all" ? "all" : logits === "last" && isLast ? "last" : "none";
      result = await forward(this.ctx, batch, positionStart + start, request);
      if (request === "all" && result !== undefined) onLogits?.(result, start, batch.length);
    }
    return result;
  }

  /** One decode step: the logits after `token` at `position`. Allocates nothing. */
  async step(token: number, position: number): Promise<Float32Array> {
    if (position >= this.contextLength) throw new ContextOverflowError(position + 1, this.contextLength);
    if (!Number.isInteger(token) || token < 0 || token >= this.config.vocabSize) throw new HaloError("HALO_ERR_USAGE", `token id ${token} is outside the vocabulary (0..${this.config.vocabSize - 1})`);
    this.stepToken[0] = token;
    return (await forward(this.ctx, this.stepToken, position, "last"))!;
  }
  private readonly stepToken = new Int32Array(1);
}
