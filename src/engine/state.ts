/**
 * Every buffer one sequence's forward pass needs, allocated once. The hot path only fills them.
 * Batched buffers hold up to `maxBatch` tokens, row-major by token.
 */
import type { ModelConfig } from "../model/index.js";
import type { MutablePhaseStep } from "./synchronizer.js";

export class ForwardState {
  /** (maxBatch, dim) the residual stream */
  readonly x: Float32Array;
  /** Views of x's rows, made once so the embedding lookup allocates nothing per token. */
  readonly xRows: readonly Float32Array[];
  /** (maxBatch, dim) the normed layer input */
  readonly normed: Float32Array;
  /** (maxBatch, nHeads·headDim) */
  readonly q: Float32Array;
  /** (maxBatch, kvDim) */
  readonly k: Float32Array;
  /** (maxBatch, kvDim) */
  readonly v: Float32Array;
  /** (maxBatch, nHeads·headDim) attention output before W_o */
  readonly attnOut: Float32Array;
  /** (maxBatch, dim) this device's partial sum of a phase */
  readonly partial: Float32Array;
  /** (maxBatch, dim) scratch for a second group range */
  readonly partialScratch: Float32Array;
  /** (maxBatch, hiddenDim) W1·u, then silu(W1·u) ⊙ W3·u */
  readonly gate: Float32Array;
  /** (maxBatch, hiddenDim) W3·u */
  readonly up: Float32Array;
  /** (maxBatch, ropeDim/2) */
  readonly ropeCos: Float64Array;
  readonly ropeSin: Float64Array;
  /** (vocabSize) logits of the last token */
  readonly logits: Float32Array;
  /** The step objects forward() fills for each phase (reused every layer and token). */
  readonly steps: { readonly attention: MutablePhaseStep; readonly ffn: MutablePhaseStep };
  /** (maxBatch, vocabSize) logits of every token, allocated on first request */
  private allLogitsBuffer: Float32Array | undefined;

  constructor(readonly config: ModelConfig, readonly maxBatch: number, readonly contextLength: number) {
    const { dim, nHeads, headDim, kvDim, hiddenDim, ropeDim, vocabSize } = config;
    const qDim = nHeads * headDim;
    this.x = new Float32Array(maxBatch * dim);
    this.xRows = Array.from({ length: maxBatch }, (_, t) => this.x.subarray(t * dim, (t + 1) * dim));
    this.normed = new Float32Array(maxBatch * dim);
    this.q = new Float32Array(maxBatch * qDim);
    this.k = new Float32Array(maxBatch * kvDim);
    this.v = new Float32Array(maxBatch * kvDim);
    this.attnOut = new Float32Array(maxBatch * qDim);
    this.partial = new Float32Array(maxBatch * dim);
    this.partialScratch = new Float32Array(maxBatch * dim);
    this.gate = new Float32Array(maxBatch * hiddenDim);
    this.up = new Float32Array(maxBatch * hiddenDim);
    this.ropeCos = new Float64Array(maxBatch * (ropeDim / 2));
    this.ropeSin = new Float64Array(maxBatch * (ropeDim / 2));
    this.logits = new Float32Array(vocabSize);
    this.steps = {
      attention: { phase: "attention", layerIndex: 0, positionStart: 0, nTokens: 0, input: this.normed },
      ffn: { phase: "ffn", layerIndex: 0, positionStart: 0, nTokens: 0, input: this.normed },
    };
  }

  allLogits(): Float32Array {
    this.allLogitsBuffer ??= new Float32Array(this.maxBatch * this.config.vocabSize);
    return this.allLogitsBuffer;
  }
}
