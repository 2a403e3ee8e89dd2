/**
 * Closed-form ridge regression, the predictor's fit (DESIGN "Predictor": a linear map from the
 * layer input to the log-importance of every group, fitted offline). Everything is float64:
 *
 *   W = (X̃ᵀX̃ + λ·n·I)⁻¹ X̃ᵀỸ,   b = ȳ − x̄ᵀW
 *
 * with X̃, Ỹ the centred inputs and targets, so the intercept is not shrunk and λ is per sample
 * (the same λ suits any corpus size). The normal matrix is solved by Cholesky.
 *
 * With a rank R, the map is cut to the R directions of the output space that carry most of the
 * fitted values' variance (reduced-rank regression): W_R = W·V·Vᵀ with V the top R eigenvectors
 * of WᵀX̃ᵀX̃W, kept as two factors, down = W·V (nInputs, R) and up = Vᵀ (R, nOutputs). Applying it
 * costs R·(nInputs + nOutputs) instead of nInputs·nOutputs: what keeps the predictor within its
 * compute budget when a layer has hundreds of FFN groups.
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
  /** A reduced-rank map: weights = down·up, applied through the factors. */
  readonly factors?: LowRankFactors;
}

export interface LowRankFactors {
  readonly rank: number;
  /** (nInputs, rank) row-major */
  readonly down: Float64Array;
  /** (rank, nOutputs) row-major */
  readonly up: Float64Array;
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

  /**
   * The ridge solution with per-sample penalty `lambda` (> 0), cut to `rank` output directions
   * when a rank below both sizes is given.
   */
  solve(lambda: number, rank?: number): LinearMap {
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
    const reduced = rank !== undefined && rank < Math.min(d, g);
    if (reduced && !(Number.isInteger(rank) && rank >= 1)) throw new HaloError("HALO_ERR_USAGE", `predictor rank must be a positive integer, got ${rank}`);
    // The centred normal matrix without the penalty, before Cholesky overwrites it: the fitted values' covariance is WᵀAW / n.
    const covariance = reduced ? a.map((v, i) => (i % (d + 1) === 0 ? v - lambda * n : v)) : undefined;
    choleskySolveInPlace(a, b, d, g);
    const bias = new Float64Array(g);
    for (let k = 0; k < g; k++) {
      let s = yMean[k]!;
      for (let i = 0; i < d; i++) s -= xMean[i]! * b[i * g + k]!;
      bias[k] = s;
    }
    const mean = Float64Array.from(yMean);
    const map: LinearMap = { nInputs: d, nOutputs: g, weights: b, bias, mean };
    return covariance === undefined ? map : reduceRank(map, covariance, rank!);
  }
}

/** W·V·Vᵀ for the top `rank` eigenvectors V of WᵀAW; A (d, d) symmetric. */
function reduceRank(map: LinearMap, a: Float64Array, rank: number): LinearMap {
  const { nInputs: d, nOutputs: g, weights: w } = map;
  // AW (d, g), then C = Wᵀ(AW) (g, g).
  const aw = new Float64Array(d * g);
  for (let i = 0; i < d; i++) {
    for (let k = 0; k < d; k++) {
      const aik = a[i * d + k]!;
      if (aik === 0) continue;
      for (let c = 0; c < g; c++) aw[i * g + c] = aw[i * g + c]! + aik * w[k * g + c]!;
    }
  }
  const cov = new Float64Array(g * g);
  for (let i = 0; i < d; i++) {
    for (let r = 0; r < g; r++) {
      const wir = w[i * g + r]!;
      if (wir === 0) continue;
      for (let c = 0; c < g; c++) cov[r * g + c] = cov[r * g + c]! + wir * aw[i * g + c]!;
    }
  }
  const { values, vectors } = symmetricEigen(cov, g);
  const order = Array.from({ length: g }, (_, i) => i).sort((x, y) => values[y]! - values[x]! || x - y).slice(0, rank);
  const up = new Float64Array(rank * g);
  order.forEach((column, r) => {
    for (let k = 0; k < g; k++) up[r * g + k] = vectors[k * g + column]!;
  });
  const down = new Float64Array(d * rank);
  const weights = new Float64Array(d * g);
  for (let i = 0; i < d; i++) {
    for (let r = 0; r < rank; r++) {
      let s = 0;
      for (let k = 0; k < g; k++) s += w[i * g + k]! * up[r * g + k]!;
      down[i * rank + r] = s;
    }
    for (let r = 0; r < rank; r++) {
      const dir = down[i * rank + r]!;
      for (let k = 0; k < g; k++) weights[i * g + k] = weights[i * g + k]! + dir * up[r * g + k]!;
    }
  }
  return { ...map, weights, factors: { rank, down, up } };
}

/**
 * Eigenvalues and eigenvectors (columns of `vectors`, (n, n) row-major) of a symmetric matrix by
 * cyclic Jacobi rotations: slow for large n but exact to rounding and simple, and n here is a
 * layer's group count (hundreds at most).
 */
export function symmetricEigen(matrix: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(matrix);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let offDiagonal = 0;
    let diagonal = 0;
    for (let p = 0; p < n; p++) {
      diagonal += a[p * n + p]! * a[p * n + p]!;
      for (let q = p + 1; q < n; q++) offDiagonal += a[p * n + q]! * a[p * n + q]!;
    }
    if (offDiagonal <= 1e-30 * Math.max(diagonal, 1e-300)) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (apq === 0) continue;
        const theta = (a[q * n + q]! - a[p * n + p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p]!;
          const akq = a[k * n + q]!;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]!;
          const aqk = a[q * n + k]!;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]!;
          const vkq = v[k * n + q]!;
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  return { values: Float64Array.from({ length: n }, (_, i) => a[i * n + i]!), vectors: v };
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
  if (map.factors !== undefined) {
    applyFactors(map, map.factors, x, xOffset, out);
    return;
  }
  const { nInputs: d, nOutputs: g, weights, bias } = map;
  for (let k = 0; k < g; k++) out[k] = bias[k]!;
  for (let i = 0; i < d; i++) {
    const xi = x[xOffset + i]!;
    if (xi === 0) continue;
    const row = i * g;
    for (let k = 0; k < g; k++) out[k] = out[k]! + xi * weights[row + k]!;
  }
}

function applyFactors(map: LinearMap, factors: LowRankFactors, x: ArrayLike<number>, xOffset: number, out: Float64Array | Float32Array): void {
  const { nInputs: d, nOutputs: g, bias } = map;
  const { rank, down, up } = factors;
  for (let k = 0; k < g; k++) out[k] = bias[k]!;
  for (let r = 0; r < rank; r++) {
    let z = 0;
    for (let i = 0; i < d; i++) z += x[xOffset + i]! * down[i * rank + r]!;
    const row = r * g;
    for (let k = 0; k < g; k++) out[k] = out[k]! + z * up[row + k]!;
  }
}
