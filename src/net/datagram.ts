/**
 * The sending half and the layout of the UDP data-plane codec of docs/cluster.md ("Data plane"):
 * one datagram carries one chunk of whole blocks (in the session's wire format) of a dim-length
 * vector (an input `u` or a worker's partial sum) for one (position, layer, phase) step, behind a
 * 36-byte little-endian header and followed by a 16-byte truncated HMAC-SHA256 under the
 * sender's per-worker session key. Encoding writes into a caller-owned buffer; the receiver is in
 * datagramReceiver.ts.
 */
import { Q8_BLOCK_SIZE } from "./q8Vector.js";
import { DATAGRAM_MAC_BYTES, checkDim, checkKey, checkUint, computeMac, fail, writeU16, writeU32 } from "./datagramBytes.js";
import { MIN_WIRE_BLOCK_BYTES, WIRE_FORMATS, type WireFormat } from "./wireFormat.js";

export { DATAGRAM_MAC_BYTES, DATAGRAM_MIN_KEY_BYTES } from "./datagramBytes.js";

/** The header layout, declared once: the codec and the tests read offsets from this table. */
export const DATAGRAM_HEADER_FIELDS = {
  magic: { offset: 0, sizeBytes: 2 },
  version: { offset: 2, sizeBytes: 1 },
  kind: { offset: 3, sizeBytes: 1 },
  sessionId: { offset: 4, sizeBytes: 4 },
  epoch: { offset: 8, sizeBytes: 4 },
  senderIndex: { offset: 12, sizeBytes: 2 },
  layer: { offset: 14, sizeBytes: 2 },
  phase: { offset: 16, sizeBytes: 1 },
  flags: { offset: 17, sizeBytes: 1 },
  chunkIndex: { offset: 18, sizeBytes: 2 },
  nChunks: { offset: 20, sizeBytes: 2 },
  position: { offset: 22, sizeBytes: 4 },
  offset: { offset: 26, sizeBytes: 4 },
  nElements: { offset: 30, sizeBytes: 2 },
  sendTimeUs: { offset: 32, sizeBytes: 4 },
} as const satisfies Record<string, { offset: number; sizeBytes: 1 | 2 | 4 }>;

export type DatagramHeaderField = keyof typeof DATAGRAM_HEADER_FIELDS;

const F = DATAGRAM_HEADER_FIELDS;

/** Bytes of the fixed header (36), derived from the layout table. */
export const DATAGRAM_HEADER_BYTES: number = Math.max(...Object.values(F).map((f) => f.offset + f.sizeBytes));
/** The largest datagram sent or accepted, in bytes. */
export const DATAGRAM_MAX_BYTES = 1400;
/** Blocks of 32 elements that fit in one datagram: ⌊(1400 − 36 − 16) / blockBytes⌋, i.e. 39 Q8_0, 74 Q4_0, 21 f16 or 10 f32 blocks. */
export function maxBlocksPerChunk(format: WireFormat = "q8_0"): number {
  return Math.floor((DATAGRAM_MAX_BYTES - DATAGRAM_HEADER_BYTES - DATAGRAM_MAC_BYTES) / WIRE_FORMATS[format].blockBytes);
}
/** Q8_0 blocks that fit in one datagram: ⌊(1400 − 36 − 16) / 34⌋ = 39. */
export const MAX_BLOCKS_PER_CHUNK: number = maxBlocksPerChunk("q8_0");
/** The smallest valid datagram: a header, one block of the most compact format (Q4_0, 18 bytes) and the MAC. */
export const DATAGRAM_MIN_BYTES: number = DATAGRAM_HEADER_BYTES + MIN_WIRE_BLOCK_BYTES + DATAGRAM_MAC_BYTES;
/** "HA", little-endian. */
export const DATAGRAM_MAGIC = 0x4148;
export const DATAGRAM_VERSION = 1;
/** Flags bit 0: this datagram is the second copy of an input sent twice. Other bits are reserved: sent as 0, ignored on receipt (a new meaning needs a version bump). */
export const DATAGRAM_FLAG_DUPLICATE_COPY = 1;

/** `input`: coordinator → worker (the normed hidden state u); `partial`: worker → coordinator (an additive partial sum). */
export type DatagramKind = "input" | "partial";
export const DATAGRAM_KIND_CODES = { input: 1, partial: 2 } as const satisfies Record<DatagramKind, number>;

/** The two synchronised phases of a layer, as on the wire. */
export const SYNC_PHASE_IDS = { attention: 0, ffn: 1 } as const;
export type SyncPhaseId = (typeof SYNC_PHASE_IDS)[keyof typeof SYNC_PHASE_IDS];
export const N_SYNC_PHASES: number = Object.keys(SYNC_PHASE_IDS).length;

/** One datagram's header, as written by `encodeDatagram` and returned by `DatagramReceiver.accept`. */
export interface DatagramHeader {
  kind: DatagramKind;
  /** u32, random per coordinator session. */
  sessionId: number;
  /** u32, +1 on every coordinator restart or re-plan. */
  epoch: number;
  /** u16 node index; 0 is the coordinator. */
  senderIndex: number;
  /** u16, < nLayers. */
  layer: number;
  phase: SyncPhaseId;
  /** Flags bit 0: the second copy of an input (inputs to critical workers are sent twice). */
  isDuplicateCopy: boolean;
  /** u16, < nChunks; the index into `planChunks(dim)`. */
  chunkIndex: number;
  /** u16, `planChunks(dim).length`. */
  nChunks: number;
  /** u32 token position. */
  position: number;
  /** Element offset of the chunk in the dim-length vector, a multiple of the block size. */
  offset: number;
  /** Elements in the chunk: a multiple of the block size, at most MAX_BLOCKS_PER_CHUNK blocks. */
  nElements: number;
  /** u32, the sender's monotonic clock in µs (wrapping), for RTT and jitter estimates. */
  sendTimeUs: number;
}

/** A chunk of a dim-length vector: elements [offset, offset + nElements). */
export interface DatagramChunk {
  readonly offset: number;
  readonly nElements: number;
}

/**
 * Splits a dim-length vector into the fewest chunks of whole blocks that fit a datagram
 * (≤ MAX_BLOCKS_PER_CHUNK blocks each), as even as possible: the first (nBlocks mod nChunks)
 * chunks carry one block more. Both ends derive the same plan from dim, and the receiver
 * accepts a chunk only at exactly its planned range, so chunks never overlap.
 */
export function planChunks(dim: number, format: WireFormat = "q8_0"): DatagramChunk[] {
  checkDim(dim);
  const nBlocks = dim / Q8_BLOCK_SIZE;
  const nChunks = Math.ceil(nBlocks / maxBlocksPerChunk(format));
  checkUint("nChunks", nChunks, 0xffff);
  const base = Math.floor(nBlocks / nChunks);
  const nLarger = nBlocks % nChunks;
  const chunks: DatagramChunk[] = [];
  let block = 0;
  for (let c = 0; c < nChunks; c++) {
    const n = base + (c < nLarger ? 1 : 0);
    chunks.push({ offset: block * Q8_BLOCK_SIZE, nElements: n * Q8_BLOCK_SIZE });
    block += n;
  }
  return chunks;
}

/** Bytes of the datagram carrying `nElements` elements in `format`. */
export function datagramByteLength(nElements: number, format: WireFormat = "q8_0"): number {
  return DATAGRAM_HEADER_BYTES + (nElements / Q8_BLOCK_SIZE) * WIRE_FORMATS[format].blockBytes + DATAGRAM_MAC_BYTES;
}

/** The header's plain unsigned fields, written and read by their size in the layout table. */
const UINT_FIELDS = [
  "sessionId",
  "epoch",
  "senderIndex",
  "layer",
  "phase",
  "chunkIndex",
  "nChunks",
  "position",
  "offset",
  "nElements",
  "sendTimeUs",
] as const satisfies readonly (DatagramHeaderField & keyof DatagramHeader)[];

/** Checks a header for sending and writes it to out[0, DATAGRAM_HEADER_BYTES); returns the datagram's total length. */
function writeHeader(header: DatagramHeader, out: Uint8Array, format: WireFormat): number {
  const code = Object.hasOwn(DATAGRAM_KIND_CODES, header.kind) ? DATAGRAM_KIND_CODES[header.kind] : fail(`kind ${String(header.kind)} is not input or partial`);
  for (const name of UINT_FIELDS) checkUint(name, header[name], 2 ** (8 * F[name].sizeBytes) - 1);
  const { nElements, chunkIndex, nChunks } = header;
  checkUint("phase", header.phase, N_SYNC_PHASES - 1);
  if (chunkIndex >= nChunks) fail(`chunkIndex ${chunkIndex} is not below nChunks ${nChunks}`);
  if (header.offset % Q8_BLOCK_SIZE !== 0) fail(`offset ${header.offset} is not a multiple of the block size ${Q8_BLOCK_SIZE}`);
  const maxBlocks = maxBlocksPerChunk(format);
  if (nElements === 0 || nElements % Q8_BLOCK_SIZE !== 0 || nElements > maxBlocks * Q8_BLOCK_SIZE) {
    fail(`nElements ${nElements} is not a positive multiple of ${Q8_BLOCK_SIZE} up to ${maxBlocks} blocks`);
  }
  const length = datagramByteLength(nElements, format);
  if (out.length < length) fail(`the output buffer holds ${out.length} bytes, the datagram needs ${length}`);
  writeU16(out, F.magic.offset, DATAGRAM_MAGIC);
  out[F.version.offset] = DATAGRAM_VERSION;
  out[F.kind.offset] = code;
  out[F.flags.offset] = header.isDuplicateCopy ? DATAGRAM_FLAG_DUPLICATE_COPY : 0;
  for (const name of UINT_FIELDS) {
    const { offset, sizeBytes } = F[name];
    if (sizeBytes === 1) out[offset] = header[name];
    else if (sizeBytes === 2) writeU16(out, offset, header[name]);
    else writeU32(out, offset, header[name]);
  }
  return length;
}

/**
 * Writes the MAC of datagram[0, length − 16) into datagram[length − 16, length). For senders
 * that patch a field of an encoded datagram before sending (sendTimeUs at send time, the
 * duplicate-copy flag) and for tests that mutate a datagram and re-MAC it.
 */
export function sealDatagram(datagram: Uint8Array, length: number, key: Uint8Array): void {
  checkKey(key);
  if (!Number.isInteger(length) || length < DATAGRAM_MIN_BYTES || length > datagram.length) fail(`datagram length ${length} is outside [${DATAGRAM_MIN_BYTES}, ${datagram.length}]`);
  datagram.set(computeMac(datagram, length, key).subarray(0, DATAGRAM_MAC_BYTES), length - DATAGRAM_MAC_BYTES);
}

/**
 * Encodes one datagram into out[0, n) and returns n: the header, then values[valuesOffset,
 * valuesOffset + header.nElements) in the session's wire format (Q8_0 by default), then the MAC
 * under `key` (the sender's session key). A NaN/Inf value or one beyond the f16 range is sent as
 * the encoder writes it (a non-finite scale or value) and the receiver rejects that chunk as `bad_scale`.
 * Throws `UsageError` for a header field out of range, a short key or buffer.
 */
export function encodeDatagram(header: DatagramHeader, values: Float32Array, valuesOffset: number, key: Uint8Array, out: Uint8Array, format: WireFormat = "q8_0"): number {
  checkKey(key);
  const length = writeHeader(header, out, format);
  WIRE_FORMATS[format].encode(values, valuesOffset, header.nElements, out, DATAGRAM_HEADER_BYTES);
  out.set(computeMac(out, length, key).subarray(0, DATAGRAM_MAC_BYTES), length - DATAGRAM_MAC_BYTES);
  return length;
}

/**
 * Like `encodeDatagram`, with the payload already encoded: copies header.nElements / 32 blocks
 * of `format` from blocks[blocksOffset…). Encode a vector once, then MAC it per worker key.
 */
export function encodeDatagramBlocks(header: DatagramHeader, blocks: Uint8Array, blocksOffset: number, key: Uint8Array, out: Uint8Array, format: WireFormat = "q8_0"): number {
  checkKey(key);
  const length = writeHeader(header, out, format);
  const nBytes = length - DATAGRAM_HEADER_BYTES - DATAGRAM_MAC_BYTES;
  if (!Number.isInteger(blocksOffset) || blocksOffset < 0 || blocksOffset + nBytes > blocks.length) fail(`blocks [${blocksOffset}, +${nBytes}) do not fit in ${blocks.length} bytes`);
  out.set(blocks.subarray(blocksOffset, blocksOffset + nBytes), DATAGRAM_HEADER_BYTES);
  out.set(computeMac(out, length, key).subarray(0, DATAGRAM_MAC_BYTES), length - DATAGRAM_MAC_BYTES);
  return length;
}
