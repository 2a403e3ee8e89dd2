/**
 * A worker: listens for one coordinator at a time, authenticates it, checks that both hold the
 * same model (or, holding none, takes the coordinator's), loads the weights of the groups its
 * plan gives it (workerSlices.ts), and computes their partial sums, for inputs arriving as UDP
 * datagrams (relaxed) or TCP messages (prefill, strict). An input whose datagrams did not all
 * arrive is never computed, so the positions it covers stay masked in this worker's KV cache.
 */
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import { createServer, type Server, type Socket } from "node:net";
import { cpus, homedir } from "node:os";
import { HaloError, MemoryBudgetError, ReplanError, describeError, systemClock, type Clock } from "../base/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import { defaultShardCacheDir, type GroupStoreStats } from "../loader/index.js";
import type { OpenGgufOptions } from "../model/index.js";
import {
  CONTROL_LIMITS, ControlConnection, DATAGRAM_MAX_BYTES, DatagramReceiver, LossyUdpSocket, NACK_BYTES, SYNC_PHASE_IDS, StreamLinkEmulator, ZERO_LINK_PROFILE,
  encodeDatagram, encodeNack, isNackDatagram, openNack, planChunks,
  type ControlMessage, type DatagramChunk, type LinkProfile, type PlanMessage, type PrepareMessage, type SyncPhaseId, type WireFormat,
} from "../net/index.js";
import { createGroupLayout, type GroupKind } from "../partition/index.js";
import { GroupSkipper, ImportancePredictor, type GroupPredictor } from "../predictor/index.js";
import { BudgetedSteps, budgetOptions, describeResidency } from "./budgetedSteps.js";
import { NackScheduler } from "./nackScheduler.js";
import { startOwnCompute } from "./ownCompute.js";
import type { ShardProgress } from "./shardTransfer.js";
import { CLUSTER_LIVENESS } from "./workerLink.js";
import { WorkerProfiler } from "./workerProfiler.js";
import { loadPlanGroups, type LoadedGroups, type LocalModel, type SliceSource } from "./workerSlices.js";
import { decodeVectors, encodeVectors } from "./wireVectors.js";

export interface WorkerNodeOptions {
  /** This worker's copy of the model (its SHA-256 checked at join); without one the coordinator sends each plan's shard. */
  model?: LocalModel;
  kernels: MatrixKernels;
  clusterKey: Uint8Array;
  /** Defaults to 127.0.0.1. */
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** The data-plane (UDP) port; 0 (the default) picks a free one. A fixed one is easier to open in a firewall. */
  udpPort?: number;
  /** KV cache length. Defaults to the model's context, capped at 4096. */
  contextLength?: number;
  /** Where received shards are cached. Defaults to $XDG_CACHE_HOME/halo/shards or ~/.cache/halo/shards. */
  shardCacheDir?: string;
  /** How shard files are opened (the native mmap when available). */
  map?: OpenGgufOptions["map"];
  onShardProgress?: ShardProgress;
  /**
   * Emulates a slower device (a Pi-class preset under halo cluster --local): each result is held
   * back (slowdown − 1) × its own compute time (CPU time, ownCompute.ts). Defaults to 1.
   */
  slowdown?: number;
  /** Emulates a device that becomes slower while it runs: `afterMs` after its first compute, its slowdown becomes `slowdown`. */
  slowdownAfter?: { afterMs: number; slowdown: number };
  /**
   * Bytes of weights to keep in memory (halo worker --memory-budget): the rest of the plan's
   * groups are read from the model file or shard while computing. Undefined: all resident.
   */
  memoryBudgetBytes?: number;
  /** Under a budget with a local model, where the streamed rows are read from (see SliceSource.streamFrom). Defaults to "shard". */
  streamFrom?: "shard" | "model";
  /**
   * Its per-group calibration averages choose the resident groups and order the reads under a
   * memory budget; and when a plan asks for compute skipping (skipBelow), it predicts per token
   * which of this worker's groups to leave out. Used when its FFN block size is the plan's.
   */
  predictor?: GroupPredictor;
  /** The emulated link for datagrams this worker sends (halo cluster --local). */
  linkProfile?: LinkProfile;
  /** Kernels at other thread counts than `kernels`' (e.g. one thread), timed too for the profile. Defaults to none. */
  profileKernels?: readonly MatrixKernels[];
  seed?: number;
  clock?: Clock;
  log?: (line: string) => void;
}

const PHASES: readonly GroupKind[] = ["attention", "ffn"];

interface Session {
  connection: ControlConnection;
  nodeIndex: number;
  sessionId: number;
  epoch: number;
  coordinatorAddress: string;
  coordinatorUdpPort: number;
  /** The coordinator's model. */
  modelSha256: string;
  receiver: DatagramReceiver | undefined;
  /** The connection's session key (the connection hands out a copy per call). */
  key: Buffer;
  /** The plan's wire format and its chunk plan. */
  wire: WireFormat;
  /** Times each partial-sum datagram is sent. */
  copies: number;
  chunks: DatagramChunk[];
  /** Partial sums sent over TCP (strict mode, prefill) cross the emulated link here. */
  stream: StreamLinkEmulator;
  /** The plan's compute skipping (skipBelow), with this worker's predictor; undefined: every group is computed. */
  skipper: GroupSkipper | undefined;
}

export class WorkerNode {
  private session: Session | undefined;
  /** The weights of the latest plan's groups; kept across sessions while plans give the same groups. */
  private loaded: LoadedGroups | undefined;
  private readonly udp: LossyUdpSocket;
  /** (512, dim) a reliable input, sized at the first plan. */
  private input = new Float32Array(0);
  private readonly datagram = new Uint8Array(DATAGRAM_MAX_BYTES);
  private closed = false;
  /** Inputs computed, partial datagrams sent, NACKs sent for lost input chunks, partial chunks sent again on request. */
  readonly counters = { stepsComputed: 0, stepsMissed: 0, datagramsSent: 0, nacksSent: 0, chunksResent: 0 };
  private readonly nacks: NackScheduler;
  private readonly nackDatagram = new Uint8Array(NACK_BYTES);
  /** The partial-sum datagrams of the last few steps, by step index, so a lost chunk can be sent again. */
  private readonly recentPartials = new Map<number, Buffer[]>();
  private readonly profiler: WorkerProfiler;
  /** Under a memory budget, computes wait here for their layer phase's weights. */
  private readonly steps = new BudgetedSteps((line) => this.log(line));
  /** The emulated slowdown (options.slowdown, changed by setSlowdown or slowdownAfter). */
  private slowdown: number;
  private firstComputeAtMs: number | undefined;
  private scheduledSlowdownDone = false;
  /** options.predictor on this worker's kernels: skipping, and the look-ahead order of streamed reads. */
  private readonly importance: ImportancePredictor | undefined;
  /** (dim) the first token of the latest phase input received, for ranking the next parts' reads. */
  private latestInput: Float32Array | undefined;
  /** Groups loaded by prepare, computed from the matching activate on. */
  private prepared: { sequence: number; loaded: LoadedGroups } | undefined;

  private constructor(private readonly options: WorkerNodeOptions, private readonly server: Server, udpSocket: UdpSocket) {
    this.slowdown = options.slowdown ?? 1;
    this.importance = options.predictor === undefined ? undefined : new ImportancePredictor(options.predictor, options.kernels);
    this.nacks = new NackScheduler(options.clock ?? systemClock);
    this.profiler = new WorkerProfiler({
      kernels: [options.kernels, ...(options.profileKernels ?? [])], slowdown: () => this.slowdown, modelPath: options.model?.file.path,
      memoryBudgetBytes: options.memoryBudgetBytes, clock: options.clock, log: (line) => this.log(line),
    });
    this.udp = new LossyUdpSocket({ socket: udpSocket, profile: options.linkProfile ?? ZERO_LINK_PROFILE, seed: options.seed ?? 1, clock: options.clock ?? systemClock });
    udpSocket.on("message", (message: Buffer, remote: RemoteInfo) => this.onDatagram(message, remote));
    server.on("connection", (socket) => void this.onConnection(socket));
  }

  static async start(options: WorkerNodeOptions): Promise<WorkerNode> {
    const host = options.host ?? "127.0.0.1";
    const server = createServer();
    server.on("error", (error) => options.log?.(`halo worker: server error: ${describeError(error)}`));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port ?? 0, host, () => resolve());
    });
    const udpSocket = createSocket(host.includes(":") ? "udp6" : "udp4");
    await new Promise<void>((resolve, reject) => {
      udpSocket.once("error", reject);
      udpSocket.bind(options.udpPort ?? 0, host, () => resolve());
    });
    return new WorkerNode(options, server, udpSocket);
  }

  get tcpPort(): number {
    const address = this.server.address();
    return typeof address === "object" && address !== null ? address.port : 0;
  }

  get udpPort(): number {
    return this.udp.socket.address().port;
  }

  /** Ends the session and closes the sockets. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.session?.connection.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.udp.close();
    await this.steps.idle();
    await this.loaded?.store?.close();
  }

  /** options.slowdownAfter, counted from the first compute. */
  private applyScheduledSlowdown(): void {
    const scheduled = this.options.slowdownAfter;
    if (scheduled === undefined || this.scheduledSlowdownDone) return;
    const now = performance.now();
    this.firstComputeAtMs ??= now;
    if (now - this.firstComputeAtMs < scheduled.afterMs) return;
    this.scheduledSlowdownDone = true;
    this.slowdown = scheduled.slowdown;
    this.log(`now ${scheduled.slowdown} times slower (--slowdown-after)`);
  }

  /** Emulates this device becoming slower or faster while it runs (a drift the coordinator should notice). */
  setSlowdown(slowdown: number): void {
    if (!(Number.isFinite(slowdown) && slowdown >= 1)) throw new HaloError("HALO_ERR_USAGE", `slowdown must be a number ≥ 1, got ${slowdown}`);
    this.slowdown = slowdown;
  }

  /** Exposed and hidden I/O per pass and in total, when the weights stream under a memory budget. */
  loaderStats(): GroupStoreStats | undefined {
    return this.loaded?.store?.stats();
  }

  /** What this worker holds now: the groups' weights, if a plan was loaded. */
  get loadedGroups(): { sizeBytes: number; fromShard: boolean } | undefined {
    return this.loaded === undefined ? undefined : { sizeBytes: this.loaded.sizeBytes, fromShard: this.loaded.fromShard };
  }

  private log(line: string): void {
    this.options.log?.(`halo worker: ${line}`);
  }

  private async onConnection(socket: Socket): Promise<void> {
    socket.on("error", () => {
      // The connection reports the failure through its close event.
    });
    let connection: ControlConnection;
    try {
      connection = await ControlConnection.accept(socket, { clusterKey: this.options.clusterKey, clock: this.options.clock, ...CLUSTER_LIVENESS });
    } catch (error) {
      this.log(`rejected a connection from ${socket.remoteAddress}: ${describeError(error)}`);
      socket.destroy();
      return;
    }
    // A newer coordinator replaces the old one (a restarted coordinator, F9).
    if (this.session !== undefined) {
      this.session.connection.destroy();
      this.endSession(this.session.connection);
    }
    try {
      for await (const message of connection) await this.onMessage(connection, socket, message);
    } catch (error) {
      this.log(`session ended: ${describeError(error)}`);
      connection.destroy(error instanceof HaloError ? error : undefined);
    }
    this.endSession(connection);
  }

  private endSession(connection: ControlConnection): void {
    if (this.session?.connection !== connection) return;
    this.session.stream.destroy();
    this.session = undefined;
    this.dropPrepared();
  }

  /** Forgets groups a re-plan prepared and never activated (a new plan or session supersedes them). */
  private dropPrepared(): void {
    const prepared = this.prepared;
    this.prepared = undefined;
    if (prepared !== undefined && prepared.loaded !== this.loaded) void prepared.loaded.store?.close();
  }

  private async onMessage(connection: ControlConnection, socket: Socket, message: ControlMessage): Promise<void> {
    switch (message.type) {
      case "join": {
        if (this.session !== undefined && this.session.connection === connection) throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", "a second join on one connection");
        const local = this.options.model;
        if (local !== undefined && message.modelSha256 !== local.sha256) {
          connection.send({ type: "error", code: "HALO_ERR_MODEL_MISMATCH", message: `the coordinator's model is ${message.modelSha256}, this worker's is ${local.sha256}` });
          await connection.close();
          return;
        }
        this.session = {
          connection, nodeIndex: message.nodeIndex, sessionId: message.sessionId, epoch: message.epoch, coordinatorAddress: socket.remoteAddress ?? "127.0.0.1", coordinatorUdpPort: message.coordinatorUdpPort,
          modelSha256: message.modelSha256, receiver: undefined, key: connection.sessionKey, wire: "q8_0", copies: 1, chunks: [], skipper: undefined,
          stream: new StreamLinkEmulator({ profile: this.options.linkProfile ?? ZERO_LINK_PROFILE, seed: (this.options.seed ?? 1) + 104_729, clock: this.options.clock ?? systemClock }),
        };
        this.loaded?.worker.reset();
        connection.send({ type: "join-ok", udpPort: this.udpPort, profile: { nThreads: 1, memoryBytes: 0, kernels: this.options.kernels.name, cpuModel: cpus()[0]?.model ?? "unknown", matvecGflops: 0 } });
        return;
      }
      case "plan": {
        const session = this.requireSession(connection, "plan");
        this.dropPrepared();
        await this.steps.idle();
        let loaded: LoadedGroups;
        try {
          loaded = await loadPlanGroups(message, session.modelSha256, this.loaded, this.sliceSource(message.ffnBlockSize), connection);
        } catch (error) {
          // The budget is this worker's limit, not a broken plan: refuse it the way a model mismatch is refused.
          if (!(error instanceof MemoryBudgetError)) throw error;
          this.log(describeError(error));
          connection.send({ type: "error", code: error.code, message: error.message.slice(0, CONTROL_LIMITS.maxErrorMessageChars) });
          await connection.close();
          return;
        }
        if (loaded !== this.loaded) {
          await this.loaded?.store?.close();
          this.loaded = loaded;
          this.input = new Float32Array(512 * loaded.config.dim);
          this.log(`holds ${(loaded.sizeBytes / 2 ** 20).toFixed(1)} MiB of weights for its groups${loaded.fromShard ? " (received from the coordinator)" : ""}`);
          if (loaded.store !== undefined) this.log(describeResidency(loaded.store));
        }
        session.epoch = message.epoch;
        session.wire = message.wire;
        session.copies = message.copies;
        session.skipper = this.skipperFor(message, loaded);
        session.chunks = planChunks(loaded.config.dim, message.wire);
        session.receiver = this.createReceiver(session, loaded);
        this.recentPartials.clear();
        // A worker that joins mid-sequence starts at the coordinator's position; what came before stays masked.
        session.receiver.setCurrent(message.position, 0, 0);
        const profile = await this.profiler.atPlan(loaded);
        connection.send(profile === undefined ? { type: "plan-ok", sequence: message.sequence } : { type: "plan-ok", sequence: message.sequence, profile });
        return;
      }
      case "prepare": {
        const session = this.requireSession(connection, "prepare");
        this.prepare(session, this.requirePlan("prepare"), message);
        return;
      }
      case "activate": {
        const session = this.requireSession(connection, "activate");
        const prepared = this.prepared;
        if (prepared === undefined || prepared.sequence !== message.sequence) throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `activate ${message.sequence} before its groups were prepared`);
        this.prepared = undefined;
        await this.steps.idle();
        const previous = this.requirePlan("activate");
        if (prepared.loaded !== previous) {
          prepared.loaded.worker.carryKvFrom(previous.worker);
          await previous.store?.close();
          this.loaded = prepared.loaded;
          this.log(`computes its new groups from position ${message.position} (${(prepared.loaded.sizeBytes / 2 ** 20).toFixed(1)} MiB of weights)`);
        }
        session.receiver = this.createReceiver(session, this.loaded!);
        session.receiver.setCurrent(message.position, 0, 0);
        this.recentPartials.clear();
        connection.send({ type: "activate-ok", sequence: message.sequence });
        return;
      }
      case "profile-request": {
        this.requireSession(connection, "profile-request");
        const loaded = this.requirePlan("profile-request");
        const answer = await this.profiler.answer(loaded, message.requestId);
        if (this.session?.connection === connection) connection.send(answer);
        return;
      }
      case "input": {
        const session = this.requireSession(connection, "input");
        const loaded = this.requirePlan("input");
        const nValues = message.nTokens * loaded.config.dim;
        if (message.nTokens > 512) throw new HaloError("HALO_ERR_MESSAGE_INVALID", `${message.nTokens} tokens in one input; at most 512`);
        decodeVectors(message.data, nValues, this.input, session.wire);
        this.noteInput(this.input, loaded.config.dim);
        await this.steps.run(loaded.store, message.layer, message.phase, () => {
          const ownCompute = startOwnCompute();
          const only = session.skipper?.select(message.layer, message.phase, this.input, message.nTokens, loaded.worker.groupsOf(message.layer, message.phase));
          const partial = loaded.worker.compute(message.phase, message.layer, message.position, message.nTokens, this.input, only);
          const data = encodeVectors(partial, nValues, session.wire);
          const reply: ControlMessage = { type: "partial", position: message.position, nTokens: message.nTokens, layer: message.layer, phase: message.phase, data };
          this.afterSlowdown(ownCompute(), () => session.stream.send(data.byteLength, () => {
            if (this.session === session) connection.send(reply);
          }));
        });
        this.counters.stepsComputed++;
        if (message.layer === loaded.config.nLayers - 1 && message.phase === "ffn") session.receiver?.setCurrent(message.position + message.nTokens, 0, 0);
        return;
      }
      case "reset": {
        const session = this.requireSession(connection, "reset");
        // A new sequence is a new epoch, so late datagrams of the old one are stale.
        session.epoch = (session.epoch + 1) >>> 0;
        session.receiver?.reset(session.epoch, 0, 0, 0);
        this.recentPartials.clear();
        this.loaded?.worker.reset();
        return;
      }
      case "stop":
        await connection.close();
        return;
      case "heartbeat":
        return;
      default:
        throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `a worker does not take '${message.type}'`);
    }
  }

  /**
   * Loads a re-plan's groups beside the current ones, without holding up the session: inputs go
   * on being computed with the current groups until activate. Only from this worker's own model
   * file: a shard would have to share the control connection with the session's inputs.
   */
  private prepare(session: Session, current: LoadedGroups, message: PrepareMessage): void {
    const refuse = (text: string): void => {
      const error = new ReplanError(`cannot prepare re-plan ${message.sequence}: ${text}`);
      if (this.session === session) session.connection.send({ type: "error", code: error.code, message: error.message.slice(0, CONTROL_LIMITS.maxErrorMessageChars) });
    };
    if (this.options.model === undefined) {
      refuse("this worker has no model file of its own (it receives shards)");
      return;
    }
    const plan: PlanMessage = { type: "plan", sequence: message.sequence, epoch: session.epoch, groups: message.groups, ffnBlockSize: message.ffnBlockSize, wire: session.wire, position: 0, copies: session.copies };
    void loadPlanGroups(plan, session.modelSha256, current, this.sliceSource(message.ffnBlockSize), session.connection).then(
      async (loaded) => {
        if (this.session !== session || this.closed) {
          if (loaded !== current) await loaded.store?.close();
          return;
        }
        this.dropPrepared();
        this.prepared = { sequence: message.sequence, loaded };
        session.connection.send({ type: "prepare-ok", sequence: message.sequence });
      },
      (error: unknown) => {
        this.log(`cannot prepare re-plan ${message.sequence}: ${describeError(error)}`);
        refuse(describeError(error));
      },
    );
  }

  /** Keeps the input's first token for the look-ahead ranking of streamed reads (only when there is something to rank). */
  private noteInput(input: Float32Array, dim: number): void {
    if (this.importance === undefined || this.loaded?.store === undefined) return;
    if (this.latestInput?.length !== dim) this.latestInput = new Float32Array(dim);
    this.latestInput.set(input.subarray(0, dim));
  }

  /** Groups considered for skipping and skipped, over this session's plans (undefined: the plan asks for no skipping). */
  skipTotals(): { considered: number; skipped: number; predictMs: number } | undefined {
    const totals = this.session?.skipper?.totals;
    return totals === undefined ? undefined : { ...totals };
  }

  /** The plan's compute skipping, when it asks for it and this worker has a predictor for its groups. */
  private skipperFor(message: PlanMessage, loaded: LoadedGroups): GroupSkipper | undefined {
    if (message.skipBelow === undefined) return undefined;
    const predictor = this.options.predictor;
    const fits = predictor !== undefined && predictor.ffnBlockSize === message.ffnBlockSize && predictor.nLayers === loaded.config.nLayers && predictor.inputDim === loaded.config.dim;
    if (!fits) {
      this.log(`the plan skips groups under ${(message.skipBelow * 100).toFixed(1)}% of their phase's predicted importance, but this worker has ${predictor === undefined ? "no --predictor" : "a predictor for other groups"}: it computes all of its groups`);
      return undefined;
    }
    return new GroupSkipper(this.importance!, createGroupLayout(loaded.config, message.ffnBlockSize), message.skipBelow);
  }

  private sliceSource(ffnBlockSize: number): SliceSource {
    return {
      local: this.options.model,
      shardCacheDir: this.options.shardCacheDir ?? defaultShardCacheDir(process.env, homedir()),
      map: this.options.map,
      kernels: this.options.kernels,
      contextLength: this.options.contextLength,
      onShardProgress: this.options.onShardProgress,
      streamFrom: this.options.streamFrom,
      budget: budgetOptions(this.options.memoryBudgetBytes, this.options.predictor, ffnBlockSize, (line) => this.log(line), this.importance === undefined ? undefined : { predictor: this.importance, latestInput: () => this.latestInput }),
    };
  }

  private requireSession(connection: ControlConnection, what: string): Session {
    if (this.session === undefined || this.session.connection !== connection) throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `${what} before join`);
    return this.session;
  }

  private requirePlan(what: string): LoadedGroups {
    if (this.loaded === undefined || this.session?.receiver === undefined) throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `${what} before plan`);
    return this.loaded;
  }

  private createReceiver(session: Session, loaded: LoadedGroups): DatagramReceiver {
    const { config, worker } = loaded;
    const key = session.key;
    return new DatagramReceiver({
      kind: "input",
      sessionId: session.sessionId,
      epoch: session.epoch,
      dim: config.dim,
      nLayers: config.nLayers,
      nSenders: 1,
      format: session.wire,
      keys: (sender) => (sender === 0 ? key : undefined),
      mayContribute: (_sender, layer, phase) => worker.groupsOf(layer, PHASES[phase]!).length > 0,
      maxStepsAhead: 2 * config.nLayers,
    });
  }

  private onDatagram(message: Buffer, _remote: RemoteInfo): void {
    const session = this.session;
    const receiver = session?.receiver;
    const loaded = this.loaded;
    if (session === undefined || receiver === undefined || loaded === undefined) return;
    const { nLayers } = loaded.config;
    if (isNackDatagram(message)) {
      this.onNack(session, message, nLayers);
      return;
    }
    const result = receiver.accept(message);
    if (!result.ok) return;
    const { position, layer, phase } = result.header;
    if (receiver.chunksReceived(position, layer, phase, 0) < session.chunks.length) {
      this.nacks.onChunk(`${session.sessionId}:${session.epoch}:${position}:${layer}:${phase}`, () => receiver.missingChunks(position, layer, phase, 0), (chunkIndex) => {
        if (this.session !== session) return;
        const length = encodeNack({ sessionId: session.sessionId, epoch: session.epoch, senderIndex: session.nodeIndex, position, layer, phase, chunkIndex, nChunks: session.chunks.length }, session.key, this.nackDatagram);
        this.udp.send(Buffer.from(this.nackDatagram.subarray(0, length)), session.coordinatorUdpPort, session.coordinatorAddress);
        this.counters.nacksSent++;
      });
      return;
    }
    // Steps before this one that never completed are lost: their inputs stay uncomputed.
    const skipped = stepIndex(position, layer, phase, nLayers) - stepIndex(receiver.position, receiver.layer, receiver.phase, nLayers);
    if (skipped > 0) this.counters.stepsMissed += skipped;
    receiver.setCurrent(position, layer, phase);
    // A step that may wait for its weights keeps its own copy: the receiver reuses its buffers once it moves on.
    const received = receiver.senderValues(position, layer, phase, 0)!;
    const values = loaded.store === undefined ? received : Float32Array.from(received);
    this.noteInput(values, loaded.config.dim);
    const phaseName = PHASES[phase]!;
    const onError = (error: unknown): void => {
      if (error instanceof HaloError && (error.code === "HALO_ERR_FILE_CHANGED" || error.code === "HALO_ERR_FILE")) this.failSession(session, error);
      else this.log(`cannot compute (${position}, ${layer}, ${phaseName}): ${describeError(error)}`);
    };
    try {
      this.steps.run(loaded.store, layer, phaseName, () => {
        const ownCompute = startOwnCompute();
        const only = session.skipper?.select(layer, phaseName, values, 1, loaded.worker.groupsOf(layer, phaseName));
        const partial = loaded.worker.compute(phaseName, layer, position, 1, values, only);
        this.sendPartial(session, position, layer, phase, partial, ownCompute());
        this.counters.stepsComputed++;
      })?.catch(onError);
    } catch (error) {
      onError(error);
      return;
    }
    const next = nextStep(position, layer, phase, nLayers);
    receiver.setCurrent(next.position, next.layer, next.phase);
  }

  /** A weights file that changed under the worker: nothing more can be computed; the coordinator is told. */
  private failSession(session: Session, error: HaloError): void {
    this.log(`session ended: ${describeError(error)}`);
    if (this.session !== session) return;
    try {
      session.connection.send({ type: "error", code: error.code, message: describeError(error).slice(0, 1000) });
    } catch {
      // The connection is already gone: there is no one left to tell.
    }
    session.connection.destroy(error);
    this.endSession(session.connection);
  }

  /** The coordinator lost a chunk of a partial sum this worker sent: send it again, if it is still kept. */
  private onNack(session: Session, message: Buffer, nLayers: number): void {
    const request = openNack(message, { sessionId: session.sessionId, epoch: session.epoch, nChunks: session.chunks.length, nLayers }, (sender) => (sender === 0 ? session.key : undefined));
    if (typeof request === "string") return;
    const datagram = this.recentPartials.get(stepIndex(request.position, request.layer, request.phase, nLayers))?.[request.chunkIndex];
    if (datagram === undefined) return;
    this.udp.send(datagram, session.coordinatorUdpPort, session.coordinatorAddress);
    this.counters.chunksResent++;
  }

  /** Runs `send` now, or, emulating a slower device, after (slowdown − 1) × computeMs. */
  private afterSlowdown(computeMs: number, send: () => void): void {
    this.applyScheduledSlowdown();
    const slowdown = this.slowdown;
    if (slowdown <= 1) send();
    else setTimeout(send, (slowdown - 1) * computeMs);
  }

  private sendPartial(session: Session, position: number, layer: number, phase: SyncPhaseId, partial: Float32Array, computeMs: number): void {
    const chunks = session.chunks;
    const key = session.key;
    const sent: Buffer[] = [];
    const sendTimeUs = Math.floor((this.options.clock ?? systemClock).now() * 1000) >>> 0;
    chunks.forEach((chunk, chunkIndex) => {
      const header = { kind: "partial" as const, sessionId: session.sessionId, epoch: session.epoch, senderIndex: session.nodeIndex, layer, phase, isDuplicateCopy: false, chunkIndex, nChunks: chunks.length, position, offset: chunk.offset, nElements: chunk.nElements, sendTimeUs };
      const length = encodeDatagram(header, partial, chunk.offset, key, this.datagram, session.wire);
      const datagram = Buffer.from(this.datagram.subarray(0, length));
      sent.push(datagram);
    });
    this.afterSlowdown(computeMs, () => {
      if (this.session !== session) return;
      for (const datagram of sent) {
        for (let copy = 0; copy < session.copies; copy++) {
          this.udp.send(datagram, session.coordinatorUdpPort, session.coordinatorAddress);
          this.counters.datagramsSent++;
        }
      }
    });
    this.recentPartials.set(stepIndex(position, layer, phase, this.loaded!.config.nLayers), sent);
    // A NACK comes within a phase or two; four steps cover a late one.
    if (this.recentPartials.size > 4) this.recentPartials.delete(this.recentPartials.keys().next().value!);
  }
}

export function stepIndex(position: number, layer: number, phase: number, nLayers: number): number {
  return (position * nLayers + layer) * 2 + phase;
}

function nextStep(position: number, layer: number, phase: number, nLayers: number): { position: number; layer: number; phase: SyncPhaseId } {
  if (phase === SYNC_PHASE_IDS.attention) return { position, layer, phase: SYNC_PHASE_IDS.ffn };
  if (layer + 1 < nLayers) return { position, layer: layer + 1, phase: SYNC_PHASE_IDS.attention };
  return { position: position + 1, layer: 0, phase: SYNC_PHASE_IDS.attention };
}
