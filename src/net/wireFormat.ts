/**
 * How a session's vectors (the normed input u, the partial sums) travel: one traits entry per
 * format, read by the datagram codec and the reliable (TCP) path alike. Every format packs
 * blocks of 32 elements, so chunk geometry (offsets, element counts) is the same arithmetic
 * for all of them and only the bytes per block differ.
 *
 * - `q8_0` (default, DESIGN "Sync precision"): 34 bytes per 32 elements, ggml's Q8_0 layout.
 * - `q4_0`: 18 bytes per block, ggml's Q4_0 (for comparison: half the bytes, ~8x the error).
 * - `f16`: 64 bytes per block; IEEE half, round to nearest even.
 * - `f32`: 128 bytes per block; exact, for fidelity checks against a single node.
 *
 * Decoding validates before writing anything, as Q8_0 does (RELIABILITY D8): a NaN/Inf value or
 * one beyond `maxAbsValue` rejects the whole range.
 */
import { QUANT_TRAITS, floatToHalf } from "../kernels/index.js";
import { UsageError } from "../base/index.js";
import { DEFAULT_Q8_MAX_ABS_VALUE, HALF_TO_FLOAT, Q8_BLOCK_BYTES, Q8_BLOCK_SIZE, decodeQ8Range, encodeQ8Range, type Q8DecodeStatus } from "./q8Vector.js";

export const WIRE_FORMAT_NAMES = ["q8_0", "q4_0", "f16", "f32"] as const;
export type WireFormat = (typeof WIRE_FORMAT_NAMES)[number];

/** Why a range was rejected: Q8_0's reasons, or a NaN/±Inf element of a float format. */
export type WireDecodeStatus = Q8DecodeStatus | "non_finite_value";

export interface WireFormatTraits {
  readonly name: WireFormat;
  /** Elements per block (32 for every format). */
  readonly blockSize: number;
  readonly blockBytes: number;
  /** Writes values[valuesOffset, +nElements) at out[outOffset…); nElements is a multiple of blockSize. */
  encode(values: Float32Array, valuesOffset: number, nElements: number, out: Uint8Array, outOffset: number): void;
  /** Validates then decodes nBlocks blocks; on any status but "ok" nothing is written. */
  decode(src: Uint8Array, srcOffset: number, nBlocks: number, out: Float32Array, outOffset: number, maxAbsValue: number): WireDecodeStatus;
}

/** The f16 exponent bits; all ones means ±Inf or NaN. */
const HALF_EXPONENT_MASK = 0x7c00;

function checkFit(what: string, offset: number, length: number, capacity: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + length > capacity) throw new UsageError(`${what}: range [${offset}, ${offset}+${length}) does not fit in ${capacity}`);
}

function checkElements(nElements: number): void {
  if (!Number.isInteger(nElements) || nElements < 0 || nElements % Q8_BLOCK_SIZE !== 0) throw new UsageError(`nElements ${nElements} is not a non-negative multiple of ${Q8_BLOCK_SIZE}`);
}

const Q8_0_FORMAT: WireFormatTraits = {
  name: "q8_0",
  blockSize: Q8_BLOCK_SIZE,
  blockBytes: Q8_BLOCK_BYTES,
  encode: (values, valuesOffset, nElements, out, outOffset) => void encodeQ8Range(values, valuesOffset, nElements, out, outOffset),
  decode: decodeQ8Range,
};

const Q4 = QUANT_TRAITS.Q4_0;

const Q4_0_FORMAT: WireFormatTraits = {
  name: "q4_0",
  blockSize: Q4.blockSize,
  blockBytes: Q4.blockBytes,
  encode(values, valuesOffset, nElements, out, outOffset) {
    checkElements(nElements);
    checkFit("q4_0 encode values", valuesOffset, nElements, values.length);
    checkFit("q4_0 encode out", outOffset, (nElements / Q4.blockSize) * Q4.blockBytes, out.length);
    Q4.quantizeRowRef(values.subarray(valuesOffset, valuesOffset + nElements), out, outOffset);
  },
  decode(src, srcOffset, nBlocks, out, outOffset, maxAbsValue) {
    checkFit("q4_0 decode src", srcOffset, nBlocks * Q4.blockBytes, src.length);
    checkFit("q4_0 decode out", outOffset, nBlocks * Q4.blockSize, out.length);
    for (let b = 0; b < nBlocks; b++) {
      const h = src[srcOffset + b * Q4.blockBytes]! | (src[srcOffset + b * Q4.blockBytes + 1]! << 8);
      if ((h & HALF_EXPONENT_MASK) === HALF_EXPONENT_MASK) return "non_finite_scale";
      // Q4_0 values are d·(q − 8) with q in 0..15: at most 8·|d|.
      if (8 * Math.abs(HALF_TO_FLOAT[h]!) > maxAbsValue) return "above_max_abs";
    }
    Q4.dequantizeRowRef(src, srcOffset, out.subarray(outOffset, outOffset + nBlocks * Q4.blockSize), nBlocks * Q4.blockSize);
    return "ok";
  },
};

const F16_FORMAT: WireFormatTraits = {
  name: "f16",
  blockSize: Q8_BLOCK_SIZE,
  blockBytes: 2 * Q8_BLOCK_SIZE,
  encode(values, valuesOffset, nElements, out, outOffset) {
    checkElements(nElements);
    checkFit("f16 encode values", valuesOffset, nElements, values.length);
    checkFit("f16 encode out", outOffset, 2 * nElements, out.length);
    for (let i = 0; i < nElements; i++) {
      const h = floatToHalf(values[valuesOffset + i]!);
      out[outOffset + 2 * i] = h & 0xff;
      out[outOffset + 2 * i + 1] = h >>> 8;
    }
  },
  decode(src, srcOffset, nBlocks, out, outOffset, maxAbsValue) {
    const n = nBlocks * Q8_BLOCK_SIZE;
    checkFit("f16 decode src", srcOffset, 2 * n, src.length);
    checkFit("f16 decode out", outOffset, n, out.length);
    for (let i = 0; i < n; i++) {
      const h = src[srcOffset + 2 * i]! | (src[srcOffset + 2 * i + 1]! << 8);
      if ((h & HALF_EXPONENT_MASK) === HALF_EXPONENT_MASK) return "non_finite_value";
      if (Math.abs(HALF_TO_FLOAT[h]!) > maxAbsValue) return "above_max_abs";
    }
    for (let i = 0; i < n; i++) out[outOffset + i] = HALF_TO_FLOAT[src[srcOffset + 2 * i]! | (src[srcOffset + 2 * i + 1]! << 8)]!;
    return "ok";
  },
};

const F32_FORMAT: WireFormatTraits = {
  name: "f32",
  blockSize: Q8_BLOCK_SIZE,
  blockBytes: 4 * Q8_BLOCK_SIZE,
  encode(values, valuesOffset, nElements, out, outOffset) {
    checkElements(nElements);
    checkFit("f32 encode values", valuesOffset, nElements, values.length);
    checkFit("f32 encode out", outOffset, 4 * nElements, out.length);
    // A DataView, because a Buffer from Node's pool may sit at an offset that is not a multiple of 4.
    const view = new DataView(out.buffer, out.byteOffset + outOffset, 4 * nElements);
    for (let i = 0; i < nElements; i++) view.setFloat32(4 * i, values[valuesOffset + i]!, true);
  },
  decode(src, srcOffset, nBlocks, out, outOffset, maxAbsValue) {
    const n = nBlocks * Q8_BLOCK_SIZE;
    checkFit("f32 decode src", srcOffset, 4 * n, src.length);
    checkFit("f32 decode out", outOffset, n, out.length);
    const view = new DataView(src.buffer, src.byteOffset + srcOffset, 4 * n);
    for (let i = 0; i < n; i++) {
      const x = view.getFloat32(4 * i, true);
      if (!Number.isFinite(x)) return "non_finite_value";
      if (Math.abs(x) > maxAbsValue) return "above_max_abs";
    }
    for (let i = 0; i < n; i++) out[outOffset + i] = view.getFloat32(4 * i, true);
    return "ok";
  },
};

export const WIRE_FORMATS: Readonly<Record<WireFormat, WireFormatTraits>> = { q8_0: Q8_0_FORMAT, q4_0: Q4_0_FORMAT, f16: F16_FORMAT, f32: F32_FORMAT };

/** The smallest block of any format (Q4_0's 18 bytes), for the datagram length floor. */
export const MIN_WIRE_BLOCK_BYTES: number = Math.min(...Object.values(WIRE_FORMATS).map((f) => f.blockBytes));

/** The default bound on any decoded |value| (see q8Vector.ts for why 65,504). */
export const DEFAULT_WIRE_MAX_ABS_VALUE = DEFAULT_Q8_MAX_ABS_VALUE;

/** Bytes of nElements (a multiple of 32) in `format`. */
export function wireByteLength(nElements: number, format: WireFormat = "q8_0"): number {
  checkElements(nElements);
  const traits = WIRE_FORMATS[format];
  return (nElements / traits.blockSize) * traits.blockBytes;
}
