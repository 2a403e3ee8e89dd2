/**
 * Q8_0 blocks for the wire: quantize a range of a float vector into caller-owned bytes and
 * decode blocks back into a caller-owned float range, with nothing allocated per call.
 *
 * Sizes come from `QUANT_TRAITS.Q8_0` (STYLE §3); the quantizer writes byte for byte what the
 * reference `quantizeRowRef` writes (test/net/q8Vector.test.ts checks it), but takes an offset
 * into a larger vector instead of a whole array, so the sender needs no subarray per chunk.
 *
 * Decoding is where untrusted numbers enter the hidden state (RELIABILITY D8), so it validates
 * every block's scale before writing anything: a block whose f16 scale is NaN or ±Inf, or
 * whose largest decoded magnitude |d·q| exceeds `maxAbsValue`, rejects the whole range and the
 * output is left untouched. Nothing is clamped.
 *
 * Why `maxAbsValue` defaults to 65,504 (the largest finite f16): a finite f16 scale can still
 * decode to |d·q| ≤ 65,504·128 ≈ 8.4e6 per element, which a handful of contributions would
 * turn into an RMSNorm input whose square sum overflows nothing in f32 but wrecks every later
 * layer. Real activations sit far lower (LLaMA-family "massive activations" reach a few
 * thousand), and engines that keep activations in f16 (llama.cpp's f16 paths) cannot hold more
 * than 65,504 either, so the default never rejects an honest contribution while bounding what
 * a buggy or compromised worker can add to ≤ 65,504 per element per datagram. `cluster/` may
 * pass a tighter, calibrated bound.
 */
import { UsageError } from "../base/index.js";
import { QUANT_TRAITS, floatToHalf, halfToFloat } from "../kernels/index.js";

const Q8_0 = QUANT_TRAITS.Q8_0;

/** Elements per Q8_0 block, from the traits table. */
export const Q8_BLOCK_SIZE: number = Q8_0.blockSize;
/** Bytes per Q8_0 block (an f16 scale then `Q8_BLOCK_SIZE` int8 values), from the traits table. */
export const Q8_BLOCK_BYTES: number = Q8_0.blockBytes;
/** Bytes of the f16 scale that opens each block. */
const SCALE_BYTES = Q8_BLOCK_BYTES - Q8_BLOCK_SIZE;

/** The default bound on any decoded |d·q|: the largest finite f16 (see the file comment). */
export const DEFAULT_Q8_MAX_ABS_VALUE = 65504;

/**
 * The outcome of validating or decoding blocks: `"ok"`, or why the range was rejected
 * (`"non_finite_scale"`: a NaN or ±Inf f16 scale; `"above_max_abs"`: some |d·q| > maxAbsValue).
 */
export type Q8DecodeStatus = "ok" | "non_finite_scale" | "above_max_abs";

/**
 * f16 bits → float, for all 65,536 patterns (256 KiB, built once at load, never written
 * again): the decoder reads one scale per 32 elements and a table read is several times
 * cheaper than `halfToFloat`'s arithmetic.
 */
export const HALF_TO_FLOAT: Float32Array = (() => {
  const table = new Float32Array(1 << 16);
  for (let h = 0; h < table.length; h++) table[h] = halfToFloat(h);
  return table;
})();

/** The f16 exponent bits; all ones means ±Inf or NaN. */
const HALF_EXPONENT_MASK = 0x7c00;

function checkRange(what: string, offset: number, length: number, capacity: number): void {
  if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > capacity) {
    throw new UsageError(`${what}: range [${offset}, ${offset}+${length}) does not fit in ${capacity}`);
  }
}

/** Bytes needed for `nElements` elements (a multiple of `Q8_BLOCK_SIZE`) as Q8_0 blocks. */
export function q8ByteLength(nElements: number): number {
  if (!Number.isInteger(nElements) || nElements < 0 || nElements % Q8_BLOCK_SIZE !== 0) {
    throw new UsageError(`nElements ${nElements} is not a non-negative multiple of the Q8_0 block size ${Q8_BLOCK_SIZE}`);
  }
  return (nElements / Q8_BLOCK_SIZE) * Q8_BLOCK_BYTES;
}

/**
 * Quantizes values[valuesOffset, valuesOffset + nElements) into Q8_0 blocks at out[outOffset…),
 * exactly as `QUANT_TRAITS.Q8_0.quantizeRowRef` would (d = amax/127 in f32, stored as f16;
 * q = round-half-away(x·(1/d))).
 *
 * Returns the number of blocks whose stored scale is not finite (a NaN or ±Inf input, or
 * amax/127 beyond the f16 range): those bytes are written as the reference writes them, and a
 * receiver rejects them, so a non-zero count tells the sender it is about to send garbage.
 * Throws `UsageError` when nElements is not a multiple of the block size or a range does not fit.
 */
export function encodeQ8Range(values: Float32Array, valuesOffset: number, nElements: number, out: Uint8Array, outOffset: number): number {
  const nBytes = q8ByteLength(nElements);
  checkRange("encodeQ8Range values", valuesOffset, nElements, values.length);
  checkRange("encodeQ8Range out", outOffset, nBytes, out.length);
  const nBlocks = nElements / Q8_BLOCK_SIZE;
  let nNonFinite = 0;
  for (let b = 0; b < nBlocks; b++) {
    const x0 = valuesOffset + b * Q8_BLOCK_SIZE;
    let amax = 0;
    // Math.max, not a comparison, so a NaN element makes the scale NaN (as in the reference)
    // instead of being skipped and sent as a silent zero.
    for (let j = 0; j < Q8_BLOCK_SIZE; j++) amax = Math.max(amax, Math.abs(values[x0 + j]!));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const h = floatToHalf(d);
    if ((h & HALF_EXPONENT_MASK) === HALF_EXPONENT_MASK) nNonFinite++;
    const base = outOffset + b * Q8_BLOCK_BYTES;
    out[base] = h & 0xff;
    out[base + 1] = h >>> 8;
    for (let j = 0; j < Q8_BLOCK_SIZE; j++) {
      const v = Math.fround(values[x0 + j]! * id);
      // C's roundf (halves away from zero); NaN & 0xff is 0, as the reference writes it.
      out[base + SCALE_BYTES + j] = (v < 0 ? -Math.round(-v) : Math.round(v)) & 0xff;
    }
  }
  return nNonFinite;
}

/**
 * Validates `nBlocks` Q8_0 blocks at src[srcOffset…) without decoding them: every scale is
 * finite and every |d·q| ≤ maxAbsValue. Throws `UsageError` only for a range that does not fit.
 */
export function checkQ8Blocks(src: Uint8Array, srcOffset: number, nBlocks: number, maxAbsValue: number = DEFAULT_Q8_MAX_ABS_VALUE): Q8DecodeStatus {
  checkRange("checkQ8Blocks src", srcOffset, nBlocks * Q8_BLOCK_BYTES, src.length);
  for (let b = 0; b < nBlocks; b++) {
    const base = srcOffset + b * Q8_BLOCK_BYTES;
    const h = src[base]! | (src[base + 1]! << 8);
    if ((h & HALF_EXPONENT_MASK) === HALF_EXPONENT_MASK) return "non_finite_scale";
    const absD = Math.abs(HALF_TO_FLOAT[h]!);
    // |q| ≤ 128, so most blocks pass without looking at their values.
    if (absD * 128 <= maxAbsValue) continue;
    let maxQ = 0;
    for (let j = 0; j < Q8_BLOCK_SIZE; j++) {
      const q = Math.abs((src[base + SCALE_BYTES + j]! << 24) >> 24);
      if (q > maxQ) maxQ = q;
    }
    if (absD * maxQ > maxAbsValue) return "above_max_abs";
  }
  return "ok";
}

/**
 * Decodes `nBlocks` Q8_0 blocks at src[srcOffset…) into out[outOffset, outOffset + nBlocks·32)
 * (x = d·q, overwriting), after validating all of them with `checkQ8Blocks`. On any status but
 * `"ok"` nothing is written. Throws `UsageError` only for a range that does not fit; bad data is
 * a returned status, never a throw.
 */
export function decodeQ8Range(
  src: Uint8Array,
  srcOffset: number,
  nBlocks: number,
  out: Float32Array,
  outOffset: number,
  maxAbsValue: number = DEFAULT_Q8_MAX_ABS_VALUE,
): Q8DecodeStatus {
  checkRange("decodeQ8Range out", outOffset, nBlocks * Q8_BLOCK_SIZE, out.length);
  const status = checkQ8Blocks(src, srcOffset, nBlocks, maxAbsValue);
  if (status !== "ok") return status;
  for (let b = 0; b < nBlocks; b++) {
    const base = srcOffset + b * Q8_BLOCK_BYTES;
    const d = HALF_TO_FLOAT[src[base]! | (src[base + 1]! << 8)]!;
    const o = outOffset + b * Q8_BLOCK_SIZE;
    for (let j = 0; j < Q8_BLOCK_SIZE; j++) out[o + j] = d * ((src[base + SCALE_BYTES + j]! << 24) >> 24);
  }
  return "ok";
}
