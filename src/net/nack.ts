/**
 * Negative acknowledgements on the data plane (docs/cluster.md, "NACKs"): a 52-byte datagram,
 * the data header with kind 3 and no payload, asking the peer to send one chunk of one step
 * again. A receiver that got some chunks of a step but not all knows the rest was lost and asks
 * at once, so one lost packet costs one round trip instead of a deadline. A step whose chunks
 * were all lost cannot be noticed this way: the deadlines still cover it.
 *
 * NACKs cross the same lossy link as data and carry the same MAC under the sender's session
 * key; the fields that say which chunk (position, layer, phase, chunkIndex, nChunks) are read
 * only after the MAC verifies, and nothing is allocated from them.
 */
import { timingSafeEqual } from "node:crypto";
import { DATAGRAM_HEADER_BYTES, DATAGRAM_HEADER_FIELDS as F, DATAGRAM_MAGIC, DATAGRAM_VERSION, N_SYNC_PHASES, type SyncPhaseId } from "./datagram.js";
import { DATAGRAM_MAC_BYTES, checkKey, checkUint, computeMac, fail, readU16, readU32, writeU16, writeU32 } from "./datagramBytes.js";

/** The kind code of a NACK datagram (data kinds are 1 and 2). */
export const NACK_KIND_CODE = 3;
/** Every NACK is exactly this long: a header and a MAC. */
export const NACK_BYTES: number = DATAGRAM_HEADER_BYTES + DATAGRAM_MAC_BYTES;

/** Which chunk of which step to send again. */
export interface NackRequest {
  sessionId: number;
  epoch: number;
  /** Who asks: 0 (the coordinator, for a partial sum) or a worker's index (for an input). */
  senderIndex: number;
  position: number;
  layer: number;
  phase: SyncPhaseId;
  chunkIndex: number;
  nChunks: number;
}

/** True when the datagram claims to be a NACK (by length and kind only): route it to `openNack`. */
export function isNackDatagram(datagram: Uint8Array): boolean {
  return datagram.length === NACK_BYTES && datagram[F.kind.offset] === NACK_KIND_CODE;
}

/** Writes a NACK into out[0, NACK_BYTES) and returns its length. Throws UsageError for a field out of range or a short key. */
export function encodeNack(request: NackRequest, key: Uint8Array, out: Uint8Array): number {
  checkKey(key);
  checkUint("sessionId", request.sessionId, 0xffffffff);
  checkUint("epoch", request.epoch, 0xffffffff);
  checkUint("senderIndex", request.senderIndex, 0xffff);
  checkUint("position", request.position, 0xffffffff);
  checkUint("layer", request.layer, 0xffff);
  checkUint("phase", request.phase, N_SYNC_PHASES - 1);
  checkUint("nChunks", request.nChunks, 0xffff);
  checkUint("chunkIndex", request.chunkIndex, request.nChunks - 1);
  if (out.length < NACK_BYTES) fail(`the output buffer holds ${out.length} bytes, a NACK needs ${NACK_BYTES}`);
  out.fill(0, 0, NACK_BYTES);
  writeU16(out, F.magic.offset, DATAGRAM_MAGIC);
  out[F.version.offset] = DATAGRAM_VERSION;
  out[F.kind.offset] = NACK_KIND_CODE;
  writeU32(out, F.sessionId.offset, request.sessionId);
  writeU32(out, F.epoch.offset, request.epoch);
  writeU16(out, F.senderIndex.offset, request.senderIndex);
  writeU16(out, F.layer.offset, request.layer);
  out[F.phase.offset] = request.phase;
  writeU16(out, F.chunkIndex.offset, request.chunkIndex);
  writeU16(out, F.nChunks.offset, request.nChunks);
  writeU32(out, F.position.offset, request.position);
  out.set(computeMac(out, NACK_BYTES, key).subarray(0, DATAGRAM_MAC_BYTES), NACK_BYTES - DATAGRAM_MAC_BYTES);
  return NACK_BYTES;
}

/** Why a NACK was ignored. */
export type NackRejectReason = "bad_len" | "bad_magic" | "bad_version" | "bad_kind" | "unknown_sender" | "bad_mac" | "wrong_session" | "stale_epoch" | "bad_range";

/**
 * The request in an authentic NACK of this session and epoch, or why it is not one. `keyFor`
 * gives the key of a sender index allowed to send NACKs here (undefined: not allowed). Never
 * throws on any bytes.
 */
export function openNack(
  datagram: Uint8Array,
  expected: { sessionId: number; epoch: number; nChunks: number; nLayers: number },
  keyFor: (senderIndex: number) => Uint8Array | undefined,
): NackRequest | NackRejectReason {
  if (datagram.length !== NACK_BYTES) return "bad_len";
  if (readU16(datagram, F.magic.offset) !== DATAGRAM_MAGIC) return "bad_magic";
  if (datagram[F.version.offset] !== DATAGRAM_VERSION) return "bad_version";
  if (datagram[F.kind.offset] !== NACK_KIND_CODE) return "bad_kind";
  const senderIndex = readU16(datagram, F.senderIndex.offset);
  const key = keyFor(senderIndex);
  if (key === undefined || key.length < 16) return "unknown_sender";
  const mac = computeMac(datagram, NACK_BYTES, key);
  if (!timingSafeEqual(mac.subarray(0, DATAGRAM_MAC_BYTES), datagram.subarray(NACK_BYTES - DATAGRAM_MAC_BYTES))) return "bad_mac";
  if (readU32(datagram, F.sessionId.offset) !== expected.sessionId) return "wrong_session";
  if (readU32(datagram, F.epoch.offset) !== expected.epoch) return "stale_epoch";
  const layer = readU16(datagram, F.layer.offset);
  const phase = datagram[F.phase.offset]!;
  const chunkIndex = readU16(datagram, F.chunkIndex.offset);
  const nChunks = readU16(datagram, F.nChunks.offset);
  if (layer >= expected.nLayers || phase >= N_SYNC_PHASES || nChunks !== expected.nChunks || chunkIndex >= nChunks) return "bad_range";
  return { sessionId: expected.sessionId, epoch: expected.epoch, senderIndex, position: readU32(datagram, F.position.offset), layer, phase: phase as SyncPhaseId, chunkIndex, nChunks };
}
