/**
 * The coordinator's view of one worker: how it is reached and joined, the emulated links in
 * front of it, its statistics and state, and the plan message that gives it its groups.
 */
import { connect as tcpConnect } from "node:net";
import { homedir } from "node:os";
import { HaloError, describeError, type Clock, type TimerHandle } from "../base/index.js";
import {
  ControlConnection, LinkEmulator, LinkStats, StreamLinkEmulator,
  type ControlMessage, type LinkProfile, type LinkStatsSnapshot, type MeasuredProfile, type PhaseGroups, type WireFormat,
} from "../net/index.js";
import { defaultShardCacheDir, prepareShard } from "../loader/index.js";
import type { GgufFile, ModelConfig } from "../model/index.js";
import { groupsOfDevice, type GroupLayout, type Placement } from "../partition/index.js";
import { sendShard } from "./shardTransfer.js";

export interface WorkerAddress {
  host: string;
  port: number;
}

/** active: computes its groups; lost: dialled again every rejoinIntervalMs; ready: joined again, gets its plan at the next token. */
export type WorkerLinkState = "active" | "lost" | "ready";

/** One worker link as `ClusterCoordinator.linkStats()` reports it. */
export interface WorkerLinkReport extends LinkStatsSnapshot {
  worker: number;
  address: string;
  state: WorkerLinkState;
  /** Retransmissions the stream link model charged to reliable messages sent to this worker (emulated links only). */
  emulatedRetransmissions: number;
}

export interface WorkerLink {
  index: number;
  address: WorkerAddress;
  connection: ControlConnection;
  /** The connection's session key, kept: the connection hands out a copy per call. */
  sessionKey: Buffer;
  udpPort: number;
  state: WorkerLinkState;
  /** Datagrams to this worker. */
  emulator: LinkEmulator;
  /** Reliable messages to this worker (strict mode, prefill). */
  stream: StreamLinkEmulator;
  stats: LinkStats;
  /** Retransmissions of the stream models of earlier connections of this link. */
  retransmissionsBefore: number;
  /** Pending reliable partials, by step key. */
  waiting: Map<string, (data: Uint8Array | undefined) => void>;
  rejoinTimer: TimerHandle | undefined;
  /** What the worker last measured of itself (plan-ok, profile); undefined from a worker that predates profiles. */
  profile: MeasuredProfile | undefined;
  /** The worker has no model file of its own and takes its weights as shards: it cannot load groups live. */
  receivesShards: boolean;
  /** The profile-request awaiting its answer; `done` ends the wait, answered or not. */
  profileRequest: { requestId: number; done: () => void } | undefined;
}

/** What a join says about the session and the model. */
export interface JoinContext {
  clusterKey: Uint8Array;
  modelSha256: string;
  modelName: string;
  clock: Clock;
  sessionId: number;
  epoch: number;
  udpPort: number;
}

/**
 * Heartbeats of cluster control connections: every second, lost after 3 silent intervals. On a
 * lossy link one TCP segment can wait out a chain of retransmission timeouts (0.2 + 0.4 + 0.8 s)
 * with nothing delivered meanwhile, so the control plane's 500 ms default would declare a
 * healthy worker lost (seen in the testbed at 10% loss); a killed process is still noticed at
 * once, by its connection closing.
 */
export const CLUSTER_LIVENESS = { heartbeatIntervalMs: 1000, missedHeartbeatsBeforeLost: 3 } as const;

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

/** Failures a lossy link can cause and another attempt can cure; a refusal (wrong key, other model) is final. */
const TRANSIENT_JOIN_ERRORS: ReadonlySet<string> = new Set(["HALO_ERR_DEADLINE", "HALO_ERR_CONNECTION_CLOSED", "HALO_ERR_PEER_LOST"]);

/** `joinWorker`, tried up to `attempts` times while it fails the way a lossy link makes it fail (lost SYNs, a stalled handshake). */
export async function joinWorkerWithRetries(address: WorkerAddress, index: number, ctx: JoinContext, attempts = 3): Promise<{ connection: ControlConnection; udpPort: number }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await joinWorker(address, index, ctx);
    } catch (error) {
      if (attempt >= attempts || !(error instanceof HaloError) || !TRANSIENT_JOIN_ERRORS.has(error.code)) throw error;
    }
  }
}

/** TCP connect, authenticate, join; the plan is the caller's. */
export async function joinWorker(address: WorkerAddress, index: number, ctx: JoinContext): Promise<{ connection: ControlConnection; udpPort: number }> {
  const { clock } = ctx;
  const socket = tcpConnect({ host: address.host, port: address.port });
  socket.setNoDelay(true);
  socket.on("error", () => {
    // Reported through the connection's close event or the handshake's rejection.
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", (error) => reject(new HaloError("HALO_ERR_CONNECTION_CLOSED", `cannot reach worker ${address.host}:${address.port}: ${describeError(error)}`)));
  });
  const connection = await ControlConnection.connect(socket, { clusterKey: ctx.clusterKey, clock, ...CLUSTER_LIVENESS });
  try {
    connection.send({ type: "join", sessionId: ctx.sessionId, epoch: ctx.epoch, nodeIndex: index, modelSha256: ctx.modelSha256, modelName: ctx.modelName.slice(0, 256), coordinatorUdpPort: ctx.udpPort });
    const joined = await connection.receive({ deadlineMs: clock.now() + 30_000 });
    if (joined.type === "error") throw new HaloError("HALO_ERR_PEER_REJECTED", `worker ${address.host}:${address.port} refused to join: ${joined.message} [${joined.code}]`);
    if (joined.type !== "join-ok") throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `worker ${address.host}:${address.port} answered join with '${joined.type}'`);
    return { connection, udpPort: joined.udpPort };
  } catch (error) {
    connection.destroy();
    throw error;
  }
}

export function createWorkerLink(
  index: number, address: WorkerAddress, connection: ControlConnection, udpPort: number, profile: LinkProfile, seed: number, clock: Clock, answer: PlanAnswer,
): WorkerLink {
  return {
    index, address, connection, sessionKey: connection.sessionKey, udpPort, state: "active",
    emulator: new LinkEmulator({ profile, seed, clock }),
    stream: new StreamLinkEmulator({ profile, seed: seed + 1, clock }),
    stats: new LinkStats(),
    retransmissionsBefore: 0,
    waiting: new Map(),
    rejoinTimer: undefined,
    profile: answer.profile,
    receivesShards: answer.receivesShards,
    profileRequest: undefined,
  };
}

/** A joined-again worker's new connection: fresh key and stream model, same statistics. */
export function reconnectWorkerLink(link: WorkerLink, connection: ControlConnection, udpPort: number, seed: number, clock: Clock, answer: PlanAnswer): void {
  link.profile = answer.profile ?? link.profile;
  link.receivesShards = answer.receivesShards;
  link.connection = connection;
  link.sessionKey = connection.sessionKey;
  link.udpPort = udpPort;
  link.retransmissionsBefore += link.stream.counters.retransmissions;
  link.stream = new StreamLinkEmulator({ profile: link.emulator.profile, seed, clock });
  link.state = "ready";
}

export function reportWorkerLink(link: WorkerLink): WorkerLinkReport {
  return {
    worker: link.index,
    address: `${link.address.host}:${link.address.port}`,
    state: link.state,
    emulatedRetransmissions: link.retransmissionsBefore + link.stream.counters.retransmissions,
    ...link.stats.snapshot(),
  };
}

/**
 * The skipping threshold the workers' plans carry: only with per-token predictions (a worker
 * applies it with its own copy of the predictor, halo worker --predictor).
 */
export function workerSkipBelow(options: { skipBelow?: number; predictor?: unknown; importance?: "predictor" | "static" }): number | undefined {
  return options.predictor !== undefined && options.importance !== "static" ? options.skipBelow : undefined;
}

/** The plan that gives worker `index` its groups of every layer (and, with `skipBelow`, asks it to skip the unimportant ones). */
export function planMessage(placement: Placement, layout: GroupLayout, index: number, epoch: number, wire: WireFormat, position: number, copies: number, skipBelow?: number): ControlMessage {
  return { type: "plan", sequence: 1, epoch, groups: planGroupRanges(placement, index), ffnBlockSize: layout.ffnBlockSize, wire, position, copies, ...(skipBelow === undefined ? {} : { skipBelow }) };
}

/** Worker `index`'s groups of every layer, as plan and prepare messages carry them. */
export function planGroupRanges(placement: Placement, index: number): PhaseGroups[] {
  return placement.layers.map((_, l) => ({
    attention: groupsOfDevice(placement, l, "attention", index).map((r) => [r.start, r.end] as [number, number]),
    ffn: groupsOfDevice(placement, l, "ffn", index).map((r) => [r.start, r.end] as [number, number]),
  }));
}

const PLAN_TIMEOUT_MS = 300_000;

/** What the coordinator cuts a worker's shard from, should the worker ask for one. */
export interface ShardSource {
  file: GgufFile;
  config: ModelConfig;
  layout: GroupLayout;
  placement: Placement;
  index: number;
  sourceSha256: string;
  cacheDir: string;
  log: ((line: string) => void) | undefined;
  clock: Clock;
}

export function shardSource(
  options: { model: { file: GgufFile; config: ModelConfig }; modelSha256: string; shardCacheDir?: string; log?: (line: string) => void },
  layout: GroupLayout, placement: Placement, index: number, clock: Clock,
): ShardSource {
  return {
    file: options.model.file, config: options.model.config, layout, placement, index, sourceSha256: options.modelSha256,
    cacheDir: options.shardCacheDir ?? defaultShardCacheDir(process.env, homedir()), log: options.log, clock,
  };
}

/** What a worker's answer to its plan tells: its profile (undefined from a worker that predates them), and whether it asked for a shard. */
export interface PlanAnswer {
  profile: MeasuredProfile | undefined;
  receivesShards: boolean;
}

/**
 * Sends a plan and waits for plan-ok. A worker without the model file answers with
 * shard-request first: its shard is cut (or found in the cache) and sent, then plan-ok follows.
 */
export async function sendPlan(connection: ControlConnection, plan: ControlMessage, source: ShardSource): Promise<PlanAnswer> {
  connection.send(plan);
  for (let shardsSent = 0; ; shardsSent++) {
    // Loading a share of a large model from a slow disk can take minutes.
    const answer = await connection.receive({ deadlineMs: source.clock.now() + PLAN_TIMEOUT_MS });
    if (answer.type === "plan-ok") return { profile: answer.profile, receivesShards: shardsSent > 0 };
    if (answer.type === "shard-request" && shardsSent === 0) {
      const groups = source.placement.layers.map((_, l) => ({
        attention: groupsOfDevice(source.placement, l, "attention", source.index),
        ffn: groupsOfDevice(source.placement, l, "ffn", source.index),
      }));
      const shard = await prepareShard({ file: source.file, config: source.config, layout: source.layout, groups, sourceSha256: source.sourceSha256, cacheDir: source.cacheDir });
      const { transferred } = await sendShard(connection, shard);
      source.log?.(`halo coordinator: worker ${source.index} ${transferred ? "received" : "already had"} its weights (${(shard.sizeBytes / 2 ** 20).toFixed(1)} MiB)`);
      continue;
    }
    if (answer.type === "error") throw new HaloError("HALO_ERR_PEER_REJECTED", `worker ${source.index} refused its plan: ${answer.message} [${answer.code}]`);
    throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `worker ${source.index} answered plan with '${answer.type}'`);
  }
}
