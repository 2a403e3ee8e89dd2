/**
 * The small per-vector ops of the forward pass. They are O(dim) per token, so they stay in TS;
 * the O(dim²) products go through MatrixKernels.
 */
import type { RopeStyle } from "../model/index.js";

/** out[o..o+n) = x[i..i+n) / sqrt(mean(x²) + eps) ⊙ weight */
export function rmsNorm(out: Float32Array, outOffset: number, x: Float32Array, xOffset: number, weight: Float32Array, eps: number): void {
  const n = weight.length;
  let sumSquares = 0;
  for (let i = 0; i < n; i++) sumSquares += x[xOffset + i]! * x[xOffset + i]!;
  const scale = 1 / Math.sqrt(sumSquares / n + eps);
  for (let i = 0; i < n; i++) out[outOffset + i] = x[xOffset + i]! * scale * weight[i]!;
}

/** cos/sin of position·θ_i for i < ropeDim/2, θ_i = base^(−2i/ropeDim), into (ropeDim/2) tables. */
export function ropeAngles(position: number, ropeDim: number, freqBase: number, cos: Float64Array, sin: Float64Array, offset: number): void {
  const half = ropeDim / 2;
  for (let i = 0; i < half; i++) {
    const angle = position * Math.pow(freqBase, (-2 * i) / ropeDim);
    cos[offset + i] = Math.cos(angle);
    sin[offset + i] = Math.sin(angle);
  }
}

/** Rotates heads [headStart, headEnd) of a row laid out as (nHeads, headDim) starting at `offset`, with angles at `angleOffset`. */
export function applyRope(x: Float32Array, offset: number, headStart: number, headEnd: number, headDim: number, ropeDim: number, style: RopeStyle, cos: Float64Array, sin: Float64Array, angleOffset: number): void {
  const half = ropeDim / 2;
  for (let h = headStart; h < headEnd; h++) {
    const base = offset + h * headDim;
    for (let i = 0; i < half; i++) {
      // "normal" pairs neighbours (2i, 2i+1); "neox" pairs the two halves (i, i + ropeDim/2).
      const a = style === "normal" ? base + 2 * i : base + i;
      const b = style === "normal" ? a + 1 : a + half;
      const x0 = x[a]!;
      const x1 = x[b]!;
      const c = cos[angleOffset + i]!;
      const s = sin[angleOffset + i]!;
      x[a] = x0 * c - x1 * s;
      x[b] = x0 * s + x1 * c;
    }
  }
}

/** In-place softmax of x[0..n). */
export function softmax(x: Float32Array | Float64Array, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[i]! > max) max = x[i]!;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(x[i]! - max);
    x[i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) x[i] = x[i]! / sum;
}

/** gate[o..o+n) = silu(gate) ⊙ up, silu(z) = z·σ(z). */
export function swiglu(gate: Float32Array, up: Float32Array, offset: number, n: number): void {
  for (let i = offset; i < offset + n; i++) {
    const g = gate[i]!;
    gate[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
}

/** x[i] += y[i] for i < n. */
export function addInPlace(x: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) x[i] = x[i]! + y[i]!;
}
