/**
 * A weight matrix as the kernels see it: raw GGUF bytes, row-major, `nCols` elements per row
 * (ggml ne[0]) and `nRows` rows (ggml ne[1]). The bytes are used in place; nothing is decoded
 * up front.
 */
import { HaloError } from "../base/index.js";
import { QUANT_TRAITS, rowBytes, type GgmlType } from "./types.js";

export interface Matrix {
  readonly name: string;
  readonly type: GgmlType;
  readonly nRows: number;
  readonly nCols: number;
  /** Bytes per row. */
  readonly rowBytes: number;
  /** (nRows, rowBytes) raw bytes. */
  readonly data: Uint8Array;
}

export function createMatrix(name: string, type: GgmlType, nRows: number, nCols: number, data: Uint8Array): Matrix {
  const traits = QUANT_TRAITS[type];
  if (nCols % traits.blockSize !== 0) {
    throw new HaloError("HALO_ERR_GGUF_SHAPE", `tensor '${name}': ${nCols} columns is not a multiple of the ${type} block size ${traits.blockSize}`);
  }
  const bytesPerRow = rowBytes(type, nCols);
  if (data.length !== bytesPerRow * nRows) {
    throw new HaloError("HALO_ERR_GGUF_TENSOR", `tensor '${name}': ${data.length} bytes, expected ${bytesPerRow * nRows}`);
  }
  return { name, type, nRows, nCols, rowBytes: bytesPerRow, data };
}

/**
 * The matrix kernels the engine calls (and attention, the one product that is not against a
 * weight matrix). Part 1 ships the pure-TS reference; the native addon implements the same
 * interface, so the engine never knows which one runs.
 */
export interface MatrixKernels {
  readonly name: string;
  /**
   * y[yOffset + r] = Σ_{c < colEnd − colStart} W[rowStart + r, colStart + c] · x[xOffset + c]
   * for r < rowEnd − rowStart. Column bounds must be block-aligned for quantized types.
   */
  matvec(
    w: Matrix,
    x: Float32Array,
    xOffset: number,
    y: Float32Array,
    yOffset: number,
    rowStart: number,
    rowEnd: number,
    colStart: number,
    colEnd: number,
  ): void;
  /**
   * The same product for `nTokens` inputs at once: X is (nTokens, xStride), Y is (nTokens, yStride).
   * Prefill uses it; an implementation may loop over matvec.
   */
  matmul(
    w: Matrix,
    nTokens: number,
    x: Float32Array,
    xOffset: number,
    xStride: number,
    y: Float32Array,
    yOffset: number,
    yStride: number,
    rowStart: number,
    rowEnd: number,
    colStart: number,
    colEnd: number,
  ): void;
  /** out[0..nCols) = row `row` of W as floats (embedding lookup). */
  getRow(w: Matrix, row: number, out: Float32Array): void;
  /**
   * Attention of one token over one KV group's cache (a KV head and the `nQueryHeads` query heads
   * that share it). For h < nQueryHeads, d < headDim:
   *
   *   out[outOffset + h·headDim + d] = Σ_{s∈S} p_{h,s} · values[s·headDim + d]
   *   p_{h,·} = softmax_{s∈S}(scale · Σ_d q[qOffset + h·headDim + d] · keys[s·headDim + d])
   *
   * where S = { s < nPositions : valid[s] === 1 }. A position outside S gets no weight and its
   * key and value are never read (a lost position is not a zero key); with S empty, out is 0.
   *
   * Buffers, with contextLength = valid.length:
   * - q: (nQueryHeads, headDim) from qOffset
   * - keys, values: (contextLength, headDim), exactly contextLength·headDim long
   * - valid: (contextLength) 1 where the position's key and value were written
   * - out: (nQueryHeads, headDim) from outOffset, not overlapping q, keys or values
   *
   * nPositions ≤ contextLength; headDim ≥ 1; scale finite (usually 1/√headDim). The scores
   * scratch belongs to the implementation: it grows to the largest nQueryHeads·nPositions seen
   * and is reused, so calls allocate nothing once warm. Throws HALO_ERR_USAGE on bad arguments.
   */
  attend(
    nQueryHeads: number,
    headDim: number,
    q: Float32Array,
    qOffset: number,
    keys: Float32Array,
    values: Float32Array,
    valid: Uint8Array,
    nPositions: number,
    scale: number,
    out: Float32Array,
    outOffset: number,
  ): void;
}

function isCount(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

function overlaps(a: Float32Array, aStart: number, aLength: number, b: Float32Array, bStart: number, bLength: number): boolean {
  if (a.buffer !== b.buffer || aLength === 0 || bLength === 0) return false;
  const a0 = a.byteOffset + 4 * aStart;
  const b0 = b.byteOffset + 4 * bStart;
  return a0 < b0 + 4 * bLength && b0 < a0 + 4 * aLength;
}

/** Throws HALO_ERR_USAGE unless the arguments of MatrixKernels.attend are consistent (the checks the native addon makes). */
export function checkAttendArgs(
  nQueryHeads: number,
  headDim: number,
  q: Float32Array,
  qOffset: number,
  keys: Float32Array,
  values: Float32Array,
  valid: Uint8Array,
  nPositions: number,
  scale: number,
  out: Float32Array,
  outOffset: number,
): void {
  const fail = (message: string): never => {
    throw new HaloError("HALO_ERR_USAGE", `attend: ${message}`);
  };
  if (!isCount(nQueryHeads)) fail(`nQueryHeads must be an integer >= 0, got ${nQueryHeads}`);
  if (!isCount(headDim) || headDim < 1) fail(`headDim must be an integer >= 1, got ${headDim}`);
  const contextLength = valid.length;
  if (!isCount(nPositions) || nPositions > contextLength) fail(`nPositions ${nPositions} outside [0, contextLength ${contextLength}] (valid.length)`);
  if (keys.length !== contextLength * headDim || values.length !== contextLength * headDim) {
    fail(`keys hold ${keys.length} and values ${values.length} floats, expected contextLength ${contextLength} (valid.length) x headDim ${headDim}`);
  }
  const width = nQueryHeads * headDim;
  if (!isCount(qOffset) || qOffset + width > q.length) fail(`q (length ${q.length}) too short for ${nQueryHeads} heads of ${headDim} at offset ${qOffset}`);
  if (!isCount(outOffset) || outOffset + width > out.length) fail(`out (length ${out.length}) too short for ${nQueryHeads} heads of ${headDim} at offset ${outOffset}`);
  if (!Number.isFinite(scale) || !Number.isFinite(Math.fround(scale))) fail(`scale must be finite as a float, got ${scale}`);
  if (overlaps(out, outOffset, width, q, qOffset, width)) fail("out overlaps q: the output must be a separate range");
  if (overlaps(out, outOffset, width, keys, 0, keys.length) || overlaps(out, outOffset, width, values, 0, values.length)) fail("out overlaps the keys or values");
}

/** Throws unless [colStart, colEnd) and [rowStart, rowEnd) are valid, block-aligned ranges of w. */
export function checkMatvecBounds(w: Matrix, rowStart: number, rowEnd: number, colStart: number, colEnd: number): void {
  const blockSize = QUANT_TRAITS[w.type].blockSize;
  if (!(0 <= rowStart && rowStart <= rowEnd && rowEnd <= w.nRows)) {
    throw new HaloError("HALO_ERR_USAGE", `matvec on '${w.name}': rows [${rowStart}, ${rowEnd}) outside [0, ${w.nRows})`);
  }
  if (!(0 <= colStart && colStart <= colEnd && colEnd <= w.nCols) || colStart % blockSize !== 0 || colEnd % blockSize !== 0) {
    throw new HaloError("HALO_ERR_USAGE", `matvec on '${w.name}': columns [${colStart}, ${colEnd}) not ${blockSize}-aligned inside [0, ${w.nCols})`);
  }
}
