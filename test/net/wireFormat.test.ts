/**
 * The session wire formats (src/net/wireFormat.ts) on their own and through the datagram codec,
 * and the stream link model of the strict baseline (src/net/streamLinkEmulator.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { FakeClock, SeededRandom } from "../../src/base/index.js";
import { QUANT_TRAITS, roundToHalf } from "../../src/kernels/index.js";
import {
  DatagramReceiver, NACK_BYTES, StreamLinkEmulator, WIRE_FORMATS, datagramByteLength, encodeDatagram, encodeNack, isNackDatagram, maxBlocksPerChunk, openNack, planChunks, wireByteLength,
  type WireFormat,
} from "../../src/net/index.js";

const FC_SEED = 20261126;
const KEY = Buffer.alloc(32, 7);

test("block geometry per format: bytes per 32 elements and blocks per 1,400-byte datagram", () => {
  assert.deepEqual(Object.values(WIRE_FORMATS).map((f) => [f.name, f.blockBytes, maxBlocksPerChunk(f.name)]), [["q8_0", 34, 39], ["q4_0", 18, 74], ["f16", 64, 21], ["f32", 128, 10]]);
  // TinyLlama's dim 2048 = 64 blocks: 1, 2, 4 and 7 datagrams.
  assert.deepEqual((["q4_0", "q8_0", "f16", "f32"] as const).map((f) => planChunks(2048, f).length), [1, 2, 4, 7]);
  assert.equal(datagramByteLength(320, "f32"), 36 + 1280 + 16);
  assert.equal(wireByteLength(64, "f16"), 128);
  assert.throws(() => wireByteLength(33, "f32"), /multiple of 32/);
});

test("f32 round-trips exactly and f16 rounds each element to the nearest half, for any finite input in range", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 6 }), fc.array(fc.float({ min: -60000, max: 60000, noNaN: true }), { minLength: 192, maxLength: 192 }), (nBlocks, raw) => {
      const n = nBlocks * 32;
      const values = Float32Array.from(raw.slice(0, n));
      for (const format of ["f32", "f16"] as const) {
        const traits = WIRE_FORMATS[format];
        const bytes = new Uint8Array(wireByteLength(n, format) + 3).subarray(3); // an odd byteOffset, as a pooled Buffer can have
        traits.encode(values, 0, n, bytes, 0);
        const out = new Float32Array(n);
        assert.equal(traits.decode(bytes, 0, nBlocks, out, 0, 65504), "ok");
        for (let i = 0; i < n; i++) assert.equal(out[i], format === "f32" ? values[i] : roundToHalf(values[i]!));
      }
    }),
    { seed: FC_SEED, numRuns: 200 },
  );
});

test("q4_0 is ggml's Q4_0 round trip, and a bad scale rejects the range", () => {
  const random = new SeededRandom(9);
  const values = Float32Array.from({ length: 96 }, () => random.nextGaussian());
  const bytes = new Uint8Array(wireByteLength(96, "q4_0"));
  WIRE_FORMATS.q4_0.encode(values, 0, 96, bytes, 0);
  const expected = new Uint8Array(bytes.length);
  QUANT_TRAITS.Q4_0.quantizeRowRef(values, expected, 0);
  assert.deepEqual(bytes, expected);
  const out = new Float32Array(100).fill(7);
  assert.equal(WIRE_FORMATS.q4_0.decode(bytes, 0, 3, out, 4, 65504), "ok");
  const reference = new Float32Array(96);
  QUANT_TRAITS.Q4_0.dequantizeRowRef(bytes, 0, reference, 96);
  assert.deepEqual(out.subarray(4), reference);
  assert.deepEqual([...out.subarray(0, 4)], [7, 7, 7, 7]);
  bytes[18] = 0x00;
  bytes[19] = 0x7c; // +Inf scale in block 1
  assert.equal(WIRE_FORMATS.q4_0.decode(bytes, 0, 3, out, 4, 65504), "non_finite_scale");
});

test("a NaN, an infinity or a value beyond maxAbsValue rejects the whole range and writes nothing", () => {
  for (const format of ["f16", "f32"] as const) {
    const traits = WIRE_FORMATS[format];
    for (const [bad, status] of [[NaN, "non_finite_value"], [Infinity, "non_finite_value"], [-70000, format === "f16" ? "non_finite_value" : "above_max_abs"], [1000, "above_max_abs"]] as const) {
      const values = new Float32Array(64).fill(0.5);
      values[40] = bad;
      const bytes = new Uint8Array(wireByteLength(64, format));
      traits.encode(values, 0, 64, bytes, 0);
      const out = new Float32Array(64).fill(9);
      assert.equal(traits.decode(bytes, 0, 2, out, 0, 999), status, `${format} ${bad}`);
      assert.ok(out.every((x) => x === 9));
    }
  }
});

function receiverFor(format: WireFormat, dim: number): DatagramReceiver {
  return new DatagramReceiver({ kind: "partial", sessionId: 1, epoch: 1, dim, nLayers: 2, nSenders: 2, format, keys: () => KEY, mayContribute: () => true });
}

test("an f32 session's datagrams carry the vector exactly; a chunk sized for another format is bad_len, a NaN bad_scale", () => {
  const dim = 640;
  const random = new SeededRandom(3);
  const values = Float32Array.from({ length: dim }, () => random.nextGaussian() * 3);
  const receiver = receiverFor("f32", dim);
  const chunks = planChunks(dim, "f32");
  assert.equal(chunks.length, 2);
  const out = new Uint8Array(1400);
  chunks.forEach((chunk, chunkIndex) => {
    const header = { kind: "partial" as const, sessionId: 1, epoch: 1, senderIndex: 1, layer: 0, phase: 0 as const, isDuplicateCopy: false, chunkIndex, nChunks: chunks.length, position: 0, offset: chunk.offset, nElements: chunk.nElements, sendTimeUs: 0 };
    const length = encodeDatagram(header, values, chunk.offset, KEY, out, "f32");
    assert.equal(length, datagramByteLength(chunk.nElements, "f32"));
    assert.equal(receiver.accept(out.subarray(0, length)).ok, true);
  });
  assert.deepEqual(receiver.senderValues(0, 0, 0, 1), values);

  // The same header with a Q8_0 payload: authentic, but not what this session's format implies.
  const q8Header = { kind: "partial" as const, sessionId: 1, epoch: 1, senderIndex: 1, layer: 0, phase: 1 as const, isDuplicateCopy: false, chunkIndex: 0, nChunks: 2, position: 0, offset: 0, nElements: 320, sendTimeUs: 0 };
  const q8Length = encodeDatagram({ ...q8Header, nElements: 32, nChunks: 1 }, values, 0, KEY, out, "q8_0");
  assert.deepEqual(receiver.accept(out.subarray(0, q8Length)), { ok: false, reason: "bad_len" });
  assert.equal(receiver.counters.bad_len, 1);
  const fresh = receiverFor("f32", dim);
  const poisoned = values.slice();
  poisoned[5] = NaN;
  const length = encodeDatagram({ ...q8Header, phase: 0 }, poisoned, 0, KEY, out, "f32");
  assert.deepEqual(fresh.accept(out.subarray(0, length)), { ok: false, reason: "bad_scale" });
  assert.equal(fresh.chunksReceived(0, 0, 0, 1), 0);
  assert.ok(fresh.senderValues(0, 0, 0, 1)!.every((x) => x === 0));
});

test("stream link: a zero profile delivers at once; delay, bandwidth and in-order delivery on the injected clock", () => {
  const clock = new FakeClock();
  const direct = new StreamLinkEmulator({ profile: { lossRatio: 0, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 }, seed: 1, clock });
  const seen: string[] = [];
  direct.send(100, () => seen.push("now"));
  assert.deepEqual(seen, ["now"]);
  assert.equal(direct.isTransparent, true);

  // 8 Mbit/s: 10,000 bytes take 10 ms on the wire, then 5 ms of delay.
  const slow = new StreamLinkEmulator({ profile: { lossRatio: 0, delayMs: 5, jitterMs: 0, bandwidthMbit: 8 }, seed: 1, clock });
  const at: Array<[string, number]> = [];
  slow.send(10_000, () => at.push(["a", clock.now()]));
  slow.send(1_000, () => at.push(["b", clock.now()]));
  clock.advance(14);
  assert.deepEqual(at, []);
  clock.advance(1);
  assert.deepEqual(at, [["a", 15]]);
  clock.advance(1);
  assert.deepEqual(at, [["a", 15], ["b", 16]]);
});

test("stream link: a lost segment stalls its message one RTO, doubling per repeat, and everything behind it (head-of-line)", () => {
  const clock = new FakeClock();
  const link = new StreamLinkEmulator({ profile: { lossRatio: 0.5, delayMs: 1, jitterMs: 0, bandwidthMbit: 0 }, seed: 42, clock, rtoMs: 200 });
  const deliveries: Array<[number, number]> = [];
  for (let i = 0; i < 50; i++) link.send(100, () => deliveries.push([i, clock.now()]));
  clock.advance(3_600_000);
  assert.deepEqual(deliveries.map(([i]) => i), Array.from({ length: 50 }, (_, i) => i));
  const stallsMs = deliveries.map(([, t]) => t - 1);
  // Every stall is a sum of RTOs 200 + 400 + …, and deliveries never go back in time.
  for (let i = 1; i < stallsMs.length; i++) assert.ok(stallsMs[i]! >= stallsMs[i - 1]!);
  assert.ok(link.counters.retransmissions > 10 && link.counters.retransmissions < 90, `${link.counters.retransmissions} retransmissions`);
  assert.equal(stallsMs.at(-1)! % 200, 0);

  // Everything lost: capped at 15 retransmissions (tcp_retries2), never an endless loop.
  const dead = new StreamLinkEmulator({ profile: { lossRatio: 1, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 }, seed: 1, clock, rtoMs: 200 });
  dead.send(10, () => undefined);
  assert.equal(dead.counters.retransmissions, 15);
  dead.destroy();
});

test("NACK datagrams: 52 bytes, MACed, round-trip their request; forged, stale and out-of-range ones are refused", () => {
  const request = { sessionId: 77, epoch: 3, senderIndex: 2, position: 1234, layer: 4, phase: 1 as const, chunkIndex: 1, nChunks: 2 };
  const out = new Uint8Array(NACK_BYTES);
  assert.equal(encodeNack(request, KEY, out), 52);
  assert.equal(isNackDatagram(out), true);
  const expected = { sessionId: 77, epoch: 3, nChunks: 2, nLayers: 5 };
  assert.deepEqual(openNack(out, expected, (s) => (s === 2 ? KEY : undefined)), request);
  assert.equal(openNack(out, expected, () => undefined), "unknown_sender");
  assert.equal(openNack(out, expected, () => Buffer.alloc(32, 9)), "bad_mac");
  assert.equal(openNack(out, { ...expected, epoch: 4 }, () => KEY), "stale_epoch");
  assert.equal(openNack(out, { ...expected, sessionId: 1 }, () => KEY), "wrong_session");
  assert.equal(openNack(out, { ...expected, nLayers: 4 }, () => KEY), "bad_range");
  assert.equal(openNack(out.subarray(0, 51), expected, () => KEY), "bad_len");
  const tampered = Uint8Array.from(out);
  tampered[22]! ^= 1; // position
  assert.equal(openNack(tampered, expected, () => KEY), "bad_mac");
  // A data receiver never takes a NACK (too short for any data datagram).
  assert.deepEqual(receiverFor("q8_0", 64).accept(out), { ok: false, reason: "bad_len" });
  assert.throws(() => encodeNack({ ...request, chunkIndex: 2 }, KEY, out), /chunkIndex = 2/);
});
