/**
 * Compute skipping (`--skip-below X`): a group whose predicted share of its phase's importance is
 * under X for every token of the batch is not computed at all. The share is of predicted norms,
 * exp(score_g) / Σ_k exp(score_k), since the predictor's scores are log-importances; a threshold
 * on shares reads the same for layers with 4 groups and with 300.
 */
import { HaloError } from "../base/index.js";
import { groupCount, rangesFromIndices, type GroupKind, type GroupLayout, type GroupRange } from "../partition/index.js";
import type { ImportancePredictor } from "./importancePredictor.js";

export interface SkipTotals {
  /** Groups considered (one per group per phase per batch). */
  considered: number;
  skipped: number;
  /** Time spent predicting, ms. */
  predictMs: number;
}

export class GroupSkipper {
  readonly totals: SkipTotals = { considered: 0, skipped: 0, predictMs: 0 };
  private readonly scores: Float64Array;
  private readonly keep: Uint8Array;
  private readonly dim: number;

  constructor(private readonly predictor: ImportancePredictor, private readonly layout: GroupLayout, readonly threshold: number, private readonly now: () => number = () => performance.now()) {
    if (!(threshold >= 0 && threshold < 1)) throw new HaloError("HALO_ERR_USAGE", `--skip-below takes a share between 0 and 1, got ${threshold}`);
    if (predictor.predictor.ffnBlockSize !== layout.ffnBlockSize) throw new HaloError("HALO_ERR_USAGE", `the predictor was fitted for FFN blocks of ${predictor.predictor.ffnBlockSize}, the run uses ${layout.ffnBlockSize}`);
    this.dim = predictor.predictor.inputDim;
    const maxGroups = Math.max(layout.nAttentionGroups, layout.nFfnGroups);
    this.scores = new Float64Array(maxGroups);
    this.keep = new Uint8Array(maxGroups);
  }

  /** The scores of the last token select() predicted (nGroups of that phase), for a caller that also needs them. */
  get lastScores(): Float64Array {
    return this.scores;
  }

  /**
   * Of `candidates` (this device's groups of the phase), the ranges worth computing for the batch
   * whose normed inputs are input (nTokens, dim).
   */
  select(layerIndex: number, phase: GroupKind, input: Float32Array, nTokens: number, candidates: readonly GroupRange[]): GroupRange[] {
    const started = this.now();
    const nGroups = groupCount(this.layout, phase);
    const dim = this.dim;
    const keep = this.keep.subarray(0, nGroups);
    keep.fill(0);
    for (let t = 0; t < nTokens; t++) {
      this.predictor.predict(layerIndex, phase, input, t * dim, this.scores);
      let max = -Infinity;
      for (let g = 0; g < nGroups; g++) max = Math.max(max, this.scores[g]!);
      let sum = 0;
      for (let g = 0; g < nGroups; g++) sum += Math.exp(this.scores[g]! - max);
      for (let g = 0; g < nGroups; g++) if (Math.exp(this.scores[g]! - max) / sum >= this.threshold) keep[g] = 1;
    }
    const kept: number[] = [];
    let considered = 0;
    for (const range of candidates) {
      for (let g = range.start; g < range.end; g++) {
        considered++;
        if (keep[g] === 1) kept.push(g);
      }
    }
    this.totals.considered += considered;
    this.totals.skipped += considered - kept.length;
    this.totals.predictMs += this.now() - started;
    return rangesFromIndices(kept, nGroups);
  }
}
