/** The reference codecs: half precision, Q8_0 and Q4_0 blocks, and the reference matvec. */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { QUANT_TRAITS, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, createMatrix, createReferenceKernels, floatToHalf, halfToFloat, roundToHalf, rowBytes, type GgmlType } from "../../src/kernels/index.js";

const FC_SEED = 424242;

test("half precision: known values, rounding to nearest even, and every half round-trips", () => {
  assert.equal(floatToHalf(1), 0x3c00);
  assert.equal(floatToHalf(-2), 0xc000);
  assert.equal(floatToHalf(65504), 0x7bff);
  assert.equal(floatToHalf(65520), 0x7c00); // rounds up to infinity
  assert.equal(floatToHalf(2 ** -24), 0x0001);
  assert.equal(floatToHalf(2 ** -26), 0x0000); // below half the smallest subnormal
  assert.equal(floatToHalf(-0), 0x8000);
  assert.equal(floatToHalf(1 + 2 ** -11), 0x3c00); // a tie rounds to the even mantissa
  assert.equal(floatToHalf(1 + 3 * 2 ** -11), 0x3c02);
  assert.ok(Number.isNaN(halfToFloat(floatToHalf(Number.NaN))));
  let checked = 0;
  for (let h = 0; h < 0x10000; h++) {
    const value = halfToFloat(h);
    if (Number.isNaN(value)) continue;
    assert.equal(floatToHalf(value), h, `half 0x${h.toString(16)}`);
    checked++;
  }
  assert.equal(checked, 0x10000 - 2 * 1023);
});

test("block sizes come from the traits table: Q8_0 is 34 bytes, Q4_0 18 bytes per 32 values", () => {
  assert.equal(QUANT_TRAITS.Q8_0.blockBytes, Q8_0_BLOCK_BYTES);
  assert.equal(QUANT_TRAITS.Q4_0.blockBytes, Q4_0_BLOCK_BYTES);
  assert.equal(Q8_0_BLOCK_BYTES, 34);
  assert.equal(Q4_0_BLOCK_BYTES, 18);
  assert.equal(rowBytes("Q4_0", 64), 36);
  assert.equal(rowBytes("F16", 64), 128);
});

test("a Q8_0 block written by hand decodes to d·q, and the quantizer writes the same bytes", () => {
  const block = new Uint8Array(34);
  block[0] = 0x00;
  block[1] = 0x38; // d = 0.5 as a half
  for (let j = 0; j < 32; j++) block[2 + j] = (j - 16) & 0xff;
  const out = new Float32Array(32);
  QUANT_TRAITS.Q8_0.dequantizeRowRef(block, 0, out, 32);
  assert.deepEqual([...out], Array.from({ length: 32 }, (_, j) => 0.5 * (j - 16)));
  // With amax 63.5 the quantizer picks d = 63.5/127 = 0.5 (as a half) and q = 127 for the maximum.
  const x = Float32Array.from({ length: 32 }, (_, j) => (j === 31 ? 63.5 : 0.5 * (j - 16)));
  const bytes = new Uint8Array(34);
  QUANT_TRAITS.Q8_0.quantizeRowRef(x, bytes, 0);
  assert.equal(halfToFloat(bytes[0]! | (bytes[1]! << 8)), halfToFloat(floatToHalf(63.5 / 127)));
  assert.equal((bytes[2 + 31]! << 24) >> 24, 127);
});

test("a Q4_0 block stores element j in the low nibble and j+16 in the high nibble", () => {
  const block = new Uint8Array(18);
  block[1] = 0x3c; // d = 1
  for (let j = 0; j < 16; j++) block[2 + j] = (j & 0x0f) | ((15 - j) << 4);
  const out = new Float32Array(32);
  QUANT_TRAITS.Q4_0.dequantizeRowRef(block, 0, out, 32);
  assert.deepEqual([...out.slice(0, 16)], Array.from({ length: 16 }, (_, j) => j - 8));
  assert.deepEqual([...out.slice(16)], Array.from({ length: 16 }, (_, j) => 7 - j));
});

const blockValues = fc.array(fc.float({ min: -1000, max: 1000, noNaN: true, noDefaultInfinity: true }), { minLength: 32, maxLength: 32 * 4 }).filter((a) => a.length % 32 === 0);

for (const type of ["Q8_0", "Q4_0", "F16"] as const satisfies readonly GgmlType[]) {
  test(`${type}: quantize then dequantize stays within the block's step`, () => {
    const traits = QUANT_TRAITS[type];
    fc.assert(
      fc.property(blockValues, (values) => {
        const x = Float32Array.from(values);
        const bytes = new Uint8Array(rowBytes(type, x.length));
        traits.quantizeRowRef(x, bytes, 0);
        const y = new Float32Array(x.length);
        traits.dequantizeRowRef(bytes, 0, y, x.length);
        for (let b = 0; b < x.length / 32; b++) {
          const block = x.slice(b * 32, (b + 1) * 32);
          const amax = Math.max(...block.map(Math.abs));
          // Q8_0 steps by d = amax/127 (error ≤ d/2); Q4_0 by d = amax/8 (≤ d: the far end
          // clamps at 7·d); F16 is relative. The scale is stored as a half, which adds
          // (levels)·|d − half(d)| (large when d underflows to a subnormal half).
          const levels = type === "Q8_0" ? 127 : 8;
          const d = amax / levels;
          const dHalf = roundToHalf(d);
          const bound = (type === "Q8_0" ? 0.5 : 1) * dHalf + levels * Math.abs(dHalf - d) + 1e-7 * amax;
          for (let j = 0; j < 32; j++) {
            const error = Math.abs(y[b * 32 + j]! - block[j]!);
            const limit = type === "F16" ? Math.abs(block[j]!) * 2 ** -11 + 2 ** -25 : bound;
            assert.ok(error <= limit, `${type} error ${error} > ${limit}`);
          }
        }
      }),
      { seed: FC_SEED, numRuns: 300 },
    );
  });
}

test("the reference matvec equals a float64 dot of the dequantized rows on any aligned sub-range", () => {
  const kernels = createReferenceKernels();
  const types: GgmlType[] = ["F32", "F16", "Q8_0", "Q4_0"];
  fc.assert(
    fc.property(fc.constantFrom(...types), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 2 ** 31 }), (type, nRows, nBlocks, seed) => {
      const nCols = nBlocks * 32;
      let state = seed;
      const next = (): number => ((state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
      const data = new Uint8Array(rowBytes(type, nCols) * nRows);
      const dense = Array.from({ length: nRows }, (_, r) => {
        const row = Float32Array.from({ length: nCols }, next);
        QUANT_TRAITS[type].quantizeRowRef(row, data, r * rowBytes(type, nCols));
        const decoded = new Float32Array(nCols);
        QUANT_TRAITS[type].dequantizeRowRef(data, r * rowBytes(type, nCols), decoded, nCols);
        return decoded;
      });
      const w = createMatrix("w", type, nRows, nCols, data);
      const colStart = 32 * Math.floor(nBlocks / 2);
      const rowStart = Math.floor(nRows / 3);
      const x = Float32Array.from({ length: nCols - colStart }, next);
      const y = new Float32Array(nRows - rowStart);
      kernels.matvec(w, x, 0, y, 0, rowStart, nRows, colStart, nCols);
      for (let r = rowStart; r < nRows; r++) {
        let expected = 0;
        for (let c = colStart; c < nCols; c++) expected += dense[r]![c]! * x[c - colStart]!;
        assert.ok(Math.abs(y[r - rowStart]! - expected) <= 1e-5 * (1 + Math.abs(expected)));
      }
    }),
    { seed: FC_SEED, numRuns: 200 },
  );
});

test("out-of-range and misaligned matvec arguments are rejected", () => {
  const kernels = createReferenceKernels();
  const w = createMatrix("w", "Q8_0", 2, 64, new Uint8Array(rowBytes("Q8_0", 64) * 2));
  const x = new Float32Array(64);
  const y = new Float32Array(2);
  assert.throws(() => kernels.matvec(w, x, 0, y, 0, 0, 3, 0, 64), /rows \[0, 3\)/);
  assert.throws(() => kernels.matvec(w, x, 0, y, 0, 0, 2, 16, 64), /not 32-aligned/);
  assert.throws(() => createMatrix("bad", "Q4_0", 1, 40, new Uint8Array(23)), /not a multiple of the Q4_0 block size/);
  assert.throws(() => createMatrix("bad", "F32", 2, 4, new Uint8Array(31)), /31 bytes, expected 32/);
});
