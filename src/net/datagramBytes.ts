/**
 * Byte-level helpers shared by the datagram encoder and receiver (not part of net's public API):
 * little-endian fields, argument checks, and the truncated HMAC.
 */
import { createHmac } from "node:crypto";
import { UsageError } from "../base/index.js";
import { Q8_BLOCK_SIZE } from "./q8Vector.js";

/** Bytes of the truncated HMAC-SHA256 that ends every datagram. */
export const DATAGRAM_MAC_BYTES = 16;
/** The shortest session key encode and receive accept (cluster.md derives 32-byte keys). */
export const DATAGRAM_MIN_KEY_BYTES = 16;

export function fail(message: string): never {
  throw new UsageError(message);
}

export function checkUint(name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) fail(`${name} = ${value} is not an integer in [0, ${max}]`);
}

export function checkDim(dim: number): void {
  if (!Number.isInteger(dim) || dim <= 0 || dim % Q8_BLOCK_SIZE !== 0) fail(`dim ${dim} is not a positive multiple of the Q8_0 block size ${Q8_BLOCK_SIZE}`);
}

export function writeU16(out: Uint8Array, offset: number, value: number): void {
  out[offset] = value & 0xff;
  out[offset + 1] = (value >>> 8) & 0xff;
}

export function writeU32(out: Uint8Array, offset: number, value: number): void {
  writeU16(out, offset, value & 0xffff);
  writeU16(out, offset + 2, value >>> 16);
}

export function readU16(src: Uint8Array, offset: number): number {
  return src[offset]! | (src[offset + 1]! << 8);
}

export function readU32(src: Uint8Array, offset: number): number {
  return (readU16(src, offset) | (readU16(src, offset + 2) << 16)) >>> 0;
}

export function checkKey(key: Uint8Array): void {
  if (key.length < DATAGRAM_MIN_KEY_BYTES) fail(`a datagram key has ${key.length} bytes, at least ${DATAGRAM_MIN_KEY_BYTES} are required`);
}

/** HMAC-SHA256(key, datagram[0, length − 16)) truncated to 16 bytes (a fresh Buffer). */
export function computeMac(datagram: Uint8Array, length: number, key: Uint8Array): Buffer {
  return createHmac("sha256", key).update(datagram.subarray(0, length - DATAGRAM_MAC_BYTES)).digest();
}
