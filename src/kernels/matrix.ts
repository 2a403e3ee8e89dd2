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
 * The matrix kernels the engine calls. Part 1 ships the pure-TS reference; the native addon
 * implements the same interface, so the engine never knows which one runs.
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
