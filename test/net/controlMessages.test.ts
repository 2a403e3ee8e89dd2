/**
 * Control messages: byte-exact round trips of every type through MACed framing with random
 * chunking, schema rejects that name the field, the order check (C6), and the C3 fuzz:
 * 10^4 random or mutated bodies never escape as anything but a coded reject and never pollute
 * a prototype.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { Packr } from "msgpackr";
import { HaloError, MessageInvalidError, UnexpectedMessageError } from "../../src/base/index.js";
import { FrameAuthenticator, FrameDecoder, encodeBody, encodeFrame } from "../../src/net/controlFrames.js";
import {
  CONTROL_MESSAGE_TYPES,
  decodeControlMessage,
  encodeControlMessage,
  expectMessage,
  parseControlMessage,
} from "../../src/net/controlMessages.js";
import type { ControlMessage } from "../../src/net/controlMessages.js";
import { EXAMPLE_INPUT, MESSAGE_ARBITRARIES, anyMessage, assertRoundTrip, mp, normalize } from "./controlHelpers.js";

test("every message type round-trips byte for byte through MACed frames split at random points", () => {
  assert.deepEqual(Object.keys(MESSAGE_ARBITRARIES).sort(), [...CONTROL_MESSAGE_TYPES].sort(), "an arbitrary for every type");
  for (const [type, arbitrary] of Object.entries(MESSAGE_ARBITRARIES)) {
    fc.assert(
      fc.property(fc.array(arbitrary as fc.Arbitrary<ControlMessage>, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 12 }), (messages, cuts) => {
        const key = Buffer.alloc(32, 1);
        const sender = new FrameAuthenticator(key, "coordinator");
        const bodies = messages.map((message) => encodeControlMessage(message));
        const stream = Buffer.concat(bodies.map((body) => sender.seal(body)));
        const points = [...new Set(cuts.map((cut) => cut % (stream.length + 1))), stream.length].sort((a, b) => a - b);
        const decoder = new FrameDecoder();
        const receiver = new FrameAuthenticator(key, "worker");
        const received: Uint8Array[] = [];
        let from = 0;
        for (const point of points) {
          decoder.push(stream.subarray(from, point));
          for (let frame = decoder.next(); frame; frame = decoder.next()) received.push(receiver.open(frame));
          from = point;
        }
        assert.equal(received.length, messages.length);
        received.forEach((body, i) => {
          assert.ok(Buffer.from(body).equals(bodies[i]!), "the same body bytes arrive");
          assertRoundTrip(messages[i]!, body);
        });
      }),
      { seed: 0xc0de + type.length, numRuns: 100 },
    );
  }
});

test("one byte at a time: a frame per type, unauthenticated framing too", () => {
  const samples = Object.values(MESSAGE_ARBITRARIES).map((arbitrary) => fc.sample(arbitrary as fc.Arbitrary<ControlMessage>, { seed: 42, numRuns: 1 })[0]!);
  const stream = Buffer.concat(samples.map((message) => encodeFrame(encodeControlMessage(message))));
  const decoder = new FrameDecoder();
  const got: ControlMessage[] = [];
  for (let i = 0; i < stream.length; i++) {
    decoder.push(stream.subarray(i, i + 1));
    for (let frame = decoder.next(); frame; frame = decoder.next()) got.push(decodeControlMessage(frame));
  }
  assert.deepEqual(got.map(normalize), samples.map(normalize));
});

function invalid(field: string, message: string): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof MessageInvalidError, String(error));
    assert.equal(error.code, "HALO_ERR_MESSAGE_INVALID");
    assert.equal(error.field, field);
    assert.equal(error.message, `invalid control message: ${field}: ${message}`);
    return true;
  };
}

test("schema rejects name the field, with bounds on every number, array and byte string", () => {
  const join = { type: "join", sessionId: 1, epoch: 2, nodeIndex: 1, modelSha256: "ab".repeat(32), modelName: "m", coordinatorUdpPort: 9000 };
  const plan = { type: "plan", sequence: 1, epoch: 2, groups: { attention: [[0, 2]], ffn: [[0, 8]] }, ffnBlockSize: 32, wire: "q8_0", position: 0, copies: 1 };
  const cases: [unknown, string, string][] = [
    [5, "(message)", "Invalid input: expected object, received number"],
    [{ type: "nope" }, "type", "Invalid discriminator value. Expected 'hello' | 'auth' | 'auth-ok' | 'error' | 'join' | 'join-ok' | 'plan' | 'plan-ok' | 'heartbeat' | 'input' | 'partial' | 'reset' | 'stop' | 'shard-request' | 'shard-offer' | 'shard-accept' | 'shard-chunk' | 'shard-end' | 'shard-stored' | 'profile-request' | 'profile' | 'prepare' | 'prepare-ok' | 'activate' | 'activate-ok'"],
    [{ ...join, extra: 1 }, "extra", "unknown key 'extra'"],
    [{ ...join, __proto_: { polluted: true } }, "__proto_", "unknown key '__proto_'"],
    [{ ...join, constructor: { prototype: {} } }, "constructor", "unknown key 'constructor'"],
    [{ ...join, sessionId: 2 ** 32 }, "sessionId", "Too big: expected number to be <=4294967295"],
    [{ ...join, sessionId: "1" }, "sessionId", "Invalid input: expected number, received string"],
    [{ ...join, nodeIndex: 0 }, "nodeIndex", "Too small: expected number to be >=1"],
    [{ ...join, modelSha256: "AB".repeat(32) }, "modelSha256", "Invalid string: must match pattern /^[0-9a-f]{64}$/"],
    [{ ...join, modelName: "x".repeat(257) }, "modelName", "Too big: expected string to have <=256 characters"],
    [{ ...plan, groups: { attention: [[3, 3]], ffn: [] } }, "groups.attention.0", "a range [start, end) needs start < end"],
    [{ ...plan, groups: [{ attention: [], ffn: [[0, 2 ** 21]] }] }, "groups.0.ffn.0.1", "Too big: expected number to be <=1048576"],
    [{ ...plan, groups: Array.from({ length: 1025 }, () => ({ attention: [], ffn: [] })) }, "groups", "Too big: expected array to have <=1024 items"],
    [{ ...plan, groups: { attention: Array.from({ length: 4097 }, () => [0, 1]), ffn: [] } }, "groups.attention", "Too big: expected array to have <=4096 items"],
    [{ ...plan, groups: Array.from({ length: 20 }, () => ({ attention: Array.from({ length: 4000 }, () => [0, 1]), ffn: [] })) }, "groups", "more than 65536 ranges in one plan"],
    [{ ...plan, ffnBlockSize: 0 }, "ffnBlockSize", "Too small: expected number to be >=1"],
    [{ type: "hello", protocol: 1, nonce: new Uint8Array(15) }, "nonce", "expected exactly 16 bytes"],
    [{ type: "hello", protocol: 1, nonce: "x".repeat(16) }, "nonce", "expected a byte string"],
    [{ type: "auth-ok", mac: new Uint8Array(33) }, "mac", "expected exactly 32 bytes"],
    [{ type: "error", code: "EVIL", message: "" }, "code", "Invalid string: must match pattern /^HALO_ERR_[A-Z0-9_]{1,64}$/"],
    [{ ...EXAMPLE_INPUT, data: new Uint8Array(0) }, "data", "expected 1 to 16777216 bytes"],
    [{ ...EXAMPLE_INPUT, data: new Uint8Array((16 << 20) + 1) }, "data", "expected 1 to 16777216 bytes"],
    [{ ...EXAMPLE_INPUT, data: new Float32Array(17) }, "data", "expected a byte string"],
    [{ ...EXAMPLE_INPUT, nTokens: 0 }, "nTokens", "Too small: expected number to be >=1"],
    [{ ...EXAMPLE_INPUT, layer: 1.5 }, "layer", "Invalid input: expected int, received number"],
    [{ ...EXAMPLE_INPUT, phase: "both" }, "phase", 'Invalid option: expected one of "attention"|"ffn"'],
    [{ type: "heartbeat", sentAtMs: Number.NaN }, "sentAtMs", "Invalid input: expected number, received NaN"],
    [{ type: "heartbeat", sentAtMs: -1 }, "sentAtMs", "Too small: expected number to be >=0"],
    [{ type: "stop", reason: "x" }, "reason", "unknown key 'reason'"],
  ];
  for (const [value, field, message] of cases) {
    assert.throws(() => parseControlMessage(value), invalid(field, message), `${JSON.stringify(normalize(value))?.slice(0, 80)}`);
  }
});

test("profiles: plan-ok with or without one; every profile field bounded, typed and named when wrong", () => {
  const profile = {
    compute: [{ tensorType: "Q4_0", threads: 4, attentionGroupMs: 0.5, ffnGroupMs: 0.25 }, { tensorType: "F16+Q8_0", threads: 1, attentionGroupMs: 0, ffnGroupMs: 3 }],
    attentionGroupMs: 0.5, ffnGroupMs: 0.25, freeMemoryBytes: 2 ** 33, memoryBudgetBytes: 2 ** 31, readBytesPerSecond: 1.5e9,
  };
  const sample = profile.compute[0]!;
  assert.deepEqual(parseControlMessage({ type: "plan-ok", sequence: 3 }), { type: "plan-ok", sequence: 3 });
  for (const message of [{ type: "plan-ok", sequence: 3, profile }, { type: "profile", requestId: 9, profile }, { type: "profile-request", requestId: 9 }] as ControlMessage[]) {
    assertRoundTrip(message, encodeControlMessage(message));
  }
  const inPlanOk = (changes: Record<string, unknown>) => ({ type: "plan-ok", sequence: 3, profile: { ...profile, ...changes } });
  const inProfile = (changes: Record<string, unknown>) => ({ type: "profile", requestId: 9, profile: { ...profile, ...changes } });
  const cases: [unknown, string, string][] = [
    [inPlanOk({ attentionGroupMs: Number.NaN }), "profile.attentionGroupMs", "Invalid input: expected number, received NaN"],
    [inPlanOk({ ffnGroupMs: -0.001 }), "profile.ffnGroupMs", "Too small: expected number to be >=0"],
    [inProfile({ ffnGroupMs: Infinity }), "profile.ffnGroupMs", "Invalid input: expected number, received Infinity"],
    [inProfile({ attentionGroupMs: 3_600_001 }), "profile.attentionGroupMs", "Too big: expected number to be <=3600000"],
    [inProfile({ freeMemoryBytes: "8G" }), "profile.freeMemoryBytes", "Invalid input: expected number, received string"],
    [inProfile({ memoryBudgetBytes: 1.5 }), "profile.memoryBudgetBytes", "Invalid input: expected int, received number"],
    [inProfile({ memoryBudgetBytes: -1 }), "profile.memoryBudgetBytes", "Too small: expected number to be >=0"],
    [inProfile({ readBytesPerSecond: 2e15 }), "profile.readBytesPerSecond", "Too big: expected number to be <=1000000000000000"],
    [inProfile({ readBytesPerSecond: null }), "profile.readBytesPerSecond", "Invalid input: expected number, received null"],
    [inProfile({ compute: [] }), "profile.compute", "Too small: expected array to have >=1 items"],
    [inProfile({ compute: Array.from({ length: 65 }, () => sample) }), "profile.compute", "Too big: expected array to have <=64 items"],
    [inProfile({ compute: [{ ...sample, tensorType: "Q".repeat(33) }] }), "profile.compute.0.tensorType", "Too big: expected string to have <=32 characters"],
    [inProfile({ compute: [{ ...sample, tensorType: "q4_0" }] }), "profile.compute.0.tensorType", "Invalid string: must match pattern /^[A-Z0-9_]+(\\+[A-Z0-9_]+)*$/"],
    [inProfile({ compute: [{ ...sample, tensorType: 4 }] }), "profile.compute.0.tensorType", "Invalid input: expected string, received number"],
    [inProfile({ compute: [{ ...sample, threads: 0 }] }), "profile.compute.0.threads", "Too small: expected number to be >=1"],
    [inProfile({ compute: [{ ...sample, threads: 2.5 }] }), "profile.compute.0.threads", "Invalid input: expected int, received number"],
    [inProfile({ compute: [{ ...sample, speed: 1 }] }), "profile.compute.0.speed", "unknown key 'speed'"],
    [inProfile({ name: "worker" }), "profile.name", "unknown key 'name'"],
    [{ type: "plan-ok", sequence: 3, profile: null }, "profile", "Invalid input: expected object, received null"],
    [{ type: "profile", requestId: 9 }, "profile", "Invalid input: expected object, received undefined"],
    [{ type: "profile-request", requestId: -1 }, "requestId", "Too small: expected number to be >=0"],
  ];
  for (const [value, field, message] of cases) {
    assert.throws(() => parseControlMessage(value), invalid(field, message), `${JSON.stringify(normalize(value))?.slice(0, 120)}`);
  }
});

test("sending validates too: a typed array other than Uint8Array never reaches msgpackr", () => {
  // msgpackr 2.1.3 with moreTypes off writes a Float32Array element by element into a bin of its
  // byteLength, leaving stale buffer bytes in the rest; the schema keeps such values out.
  const bad = { ...EXAMPLE_INPUT, data: new Float32Array(17) } as unknown as ControlMessage;
  assert.throws(() => encodeControlMessage(bad), invalid("data", "expected a byte string"));
});

test("C6 helper: expectMessage passes the expected types and names state, expected and actual otherwise", () => {
  const plan: ControlMessage = { type: "plan", sequence: 0, epoch: 0, groups: { attention: [], ffn: [] }, ffnBlockSize: 32, wire: "q8_0", position: 0, copies: 1 };
  expectMessage(plan, ["plan", "reset"], "worker joined");
  assert.throws(
    () => expectMessage(plan, ["join"], "worker awaiting join"),
    (error: unknown) => {
      assert.ok(error instanceof UnexpectedMessageError);
      assert.equal(error.code, "HALO_ERR_MESSAGE_UNEXPECTED");
      assert.equal(error.message, "worker awaiting join: expected 'join', got 'plan'");
      assert.deepEqual(error.expectedTypes, ["join"]);
      return true;
    },
  );
});

// ---- C3 ----

/** The property every hostile body must satisfy: a valid message, or a coded MessageInvalidError; nothing else escapes. */
function decodesOrRejects(body: Uint8Array): void {
  try {
    const message = decodeControlMessage(body);
    assert.ok(CONTROL_MESSAGE_TYPES.includes(message.type));
    assert.doesNotThrow(() => encodeControlMessage(message), "whatever is accepted is a valid message");
  } catch (error) {
    if (!(error instanceof HaloError) || error.code !== "HALO_ERR_MESSAGE_INVALID") throw error;
  }
}

const PROTOTYPE_KEYS = ["__proto__", "constructor", "prototype", "__defineGetter__", "toString", "hasOwnProperty", "valueOf"];

/** A value for a field: wrong types, extremes, prototype-shaped objects. */
const hostileValue: fc.Arbitrary<Buffer> = fc.oneof(
  fc.anything({ maxDepth: 3 }).map((value) => mp.value(value)),
  fc.constantFrom(-1, 2 ** 32, 2 ** 53, -(2 ** 53), 1e308, Number.NaN, Infinity, 0.5, "", "x".repeat(70_000), true, null).map((v) => mp.value(v)),
  fc.constantFrom(...PROTOTYPE_KEYS).map((key) => mp.map([[mp.str(key), mp.object({ polluted: true })]])),
  fc.uint8Array({ maxLength: 64 }).map((bytes) => mp.value(Buffer.from(bytes))),
  fc.integer({ min: 9, max: 2000 }).map((depth) => Buffer.concat([Buffer.alloc(depth, 0x91), Buffer.from([0xc0])])),
  fc.integer({ min: 0, max: 255 }).map((type) => mp.ext(type, Buffer.alloc(type % 20))),
);

const C3_RUNS = 2000;

test("C3: random bytes are rejected with a coded error", () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => decodesOrRejects(bytes)), { seed: 0xc3_01, numRuns: C3_RUNS });
});

test("C3: byte-level mutations of valid bodies decode to a valid message or are rejected", () => {
  const mutated = fc
    .tuple(anyMessage, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom("flip", "insert", "delete", "truncate")), { minLength: 1, maxLength: 6 }))
    .map(([message, edits]) => {
      const bytes = [...encodeControlMessage(message)];
      for (const [at, byte, kind] of edits) {
        const i = bytes.length === 0 ? 0 : at % bytes.length;
        if (kind === "flip") bytes[i] = byte;
        else if (kind === "insert") bytes.splice(i, 0, byte);
        else if (kind === "delete") bytes.splice(i, 1);
        else bytes.length = i;
      }
      return Buffer.from(bytes);
    });
  fc.assert(fc.property(mutated, (body) => decodesOrRejects(body)), { seed: 0xc3_02, numRuns: C3_RUNS });
});

test("C3: field-level mutations (wrong types, extra and prototype keys, dropped keys) are rejected", () => {
  const mutated = fc
    .tuple(anyMessage, fc.nat(), hostileValue, fc.constantFrom("replace", "add", "drop"), fc.constantFrom(...PROTOTYPE_KEYS, "extra", "type"))
    .map(([message, which, value, kind, newKey]) => {
      const entries = Object.entries(message).map(([k, v]) => [mp.str(k), mp.value(v)] as [Buffer, Buffer]);
      const i = which % entries.length;
      if (kind === "replace") entries[i]![1] = value;
      else if (kind === "drop") entries.splice(i, 1);
      else entries.push([mp.str(newKey), value]);
      return { body: mp.map(entries), kind, newKey };
    });
  fc.assert(
    fc.property(mutated, ({ body, kind, newKey }) => {
      decodesOrRejects(body);
      // A second "type" key can override the first (msgpackr keeps the last), so only other keys are sure rejects.
      if (kind === "add" && newKey !== "type") assert.throws(() => decodeControlMessage(body), MessageInvalidError, "an added key is never accepted");
    }),
    { seed: 0xc3_03, numRuns: C3_RUNS },
  );
});

test("C3: hostile structures (deep nesting, huge arrays, every ext type, records, structured clone) are rejected", () => {
  const cloner = new Packr({ structuredClone: true, moreTypes: true });
  const hostile = fc.oneof(
    hostileValue,
    fc.integer({ min: 9, max: 100_000 }).map((depth) => Buffer.alloc(depth, 0x81)),
    fc.integer({ min: 9, max: 50_000 }).map((depth) => Buffer.concat([...Array.from({ length: depth }, () => Buffer.from([0x81, 0xa1, 0x61])), Buffer.from([0xc0])])),
    fc.tuple(fc.constantFrom(0xdc, 0xdd, 0xde, 0xdf), fc.integer({ min: 1, max: 0xffffffff })).map(([token, n]) => {
      const width = token === 0xdc || token === 0xde ? 2 : 4;
      const header = Buffer.alloc(1 + width);
      header[0] = token;
      if (width === 2) header.writeUInt16BE(n & 0xffff, 1);
      else header.writeUInt32BE(n, 1);
      return Buffer.concat([header, Buffer.alloc(8)]);
    }),
    fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 300 })).map(([type, data]) => mp.object({ type: "reset" }, [[mp.str("x"), mp.ext(type, data)]])),
    fc.integer({ min: 0x40, max: 0x7f }).map((id) => Buffer.concat([Buffer.from([0xd4, 0x72, id]), mp.array([mp.str("type")]), mp.str("stop")])),
    fc.anything({ maxDepth: 3, withMap: true, withSet: true, withDate: true, withTypedArray: true, withBigInt: true }).map((value) => {
      const shared = { polluted: true };
      return Buffer.from(cloner.pack({ type: "stop", value, a: shared, b: shared }));
    }),
  );
  fc.assert(fc.property(hostile, (body) => decodesOrRejects(body)), { seed: 0xc3_04, numRuns: C3_RUNS });
});

test("C3: arbitrary JS values packed by msgpackr are rejected or valid", () => {
  fc.assert(
    fc.property(fc.anything({ maxDepth: 4, withObjectString: true, withNullPrototype: true }), (value) => decodesOrRejects(encodeBody(value))),
    { seed: 0xc3_05, numRuns: C3_RUNS },
  );
});

test("C3: after the fuzz no prototype is polluted", () => {
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, "polluted"), false);
  assert.equal(([] as unknown as Record<string, unknown>).polluted, undefined);
  assert.equal(typeof Object.prototype.toString, "function");
});
