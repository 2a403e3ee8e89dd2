/**
 * A compact tensor whose rows live in several buffers: some resident, some in a staging buffer
 * that holds them only while their layer phase runs. The kernels multiply it piece by piece.
 *
 * Why rows, and why this is exact: every kernel computes output row r as one dot product of
 * row r's bytes with the input (native/src/halo_api.c `matmul_chunk`; the TS reference likewise),
 * so the same row bytes in another buffer give the same bits. Splitting *columns* instead would
 * add partial dot products in another order, which rounds differently; the W_o and W_2 compact
 * tensors are therefore split by output rows too, never by group columns.
 */
import { HaloError } from "../base/index.js";
import { rowBytes, type GgmlType, type Matrix, type MatrixKernels } from "../kernels/index.js";

/** Rows [rowStart, rowEnd) of the whole compact tensor, held by `matrix` as its rows 0… */
export interface RowPiece {
  readonly rowStart: number;
  readonly rowEnd: number;
  /** Undefined while the rows are not loaded: multiplying them then throws instead of reading stale bytes. */
  matrix: Matrix | undefined;
}

const NO_BYTES = new Uint8Array(0);

export class RowSplitMatrix implements Matrix {
  readonly rowBytes: number;
  /** Empty: the bytes are in the pieces, and a kernel that is not `rowSplitKernels` rejects this matrix's size. */
  readonly data = NO_BYTES;

  constructor(
    readonly name: string,
    readonly type: GgmlType,
    readonly nRows: number,
    readonly nCols: number,
    /** Ascending, disjoint, covering [0, nRows). */
    readonly pieces: readonly RowPiece[],
  ) {
    this.rowBytes = rowBytes(type, nCols);
    let next = 0;
    for (const p of pieces) {
      if (p.rowStart !== next || p.rowEnd <= p.rowStart) throw new HaloError("HALO_ERR_USAGE", `row pieces of '${name}' must tile [0, ${nRows}) in order`);
      next = p.rowEnd;
    }
    if (next !== nRows) throw new HaloError("HALO_ERR_USAGE", `row pieces of '${name}' cover ${next} of ${nRows} rows`);
  }
}

function loaded(w: RowSplitMatrix, piece: RowPiece): Matrix {
  if (piece.matrix === undefined) throw new HaloError("HALO_ERR_USAGE", `rows [${piece.rowStart}, ${piece.rowEnd}) of '${w.name}' are not loaded`);
  return piece.matrix;
}

/** Calls `run(matrix, localStart, localEnd, outputShift)` for every piece overlapping rows [rowStart, rowEnd). */
function eachPiece(w: RowSplitMatrix, rowStart: number, rowEnd: number, run: (m: Matrix, start: number, end: number, shift: number) => void): void {
  if (!(Number.isInteger(rowStart) && Number.isInteger(rowEnd) && rowStart >= 0 && rowEnd <= w.nRows && rowStart <= rowEnd)) {
    throw new HaloError("HALO_ERR_USAGE", `rows [${rowStart}, ${rowEnd}) outside '${w.name}' (${w.nRows} rows)`);
  }
  for (const piece of w.pieces) {
    const lo = Math.max(rowStart, piece.rowStart);
    const hi = Math.min(rowEnd, piece.rowEnd);
    if (lo < hi) run(loaded(w, piece), lo - piece.rowStart, hi - piece.rowStart, lo - rowStart);
  }
}

/** `base`, taught to multiply RowSplitMatrix pieces; every other matrix goes straight through. */
export function rowSplitKernels(base: MatrixKernels): MatrixKernels {
  return {
    name: base.name,
    matvec(w, x, xOffset, y, yOffset, rowStart, rowEnd, colStart, colEnd) {
      if (!(w instanceof RowSplitMatrix)) return base.matvec(w, x, xOffset, y, yOffset, rowStart, rowEnd, colStart, colEnd);
      eachPiece(w, rowStart, rowEnd, (m, start, end, shift) => base.matvec(m, x, xOffset, y, yOffset + shift, start, end, colStart, colEnd));
    },
    matmul(w, nTokens, x, xOffset, xStride, y, yOffset, yStride, rowStart, rowEnd, colStart, colEnd) {
      if (!(w instanceof RowSplitMatrix)) return base.matmul(w, nTokens, x, xOffset, xStride, y, yOffset, yStride, rowStart, rowEnd, colStart, colEnd);
      eachPiece(w, rowStart, rowEnd, (m, start, end, shift) => base.matmul(m, nTokens, x, xOffset, xStride, y, yOffset + shift, yStride, start, end, colStart, colEnd));
    },
    getRow(w, row, out) {
      if (!(w instanceof RowSplitMatrix)) return base.getRow(w, row, out);
      eachPiece(w, row, row + 1, (m, start) => base.getRow(m, start, out));
    },
    attend(...args) {
      base.attend(...args);
    },
  };
}
