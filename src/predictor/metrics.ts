/** How well predicted group scores rank the groups the way their true importance does. */

/** Indices of the k largest values of v[offset, offset + n), largest first (ties: lower index first). */
export function topK(v: ArrayLike<number>, offset: number, n: number, k: number): number[] {
  return Array.from({ length: n }, (_, i) => i)
    .sort((a, b) => v[offset + b]! - v[offset + a]! || a - b)
    .slice(0, k);
}

/** |top-k(predicted) ∩ top-k(truth)| / k for one sample of n groups. */
export function recallAtK(predicted: ArrayLike<number>, predictedOffset: number, truth: ArrayLike<number>, truthOffset: number, n: number, k: number): number {
  const wanted = new Set(topK(truth, truthOffset, n, k));
  return topK(predicted, predictedOffset, n, k).filter((i) => wanted.has(i)).length / k;
}

/** Average ranks (ties share the mean rank), 0-based. */
function ranks(v: ArrayLike<number>, offset: number, n: number): Float64Array {
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => v[offset + a]! - v[offset + b]!);
  const out = new Float64Array(n);
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && v[offset + order[j + 1]!] === v[offset + order[i]!]) j++;
    for (let t = i; t <= j; t++) out[order[t]!] = (i + j) / 2;
    i = j + 1;
  }
  return out;
}

/** Spearman's rank correlation of two length-n samples (NaN when either is constant). */
export function spearman(a: ArrayLike<number>, aOffset: number, b: ArrayLike<number>, bOffset: number, n: number): number {
  const ra = ranks(a, aOffset, n);
  const rb = ranks(b, bOffset, n);
  const mean = (n - 1) / 2;
  let cov = 0;
  let va = 0;
  let vb = 0;
  for (let i = 0; i < n; i++) {
    cov += (ra[i]! - mean) * (rb[i]! - mean);
    va += (ra[i]! - mean) ** 2;
    vb += (rb[i]! - mean) ** 2;
  }
  return cov / Math.sqrt(va * vb);
}
