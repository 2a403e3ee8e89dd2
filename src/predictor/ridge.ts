/**
 * Closed-form ridge regression, the predictor's fit (DESIGN "Predictor": a linear map from the
 * layer input to the log-importance of every group, fitted offline). Everything is float64:
 *
 *   W = (X̃ᵀX̃ + λ·n·I)⁻¹ X̃ᵀỸ,   b = ȳ − x̄ᵀW
 *
 * with X̃, Ỹ the centred inputs and targets, so the intercept is not shrunk and λ is per sample
 * (the same λ suits any corpus size). The normal matrix is solved by Cholesky.
 */
import { HaloError } from "../base/index.js";

/** (nInputs, nOutputs) weights, row-major, and (nOutputs) intercepts. */
export interface LinearMap {
  readonly nInputs: number;
  readonly nOutputs: number;
  readonly weights: Float64Array;
  readonly bias: Float64Array;
  /** (nOutputs) the targets' mean over the fit: a static, input-independent estimate. */
  readonly mean: Float64Array;
}

/** Accumulates XᵀX, XᵀY and the sums, one sample at a time, so a corpus never has to fit in memory. */
export class RidgeAccumulator {
  nSamples = 0;
  private readonly xtx: Float64Array;
  private readonly xty: Float64Array;
  private readonly xSum: Float64Array;
  private readonly ySum: Float64Array;

  constructor(readonly nInputs: number, readonly nOutputs: number) {
    if (!(Number.isInteger(nInputs) && nInputs > 0 && Number.isInteger(nOutputs) && nOutputs > 0)) throw new HaloError("HALO_ERR_USAGE", `ridge sizes must be positive integers, got ${nInputs} × ${nOutputs}`);
    this.xtx = new Float64Array(nInputs * nInputs);
    this.xty = new Float64Array(nInputs * nOutputs);
    this.xSum = new Float64Array(nInputs);
    this.ySum = new Float64Array(nOutputs);
  }

  /** One sample: x (nInputs) at xOffset, y (nOutputs) at yOffset. */
  add(x: ArrayLike<number>, xOffset: number, y: ArrayLike<number>, yOffset: number): void {
    const { nInputs: d, nOutputs: g } = this;
    for (let i = 0; i < d; i++) {
      const xi = x[xOffset + i]!;
      if (xi === 0) continue;
      this.xSum[i] = this.xSum[i]! + xi;
      const row = i * d;
      // The upper triangle only; solve() mirrors it.
      for (let j = i; j < d; j++) this.xtx[row + j] = this.xtx[row + j]! + xi * x[xOffset + j]!;
      const out = i * g;
      for (let k = 0; k < g; k++) this.xty[out + k] = this.xty[out + k]! + xi * y[yOffset + k]!;
    }
    for (let k = 0; k < g; k++) this.ySum[k] = this.ySum[k]! + y[yOffset + k]!;
    this.nSamples++;
  }

  /** The ridge solution with per-sample penalty `lambda` (> 0). */
  solve(lambda: number): LinearMap {
    const { nInputs: d, nOutputs: g, nSamples: n } = this;
    if (n < 2) throw new HaloError("HALO_ERR_USAGE", `ridge regression needs at least 2 samples, got ${n}`);
    if (!(lambda > 0 && Number.isFinite(lambda))) throw new HaloError("HALO_ERR_USAGE", `ridge penalty must be a positive number, got ${lambda}`);
    const xMean = this.xSum.map((s) => s / n);
    const yMean = this.ySum.map((s) => s / n);
    // Centred normal matrix: XᵀX − n·x̄x̄ᵀ + λn·I, and right-hand side XᵀY − n·x̄ȳᵀ.
    const a = new Float64Array(d * d);
    for (let i = 0; i < d; i++) {
      for (let j = i; j < d; j++) {
        const v = this.xtx[i * d + j]! - n * xMean[i]! * xMean[j]! + (i === j ? lambda * n : 0);
        a[i * d + j] = v;
        a[j * d + i] = v;
      }
    }
    const b = new Float64Array(d * g);
    for (let i = 0; i < d; i++) for (let k = 0; k < g; k++) b[i * g + k] = this.xty[i * g + k]! - n * xMean[i]! * yMean[k]!;
    choleskySolveInPlace(a, b, d, g);
    const bias = new Float64Array(g);
    for (let k = 0; k < g; k++) {
      let s = yMean[k]!;
      for (let i = 0; i < d; i++) s -= xMean[i]! * b[i * g + k]!;
      bias[k] = s;
    }
    return { nInputs: d, nOutputs: g, weights: b, bias, mean: Float64Array.from(yMean) };
  }
}

/** Solves A·X = B for symmetric positive definite A (d, d), B (d, g) overwritten by X. */
function choleskySolveInPlace(a: Float64Array, b: Float64Array, d: number, g: number): void {
  // A = L·Lᵀ, L in the lower triangle of a.
  for (let j = 0; j < d; j++) {
    let diagonal = a[j * d + j]!;
    for (let k = 0; k < j; k++) diagonal -= a[j * d + k]! * a[j * d + k]!;
    if (!(diagonal > 0)) throw new HaloError("HALO_ERR_USAGE", "ridge normal matrix is not positive definite (a non-finite input?)");
    const ljj = Math.sqrt(diagonal);
    a[j * d + j] = ljj;
    for (let i = j + 1; i < d; i++) {
      let s = a[i * d + j]!;
      for (let k = 0; k < j; k++) s -= a[i * d + k]! * a[j * d + k]!;
      a[i * d + j] = s / ljj;
    }
  }
  // L·Z = B, then Lᵀ·X = Z, column block by column block.
  for (let i = 0; i < d; i++) {
    for (let k = 0; k < i; k++) {
      const lik = a[i * d + k]!;
      for (let c = 0; c < g; c++) b[i * g + c] = b[i * g + c]! - lik * b[k * g + c]!;
    }
    const lii = a[i * d + i]!;
    for (let c = 0; c < g; c++) b[i * g + c] = b[i * g + c]! / lii;
  }
  for (let i = d - 1; i >= 0; i--) {
    for (let k = i + 1; k < d; k++) {
      const lki = a[k * d + i]!;
      for (let c = 0; c < g; c++) b[i * g + c] = b[i * g + c]! - lki * b[k * g + c]!;
    }
    const lii = a[i * d + i]!;
    for (let c = 0; c < g; c++) b[i * g + c] = b[i * g + c]! / lii;
  }
}

/** out[k] = bias[k] + Σ_i x[xOffset + i]·W[i, k]: the predicted log-importance of every group. */
export function applyLinearMap(map: LinearMap, x: ArrayLike<number>, xOffset: number, out: Float64Array | Float32Array): void {
  const { nInputs: d, nOutputs: g, weights, bias } = map;
  for (let k = 0; k < g; k++) out[k] = bias[k]!;
  for (let i = 0; i < d; i++) {
    const xi = x[xOffset + i]!;
    if (xi === 0) continue;
    const row = i * g;
    for (let k = 0; k < g; k++) out[k] = out[k]! + xi * weights[row + k]!;
  }
}
