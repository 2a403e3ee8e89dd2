/**
 * The op case table: which ops, types and shapes the native kernels are checked on (ops.test.ts)
 * and timed on (bench/ops.ts, perf mode), plus the per-op, per-type error budgets.
 *
 * To add an op: (1) add its name to `OpName` and a row to `MAX_NMSE` (the compiler then asks for a
 * budget for every type), and (2) add a branch to `runOp` and to `writtenIndices` below; add shapes
 * to `opCases` if the defaults do not exercise it. ops.test.ts and bench/ops.ts pick it up.
 * To add a type: add it to GgmlType and QUANT_TRAITS (src/kernels/types.ts); MAX_NMSE then fails
 * to compile until the type has a budget for every op.
 */
import type { Matrix, MatrixKernels } from "../../src/kernels/matrix.js";
import { createMatrix } from "../../src/kernels/matrix.js";
import { QUANT_TRAITS, rowBytes, type GgmlType } from "../../src/kernels/types.js";
import { SeededRandom } from "../../src/base/index.js";

export type OpName = "matvec" | "matmul" | "getRow";

export const OP_NAMES = ["matvec", "matmul", "getRow"] as const satisfies readonly OpName[];
export const TYPES = ["F32", "F16", "Q8_0", "Q4_0"] as const satisfies readonly GgmlType[];

/**
 * Largest normalized mean squared error, Σ(native − reference)² / Σ reference², per op and type,
 * where the reference is fed the activations the native kernel actually multiplies: x rounded
 * through the weight type's `dotType` (Q8_0 for quantized weights, as in ggml; unchanged for
 * float weights). What remains is f32 accumulation against the float64 reference, so the
 * budgets are tight: one wrong element in a row costs ~1e-3. getRow must be exact.
 */
export const MAX_NMSE = {
  matvec: { F32: 1e-10, F16: 1e-10, Q8_0: 1e-9, Q4_0: 1e-9 },
  matmul: { F32: 1e-10, F16: 1e-10, Q8_0: 1e-9, Q4_0: 1e-9 },
  getRow: { F32: 0, F16: 0, Q8_0: 0, Q4_0: 0 },
} as const satisfies Record<OpName, Record<GgmlType, number>>;

/**
 * What rounding the activations to the dot type may cost, as NMSE against the reference fed
 * unrounded f32 activations, over all of a type's matvec and matmul cases together (a single
 * output is too noisy to judge). ggml's test-backend-ops bound for mul_mat.
 */
export const MAX_ACTIVATION_ROUNDING_NMSE = 5e-4;

/** The thread counts every case runs with; results must be identical across them. */
export const THREAD_COUNTS = [1, 2, 3] as const;

export interface OpShape {
  readonly nRows: number;
  readonly nCols: number;
  /** Output rows [rowStart, rowEnd); getRow reads row rowStart. */
  readonly rowStart: number;
  readonly rowEnd: number;
  /** Input columns [colStart, colEnd), block-aligned for quantized types. */
  readonly colStart: number;
  readonly colEnd: number;
  /** Tokens for matmul (1 otherwise). */
  readonly nTokens: number;
}

export interface OpCase {
  readonly op: OpName;
  readonly type: GgmlType;
  readonly shape: OpShape;
}

export function describeCase(c: OpCase): string {
  const s = c.shape;
  const tokens = c.op === "matmul" ? ` x${s.nTokens} tokens` : "";
  return `${c.op} ${c.type} ${s.nRows}x${s.nCols} rows [${s.rowStart},${s.rowEnd}) cols [${s.colStart},${s.colEnd})${tokens}`;
}

function fullShape(nRows: number, nCols: number, nTokens = 1): OpShape {
  return { nRows, nCols, rowStart: 0, rowEnd: nRows, colStart: 0, colEnd: nCols, nTokens };
}

/** The fixed table: odd row counts, ragged float widths, block-aligned sub-ranges, 1..9 tokens. */
export function opCases(): OpCase[] {
  const cases: OpCase[] = [];
  for (const type of TYPES) {
    const bs = QUANT_TRAITS[type].blockSize;
    // Float types get widths that leave every SIMD tail length; quantized ones odd block counts.
    const widths = bs === 1 ? [1, 7, 16, 17, 33, 173, 1024] : [32, 64, 96, 352, 1024];
    const shapes: OpShape[] = [];
    for (const nRows of [1, 3, 17, 173]) {
      for (const nCols of widths) shapes.push(fullShape(nRows, nCols));
    }
    // Sub-ranges: rows and block-aligned columns that start and end inside the matrix.
    shapes.push({ nRows: 173, nCols: 32 * 12, rowStart: 5, rowEnd: 150, colStart: 32 * 2, colEnd: 32 * 9, nTokens: 1 });
    shapes.push({ nRows: 17, nCols: 32 * 5, rowStart: 16, rowEnd: 17, colStart: 32 * 4, colEnd: 32 * 5, nTokens: 1 });
    shapes.push({ nRows: 173, nCols: 1024, rowStart: 0, rowEnd: 0, colStart: 0, colEnd: 1024, nTokens: 1 });
    shapes.push({ nRows: 3, nCols: 64, rowStart: 0, rowEnd: 3, colStart: 32, colEnd: 32, nTokens: 1 });
    for (const shape of shapes) cases.push({ op: "matvec", type, shape });
    for (let nTokens = 1; nTokens <= 9; nTokens++) {
      cases.push({ op: "matmul", type, shape: fullShape(17, 32 * 3, nTokens) });
      cases.push({ op: "matmul", type, shape: { nRows: 173, nCols: 32 * 16, rowStart: 3, rowEnd: 170, colStart: 32, colEnd: 32 * 15, nTokens } });
    }
    for (const nRows of [1, 3, 17, 173]) {
      for (const nCols of widths) {
        cases.push({ op: "getRow", type, shape: { ...fullShape(nRows, nCols), rowStart: nRows - 1, rowEnd: nRows } });
      }
    }
  }
  return cases;
}

/** Perf mode: matvec over the 2048x2048 (attention) and 5632x2048 (FFN) weights of a 1B model, per type. */
export function perfCases(): OpCase[] {
  const cases: OpCase[] = [];
  for (const type of TYPES) {
    for (const [nRows, nCols] of [[2048, 2048], [5632, 2048]] as const) cases.push({ op: "matvec", type, shape: fullShape(nRows, nCols) });
  }
  return cases;
}

/** Perf mode for prefill: one matmul of nTokens against nTokens matvecs on the same weights. */
export function prefillPerfCases(nTokens: number): OpCase[] {
  return TYPES.map((type) => ({ op: "matmul", type, shape: fullShape(2048, 2048, nTokens) }));
}

/** Inputs for one case; x and y carry offsets, strides and gaps so that stray reads and writes show. */
export interface OpData {
  readonly matrix: Matrix;
  /** (nTokens, xStride) from xOffset. */
  readonly x: Float32Array;
  readonly xOffset: number;
  readonly xStride: number;
  readonly yOffset: number;
  readonly yStride: number;
  /** Length the output array needs. */
  readonly yLength: number;
}

/** Weights are Gaussian with a per-row scale and occasional outliers, encoded by the reference quantizer. */
export function makeOpData(c: OpCase, seed: number): OpData {
  const random = new SeededRandom(seed);
  const { nRows, nCols, rowStart, rowEnd, colStart, colEnd, nTokens } = c.shape;
  const bytesPerRow = rowBytes(c.type, nCols);
  const data = new Uint8Array(bytesPerRow * nRows);
  const row = new Float32Array(nCols);
  for (let r = 0; r < nRows; r++) {
    const scale = Math.exp(0.5 * random.nextGaussian());
    for (let i = 0; i < nCols; i++) row[i] = scale * random.nextGaussian() * (random.nextFloat() < 0.01 ? 8 : 1);
    QUANT_TRAITS[c.type].quantizeRowRef(row, data, r * bytesPerRow);
  }
  const matrix = createMatrix(`${c.op}.${c.type}`, c.type, nRows, nCols, data);
  const nIn = colEnd - colStart;
  const nOut = rowEnd - rowStart;
  const xOffset = random.nextInt(5);
  const xStride = nIn + random.nextInt(4);
  const x = new Float32Array(xOffset + nTokens * xStride + 3);
  for (let i = 0; i < x.length; i++) x[i] = random.nextGaussian();
  const yOffset = c.op === "getRow" ? 0 : random.nextInt(5);
  const yStride = nOut + random.nextInt(4);
  const yLength = c.op === "getRow" ? nCols + 2 : yOffset + nTokens * yStride + 2;
  return { matrix, x, xOffset, xStride, yOffset, yStride, yLength };
}

/**
 * A copy of d.x where each token's input segment is rounded through the dot type of c's
 * weights (quantized then dequantized, block by block from the segment start), i.e. the
 * activations the native kernel multiplies. Float weights use x unchanged.
 */
export function roundActivations(c: OpCase, d: OpData): Float32Array {
  const dotTraits = QUANT_TRAITS[QUANT_TRAITS[c.type].dotType];
  const x = d.x.slice();
  if (!dotTraits.isQuantized || c.op === "getRow") return x;
  const nIn = c.shape.colEnd - c.shape.colStart;
  const encoded = new Uint8Array((nIn / dotTraits.blockSize) * dotTraits.blockBytes);
  const decoded = new Float32Array(nIn);
  for (let t = 0; t < c.shape.nTokens; t++) {
    const start = d.xOffset + t * d.xStride;
    dotTraits.quantizeRowRef(d.x.subarray(start, start + nIn), encoded, 0);
    dotTraits.dequantizeRowRef(encoded, 0, decoded, nIn);
    x.set(decoded, start);
  }
  return x;
}

export function runOp(kernels: MatrixKernels, c: OpCase, d: OpData, y: Float32Array): void {
  const s = c.shape;
  switch (c.op) {
    case "matvec":
      kernels.matvec(d.matrix, d.x, d.xOffset, y, d.yOffset, s.rowStart, s.rowEnd, s.colStart, s.colEnd);
      return;
    case "matmul":
      kernels.matmul(d.matrix, s.nTokens, d.x, d.xOffset, d.xStride, y, d.yOffset, d.yStride, s.rowStart, s.rowEnd, s.colStart, s.colEnd);
      return;
    case "getRow":
      kernels.getRow(d.matrix, s.rowStart, y);
      return;
    default:
      c.op satisfies never;
  }
}

/** The indices of y an op writes; every other element must keep its initial value. */
export function writtenIndices(c: OpCase, d: OpData): number[] {
  const s = c.shape;
  const indices: number[] = [];
  switch (c.op) {
    case "matvec":
    case "matmul": {
      const nTokens = c.op === "matvec" ? 1 : s.nTokens;
      for (let t = 0; t < nTokens; t++) {
        for (let r = 0; r < s.rowEnd - s.rowStart; r++) indices.push(d.yOffset + t * d.yStride + r);
      }
      return indices;
    }
    case "getRow":
      for (let i = 0; i < s.nCols; i++) indices.push(i);
      return indices;
    default:
      return c.op satisfies never;
  }
}

/** Σ(a − b)² / Σ b² over the given indices (0 when both are all zero). */
export function nmse(actual: Float32Array, expected: Float32Array, indices: readonly number[]): number {
  let err = 0;
  let norm = 0;
  for (const i of indices) {
    const e = expected[i]!;
    const diff = actual[i]! - e;
    err += diff * diff;
    norm += e * e;
  }
  if (norm === 0) return err === 0 ? 0 : Infinity;
  return err / norm;
}

/** Weight bytes a case reads per call (the bandwidth the bench reports). */
export function weightBytes(c: OpCase): number {
  const s = c.shape;
  return (s.rowEnd - s.rowStart) * rowBytes(c.type, s.colEnd - s.colStart);
}
