/**
 * Native kernels against the TS reference (the oracle), for every kernel set this CPU runs
 * (e.g. "avx2" and "generic") and thread counts 1, 2 and 3. The cases and error budgets live in
 * cases.ts; this file only drives them. Also: the activation quantizer byte-for-byte, argument
 * validation (errors, never crashes) for the matrix ops and attend, and mmapFile.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test, type TestContext } from "node:test";
import fc from "fast-check";
import { HaloError, SeededRandom } from "../../src/base/index.js";
import { createMatrix } from "../../src/kernels/matrix.js";
import {
  createNativeKernels,
  loadNativeAddon,
  mmapFile,
  nativeAddonStatus,
  type NativeKernelContext,
  type NativeMatrixKernels,
} from "../../src/kernels/native.js";
import { createReferenceKernels } from "../../src/kernels/reference/kernels.js";
import { GGML_TYPE_ID, QUANT_TRAITS, rowBytes } from "../../src/kernels/types.js";
import {
  ATTEND_TYPES,
  MATRIX_OP_NAMES,
  MAX_ACTIVATION_ROUNDING_NMSE,
  THREAD_COUNTS,
  TYPES,
  VALIDITIES,
  describeCase,
  makeOpData,
  maxNmse,
  nmse,
  opCases,
  roundActivations,
  runOp,
  writtenIndices,
  type AttendOpCase,
  type MatrixOpCase,
  type MatrixOpData,
  type OpCase,
  type OpData,
} from "./cases.js";

/** Written into y before each call; any element still holding something else was written. */
const SENTINEL = -12345.5;

const status = nativeAddonStatus();
const variants = status.simd ?? [];
const reference = createReferenceKernels();
/** The fixed table; case i uses data seed 1000 + i, and reference results are computed once per case. */
const CASES = opCases();
const seedOf = (c: OpCase): number => 1000 + CASES.indexOf(c);

interface Expected {
  readonly data: OpData;
  /** The reference on the activations the kernel multiplies (roundActivations). */
  readonly y: Float32Array;
  /** The reference on the unrounded activations. */
  readonly yUnrounded: Float32Array;
}

const expectedCache = new Map<OpCase, Expected>();
function expectedFor(c: OpCase, seed: number): Expected {
  let e = expectedCache.get(c);
  if (e === undefined) {
    const data = makeOpData(c, seed);
    const y = new Float32Array(data.yLength).fill(SENTINEL);
    runOp(reference, c, roundActivations(c, data), y);
    const yUnrounded = new Float32Array(data.yLength).fill(SENTINEL);
    runOp(reference, c, data, yUnrounded);
    e = { data, y, yUnrounded };
    expectedCache.set(c, e);
  }
  return e;
}

/** Runs c on each kernel instance and returns problems: budget misses, stray writes, thread-count differences. */
function checkCase(c: OpCase, e: Expected, kernels: readonly NativeMatrixKernels[]): string[] {
  const problems: string[] = [];
  const indices = writtenIndices(c, e.data);
  const written = new Set(indices);
  let first: Float32Array | undefined;
  for (const k of kernels) {
    const y = new Float32Array(e.data.yLength).fill(SENTINEL);
    runOp(k, c, e.data, y);
    const where = `${describeCase(c)} on ${k.name} x${k.nThreads}`;
    const err = nmse(y, e.y, indices);
    if (!(err <= maxNmse(c))) problems.push(`${where}: nmse ${err} > ${maxNmse(c)}`);
    for (let i = 0; i < y.length; i++) {
      if (!written.has(i) && y[i] !== SENTINEL) {
        problems.push(`${where}: wrote y[${i}] outside its range`);
        break;
      }
    }
    if (first !== undefined && !sameBits(first, y)) problems.push(`${where}: differs from the 1-thread result`);
    first ??= y;
  }
  return problems;
}

function isMatrixCase(c: OpCase): c is MatrixOpCase {
  return c.op !== "attend";
}

function matrixData(d: OpData): MatrixOpData {
  if (d.kind !== "matrix") throw new Error("expected matrix case data");
  return d;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

test("the native addon loads", (t: TestContext) => {
  t.plan(2);
  t.assert.ok(status.loaded, `native addon not loaded: ${status.reason ?? ""}`);
  t.assert.ok(variants.includes("generic"), `kernel sets: ${variants.join(", ")}`);
});

test("the addon's block layouts match QUANT_TRAITS", (t: TestContext) => {
  const addon = loadNativeAddon();
  t.plan(TYPES.length);
  for (const type of TYPES) {
    const traits = QUANT_TRAITS[type];
    t.assert.deepStrictEqual(addon?.typeLayouts[String(GGML_TYPE_ID[type])], { blockSize: traits.blockSize, blockBytes: traits.blockBytes }, type);
  }
});

test("the case data is not degenerate", (t: TestContext) => {
  t.plan(3);
  const { data, y } = expectedFor({ op: "matvec", type: "F32", shape: { nRows: 173, nCols: 1024, rowStart: 0, rowEnd: 173, colStart: 0, colEnd: 1024, nTokens: 1 } }, 1);
  const xs = Array.from(matrixData(data).x);
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
  t.assert.ok(Math.abs(mean) < 0.1, `x mean ${mean}`);
  t.assert.ok(variance > 0.8 && variance < 1.2, `x variance ${variance}`);
  t.assert.ok(new Set(y.slice(data.yOffset, data.yOffset + 173)).size > 150, "reference outputs vary");
});

test("rounding activations to the dot type costs at most MAX_ACTIVATION_ROUNDING_NMSE per type", (t: TestContext) => {
  const quantized = TYPES.filter((type) => QUANT_TRAITS[type].isQuantized);
  t.plan(quantized.length);
  for (const type of quantized) {
    let err = 0;
    let norm = 0;
    for (const c of CASES) {
      if (c.type !== type || c.op === "getRow") continue;
      const e = expectedFor(c, seedOf(c));
      for (const j of writtenIndices(c, e.data)) {
        err += (e.y[j]! - e.yUnrounded[j]!) ** 2;
        norm += e.yUnrounded[j]! ** 2;
      }
    }
    t.assert.ok(err / norm <= MAX_ACTIVATION_ROUNDING_NMSE && err > 0, `${type}: nmse ${err / norm}`);
  }
});

test("the reference attend gives a lone valid position all the weight and no valid position 0", (t: TestContext) => {
  const lone = CASES.filter((c): c is AttendOpCase => c.op === "attend" && c.shape.validity === "allButOne");
  const none = CASES.filter((c): c is AttendOpCase => c.op === "attend" && c.shape.validity === "none");
  t.plan(2);
  const problems: string[] = [];
  for (const c of lone) {
    const { data, y } = expectedFor(c, seedOf(c));
    if (data.kind !== "attend") throw new Error("expected attend data");
    const { headDim, nQueryHeads, nPositions } = c.shape;
    const s = data.valid.subarray(0, nPositions).indexOf(1);
    for (let h = 0; h < nQueryHeads; h++) {
      const row = data.values.subarray(s * headDim, (s + 1) * headDim);
      if (!sameBits(y.subarray(data.yOffset + h * headDim, data.yOffset + (h + 1) * headDim), row)) problems.push(`${describeCase(c)}: head ${h} is not value row ${s}`);
    }
  }
  t.assert.deepStrictEqual(problems, []);
  t.assert.ok(none.every((c) => writtenIndices(c, expectedFor(c, seedOf(c)).data).every((i) => Object.is(expectedFor(c, seedOf(c)).y[i], 0))));
});

for (const simd of variants) {
  describe(`native kernels (${simd})`, () => {
    const kernels = THREAD_COUNTS.map((nThreads) => createNativeKernels({ nThreads, simd }));
    after(() => {
      for (const k of kernels) k.close();
    });

    test("the case table matches the reference within MAX_NMSE, identically for 1, 2 and 3 threads", (t: TestContext) => {
      t.plan(1);
      const problems = CASES.flatMap((c) => checkCase(c, expectedFor(c, seedOf(c)), kernels));
      t.assert.deepStrictEqual(problems, []);
    });

    test("random shapes match the reference (fast-check, fixed seed)", (t: TestContext) => {
      t.plan(1);
      const arbitraryCase = fc
        .tuple(
          fc.constantFrom(...MATRIX_OP_NAMES),
          fc.constantFrom(...TYPES),
          fc.integer({ min: 1, max: 200 }),
          fc.integer({ min: 1, max: 700 }),
          fc.tuple(fc.nat(), fc.nat(), fc.nat(), fc.nat()),
          fc.integer({ min: 1, max: 9 }),
          fc.nat(),
        )
        .map(([op, type, nRows, colsRaw, [r0, r1, c0, c1], nTokens, seed]) => {
          const bs = QUANT_TRAITS[type].blockSize;
          const nUnits = bs === 1 ? colsRaw : 1 + (colsRaw % 24);
          const [rowStart, rowEnd] = op === "getRow" ? [r0 % nRows, (r0 % nRows) + 1] : sorted(r0 % (nRows + 1), r1 % (nRows + 1));
          const [u0, u1] = op === "getRow" ? [0, nUnits] : sorted(c0 % (nUnits + 1), c1 % (nUnits + 1));
          const shape = { nRows, nCols: nUnits * bs, rowStart, rowEnd, colStart: u0 * bs, colEnd: u1 * bs, nTokens: op === "matmul" ? nTokens : 1 };
          return { c: { op, type, shape } satisfies OpCase, seed };
        });
      // A failing case throws, so fast-check shrinks it and reports the smallest counterexample.
      const property = fc.property(arbitraryCase, ({ c, seed }) => {
        const problems = checkCase(c, expectedFor(c, seed), kernels);
        if (problems.length > 0) throw new Error(problems.join("\n"));
      });
      t.assert.doesNotThrow(() => fc.assert(property, { seed: 0x5eed, numRuns: 80 }));
    });

    test("matmul gives the same bits as one matvec per token", (t: TestContext) => {
      const cases = CASES.filter(isMatrixCase).filter((c) => c.op === "matmul");
      t.plan(cases.length);
      for (const c of cases) {
        const data = matrixData(expectedFor(c, seedOf(c)).data);
        const s = c.shape;
        const k = kernels[1]!;
        const together = new Float32Array(data.yLength).fill(SENTINEL);
        runOp(k, c, data, together);
        const apart = new Float32Array(data.yLength).fill(SENTINEL);
        for (let tok = 0; tok < s.nTokens; tok++) {
          k.matvec(data.matrix, data.x, data.xOffset + tok * data.xStride, apart, data.yOffset + tok * data.yStride, s.rowStart, s.rowEnd, s.colStart, s.colEnd);
        }
        t.assert.ok(sameBits(together, apart), describeCase(c));
      }
    });

    test("weights at an odd byte offset give the same bits as aligned ones", (t: TestContext) => {
      const cases = CASES.filter(isMatrixCase).filter((c) => c.op !== "getRow" && c.shape.nRows === 173 && c.shape.nTokens <= 4);
      t.plan(cases.length);
      for (const c of cases) {
        const data = matrixData(expectedFor(c, seedOf(c)).data);
        const shifted = new Uint8Array(data.matrix.data.length + 3).subarray(3);
        shifted.set(data.matrix.data);
        const unaligned = { ...data, matrix: { ...data.matrix, data: shifted } };
        const a = new Float32Array(data.yLength).fill(SENTINEL);
        const b = new Float32Array(data.yLength).fill(SENTINEL);
        runOp(kernels[1]!, c, data, a);
        runOp(kernels[1]!, c, unaligned, b);
        t.assert.ok(sameBits(a, b), describeCase(c));
      }
    });

    test("random attention shapes match the reference (fast-check, fixed seed)", (t: TestContext) => {
      t.plan(1);
      const arbitraryCase = fc
        .record({
          nQueryHeads: fc.integer({ min: 1, max: 8 }),
          headDim: fc.integer({ min: 1, max: 160 }),
          nPositions: fc.integer({ min: 1, max: 600 }),
          extra: fc.integer({ min: 0, max: 5 }),
          validity: fc.constantFrom(...VALIDITIES),
          scaleFactor: fc.constantFrom(1, 8),
          seed: fc.nat(),
        })
        .map(({ extra, seed, ...rest }) => {
          const c: AttendOpCase = { op: "attend", type: ATTEND_TYPES[0], shape: { ...rest, contextLength: rest.nPositions + extra } };
          return { c, seed };
        });
      const property = fc.property(arbitraryCase, ({ c, seed }) => {
        const problems = checkCase(c, expectedFor(c, seed), kernels);
        if (problems.length > 0) throw new Error(problems.join("\n"));
      });
      t.assert.doesNotThrow(() => fc.assert(property, { seed: 0xa77e, numRuns: 60 }));
    });

    test("attend gives each query head the same bits as a call for that head alone", (t: TestContext) => {
      const cases = CASES.filter((c): c is AttendOpCase => c.op === "attend" && c.shape.nQueryHeads === 8 && c.shape.nPositions >= 100);
      t.plan(cases.length);
      for (const c of cases) {
        const data = expectedFor(c, seedOf(c)).data;
        if (data.kind !== "attend") throw new Error("expected attend data");
        const { nQueryHeads, headDim, nPositions } = c.shape;
        const together = new Float32Array(data.yLength);
        const apart = new Float32Array(data.yLength);
        kernels[2]!.attend(nQueryHeads, headDim, data.q, data.qOffset, data.keys, data.values, data.valid, nPositions, data.scale, together, data.yOffset);
        for (let h = 0; h < nQueryHeads; h++) {
          const offset = h * headDim;
          kernels[0]!.attend(1, headDim, data.q, data.qOffset + offset, data.keys, data.values, data.valid, nPositions, data.scale, apart, data.yOffset + offset);
        }
        t.assert.ok(sameBits(together, apart), describeCase(c));
      }
    });

    test("quantizeRowQ8_0 is byte-identical to QUANT_TRAITS.Q8_0.quantizeRowRef", (t: TestContext) => {
      const rows = quantizerRows();
      t.plan(rows.length);
      for (const x of rows) {
        const native = new Uint8Array((x.length / 32) * 34);
        const expected = new Uint8Array(native.length);
        kernels[0]!.quantizeRowQ8_0(x, native);
        QUANT_TRAITS.Q8_0.quantizeRowRef(x, expected, 0);
        t.assert.deepStrictEqual(native, expected, `row of ${x.length}: ${Array.from(x.slice(0, 4)).join(", ")}…`);
      }
    });
  });
}

function sorted(a: number, b: number): [number, number] {
  return a <= b ? [a, b] : [b, a];
}

/** Gaussian rows at many scales, plus blocks aimed at the rounding and scale edge cases. */
function quantizerRows(): Float32Array[] {
  const random = new SeededRandom(7);
  const rows: Float32Array[] = [];
  for (const scale of [1, 1e-3, 1e3, 1e-30, 1e30]) {
    for (const nBlocks of [1, 2, 7, 64]) {
      rows.push(Float32Array.from({ length: nBlocks * 32 }, () => scale * random.nextGaussian()));
    }
  }
  const block = (values: number[], fill: number): Float32Array => Float32Array.from({ length: 32 }, (_, i) => values[i] ?? fill);
  // amax 127 makes d = 1: exact halves must round away from zero.
  rows.push(block([127, 2.5, -2.5, 0.5, -0.5, 126.5, -126.5, 1.5, -1.5, 0.49999997, -0.49999997], 3.5));
  rows.push(block([-127, 64.5, -64.5], -0.5));
  rows.push(block([], 0));
  rows.push(block([-0, 0, -0], -0));
  rows.push(block([1e-40, -3e-41], 1e-42)); // subnormal: 1/d overflows, the quants are 0
  rows.push(block([4e-37, -1e-38], 2e-39)); // d is subnormal but 1/d finite
  rows.push(block([3e38, -3e38, 1e38], 1));
  rows.push(block([1], 1));
  rows.push(block([65504 * 127, 1], -70000 * 127)); // the scale overflows half precision
  return rows;
}

test("idle pool threads block instead of spinning", async (t: TestContext) => {
  t.plan(1);
  const k = createNativeKernels({ nThreads: 2 });
  const w = createMatrix("w", "F32", 256, 256, new Uint8Array(256 * 256 * 4));
  k.matvec(w, new Float32Array(256), 0, new Float32Array(256), 0, 0, 256, 0, 256);
  const before = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, 400));
  const used = process.cpuUsage(before);
  k.close();
  // A spinning worker would burn ~400 ms of CPU here; blocked ones burn next to nothing.
  const usedMs = (used.user + used.system) / 1000;
  t.assert.ok(usedMs < 200, `${usedMs} ms of CPU while idle for 400 ms`);
});

describe("argument validation", () => {
  const addon = loadNativeAddon();

  test("the raw addon throws coded errors for bad arguments, never crashes", (t: TestContext) => {
    if (addon === undefined) return t.assert.fail("native addon not loaded");
    const ctx: NativeKernelContext = new addon.KernelContext(2, "");
    const q8 = createMatrix("q8", "Q8_0", 4, 64, new Uint8Array(4 * rowBytes("Q8_0", 64)));
    const f32 = createMatrix("f32", "F32", 4, 8, new Uint8Array(4 * 32));
    const x = new Float32Array(64);
    const y = new Float32Array(4);
    const mv = (over: Partial<Record<string, unknown>>) => () => {
      const a = { w: q8.data, typeId: 8, nRows: 4, nCols: 64, rowBytes: q8.rowBytes, x, xOffset: 0, y, yOffset: 0, rowStart: 0, rowEnd: 4, colStart: 0, colEnd: 64, ...over };
      const call = ctx.matvec as (...args: unknown[]) => void;
      call.call(ctx, a.w, a.typeId, a.nRows, a.nCols, a.rowBytes, a.x, a.xOffset, a.y, a.yOffset, a.rowStart, a.rowEnd, a.colStart, a.colEnd);
    };
    const cases: [string, () => void, string][] = [
      ["x too short", mv({ x: new Float32Array(63) }), "HALO_ERR_USAGE"],
      ["xOffset past the end", mv({ xOffset: 1 }), "HALO_ERR_USAGE"],
      ["negative xOffset", mv({ xOffset: -1 }), "HALO_ERR_USAGE"],
      ["fractional xOffset", mv({ xOffset: 0.5 }), "HALO_ERR_USAGE"],
      ["NaN yOffset", mv({ yOffset: NaN }), "HALO_ERR_USAGE"],
      ["huge yOffset", mv({ yOffset: 2 ** 60 }), "HALO_ERR_USAGE"],
      ["y too short", mv({ y: new Float32Array(3) }), "HALO_ERR_USAGE"],
      ["misaligned colStart", mv({ colStart: 16 }), "HALO_ERR_USAGE"],
      ["misaligned colEnd", mv({ colEnd: 48 }), "HALO_ERR_USAGE"],
      ["colEnd past nCols", mv({ colEnd: 96, x: new Float32Array(96) }), "HALO_ERR_USAGE"],
      ["colStart after colEnd", mv({ colStart: 64, colEnd: 32 }), "HALO_ERR_USAGE"],
      ["rowEnd past nRows", mv({ rowEnd: 5, y: new Float32Array(5) }), "HALO_ERR_USAGE"],
      ["negative rowStart", mv({ rowStart: -1 }), "HALO_ERR_USAGE"],
      ["rowStart after rowEnd", mv({ rowStart: 3, rowEnd: 2 }), "HALO_ERR_USAGE"],
      ["weights shorter than nRows x rowBytes", mv({ nRows: 5, rowEnd: 4 }), "HALO_ERR_USAGE"],
      ["rowBytes not matching nCols", mv({ rowBytes: 70 }), "HALO_ERR_USAGE"],
      ["nCols not a multiple of the block", mv({ nCols: 48, colEnd: 32 }), "HALO_ERR_USAGE"],
      ["unknown type id", mv({ typeId: 3 }), "HALO_ERR_UNSUPPORTED_TYPE"],
      ["x not a Float32Array", mv({ x: new Float64Array(64) }), "HALO_ERR_USAGE"],
      ["w not a Uint8Array", mv({ w: new Int8Array(q8.data.length) }), "HALO_ERR_USAGE"],
      ["x a plain array", mv({ x: Array.from(x) }), "HALO_ERR_USAGE"],
      ["y overlapping x", mv({ y: new Float32Array(x.buffer, 0, 4) }), "HALO_ERR_USAGE"],
      ["y overlapping the weights", mv({ w: new Uint8Array(y.buffer), nRows: 1, nCols: 4, rowBytes: 16, typeId: 0, rowEnd: 1, colEnd: 4 }), "HALO_ERR_USAGE"],
      ["too few arguments", () => (ctx.matvec as (...args: unknown[]) => void).call(ctx, q8.data, 8), "HALO_ERR_USAGE"],
      ["matmul y stride below the rows written", () => ctx.matmul(f32.data, 0, 4, 8, 32, 2, x, 0, 8, new Float32Array(8), 0, 3, 0, 4, 0, 8), "HALO_ERR_USAGE"],
      ["matmul x too short for the tokens", () => ctx.matmul(f32.data, 0, 4, 8, 32, 9, x, 0, 8, new Float32Array(36), 0, 4, 0, 4, 0, 8), "HALO_ERR_USAGE"],
      ["matmul negative nTokens", () => ctx.matmul(f32.data, 0, 4, 8, 32, -1, x, 0, 8, y, 0, 4, 0, 4, 0, 8), "HALO_ERR_USAGE"],
      ["getRow row out of range", () => ctx.getRow(f32.data, 0, 4, 8, 32, 4, new Float32Array(8)), "HALO_ERR_USAGE"],
      ["getRow negative row", () => ctx.getRow(f32.data, 0, 4, 8, 32, -1, new Float32Array(8)), "HALO_ERR_USAGE"],
      ["getRow out too short", () => ctx.getRow(f32.data, 0, 4, 8, 32, 0, new Float32Array(7)), "HALO_ERR_USAGE"],
      ["quantize length not a multiple of 32", () => ctx.quantizeRowQ8_0(new Float32Array(33), new Uint8Array(68)), "HALO_ERR_USAGE"],
      ["quantize dst too short", () => ctx.quantizeRowQ8_0(new Float32Array(64), new Uint8Array(67)), "HALO_ERR_USAGE"],
      ["zero threads", () => new addon.KernelContext(0, ""), "HALO_ERR_USAGE"],
      ["fractional threads", () => new addon.KernelContext(1.5, ""), "HALO_ERR_USAGE"],
      ["unknown kernel set", () => new addon.KernelContext(1, "avx9000"), "HALO_ERR_UNSUPPORTED_TYPE"],
      ["mmapFile of a missing file", () => addon.mmapFile("/nonexistent/halo"), "HALO_ERR_FILE"],
      ["mmapFile of a directory", () => addon.mmapFile(tmpdir()), "HALO_ERR_FILE"],
      ["mmapFile without a string", () => (addon.mmapFile as (p: unknown) => ArrayBuffer)(42), "HALO_ERR_USAGE"],
    ];
    t.plan(cases.length + 3);
    for (const [what, call, code] of cases) t.assert.throws(call, (e: unknown) => e instanceof Error && (e as Error & { code?: unknown }).code === code, what);
    mv({})(); // the unmodified call is valid
    t.assert.ok(Number.isFinite(y[0]));
    ctx.close();
    ctx.close();
    t.assert.throws(mv({}), (e: unknown) => e instanceof Error && (e as Error & { code?: unknown }).code === "HALO_ERR_USAGE", "call after close");
    t.assert.strictEqual(ctx.nThreads, 0);
  });

  test("attend rejects bad arguments with HALO_ERR_USAGE, natively and in the reference, and never crashes", (t: TestContext) => {
    if (addon === undefined) return t.assert.fail("native addon not loaded");
    const ctx: NativeKernelContext = new addon.KernelContext(2, "");
    const ref = createReferenceKernels();
    const nativeKernels = createNativeKernels({ nThreads: 2 });
    // A valid call: 2 heads of 8 over 10 of 12 positions.
    const base = {
      nQueryHeads: 2, headDim: 8, q: new Float32Array(16), qOffset: 0, keys: new Float32Array(12 * 8), values: new Float32Array(12 * 8),
      valid: new Uint8Array(12).fill(1), nPositions: 10, scale: 0.35, out: new Float32Array(16), outOffset: 0,
    };
    type AttendArgs = typeof base;
    const call = (f: (...args: unknown[]) => void, over: Partial<Record<keyof AttendArgs, unknown>>) => () => {
      const a = { ...base, ...over };
      f(a.nQueryHeads, a.headDim, a.q, a.qOffset, a.keys, a.values, a.valid, a.nPositions, a.scale, a.out, a.outOffset);
    };
    const shared = new Float32Array(64);
    const bad: [string, Partial<Record<keyof AttendArgs, unknown>>][] = [
      ["nPositions past contextLength", { nPositions: 13 }],
      ["negative nPositions", { nPositions: -1 }],
      ["fractional nPositions", { nPositions: 2.5 }],
      ["keys shorter than contextLength x headDim", { keys: new Float32Array(12 * 8 - 1) }],
      ["values shorter than contextLength x headDim", { values: new Float32Array(11 * 8) }],
      ["headDim not matching the slabs", { headDim: 16, q: new Float32Array(32), out: new Float32Array(32) }],
      ["headDim 0", { headDim: 0 }],
      ["negative nQueryHeads", { nQueryHeads: -1 }],
      ["q too short for the heads", { q: new Float32Array(15) }],
      ["qOffset past the end", { qOffset: 1 }],
      ["out too short for the heads", { out: new Float32Array(15) }],
      ["negative outOffset", { outOffset: -1 }],
      ["NaN scale", { scale: NaN }],
      ["scale beyond float range", { scale: 1e39 }],
      ["out overlapping q", { q: shared.subarray(0, 16), out: shared.subarray(8, 24) }],
      ["out overlapping the keys", { keys: shared.subarray(0, 12 * 4), values: new Float32Array(12 * 4), headDim: 4, q: new Float32Array(8), out: shared.subarray(40, 48) }],
    ];
    const nativeOnly: [string, Partial<Record<keyof AttendArgs, unknown>>][] = [
      ["keys not a Float32Array", { keys: new Float64Array(12 * 8) }],
      ["valid not a Uint8Array", { valid: new Int8Array(12) }],
      ["scale not a number", { scale: "0.35" }],
    ];
    const isUsage = (e: unknown) => e instanceof Error && (e as Error & { code?: unknown }).code === "HALO_ERR_USAGE";
    t.plan(2 * bad.length + nativeOnly.length + 4);
    for (const [what, over] of bad) {
      t.assert.throws(call(ctx.attend.bind(ctx) as (...args: unknown[]) => void, over), isUsage, `addon: ${what}`);
      t.assert.throws(call(ref.attend as (...args: unknown[]) => void, over), (e: unknown) => e instanceof HaloError && e.code === "HALO_ERR_USAGE", `reference: ${what}`);
    }
    for (const [what, over] of nativeOnly) t.assert.throws(call(ctx.attend.bind(ctx) as (...args: unknown[]) => void, over), isUsage, `addon: ${what}`);
    t.assert.throws(
      call(nativeKernels.attend as (...args: unknown[]) => void, { nPositions: 13 }),
      (e: unknown) => e instanceof HaloError && e.code === "HALO_ERR_USAGE" && e.message.includes("nPositions 13"),
      "createNativeKernels wraps the addon error",
    );
    t.assert.throws(() => (ctx.attend as (...args: unknown[]) => void).call(ctx, 2, 8), isUsage, "too few arguments");
    call(ctx.attend.bind(ctx) as (...args: unknown[]) => void, {})(); // the unmodified call is valid
    t.assert.ok(base.out.every((v) => v === 0), "zero values attend to zero");
    ctx.close();
    t.assert.throws(call(ctx.attend.bind(ctx) as (...args: unknown[]) => void, {}), isUsage, "call after close");
    nativeKernels.close();
  });

  test("createNativeKernels turns addon errors into HaloErrors that name the matrix", (t: TestContext) => {
    t.plan(4);
    const k = createNativeKernels({ nThreads: 1 });
    const w = createMatrix("blk.0.ffn_up.weight", "Q4_0", 2, 64, new Uint8Array(2 * rowBytes("Q4_0", 64)));
    t.assert.throws(
      () => k.matvec(w, new Float32Array(64), 0, new Float32Array(2), 0, 0, 2, 8, 64),
      (e: unknown) => e instanceof HaloError && e.code === "HALO_ERR_USAGE" && e.message.includes("blk.0.ffn_up.weight"),
    );
    t.assert.throws(() => k.getRow(w, 2, new Float32Array(64)), (e: unknown) => e instanceof HaloError && e.code === "HALO_ERR_USAGE");
    k.close();
    t.assert.throws(() => createNativeKernels({ nThreads: -2 }), (e: unknown) => e instanceof HaloError && e.code === "HALO_ERR_USAGE");
    t.assert.throws(() => createNativeKernels({ nThreads: 1, simd: "nope" }), (e: unknown) => e instanceof HaloError && e.code === "HALO_ERR_UNSUPPORTED_TYPE");
  });
});

describe("mmapFile", () => {
  const dir = mkdtempSync(join(tmpdir(), "halo-mmap-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("reads the same bytes as fs.readFileSync", (t: TestContext) => {
    t.plan(3);
    const random = new SeededRandom(3);
    const path = join(dir, "weights.bin");
    writeFileSync(path, Uint8Array.from({ length: 100_003 }, () => random.nextInt(256)));
    const mapped = mmapFile(path);
    t.assert.strictEqual(mapped.byteLength, 100_003);
    t.assert.ok(Buffer.from(mapped).equals(readFileSync(path)));
    const empty = join(dir, "empty.bin");
    writeFileSync(empty, new Uint8Array(0));
    t.assert.strictEqual(mmapFile(empty).byteLength, 0);
  });

  test("throws HALO_ERR_FILE with the path for a missing file", (t: TestContext) => {
    t.plan(1);
    const path = join(dir, "missing.bin");
    t.assert.throws(() => mmapFile(path), (e: unknown) => e instanceof HaloError && e.code === "HALO_ERR_FILE" && e.message.includes(path));
  });
});
