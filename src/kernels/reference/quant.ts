/**
 * Q8_0 and Q4_0 block codecs, following ggml's `quantize_row_*_ref` semantics.
 * Q8_0 block (34 B): f16 scale d, then 32 int8 q; x = d·q.
 * Q4_0 block (18 B): f16 scale d, then 16 bytes; byte j holds element j in its low nibble
 * and element j+16 in its high nibble; x = d·(nibble − 8).
 */
import { floatToHalf, halfToFloat } from "./float.js";

export const Q8_0_BLOCK_SIZE = 32;
export const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK_SIZE;
export const Q4_0_BLOCK_SIZE = 32;
export const Q4_0_BLOCK_BYTES = 2 + Q4_0_BLOCK_SIZE / 2;

function readHalf(src: Uint8Array, offset: number): number {
  return halfToFloat(src[offset]! | (src[offset + 1]! << 8));
}

function writeHalf(dst: Uint8Array, offset: number, value: number): void {
  const h = floatToHalf(value);
  dst[offset] = h & 0xff;
  dst[offset + 1] = h >>> 8;
}

export function dequantizeRowQ8_0(src: Uint8Array, byteOffset: number, out: Float32Array, n: number): void {
  const nBlocks = n / Q8_0_BLOCK_SIZE;
  for (let b = 0; b < nBlocks; b++) {
    const base = byteOffset + b * Q8_0_BLOCK_BYTES;
    const d = readHalf(src, base);
    for (let j = 0; j < Q8_0_BLOCK_SIZE; j++) {
      const q = (src[base + 2 + j]! << 24) >> 24;
      out[b * Q8_0_BLOCK_SIZE + j] = d * q;
    }
  }
}

export function quantizeRowQ8_0(x: Float32Array, dst: Uint8Array, byteOffset: number): void {
  const nBlocks = x.length / Q8_0_BLOCK_SIZE;
  for (let b = 0; b < nBlocks; b++) {
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK_SIZE; j++) amax = Math.max(amax, Math.abs(x[b * Q8_0_BLOCK_SIZE + j]!));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const base = byteOffset + b * Q8_0_BLOCK_BYTES;
    writeHalf(dst, base, d);
    for (let j = 0; j < Q8_0_BLOCK_SIZE; j++) {
      const q = roundHalfAwayFromZero(Math.fround(x[b * Q8_0_BLOCK_SIZE + j]! * id));
      dst[base + 2 + j] = q & 0xff;
    }
  }
}

export function dequantizeRowQ4_0(src: Uint8Array, byteOffset: number, out: Float32Array, n: number): void {
  const nBlocks = n / Q4_0_BLOCK_SIZE;
  const half = Q4_0_BLOCK_SIZE / 2;
  for (let b = 0; b < nBlocks; b++) {
    const base = byteOffset + b * Q4_0_BLOCK_BYTES;
    const d = readHalf(src, base);
    for (let j = 0; j < half; j++) {
      const byte = src[base + 2 + j]!;
      out[b * Q4_0_BLOCK_SIZE + j] = d * ((byte & 0x0f) - 8);
      out[b * Q4_0_BLOCK_SIZE + j + half] = d * ((byte >>> 4) - 8);
    }
  }
}

export function quantizeRowQ4_0(x: Float32Array, dst: Uint8Array, byteOffset: number): void {
  const nBlocks = x.length / Q4_0_BLOCK_SIZE;
  const half = Q4_0_BLOCK_SIZE / 2;
  for (let b = 0; b < nBlocks; b++) {
    // The scale maps the value of largest magnitude to −8, keeping its sign, as ggml does.
    let amax = 0;
    let max = 0;
    for (let j = 0; j < Q4_0_BLOCK_SIZE; j++) {
      const v = x[b * Q4_0_BLOCK_SIZE + j]!;
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const base = byteOffset + b * Q4_0_BLOCK_BYTES;
    writeHalf(dst, base, d);
    for (let j = 0; j < half; j++) {
      const lo = Math.min(15, truncToInt8(Math.fround(Math.fround(x[b * Q4_0_BLOCK_SIZE + j]! * id) + 8.5)));
      const hi = Math.min(15, truncToInt8(Math.fround(Math.fround(x[b * Q4_0_BLOCK_SIZE + j + half]! * id) + 8.5)));
      dst[base + 2 + j] = (lo & 0x0f) | ((hi & 0x0f) << 4);
    }
  }
}

/** C's roundf: halves round away from zero. */
function roundHalfAwayFromZero(v: number): number {
  return v < 0 ? -Math.round(-v) : Math.round(v);
}

/** C's (int8_t) cast of a float in range: truncation toward zero. */
function truncToInt8(v: number): number {
  return Math.trunc(v);
}
