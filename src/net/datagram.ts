/**
 * The UDP data-plane codec of docs/cluster.md ("Data plane"): one datagram carries one chunk of
 * whole Q8_0 blocks of a dim-length vector (an input `u` or a worker's partial sum) for one
 * (position, layer, phase) step, behind a 36-byte little-endian header and followed by a
 * 16-byte truncated HMAC-SHA256 under the sender's per-worker session key.
 *
 * Encoding writes into a caller-owned buffer. `DatagramReceiver` validates a datagram in the
 * documented order (length → magic/version/kind → MAC → session, epoch, sender → layer, phase,
 * step window, authorisation, length vs nElements, chunk geometry → duplicate → scales), counts
 * every reject under a named reason, and decodes accepted chunks into preallocated per-step,
 * per-sender rows.
 * Nothing is allocated from a header field and no field past the fixed-size checks is trusted
 * before the MAC verifies.
 *
 * The source address is not an input to acceptance at all (RELIABILITY D10): `accept` takes only
 * the bytes. The MAC binds a datagram to a sender's session key, which is unique per worker
 * connection, so a forged address, a forged senderIndex or another session's datagram fails the
 * MAC; rebinding (a worker whose address changes) needs nothing here.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { UsageError } from "../base/index.js";
import { DEFAULT_Q8_MAX_ABS_VALUE, Q8_BLOCK_SIZE } from "./q8Vector.js";
import { MIN_WIRE_BLOCK_BYTES, WIRE_FORMATS, type WireFormat } from "./wireFormat.js";

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
/** Bytes of the truncated HMAC-SHA256 that ends every datagram. */
export const DATAGRAM_MAC_BYTES = 16;
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
/** The shortest session key encode and receive accept (cluster.md derives 32-byte keys). */
export const DATAGRAM_MIN_KEY_BYTES = 16;

/** `input`: coordinator → worker (the normed hidden state u); `partial`: worker → coordinator (an additive partial sum). */
export type DatagramKind = "input" | "partial";
export const DATAGRAM_KIND_CODES = { input: 1, partial: 2 } as const satisfies Record<DatagramKind, number>;

/** The two synchronised phases of a layer, as on the wire. */
export const SYNC_PHASE_IDS = { attention: 0, ffn: 1 } as const;
export type SyncPhaseId = (typeof SYNC_PHASE_IDS)[keyof typeof SYNC_PHASE_IDS];
const N_SYNC_PHASES = Object.keys(SYNC_PHASE_IDS).length;

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

function fail(message: string): never {
  throw new UsageError(message);
}

function checkUint(name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) fail(`${name} = ${value} is not an integer in [0, ${max}]`);
}

function checkDim(dim: number): void {
  if (!Number.isInteger(dim) || dim <= 0 || dim % Q8_BLOCK_SIZE !== 0) fail(`dim ${dim} is not a positive multiple of the Q8_0 block size ${Q8_BLOCK_SIZE}`);
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

function writeU16(out: Uint8Array, offset: number, value: number): void {
  out[offset] = value & 0xff;
  out[offset + 1] = (value >>> 8) & 0xff;
}

function writeU32(out: Uint8Array, offset: number, value: number): void {
  writeU16(out, offset, value & 0xffff);
  writeU16(out, offset + 2, value >>> 16);
}

function readU16(src: Uint8Array, offset: number): number {
  return src[offset]! | (src[offset + 1]! << 8);
}

function readU32(src: Uint8Array, offset: number): number {
  return (readU16(src, offset) | (readU16(src, offset + 2) << 16)) >>> 0;
}

function checkKey(key: Uint8Array): void {
  if (key.length < DATAGRAM_MIN_KEY_BYTES) fail(`a datagram key has ${key.length} bytes, at least ${DATAGRAM_MIN_KEY_BYTES} are required`);
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

function readField(src: Uint8Array, field: DatagramHeaderField): number {
  const { offset, sizeBytes } = F[field];
  return sizeBytes === 1 ? src[offset]! : sizeBytes === 2 ? readU16(src, offset) : readU32(src, offset);
}

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

/** HMAC-SHA256(key, datagram[0, length − 16)) truncated to 16 bytes (a fresh Buffer). */
function computeMac(datagram: Uint8Array, length: number, key: Uint8Array): Buffer {
  return createHmac("sha256", key).update(datagram.subarray(0, length - DATAGRAM_MAC_BYTES)).digest();
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

// ---------------------------------------------------------------------------------------------
// Receiving

/** Why a datagram was dropped, in the order the receiver checks. */
export const DATAGRAM_REJECT_REASONS = [
  "bad_len", // length < DATAGRAM_MIN_BYTES, > DATAGRAM_MAX_BYTES, not a whole number of blocks, or (checked after the MAC) ≠ what nElements implies
  "bad_magic",
  "bad_version",
  "bad_kind", // not input/partial, or not the kind this receiver takes
  "unknown_sender", // senderIndex ≥ nSenders, or no (or a too short) key for it: the MAC cannot be checked
  "bad_mac",
  "wrong_session",
  "stale_epoch", // an epoch other than the receiver's (older: a restarted or re-planned coordinator)
  "bad_layer", // layer ≥ nLayers
  "bad_phase", // phase ∉ {0, 1}
  "stale", // a step before the current one
  "bad_position", // a step more than maxStepsAhead past the current one
  "not_authorised", // mayContribute(sender, layer, phase) said no (D11)
  "bad_range", // chunkIndex, nChunks, offset or nElements differ from planChunks(dim)
  "duplicate", // a later copy of an accepted (sender, step, chunk)
  "bad_scale", // a NaN/Inf scale or value, or some decoded |x| > maxAbsValue (D8)
] as const;

export type DatagramRejectReason = (typeof DATAGRAM_REJECT_REASONS)[number];

export interface DatagramRejected {
  readonly ok: false;
  readonly reason: DatagramRejectReason;
}

export interface DatagramAccepted {
  readonly ok: true;
  /** The accepted header. One object per receiver, overwritten by the next `accept`: copy what you keep. */
  readonly header: Readonly<DatagramHeader>;
}

export type DatagramAcceptResult = DatagramAccepted | DatagramRejected;

/** One frozen result per reason, so a reject allocates nothing. */
const REJECTED = Object.fromEntries(DATAGRAM_REJECT_REASONS.map((reason) => [reason, Object.freeze({ ok: false, reason })])) as Record<
  DatagramRejectReason,
  DatagramRejected
>;

export interface DatagramReceiverOptions {
  /** The kind this receiver takes: `"input"` on a worker, `"partial"` on the coordinator. */
  readonly kind: DatagramKind;
  /** u32, the coordinator session's id. */
  readonly sessionId: number;
  /** u32, the current epoch; `reset` changes it. */
  readonly epoch: number;
  /** Elements per vector (the model's dim), a positive multiple of the Q8_0 block size. */
  readonly dim: number;
  readonly nLayers: number;
  /**
   * Sender indices 0 … nSenders − 1 are accepted, each with a row of `dim` floats per window
   * step: 1 for an input receiver (only the coordinator sends inputs), the cluster size for a
   * partial receiver.
   */
  readonly nSenders: number;
  /**
   * A sender's session key (≥ 16 bytes), or undefined when it has none (not joined, lost).
   * Looked up per datagram, so a re-keyed worker needs no call here.
   */
  readonly keys: ReadonlyMap<number, Uint8Array> | ((senderIndex: number) => Uint8Array | undefined);
  /**
   * Authorisation (D11): whether `senderIndex` may contribute to (layer, phase) under the current
   * placement (for an input receiver: whether this worker holds groups of that phase). Called
   * only for authenticated, in-window datagrams with a valid layer and phase.
   */
  readonly mayContribute: (senderIndex: number, layer: number, phase: SyncPhaseId) => boolean;
  /**
   * Steps past the current one whose chunks are accepted and buffered (D7); later ones are
   * dropped as `bad_position`. A step is one (position, layer, phase) in forward order, so one
   * token is 2·nLayers steps. Memory: (maxStepsAhead + 1)·nSenders·dim floats. Defaults to 0,
   * right for partials (a worker cannot compute a step before the coordinator sends its input).
   */
  readonly maxStepsAhead?: number;
  /** The bound on every decoded |d·q| (D8). Defaults to DEFAULT_Q8_MAX_ABS_VALUE (65,504). */
  readonly maxAbsValue?: number;
  /** The session's wire format (the plan message names it). Defaults to Q8_0. */
  readonly format?: WireFormat;
  /** Caller-owned storage of shape (maxStepsAhead + 1, nSenders, dim), zeroed here; allocated when absent. */
  readonly storage?: Float32Array;
}

/**
 * Receives one kind of datagram for one session: validates, counts and decodes chunks into a
 * bounded window of steps [current, current + maxStepsAhead]. Each step has one row of `dim`
 * floats per sender; a row starts at zero and each accepted chunk overwrites exactly its planned
 * range, so a lost chunk leaves zeros in exactly its range. `sumInto` adds the rows in
 * increasing sender index, so the sum does not depend on arrival order (reordering on the
 * network changes no bit of the result, which D12's same-seed-same-tokens needs).
 *
 * Window (D6, D7): steps before the current one are `stale`; chunks of later steps (layer l+1
 * while layer l is still being collected, or the next position) are buffered up to
 * maxStepsAhead steps, and beyond that dropped as `bad_position`. `setCurrent` moves the window
 * forward and forgets the steps it leaves, so duplicate tracking and storage never grow.
 * Duplicates: the first accepted copy of (sender, step, chunkIndex) wins; later copies count as
 * `duplicate` and change nothing.
 */
export class DatagramReceiver {
  readonly kind: DatagramKind;
  readonly sessionId: number;
  readonly dim: number;
  readonly nLayers: number;
  readonly nSenders: number;
  readonly maxStepsAhead: number;
  readonly maxAbsValue: number;
  readonly format: WireFormat;
  /** The chunk plan both ends derive from dim. */
  readonly chunks: readonly DatagramChunk[];
  /** Rejects by reason since construction; every reason is present. */
  readonly counters: Readonly<Record<DatagramRejectReason, number>>;
  /** Datagrams accepted since construction. */
  nAccepted = 0;

  private epochValue: number;
  /** The current step, (position·nLayers + layer)·2 + phase; exact below 2^53. */
  private currentStep = 0;
  private readonly nSlots: number;
  private readonly kindCode: number;
  private readonly keyFor: (senderIndex: number) => Uint8Array | undefined;
  private readonly mayContribute: DatagramReceiverOptions["mayContribute"];
  private readonly counts: Record<DatagramRejectReason, number>;
  /** (nSlots, nSenders, dim): slot = step mod nSlots. */
  private readonly storage: Float32Array;
  /** Views into storage, index slot·nSenders + sender. */
  private readonly rows: Float32Array[];
  /** (nSlots, nSenders, nChunks): 1 once that chunk was accepted. */
  private readonly seen: Uint8Array;
  /** (nSlots, nSenders): chunks accepted. */
  private readonly chunkCounts: Uint16Array;
  private readonly accepted: { ok: true; header: DatagramHeader };

  constructor(options: DatagramReceiverOptions) {
    checkDim(options.dim);
    checkUint("sessionId", options.sessionId, 0xffffffff);
    checkUint("epoch", options.epoch, 0xffffffff);
    checkUint("nLayers", options.nLayers, 0xffff);
    checkUint("nSenders", options.nSenders, 0xffff);
    if (options.nLayers === 0 || options.nSenders === 0) fail("nLayers and nSenders must be positive");
    const maxStepsAhead = options.maxStepsAhead ?? 0;
    checkUint("maxStepsAhead", maxStepsAhead, 0xffff);
    const maxAbsValue = options.maxAbsValue ?? DEFAULT_Q8_MAX_ABS_VALUE;
    if (!(maxAbsValue > 0) || !Number.isFinite(maxAbsValue)) fail(`maxAbsValue ${maxAbsValue} is not a positive finite number`);
    if (!Object.hasOwn(DATAGRAM_KIND_CODES, options.kind)) fail(`kind ${String(options.kind)} is not input or partial`);
    this.kind = options.kind;
    this.kindCode = DATAGRAM_KIND_CODES[options.kind];
    this.sessionId = options.sessionId;
    this.epochValue = options.epoch;
    this.dim = options.dim;
    this.nLayers = options.nLayers;
    this.nSenders = options.nSenders;
    this.maxStepsAhead = maxStepsAhead;
    this.maxAbsValue = maxAbsValue;
    this.format = options.format ?? "q8_0";
    if (!Object.hasOwn(WIRE_FORMATS, this.format)) fail(`format ${String(this.format)} is not one of ${Object.keys(WIRE_FORMATS).join(", ")}`);
    this.chunks = Object.freeze(planChunks(options.dim, this.format).map((c) => Object.freeze(c)));
    const keys = options.keys;
    this.keyFor = typeof keys === "function" ? keys : (senderIndex) => keys.get(senderIndex);
    this.mayContribute = options.mayContribute;
    this.counts = Object.fromEntries(DATAGRAM_REJECT_REASONS.map((reason) => [reason, 0])) as Record<DatagramRejectReason, number>;
    this.counters = this.counts;
    this.nSlots = maxStepsAhead + 1;
    const storageLength = this.nSlots * this.nSenders * this.dim;
    if (options.storage !== undefined && options.storage.length !== storageLength) fail(`storage has ${options.storage.length} floats, (maxStepsAhead + 1)·nSenders·dim = ${storageLength}`);
    this.storage = options.storage ?? new Float32Array(storageLength);
    this.storage.fill(0);
    this.rows = Array.from({ length: this.nSlots * this.nSenders }, (_, i) => this.storage.subarray(i * this.dim, (i + 1) * this.dim));
    this.seen = new Uint8Array(this.nSlots * this.nSenders * this.chunks.length);
    this.chunkCounts = new Uint16Array(this.nSlots * this.nSenders);
    this.accepted = {
      ok: true,
      header: { kind: this.kind, sessionId: 0, epoch: 0, senderIndex: 0, layer: 0, phase: 0, isDuplicateCopy: false, chunkIndex: 0, nChunks: 0, position: 0, offset: 0, nElements: 0, sendTimeUs: 0 },
    };
  }

  get epoch(): number {
    return this.epochValue;
  }

  /** The current step as (position, layer, phase). */
  get position(): number {
    return Math.floor(this.currentStep / (this.nLayers * N_SYNC_PHASES));
  }

  get layer(): number {
    return Math.floor(this.currentStep / N_SYNC_PHASES) % this.nLayers;
  }

  get phase(): SyncPhaseId {
    return (this.currentStep % N_SYNC_PHASES) as SyncPhaseId;
  }

  /**
   * Moves the window forward to (position, layer, phase): the steps left behind are forgotten
   * (rows zeroed, duplicate marks cleared) and their late chunks become `stale`. Buffered chunks
   * of steps still in the window are kept. Throws `UsageError` when the step is invalid or before
   * the current one (going back is `reset`).
   */
  setCurrent(position: number, layer: number, phase: SyncPhaseId): void {
    const step = this.checkedStep(position, layer, phase);
    if (step < this.currentStep) fail(`step (${position}, ${layer}, ${phase}) is before the current (${this.position}, ${this.layer}, ${this.phase}); use reset to go back`);
    const nLeft = Math.min(step - this.currentStep, this.nSlots);
    for (let i = 0; i < nLeft; i++) this.clearSlot((this.currentStep + i) % this.nSlots);
    this.currentStep = step;
  }

  /**
   * Starts over at (position, layer, phase) under `epoch` (a new sequence, re-plan or restart):
   * forgets every buffered chunk; counters are kept. Only a new epoch (or session) makes late
   * datagrams of the old sequence distinguishable: under the same epoch, a late one at a step
   * ≥ the new current step is taken as new.
   */
  reset(epoch: number, position: number, layer: number, phase: SyncPhaseId): void {
    checkUint("epoch", epoch, 0xffffffff);
    const step = this.checkedStep(position, layer, phase);
    for (let slot = 0; slot < this.nSlots; slot++) this.clearSlot(slot);
    this.epochValue = epoch;
    this.currentStep = step;
  }

  /**
   * Sender `senderIndex`'s row for a step in the window (zeros where no chunk arrived), or
   * undefined outside the window. A view into the receiver's storage, valid until the window
   * moves past that step.
   */
  senderValues(position: number, layer: number, phase: SyncPhaseId, senderIndex: number): Float32Array | undefined {
    const slot = this.slotOf(position, layer, phase);
    if (slot < 0 || !Number.isInteger(senderIndex) || senderIndex < 0 || senderIndex >= this.nSenders) return undefined;
    return this.rows[slot * this.nSenders + senderIndex];
  }

  /** Chunks accepted from a sender for a step (0 outside the window); the vector is complete at `chunks.length`. */
  chunksReceived(position: number, layer: number, phase: SyncPhaseId, senderIndex: number): number {
    const slot = this.slotOf(position, layer, phase);
    if (slot < 0 || !Number.isInteger(senderIndex) || senderIndex < 0 || senderIndex >= this.nSenders) return 0;
    return this.chunkCounts[slot * this.nSenders + senderIndex]!;
  }

  /**
   * out[outOffset + i] = Σ over senders in increasing index of their row[i], for i < dim (missing
   * chunks add zero). Returns false, writing nothing, when the step is outside the window.
   */
  sumInto(position: number, layer: number, phase: SyncPhaseId, out: Float32Array, outOffset = 0): boolean {
    const slot = this.slotOf(position, layer, phase);
    if (slot < 0) return false;
    checkUint("outOffset", outOffset, out.length - this.dim);
    out.fill(0, outOffset, outOffset + this.dim);
    for (let s = 0; s < this.nSenders; s++) {
      if (this.chunkCounts[slot * this.nSenders + s] === 0) continue;
      const row = this.rows[slot * this.nSenders + s]!;
      for (let i = 0; i < this.dim; i++) out[outOffset + i] = out[outOffset + i]! + row[i]!;
    }
    return true;
  }

  /**
   * Validates one datagram and, when it passes, decodes its chunk into the sender's row of its
   * step. Never throws on any bytes (only a throwing `keys` or `mayContribute` callback can make
   * it throw); a reject is counted under its reason and changes nothing else.
   */
  accept(datagram: Uint8Array): DatagramAcceptResult {
    const reason = this.check(datagram);
    if (reason !== undefined) {
      this.counts[reason]++;
      return REJECTED[reason];
    }
    this.nAccepted++;
    return this.accepted;
  }

  /** Everything `accept` does except counting; undefined when accepted. */
  private check(datagram: Uint8Array): DatagramRejectReason | undefined {
    // Before the MAC only the datagram's length and fixed-size fields are read.
    const length = datagram.length;
    const traits = WIRE_FORMATS[this.format];
    if (length < DATAGRAM_MIN_BYTES || length > DATAGRAM_MAX_BYTES || (length - DATAGRAM_HEADER_BYTES - DATAGRAM_MAC_BYTES) % traits.blockBytes !== 0) return "bad_len";
    if (readU16(datagram, F.magic.offset) !== DATAGRAM_MAGIC) return "bad_magic";
    if (datagram[F.version.offset] !== DATAGRAM_VERSION) return "bad_version";
    if (datagram[F.kind.offset] !== this.kindCode) return "bad_kind";
    // The sender field picks the key; it is not trusted: a forged one fails that key's MAC.
    const senderIndex = readU16(datagram, F.senderIndex.offset);
    const key = senderIndex < this.nSenders ? this.keyFor(senderIndex) : undefined;
    if (key === undefined || key.length < DATAGRAM_MIN_KEY_BYTES) return "unknown_sender";
    const macStart = length - DATAGRAM_MAC_BYTES;
    const mac = computeMac(datagram, length, key);
    if (!timingSafeEqual(mac.subarray(0, DATAGRAM_MAC_BYTES), datagram.subarray(macStart, length))) return "bad_mac";
    // Authenticated from here on.
    if (readU32(datagram, F.sessionId.offset) !== this.sessionId) return "wrong_session";
    if (readU32(datagram, F.epoch.offset) !== this.epochValue) return "stale_epoch";
    const layer = readU16(datagram, F.layer.offset);
    if (layer >= this.nLayers) return "bad_layer";
    const phase = datagram[F.phase.offset]!;
    if (phase >= N_SYNC_PHASES) return "bad_phase";
    const position = readU32(datagram, F.position.offset);
    const step = (position * this.nLayers + layer) * N_SYNC_PHASES + phase;
    if (step < this.currentStep) return "stale";
    if (step - this.currentStep > this.maxStepsAhead) return "bad_position";
    if (!this.mayContribute(senderIndex, layer, phase as SyncPhaseId)) return "not_authorised";
    const nElements = readU16(datagram, F.nElements.offset);
    if (datagramByteLength(nElements, this.format) !== length) return "bad_len";
    const chunkIndex = readU16(datagram, F.chunkIndex.offset);
    const chunk = this.chunks[chunkIndex];
    if (chunk === undefined || readU16(datagram, F.nChunks.offset) !== this.chunks.length || readU32(datagram, F.offset.offset) !== chunk.offset || nElements !== chunk.nElements) {
      return "bad_range";
    }
    const slot = step % this.nSlots;
    const row = slot * this.nSenders + senderIndex;
    const seenIndex = row * this.chunks.length + chunkIndex;
    if (this.seen[seenIndex] !== 0) return "duplicate";
    const nBlocks = nElements / Q8_BLOCK_SIZE;
    if (traits.decode(datagram, DATAGRAM_HEADER_BYTES, nBlocks, this.rows[row]!, chunk.offset, this.maxAbsValue) !== "ok") return "bad_scale";
    this.seen[seenIndex] = 1;
    this.chunkCounts[row] = this.chunkCounts[row]! + 1;
    this.readHeaderInto(datagram, this.accepted.header);
    return undefined;
  }

  private readHeaderInto(datagram: Uint8Array, header: DatagramHeader): void {
    header.sessionId = readField(datagram, "sessionId");
    header.epoch = readField(datagram, "epoch");
    header.senderIndex = readField(datagram, "senderIndex");
    header.layer = readField(datagram, "layer");
    header.phase = readField(datagram, "phase") as SyncPhaseId; // checked < N_SYNC_PHASES before
    header.chunkIndex = readField(datagram, "chunkIndex");
    header.nChunks = readField(datagram, "nChunks");
    header.position = readField(datagram, "position");
    header.offset = readField(datagram, "offset");
    header.nElements = readField(datagram, "nElements");
    header.sendTimeUs = readField(datagram, "sendTimeUs");
    header.isDuplicateCopy = (datagram[F.flags.offset]! & DATAGRAM_FLAG_DUPLICATE_COPY) !== 0;
  }

  private checkedStep(position: number, layer: number, phase: number): number {
    checkUint("position", position, 0xffffffff);
    checkUint("layer", layer, this.nLayers - 1);
    checkUint("phase", phase, N_SYNC_PHASES - 1);
    return (position * this.nLayers + layer) * N_SYNC_PHASES + phase;
  }

  /** The slot of a step in the window, or −1. */
  private slotOf(position: number, layer: number, phase: number): number {
    if (!Number.isInteger(position) || !Number.isInteger(layer) || !Number.isInteger(phase) || layer < 0 || layer >= this.nLayers || phase < 0 || phase >= N_SYNC_PHASES) return -1;
    const step = (position * this.nLayers + layer) * N_SYNC_PHASES + phase;
    if (step < this.currentStep || step - this.currentStep > this.maxStepsAhead) return -1;
    return step % this.nSlots;
  }

  /** Zeroes the rows that received something and clears their duplicate marks. */
  private clearSlot(slot: number): void {
    const nChunks = this.chunks.length;
    for (let s = 0; s < this.nSenders; s++) {
      const row = slot * this.nSenders + s;
      if (this.chunkCounts[row] === 0) continue;
      this.rows[row]!.fill(0);
      this.seen.fill(0, row * nChunks, (row + 1) * nChunks);
      this.chunkCounts[row] = 0;
    }
  }
}
