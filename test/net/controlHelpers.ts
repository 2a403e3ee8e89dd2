/**
 * Helpers for the control-plane tests: loopback TCP pairs on 127.0.0.1, a raw peer that speaks
 * the protocol by hand (to send what a real ControlConnection never would), valid-message
 * arbitraries, and a tiny msgpack writer for hostile bodies.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import net from "node:net";
import fc from "fast-check";
import {
  FrameAuthenticator,
  FrameDecoder,
  coordinatorAuthMac,
  decodeBody,
  deriveSessionKey,
  encodeBody,
  encodeFrame,
  workerAuthMac,
} from "../../src/net/controlFrames.js";
import { WIRE_FORMAT_NAMES } from "../../src/net/wireFormat.js";
import { CONTROL_LIMITS, decodeControlMessage, encodeControlMessage } from "../../src/net/controlMessages.js";
import { PROFILE_LIMITS } from "../../src/net/measuredProfile.js";
import type { ControlMessage, ControlMessageType } from "../../src/net/controlMessages.js";

export const CLUSTER_KEY = Buffer.from("0123456789abcdef0123456789abcdef");
export const OTHER_KEY = Buffer.from("fedcba9876543210fedcba9876543210");

/** Polls `predicate` on the real event loop until true; fails after `realTimeoutMs`. */
export async function waitFor(predicate: () => boolean, what: string, realTimeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > realTimeoutMs) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** Lets pending I/O callbacks and microtasks run. */
export async function settle(nTurns = 5): Promise<void> {
  for (let i = 0; i < nTurns; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A server on 127.0.0.1, an ephemeral port. */
export async function listenLoopback(onConnection: (socket: net.Socket) => void, backlog = 511): Promise<net.Server> {
  const server = net.createServer(onConnection);
  server.on("error", (error) => assert.fail(`server error: ${error.message}`));
  await new Promise<void>((resolve) => server.listen({ port: 0, host: "127.0.0.1", backlog }, resolve));
  return server;
}

export function portOf(server: net.Server): number {
  const address = server.address();
  assert.ok(address && typeof address === "object");
  return address.port;
}

export function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Two connected loopback sockets; the listener stops listening once they are. */
export async function tcpPair(): Promise<{ client: net.Socket; server: net.Socket }> {
  let accepted!: (socket: net.Socket) => void;
  const serverSide = new Promise<net.Socket>((resolve) => (accepted = resolve));
  const server = await listenLoopback((socket) => accepted(socket));
  const client = net.connect(portOf(server), "127.0.0.1");
  client.on("error", () => {});
  const serverSocket = await serverSide;
  serverSocket.on("error", () => {});
  await new Promise<void>((resolve) => (client.connecting ? client.once("connect", () => resolve()) : resolve()));
  server.close(); // stops listening now; its callback would wait for these sockets to close
  return { client, server: serverSocket };
}

/** Open file descriptors of this process. */
export function fdCount(): number {
  return readdirSync("/proc/self/fd").length;
}

/**
 * One end of a control connection driven by hand. Frames are collected as they arrive; the
 * decoder switches to the post-handshake cap and MAC checks once `authenticator` is set.
 */
export class RawPeer {
  readonly frames: Uint8Array[] = [];
  readonly decoder = new FrameDecoder({ maxFrameBytes: 1 << 30 });
  authenticator: FrameAuthenticator | undefined;
  closed = false;
  readonly closedPromise: Promise<void>;

  constructor(readonly socket: net.Socket) {
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      this.decoder.push(chunk);
      for (let frame = this.decoder.next(); frame; frame = this.decoder.next()) this.frames.push(frame);
    });
    this.closedPromise = new Promise((resolve) =>
      socket.on("close", () => {
        this.closed = true;
        resolve();
      }),
    );
  }

  async nextFrame(): Promise<Uint8Array> {
    await waitFor(() => this.frames.length > 0 || this.closed, "a frame from the peer");
    const frame = this.frames.shift();
    if (!frame) assert.fail("the peer closed instead of sending a frame");
    return frame;
  }

  /** The next frame's message, opened with the MAC once authenticated. */
  async nextMessage(): Promise<ControlMessage> {
    const frame = await this.nextFrame();
    return decodeControlMessage(this.authenticator ? this.authenticator.open(frame) : frame);
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** A frame holding `value` as msgpack, unvalidated and unauthenticated. */
  sendPlain(value: unknown): Buffer {
    const frame = encodeFrame(encodeBody(value), 1 << 30);
    this.write(frame);
    return frame;
  }

  /** A MACed frame holding `value` (unvalidated) at the next sending sequence number. */
  sendSealed(value: unknown): Buffer {
    const frame = this.authenticator!.seal(encodeBody(value), 1 << 30);
    this.write(frame);
    return frame;
  }

  /** Plays the coordinator: reads hello, sends auth, checks auth-ok. Returns the auth frame sent. */
  async handshakeAsCoordinator(clusterKey: Uint8Array): Promise<{ authFrame: Buffer; sessionKey: Buffer }> {
    const hello = await this.nextMessage();
    assert.equal(hello.type, "hello");
    const coordinatorNonce = randomBytes(16);
    const authFrame = this.sendPlain({ type: "auth", nonce: coordinatorNonce, mac: coordinatorAuthMac(clusterKey, hello.nonce, coordinatorNonce) });
    const authOk = await this.nextMessage();
    assert.equal(authOk.type, "auth-ok");
    assert.deepEqual(Buffer.from(authOk.mac), workerAuthMac(clusterKey, hello.nonce, coordinatorNonce));
    const sessionKey = deriveSessionKey(clusterKey, hello.nonce, coordinatorNonce);
    this.authenticator = new FrameAuthenticator(sessionKey, "coordinator");
    return { authFrame, sessionKey };
  }

  /** Plays the worker: sends hello, reads auth, answers auth-ok with the given key's MAC. */
  async handshakeAsWorker(clusterKey: Uint8Array, protocol = 1): Promise<void> {
    const workerNonce = randomBytes(16);
    this.sendPlain({ type: "hello", protocol, nonce: workerNonce });
    const auth = await this.nextMessage();
    assert.equal(auth.type, "auth");
    this.sendPlain({ type: "auth-ok", mac: workerAuthMac(clusterKey, workerNonce, auth.nonce) });
    this.authenticator = new FrameAuthenticator(deriveSessionKey(clusterKey, workerNonce, auth.nonce), "worker");
  }
}

// ---- values ----

/** Copies every byte string into a plain Uint8Array so Buffers and Uint8Arrays compare equal. */
export function normalize(value: unknown): unknown {
  if (value instanceof Uint8Array) return { bytes: Buffer.from(value).toString("hex") };
  if (Array.isArray(value)) return value.map(normalize);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
  return value;
}

const Q8_0_BLOCK_BYTES = 34;

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const nonNegativeDouble = (max: number) => fc.double({ min: 0, max, noNaN: true }).map((x) => (Object.is(x, -0) ? 0 : x));
const range = fc
  .tuple(fc.integer({ min: 0, max: CONTROL_LIMITS.maxGroupIndex - 1 }), fc.integer({ min: 1, max: 4096 }))
  .map(([start, n]) => [start, Math.min(CONTROL_LIMITS.maxGroupIndex, start + n)] as [number, number]);
const sha256Hex = fc.stringMatching(/^[0-9a-f]{64}$/);
const shardSize = fc.integer({ min: 1, max: CONTROL_LIMITS.maxShardBytes });
const phaseGroups = fc.record({ attention: fc.array(range, { maxLength: 8 }), ffn: fc.array(range, { maxLength: 8 }) });
const slice = {
  position: u32,
  nTokens: fc.integer({ min: 1, max: CONTROL_LIMITS.maxTokensPerMessage }),
  layer: fc.integer({ min: 0, max: CONTROL_LIMITS.maxLayers - 1 }),
  phase: fc.constantFrom("attention" as const, "ffn" as const),
  data: fc.integer({ min: 1, max: 40 }).chain((n) => bytes(n * Q8_0_BLOCK_BYTES)),
};

const groupMs = nonNegativeDouble(PROFILE_LIMITS.maxGroupMs);
const measuredProfile = fc.record({
  compute: fc.array(fc.record({
    tensorType: fc.stringMatching(/^[A-Z0-9_]{1,8}(\+[A-Z0-9_]{1,8}){0,2}$/),
    threads: fc.integer({ min: 1, max: PROFILE_LIMITS.maxThreads }),
    attentionGroupMs: groupMs,
    ffnGroupMs: groupMs,
  }), { minLength: 1, maxLength: 4 }),
  attentionGroupMs: groupMs,
  ffnGroupMs: groupMs,
  freeMemoryBytes: fc.maxSafeNat(),
  memoryBudgetBytes: fc.maxSafeNat(),
  readBytesPerSecond: nonNegativeDouble(PROFILE_LIMITS.maxReadBytesPerSecond),
});

/** One arbitrary of valid messages per type. */
export const MESSAGE_ARBITRARIES = {
  hello: fc.record({ type: fc.constant("hello" as const), protocol: fc.integer({ min: 1, max: 65535 }), nonce: bytes(16) }),
  auth: fc.record({ type: fc.constant("auth" as const), nonce: bytes(16), mac: bytes(32) }),
  "auth-ok": fc.record({ type: fc.constant("auth-ok" as const), mac: bytes(32) }),
  error: fc.record({
    type: fc.constant("error" as const),
    code: fc.stringMatching(/^HALO_ERR_[A-Z0-9_]{1,64}$/),
    message: fc.string({ maxLength: CONTROL_LIMITS.maxErrorMessageChars, unit: "binary" }),
  }),
  join: fc.record({
    type: fc.constant("join" as const),
    sessionId: u32,
    epoch: u32,
    nodeIndex: fc.integer({ min: 1, max: 65535 }),
    modelSha256: fc.stringMatching(/^[0-9a-f]{64}$/),
    modelName: fc.string({ maxLength: CONTROL_LIMITS.maxNameChars }),
    coordinatorUdpPort: fc.integer({ min: 0, max: 65535 }),
  }),
  "join-ok": fc.record({
    type: fc.constant("join-ok" as const),
    udpPort: fc.integer({ min: 0, max: 65535 }),
    profile: fc.record({
      nThreads: fc.integer({ min: 1, max: CONTROL_LIMITS.maxThreads }),
      memoryBytes: fc.maxSafeNat(),
      kernels: fc.string({ minLength: 1, maxLength: 64 }),
      cpuModel: fc.string({ maxLength: CONTROL_LIMITS.maxNameChars }),
      matvecGflops: nonNegativeDouble(1e9),
    }),
  }),
  plan: fc.record({
    type: fc.constant("plan" as const),
    sequence: u32,
    epoch: u32,
    groups: fc.oneof(phaseGroups, fc.array(phaseGroups, { minLength: 1, maxLength: 6 })),
    ffnBlockSize: fc.integer({ min: 1, max: CONTROL_LIMITS.maxFfnBlockSize }),
    wire: fc.constantFrom(...WIRE_FORMAT_NAMES),
    position: u32,
    copies: fc.integer({ min: 1, max: 4 }),
    skipBelow: fc.double({ min: 0, max: 0.999, noNaN: true }),
  }, { requiredKeys: ["type", "sequence", "epoch", "groups", "ffnBlockSize", "wire", "position", "copies"] }),
  "plan-ok": fc.record({ type: fc.constant("plan-ok" as const), sequence: u32, profile: measuredProfile }, { requiredKeys: ["type", "sequence"] }),
  heartbeat: fc.record({ type: fc.constant("heartbeat" as const), sentAtMs: nonNegativeDouble(Number.MAX_SAFE_INTEGER) }),
  input: fc.record({ type: fc.constant("input" as const), ...slice }),
  partial: fc.record({ type: fc.constant("partial" as const), ...slice }),
  reset: fc.record({ type: fc.constant("reset" as const) }),
  stop: fc.record({ type: fc.constant("stop" as const) }),
  "shard-request": fc.record({ type: fc.constant("shard-request" as const), sequence: u32 }),
  "shard-offer": fc.record({ type: fc.constant("shard-offer" as const), sha256: sha256Hex, sizeBytes: shardSize }),
  "shard-accept": fc.record({ type: fc.constant("shard-accept" as const), sha256: sha256Hex, cached: fc.boolean() }),
  "shard-chunk": fc.record({
    type: fc.constant("shard-chunk" as const),
    sha256: sha256Hex,
    offset: fc.integer({ min: 0, max: CONTROL_LIMITS.maxShardBytes }),
    data: fc.uint8Array({ minLength: 1, maxLength: 4096 }),
  }),
  "shard-end": fc.record({ type: fc.constant("shard-end" as const), sha256: sha256Hex, sizeBytes: shardSize }),
  "shard-stored": fc.record({ type: fc.constant("shard-stored" as const), sha256: sha256Hex }),
  "profile-request": fc.record({ type: fc.constant("profile-request" as const), requestId: u32 }),
  profile: fc.record({ type: fc.constant("profile" as const), requestId: u32, profile: measuredProfile }),
  prepare: fc.record({
    type: fc.constant("prepare" as const),
    sequence: u32,
    groups: fc.oneof(phaseGroups, fc.array(phaseGroups, { minLength: 1, maxLength: 6 })),
    ffnBlockSize: fc.integer({ min: 1, max: CONTROL_LIMITS.maxFfnBlockSize }),
  }),
  "prepare-ok": fc.record({ type: fc.constant("prepare-ok" as const), sequence: u32 }),
  activate: fc.record({ type: fc.constant("activate" as const), sequence: u32, position: u32 }),
  "activate-ok": fc.record({ type: fc.constant("activate-ok" as const), sequence: u32 }),
} satisfies { [T in ControlMessageType]: fc.Arbitrary<Extract<ControlMessage, { type: T }>> };

export const anyMessage: fc.Arbitrary<ControlMessage> = fc.oneof(...Object.values(MESSAGE_ARBITRARIES));

/** A valid example of each type, for tests that need one fixed message. */
export const EXAMPLE_INPUT: ControlMessage = {
  type: "input",
  position: 7,
  nTokens: 1,
  layer: 3,
  phase: "ffn",
  data: new Uint8Array(2 * Q8_0_BLOCK_BYTES).fill(5),
};

/** True when `body` decodes to `message` and re-encodes to the same bytes. */
export function assertRoundTrip(message: ControlMessage, body: Uint8Array): void {
  const decoded = decodeControlMessage(body);
  assert.deepEqual(normalize(decoded), normalize(message));
  assert.ok(Buffer.from(encodeControlMessage(decoded)).equals(Buffer.from(body)), "re-encoding gives the same bytes");
  assert.deepEqual(normalize(decodeBody(body)), normalize(message));
}

// ---- a tiny msgpack writer for bodies msgpackr would not produce ----

export const mp = {
  str(text: string): Buffer {
    const utf8 = Buffer.from(text, "utf8");
    if (utf8.length < 32) return Buffer.concat([Buffer.from([0xa0 | utf8.length]), utf8]);
    const header = Buffer.alloc(5);
    header[0] = 0xdb;
    header.writeUInt32BE(utf8.length, 1);
    return Buffer.concat([header, utf8]);
  },
  /** A map from raw entries, so `__proto__` can be an own key and keys need not be strings. */
  map(entries: readonly (readonly [Buffer, Buffer])[]): Buffer {
    const header = Buffer.alloc(5);
    header[0] = 0xdf;
    header.writeUInt32BE(entries.length, 1);
    return Buffer.concat([header, ...entries.flatMap(([k, v]) => [k, v])]);
  },
  array(items: readonly Buffer[]): Buffer {
    const header = Buffer.alloc(5);
    header[0] = 0xdd;
    header.writeUInt32BE(items.length, 1);
    return Buffer.concat([header, ...items]);
  },
  value(value: unknown): Buffer {
    return encodeBody(value);
  },
  ext(type: number, data: Uint8Array): Buffer {
    const fixed: Record<number, number> = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 };
    const code = fixed[data.length];
    if (code !== undefined) return Buffer.concat([Buffer.from([code, type & 0xff]), data]);
    const header = Buffer.alloc(6);
    header[0] = 0xc9;
    header.writeUInt32BE(data.length, 1);
    header[5] = type & 0xff;
    return Buffer.concat([header, data]);
  },
  /** A map of string keys to values msgpackr encodes, with extra raw entries appended. */
  object(value: Record<string, unknown>, extra: readonly (readonly [Buffer, Buffer])[] = []): Buffer {
    return mp.map([...Object.entries(value).map(([k, v]) => [mp.str(k), mp.value(v)] as const), ...extra]);
  },
};
