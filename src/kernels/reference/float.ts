/** IEEE half-precision conversion and the F32/F16 row codecs (the reference, not a fast path). */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Half bits to float, exact. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Float to half bits, rounding to nearest even (as the F16C instructions and ggml do). */
export function floatToHalf(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0);
  let e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    let half = mantissa >>> shift;
    const remainder = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && (half & 1) !== 0)) half += 1;
    return sign | half;
  }
  let half = (e << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && (half & 1) !== 0)) half += 1;
  return sign | half;
}

/** Rounds a float to the nearest half-precision value. */
export function roundToHalf(value: number): number {
  return halfToFloat(floatToHalf(value));
}

export function dequantizeRowF32(src: Uint8Array, byteOffset: number, out: Float32Array, n: number): void {
  const view = new DataView(src.buffer, src.byteOffset + byteOffset, n * 4);
  for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
}

export function quantizeRowF32(x: Float32Array, dst: Uint8Array, byteOffset: number): void {
  const view = new DataView(dst.buffer, dst.byteOffset + byteOffset, x.length * 4);
  for (let i = 0; i < x.length; i++) view.setFloat32(i * 4, x[i]!, true);
}

export function dequantizeRowF16(src: Uint8Array, byteOffset: number, out: Float32Array, n: number): void {
  const base = byteOffset;
  for (let i = 0; i < n; i++) out[i] = halfToFloat(src[base + 2 * i]! | (src[base + 2 * i + 1]! << 8));
}

export function quantizeRowF16(x: Float32Array, dst: Uint8Array, byteOffset: number): void {
  for (let i = 0; i < x.length; i++) {
    const h = floatToHalf(x[i]!);
    dst[byteOffset + 2 * i] = h & 0xff;
    dst[byteOffset + 2 * i + 1] = h >>> 8;
  }
}
