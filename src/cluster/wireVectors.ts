/** (nTokens, dim) float vectors as Q8_0 bytes for the reliable (TCP) path, and back. */
import { HaloError } from "../base/index.js";
import { decodeQ8Range, encodeQ8Range, q8ByteLength } from "../net/index.js";

export function encodeVectors(values: Float32Array, nValues: number): Uint8Array {
  const out = new Uint8Array(q8ByteLength(nValues));
  encodeQ8Range(values, 0, nValues, out, 0);
  return out;
}

/** Decodes exactly nValues values; a size mismatch or a bad scale is a protocol error. */
export function decodeVectors(bytes: Uint8Array, nValues: number, out: Float32Array): void {
  if (bytes.byteLength !== q8ByteLength(nValues)) throw new HaloError("HALO_ERR_MESSAGE_INVALID", `tensor data of ${bytes.byteLength} bytes, ${q8ByteLength(nValues)} expected`);
  const status = decodeQ8Range(bytes, 0, nValues / 32, out, 0);
  if (status !== "ok") throw new HaloError("HALO_ERR_MESSAGE_INVALID", `tensor data rejected: ${status}`);
}
