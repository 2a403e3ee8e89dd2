/**
 * The wire Q8_0 codec (src/net/q8Vector.ts): byte-identical to the reference quantizer, exact
 * decode, and scale validation that rejects (never clamps) NaN, Inf and oversized blocks
 * without writing anything (RELIABILITY D8).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { HaloError, SeededRandom } from "../../src/base/index.js";
import { QUANT_TRAITS, floatToHalf, halfToFloat } from "../../src/kernels/index.js";
import { DEFAULT_Q8_MAX_ABS_VALUE, Q8_BLOCK_BYTES, Q8_BLOCK_SIZE, checkQ8Blocks, decodeQ8Range, encodeQ8Range, q8ByteLength } from "../../src/net/q8Vector.js";

const FC_SEED = 20261127;
const Q8 = QUANT_TRAITS.Q8_0;

/** A block with scale bits `h` and every value `q`. */
function block(h: number, q: number): Uint8Array {
  const bytes = new Uint8Array(Q8_BLOCK_BYTES);
  bytes[0] = h & 0xff;
  bytes[1] = h >>> 8;
  bytes.fill(q & 0xff, Q8_BLOCK_BYTES - Q8_BLOCK_SIZE);
  return bytes;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Values of mixed scale with the special cases the quantizer must handle like the reference. */
function specialVector(random: SeededRandom, nElements: number, withNonFinite: boolean): Float32Array {
  const specials = [0, -0, 1e-30, -1e-8, 2 ** -24, 65504 * 127, 65504 * 200, -1e7, 0.5, -0.5];
  if (withNonFinite) specials.push(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY);
  const x = new Float32Array(nElements);
  for (let i = 0; i < nElements; i++) {
    const r = random.nextInt(20);
    x[i] = r < specials.length ? specials[r]! : random.nextGaussian() * 10 ** (random.nextInt(9) - 4);
  }
  return x;
}

test("block sizes come from the traits table", () => {
  assert.equal(Q8_BLOCK_SIZE, Q8.blockSize);
  assert.equal(Q8_BLOCK_BYTES, Q8.blockBytes);
  assert.equal(q8ByteLength(3 * Q8.blockSize), 3 * Q8.blockBytes);
  assert.equal(DEFAULT_Q8_MAX_ABS_VALUE, halfToFloat(0x7bff)); // the largest finite f16
  assert.throws(() => q8ByteLength(Q8.blockSize + 1), (e: unknown) => e instanceof HaloError && e.code === "HALO_ERR_USAGE");
});

test("encodeQ8Range writes the reference quantizer's bytes at any offset, and counts non-finite scales", () => {
  let nNonFiniteSeen = 0;
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 50 }), fc.integer(), fc.boolean(), (nBlocks, valuesOffset, outOffset, seed, withNonFinite) => {
      const n = nBlocks * Q8_BLOCK_SIZE;
      const x = specialVector(new SeededRandom(seed), n, withNonFinite);
      const padded = new Float32Array(valuesOffset + n + 5).fill(7);
      padded.set(x, valuesOffset);
      const expected = new Uint8Array(nBlocks * Q8_BLOCK_BYTES);
      Q8.quantizeRowRef(x, expected, 0);
      const out = new Uint8Array(outOffset + expected.length + 3).fill(0xa5);
      const nNonFinite = encodeQ8Range(padded, valuesOffset, n, out, outOffset);
      assert.deepEqual(out.subarray(outOffset, outOffset + expected.length), expected);
      assert.ok(out.subarray(0, outOffset).every((b) => b === 0xa5) && out.subarray(outOffset + expected.length).every((b) => b === 0xa5));
      let expectedNonFinite = 0;
      for (let b = 0; b < nBlocks; b++) {
        const h = expected[b * Q8_BLOCK_BYTES]! | (expected[b * Q8_BLOCK_BYTES + 1]! << 8);
        if (!Number.isFinite(halfToFloat(h))) expectedNonFinite++;
      }
      assert.equal(nNonFinite, expectedNonFinite);
      nNonFiniteSeen += nNonFinite;
    }),
    { seed: FC_SEED, numRuns: 300 },
  );
  assert.ok(nNonFiniteSeen > 100, `only ${nNonFiniteSeen} non-finite blocks generated`);
});

test("decodeQ8Range equals the reference dequantizer exactly and writes only its range", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 0, max: 9 }), fc.integer(), (nBlocks, outOffset, seed) => {
      const n = nBlocks * Q8_BLOCK_SIZE;
      const bytes = new Uint8Array(nBlocks * Q8_BLOCK_BYTES);
      encodeQ8Range(specialVector(new SeededRandom(seed), n, false), 0, n, bytes, 0);
      // Only blocks the default bound accepts: replace oversized ones by a valid block.
      for (let b = 0; b < nBlocks; b++) {
        if (checkQ8Blocks(bytes, b * Q8_BLOCK_BYTES, 1) !== "ok") bytes.set(block(floatToHalf(0.25), -3), b * Q8_BLOCK_BYTES);
      }
      const expected = new Float32Array(n);
      Q8.dequantizeRowRef(bytes, 0, expected, n);
      const out = new Float32Array(outOffset + n + 4).fill(-9);
      assert.equal(decodeQ8Range(bytes, 0, nBlocks, out, outOffset), "ok");
      assert.deepEqual(out.subarray(outOffset, outOffset + n), expected);
      assert.deepEqual([...out.subarray(0, outOffset), ...out.subarray(outOffset + n)], new Array(outOffset + 4).fill(-9));
    }),
    { seed: FC_SEED, numRuns: 300 },
  );
});

test("every f16 scale pattern: non-finite is rejected, |d·q| above the bound is rejected, the rest decodes", () => {
  const counts = { ok: 0, non_finite_scale: 0, above_max_abs: 0 };
  const out = new Float32Array(Q8_BLOCK_SIZE);
  for (let h = 0; h < 0x10000; h++) {
    for (const q of [127, -128]) {
      const bytes = block(h, q);
      out.fill(3);
      const d = halfToFloat(h);
      const expected = !Number.isFinite(d) ? "non_finite_scale" : Math.abs(d * q) > DEFAULT_Q8_MAX_ABS_VALUE ? "above_max_abs" : "ok";
      const status = decodeQ8Range(bytes, 0, 1, out, 0);
      if (status !== expected) assert.fail(`scale 0x${h.toString(16)} q ${q}: ${status}, expected ${expected}`);
      counts[status]++;
      if (status !== "ok" && out.some((v) => v !== 3)) assert.fail(`scale 0x${h.toString(16)}: a rejected block wrote output`);
      if (status === "ok" && out.some((v) => v !== d * q)) assert.fail(`scale 0x${h.toString(16)}: wrong value`);
    }
  }
  // 2·1024 non-finite patterns per sign; finite |d| ≤ 65504/128 = 511.75 passes for both q.
  assert.equal(counts.non_finite_scale, 2 * 2048);
  const nSmall = [...Array(0x10000).keys()].filter((h) => Math.abs(halfToFloat(h)) * 127 <= DEFAULT_Q8_MAX_ABS_VALUE).length;
  const nSmall128 = [...Array(0x10000).keys()].filter((h) => Math.abs(halfToFloat(h)) * 128 <= DEFAULT_Q8_MAX_ABS_VALUE).length;
  assert.equal(counts.ok, nSmall + nSmall128);
  assert.equal(counts.ok + counts.above_max_abs + counts.non_finite_scale, 2 * 0x10000);
});

test("a large scale passes when its values stay under the bound: the check uses the block's largest |q|", () => {
  const d = 65504; // the largest finite f16 scale
  const h = floatToHalf(d);
  assert.equal(checkQ8Blocks(block(h, 1), 0, 1), "ok");
  assert.equal(checkQ8Blocks(block(h, -1), 0, 1), "ok");
  assert.equal(checkQ8Blocks(block(h, 2), 0, 1), "above_max_abs");
  assert.equal(checkQ8Blocks(block(h, 0), 0, 1), "ok");
  // A custom bound: |0.5·100| = 50.
  const half = floatToHalf(0.5);
  assert.equal(checkQ8Blocks(block(half, 100), 0, 1, 50), "ok");
  assert.equal(checkQ8Blocks(block(half, 101), 0, 1, 50), "above_max_abs");
  assert.equal(checkQ8Blocks(block(half, -101), 0, 1, 50.5), "ok");
});

test("one bad block rejects the whole range and nothing is written, wherever it sits", () => {
  const good = block(floatToHalf(0.125), 8);
  for (const bad of [block(0x7e00, 1), block(0x7c00, 1), block(0xfc00, 1), block(0x7c01, 0), block(0xffff, 5), block(floatToHalf(60000), 100)]) {
    for (let at = 0; at < 4; at++) {
      const parts = [good, good, good, good];
      parts[at] = bad;
      const bytes = concat(...parts);
      const out = new Float32Array(4 * Q8_BLOCK_SIZE).fill(0.75);
      const status = decodeQ8Range(bytes, 0, 4, out, 0);
      assert.notEqual(status, "ok");
      assert.ok(out.every((v) => v === 0.75));
    }
  }
});

test("ranges that do not fit are caller bugs and throw a usage error", () => {
  const isUsage = (e: unknown): boolean => e instanceof HaloError && e.code === "HALO_ERR_USAGE";
  const bytes = new Uint8Array(2 * Q8_BLOCK_BYTES);
  assert.throws(() => decodeQ8Range(bytes, 0, 3, new Float32Array(96), 0), isUsage);
  assert.throws(() => decodeQ8Range(bytes, 0, 2, new Float32Array(64), 1), isUsage);
  assert.throws(() => checkQ8Blocks(bytes, 1, 2), isUsage);
  assert.throws(() => encodeQ8Range(new Float32Array(64), 1, 64, bytes, 0), isUsage);
  assert.throws(() => encodeQ8Range(new Float32Array(64), 0, 64, bytes, 1), isUsage);
  assert.throws(() => encodeQ8Range(new Float32Array(64), 0, 48, bytes, 0), isUsage);
});
