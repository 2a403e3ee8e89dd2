/** (nTokens, dim) float vectors in the session's wire format for the reliable (TCP) path, and back. */
import { HaloError } from "../base/index.js";
import { DEFAULT_WIRE_MAX_ABS_VALUE, WIRE_FORMATS, wireByteLength, type WireFormat } from "../net/index.js";

export function encodeVectors(values: Float32Array, nValues: number, format: WireFormat): Uint8Array {
  const out = new Uint8Array(wireByteLength(nValues, format));
  WIRE_FORMATS[format].encode(values, 0, nValues, out, 0);
  return out;
}

/** Decodes exactly nValues values; a size mismatch, a non-finite or an out-of-range value is a protocol error. */
export function decodeVectors(bytes: Uint8Array, nValues: number, out: Float32Array, format: WireFormat): void {
  const expected = wireByteLength(nValues, format);
  if (bytes.byteLength !== expected) throw new HaloError("HALO_ERR_MESSAGE_INVALID", `${format} tensor data of ${bytes.byteLength} bytes, ${expected} expected`);
  const traits = WIRE_FORMATS[format];
  const status = traits.decode(bytes, 0, nValues / traits.blockSize, out, 0, DEFAULT_WIRE_MAX_ABS_VALUE);
  if (status !== "ok") throw new HaloError("HALO_ERR_MESSAGE_INVALID", `tensor data rejected: ${status}`);
}
