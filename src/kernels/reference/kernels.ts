/**
 * The pure-TS kernels: the oracle that native kernels are tested against, and the fallback
 * when the addon is unavailable (or HALO_KERNELS=ts). Each row is dequantized and dotted in
 * float64, so these are more accurate than the fast paths, not bit-identical to them; so is
 * attention (attention.ts).
 */
import { checkMatvecBounds, type Matrix, type MatrixKernels } from "../matrix.js";
import { QUANT_TRAITS } from "../types.js";
import { createReferenceAttend } from "./attention.js";

export function createReferenceKernels(): MatrixKernels {
  let scratch = new Float32Array(0);
  const rowScratch = (n: number): Float32Array => {
    if (scratch.length < n) scratch = new Float32Array(n);
    return scratch;
  };

  const matvec: MatrixKernels["matvec"] = (w, x, xOffset, y, yOffset, rowStart, rowEnd, colStart, colEnd) => {
    checkMatvecBounds(w, rowStart, rowEnd, colStart, colEnd);
    const traits = QUANT_TRAITS[w.type];
    const nCols = colEnd - colStart;
    const colByteOffset = (colStart / traits.blockSize) * traits.blockBytes;
    if (w.type === "F32" && w.data.byteOffset % 4 === 0) {
      // F32 rows need no decoding: read them through a typed view.
      const values = new Float32Array(w.data.buffer, w.data.byteOffset, w.data.byteLength / 4);
      for (let r = rowStart; r < rowEnd; r++) {
        const base = r * w.nCols + colStart;
        let sum = 0;
        for (let c = 0; c < nCols; c++) sum += values[base + c]! * x[xOffset + c]!;
        y[yOffset + r - rowStart] = sum;
      }
      return;
    }
    const row = rowScratch(nCols);
    for (let r = rowStart; r < rowEnd; r++) {
      traits.dequantizeRowRef(w.data, r * w.rowBytes + colByteOffset, row, nCols);
      let sum = 0;
      for (let c = 0; c < nCols; c++) sum += row[c]! * x[xOffset + c]!;
      y[yOffset + r - rowStart] = sum;
    }
  };

  return {
    name: "ts-reference",
    matvec,
    matmul(w, nTokens, x, xOffset, xStride, y, yOffset, yStride, rowStart, rowEnd, colStart, colEnd) {
      for (let t = 0; t < nTokens; t++) {
        matvec(w, x, xOffset + t * xStride, y, yOffset + t * yStride, rowStart, rowEnd, colStart, colEnd);
      }
    },
    getRow(w: Matrix, rowIndex: number, out: Float32Array) {
      checkMatvecBounds(w, rowIndex, rowIndex + 1, 0, w.nCols);
      QUANT_TRAITS[w.type].dequantizeRowRef(w.data, rowIndex * w.rowBytes, out, w.nCols);
    },
    attend: createReferenceAttend(),
  };
}
