/**
 * One control-plane TCP connection (docs/cluster.md, "Control plane"): the handshake from either
 * side, then MACed frames of validated messages, heartbeats, deadlines and close/destroy. It
 * knows peers and bytes only; the join/plan state machine belongs to cluster/, which can use
 * `expectMessage` (controlMessages.ts) for its order checks.
 *
 * Timing guarantees, all on the injected Clock:
 * - the whole handshake completes within `handshakeTimeoutMs` (5 s) of accept/connect, else the
 *   socket is destroyed and the promise rejects with a DeadlineExceededError (C4, C7);
 * - after it, a heartbeat goes out every `heartbeatIntervalMs` (500 ms) from a timer on the event
 *   loop. A heartbeat is late if the loop is blocked, so heavy compute must stay off the event
 *   loop (worker_threads or the native thread pool), or the peer will count this node lost;
 * - the peer is lost when nothing at all arrives for `missedHeartbeatsBeforeLost` (3) intervals:
 *   any byte counts, because a heartbeat can be queued behind a large frame on the same stream.
 *   The connection is destroyed, a 'peer-lost' event carries a PeerLostError, then 'close';
 * - it is closed when no whole frame arrives for `idleTimeoutMs` (10 s), which also ends a
 *   frame truncated mid-body (C2);
 * - a graceful `close()` sends stop, ends the stream and destroys the socket if the peer has not
 *   closed its side within `closeTimeoutMs` (1 s).
 * While the consumer lets more than `maxQueuedBytes` of messages pile up, reading pauses (TCP
 * flow control pushes back on the peer) and the liveness deadlines are suspended, since the
 * silence is ours.
 *
 * Nothing from the peer is acted on before the handshake verifies: the worker accepts exactly
 * one frame (auth) before it, the coordinator two (hello, auth-ok), each capped at
 * `maxHandshakeFrameBytes`. Every failure closes the connection with one reason, logged once
 * (NODE_DEBUG=halo:net) and published on the `halo:net:control-closed` diagnostics channel.
 */
import { randomBytes } from "node:crypto";
import { channel } from "node:diagnostics_channel";
import { EventEmitter } from "node:events";
import { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { debuglog } from "node:util";
import {
  AuthError,
  ConnectionClosedError,
  DeadlineExceededError,
  HaloError,
  PeerLostError,
  PeerRejectedError,
  ProtocolVersionError,
  UnexpectedMessageError,
  UsageError,
  describeError,
  systemClock,
} from "../base/index.js";
import type { Clock, TimerHandle } from "../base/index.js";
import {
  DEFAULT_MAX_FRAME_BYTES,
  DEFAULT_MAX_HANDSHAKE_FRAME_BYTES,
  FrameAuthenticator,
  FrameDecoder,
  MIN_CLUSTER_KEY_BYTES,
  NONCE_BYTES,
  coordinatorAuthMac,
  deriveSessionKey,
  encodeFrame,
  macEquals,
  workerAuthMac,
} from "./controlFrames.js";
import {
  CONTROL_LIMITS,
  CONTROL_PROTOCOL_VERSION,
  HANDSHAKE_MESSAGE_TYPES,
  MESSAGE_SENDERS,
  decodeControlMessage,
  encodeControlMessage,
  expectMessage,
} from "./controlMessages.js";
import type { ControlMessage } from "./controlMessages.js";

const debug = debuglog("halo:net");

/** Diagnostics channel with one `ControlClosedEvent` per connection that ends (handshake failures included). */
export const CONTROL_CLOSED_CHANNEL = "halo:net:control-closed";
const closedChannel = channel(CONTROL_CLOSED_CHANNEL);

export type ControlRole = "worker" | "coordinator";

/**
 * Why a connection ended:
 * - `local-close`: `close()`; `peer-stop`: the peer sent stop; `destroyed`: `destroy()`;
 * - `handshake-failed`: auth, version, deadline or a bad frame before the handshake finished;
 * - `protocol-error`: a bad frame, MAC or message after it (the peer is told why);
 * - `peer-lost`: missed heartbeats; `idle-timeout`: no whole frame within the idle deadline;
 * - `socket-closed`: the peer ended or reset the stream without stop, or the socket failed.
 */
export type ControlCloseReason =
  | "local-close"
  | "peer-stop"
  | "destroyed"
  | "handshake-failed"
  | "protocol-error"
  | "peer-lost"
  | "idle-timeout"
  | "socket-closed";

export interface ControlCloseInfo {
  readonly reason: ControlCloseReason;
  /** Undefined for a graceful end (local-close, peer-stop, destroy() without an error). */
  readonly error: HaloError | undefined;
}

/** Published on CONTROL_CLOSED_CHANNEL. */
export interface ControlClosedEvent extends ControlCloseInfo {
  readonly role: ControlRole;
  readonly remoteAddress: string | undefined;
}

export interface ControlConnectionEvents {
  /** The peer went silent; the connection is already being destroyed, and 'close' follows. */
  "peer-lost": [error: PeerLostError];
  /** The socket has closed; emitted once. */
  close: [info: ControlCloseInfo];
}

export interface ControlConnectionOptions {
  /** The shared cluster secret (`--cluster-key`), at least 16 bytes. */
  clusterKey: Uint8Array;
  /** Time source for every deadline and timer. Defaults to `systemClock`. */
  clock?: Clock;
  /** Deadline for the whole handshake, from accept/connect. Defaults to 5000 ms. */
  handshakeTimeoutMs?: number;
  /** Close when no whole frame arrives for this long (C2). Defaults to 10000 ms. */
  idleTimeoutMs?: number;
  /** Heartbeat period; 0 sends none and turns peer-lost detection off (the idle deadline stays). Defaults to 500 ms. */
  heartbeatIntervalMs?: number;
  /** Silent heartbeat intervals after which the peer is lost. Defaults to 3. */
  missedHeartbeatsBeforeLost?: number;
  /** How long a graceful close waits for the peer to close its side before destroying. Defaults to 1000 ms. */
  closeTimeoutMs?: number;
  /** Cap on a frame after the handshake (MAC + body), for both directions. Defaults to 16 MiB. */
  maxFrameBytes?: number;
  /** Cap on a frame before the handshake completes. Defaults to 4096 bytes. */
  maxHandshakeFrameBytes?: number;
  /** Messages waiting for `receive`/iteration above which reading pauses. Defaults to 64 MiB. */
  maxQueuedBytes?: number;
}

export interface ControlConnectionStats {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  heartbeatsSent: number;
  heartbeatsReceived: number;
  /** Clock time of the last byte received. */
  lastReceivedAtMs: number;
  /** `sentAtMs` of the peer's last heartbeat (its clock), or -1. */
  lastPeerHeartbeatSentAtMs: number;
  queuedMessages: number;
  queuedBytes: number;
}

type ResolvedOptions = Required<Omit<ControlConnectionOptions, "clusterKey">> & { clusterKey: Buffer };

function resolveOptions(options: ControlConnectionOptions): ResolvedOptions {
  if (!(options.clusterKey instanceof Uint8Array) || options.clusterKey.byteLength < MIN_CLUSTER_KEY_BYTES) {
    throw new UsageError(`clusterKey must be at least ${MIN_CLUSTER_KEY_BYTES} bytes, got ${options.clusterKey?.byteLength ?? "none"}`);
  }
  const resolved: ResolvedOptions = {
    clusterKey: Buffer.from(options.clusterKey),
    clock: options.clock ?? systemClock,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 5000,
    idleTimeoutMs: options.idleTimeoutMs ?? 10_000,
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 500,
    missedHeartbeatsBeforeLost: options.missedHeartbeatsBeforeLost ?? 3,
    closeTimeoutMs: options.closeTimeoutMs ?? 1000,
    maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    maxHandshakeFrameBytes: options.maxHandshakeFrameBytes ?? DEFAULT_MAX_HANDSHAKE_FRAME_BYTES,
    maxQueuedBytes: options.maxQueuedBytes ?? 64 << 20,
  };
  const positive = ["handshakeTimeoutMs", "idleTimeoutMs", "closeTimeoutMs", "missedHeartbeatsBeforeLost", "maxQueuedBytes"] as const;
  for (const name of positive) {
    if (!(resolved[name] > 0)) throw new UsageError(`${name} must be positive, got ${resolved[name]}`);
  }
  if (!(resolved.heartbeatIntervalMs >= 0)) throw new UsageError(`heartbeatIntervalMs must be 0 or more, got ${resolved.heartbeatIntervalMs}`);
  for (const name of ["maxFrameBytes", "maxHandshakeFrameBytes"] as const) {
    const value = resolved[name];
    if (!Number.isInteger(value) || value < 64 || value > 0xffffffff) throw new UsageError(`${name} must be an integer in [64, 2^32-1], got ${value}`);
  }
  return resolved;
}

type Phase = "await-hello" | "await-auth" | "await-auth-ok" | "open" | "closing" | "closed";

interface Waiter {
  resolve(message: ControlMessage | undefined): void;
  reject(error: unknown): void;
}

export class ControlConnection extends EventEmitter<ControlConnectionEvents> {
  /**
   * Worker side: sends hello, verifies the coordinator's auth, answers auth-ok. Resolves once
   * authenticated; rejects with AuthError, PeerRejectedError, DeadlineExceededError, FrameError,
   * MessageInvalidError, UnexpectedMessageError or ConnectionClosedError, the socket destroyed
   * (after an error notice to the peer where one is due). Bad options throw a UsageError at once.
   */
  static accept(socket: Duplex, options: ControlConnectionOptions): Promise<ControlConnection> {
    return new ControlConnection("worker", socket, resolveOptions(options)).handshake;
  }

  /** Coordinator side: awaits hello, sends auth, verifies auth-ok; otherwise as `accept`, plus ProtocolVersionError. */
  static connect(socket: Duplex, options: ControlConnectionOptions): Promise<ControlConnection> {
    return new ControlConnection("coordinator", socket, resolveOptions(options)).handshake;
  }

  readonly role: ControlRole;
  /** Resolves (never rejects) once the socket has closed. */
  readonly closed: Promise<ControlCloseInfo>;

  private readonly socket: Duplex;
  private readonly options: ResolvedOptions;
  private readonly clock: Clock;
  private readonly decoder: FrameDecoder;
  private readonly handshake: Promise<ControlConnection>;
  private resolveHandshake!: (connection: ControlConnection) => void;
  private rejectHandshake!: (error: HaloError) => void;
  private resolveClosed!: (info: ControlCloseInfo) => void;
  private phase: Phase;
  private authenticator: FrameAuthenticator | undefined;
  private sessionKeyBytes: Buffer | undefined;
  private readonly workerNonce: Buffer | undefined;
  private remoteAddressValue: string | undefined;
  private closeInfoValue: ControlCloseInfo | undefined;
  private socketClosed = false;
  private readPaused = false;
  private lastFrameAtMs: number;
  private readonly timers: { handshake?: TimerHandle; heartbeat?: TimerHandle; liveness?: TimerHandle; close?: TimerHandle } = {};
  private readonly queue: { message: ControlMessage; nBytes: number }[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly statsValue: ControlConnectionStats;

  private constructor(role: ControlRole, socket: Duplex, options: ResolvedOptions) {
    super();
    this.role = role;
    this.socket = socket;
    this.options = options;
    this.clock = options.clock;
    this.remoteAddressValue = socket instanceof Socket ? socket.remoteAddress : undefined;
    this.decoder = new FrameDecoder({ maxFrameBytes: options.maxHandshakeFrameBytes });
    this.handshake = new Promise((resolve, reject) => {
      this.resolveHandshake = resolve;
      this.rejectHandshake = reject;
    });
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    const now = this.clock.now();
    this.lastFrameAtMs = now;
    this.statsValue = {
      framesSent: 0,
      framesReceived: 0,
      bytesSent: 0,
      bytesReceived: 0,
      heartbeatsSent: 0,
      heartbeatsReceived: 0,
      lastReceivedAtMs: now,
      lastPeerHeartbeatSentAtMs: -1,
      queuedMessages: 0,
      queuedBytes: 0,
    };
    this.phase = role === "worker" ? "await-auth" : "await-hello";
    socket.on("error", this.onSocketError);
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onClose);
    if (socket instanceof Socket) socket.setNoDelay(true);
    this.timers.handshake = this.clock.setTimer(options.handshakeTimeoutMs, () =>
      this.shutdown("handshake-failed", new DeadlineExceededError("control handshake", options.handshakeTimeoutMs), "destroy"),
    );
    if (socket.destroyed) {
      this.onClose();
      return;
    }
    if (role === "worker") {
      this.workerNonce = randomBytes(NONCE_BYTES);
      this.writePlain({ type: "hello", protocol: CONTROL_PROTOCOL_VERSION, nonce: this.workerNonce });
    }
  }

  /** The 32-byte session key derived in the handshake (a copy), which keys the UDP data plane too. */
  get sessionKey(): Buffer {
    return Buffer.from(this.sessionKeyBytes!);
  }

  /** The peer's address (known once connected; kept after close). */
  get remoteAddress(): string | undefined {
    if (this.remoteAddressValue === undefined && this.socket instanceof Socket) this.remoteAddressValue = this.socket.remoteAddress;
    return this.remoteAddressValue;
  }

  /** "open" until close/destroy/failure starts, "closing" until the socket has closed, then "closed". */
  get state(): "open" | "closing" | "closed" {
    return this.phase === "open" ? "open" : this.phase === "closed" ? "closed" : "closing";
  }

  /** Why it ended, once it has. */
  get closeInfo(): ControlCloseInfo | undefined {
    return this.closeInfoValue;
  }

  get stats(): Readonly<ControlConnectionStats> {
    return { ...this.statsValue };
  }

  /**
   * Validates and sends one message (MessageInvalidError for a bad one, UsageError for a type this
   * role may not send, ConnectionClosedError once closing). Returns false when the socket's
   * buffer is full, as `socket.write` does; then await `drained()` before sending more.
   */
  send(message: ControlMessage): boolean {
    if (this.phase !== "open") throw new ConnectionClosedError(`cannot send '${message.type}': the control connection is ${this.state}`);
    const sender = MESSAGE_SENDERS[message.type];
    if ((HANDSHAKE_MESSAGE_TYPES as readonly string[]).includes(message.type)) throw new UsageError(`'${message.type}' belongs to the handshake`);
    if (message.type === "stop") throw new UsageError("send 'stop' with close()");
    if (message.type === "heartbeat") throw new UsageError("heartbeats are sent by the connection's timer");
    if (sender !== "both" && sender !== this.role) throw new UsageError(`a ${this.role} does not send '${message.type}'`);
    return this.writeSealed(message);
  }

  /** Resolves once the socket's write buffer has drained (at once when it has), or the connection is ending. */
  drained(): Promise<void> {
    if (this.ending || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off("drain", done);
        this.off("close", done);
        resolve();
      };
      this.socket.on("drain", done);
      this.on("close", done);
    });
  }

  /**
   * The next message (heartbeats and stop excluded). Once the connection has ended and the queue
   * is empty, rejects with the close error (a PeerLostError, FrameMacError, …), or with a
   * ConnectionClosedError after a graceful end. Rejects with a DeadlineExceededError when
   * `deadlineMs` (clock time) passes first, or with the signal's reason when it aborts.
   */
  async receive(options: { deadlineMs?: number; signal?: AbortSignal } = {}): Promise<ControlMessage> {
    const message = await this.pull(options.deadlineMs, options.signal);
    if (message !== undefined) return message;
    throw new ConnectionClosedError(`control connection closed (${this.closeInfoValue!.reason})`);
  }

  /** Iterates the messages (heartbeats and stop excluded); ends after a graceful close, throws the close error otherwise. */
  async *[Symbol.asyncIterator](): AsyncGenerator<ControlMessage, void, undefined> {
    for (;;) {
      const message = await this.pull(undefined, undefined);
      if (message === undefined) return;
      yield message;
    }
  }

  /** Sends stop, ends the stream, and resolves once the socket has closed (destroyed after `closeTimeoutMs`). */
  close(): Promise<ControlCloseInfo> {
    if (this.phase === "open") {
      const stop = this.authenticator!.seal(encodeControlMessage({ type: "stop" }), this.options.maxFrameBytes);
      this.countSent(stop.byteLength);
      this.shutdown("local-close", undefined, "end", stop);
    } else {
      this.shutdown("local-close", undefined, "destroy");
    }
    return this.closed;
  }

  /** Destroys the socket at once; `error` becomes the close error. */
  destroy(error?: HaloError): void {
    this.shutdown("destroyed", error, "destroy");
  }

  // ---- receiving ----

  /** True once close, destroy or a failure has started. */
  private get ending(): boolean {
    return this.closeInfoValue !== undefined;
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.phase === "closing" || this.phase === "closed") return;
    this.statsValue.bytesReceived += chunk.byteLength;
    this.statsValue.lastReceivedAtMs = this.clock.now();
    this.decoder.push(chunk);
    try {
      while (!this.ending) {
        const frame = this.decoder.next();
        if (frame === undefined) break;
        this.statsValue.framesReceived++;
        this.onFrame(frame);
      }
    } catch (error) {
      this.fail(error);
    }
  };

  private onFrame(frame: Uint8Array): void {
    if (this.phase !== "open") return this.onHandshakeMessage(decodeControlMessage(frame));
    const message = decodeControlMessage(this.authenticator!.open(frame));
    this.lastFrameAtMs = this.clock.now();
    const where = `${this.role} after the handshake`;
    const sender = MESSAGE_SENDERS[message.type];
    if ((HANDSHAKE_MESSAGE_TYPES as readonly string[]).includes(message.type) || sender === this.role) {
      throw new UnexpectedMessageError(where, allowedFrom(this.role === "worker" ? "coordinator" : "worker"), message.type);
    }
    switch (message.type) {
      case "heartbeat":
        this.statsValue.heartbeatsReceived++;
        this.statsValue.lastPeerHeartbeatSentAtMs = message.sentAtMs;
        return;
      case "stop":
        return this.shutdown("peer-stop", undefined, "end");
      default:
        return this.enqueue(message, frame.byteLength);
    }
  }

  private onHandshakeMessage(message: ControlMessage): void {
    if (message.type === "error") throw new PeerRejectedError(message.code, message.message);
    const key = this.options.clusterKey;
    switch (this.phase) {
      case "await-auth": {
        expectMessage(message, ["auth"], "worker awaiting auth");
        if (!macEquals(coordinatorAuthMac(key, this.workerNonce!, message.nonce), message.mac)) {
          throw new AuthError("the coordinator's auth MAC does not match: the cluster keys differ, or the response is a replay");
        }
        this.writePlain({ type: "auth-ok", mac: workerAuthMac(key, this.workerNonce!, message.nonce) });
        return this.open(deriveSessionKey(key, this.workerNonce!, message.nonce));
      }
      case "await-hello": {
        expectMessage(message, ["hello"], "coordinator awaiting hello");
        if (message.protocol !== CONTROL_PROTOCOL_VERSION) throw new ProtocolVersionError(CONTROL_PROTOCOL_VERSION, message.protocol);
        const coordinatorNonce = randomBytes(NONCE_BYTES);
        this.pendingNonces = { worker: Buffer.from(message.nonce), coordinator: coordinatorNonce };
        this.phase = "await-auth-ok";
        this.writePlain({ type: "auth", nonce: coordinatorNonce, mac: coordinatorAuthMac(key, message.nonce, coordinatorNonce) });
        return;
      }
      case "await-auth-ok": {
        expectMessage(message, ["auth-ok"], "coordinator awaiting auth-ok");
        const { worker, coordinator } = this.pendingNonces!;
        if (!macEquals(workerAuthMac(key, worker, coordinator), message.mac)) {
          throw new AuthError("the worker's auth-ok MAC does not match: the cluster keys differ");
        }
        return this.open(deriveSessionKey(key, worker, coordinator));
      }
      default:
        throw new UnexpectedMessageError(`${this.role} in state ${this.phase}`, [], message.type);
    }
  }

  private pendingNonces: { worker: Buffer; coordinator: Buffer } | undefined;

  private open(sessionKey: Buffer): void {
    this.sessionKeyBytes = sessionKey;
    this.authenticator = new FrameAuthenticator(sessionKey, this.role);
    this.decoder.maxFrameBytes = this.options.maxFrameBytes;
    this.pendingNonces = undefined;
    void this.remoteAddress; // remember it while the socket is connected
    this.phase = "open";
    this.timers.handshake?.cancel();
    this.timers.handshake = undefined;
    this.lastFrameAtMs = this.clock.now();
    this.statsValue.lastReceivedAtMs = this.lastFrameAtMs;
    this.armHeartbeat();
    this.armLiveness();
    this.resolveHandshake(this);
  }

  private enqueue(message: ControlMessage, nBytes: number): void {
    const waiter = this.waiters.shift();
    if (waiter) return waiter.resolve(message);
    this.queue.push({ message, nBytes });
    this.statsValue.queuedMessages++;
    this.statsValue.queuedBytes += nBytes;
    if (!this.readPaused && this.statsValue.queuedBytes > this.options.maxQueuedBytes) {
      this.readPaused = true;
      this.socket.pause();
    }
  }

  private pull(deadlineMs: number | undefined, signal: AbortSignal | undefined): Promise<ControlMessage | undefined> {
    const entry = this.queue.shift();
    if (entry) {
      this.statsValue.queuedMessages--;
      this.statsValue.queuedBytes -= entry.nBytes;
      if (this.readPaused && this.statsValue.queuedBytes <= this.options.maxQueuedBytes / 2) {
        this.readPaused = false;
        this.statsValue.lastReceivedAtMs = this.lastFrameAtMs = this.clock.now();
        this.socket.resume();
      }
      return Promise.resolve(entry.message);
    }
    if (this.closeInfoValue) {
      return this.closeInfoValue.error ? Promise.reject(this.closeInfoValue.error) : Promise.resolve(undefined);
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      let timer: TimerHandle | undefined;
      const cleanup = (): void => {
        timer?.cancel();
        signal?.removeEventListener("abort", onAbort);
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
      };
      const waiter: Waiter = {
        resolve: (message) => (cleanup(), resolve(message)),
        reject: (error) => (cleanup(), reject(error)),
      };
      const onAbort = (): void => waiter.reject(signal!.reason);
      if (deadlineMs !== undefined) {
        const limitMs = Math.max(0, deadlineMs - this.clock.now());
        timer = this.clock.setTimer(limitMs, () => waiter.reject(new DeadlineExceededError("control receive", limitMs)));
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  // ---- sending ----

  private writePlain(message: ControlMessage): void {
    const frame = encodeFrame(encodeControlMessage(message), this.options.maxHandshakeFrameBytes);
    this.countSent(frame.byteLength);
    this.socket.write(frame);
  }

  private writeSealed(message: ControlMessage): boolean {
    const frame = this.authenticator!.seal(encodeControlMessage(message), this.options.maxFrameBytes);
    this.countSent(frame.byteLength);
    return this.socket.write(frame);
  }

  private countSent(nBytes: number): void {
    this.statsValue.framesSent++;
    this.statsValue.bytesSent += nBytes;
  }

  // ---- timers ----

  private armHeartbeat(): void {
    const intervalMs = this.options.heartbeatIntervalMs;
    if (intervalMs <= 0) return;
    this.timers.heartbeat = this.clock.setTimer(intervalMs, () => {
      this.timers.heartbeat = undefined;
      if (this.phase !== "open") return;
      this.writeSealed({ type: "heartbeat", sentAtMs: Math.max(0, this.clock.now()) });
      this.statsValue.heartbeatsSent++;
      this.armHeartbeat();
    });
  }

  private get lostAfterMs(): number {
    return this.options.heartbeatIntervalMs > 0 ? this.options.heartbeatIntervalMs * this.options.missedHeartbeatsBeforeLost : Infinity;
  }

  /** One timer for both liveness deadlines, re-armed lazily: receiving only moves timestamps. */
  private armLiveness(): void {
    const dueMs = Math.min(this.lastFrameAtMs + this.options.idleTimeoutMs, this.statsValue.lastReceivedAtMs + this.lostAfterMs);
    this.timers.liveness = this.clock.setTimer(dueMs - this.clock.now(), () => this.checkLiveness());
  }

  private checkLiveness(): void {
    this.timers.liveness = undefined;
    if (this.phase !== "open") return;
    const now = this.clock.now();
    if (this.readPaused) {
      this.lastFrameAtMs = this.statsValue.lastReceivedAtMs = now;
    } else if (now - this.statsValue.lastReceivedAtMs >= this.lostAfterMs) {
      const error = new PeerLostError(now - this.statsValue.lastReceivedAtMs, this.options.missedHeartbeatsBeforeLost, this.options.heartbeatIntervalMs);
      this.shutdown("peer-lost", error, "destroy");
      this.emit("peer-lost", error);
      return;
    } else if (now - this.lastFrameAtMs >= this.options.idleTimeoutMs) {
      return this.shutdown("idle-timeout", new DeadlineExceededError("the next control frame", this.options.idleTimeoutMs), "destroy");
    }
    this.armLiveness();
  }

  // ---- ending ----

  /** A reject while reading: the peer is told why (unless it told us), then the stream ends. */
  private fail(error: unknown): void {
    const haloError = error instanceof HaloError ? error : new ConnectionClosedError(`control connection failed: ${describeError(error)}`, { cause: error });
    const reason: ControlCloseReason = this.phase === "open" ? "protocol-error" : "handshake-failed";
    if (haloError instanceof PeerRejectedError) return this.shutdown(reason, haloError, "destroy");
    const notice: ControlMessage = {
      type: "error",
      code: haloError.code,
      message: haloError.message.slice(0, CONTROL_LIMITS.maxErrorMessageChars),
    };
    const frame =
      this.phase === "open"
        ? this.authenticator!.seal(encodeControlMessage(notice), this.options.maxFrameBytes)
        : encodeFrame(encodeControlMessage(notice), this.options.maxHandshakeFrameBytes);
    this.countSent(frame.byteLength);
    this.shutdown(reason, haloError, "end", frame);
  }

  private shutdown(reason: ControlCloseReason, error: HaloError | undefined, mode: "end" | "destroy", finalFrame?: Buffer): void {
    if (this.closeInfoValue) return;
    this.closeInfoValue = { reason, error };
    const handshaking = this.phase !== "open";
    this.phase = "closing";
    for (const name of ["handshake", "heartbeat", "liveness"] as const) {
      this.timers[name]?.cancel();
      this.timers[name] = undefined;
    }
    if (handshaking) this.rejectHandshake(error ?? new ConnectionClosedError("control connection closed during the handshake"));
    for (const waiter of [...this.waiters]) {
      if (error) waiter.reject(error);
      else waiter.resolve(undefined);
    }
    if (this.socketClosed) return this.finish();
    if (mode === "end") {
      if (this.readPaused) this.socket.resume();
      this.socket.end(finalFrame);
      this.timers.close = this.clock.setTimer(this.options.closeTimeoutMs, () => this.socket.destroy());
    } else {
      this.socket.destroy();
    }
  }

  private finish(): void {
    if (this.phase === "closed") return;
    this.phase = "closed";
    this.timers.close?.cancel();
    this.timers.close = undefined;
    const info = this.closeInfoValue!;
    debug("control %s %s closed: %s%s", this.role, this.remoteAddress ?? "-", info.reason, info.error ? ` (${info.error.code}: ${info.error.message})` : "");
    if (closedChannel.hasSubscribers) {
      const event: ControlClosedEvent = { ...info, role: this.role, remoteAddress: this.remoteAddress };
      closedChannel.publish(event);
    }
    this.resolveClosed(info);
    this.emit("close", info);
  }

  private readonly onEnd = (): void => {
    if (this.phase === "closing" || this.phase === "closed") return;
    this.shutdown("socket-closed", new ConnectionClosedError("the peer ended the control connection without 'stop'"), "destroy");
  };

  private readonly onSocketError = (error: Error): void => {
    const code = (error as NodeJS.ErrnoException).code;
    this.shutdown("socket-closed", new ConnectionClosedError(`control socket failed: ${code ?? error.message}`, { cause: error }), "destroy");
  };

  private readonly onClose = (): void => {
    this.socketClosed = true;
    this.shutdown("socket-closed", new ConnectionClosedError("the control socket closed"), "destroy");
    this.finish();
  };
}

function allowedFrom(sender: ControlRole): string[] {
  return Object.entries(MESSAGE_SENDERS)
    .filter(([type, from]) => (from === sender || from === "both") && !(HANDSHAKE_MESSAGE_TYPES as readonly string[]).includes(type))
    .map(([type]) => type);
}
