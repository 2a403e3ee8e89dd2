/**
 * Control-plane framing: the incremental decoder (any split), the length cap (C1, before any
 * allocation), the per-direction MAC (replay, reorder, forgery), the handshake hashes, and the
 * msgpack codec's refusal of extensions, records, structured clone and prototype keys.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";
import fc from "fast-check";
import { Packr } from "msgpackr";
import { FrameError, FrameMacError, HaloError, MessageInvalidError } from "../../src/base/index.js";
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameAuthenticator,
  FrameDecoder,
  MSGPACK_OPTIONS,
  checkPlainMsgpack,
  coordinatorAuthMac,
  decodeBody,
  deriveSessionKey,
  encodeBody,
  encodeFrame,
  frameDirectionKey,
  frameMac,
  macEquals,
  workerAuthMac,
} from "../../src/net/controlFrames.js";
import { mp } from "./controlHelpers.js";

function header(length: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(length >>> 0, 0);
  return bytes;
}

function drain(decoder: FrameDecoder): Uint8Array[] {
  const frames: Uint8Array[] = [];
  for (let frame = decoder.next(); frame !== undefined; frame = decoder.next()) frames.push(frame);
  return frames;
}

function expectFrameError(message: string): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof FrameError, String(error));
    assert.equal(error.code, "HALO_ERR_FRAME");
    assert.equal(error.message, message);
    return true;
  };
}

test("the decoder yields the same frames for one byte at a time and for random splits", () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { minLength: 1, maxLength: 12 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      (payloads, cuts) => {
        const stream = Buffer.concat(payloads.map((payload) => encodeFrame(payload)));
        const points = [...new Set(cuts.map((cut) => cut % (stream.length + 1)))].sort((a, b) => a - b);
        const decoder = new FrameDecoder();
        const got: Uint8Array[] = [];
        let from = 0;
        for (const point of [...points, stream.length]) {
          decoder.push(stream.subarray(from, point));
          got.push(...drain(decoder));
          from = point;
        }
        assert.deepEqual(got.map((f) => Buffer.from(f).toString("hex")), payloads.map((p) => Buffer.from(p).toString("hex")));
        assert.equal(decoder.bufferedBytes, 0);
        assert.equal(decoder.midFrame, false);

        const byteWise = new FrameDecoder();
        const got1: Uint8Array[] = [];
        for (let i = 0; i < stream.length; i++) {
          byteWise.push(stream.subarray(i, i + 1));
          got1.push(...drain(byteWise));
        }
        assert.equal(got1.length, payloads.length);
        assert.ok(got1.every((frame, i) => Buffer.from(frame).equals(Buffer.from(payloads[i]!))));
      },
    ),
    { seed: 0x5eed01, numRuns: 300 },
  );
});

test("C1: length prefixes 0, 2^32-1 and cap+1 are rejected when the prefix arrives, and the decoder stays failed", () => {
  const cases: [number, string][] = [
    [0, "control frame length prefix is 0"],
    [0xffffffff, "control frame length prefix 4294967295 is over the cap of 16777216 bytes"],
    [DEFAULT_MAX_FRAME_BYTES + 1, "control frame length prefix 16777217 is over the cap of 16777216 bytes"],
  ];
  for (const [length, message] of cases) {
    const decoder = new FrameDecoder();
    decoder.push(header(length).subarray(0, 3));
    assert.equal(decoder.next(), undefined);
    decoder.push(header(length).subarray(3));
    assert.throws(() => decoder.next(), expectFrameError(message));
    decoder.push(Buffer.from([1, 2, 3]));
    assert.throws(() => decoder.next(), expectFrameError(message));
  }
  const small = new FrameDecoder({ maxFrameBytes: 4096 });
  small.push(header(4097));
  assert.throws(() => small.next(), expectFrameError("control frame length prefix 4097 is over the cap of 4096 bytes"));
});

test("C1: nothing of the declared size is allocated; the buffer grows with the bytes that came", () => {
  const before = process.memoryUsage().arrayBuffers;
  const decoders: FrameDecoder[] = [];
  for (let i = 0; i < 32; i++) {
    // 32 frames each declaring the full 16 MiB cap (512 MiB if allocated up front), with 10 bytes sent.
    const decoder = new FrameDecoder();
    decoder.push(header(DEFAULT_MAX_FRAME_BYTES));
    decoder.push(Buffer.alloc(10, 1));
    assert.equal(decoder.next(), undefined);
    assert.equal(decoder.midFrame, true);
    decoders.push(decoder);
  }
  const grownBytes = process.memoryUsage().arrayBuffers - before;
  assert.ok(grownBytes < 8 << 20, `arrayBuffers grew by ${grownBytes} bytes`);
  assert.equal(decoders.length, 32);
});

test("a frame at exactly the cap is accepted; encodeFrame refuses empty and over-cap payloads", () => {
  const decoder = new FrameDecoder({ maxFrameBytes: 1000 });
  const payload = Buffer.alloc(1000, 7);
  decoder.push(encodeFrame(payload, 1000));
  assert.ok(Buffer.from(decoder.next()!).equals(payload));
  assert.throws(() => encodeFrame(Buffer.alloc(0)), expectFrameError("cannot send an empty control frame"));
  assert.throws(() => encodeFrame(Buffer.alloc(1001), 1000), expectFrameError("control frame of 1001 bytes is over the cap of 1000 bytes; split the payload"));
});

test("MAC: frames open in order; replayed, reordered, forged, truncated and wrong-key frames fail", () => {
  const key = Buffer.alloc(32, 9);
  const sender = new FrameAuthenticator(key, "coordinator");
  const bodies = [encodeBody({ a: 1 }), encodeBody({ b: 2 }), encodeBody({ c: 3 })];
  const frames = bodies.map((body) => sender.seal(body));
  const payloadOf = (frame: Buffer): Buffer => frame.subarray(4);
  assert.equal(sender.sendSequence, 3);

  const receiver = new FrameAuthenticator(key, "worker");
  assert.ok(Buffer.from(receiver.open(payloadOf(frames[0]!))).equals(bodies[0]!));
  const macFails = (sequence: number) => (error: unknown) => {
    assert.ok(error instanceof FrameMacError);
    assert.equal(error.code, "HALO_ERR_FRAME_MAC");
    assert.equal(error.message, `control frame ${sequence} failed its MAC (replayed, reordered, forged or corrupted)`);
    return true;
  };
  assert.throws(() => receiver.open(payloadOf(frames[0]!)), macFails(1), "replay");
  assert.throws(() => receiver.open(payloadOf(frames[2]!)), macFails(1), "reorder");
  const forged = Buffer.from(payloadOf(frames[1]!));
  forged[forged.length - 1]! ^= 1;
  assert.throws(() => receiver.open(forged), macFails(1), "forged body");
  assert.throws(() => receiver.open(payloadOf(frames[1]!).subarray(0, 32)), macFails(1), "MAC only");
  assert.throws(() => receiver.open(new FrameAuthenticator(Buffer.alloc(32, 8), "coordinator").seal(bodies[0]!).subarray(4)), macFails(1), "wrong key");
  // Reflection: the coordinator's own frame 0 sent back to it, and a worker-keyed frame at the right sequence number.
  const coordinatorSide = new FrameAuthenticator(key, "coordinator");
  assert.throws(() => coordinatorSide.open(payloadOf(frames[0]!)), macFails(0), "reflected to its sender");
  assert.throws(() => receiver.open(new FrameAuthenticator(key, "worker").seal(bodies[1]!).subarray(4)), macFails(1), "sealed by the same direction");
  assert.equal(receiver.receiveSequence, 1, "failures do not advance the sequence");
  assert.ok(Buffer.from(receiver.open(payloadOf(frames[1]!))).equals(bodies[1]!));
  assert.ok(Buffer.from(receiver.open(payloadOf(frames[2]!))).equals(bodies[2]!));
});

test("the frame MAC and handshake hashes are the documented HMACs", () => {
  const key = Buffer.alloc(32, 3);
  const body = Buffer.from([1, 2, 3]);
  const sequence = 2 ** 40 + 5;
  const seq = Buffer.alloc(8);
  seq.writeBigUInt64LE(BigInt(sequence));
  assert.deepEqual(frameMac(key, sequence, body), createHmac("sha256", key).update(Buffer.concat([seq, body])).digest());
  assert.deepEqual(frameDirectionKey(key, "worker"), createHmac("sha256", key).update("halo-frames-v1-worker").digest());
  const sealed = new FrameAuthenticator(key, "coordinator").seal(body);
  assert.deepEqual(sealed.subarray(4, 36), frameMac(createHmac("sha256", key).update("halo-frames-v1-coordinator").digest(), 0, body));
  const clusterKey = Buffer.from("a cluster key of some length");
  const workerNonce = Buffer.alloc(16, 1);
  const coordinatorNonce = Buffer.alloc(16, 2);
  const hmac = (...parts: (string | Buffer)[]) => createHmac("sha256", clusterKey).update(Buffer.concat(parts.map((p) => Buffer.from(p)))).digest();
  assert.deepEqual(coordinatorAuthMac(clusterKey, workerNonce, coordinatorNonce), hmac("halo-auth-c-v1", workerNonce, coordinatorNonce));
  assert.deepEqual(workerAuthMac(clusterKey, workerNonce, coordinatorNonce), hmac("halo-auth-w-v1", coordinatorNonce, workerNonce));
  assert.deepEqual(deriveSessionKey(clusterKey, workerNonce, coordinatorNonce), hmac("halo-session-v1", workerNonce, coordinatorNonce));
  assert.notDeepEqual(coordinatorAuthMac(clusterKey, workerNonce, coordinatorNonce), workerAuthMac(clusterKey, coordinatorNonce, workerNonce));
  assert.equal(macEquals(Buffer.alloc(32), Buffer.alloc(31)), false);
});

function expectInvalidBody(message: string): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof MessageInvalidError, String(error));
    assert.equal(error.code, "HALO_ERR_MESSAGE_INVALID");
    assert.equal(error.field, "(body)");
    assert.equal(error.message, `invalid control message: (body): ${message}`);
    return true;
  };
}

test("msgpack: ext types, records, structured clone and 0xc1 are refused; what msgpackr's own extensions produce never reaches a schema", () => {
  // msgpackr's own decoder would turn these into Date, Error, Set, RegExp, typed arrays, references and records.
  const refused: [string, Buffer, string][] = [
    ["timestamp (-1)", mp.ext(0xff, Buffer.alloc(4)), "msgpack extension (0xd6) is not accepted at byte 0"],
    ["undefined (0)", mp.ext(0, Buffer.alloc(1)), "msgpack extension (0xd4) is not accepted at byte 0"],
    ["Error (0x65)", Buffer.concat([mp.ext(0x65, Buffer.alloc(1)), mp.array([mp.str("Error"), mp.str("x")])]), "msgpack extension (0xd4) is not accepted at byte 0"],
    ["record definition (0x72)", Buffer.from([0xd4, 0x72, 0x40, 0x91, 0xa1, 0x61, 0x01]), "msgpack extension (0xd4) is not accepted at byte 0"],
    ["structured-clone id (0x69)", Buffer.concat([mp.ext(0x69, Buffer.alloc(4)), mp.object({ a: 1 })]), "msgpack extension (0xd6) is not accepted at byte 0"],
    ["structured-clone pointer (0x70)", mp.ext(0x70, Buffer.alloc(4)), "msgpack extension (0xd6) is not accepted at byte 0"],
    ["typed array (0x74)", mp.ext(0x74, Buffer.alloc(8)), "msgpack extension (0xd7) is not accepted at byte 0"],
    ["unknown ext 0x33 inside a map", mp.object({ type: "stop" }, [[mp.str("x"), mp.ext(0x33, Buffer.alloc(100))]]), "msgpack extension (0xc9) is not accepted at byte 17"],
    ["0xc1", Buffer.from([0xc1]), "reserved msgpack byte 0xc1 at byte 0"],
    ["integer map key", mp.map([[mp.value(1), mp.value(2)]]), "msgpack map key is not a string at byte 5"],
    ["trailing bytes", Buffer.concat([mp.value({ type: "stop" }), Buffer.from([0])]), "1 bytes after the msgpack value at byte 11"],
    ["truncated", mp.value({ type: "stop" }).subarray(0, 5), "msgpack value truncated at byte 1"],
    ["array32 of 2^32-1 entries", Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x00]), "msgpack array of 4294967295 entries does not fit in the 1 bytes left at byte 0"],
    ["map16 of 65535 entries", Buffer.from([0xde, 0xff, 0xff, 0xa0, 0xc0]), "msgpack map of 65535 entries does not fit in the 2 bytes left at byte 0"],
    ["nesting 9 deep", Buffer.concat([Buffer.alloc(9, 0x91), Buffer.from([0xc0])]), "msgpack nesting deeper than 8 at byte 8"],
    ["nesting 100000 deep", Buffer.concat([Buffer.alloc(100_000, 0x91), Buffer.from([0xc0])]), "msgpack nesting deeper than 8 at byte 8"],
  ];
  for (const [what, body, message] of refused) {
    assert.throws(() => decodeBody(body), expectInvalidBody(message), what);
  }
  // The most a depth-8 body can be is plain data.
  assert.deepEqual(decodeBody(Buffer.concat([Buffer.alloc(8, 0x91), Buffer.from([0x05])])), [[[[[[[[5]]]]]]]]);
});

test("msgpack: __proto__ and constructor keys stay own data and pollute nothing", () => {
  const polluting = mp.map([
    [mp.str("__proto__"), mp.object({ polluted: true })],
    [mp.str("constructor"), mp.object({ prototype: { polluted: true } })],
    [mp.str("nested"), mp.map([[mp.str("__proto__"), mp.object({ polluted: true })]])],
  ]);
  const value = decodeBody(polluting) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  assert.deepEqual(Object.keys(value).sort(), ["__proto_", "constructor", "nested"]);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal((value as { polluted?: unknown }).polluted, undefined);
});

test("msgpack options: the packer writes plain msgpack only (no records, ext or structured clone)", () => {
  assert.equal(MSGPACK_OPTIONS.useRecords, false);
  assert.equal(MSGPACK_OPTIONS.structuredClone, false);
  assert.equal(MSGPACK_OPTIONS.moreTypes, false);
  // The same object twice is written twice (no reference extension); a Uint8Array view as bin, offset respected.
  const shared = { k: 1 };
  const view = new Uint8Array(new Uint8Array([9, 9, 1, 2, 3, 9]).buffer, 2, 3);
  const body = encodeBody({ a: shared, b: shared, v: view });
  checkPlainMsgpack(body);
  assert.deepEqual(decodeBody(body), { a: { k: 1 }, b: { k: 1 }, v: Buffer.from([1, 2, 3]) });
  // For contrast: a structured-clone packer writes what the reader refuses.
  const cloner = new Packr({ structuredClone: true });
  assert.throws(() => decodeBody(cloner.pack({ a: shared, b: shared, s: new Set([1]) })), (error: unknown) => error instanceof HaloError && error.code === "HALO_ERR_MESSAGE_INVALID");
  // fixmap, not map16: small maps are compact.
  assert.equal(encodeBody({ type: "stop" })[0], 0x81);
});
