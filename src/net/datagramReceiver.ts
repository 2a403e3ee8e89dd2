/**
 * The receiving half of the data-plane codec (docs/cluster.md, "Data plane"): `DatagramReceiver`
 * validates a datagram in the documented order (length → magic/version/kind → MAC → session,
 * epoch, sender → layer, phase, step window, authorisation, length vs nElements, chunk geometry →
 * duplicate → values), counts every reject under a named reason, and decodes accepted chunks
 * into preallocated per-step, per-sender rows. Nothing is allocated from a header field and no
 * field past the fixed-size checks is trusted before the MAC verifies.
 *
 * The source address is not an input to acceptance at all (RELIABILITY D10): `accept` takes only
 * the bytes. The MAC binds a datagram to a sender's session key, which is unique per worker
 * connection, so a forged address, a forged senderIndex or another session's datagram fails the
 * MAC; rebinding (a worker whose address changes) needs nothing here.
 */
import { timingSafeEqual } from "node:crypto";
import { DEFAULT_Q8_MAX_ABS_VALUE, Q8_BLOCK_SIZE } from "./q8Vector.js";
import {
  DATAGRAM_FLAG_DUPLICATE_COPY, DATAGRAM_HEADER_BYTES, DATAGRAM_HEADER_FIELDS as F, DATAGRAM_KIND_CODES, DATAGRAM_MAC_BYTES, DATAGRAM_MAGIC, DATAGRAM_MAX_BYTES,
  DATAGRAM_MIN_BYTES, DATAGRAM_MIN_KEY_BYTES, DATAGRAM_VERSION, N_SYNC_PHASES, datagramByteLength, planChunks,
  type DatagramChunk, type DatagramHeader, type DatagramHeaderField, type DatagramKind, type SyncPhaseId,
} from "./datagram.js";
import { checkDim, checkUint, computeMac, fail, readU16, readU32 } from "./datagramBytes.js";
import { WIRE_FORMATS, type WireFormat } from "./wireFormat.js";

function readField(src: Uint8Array, field: DatagramHeaderField): number {
  const { offset, sizeBytes } = F[field];
  return sizeBytes === 1 ? src[offset]! : sizeBytes === 2 ? readU16(src, offset) : readU32(src, offset);
}

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

  /** The chunk indices not yet accepted from a sender for a step in the window ([] outside it). */
  missingChunks(position: number, layer: number, phase: SyncPhaseId, senderIndex: number): number[] {
    const slot = this.slotOf(position, layer, phase);
    if (slot < 0 || !Number.isInteger(senderIndex) || senderIndex < 0 || senderIndex >= this.nSenders) return [];
    const base = (slot * this.nSenders + senderIndex) * this.chunks.length;
    const missing: number[] = [];
    for (let c = 0; c < this.chunks.length; c++) if (this.seen[base + c] === 0) missing.push(c);
    return missing;
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
