/**
 * The op case table: which ops, types and shapes the native kernels are checked on (ops.test.ts)
 * and timed on (bench/ops.ts, perf mode), plus the per-op, per-type error budgets.
 *
 * To add an op: (1) add its name to `OpName` and a row to `MAX_NMSE` (the compiler then asks for a
 * budget for every type it runs on), and (2) add a branch to `makeOpData`, `runOp`,
 * `writtenIndices`, `describeCase` and `weightBytes` below (each `switch` fails to compile until
 * it has one), plus shapes to `opCases`. ops.test.ts and bench/ops.ts pick it up. An op that is
 * not a product with a weight matrix (attend) gets its own case, shape and data types in the unions.
 * To add a type: add it to GgmlType and QUANT_TRAITS (src/kernels/types.ts); MAX_NMSE then fails
 * to compile until the type has a budget for every matrix op.
 */
import type { Matrix, MatrixKernels } from "../../src/kernels/matrix.js";
import { createMatrix } from "../../src/kernels/matrix.js";
import { QUANT_TRAITS, rowBytes, type GgmlType } from "../../src/kernels/types.js";
import { SeededRandom } from "../../src/base/index.js";

/** Ops that multiply by (or read) a weight matrix. */
export type MatrixOpName = "matvec" | "matmul" | "getRow";
export type OpName = MatrixOpName | "attend";

export const MATRIX_OP_NAMES = ["matvec", "matmul", "getRow"] as const satisfies readonly MatrixOpName[];
export const OP_NAMES = [...MATRIX_OP_NAMES, "attend"] as const satisfies readonly OpName[];
export const TYPES = ["F32", "F16", "Q8_0", "Q4_0"] as const satisfies readonly GgmlType[];
/** attend reads a float32 KV cache: that is its one type. */
export const ATTEND_TYPES = ["F32"] as const satisfies readonly GgmlType[];
export type AttendType = (typeof ATTEND_TYPES)[number];

/**
 * Largest normalized mean squared error, Σ(native − reference)² / Σ reference², per op and type,
 * where the reference is fed the activations the native kernel actually multiplies: x rounded
 * through the weight type's `dotType` (Q8_0 for quantized weights, as in ggml; unchanged for
 * float weights). What remains is f32 accumulation against the float64 reference, so the
 * budgets are tight: one wrong element in a row costs ~1e-3. getRow must be exact. attend is f32
 * scores, exponentials and sums against float64 ones (measured worst ~1e-13 over the table,
 * peaked softmaxes included); a position wrongly weighted or read costs far more than 1e-10.
 */
export const MAX_NMSE = {
  matvec: { F32: 1e-10, F16: 1e-10, Q8_0: 1e-9, Q4_0: 1e-9 },
  matmul: { F32: 1e-10, F16: 1e-10, Q8_0: 1e-9, Q4_0: 1e-9 },
  getRow: { F32: 0, F16: 0, Q8_0: 0, Q4_0: 0 },
  attend: { F32: 1e-10 },
} as const satisfies { readonly [O in MatrixOpName]: Record<GgmlType, number> } & { readonly attend: Record<AttendType, number> };

export function maxNmse(c: OpCase): number {
  return c.op === "attend" ? MAX_NMSE.attend[c.type] : MAX_NMSE[c.op][c.type];
}

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

export interface MatrixOpCase {
  readonly op: MatrixOpName;
  readonly type: GgmlType;
  readonly shape: OpShape;
}

/** Which of the first nPositions cache positions are valid (valid[s] === 1). */
export type Validity = "all" | "random" | "allButOne" | "none";
export const VALIDITIES = ["all", "random", "allButOne", "none"] as const satisfies readonly Validity[];

export interface AttendShape {
  readonly nQueryHeads: number;
  readonly headDim: number;
  /** Positions attended over, ≤ contextLength (the slabs hold contextLength rows). */
  readonly nPositions: number;
  readonly contextLength: number;
  readonly validity: Validity;
  /** scale = scaleFactor / √headDim; 8 makes the softmax peaked (many weights underflow to 0). */
  readonly scaleFactor: number;
}

export interface AttendOpCase {
  readonly op: "attend";
  readonly type: AttendType;
  readonly shape: AttendShape;
}

export type OpCase = MatrixOpCase | AttendOpCase;

export function describeCase(c: OpCase): string {
  if (c.op === "attend") {
    const a = c.shape;
    return `attend ${c.type} ${a.nQueryHeads} heads x ${a.headDim}, ${a.nPositions} of ${a.contextLength} positions, ${a.validity} valid, scale x${a.scaleFactor}`;
  }
  const s = c.shape;
  const tokens = c.op === "matmul" ? ` x${s.nTokens} tokens` : "";
  return `${c.op} ${c.type} ${s.nRows}x${s.nCols} rows [${s.rowStart},${s.rowEnd}) cols [${s.colStart},${s.colEnd})${tokens}`;
}

function fullShape(nRows: number, nCols: number, nTokens = 1): OpShape {
  return { nRows, nCols, rowStart: 0, rowEnd: nRows, colStart: 0, colEnd: nCols, nTokens };
}

/**
 * The fixed table: odd row counts, ragged float widths, block-aligned sub-ranges, 1..9 tokens;
 * then attention over every head width (3 and 12 leave SIMD tails, 40 is not a multiple of 16),
 * 1, 2 and 8 query heads, 1..600 positions and every validity pattern.
 */
export function opCases(): OpCase[] {
  return [...matrixOpCases(), ...attendOpCases()];
}

function matrixOpCases(): MatrixOpCase[] {
  const cases: MatrixOpCase[] = [];
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

export const ATTEND_HEAD_DIMS = [3, 8, 12, 40, 64, 128] as const;
export const ATTEND_QUERY_HEADS = [1, 2, 8] as const;
export const ATTEND_POSITIONS = [1, 2, 5, 17, 100, 333, 600] as const;

function attendOpCases(): AttendOpCase[] {
  const cases: AttendOpCase[] = [];
  let i = 0;
  for (const headDim of ATTEND_HEAD_DIMS) {
    for (const nQueryHeads of ATTEND_QUERY_HEADS) {
      for (const nPositions of ATTEND_POSITIONS) {
        for (const validity of VALIDITIES) {
          // The slabs run past nPositions by 0..6 rows; every third case has a peaked softmax.
          const shape = { nQueryHeads, headDim, nPositions, contextLength: nPositions + (i % 7), validity, scaleFactor: i % 3 === 0 ? 8 : 1 };
          cases.push({ op: "attend", type: "F32", shape });
          i++;
        }
      }
    }
  }
  // Long enough that the pool splits the heads over several workers.
  cases.push({ op: "attend", type: "F32", shape: { nQueryHeads: 8, headDim: 128, nPositions: 2048, contextLength: 2048, validity: "random", scaleFactor: 1 } });
  return cases;
}

/** Perf mode: matvec over the 2048x2048 (attention) and 5632x2048 (FFN) weights of a 1B model, per type. */
export function perfCases(): MatrixOpCase[] {
  const cases: MatrixOpCase[] = [];
  for (const type of TYPES) {
    for (const [nRows, nCols] of [[2048, 2048], [5632, 2048]] as const) cases.push({ op: "matvec", type, shape: fullShape(nRows, nCols) });
  }
  return cases;
}

/** Perf mode for prefill: one matmul of nTokens against nTokens matvecs on the same weights. */
export function prefillPerfCases(nTokens: number): MatrixOpCase[] {
  return TYPES.map((type) => ({ op: "matmul", type, shape: fullShape(2048, 2048, nTokens) }));
}

/** Perf mode for attention: one token of a TinyLlama-shape KV group (8 query heads of 64) over a growing cache. */
export function attendPerfCases(): AttendOpCase[] {
  return [128, 512, 2048].map((nPositions) => ({
    op: "attend",
    type: "F32",
    shape: { nQueryHeads: 8, headDim: 64, nPositions, contextLength: nPositions, validity: "all", scaleFactor: 1 },
  }));
}

/** Inputs for one matrix case; x and y carry offsets, strides and gaps so that stray reads and writes show. */
export interface MatrixOpData {
  readonly kind: "matrix";
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

/**
 * Inputs for one attend case. Keys and values of invalid positions, and of every position from
 * nPositions on (which are marked valid), are NaN: reading any of them poisons the output.
 */
export interface AttendOpData {
  readonly kind: "attend";
  /** (nQueryHeads, headDim) from qOffset, with a few floats either side */
  readonly q: Float32Array;
  readonly qOffset: number;
  /** (contextLength, headDim) */
  readonly keys: Float32Array;
  readonly values: Float32Array;
  /** (contextLength) */
  readonly valid: Uint8Array;
  readonly scale: number;
  /** Where the output starts in y. */
  readonly yOffset: number;
  /** Length the output array needs. */
  readonly yLength: number;
}

export type OpData = MatrixOpData | AttendOpData;

export function makeOpData(c: MatrixOpCase, seed: number): MatrixOpData;
export function makeOpData(c: AttendOpCase, seed: number): AttendOpData;
export function makeOpData(c: OpCase, seed: number): OpData;
export function makeOpData(c: OpCase, seed: number): OpData {
  return c.op === "attend" ? makeAttendData(c, seed) : makeMatrixData(c, seed);
}

function makeAttendData(c: AttendOpCase, seed: number): AttendOpData {
  const random = new SeededRandom(seed);
  const { nQueryHeads, headDim, nPositions, contextLength, validity, scaleFactor } = c.shape;
  const valid = new Uint8Array(contextLength).fill(1);
  const only = random.nextInt(nPositions);
  for (let s = 0; s < nPositions; s++) {
    const isValid = validity === "all" || (validity === "random" && random.nextFloat() < 0.7) || (validity === "allButOne" && s === only);
    // Any byte but 1 is invalid: mostly 0, sometimes other values.
    valid[s] = isValid ? 1 : [0, 0, 0, 2, 255][random.nextInt(5)]!;
  }
  const keys = new Float32Array(contextLength * headDim);
  const values = new Float32Array(contextLength * headDim);
  for (let s = 0; s < contextLength; s++) {
    const readable = s < nPositions && valid[s] === 1;
    for (let d = 0; d < headDim; d++) {
      keys[s * headDim + d] = readable ? random.nextGaussian() : NaN;
      values[s * headDim + d] = readable ? random.nextGaussian() : NaN;
    }
  }
  const qOffset = random.nextInt(5);
  const q = new Float32Array(qOffset + nQueryHeads * headDim + 3);
  for (let i = 0; i < q.length; i++) q[i] = random.nextGaussian();
  const yOffset = random.nextInt(5);
  return { kind: "attend", q, qOffset, keys, values, valid, scale: scaleFactor / Math.sqrt(headDim), yOffset, yLength: yOffset + nQueryHeads * headDim + 2 };
}

/** Weights are Gaussian with a per-row scale and occasional outliers, encoded by the reference quantizer. */
function makeMatrixData(c: MatrixOpCase, seed: number): MatrixOpData {
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
  return { kind: "matrix", matrix, x, xOffset, xStride, yOffset, yStride, yLength };
}

function asMatrix(c: OpCase, d: OpData): MatrixOpData {
  if (d.kind !== "matrix") throw new Error(`${describeCase(c)}: got attend data`);
  return d;
}

function asAttend(c: OpCase, d: OpData): AttendOpData {
  if (d.kind !== "attend") throw new Error(`${describeCase(c)}: got matrix data`);
  return d;
}

/**
 * The inputs the native kernel actually multiplies: for quantized weights, d with each token's
 * input segment of x rounded through the dot type (quantized then dequantized, block by block
 * from the segment start); anything else unchanged.
 */
export function roundActivations(c: OpCase, d: OpData): OpData {
  if (c.op === "attend" || c.op === "getRow") return d;
  const m = asMatrix(c, d);
  const dotTraits = QUANT_TRAITS[QUANT_TRAITS[c.type].dotType];
  if (!dotTraits.isQuantized) return m;
  const x = m.x.slice();
  const nIn = c.shape.colEnd - c.shape.colStart;
  const encoded = new Uint8Array((nIn / dotTraits.blockSize) * dotTraits.blockBytes);
  const decoded = new Float32Array(nIn);
  for (let t = 0; t < c.shape.nTokens; t++) {
    const start = m.xOffset + t * m.xStride;
    dotTraits.quantizeRowRef(m.x.subarray(start, start + nIn), encoded, 0);
    dotTraits.dequantizeRowRef(encoded, 0, decoded, nIn);
    x.set(decoded, start);
  }
  return { ...m, x };
}

export function runOp(kernels: MatrixKernels, c: OpCase, d: OpData, y: Float32Array): void {
  switch (c.op) {
    case "matvec": {
      const [s, m] = [c.shape, asMatrix(c, d)];
      kernels.matvec(m.matrix, m.x, m.xOffset, y, m.yOffset, s.rowStart, s.rowEnd, s.colStart, s.colEnd);
      return;
    }
    case "matmul": {
      const [s, m] = [c.shape, asMatrix(c, d)];
      kernels.matmul(m.matrix, s.nTokens, m.x, m.xOffset, m.xStride, y, m.yOffset, m.yStride, s.rowStart, s.rowEnd, s.colStart, s.colEnd);
      return;
    }
    case "getRow":
      kernels.getRow(asMatrix(c, d).matrix, c.shape.rowStart, y);
      return;
    case "attend": {
      const [s, a] = [c.shape, asAttend(c, d)];
      kernels.attend(s.nQueryHeads, s.headDim, a.q, a.qOffset, a.keys, a.values, a.valid, s.nPositions, a.scale, y, a.yOffset);
      return;
    }
    default:
      c satisfies never;
  }
}

/** The indices of y an op writes; every other element must keep its initial value. */
export function writtenIndices(c: OpCase, d: OpData): number[] {
  const indices: number[] = [];
  switch (c.op) {
    case "matvec":
    case "matmul": {
      const [s, m] = [c.shape, asMatrix(c, d)];
      const nTokens = c.op === "matvec" ? 1 : s.nTokens;
      for (let t = 0; t < nTokens; t++) {
        for (let r = 0; r < s.rowEnd - s.rowStart; r++) indices.push(m.yOffset + t * m.yStride + r);
      }
      return indices;
    }
    case "getRow":
      for (let i = 0; i < c.shape.nCols; i++) indices.push(i);
      return indices;
    case "attend":
      for (let i = 0; i < c.shape.nQueryHeads * c.shape.headDim; i++) indices.push(d.yOffset + i);
      return indices;
    default:
      return c satisfies never;
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

/** Weight bytes a case reads per call (the bandwidth the bench reports); for attend, the keys and values. */
export function weightBytes(c: OpCase): number {
  if (c.op === "attend") return 2 * c.shape.nPositions * c.shape.headDim * 4;
  const s = c.shape;
  return (s.rowEnd - s.rowStart) * rowBytes(c.type, s.colEnd - s.colStart);
}
