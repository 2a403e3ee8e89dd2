/**
 * The reference attention (MatrixKernels.attend), the oracle for the native one: per query
 * head, the scores of the valid positions, their softmax and the weighted sum of value rows,
 * all in float64; out is rounded to float32 once at the end.
 */
import { checkAttendArgs, type MatrixKernels } from "../matrix.js";

/** An attend with its own float64 scratch, grown on demand and reused (one per kernels instance). */
export function createReferenceAttend(): MatrixKernels["attend"] {
  /** (nPositions) scores, then weights, of one head */
  let scores = new Float64Array(0);
  /** (headDim) the weighted sum of one head */
  let sums = new Float64Array(0);

  return (nQueryHeads, headDim, q, qOffset, keys, values, valid, nPositions, scale, out, outOffset) => {
    checkAttendArgs(nQueryHeads, headDim, q, qOffset, keys, values, valid, nPositions, scale, out, outOffset);
    if (scores.length < nPositions) scores = new Float64Array(nPositions);
    if (sums.length < headDim) sums = new Float64Array(headDim);
    for (let h = 0; h < nQueryHeads; h++) {
      const qBase = qOffset + h * headDim;
      // score_s = scale · q·k_s for valid s; an invalid position is skipped, never read.
      let max = -Infinity;
      let nValid = 0;
      for (let s = 0; s < nPositions; s++) {
        if (valid[s] !== 1) continue;
        const kBase = s * headDim;
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[qBase + d]! * keys[kBase + d]!;
        const score = dot * scale;
        scores[s] = score;
        if (score > max) max = score;
        nValid++;
      }
      sums.fill(0, 0, headDim);
      if (nValid > 0) {
        // p_s = exp(score_s − max) / Σ exp(score − max);  out = Σ p_s · v_s
        let sum = 0;
        for (let s = 0; s < nPositions; s++) {
          if (valid[s] !== 1) continue;
          const e = Math.exp(scores[s]! - max);
          scores[s] = e;
          sum += e;
        }
        const inverse = 1 / sum;
        for (let s = 0; s < nPositions; s++) {
          if (valid[s] !== 1) continue;
          const p = scores[s]! * inverse;
          if (p === 0) continue;
          const vBase = s * headDim;
          for (let d = 0; d < headDim; d++) sums[d] = sums[d]! + p * values[vBase + d]!;
        }
      }
      const outBase = outOffset + h * headDim;
      for (let d = 0; d < headDim; d++) out[outBase + d] = sums[d]!;
    }
  };
}
