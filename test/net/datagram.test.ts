/**
 * The data-plane datagram codec (src/net/datagram.ts) against docs/cluster.md and RELIABILITY
 * D1–D8, D10, D11: byte-exact layout, round trips, every reject reason with exact counters,
 * 10^5 random datagrams (D3) and 10^5 mutate-then-re-MAC datagrams (D5) checked against an
 * oracle written from the spec.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";
import fc from "fast-check";
import { HaloError, SeededRandom } from "../../src/base/index.js";
import { QUANT_TRAITS, halfToFloat } from "../../src/kernels/index.js";
import {
  DATAGRAM_HEADER_BYTES,
  DATAGRAM_HEADER_FIELDS,
  DATAGRAM_MAC_BYTES,
  DATAGRAM_MAX_BYTES,
  DATAGRAM_MIN_BYTES,
  DATAGRAM_REJECT_REASONS,
  DatagramReceiver,
  MAX_BLOCKS_PER_CHUNK,
  datagramByteLength,
  encodeDatagram,
  encodeDatagramBlocks,
  planChunks,
  sealDatagram,
  type DatagramHeader,
  type DatagramHeaderField,
  type DatagramKind,
  type DatagramReceiverOptions,
  type DatagramRejectReason,
  type SyncPhaseId,
} from "../../src/net/index.js";

const FC_SEED = 20261127;
const Q8 = QUANT_TRAITS.Q8_0;
const SESSION = 0x1234abcd;
const EPOCH = 7;

function randomKey(random: SeededRandom): Buffer {
  return Buffer.from(Array.from({ length: 32 }, () => random.nextInt(256)));
}

const keyRandom = new SeededRandom(99);
/** Worker session keys: senders 1–3 have one, the coordinator (0) has KEY0 for inputs. */
const KEY0 = randomKey(keyRandom);
const KEYS = new Map<number, Buffer>([1, 2, 3].map((s) => [s, randomKey(keyRandom)]));
const OTHER_SESSION_KEY = randomKey(keyRandom);

function gaussianVector(random: SeededRandom, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => random.nextGaussian() * scale);
}

/** The Q8_0 round trip of a whole vector through the reference codec. */
function q8RoundTrip(x: Float32Array): Float32Array {
  const bytes = new Uint8Array((x.length / Q8.blockSize) * Q8.blockBytes);
  Q8.quantizeRowRef(x, bytes, 0);
  const out = new Float32Array(x.length);
  Q8.dequantizeRowRef(bytes, 0, out, x.length);
  return out;
}

function header(fields: Partial<DatagramHeader> & Pick<DatagramHeader, "offset" | "nElements" | "chunkIndex" | "nChunks">): DatagramHeader {
  return { kind: "partial", sessionId: SESSION, epoch: EPOCH, senderIndex: 1, layer: 0, phase: 0, isDuplicateCopy: false, position: 0, sendTimeUs: 0, ...fields };
}

/** Every chunk of `values` as its own datagram. */
function encodeVector(values: Float32Array, key: Uint8Array, fields: Partial<DatagramHeader>): Buffer[] {
  const chunks = planChunks(values.length);
  return chunks.map((chunk, chunkIndex) => {
    const out = Buffer.alloc(DATAGRAM_MAX_BYTES);
    const n = encodeDatagram(header({ ...fields, offset: chunk.offset, nElements: chunk.nElements, chunkIndex, nChunks: chunks.length }), values, chunk.offset, key, out);
    return out.subarray(0, n);
  });
}

function receiver(options: Partial<DatagramReceiverOptions> & Pick<DatagramReceiverOptions, "dim">): DatagramReceiver {
  return new DatagramReceiver({ kind: "partial", sessionId: SESSION, epoch: EPOCH, nLayers: 4, nSenders: 4, keys: KEYS, mayContribute: () => true, ...options });
}

function reasonOf(r: DatagramReceiver, datagram: Uint8Array): DatagramRejectReason | "ok" {
  const result = r.accept(datagram);
  return result.ok ? "ok" : result.reason;
}

/** Counters with the given non-zero entries, every other reason 0. */
function countersWith(nonZero: Partial<Record<DatagramRejectReason, number>>): Record<DatagramRejectReason, number> {
  return Object.fromEntries(DATAGRAM_REJECT_REASONS.map((reason) => [reason, nonZero[reason] ?? 0])) as Record<DatagramRejectReason, number>;
}

function bitsOf(x: Float32Array): Buffer {
  return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
}

function writeField(d: Uint8Array, field: DatagramHeaderField, value: number): void {
  const { offset, sizeBytes } = DATAGRAM_HEADER_FIELDS[field];
  for (let i = 0; i < sizeBytes; i++) d[offset + i] = Math.floor(value / 2 ** (8 * i)) & 0xff;
}

const isUsage = (e: unknown): boolean => e instanceof HaloError && e.code === "HALO_ERR_USAGE";

test("constants follow cluster.md: a 36-byte contiguous header, 16-byte MAC, 1,400-byte cap, 39 blocks per chunk", () => {
  assert.equal(DATAGRAM_HEADER_BYTES, 36);
  assert.equal(DATAGRAM_MAC_BYTES, 16);
  assert.equal(DATAGRAM_MAX_BYTES, 1400);
  assert.equal(MAX_BLOCKS_PER_CHUNK, Math.floor((1400 - 36 - 16) / Q8.blockBytes));
  assert.equal(MAX_BLOCKS_PER_CHUNK, 39);
  assert.equal(DATAGRAM_MIN_BYTES, 36 + QUANT_TRAITS.Q4_0.blockBytes + 16);
  assert.equal(datagramByteLength(MAX_BLOCKS_PER_CHUNK * Q8.blockSize), 1378);
  const fields = Object.values(DATAGRAM_HEADER_FIELDS).sort((a, b) => a.offset - b.offset);
  let end = 0;
  for (const f of fields) {
    assert.equal(f.offset, end, "fields are contiguous and do not overlap");
    end += f.sizeBytes;
  }
  assert.equal(end, DATAGRAM_HEADER_BYTES);
});

test("planChunks: the fewest whole-block chunks of ≤ 39 blocks, contiguous, sizes within one block", () => {
  assert.deepEqual(planChunks(2048), [
    { offset: 0, nElements: 1024 },
    { offset: 1024, nElements: 1024 },
  ]);
  assert.deepEqual(planChunks(1248), [{ offset: 0, nElements: 1248 }]);
  assert.deepEqual(planChunks(1280), [
    { offset: 0, nElements: 640 },
    { offset: 640, nElements: 640 },
  ]);
  assert.deepEqual(
    planChunks(5632).map((c) => c.nElements / 32),
    [36, 35, 35, 35, 35],
  );
  for (let dim = 32; dim <= 65536; dim += 32) {
    const chunks = planChunks(dim);
    const nBlocks = dim / 32;
    assert.equal(chunks.length, Math.ceil(nBlocks / 39));
    let at = 0;
    const sizes = chunks.map((c) => {
      assert.equal(c.offset, at);
      at += c.nElements;
      return c.nElements / 32;
    });
    assert.equal(at, dim);
    assert.ok(Math.max(...sizes) <= 39 && Math.max(...sizes) - Math.min(...sizes) <= 1 && Number.isInteger(sizes[0]), `dim ${dim}`);
  }
  for (const bad of [0, 31, 33, -32, 32.5]) assert.throws(() => planChunks(bad), isUsage);
});

test("encodeDatagram writes cluster.md's little-endian header, the reference Q8_0 blocks and HMAC-SHA256 truncated to 16 bytes", () => {
  const values = gaussianVector(new SeededRandom(1), 96);
  const h: DatagramHeader = {
    kind: "input",
    sessionId: 0xa1b2c3d4,
    epoch: 0x01020304,
    senderIndex: 0x0506,
    layer: 0x0708,
    phase: 1,
    isDuplicateCopy: true,
    chunkIndex: 0x090a,
    nChunks: 0x0b0c,
    position: 0x0d0e0f10,
    offset: 0x11121300,
    nElements: 64,
    sendTimeUs: 0xfedcba98,
  };
  const out = Buffer.alloc(1400, 0xee);
  const n = encodeDatagram(h, values, 32, KEY0, out);
  assert.equal(n, 36 + 2 * 34 + 16);
  const v = new DataView(out.buffer, out.byteOffset, n);
  assert.equal(v.getUint16(0, true), 0x4148);
  assert.deepEqual([out[0], out[1]], [0x48, 0x41]); // "HA"
  assert.equal(v.getUint8(2), 1);
  assert.equal(v.getUint8(3), 1);
  assert.equal(v.getUint32(4, true), 0xa1b2c3d4);
  assert.equal(v.getUint32(8, true), 0x01020304);
  assert.equal(v.getUint16(12, true), 0x0506);
  assert.equal(v.getUint16(14, true), 0x0708);
  assert.equal(v.getUint8(16), 1);
  assert.equal(v.getUint8(17), 1);
  assert.equal(v.getUint16(18, true), 0x090a);
  assert.equal(v.getUint16(20, true), 0x0b0c);
  assert.equal(v.getUint32(22, true), 0x0d0e0f10);
  assert.equal(v.getUint32(26, true), 0x11121300);
  assert.equal(v.getUint16(30, true), 64);
  assert.equal(v.getUint32(32, true), 0xfedcba98);
  const blocks = new Uint8Array(2 * 34);
  Q8.quantizeRowRef(values.subarray(32, 96), blocks, 0);
  assert.deepEqual(out.subarray(36, 36 + 68), Buffer.from(blocks));
  const mac = createHmac("sha256", KEY0).update(out.subarray(0, n - 16)).digest().subarray(0, 16);
  assert.deepEqual(out.subarray(n - 16, n), mac);
  assert.ok(out.subarray(n).every((b) => b === 0xee), "nothing written past the datagram");
  // The pre-quantized variant writes the same bytes; sealDatagram recomputes the same MAC.
  const out2 = Buffer.alloc(n);
  assert.equal(encodeDatagramBlocks(h, blocks, 0, KEY0, out2), n);
  assert.deepEqual(out2, out.subarray(0, n));
  out2.fill(0, n - 16);
  sealDatagram(out2, n, KEY0);
  assert.deepEqual(out2, out.subarray(0, n));
});

test("encode rejects headers it cannot send, short keys and short buffers with a usage error", () => {
  const values = new Float32Array(2048);
  const out = Buffer.alloc(1400);
  const ok = header({ offset: 0, nElements: 64, chunkIndex: 0, nChunks: 1 });
  assert.equal(encodeDatagram(ok, values, 0, KEY0, out), 36 + 68 + 16);
  const bad: Partial<DatagramHeader>[] = [
    { nElements: 0 },
    { nElements: 33 },
    { nElements: 40 * 32 },
    { chunkIndex: 1 },
    { phase: 2 as SyncPhaseId },
    { position: 2 ** 32 },
    { sessionId: -1 },
    { layer: 0x10000 },
    { offset: 16 },
    { sendTimeUs: 1.5 },
    { kind: "other" as DatagramKind },
  ];
  for (const fields of bad) assert.throws(() => encodeDatagram({ ...ok, ...fields }, values, 0, KEY0, out), isUsage, JSON.stringify(fields));
  assert.throws(() => encodeDatagram(ok, values, 0, KEY0.subarray(0, 15), out), isUsage);
  assert.throws(() => encodeDatagram(ok, values, 0, KEY0, Buffer.alloc(119)), isUsage);
  assert.throws(() => encodeDatagram(ok, values, 2000, KEY0, out), isUsage);
  assert.throws(() => encodeDatagramBlocks(ok, new Uint8Array(67), 0, KEY0, out), isUsage);
});

test("round trip: every chunk decodes alone, the whole vector equals its Q8_0 round trip, lost chunks zero exactly their range", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 256 }), fc.integer(), fc.double({ min: 1e-3, max: 1e3, noNaN: true }), fc.integer({ min: 0, max: 0xffff }), (nBlocks, seed, scale, lossMask) => {
      const dim = nBlocks * 32;
      const random = new SeededRandom(seed);
      const x = gaussianVector(random, dim, scale);
      const expected = q8RoundTrip(x);
      const datagrams = encodeVector(x, KEY0, { kind: "input", senderIndex: 0, position: 3, layer: 2, phase: 1 });
      const chunks = planChunks(dim);
      const r = new DatagramReceiver({ kind: "input", sessionId: SESSION, epoch: EPOCH, dim, nLayers: 4, nSenders: 1, keys: new Map([[0, KEY0]]), mayContribute: () => true });
      r.setCurrent(3, 2, 1);
      // Each chunk alone: its range, and zeros everywhere else.
      chunks.forEach((chunk, c) => {
        r.reset(EPOCH, 3, 2, 1);
        assert.equal(reasonOf(r, datagrams[c]!), "ok");
        const row = r.senderValues(3, 2, 1, 0)!;
        for (let i = 0; i < dim; i++) {
          const want = i >= chunk.offset && i < chunk.offset + chunk.nElements ? expected[i]! : 0;
          if (!Object.is(row[i], want)) assert.fail(`dim ${dim} chunk ${c} element ${i}: ${row[i]} ≠ ${want}`);
        }
      });
      // All but the lost ones, in reverse order.
      r.reset(EPOCH, 3, 2, 1);
      const lost = chunks.map((_, c) => ((lossMask >> c) & 1) === 1 && chunks.length > 1);
      for (let c = chunks.length - 1; c >= 0; c--) if (!lost[c]) assert.equal(reasonOf(r, datagrams[c]!), "ok");
      const sum = new Float32Array(dim);
      assert.equal(r.sumInto(3, 2, 1, sum), true);
      chunks.forEach((chunk, c) => {
        for (let i = chunk.offset; i < chunk.offset + chunk.nElements; i++) {
          const want = lost[c] ? 0 : expected[i]!;
          if (sum[i] !== want) assert.fail(`dim ${dim} element ${i}: ${sum[i]} ≠ ${want}`);
        }
      });
      assert.equal(r.chunksReceived(3, 2, 1, 0), lost.filter((l) => !l).length);
      assert.equal(r.nAccepted, chunks.length + lost.filter((l) => !l).length);
    }),
    { seed: FC_SEED, numRuns: 120 },
  );
});

test("a new receiver has every reject reason at 0", () => {
  const r = receiver({ dim: 64 });
  assert.deepEqual(Object.keys(r.counters), [...DATAGRAM_REJECT_REASONS]);
  assert.deepEqual(r.counters, countersWith({}));
  assert.equal(r.nAccepted, 0);
});

test("D1: zero length, 1 byte, a header cut inside each field, one byte short or long, a wrong nElements → bad_len", () => {
  const r = receiver({ dim: 2048 });
  const [d] = encodeVector(gaussianVector(new SeededRandom(2), 2048), KEYS.get(1)!, {});
  const cuts = [0, 1, ...Object.values(DATAGRAM_HEADER_FIELDS).map((f) => f.offset + f.sizeBytes - 1), DATAGRAM_HEADER_BYTES, DATAGRAM_MIN_BYTES - 1, d!.length - 1];
  for (const length of cuts) assert.equal(reasonOf(r, d!.subarray(0, length)), "bad_len", `length ${length}`);
  assert.equal(reasonOf(r, Buffer.concat([d!, Buffer.alloc(1)])), "bad_len");
  // The header's own length field off by −1, −32 and +32, re-MACed with the real key.
  for (const delta of [-1, -32, 32]) {
    const m = Buffer.from(d!);
    writeField(m, "nElements", 1024 + delta);
    sealDatagram(m, m.length, KEYS.get(1)!);
    assert.equal(reasonOf(r, m), "bad_len", `nElements ${1024 + delta}`);
  }
  assert.deepEqual(r.counters, countersWith({ bad_len: cuts.length + 4 }));
  assert.equal(reasonOf(r, d!), "ok");
});

test("D2: 1,401 bytes and 64 KiB → bad_len; the largest valid datagram (1,378 bytes) is accepted", () => {
  const dim = 39 * 32;
  const r = receiver({ dim });
  const [d] = encodeVector(gaussianVector(new SeededRandom(3), dim), KEYS.get(1)!, {});
  assert.equal(d!.length, 1378);
  for (const size of [1401, 64 * 1024]) {
    const big = Buffer.alloc(size);
    d!.copy(big);
    assert.equal(reasonOf(r, big), "bad_len");
  }
  assert.equal(reasonOf(r, d!), "ok");
  assert.deepEqual(r.counters, countersWith({ bad_len: 2 }));
});

// ---------------------------------------------------------------------------------------------
// D3 and D5 share one partial receiver: dim 2560 (chunks of 27, 27, 26 blocks), 4 layers,
// senders 1–3 keyed, current step (position 5, layer 1, ffn), window of 2 more steps.

const FUZZ_DIM = 2560;
const FUZZ_CHUNKS = planChunks(FUZZ_DIM);
const FUZZ_NLAYERS = 4;
const FUZZ_NSENDERS = 4;
const FUZZ_AHEAD = 2;
const FUZZ_CURRENT = { position: 5, layer: 1, phase: 1 as SyncPhaseId };
const stepOf = (position: number, layer: number, phase: number): number => (position * FUZZ_NLAYERS + layer) * 2 + phase;
const FUZZ_STEP = stepOf(FUZZ_CURRENT.position, FUZZ_CURRENT.layer, FUZZ_CURRENT.phase);
/** D11's placement: sender 2 holds nothing in layer 1; sender 3 holds no attention groups. */
const authorised = (sender: number, layer: number, phase: number): boolean => !(sender === 2 && layer === 1) && !(sender === 3 && phase === 0);
const GUARD = 64;
const GUARD_VALUE = 12345.5;

interface FuzzRig {
  r: DatagramReceiver;
  /** The receiver's storage with GUARD sentinel floats on each side. */
  padded: Float32Array;
  storage: Float32Array;
  /** Sender 1's datagrams for the current step; chunks 0 and 2 are accepted before each case. */
  base: Buffer[];
  /** The storage after those two chunks. */
  reference: Float32Array;
}

function makeFuzzRig(): FuzzRig {
  const storageLength = (FUZZ_AHEAD + 1) * FUZZ_NSENDERS * FUZZ_DIM;
  const padded = new Float32Array(storageLength + 2 * GUARD).fill(GUARD_VALUE);
  const storage = padded.subarray(GUARD, GUARD + storageLength);
  const r = receiver({ dim: FUZZ_DIM, nLayers: FUZZ_NLAYERS, nSenders: FUZZ_NSENDERS, maxStepsAhead: FUZZ_AHEAD, storage, mayContribute: authorised });
  const base = encodeVector(gaussianVector(new SeededRandom(5), FUZZ_DIM, 3), KEYS.get(1)!, { senderIndex: 1, ...FUZZ_CURRENT });
  const rig = { r, padded, storage, base, reference: new Float32Array(0) };
  prepare(rig);
  rig.reference = storage.slice();
  return rig;
}

/** Back to the state before a case: window at the current step, chunks 0 and 2 of sender 1 in. */
function prepare(rig: FuzzRig): void {
  rig.r.reset(EPOCH, FUZZ_CURRENT.position, FUZZ_CURRENT.layer, FUZZ_CURRENT.phase);
  assert.equal(rig.r.accept(rig.base[0]!).ok, true);
  assert.equal(rig.r.accept(rig.base[2]!).ok, true);
}

function guardsIntact(rig: FuzzRig): boolean {
  for (let i = 0; i < GUARD; i++) if (rig.padded[i] !== GUARD_VALUE || rig.padded[rig.padded.length - 1 - i] !== GUARD_VALUE) return false;
  return true;
}

/** What the spec says the receiver must do with `d` (whose MAC is valid for its claimed sender's key, if it has one). */
function oracle(d: Uint8Array): { reason: DatagramRejectReason } | { reason: "ok"; slot: number; sender: number; offset: number; nElements: number } {
  const n = d.length;
  if (n < 36 + 34 + 16 || n > 1400 || (n - 52) % 34 !== 0) return { reason: "bad_len" };
  const v = new DataView(d.buffer, d.byteOffset, n);
  if (v.getUint16(0, true) !== 0x4148) return { reason: "bad_magic" };
  if (v.getUint8(2) !== 1) return { reason: "bad_version" };
  if (v.getUint8(3) !== 2) return { reason: "bad_kind" };
  const sender = v.getUint16(12, true);
  if (!KEYS.has(sender)) return { reason: "unknown_sender" };
  if (v.getUint32(4, true) !== SESSION) return { reason: "wrong_session" };
  if (v.getUint32(8, true) !== EPOCH) return { reason: "stale_epoch" };
  const layer = v.getUint16(14, true);
  if (layer >= FUZZ_NLAYERS) return { reason: "bad_layer" };
  const phase = v.getUint8(16);
  if (phase > 1) return { reason: "bad_phase" };
  const step = stepOf(v.getUint32(22, true), layer, phase);
  if (step < FUZZ_STEP) return { reason: "stale" };
  if (step > FUZZ_STEP + FUZZ_AHEAD) return { reason: "bad_position" };
  if (!authorised(sender, layer, phase)) return { reason: "not_authorised" };
  const nElements = v.getUint16(30, true);
  if (36 + (nElements / 32) * 34 + 16 !== n) return { reason: "bad_len" };
  const chunkIndex = v.getUint16(18, true);
  const chunk = FUZZ_CHUNKS[chunkIndex];
  if (chunk === undefined || v.getUint16(20, true) !== FUZZ_CHUNKS.length || v.getUint32(26, true) !== chunk.offset || nElements !== chunk.nElements) return { reason: "bad_range" };
  if (sender === 1 && step === FUZZ_STEP && (chunkIndex === 0 || chunkIndex === 2)) return { reason: "duplicate" };
  for (let b = 0; b < nElements / 32; b++) {
    const scale = halfToFloat(v.getUint16(36 + b * 34, true));
    if (!Number.isFinite(scale)) return { reason: "bad_scale" };
    for (let j = 0; j < 32; j++) if (Math.abs(scale * v.getInt8(36 + b * 34 + 2 + j)) > 65504) return { reason: "bad_scale" };
  }
  return { reason: "ok", slot: step % (FUZZ_AHEAD + 1), sender, offset: chunk.offset, nElements };
}

test("D3: 10^5 random datagrams never throw and are all dropped at the MAC check or before", () => {
  const rig = makeFuzzRig();
  const preMac: readonly DatagramRejectReason[] = ["bad_len", "bad_magic", "bad_version", "bad_kind", "unknown_sender", "bad_mac"];
  const seen = countersWith({});
  const fill = (seed: number, nBytes: number, prefix: number, sender: number): Uint8Array => {
    const random = new SeededRandom(seed);
    const d = new Uint8Array(nBytes);
    for (let i = 0; i < nBytes; i++) d[i] = random.nextUint32() & 0xff;
    if (prefix >= 1 && nBytes >= 2) writeField(d, "magic", 0x4148);
    if (prefix >= 2 && nBytes >= 3) d[2] = 1;
    if (prefix >= 3 && nBytes >= 4) d[3] = 2;
    if (prefix >= 4 && nBytes >= 14) writeField(d, "senderIndex", sender);
    return d;
  };
  const validLength = fc.integer({ min: 1, max: MAX_BLOCKS_PER_CHUNK }).map((nBlocks) => datagramByteLength(nBlocks * 32));
  const arbitrary = fc.oneof(
    // Plain fast-check byte arrays (mostly short: length and magic rejects).
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 1500 }) },
    // Random bytes of any or a valid length, with a valid prefix up to a keyed sender, so most reach the MAC.
    {
      weight: 4,
      arbitrary: fc
        .tuple(
          fc.integer(),
          fc.oneof({ weight: 1, arbitrary: fc.integer({ min: 0, max: 1500 }) }, { weight: 3, arbitrary: validLength }),
          fc.oneof({ weight: 1, arbitrary: fc.integer({ min: 0, max: 3 }) }, { weight: 3, arbitrary: fc.constant(4) }),
          fc.oneof({ weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) }, { weight: 3, arbitrary: fc.constantFrom(1, 2, 3) }),
        )
        .map(([seed, nBytes, prefix, sender]) => fill(seed, nBytes, prefix, sender)),
    },
  );
  const nRuns = 100_000;
  fc.assert(
    fc.property(arbitrary, (d) => {
      const result = rig.r.accept(d);
      if (result.ok || !preMac.includes(result.reason)) return false;
      seen[result.reason]++;
      return true;
    }),
    { seed: FC_SEED, numRuns: nRuns },
  );
  assert.deepEqual(rig.r.counters, seen);
  assert.equal(Object.values(seen).reduce((a, b) => a + b, 0), nRuns);
  assert.equal(rig.r.nAccepted, 2);
  assert.ok(seen.bad_mac > nRuns / 4, `only ${seen.bad_mac} datagrams reached the MAC check`);
  for (const reason of preMac) assert.ok(seen[reason] > 100, `${reason}: ${JSON.stringify(seen)}`);
  assert.deepEqual(rig.storage, rig.reference);
  assert.ok(guardsIntact(rig));
});

test("D4: a bad MAC, another session's key, an all-zero key, a zeroed MAC → bad_mac, nothing written", () => {
  const rig = makeFuzzRig();
  const target = rig.base[1]!;
  const n = target.length;
  const variants: Buffer[] = [];
  for (let i = 0; i < 16; i++) {
    const m = Buffer.from(target);
    m[n - 16 + i]! ^= 1 << i % 8;
    variants.push(m);
  }
  for (const key of [OTHER_SESSION_KEY, Buffer.alloc(32), KEYS.get(2)!]) {
    const m = Buffer.from(target);
    sealDatagram(m, n, key);
    variants.push(m);
  }
  const zeroMac = Buffer.from(target);
  zeroMac.fill(0, n - 16);
  variants.push(zeroMac);
  const flippedBody = Buffer.from(target);
  flippedBody[100]! ^= 0x40; // payload changed after the MAC was computed
  variants.push(flippedBody);
  for (const m of variants) assert.equal(reasonOf(rig.r, m), "bad_mac");
  assert.deepEqual(rig.r.counters, countersWith({ bad_mac: variants.length }));
  assert.deepEqual(rig.storage, rig.reference);
  assert.equal(reasonOf(rig.r, target), "ok");
});

/** One mutation of the target datagram (sender 1, current step, chunk 1) before its re-MAC. */
type Mutation =
  | { readonly type: "field"; readonly field: DatagramHeaderField; readonly value: number }
  | { readonly type: "byte"; readonly index: number; readonly value: number }
  | { readonly type: "resize"; readonly deltaBlocks: number; readonly fixNElements: boolean }
  /** Re-target to another planned chunk: chunkIndex, offset, nElements and length all consistent. */
  | { readonly type: "chunk"; readonly chunkIndex: number };

const FIELD_NAMES = Object.keys(DATAGRAM_HEADER_FIELDS) as DatagramHeaderField[];
const INTERESTING: Partial<Record<DatagramHeaderField, number[]>> = {
  magic: [0x4148, 0x4841],
  version: [0, 1, 2],
  kind: [0, 1, 2, 3],
  sessionId: [SESSION, SESSION ^ 1],
  epoch: [EPOCH - 1, EPOCH, EPOCH + 1],
  senderIndex: [0, 1, 2, 3, 4],
  layer: [0, 1, 2, 3, 4],
  phase: [0, 1, 2],
  chunkIndex: [0, 1, 2, 3],
  nChunks: [2, 3, 4],
  position: [4, 5, 6, 7, 2 ** 32 - 1],
  offset: [0, 864, 1728, 1727, 865, 2560, 2592, 2 ** 32 - 32],
  nElements: [0, 832, 863, 864, 896, 1248],
  sendTimeUs: [0, 2 ** 32 - 1],
};

const mutationArbitrary: fc.Arbitrary<Mutation> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom(...FIELD_NAMES).chain((field) =>
      fc.oneof(fc.constantFrom(...(INTERESTING[field] ?? [0, 1])), fc.integer({ min: 0, max: 2 ** (8 * DATAGRAM_HEADER_FIELDS[field].sizeBytes) - 1 })).map((value): Mutation => ({ type: "field", field, value })),
    ),
  },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.integer({ min: 0, max: 26 }), fc.oneof(fc.constantFrom(0, 1), fc.integer({ min: 2, max: 33 })), fc.oneof(fc.constantFrom(0x7c, 0x7e, 0xfc, 0xff, 0x7b, 0x80, 0x7f), fc.integer({ min: 0, max: 255 })))
      .map(([b, j, value]): Mutation => ({ type: "byte", index: 36 + b * 34 + j, value })),
  },
  { weight: 1, arbitrary: fc.record({ type: fc.constant("resize" as const), deltaBlocks: fc.integer({ min: -27, max: 13 }), fixNElements: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant("chunk" as const), chunkIndex: fc.integer({ min: 0, max: FUZZ_CHUNKS.length - 1 }) }) },
);

function applyMutations(target: Buffer, mutations: readonly Mutation[], scratch: Uint8Array, random: SeededRandom): Uint8Array {
  let length = target.length;
  scratch.fill(0);
  target.copy(scratch);
  for (const m of mutations) {
    if (m.type === "field") writeField(scratch, m.field, m.value);
    else if (m.type === "byte") scratch[m.index] = m.value;
    else if (m.type === "chunk") {
      const chunk = FUZZ_CHUNKS[m.chunkIndex]!;
      writeField(scratch, "chunkIndex", m.chunkIndex);
      writeField(scratch, "offset", chunk.offset);
      writeField(scratch, "nElements", chunk.nElements);
      const newLength = datagramByteLength(chunk.nElements);
      for (let i = length - 16; i < newLength; i++) scratch[i] = random.nextInt(256);
      length = newLength;
    } else {
      const newLength = Math.max(0, Math.min(scratch.length, length + m.deltaBlocks * 34));
      for (let i = length - 16; i < newLength; i++) scratch[i] = random.nextInt(256);
      length = newLength;
      if (m.fixNElements && length >= DATAGRAM_MIN_BYTES) writeField(scratch, "nElements", ((length - 52) / 34) * 32);
    }
  }
  const d = scratch.subarray(0, length);
  if (length >= DATAGRAM_MIN_BYTES) {
    const sender = d[12]! | (d[13]! << 8);
    sealDatagram(d, length, KEYS.get(sender) ?? KEYS.get(1)!);
  }
  return d;
}

test("D5: 10^5 mutate-then-re-MAC datagrams: the oracle's reason, no write outside the accumulator, accumulator = reference ± that chunk", () => {
  const rig = makeFuzzRig();
  const target = rig.base[1]!;
  const scratch = new Uint8Array(DATAGRAM_MAX_BYTES);
  const expected = rig.reference.slice();
  const storageBits = bitsOf(rig.storage);
  const expectedBits = bitsOf(expected);
  const seen = countersWith({});
  let nOk = 0;
  const nRuns = 100_000;
  fc.assert(
    fc.property(fc.array(mutationArbitrary, { minLength: 1, maxLength: 3 }), fc.integer(), (mutations, seed) => {
      const d = applyMutations(target, mutations, scratch, new SeededRandom(seed));
      const want = oracle(d);
      const got = reasonOf(rig.r, d);
      assert.equal(got, want.reason);
      if (want.reason === "ok") {
        nOk++;
        const out = expected.subarray(((want.slot * FUZZ_NSENDERS + want.sender) * FUZZ_DIM) + want.offset);
        Q8.dequantizeRowRef(d, 36, out, want.nElements);
      } else {
        seen[want.reason]++;
      }
      assert.ok(storageBits.equals(expectedBits), "accumulator differs from the reference");
      assert.ok(guardsIntact(rig), "a write outside the accumulator");
      if (want.reason === "ok") {
        prepare(rig);
        expected.set(rig.reference);
      }
    }),
    { seed: FC_SEED, numRuns: nRuns },
  );
  assert.deepEqual(rig.r.counters, seen);
  const expectedReasons: DatagramRejectReason[] = ["bad_len", "bad_magic", "bad_version", "bad_kind", "unknown_sender", "wrong_session", "stale_epoch", "bad_layer", "bad_phase", "stale", "bad_position", "not_authorised", "bad_range", "duplicate", "bad_scale"];
  for (const reason of expectedReasons) assert.ok(seen[reason] >= 100, `${reason} seen only ${seen[reason]} times: ${JSON.stringify(seen)}, ${nOk} ok`);
  assert.equal(seen.bad_mac, 0);
  assert.ok(nOk >= 1000, `only ${nOk} mutations were still valid`);
});

test("D6: a replay within a step is ignored and the result is bit-identical; replays from an earlier token, layer or epoch are stale", () => {
  const x = gaussianVector(new SeededRandom(6), 2048);
  const at = { position: 9, layer: 2, phase: 0 as SyncPhaseId };
  const datagrams = encodeVector(x, KEYS.get(1)!, { ...at });
  const copies = encodeVector(x, KEYS.get(1)!, { ...at, isDuplicateCopy: true });
  const clean = receiver({ dim: 2048 });
  const replayed = receiver({ dim: 2048 });
  for (const r of [clean, replayed]) r.setCurrent(at.position, at.layer, at.phase);
  for (const d of datagrams) assert.equal(reasonOf(clean, d), "ok");
  assert.equal(reasonOf(replayed, datagrams[1]!), "ok");
  assert.equal(reasonOf(replayed, datagrams[1]!), "duplicate");
  assert.equal(reasonOf(replayed, copies[1]!), "duplicate");
  assert.equal(reasonOf(replayed, copies[0]!), "ok"); // the second copy arrived first: it wins
  assert.equal(replayed.accept(copies[0]!).ok, false);
  assert.equal(reasonOf(replayed, datagrams[0]!), "duplicate");
  const a = new Float32Array(2048);
  const b = new Float32Array(2048);
  clean.sumInto(at.position, at.layer, at.phase, a);
  replayed.sumInto(at.position, at.layer, at.phase, b);
  assert.ok(bitsOf(a).equals(bitsOf(b)));
  assert.deepEqual(replayed.counters, countersWith({ duplicate: 4 }));
  // Earlier layer, then earlier token, then earlier epoch.
  replayed.setCurrent(at.position, at.layer + 1, 0);
  assert.equal(reasonOf(replayed, datagrams[0]!), "stale");
  replayed.setCurrent(at.position + 1, 0, 0);
  assert.equal(reasonOf(replayed, datagrams[1]!), "stale");
  replayed.reset(EPOCH + 1, at.position, at.layer, at.phase);
  assert.equal(reasonOf(replayed, datagrams[0]!), "stale_epoch");
  // A datagram of the new epoch for the same step is accepted.
  assert.equal(reasonOf(replayed, encodeVector(x, KEYS.get(1)!, { ...at, epoch: EPOCH + 1 })[0]!), "ok");
  assert.deepEqual(replayed.counters, countersWith({ duplicate: 4, stale: 2, stale_epoch: 1 }));
});

test("D7: any arrival order of three senders' chunks gives the bit-identical sum, equal to the in-order sum of their Q8_0 round trips", () => {
  const dim = 4096;
  const random = new SeededRandom(7);
  const at = { position: 1, layer: 3, phase: 1 as SyncPhaseId };
  // Scales far apart, so that float addition of the three is not exact and its order matters.
  const partials = [0.01, 1, 300].map((scale) => gaussianVector(random, dim, scale));
  const datagrams = partials.flatMap((p, i) => encodeVector(p, KEYS.get(i + 1)!, { ...at, senderIndex: i + 1 }));
  const expected = new Float32Array(dim);
  for (const p of partials) {
    const q = q8RoundTrip(p);
    for (let i = 0; i < dim; i++) expected[i] = expected[i]! + q[i]!;
  }
  const r = receiver({ dim, mayContribute: () => true });
  const sum = new Float32Array(dim);
  let nDiffersFromArrivalOrderSum = 0;
  fc.assert(
    fc.property(fc.shuffledSubarray(datagrams, { minLength: datagrams.length, maxLength: datagrams.length }), (order) => {
      r.reset(EPOCH, at.position, at.layer, at.phase);
      const arrivalSum = new Float32Array(dim);
      for (const d of order) {
        const result = r.accept(d);
        assert.equal(result.ok, true);
        if (!result.ok) return;
        const row = r.senderValues(at.position, at.layer, at.phase, result.header.senderIndex)!;
        for (let i = result.header.offset; i < result.header.offset + result.header.nElements; i++) arrivalSum[i] = arrivalSum[i]! + row[i]!;
      }
      r.sumInto(at.position, at.layer, at.phase, sum);
      assert.ok(bitsOf(sum).equals(bitsOf(expected)));
      if (!bitsOf(arrivalSum).equals(bitsOf(expected))) nDiffersFromArrivalOrderSum++;
    }),
    { seed: FC_SEED, numRuns: 200 },
  );
  // Summing in arrival order would not be reproducible: float addition is not associative.
  assert.ok(nDiffersFromArrivalOrderSum > 0);
});

test("D7: chunks of later steps are buffered up to maxStepsAhead, dropped beyond it, and forgotten once the window passes them", () => {
  const dim = 2048;
  const x = gaussianVector(new SeededRandom(8), dim);
  const r = receiver({ dim, maxStepsAhead: 2 });
  r.setCurrent(4, 1, 1); // step s; layer 2 attention is s + 1, layer 2 ffn s + 2, layer 3 attention s + 3
  const next = encodeVector(x, KEYS.get(1)!, { position: 4, layer: 2, phase: 0 });
  const second = encodeVector(x, KEYS.get(1)!, { position: 4, layer: 2, phase: 1 });
  const third = encodeVector(x, KEYS.get(1)!, { position: 4, layer: 3, phase: 0 });
  const nextToken = encodeVector(x, KEYS.get(1)!, { position: 5, layer: 1, phase: 1 });
  assert.equal(reasonOf(r, next[0]!), "ok");
  assert.equal(reasonOf(r, second[1]!), "ok");
  assert.equal(reasonOf(r, third[0]!), "bad_position");
  assert.equal(reasonOf(r, nextToken[0]!), "bad_position");
  assert.equal(r.chunksReceived(4, 2, 0, 1), 1);
  assert.equal(r.chunksReceived(4, 2, 1, 1), 1);
  assert.equal(r.senderValues(4, 3, 0, 1), undefined);
  r.setCurrent(4, 2, 0);
  const expected = q8RoundTrip(x);
  const row = r.senderValues(4, 2, 0, 1)!;
  assert.deepEqual(row.subarray(0, 1024), expected.subarray(0, 1024));
  assert.ok(row.subarray(1024).every((v) => v === 0));
  assert.equal(reasonOf(r, third[0]!), "ok"); // now inside the window
  assert.equal(reasonOf(r, next[1]!), "ok");
  // Jump past everything: buffered steps are forgotten and their late chunks are stale.
  r.setCurrent(4, 3, 1);
  assert.equal(r.chunksReceived(4, 3, 0, 1), 0);
  assert.equal(reasonOf(r, third[0]!), "stale");
  assert.equal(reasonOf(r, second[1]!), "stale");
  assert.throws(() => r.setCurrent(4, 2, 0), isUsage);
  // The slot that held (4, 2, ffn) is clean for the step that reuses it.
  r.setCurrent(5, 1, 1);
  assert.ok(r.senderValues(5, 1, 1, 1)!.every((v) => v === 0));
  assert.equal(reasonOf(r, nextToken[0]!), "ok");
  assert.deepEqual(r.counters, countersWith({ bad_position: 2, stale: 2 }));
});

test("D8: NaN, ±Inf and huge scales from an authenticated sender → bad_scale; the accumulator stays finite and unchanged", () => {
  const rig = makeFuzzRig();
  const target = rig.base[1]!;
  const patches: [number, number][] = [
    [0x7e00, 1], // NaN
    [0x7c00, 1], // +Inf
    [0xfc00, 1], // −Inf
    [0x7c01, 0], // a NaN payload
    [0x7bff, 127], // 65504·127
    [0x5800, 127], // 128·127 = 16256 passes; checked below
  ];
  let nBad = 0;
  for (const [h, q] of patches) {
    for (const b of [0, 13, 26]) {
      const m = Buffer.from(target);
      m.writeUInt16LE(h, 36 + b * 34);
      m[36 + b * 34 + 2 + 5] = q & 0xff;
      sealDatagram(m, m.length, KEYS.get(1)!);
      const bad = Math.abs(halfToFloat(h) * q) > 65504 || !Number.isFinite(halfToFloat(h));
      assert.equal(reasonOf(rig.r, m), bad ? "bad_scale" : "ok");
      if (bad) nBad++;
      else prepare(rig);
      assert.ok(rig.storage.every((v) => Number.isFinite(v)));
    }
  }
  // A NaN in the sender's vector is sent as a NaN scale and dropped the same way.
  const x = gaussianVector(new SeededRandom(9), FUZZ_DIM);
  x[900] = Number.NaN;
  const fromNaN = encodeVector(x, KEYS.get(1)!, { senderIndex: 1, ...FUZZ_CURRENT })[1]!;
  assert.equal(reasonOf(rig.r, fromNaN), "bad_scale");
  assert.deepEqual(rig.storage, rig.reference);
  assert.deepEqual(rig.r.counters, countersWith({ bad_scale: nBad + 1 }));
  // A tighter bound from the cluster layer applies the same way.
  const tight = receiver({ dim: FUZZ_DIM, maxAbsValue: 1 });
  tight.setCurrent(FUZZ_CURRENT.position, FUZZ_CURRENT.layer, FUZZ_CURRENT.phase);
  assert.equal(reasonOf(tight, target), "bad_scale");
});

test("D10, D11: acceptance ignores the source address; a sender cannot speak for another; an unauthorised contribution is dropped", () => {
  assert.equal(DatagramReceiver.prototype.accept.length, 1, "accept takes the bytes only");
  const rig = makeFuzzRig();
  const calls: string[] = [];
  const r = receiver({
    dim: FUZZ_DIM,
    mayContribute: (s, l, p) => {
      calls.push(`${s}:${l}:${p}`);
      return authorised(s, l, p);
    },
  });
  const x = gaussianVector(new SeededRandom(10), FUZZ_DIM);
  r.setCurrent(0, 2, 0);
  // Worker 2 signs with its own key but claims to be worker 1: bad MAC.
  const forged = encodeVector(x, KEYS.get(2)!, { senderIndex: 1, layer: 2, phase: 0 })[0]!;
  assert.equal(reasonOf(r, forged), "bad_mac");
  // Worker 3 holds no attention groups (D11); worker 2 holds some in layer 2.
  assert.equal(reasonOf(r, encodeVector(x, KEYS.get(3)!, { senderIndex: 3, layer: 2, phase: 0 })[0]!), "not_authorised");
  assert.equal(reasonOf(r, encodeVector(x, KEYS.get(2)!, { senderIndex: 2, layer: 2, phase: 0 })[0]!), "ok");
  // Stale and unauthenticated datagrams never reach the authorisation callback.
  assert.equal(reasonOf(r, encodeVector(x, KEYS.get(3)!, { senderIndex: 3, layer: 1, phase: 1 })[0]!), "stale");
  assert.deepEqual(calls, ["3:2:0", "2:2:0"]);
  // An input receiver drops partials, and sender 0 without a key is unknown.
  const worker = new DatagramReceiver({ kind: "input", sessionId: SESSION, epoch: EPOCH, dim: FUZZ_DIM, nLayers: 4, nSenders: 1, keys: (s) => (s === 0 ? KEY0 : undefined), mayContribute: () => true });
  assert.equal(reasonOf(worker, rig.base[0]!), "bad_kind");
  assert.equal(reasonOf(worker, encodeVector(x, KEYS.get(1)!, { kind: "input", senderIndex: 1 })[0]!), "unknown_sender");
  assert.equal(reasonOf(worker, encodeVector(x, KEY0, { kind: "input", senderIndex: 0 })[0]!), "ok");
  assert.equal(reasonOf(worker, encodeVector(x, KEY0, { kind: "input", senderIndex: 0, sessionId: SESSION + 1 })[0]!), "wrong_session");
  assert.deepEqual(worker.counters, countersWith({ bad_kind: 1, unknown_sender: 1, wrong_session: 1 }));
});

test("receiver options are checked at construction; window queries outside it return nothing", () => {
  const base = { kind: "partial" as const, sessionId: 1, epoch: 1, dim: 64, nLayers: 2, nSenders: 2, keys: KEYS, mayContribute: () => true };
  for (const bad of [{ dim: 48 }, { nLayers: 0 }, { nSenders: 0 }, { maxStepsAhead: -1 }, { maxAbsValue: Number.NaN }, { maxAbsValue: 0 }, { storage: new Float32Array(10) }, { epoch: 2 ** 32 }]) {
    assert.throws(() => new DatagramReceiver({ ...base, ...bad }), isUsage, JSON.stringify(bad));
  }
  const r = new DatagramReceiver(base);
  assert.equal(r.sumInto(0, 0, 1, new Float32Array(64)), false);
  assert.equal(r.senderValues(0, 0, 0, 2), undefined);
  assert.equal(r.chunksReceived(0, 0, 0, 5), 0);
  assert.throws(() => r.setCurrent(0, 2, 0), isUsage);
  r.setCurrent(7, 1, 1);
  assert.deepEqual([r.position, r.layer, r.phase, r.epoch], [7, 1, 1, 1]);
});
