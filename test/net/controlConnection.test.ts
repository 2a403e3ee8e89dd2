/**
 * ControlConnection over real loopback TCP (127.0.0.1, ephemeral ports), with a FakeClock for
 * every deadline: the handshake, C1 (length caps), C2 (truncated frame then silence), C4 (wrong
 * key, silence, replay, late response, nothing before auth), C5 (version), MAC rejects after
 * the handshake, direction checks, heartbeats and peer loss, backpressure, close and destroy.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { test as nodeTest } from "node:test";
import {
  AuthError,
  ConnectionClosedError,
  DeadlineExceededError,
  FakeClock,
  FrameError,
  FrameMacError,
  HaloError,
  MessageInvalidError,
  PeerLostError,
  PeerRejectedError,
  ProtocolVersionError,
  UnexpectedMessageError,
  UsageError,
} from "../../src/base/index.js";
import { ControlConnection } from "../../src/net/controlConnection.js";
import type { ControlConnectionOptions } from "../../src/net/controlConnection.js";
import { FrameAuthenticator, coordinatorAuthMac, deriveSessionKey, encodeBody, encodeFrame } from "../../src/net/controlFrames.js";
import type { ControlMessage, JoinMessage } from "../../src/net/controlMessages.js";
import { CLUSTER_KEY, EXAMPLE_INPUT, OTHER_KEY, RawPeer, normalize, settle, tcpPair, waitFor } from "./controlHelpers.js";

type ErrorClass = new (...args: never[]) => HaloError;

/** Every test here waits on sockets; a broken build fails by timeout instead of hanging the run. */
function test(name: string, fn: () => void | Promise<void>): void {
  nodeTest(name, { timeout: 30_000 }, fn);
}

async function rejectsWith(promise: Promise<unknown>, errorClass: ErrorClass, code: string, message: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof errorClass, `expected ${errorClass.name}, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.equal(error.message, message);
    return true;
  });
}

function checkError(error: HaloError | undefined, errorClass: ErrorClass, code: string, message: string): void {
  assert.ok(error instanceof errorClass, `expected ${errorClass.name}, got ${String(error)}`);
  assert.equal(error.code, code);
  assert.equal(error.message, message);
}

/** Tracks whether a promise has settled, without an unhandled rejection. */
function track<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { promise, settled: () => settled };
}

async function workerAndRawCoordinator(options: Partial<ControlConnectionOptions> = {}) {
  const clock = new FakeClock(1000);
  const { client, server } = await tcpPair();
  const accepted = track(ControlConnection.accept(server, { clusterKey: CLUSTER_KEY, clock, ...options }));
  return { clock, accepted, raw: new RawPeer(client) };
}

async function coordinatorAndRawWorker(options: Partial<ControlConnectionOptions> = {}) {
  const clock = new FakeClock(1000);
  const { client, server } = await tcpPair();
  const connected = track(ControlConnection.connect(client, { clusterKey: CLUSTER_KEY, clock, ...options }));
  return { clock, connected, raw: new RawPeer(server) };
}

async function connectedPair(options: Partial<ControlConnectionOptions> = {}) {
  const clock = new FakeClock(1000);
  const { client, server } = await tcpPair();
  const [worker, coordinator] = await Promise.all([
    ControlConnection.accept(server, { clusterKey: CLUSTER_KEY, clock, ...options }),
    ControlConnection.connect(client, { clusterKey: CLUSTER_KEY, clock, ...options }),
  ]);
  return { clock, worker, coordinator };
}

const JOIN: JoinMessage = {
  type: "join",
  sessionId: 0xdeadbeef,
  epoch: 1,
  nodeIndex: 1,
  modelSha256: "0f".repeat(32),
  modelName: "stories260K",
  coordinatorUdpPort: 41000,
};

function header(length: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(length >>> 0, 0);
  return bytes;
}

test("handshake: both sides derive one session key; messages flow both ways; close sends stop and ends both", async () => {
  const { worker, coordinator } = await connectedPair();
  assert.equal(worker.role, "worker");
  assert.equal(coordinator.role, "coordinator");
  assert.equal(worker.sessionKey.length, 32);
  assert.deepEqual(worker.sessionKey, coordinator.sessionKey);
  assert.equal(worker.state, "open");

  coordinator.send(JOIN);
  assert.deepEqual(await worker.receive(), JOIN);
  const joinOk: ControlMessage = {
    type: "join-ok",
    udpPort: 41001,
    profile: { nThreads: 4, memoryBytes: 8 << 30, kernels: "native-avx2", cpuModel: "test", matvecGflops: 12.5 },
  };
  worker.send(joinOk);
  assert.deepEqual(await coordinator.receive(), joinOk);

  for (let position = 0; position < 3; position++) coordinator.send({ ...EXAMPLE_INPUT, position } as ControlMessage);
  const closing = coordinator.close();
  const positions: number[] = [];
  for await (const message of worker) {
    assert.equal(message.type, "input");
    positions.push(message.position);
  }
  assert.deepEqual(positions, [0, 1, 2], "messages sent before stop arrive before the iteration ends");
  assert.deepEqual(await closing, { reason: "local-close", error: undefined });
  assert.deepEqual(await worker.closed, { reason: "peer-stop", error: undefined });
  assert.equal(worker.state, "closed");
  await rejectsWith(worker.receive(), ConnectionClosedError, "HALO_ERR_CONNECTION_CLOSED", "control connection closed (peer-stop)");
  assert.throws(() => worker.send(joinOk), (error: unknown) => error instanceof ConnectionClosedError && error.message === "cannot send 'join-ok': the control connection is closed");
});

test("send validates the message and refuses handshake types, stop, heartbeat and the other role's types", async () => {
  const { worker, coordinator } = await connectedPair();
  const usage = (message: string) => (error: unknown) => error instanceof UsageError && error.message === message;
  assert.throws(() => coordinator.send({ ...JOIN, nodeIndex: 0 }), (error: unknown) => error instanceof MessageInvalidError && error.field === "nodeIndex");
  assert.throws(() => coordinator.send({ ...JOIN, extra: 1 } as unknown as ControlMessage), (error: unknown) => error instanceof MessageInvalidError && error.field === "extra");
  assert.throws(() => coordinator.send({ type: "auth", nonce: new Uint8Array(16), mac: new Uint8Array(32) }), usage("'auth' belongs to the handshake"));
  assert.throws(() => coordinator.send({ type: "stop" }), usage("send 'stop' with close()"));
  assert.throws(() => coordinator.send({ type: "heartbeat", sentAtMs: 1 }), usage("heartbeats are sent by the connection's timer"));
  assert.throws(() => coordinator.send({ type: "plan-ok", sequence: 1 }), usage("a coordinator does not send 'plan-ok'"));
  assert.throws(() => worker.send(JOIN), usage("a worker does not send 'join'"));
  worker.send({ type: "error", code: "HALO_ERR_MODEL_MISMATCH", message: "worker has 0f…, coordinator sent ab…" });
  assert.equal((await coordinator.receive()).type, "error");
  await coordinator.close();
  await worker.closed;
});

test("C4: a wrong cluster key is refused on both sides and nothing is processed", async () => {
  const clock = new FakeClock();
  const { client, server } = await tcpPair();
  const accepted = ControlConnection.accept(server, { clusterKey: CLUSTER_KEY, clock });
  const connected = ControlConnection.connect(client, { clusterKey: OTHER_KEY, clock });
  const authMessage = "the coordinator's auth MAC does not match: the cluster keys differ, or the response is a replay";
  await rejectsWith(accepted, AuthError, "HALO_ERR_AUTH", authMessage);
  await rejectsWith(connected, PeerRejectedError, "HALO_ERR_PEER_REJECTED", `peer refused the connection: HALO_ERR_AUTH: ${authMessage}`);
  await waitFor(() => server.destroyed && client.destroyed, "both sockets closed");
});

test("C4: a worker answering with the wrong key's auth-ok is refused, and told so", async () => {
  const { connected, raw } = await coordinatorAndRawWorker();
  await raw.handshakeAsWorker(OTHER_KEY);
  await rejectsWith(connected.promise, AuthError, "HALO_ERR_AUTH", "the worker's auth-ok MAC does not match: the cluster keys differ");
  raw.authenticator = undefined;
  const notice = await raw.nextMessage();
  assert.deepEqual(notice, { type: "error", code: "HALO_ERR_AUTH", message: "the worker's auth-ok MAC does not match: the cluster keys differ" });
  await raw.closedPromise;
});

test("C4: no response: the worker's handshake deadline fires at exactly 5 s", async () => {
  const { clock, accepted, raw } = await workerAndRawCoordinator();
  assert.equal((await raw.nextMessage()).type, "hello");
  clock.advance(4999);
  await settle();
  assert.equal(accepted.settled(), false);
  clock.advance(1);
  await rejectsWith(accepted.promise, DeadlineExceededError, "HALO_ERR_DEADLINE", "control handshake did not complete within 5000 ms");
  await raw.closedPromise;
  assert.equal(clock.pendingTimers, 0, "no timer left behind");
});

test("C4: no response: the coordinator's deadline fires without hello and without auth-ok", async () => {
  {
    const { clock, connected, raw } = await coordinatorAndRawWorker({ handshakeTimeoutMs: 2000 });
    clock.advance(2000);
    await rejectsWith(connected.promise, DeadlineExceededError, "HALO_ERR_DEADLINE", "control handshake did not complete within 2000 ms");
    await raw.closedPromise;
  }
  {
    const { clock, connected, raw } = await coordinatorAndRawWorker();
    raw.sendPlain({ type: "hello", protocol: 1, nonce: randomBytes(16) });
    assert.equal((await raw.nextMessage()).type, "auth");
    clock.advance(5000);
    await rejectsWith(connected.promise, DeadlineExceededError, "HALO_ERR_DEADLINE", "control handshake did not complete within 5000 ms");
    await raw.closedPromise;
  }
});

test("C4: a replayed challenge response (an old auth frame on a new connection) is refused", async () => {
  const first = await workerAndRawCoordinator();
  const { authFrame, sessionKey } = await first.raw.handshakeAsCoordinator(CLUSTER_KEY);
  const worker = await first.accepted.promise;
  assert.deepEqual(worker.sessionKey, sessionKey, "the raw peer's key matches: the helper speaks the protocol");

  const second = await workerAndRawCoordinator();
  assert.equal((await second.raw.nextMessage()).type, "hello");
  second.raw.write(authFrame);
  const message = "the coordinator's auth MAC does not match: the cluster keys differ, or the response is a replay";
  await rejectsWith(second.accepted.promise, AuthError, "HALO_ERR_AUTH", message);
  assert.deepEqual(await second.raw.nextMessage(), { type: "error", code: "HALO_ERR_AUTH", message });
  await second.raw.closedPromise;
  assert.equal(second.raw.frames.length, 0, "no auth-ok");
  worker.destroy();
});

test("C4: a correct response after the deadline is not processed", async () => {
  const { clock, accepted, raw } = await workerAndRawCoordinator();
  const hello = await raw.nextMessage();
  assert.equal(hello.type, "hello");
  clock.advance(5000);
  await rejectsWith(accepted.promise, DeadlineExceededError, "HALO_ERR_DEADLINE", "control handshake did not complete within 5000 ms");
  const coordinatorNonce = randomBytes(16);
  raw.sendPlain({ type: "auth", nonce: coordinatorNonce, mac: coordinatorAuthMac(CLUSTER_KEY, hello.nonce, coordinatorNonce) });
  await raw.closedPromise;
  assert.equal(raw.frames.length, 0, "no auth-ok after the deadline");
});

test("C4: nothing is processed before auth: a join first, a join pipelined before auth, and MAC-shaped bytes are refused", async () => {
  const unexpected = "worker awaiting auth: expected 'auth', got 'join'";
  {
    const { accepted, raw } = await workerAndRawCoordinator();
    await raw.nextMessage();
    raw.sendPlain(JOIN);
    await rejectsWith(accepted.promise, UnexpectedMessageError, "HALO_ERR_MESSAGE_UNEXPECTED", unexpected);
    assert.deepEqual(await raw.nextMessage(), { type: "error", code: "HALO_ERR_MESSAGE_UNEXPECTED", message: unexpected });
    await raw.closedPromise;
  }
  {
    const { accepted, raw } = await workerAndRawCoordinator();
    const hello = await raw.nextMessage();
    assert.equal(hello.type, "hello");
    const coordinatorNonce = randomBytes(16);
    const auth = encodeFrame(encodeBody({ type: "auth", nonce: coordinatorNonce, mac: coordinatorAuthMac(CLUSTER_KEY, hello.nonce, coordinatorNonce) }));
    raw.write(Buffer.concat([encodeFrame(encodeBody(JOIN)), auth]));
    await rejectsWith(accepted.promise, UnexpectedMessageError, "HALO_ERR_MESSAGE_UNEXPECTED", unexpected);
    assert.equal((await raw.nextMessage()).type, "error");
    await raw.closedPromise;
    assert.equal(raw.frames.length, 0, "the auth after the join was never processed: no auth-ok");
  }
  {
    const { accepted, raw } = await workerAndRawCoordinator();
    await raw.nextMessage();
    raw.write(new FrameAuthenticator(Buffer.alloc(32, 1), "coordinator").seal(encodeBody(JOIN)));
    await assert.rejects(accepted.promise, (error: unknown) => error instanceof MessageInvalidError && error.field === "(body)");
    await raw.closedPromise;
  }
});

test("C5: a hello of another protocol version is refused with both versions named", async () => {
  const { connected, raw } = await coordinatorAndRawWorker();
  raw.sendPlain({ type: "hello", protocol: 2, nonce: randomBytes(16) });
  const message = "peer speaks control protocol 2, expected 1; run the same halo version on every node";
  await rejectsWith(connected.promise, ProtocolVersionError, "HALO_ERR_PROTOCOL_VERSION", message);
  assert.deepEqual(await raw.nextMessage(), { type: "error", code: "HALO_ERR_PROTOCOL_VERSION", message });
  await raw.closedPromise;
});

test("C1: before the handshake, length prefixes 0, 2^32-1 and 4097 close the connection with a reason", async () => {
  const cases: [number, string][] = [
    [0, "control frame length prefix is 0"],
    [0xffffffff, "control frame length prefix 4294967295 is over the cap of 4096 bytes"],
    [4097, "control frame length prefix 4097 is over the cap of 4096 bytes"],
  ];
  for (const [length, message] of cases) {
    const { accepted, raw } = await workerAndRawCoordinator();
    await raw.nextMessage();
    raw.write(header(length));
    await rejectsWith(accepted.promise, FrameError, "HALO_ERR_FRAME", message);
    assert.deepEqual(await raw.nextMessage(), { type: "error", code: "HALO_ERR_FRAME", message });
    await raw.closedPromise;
  }
});

test("C1: after the handshake, 2^32-1 and cap+1 close the connection without allocating the declared size", async () => {
  const cases: [number, string][] = [
    [0xffffffff, "control frame length prefix 4294967295 is over the cap of 16777216 bytes"],
    [(16 << 20) + 1, "control frame length prefix 16777217 is over the cap of 16777216 bytes"],
    [0, "control frame length prefix is 0"],
  ];
  for (const [length, message] of cases) {
    const { accepted, raw } = await workerAndRawCoordinator();
    await raw.handshakeAsCoordinator(CLUSTER_KEY);
    const worker = await accepted.promise;
    const before = process.memoryUsage().arrayBuffers;
    raw.write(Buffer.concat([header(length), Buffer.alloc(1000, 0xab)]));
    const info = await worker.closed;
    assert.equal(info.reason, "protocol-error");
    checkError(info.error, FrameError, "HALO_ERR_FRAME", message);
    assert.deepEqual(await raw.nextMessage(), { type: "error", code: "HALO_ERR_FRAME", message }, "the notice is MACed");
    const grownBytes = process.memoryUsage().arrayBuffers - before;
    assert.ok(grownBytes < 4 << 20, `arrayBuffers grew by ${grownBytes} bytes`);
  }
});

test("C2: a frame truncated mid-body before the handshake, then silence: the handshake deadline closes it", async () => {
  const { clock, accepted, raw } = await workerAndRawCoordinator();
  await raw.nextMessage();
  raw.write(Buffer.concat([header(100), Buffer.alloc(10)]));
  await settle();
  clock.advance(4999);
  await settle();
  assert.equal(accepted.settled(), false);
  clock.advance(1);
  await rejectsWith(accepted.promise, DeadlineExceededError, "HALO_ERR_DEADLINE", "control handshake did not complete within 5000 ms");
  await raw.closedPromise;
});

test("C2: a frame truncated mid-body after the handshake, then silence: the idle deadline closes it at 10 s", async () => {
  const { clock, accepted, raw } = await workerAndRawCoordinator({ heartbeatIntervalMs: 0 });
  await raw.handshakeAsCoordinator(CLUSTER_KEY);
  const worker = await accepted.promise;
  raw.write(Buffer.concat([header(1000), Buffer.alloc(10)]));
  await waitFor(() => worker.stats.bytesReceived >= 14, "the partial frame to arrive");
  clock.advance(9999);
  await settle();
  assert.equal(worker.state, "open");
  clock.advance(1);
  const info = await worker.closed;
  assert.equal(info.reason, "idle-timeout");
  checkError(info.error, DeadlineExceededError, "HALO_ERR_DEADLINE", "the next control frame did not complete within 10000 ms");
  await raw.closedPromise;
  assert.equal(clock.pendingTimers, 0, "the slot is freed: no timer left");
});

test("after the handshake, replayed, reordered and forged frames fail their MAC; earlier frames were delivered", async () => {
  const input = (position: number) => ({ ...EXAMPLE_INPUT, position });
  const scenarios: [string, (raw: RawPeer) => void, number, number][] = [
    [
      "replayed",
      (raw) => {
        const frame = raw.sendSealed(input(1));
        raw.write(frame);
      },
      1,
      1,
    ],
    [
      "reordered",
      (raw) => {
        const first = raw.authenticator!.seal(encodeBody(input(1)));
        const second = raw.authenticator!.seal(encodeBody(input(2)));
        raw.write(Buffer.concat([second, first]));
      },
      0,
      0,
    ],
    [
      "forged",
      (raw) => {
        raw.sendSealed(input(1));
        const frame = raw.authenticator!.seal(encodeBody(input(2)));
        frame[frame.length - 1]! ^= 0x01;
        raw.write(frame);
      },
      1,
      1,
    ],
    [
      "under another key",
      (raw) => raw.write(new FrameAuthenticator(randomBytes(32), "coordinator").seal(encodeBody(input(1)))),
      0,
      0,
    ],
  ];
  for (const [what, attack, nDelivered, failedSequence] of scenarios) {
    const { accepted, raw } = await workerAndRawCoordinator();
    await raw.handshakeAsCoordinator(CLUSTER_KEY);
    const worker = await accepted.promise;
    attack(raw);
    const info = await worker.closed;
    assert.equal(info.reason, "protocol-error", what);
    const message = `control frame ${failedSequence} failed its MAC (replayed, reordered, forged or corrupted)`;
    checkError(info.error, FrameMacError, "HALO_ERR_FRAME_MAC", message);
    const delivered: ControlMessage[] = [];
    await assert.rejects(
      (async () => {
        for await (const message of worker) delivered.push(message);
      })(),
      FrameMacError,
    );
    assert.deepEqual(delivered.map(normalize), [input(1)].slice(0, nDelivered).map(normalize), what);
    assert.deepEqual(await raw.nextMessage(), { type: "error", code: "HALO_ERR_FRAME_MAC", message });
  }
});

test("after the handshake, the other role's types, handshake types and invalid messages close the connection", async () => {
  const cases: [unknown, ErrorClass, string, string][] = [
    [
      { ...EXAMPLE_INPUT, type: "partial" },
      UnexpectedMessageError,
      "HALO_ERR_MESSAGE_UNEXPECTED",
      "worker after the handshake: expected 'error' or 'join' or 'plan' or 'heartbeat' or 'input' or 'reset' or 'stop' or 'shard-offer' or 'shard-chunk' or 'shard-end' or 'profile-request' or 'prepare' or 'activate', got 'partial'",
    ],
    [
      { type: "auth", nonce: randomBytes(16), mac: randomBytes(32) },
      UnexpectedMessageError,
      "HALO_ERR_MESSAGE_UNEXPECTED",
      "worker after the handshake: expected 'error' or 'join' or 'plan' or 'heartbeat' or 'input' or 'reset' or 'stop' or 'shard-offer' or 'shard-chunk' or 'shard-end' or 'profile-request' or 'prepare' or 'activate', got 'auth'",
    ],
    [{ ...JOIN, __proto__x: 1 }, MessageInvalidError, "HALO_ERR_MESSAGE_INVALID", "invalid control message: __proto__x: unknown key '__proto__x'"],
  ];
  for (const [value, errorClass, code, message] of cases) {
    const { accepted, raw } = await workerAndRawCoordinator();
    await raw.handshakeAsCoordinator(CLUSTER_KEY);
    const worker = await accepted.promise;
    raw.sendSealed(value);
    const info = await worker.closed;
    assert.equal(info.reason, "protocol-error");
    checkError(info.error, errorClass, code, message);
    assert.equal(worker.stats.queuedMessages, 0, "nothing was delivered");
  }
});

test("heartbeats: neither side is lost while heartbeats flow for 20 s of fake time", async () => {
  const { clock, worker, coordinator } = await connectedPair();
  let lost = 0;
  worker.on("peer-lost", () => lost++);
  coordinator.on("peer-lost", () => lost++);
  for (let step = 1; step <= 80; step++) {
    clock.advance(250);
    const expected = Math.floor(step / 2);
    await waitFor(
      () => worker.stats.heartbeatsReceived >= expected && coordinator.stats.heartbeatsReceived >= expected,
      `heartbeat ${expected}`,
    );
  }
  assert.equal(lost, 0);
  assert.equal(worker.state, "open");
  assert.equal(coordinator.state, "open");
  assert.equal(worker.stats.heartbeatsSent, 40);
  assert.equal(coordinator.stats.heartbeatsReceived, 40);
  assert.equal(worker.stats.lastPeerHeartbeatSentAtMs, 21000);
  await coordinator.close();
  await worker.closed;
});

test("heartbeats: the peer is lost after 3 missed intervals (1.5 s of silence), with a typed event", async () => {
  const { clock, accepted, raw } = await workerAndRawCoordinator();
  await raw.handshakeAsCoordinator(CLUSTER_KEY);
  const worker = await accepted.promise;
  const events: PeerLostError[] = [];
  worker.on("peer-lost", (error) => events.push(error));
  const receiving = track(worker.receive());
  clock.advance(1499);
  await settle();
  assert.equal(worker.state, "open");
  assert.equal(events.length, 0);
  clock.advance(1);
  assert.equal(events.length, 1);
  const message = "peer sent nothing for 1500 ms (3 missed heartbeats at 500 ms)";
  checkError(events[0], PeerLostError, "HALO_ERR_PEER_LOST", message);
  assert.equal(events[0]!.silentMs, 1500);
  await rejectsWith(receiving.promise, PeerLostError, "HALO_ERR_PEER_LOST", message);
  const info = await worker.closed;
  assert.equal(info.reason, "peer-lost");
  await raw.closedPromise;
  // What the worker did send were MACed heartbeats stamped with its clock.
  const heartbeats = [await raw.nextMessage(), await raw.nextMessage()];
  assert.deepEqual(heartbeats, [
    { type: "heartbeat", sentAtMs: 1500 },
    { type: "heartbeat", sentAtMs: 2000 },
  ]);
});

test("heartbeats: bytes of a slow large frame count as life; the idle deadline still ends it at 10 s", async () => {
  const { clock, accepted, raw } = await workerAndRawCoordinator();
  await raw.handshakeAsCoordinator(CLUSTER_KEY);
  const worker = await accepted.promise;
  raw.write(header(100_000));
  for (let elapsedMs = 400; elapsedMs < 10_000; elapsedMs += 400) {
    const received = worker.stats.bytesReceived;
    raw.write(Buffer.from([0]));
    await waitFor(() => worker.stats.bytesReceived > received, "one more byte");
    clock.advance(400);
    assert.equal(worker.state, "open", `open at ${elapsedMs} ms`);
  }
  clock.advance(400);
  const info = await worker.closed;
  assert.equal(info.reason, "idle-timeout");
});

test("backpressure: a consumer that falls behind pauses reading, suspends liveness, and loses nothing", async () => {
  const { clock, worker, coordinator } = await connectedPair({ maxQueuedBytes: 1500 });
  try {
    // 60 × 256 KiB is far more than loopback's socket buffers hold, so reading must pause after
    // the first frames, however the kernel batches the bytes on a busy machine.
    const nMessages = 60;
    const data = new Uint8Array(256 * 1024).fill(7);
    for (let position = 0; position < nMessages; position++) coordinator.send({ ...EXAMPLE_INPUT, position, data } as ControlMessage);
    await waitFor(() => worker.stats.queuedBytes > 1500, "the queue to fill");
    await settle(20);
    assert.ok(worker.stats.queuedMessages < nMessages, `reading paused with ${worker.stats.queuedMessages} queued`);
    for (let step = 1; step <= 20; step++) {
      clock.advance(250);
      const expected = Math.floor(step / 2);
      await waitFor(() => coordinator.stats.heartbeatsReceived >= expected, `worker heartbeat ${expected}`);
    }
    assert.equal(worker.state, "open", "5 s of its own backlog is not the peer's silence");
    const positions: number[] = [];
    while (positions.length < nMessages) {
      const message = await worker.receive();
      assert.equal(message.type, "input");
      positions.push(message.position);
    }
    assert.deepEqual(positions, Array.from({ length: nMessages }, (_, i) => i));
    await coordinator.close();
    await worker.closed;
  } finally {
    // A failed assertion must not leave sockets open: the file would never exit.
    coordinator.destroy();
    worker.destroy();
  }
});

test("destroy ends at once; the peer sees the stream end without stop", async () => {
  const { worker, coordinator } = await connectedPair();
  const reason = new UsageError("shutting down for a test");
  worker.destroy(reason);
  assert.deepEqual(await worker.closed, { reason: "destroyed", error: reason });
  const info = await coordinator.closed;
  assert.equal(info.reason, "socket-closed");
  assert.ok(info.error instanceof ConnectionClosedError);
  assert.equal(info.error.code, "HALO_ERR_CONNECTION_CLOSED");
});

test("receive honours a clock deadline and an abort signal", async () => {
  const { clock, worker, coordinator } = await connectedPair();
  const waiting = track(worker.receive({ deadlineMs: clock.now() + 100 }));
  clock.advance(99);
  await settle();
  assert.equal(waiting.settled(), false);
  clock.advance(1);
  await rejectsWith(waiting.promise, DeadlineExceededError, "HALO_ERR_DEADLINE", "control receive did not complete within 100 ms");
  const controller = new AbortController();
  const aborted = worker.receive({ signal: controller.signal });
  controller.abort(new Error("no longer needed"));
  await assert.rejects(aborted, /no longer needed/);
  coordinator.send(JOIN);
  assert.deepEqual(await worker.receive({ deadlineMs: clock.now() + 100 }), JOIN, "a later message is not lost to the cancelled waits");
  await coordinator.close();
  await worker.closed;
});

test("a frame near the 16 MiB cap goes through intact; one over it is refused by send, which sends nothing", async () => {
  const { worker, coordinator } = await connectedPair();
  const nBlocks = Math.floor(((16 << 20) - 256) / 34);
  const data = randomBytes(nBlocks * 34);
  const big = { ...EXAMPLE_INPUT, nTokens: 1, data } as ControlMessage;
  const flushed = coordinator.send(big);
  if (!flushed) await coordinator.drained();
  const received = await worker.receive();
  assert.equal(received.type, "input");
  assert.ok(Buffer.from(received.data).equals(data));
  const tooBig = { ...EXAMPLE_INPUT, data: new Uint8Array(Math.floor((16 << 20) / 34) * 34) } as ControlMessage;
  const framesBefore = coordinator.stats.framesSent;
  assert.throws(
    () => coordinator.send(tooBig),
    (error: unknown) =>
      error instanceof FrameError && /^control frame of \d+ bytes is over the cap of 16777216 bytes; split the payload$/.test(error.message),
  );
  assert.equal(coordinator.stats.framesSent, framesBefore);
  assert.equal(coordinator.state, "open", "a refused send leaves the connection usable");
  await coordinator.close();
  await worker.closed;
});

test("connect to a closed port rejects with the socket error", async () => {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  const socket = net.connect(port, "127.0.0.1");
  await rejectsWith(ControlConnection.connect(socket, { clusterKey: CLUSTER_KEY }), ConnectionClosedError, "HALO_ERR_CONNECTION_CLOSED", "control socket failed: ECONNREFUSED");
});

test("options are checked: a short cluster key is a usage error", () => {
  const { client } = { client: null as never };
  assert.throws(
    () => ControlConnection.accept(client, { clusterKey: Buffer.alloc(15) }),
    (error: unknown) => error instanceof UsageError && error.message === "clusterKey must be at least 16 bytes, got 15",
  );
  assert.throws(
    () => ControlConnection.connect(client, { clusterKey: CLUSTER_KEY, maxFrameBytes: 2 ** 32 }),
    (error: unknown) => error instanceof UsageError && error.message === "maxFrameBytes must be an integer in [64, 2^32-1], got 4294967296",
  );
  assert.equal(deriveSessionKey(CLUSTER_KEY, Buffer.alloc(16), Buffer.alloc(16)).length, 32);
});
