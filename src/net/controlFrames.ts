/**
 * Control-plane framing (docs/cluster.md, "Control plane"): a u32 LE length prefix, then either a
 * msgpack body (before authentication) or `HMAC-SHA256(sessionKey, sequence u64 LE ‖ body)`
 * followed by the body (after). Also the msgpack codec for bodies and the handshake's keyed
 * hashes, which the UDP data plane shares (`deriveSessionKey`).
 *
 * What is never done with a peer's bytes:
 * - allocate from a length prefix: a prefix of 0 or over the cap is rejected when its 4 bytes
 *   arrive, and a frame's buffer grows with the bytes that actually came (RELIABILITY.md C1);
 * - hand msgpackr anything but one plain msgpack value: `checkPlainMsgpack` walks the body first,
 *   without recursion, and rejects extension types (msgpackr decodes Date, Set, Error, RegExp,
 *   typed arrays, records and structured-clone references from extensions whatever the options
 *   say), the reserved 0xc1 byte, non-string map keys, nesting deeper than a limit and
 *   trailing bytes (C3).
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { Packr, Unpackr } from "msgpackr";
import { FrameError, FrameMacError, MessageInvalidError, UsageError } from "../base/index.js";

/** Bytes of the length prefix. */
export const FRAME_HEADER_BYTES = 4;
/** Bytes of the HMAC-SHA256 that opens every authenticated frame. */
export const FRAME_MAC_BYTES = 32;
/** Default cap on what follows a length prefix after the handshake: 16 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 16 << 20;
/** Default cap before authentication: hello, auth, auth-ok and error are all far smaller. */
export const DEFAULT_MAX_HANDSHAKE_FRAME_BYTES = 4096;
/** The deepest nesting a body may have; the deepest message (a per-layer plan) needs 5. */
export const MAX_BODY_DEPTH = 8;

/** The smallest buffer a frame body starts with; it doubles as bytes arrive, up to the declared length. */
const MIN_BODY_CAPACITY_BYTES = 64 << 10;

/**
 * An incremental frame decoder. `push` chunks as they arrive (any split, down to one byte),
 * then call `next` until it returns undefined; each call returns one whole frame (what followed
 * the length prefix). Pulling one frame at a time lets the caller change `maxFrameBytes` between
 * frames, as the handshake does. After a FrameError the decoder stays failed.
 */
export class FrameDecoder {
  /** The largest length prefix accepted (bytes after the prefix). */
  maxFrameBytes: number;
  private readonly chunks: Uint8Array[] = [];
  private chunkOffset = 0;
  private readonly header = new Uint8Array(FRAME_HEADER_BYTES);
  private headerFilled = 0;
  /** Declared length of the frame being read; -1 while reading a header. */
  private bodyLength = -1;
  private body: Buffer | undefined;
  private bodyFilled = 0;
  private failure: FrameError | undefined;

  constructor(options: { maxFrameBytes?: number } = {}) {
    this.maxFrameBytes = checkFrameCap(options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES, "maxFrameBytes");
  }

  /** Queues a chunk (kept by reference until consumed; the caller must not modify it). */
  push(chunk: Uint8Array): void {
    if (chunk.byteLength > 0) this.chunks.push(chunk);
  }

  /** Bytes held: queued chunks not yet consumed plus a partial header or body. */
  get bufferedBytes(): number {
    let n = this.headerFilled + this.bodyFilled - this.chunkOffset;
    for (const chunk of this.chunks) n += chunk.byteLength;
    return n;
  }

  /** True while part of a frame has been read. */
  get midFrame(): boolean {
    return this.headerFilled > 0 || this.bodyLength >= 0;
  }

  /** The next whole frame, or undefined until more bytes arrive. Throws FrameError for a bad length prefix. */
  next(): Uint8Array | undefined {
    if (this.failure) throw this.failure;
    for (;;) {
      if (this.bodyLength < 0) {
        if (!this.fillHeader()) return undefined;
        const declared = (this.header[0]! | (this.header[1]! << 8) | (this.header[2]! << 16) | (this.header[3]! << 24)) >>> 0;
        if (declared === 0 || declared > this.maxFrameBytes) {
          this.failure = new FrameError(
            declared === 0
              ? "control frame length prefix is 0"
              : `control frame length prefix ${declared} is over the cap of ${this.maxFrameBytes} bytes`,
          );
          this.chunks.length = 0;
          throw this.failure;
        }
        this.bodyLength = declared;
        this.body = undefined;
        this.bodyFilled = 0;
      }
      if (!this.fillBody()) return undefined;
      const frame = this.body!;
      this.body = undefined;
      this.bodyLength = -1;
      this.bodyFilled = 0;
      this.headerFilled = 0;
      return frame;
    }
  }

  private fillHeader(): boolean {
    while (this.headerFilled < FRAME_HEADER_BYTES) {
      const chunk = this.chunks[0];
      if (chunk === undefined) return false;
      this.header[this.headerFilled++] = chunk[this.chunkOffset++]!;
      if (this.chunkOffset === chunk.byteLength) this.dropChunk();
    }
    return true;
  }

  private fillBody(): boolean {
    while (this.bodyFilled < this.bodyLength) {
      const chunk = this.chunks[0];
      if (chunk === undefined) return false;
      const n = Math.min(chunk.byteLength - this.chunkOffset, this.bodyLength - this.bodyFilled);
      this.reserve(this.bodyFilled + n);
      this.body!.set(chunk.subarray(this.chunkOffset, this.chunkOffset + n), this.bodyFilled);
      this.bodyFilled += n;
      this.chunkOffset += n;
      if (this.chunkOffset === chunk.byteLength) this.dropChunk();
    }
    return true;
  }

  /** Grows the body buffer to hold `needed` bytes: at most twice what has arrived, never past the declared length. */
  private reserve(needed: number): void {
    const capacity = this.body?.byteLength ?? 0;
    if (needed <= capacity) return;
    const grown = Math.min(this.bodyLength, Math.max(needed, MIN_BODY_CAPACITY_BYTES, capacity * 2));
    const body = Buffer.allocUnsafe(grown);
    if (this.body) this.body.copy(body, 0, 0, this.bodyFilled);
    this.body = body;
  }

  private dropChunk(): void {
    this.chunks.shift();
    this.chunkOffset = 0;
  }
}

/** `payload` behind its u32 LE length prefix. Throws FrameError when it is empty or over `maxFrameBytes`. */
export function encodeFrame(payload: Uint8Array, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  checkOutgoingLength(payload.byteLength, maxFrameBytes);
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.byteLength);
  frame.writeUInt32LE(payload.byteLength, 0);
  frame.set(payload, FRAME_HEADER_BYTES);
  return frame;
}

function checkOutgoingLength(nBytes: number, maxFrameBytes: number): void {
  if (nBytes === 0) throw new FrameError("cannot send an empty control frame");
  if (nBytes > maxFrameBytes) throw new FrameError(`control frame of ${nBytes} bytes is over the cap of ${maxFrameBytes} bytes; split the payload`);
}

function checkFrameCap(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1 || value > 0xffffffff) throw new UsageError(`${name} must be an integer in [1, 2^32-1], got ${value}`);
  return value;
}

function u64le(sequence: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeUInt32LE(sequence % 0x100000000, 0);
  bytes.writeUInt32LE(Math.floor(sequence / 0x100000000), 4);
  return bytes;
}

/** HMAC-SHA256(directionKey, sequence u64 LE ‖ body), under the sender's `frameDirectionKey`. */
export function frameMac(sessionKey: Uint8Array, sequence: number, body: Uint8Array): Buffer {
  return createHmac("sha256", sessionKey).update(u64le(sequence)).update(body).digest();
}

/** Which end of a control connection; each direction of frames has its own key. */
export type FrameDirection = "coordinator" | "worker";

/**
 * The key that MACs frames sent by `sender`: HMAC-SHA256(sessionKey, "halo-frames-v1-" ‖ sender).
 * One key per direction, so a frame reflected back to its own sender fails its MAC even though
 * both directions count sequence numbers from 0.
 */
export function frameDirectionKey(sessionKey: Uint8Array, sender: FrameDirection): Buffer {
  return createHmac("sha256", sessionKey).update(`halo-frames-v1-${sender}`).digest();
}

/**
 * The MAC state of one authenticated connection: a sending and a receiving sequence number,
 * each counting frames in its direction from 0, and one key per direction. A frame is accepted
 * only at the next expected sequence number under the peer's direction key, so a replayed,
 * reordered, dropped or reflected frame fails its MAC.
 */
export class FrameAuthenticator {
  private readonly sendKey: Buffer;
  private readonly receiveKey: Buffer;
  private sendSequenceValue = 0;
  private receiveSequenceValue = 0;

  /** `self` is this end's role: it seals under its own direction key and opens under the peer's. */
  constructor(sessionKey: Uint8Array, self: FrameDirection) {
    if (sessionKey.byteLength !== 32) throw new UsageError(`sessionKey must be 32 bytes, got ${sessionKey.byteLength}`);
    if (self !== "coordinator" && self !== "worker") throw new UsageError(`frame direction must be coordinator or worker, got ${String(self)}`);
    this.sendKey = frameDirectionKey(sessionKey, self);
    this.receiveKey = frameDirectionKey(sessionKey, self === "coordinator" ? "worker" : "coordinator");
  }

  /** Sequence number of the next frame `seal` produces. */
  get sendSequence(): number {
    return this.sendSequenceValue;
  }

  /** Sequence number the next frame to `open` must carry. */
  get receiveSequence(): number {
    return this.receiveSequenceValue;
  }

  /** A whole frame (length prefix, MAC, body) for the next sending sequence number. */
  seal(body: Uint8Array, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
    checkOutgoingLength(FRAME_MAC_BYTES + body.byteLength, maxFrameBytes);
    const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + FRAME_MAC_BYTES + body.byteLength);
    frame.writeUInt32LE(FRAME_MAC_BYTES + body.byteLength, 0);
    frameMac(this.sendKey, this.sendSequenceValue++, body).copy(frame, FRAME_HEADER_BYTES);
    frame.set(body, FRAME_HEADER_BYTES + FRAME_MAC_BYTES);
    return frame;
  }

  /** The body of a decoded frame (what followed its length prefix); throws FrameMacError unless its MAC verifies at the expected sequence. */
  open(frame: Uint8Array): Uint8Array {
    const sequence = this.receiveSequenceValue;
    if (frame.byteLength <= FRAME_MAC_BYTES) throw new FrameMacError(sequence);
    const body = frame.subarray(FRAME_MAC_BYTES);
    const expected = frameMac(this.receiveKey, sequence, body);
    if (!timingSafeEqual(expected, frame.subarray(0, FRAME_MAC_BYTES))) throw new FrameMacError(sequence);
    this.receiveSequenceValue++;
    return body;
  }
}

// ---- handshake hashes (docs/cluster.md, "Identities and keys" and "Handshake") ----

/** Domain-separation strings: one per use of the cluster key, so no MAC can stand in for another. */
export const HANDSHAKE_DOMAINS = {
  session: "halo-session-v1",
  coordinatorAuth: "halo-auth-c-v1",
  workerAuth: "halo-auth-w-v1",
} as const;

/** Bytes of each handshake nonce. */
export const NONCE_BYTES = 16;
/** The shortest cluster key accepted. */
export const MIN_CLUSTER_KEY_BYTES = 16;

function keyedHash(clusterKey: Uint8Array, domain: string, first: Uint8Array, second: Uint8Array): Buffer {
  return createHmac("sha256", clusterKey).update(domain, "latin1").update(first).update(second).digest();
}

/** The coordinator's proof of the key: HMAC(clusterKey, "halo-auth-c-v1" ‖ workerNonce ‖ coordinatorNonce). */
export function coordinatorAuthMac(clusterKey: Uint8Array, workerNonce: Uint8Array, coordinatorNonce: Uint8Array): Buffer {
  return keyedHash(clusterKey, HANDSHAKE_DOMAINS.coordinatorAuth, workerNonce, coordinatorNonce);
}

/** The worker's proof of the key: HMAC(clusterKey, "halo-auth-w-v1" ‖ coordinatorNonce ‖ workerNonce). */
export function workerAuthMac(clusterKey: Uint8Array, workerNonce: Uint8Array, coordinatorNonce: Uint8Array): Buffer {
  return keyedHash(clusterKey, HANDSHAKE_DOMAINS.workerAuth, coordinatorNonce, workerNonce);
}

/** The 32-byte session key: HMAC(clusterKey, "halo-session-v1" ‖ workerNonce ‖ coordinatorNonce). */
export function deriveSessionKey(clusterKey: Uint8Array, workerNonce: Uint8Array, coordinatorNonce: Uint8Array): Buffer {
  return keyedHash(clusterKey, HANDSHAKE_DOMAINS.session, workerNonce, coordinatorNonce);
}

/** Constant-time equality of two MACs (false, not a throw, when the lengths differ). */
export function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}

// ---- msgpack bodies ----

/**
 * msgpackr options, the same for packing and unpacking:
 * - `useRecords: false`: objects are plain msgpack maps (no record extension 0x72 written);
 * - `mapsAsObjects: true`: maps decode to plain objects (msgpackr renames a `__proto__` key to
 *   `__proto_`, which the strict schemas then reject as an unknown key);
 * - `structuredClone: false` and `moreTypes: false`: no reference, Set, Map, Error, RegExp or
 *   typed-array extensions are written, and the decoder refuses the reference extensions;
 * - `int64AsType: "number"`: a uint64/int64 from another encoder becomes a number (bounded by
 *   the schemas) rather than a bigint that every schema would reject;
 * - `variableMapSize: true`: fixmap for small maps (msgpackr otherwise always writes map16);
 * - `useFloat32: 0` (never), `bundleStrings: false`, `sequential: false`, `useToJSON: false`,
 *   `encodeUndefinedAsNil: false`: plain msgpack only, so another implementation can speak it.
 * Extension types are refused by `checkPlainMsgpack`, not by an option: msgpackr has none that
 * stops its decoder from reading the extensions it knows.
 */
export const MSGPACK_OPTIONS = {
  useRecords: false,
  mapsAsObjects: true,
  structuredClone: false,
  moreTypes: false,
  int64AsType: "number",
  variableMapSize: true,
  useFloat32: 0,
  bundleStrings: false,
  sequential: false,
  useToJSON: false,
  encodeUndefinedAsNil: false,
  copyBuffers: false,
} as const;

const packr = new Packr({ ...MSGPACK_OPTIONS });
const unpackr = new Unpackr({ ...MSGPACK_OPTIONS });

/** msgpack bytes of `value` (a fresh buffer, not a view of msgpackr's reusable one). */
export function encodeBody(value: unknown): Buffer {
  return Buffer.from(packr.pack(value));
}

/**
 * The value of one msgpack body, after `checkPlainMsgpack`. Byte strings come back as views of
 * `body`. Throws MessageInvalidError, never anything else.
 */
export function decodeBody(body: Uint8Array): unknown {
  checkPlainMsgpack(body);
  try {
    return unpackr.unpack(body);
  } catch (error) {
    // The walk above accepted the bytes, so msgpackr failing here is a bug in one of the two; report it as a reject.
    throw new MessageInvalidError("(body)", `msgpack decoder failed: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/**
 * Checks, in one pass without recursion, that `bytes` hold exactly one msgpack value made of
 * nil, booleans, numbers, strings, byte strings, arrays and string-keyed maps, nested at most
 * `maxDepth` deep, with every declared length inside the bytes. Throws MessageInvalidError
 * naming the offset.
 */
export function checkPlainMsgpack(bytes: Uint8Array, maxDepth = MAX_BODY_DEPTH): void {
  const end = bytes.byteLength;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const reject = (offset: number, what: string): never => {
    throw new MessageInvalidError("(body)", `${what} at byte ${offset}`);
  };
  // left[d]: items still to read in the container at depth d (map entries count twice); depth 0 holds the one top-level value.
  const left: number[] = [1];
  const isMap: boolean[] = [false];
  let depth = 0;
  let position = 0;
  while (depth >= 0) {
    if (left[depth] === 0) {
      depth--;
      if (depth >= 0) left[depth]!--;
      continue;
    }
    if (position >= end) reject(position, "msgpack value truncated");
    const at = position;
    const token = bytes[position++]!;
    const atKey = isMap[depth]! && left[depth]! % 2 === 0;
    let skip = 0;
    let container = -1;
    let map = false;
    let isString = false;
    const need = (n: number): void => {
      if (end - position < n) reject(at, "msgpack value truncated");
    };
    if (token <= 0x7f || token >= 0xe0) skip = 0;
    else if (token <= 0x8f) [container, map] = [token & 0x0f, true];
    else if (token <= 0x9f) container = token & 0x0f;
    else if (token <= 0xbf) [skip, isString] = [token & 0x1f, true];
    else {
      switch (token) {
        case 0xc0: case 0xc2: case 0xc3: break;
        case 0xc1: reject(at, "reserved msgpack byte 0xc1"); break;
        case 0xc4: need(1); skip = bytes[position]!; position += 1; break;
        case 0xc5: need(2); skip = view.getUint16(position); position += 2; break;
        case 0xc6: need(4); skip = view.getUint32(position); position += 4; break;
        case 0xc7: case 0xc8: case 0xc9: case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
          reject(at, `msgpack extension (0x${token.toString(16)}) is not accepted`);
          break;
        case 0xca: case 0xce: case 0xd2: skip = 4; break;
        case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xd9: need(1); skip = bytes[position]!; position += 1; isString = true; break;
        case 0xda: need(2); skip = view.getUint16(position); position += 2; isString = true; break;
        case 0xdb: need(4); skip = view.getUint32(position); position += 4; isString = true; break;
        case 0xdc: need(2); container = view.getUint16(position); position += 2; break;
        case 0xdd: need(4); container = view.getUint32(position); position += 4; break;
        case 0xde: need(2); container = view.getUint16(position); position += 2; map = true; break;
        case 0xdf: need(4); container = view.getUint32(position); position += 4; map = true; break;
        default: reject(at, `unknown msgpack byte 0x${token.toString(16)}`);
      }
    }
    if (atKey && !isString) reject(at, "msgpack map key is not a string");
    if (container >= 0) {
      const nItems = map ? container * 2 : container;
      // Every item takes at least one byte, so a count beyond the bytes left is a lie told to make someone allocate.
      if (nItems > end - position) reject(at, `msgpack ${map ? "map" : "array"} of ${container} entries does not fit in the ${end - position} bytes left`);
      if (depth + 1 > maxDepth) reject(at, `msgpack nesting deeper than ${maxDepth}`);
      depth++;
      left[depth] = nItems;
      isMap[depth] = map;
      continue;
    }
    need(skip);
    position += skip;
    left[depth]!--;
  }
  if (position !== end) reject(position, `${end - position} bytes after the msgpack value`);
}
