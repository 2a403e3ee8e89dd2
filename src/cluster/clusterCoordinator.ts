/**
 * The coordinator side of a cluster, as the engine's Synchronizer. It connects to every worker,
 * authenticates, checks the model, sends each its groups, and then per phase: sends the normed
 * input (UDP datagrams in relaxed mode, TCP in strict mode and for prefill), computes its own
 * groups meanwhile (the engine does), and adds the workers' partial sums.
 *
 * Relaxed mode waits for every contribution only until a soft deadline learned from recent
 * completion times (an EWMA, times a margin, plus slack, capped by a hard deadline); contributions
 * marked critical are awaited up to the hard deadline. Whatever has not arrived by then counts as
 * zero for this token, and is counted. Strict mode waits for all, like distributed-llama.
 *
 * A worker whose connection dies is dropped from every later phase, and the coordinator keeps
 * trying to reconnect it in the background; once it has joined again it gets its groups back at
 * the next token boundary, with an empty KV cache for the positions it missed (those stay masked).
 */
import { randomBytes } from "node:crypto";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { HaloError, describeError, systemClock, type Clock } from "../base/index.js";
import type { PhaseStep, Synchronizer } from "../engine/index.js";
import {
  DATAGRAM_MAX_BYTES, DatagramReceiver, NACK_BYTES, SYNC_PHASE_IDS, WIRE_FORMATS, ZERO_LINK_PROFILE,
  encodeDatagramBlocks, encodeNack, isNackDatagram, openNack, planChunks, wireByteLength,
  type ControlConnection, type ControlMessage, type DatagramChunk, type MeasuredProfile, type SyncPhaseId, type WireFormat,
} from "../net/index.js";
import { QUANT_TRAITS } from "../kernels/index.js";
import { DEFAULT_FFN_BLOCK_SIZE, createGroupLayout, devicesInPhase, groupsOfDevice, proportionalPlacement, validatePlacement, type GroupKind, type GroupLayout, type GroupRange, type Placement } from "../partition/index.js";
import { GroupSkipper, topK } from "../predictor/index.js";
import type { DeviceProfile } from "../scheduler/index.js";
import { clusterProfiles, measureCoordinatorProfile, onProfileMessage, requestWorkerProfile } from "./clusterProfiles.js";
import type { ClusterOptions, ClusterSchedule, PhaseStats } from "./clusterOptions.js";
import { checkPredictorFits, replanAtJoin, type PlannedCluster, type Replanned } from "./joinPlan.js";
import { LiveReplanner, type LiveReplan } from "./liveReplan.js";
import { MAX_NACK_TRIES, NackScheduler } from "./nackScheduler.js";
import { startOwnCompute } from "./ownCompute.js";
import { PhaseDeadline, PhaseWait } from "./phaseDeadline.js";
import { decodeVectors, encodeVectors } from "./wireVectors.js";
import {
  createWorkerLink, isLoopbackHost, joinWorker, joinWorkerWithRetries, planMessage, reconnectWorkerLink, reportWorkerLink, sendPlan, shardSource, workerSkipBelow,
  type JoinContext, type PlanAnswer, type WorkerLink, type WorkerLinkReport,
} from "./workerLink.js";

const stepKey = (position: number, layer: number, phase: GroupKind): string => `${position}:${layer}:${phase}`;

/** How long a drifting worker may take to measure itself before the re-plan goes ahead with its old profile. */
const REFRESH_ON_DRIFT_TIMEOUT_MS = 10_000;

export class ClusterCoordinator implements Synchronizer {
  readonly layout: GroupLayout;
  readonly wire: WireFormat;
  /** Totals since connect. */
  readonly totals: PhaseStats = {
    syncWaitMs: 0, droppedContributions: 0, expectedContributions: 0, droppedGroups: 0, datagramsSent: 0, bytesSent: 0, bytesReceived: 0, workersLost: 0, workersRejoined: 0, nacksSent: 0, chunksResent: 0, predictorMs: 0, criticalContributions: 0,
  };
  /** The current phase's critical devices. */
  private critical: number[] = [];
  /** (max groups of a phase) predicted log-importance of the current phase's groups. */
  private readonly scores: Float64Array;
  /** Compute skipping of the coordinator's own groups (--skip-below), and this phase's choice. */
  readonly skipper: GroupSkipper | undefined;
  private selectedLocalGroups: GroupRange[] | undefined;
  private readonly clock: Clock;
  /** Every group's device now: the plan at join, then each live re-plan's. */
  private placementNow: Placement;
  private coordinatorGroups: Array<Record<GroupKind, GroupRange[]>> = [];
  /** [layer][phase] → the devices that may send a partial sum for it. */
  private contributors: Array<[Set<number>, Set<number>]> = [];
  private readonly replanner: LiveReplanner<ClusterSchedule> | undefined;
  private readonly chunks: DatagramChunk[];
  /** The phase input in the wire format, (dim) elements. */
  private readonly encodedInput: Uint8Array;
  private readonly datagram = new Uint8Array(DATAGRAM_MAX_BYTES);
  private readonly nacks: NackScheduler;
  private readonly nackDatagram = new Uint8Array(NACK_BYTES);
  /** The step whose input `encodedInput` holds (relaxed mode), for resending a chunk a worker lost. */
  private inputStep: { position: number; layer: number; phase: SyncPhaseId } | undefined;
  /** Times each (worker, chunk) of the current input was sent again: at most once per NACK try. */
  private readonly resentInputChunks = new Map<number, number>();
  private readonly receiver: DatagramReceiver;
  private epoch: number;
  private lastPositionStart = -1;
  private readonly deadline: PhaseDeadline;
  /** The relaxed phase being waited for, if any. */
  private waiting: PhaseWait | undefined;
  private reliableWaits: Array<Promise<Uint8Array | undefined>> = [];
  /** The workers the reliable waits belong to, in order. */
  private reliableDevices: number[] = [];
  private phaseStartMs = 0;
  /** From beginPhase's return to endPhase the coordinator computes its own groups: measures that, for its emulated slowdown. */
  private ownCompute: () => number = () => 0;
  private closed = false;
  /** This device's profile, measured at connect (and again by refreshProfiles). */
  private localProfile: MeasuredProfile | undefined;
  /** The scheduler's critical sets and deadline estimate for the placement in use. */
  private schedule: ClusterOptions["schedule"];
  /** Set when `plan` moved groups after the workers' profiles came in: how long that took. */
  replanned: Replanned | undefined;
  private profileRequests = 0;

  private constructor(
    private readonly options: ClusterOptions,
    private readonly links: WorkerLink[],
    private readonly udp: UdpSocket,
    private readonly sessionId: number,
    epoch: number,
    layout: GroupLayout,
    placement: Placement,
    schedule: ClusterOptions["schedule"],
  ) {
    this.clock = options.clock ?? systemClock;
    this.layout = layout;
    this.placementNow = placement;
    this.wire = options.wire ?? "q8_0";
    this.deadline = new PhaseDeadline(options.deadlines);
    this.schedule = schedule;
    if (schedule?.softMs !== undefined) this.deadline.seed(schedule.softMs);
    this.nacks = new NackScheduler(this.clock);
    this.scores = new Float64Array(Math.max(layout.nAttentionGroups, layout.nFfnGroups));
    if (options.skipBelow !== undefined && options.predictor === undefined) throw new HaloError("HALO_ERR_USAGE", "--skip-below needs --predictor: skipping is decided by predicted importance");
    this.skipper = options.skipBelow === undefined || options.predictor === undefined ? undefined : new GroupSkipper(options.predictor, layout, options.skipBelow, () => this.clock.now());
    this.epoch = epoch;
    const { config } = options.model;
    this.usePlacement(placement);
    this.chunks = planChunks(config.dim, this.wire);
    this.encodedInput = new Uint8Array(wireByteLength(config.dim, this.wire));
    this.receiver = new DatagramReceiver({
      kind: "partial",
      sessionId,
      epoch,
      dim: config.dim,
      nLayers: config.nLayers,
      nSenders: links.length + 1,
      format: this.wire,
      keys: (sender) => (sender >= 1 && sender <= links.length && links[sender - 1]!.state === "active" ? links[sender - 1]!.sessionKey : undefined),
      mayContribute: (sender, layer, phase) => this.contributors[layer]![phase]!.has(sender),
    });
    const plan = options.plan;
    this.replanner = plan === undefined || options.replan === false ? undefined : new LiveReplanner<ClusterSchedule>({
      layout, nLayers: config.nLayers, links, clock: this.clock,
      placement: () => this.placementNow,
      profiles: () => this.profiles(),
      refreshProfile: async (device) => {
        const link = links[device - 1];
        if (link === undefined || link.state !== "active") return;
        this.profileRequests = (this.profileRequests + 1) >>> 0;
        await requestWorkerProfile(link, this.profileRequests, this.clock, REFRESH_ON_DRIFT_TIMEOUT_MS);
      },
      plan: (profiles, context) => plan(profiles, context),
      apply: (next, nextSchedule) => {
        this.usePlacement(next);
        this.schedule = nextSchedule ?? this.schedule;
      },
      activateTimeoutMs: () => Math.max(2000, 4 * this.deadline.hardMs),
      log: (line) => options.log?.(line),
    }, options.replan === undefined ? {} : options.replan);
    udp.on("message", (message: Buffer) => this.onDatagram(message));
    for (const link of links) void this.pump(link, link.connection);
  }

  /** Connects to every worker, authenticates, joins and sends the plan. */
  static async connect(options: ClusterOptions): Promise<ClusterCoordinator> {
    const { model } = options;
    const nDevices = options.workers.length + 1;
    const shares = options.shares ?? new Array<number>(nDevices).fill(1);
    if (shares.length !== nDevices) throw new HaloError("HALO_ERR_USAGE", `${shares.length} shares for ${nDevices} devices (the coordinator and ${options.workers.length} workers)`);
    const wire = options.wire ?? "q8_0";
    const copies = options.copies ?? 1;
    if (!(Number.isInteger(copies) && copies >= 1 && copies <= 4)) throw new HaloError("HALO_ERR_USAGE", `copies must be an integer from 1 to 4, got ${copies}`);
    if (!Object.hasOwn(WIRE_FORMATS, wire)) throw new HaloError("HALO_ERR_USAGE", `wire format '${String(wire)}' is not one of ${Object.keys(WIRE_FORMATS).join(", ")}`);
    const layout = createGroupLayout(model.config, options.ffnBlockSize ?? DEFAULT_FFN_BLOCK_SIZE);
    // W2's columns of an FFN group must be whole quantization blocks.
    const ffnDown = model.weights.layers[0]!.ffnDown;
    const blockSize = QUANT_TRAITS[ffnDown.type].blockSize;
    if (layout.ffnBlockSize % blockSize !== 0) throw new HaloError("HALO_ERR_USAGE", `FFN block of ${layout.ffnBlockSize} neurons is not a multiple of the ${ffnDown.type} block size ${blockSize}`);
    if (options.placement !== undefined && options.shares !== undefined) throw new HaloError("HALO_ERR_USAGE", "give device shares or a placement, not both");
    const placement = options.placement ?? proportionalPlacement(layout, model.config.nLayers, shares);
    if (options.placement !== undefined) validatePlacement(options.placement, layout, model.config.nLayers);
    if (placement.nDevices !== nDevices) throw new HaloError("HALO_ERR_USAGE", `the placement is for ${placement.nDevices} devices; the cluster has ${nDevices}`);
    if (options.predictor !== undefined) checkPredictorFits(options.predictor.predictor, layout, model.config.dim, model.config.nLayers);
    // Measured before any worker loads: on a shared machine they would otherwise compete for the cores.
    const localProfile = await measureCoordinatorProfile(options, options.clock ?? systemClock);
    // Workers off loopback reach the coordinator at whatever address routes to it.
    const host = options.host ?? (options.workers.every((w) => isLoopbackHost(w.host)) ? "127.0.0.1" : "0.0.0.0");
    const udp = createSocket(host.includes(":") ? "udp6" : "udp4");
    udp.on("error", (error) => options.log?.(`halo coordinator: udp error: ${describeError(error)}`));
    await new Promise<void>((resolve, reject) => {
      udp.once("error", reject);
      udp.bind(0, host, () => resolve());
    });
    const clock = options.clock ?? systemClock;
    const ctx: JoinContext = { clusterKey: options.clusterKey, modelSha256: options.modelSha256, modelName: model.config.name, clock, sessionId: randomBytes(4).readUInt32LE(0), epoch: 1, udpPort: udp.address().port };
    // All workers join and load their weights at once: loading is most of a large model's start.
    const started = await Promise.allSettled(options.workers.map(async (address, i) => {
      const index = i + 1;
      const { connection, udpPort } = await joinWorkerWithRetries(address, index, ctx);
      let answer: PlanAnswer;
      try {
        answer = await sendPlan(connection, planMessage(placement, layout, index, ctx.epoch, wire, 0, copies, workerSkipBelow(options)), shardSource(options, layout, placement, index, clock));
      } catch (error) {
        connection.destroy();
        throw error;
      }
      return createWorkerLink(index, address, connection, udpPort, options.linkProfiles?.[i] ?? ZERO_LINK_PROFILE, (options.seed ?? 1) * 7919 + index, clock, answer);
    }));
    const failed = started.find((result) => result.status === "rejected");
    if (failed !== undefined) {
      for (const result of started) if (result.status === "fulfilled") result.value.connection.destroy();
      udp.close();
      throw failed.reason;
    }
    const links = started.map((result) => (result as PromiseFulfilledResult<WorkerLink>).value);
    let planned: PlannedCluster = { placement, schedule: options.schedule, replanned: undefined };
    try {
      planned = await replanAtJoin(options, { placement, layout, links, localProfile, epoch: ctx.epoch, wire, copies, clock });
    } catch (error) {
      for (const link of links) link.connection.destroy();
      udp.close();
      throw error;
    }
    const coordinator = new ClusterCoordinator(options, links, udp, ctx.sessionId, ctx.epoch, layout, planned.placement, planned.schedule);
    coordinator.localProfile = localProfile;
    coordinator.replanned = planned.replanned;
    return coordinator;
  }

  /** Every group's device now (it changes when a live re-plan takes effect, at a token boundary). */
  get placement(): Placement {
    return this.placementNow;
  }

  /** The live re-plans so far: what triggered each, how many groups moved, how long loading and switching took. */
  get liveReplans(): readonly LiveReplan[] {
    return this.replanner?.history ?? [];
  }

  /** Plans again at the next token boundary (needs `plan`, and re-planning not turned off); the groups move once the workers have loaded them. */
  requestReplan(): void {
    if (this.replanner === undefined) throw new HaloError("HALO_ERR_USAGE", "live re-planning needs a planner (--placement halo) and is turned off without one");
    this.replanner.request();
  }

  /** Takes `placement` for this device's own groups and for who may contribute to each phase (looked up per datagram, so built once per placement). */
  private usePlacement(placement: Placement): void {
    this.placementNow = placement;
    this.coordinatorGroups = placement.layers.map((_, l) => ({ attention: groupsOfDevice(placement, l, "attention", 0), ffn: groupsOfDevice(placement, l, "ffn", 0) }));
    this.contributors = placement.layers.map((l) => [new Set(l.attention), new Set(l.ffn)]);
  }

  /**
   * Every device's profile, coordinator first (device i at index i), each worker's with the link
   * as the coordinator sees it now; null for a device not measured (a coordinator without
   * profileKernels, a worker that predates profiles).
   */
  profiles(): Array<DeviceProfile | null> {
    return clusterProfiles(this.localProfile, this.links, this.options.devices);
  }

  /**
   * Measures every device again: this one here, each active worker on a profile-request (answered
   * within `timeoutMs`, else its last profile stays). Measuring takes the devices' cores, so ask
   * between sequences, not during one.
   */
  async refreshProfiles(timeoutMs = 30_000): Promise<Array<DeviceProfile | null>> {
    this.localProfile = (await measureCoordinatorProfile(this.options, this.clock)) ?? this.localProfile;
    await Promise.all(this.links.filter((l) => l.state === "active").map((link) => {
      this.profileRequests = (this.profileRequests + 1) >>> 0;
      return requestWorkerProfile(link, this.profileRequests, this.clock, timeoutMs);
    }));
    return this.profiles();
  }

  get nDevices(): number {
    return this.links.length + 1;
  }

  /** Workers that do not compute now (connection lost, or rejoined and waiting for the next token). */
  get lostWorkers(): number[] {
    return this.links.filter((l) => l.state !== "active").map((l) => l.index);
  }

  /** Per-worker link statistics: loss and late ratios, RTT and jitter, and the link's state. */
  linkStats(): WorkerLinkReport[] {
    return this.links.map(reportWorkerLink);
  }

  localGroups(layerIndex: number, phase: GroupKind): readonly GroupRange[] {
    return this.selectedLocalGroups ?? this.coordinatorGroups[layerIndex]![phase];
  }

  beginPhase(step: PhaseStep): void {
    const { layerIndex, phase, positionStart, nTokens } = step;
    this.selectedLocalGroups = this.skipper?.select(layerIndex, phase, step.input, nTokens, this.coordinatorGroups[layerIndex]![phase]);
    if (layerIndex === 0 && phase === "attention") {
      if (positionStart === 0 && this.lastPositionStart >= 0) this.startNewSequence();
      this.activateRejoined(positionStart);
    }
    this.lastPositionStart = positionStart;
    this.phaseStartMs = this.clock.now();
    const devices = this.activeDevices(layerIndex, phase);
    this.totals.expectedContributions += devices.length;
    if (this.options.mode === "strict" || nTokens > 1) {
      const data = encodeVectors(step.input, nTokens * this.options.model.config.dim, this.wire);
      this.reliableDevices = devices;
      this.reliableWaits = devices.map((device) => {
        const link = this.links[device - 1]!;
        const connection = link.connection;
        const wait = new Promise<Uint8Array | undefined>((resolve) => link.waiting.set(stepKey(positionStart, layerIndex, phase), resolve));
        const message: ControlMessage = { type: "input", position: positionStart, nTokens, layer: layerIndex, phase, data };
        link.stream.send(data.byteLength, () => {
          if (link.connection === connection && link.state === "active") connection.send(message);
        });
        this.totals.bytesSent += data.byteLength;
        return wait;
      });
      this.ownCompute = startOwnCompute();
      return;
    }
    this.critical = this.criticalDevices(step, devices);
    this.totals.criticalContributions += this.critical.length;
    const phaseId = SYNC_PHASE_IDS[phase];
    this.receiver.setCurrent(positionStart, layerIndex, phaseId);
    const dim = this.options.model.config.dim;
    WIRE_FORMATS[this.wire].encode(step.input, 0, dim, this.encodedInput, 0);
    this.inputStep = { position: positionStart, layer: layerIndex, phase: phaseId };
    this.resentInputChunks.clear();
    const sendTimeUs = this.sendTimeUs();
    for (const device of devices) {
      const link = this.links[device - 1]!;
      // A critical worker gets every input datagram at least twice: one loss no longer costs its contribution.
      const copies = this.options.copies ?? 1;
      const nCopies = this.critical.includes(device) ? Math.max(2, copies) : copies;
      for (let copy = 0; copy < nCopies; copy++) {
        for (let chunkIndex = 0; chunkIndex < this.chunks.length; chunkIndex++) this.sendInputChunk(link, chunkIndex, copy > 0, sendTimeUs);
      }
    }
    this.ownCompute = startOwnCompute();
  }

  async endPhase(step: PhaseStep, partial: Float32Array): Promise<void> {
    await this.gather(step, partial);
    // A token boundary: the only place the placement may change.
    if (step.layerIndex === this.options.model.config.nLayers - 1 && step.phase === "ffn") await this.replanner?.afterToken(step.positionStart + step.nTokens);
  }

  /** Adds the workers' partial sums for this phase to `partial`, waiting as the mode says. */
  private async gather(step: PhaseStep, partial: Float32Array): Promise<void> {
    const { layerIndex, phase, positionStart, nTokens } = step;
    const dim = this.options.model.config.dim;
    const slowdown = this.options.computeSlowdown ?? 1;
    if (slowdown > 1) await this.clock.sleepUntil(this.clock.now() + (slowdown - 1) * this.ownCompute());
    const started = this.clock.now();
    if (this.options.mode === "strict" || nTokens > 1) {
      const devices = this.reliableDevices;
      const results = await Promise.all(this.reliableWaits);
      const scratch = new Float32Array(nTokens * dim);
      results.forEach((data, i) => {
        if (data === undefined) {
          this.totals.droppedContributions++;
          this.totals.droppedGroups += this.groupCount(devices[i]!, layerIndex, phase);
          this.options.log?.(`halo coordinator: worker ${devices[i]} lost; its groups are dropped for (${positionStart}, ${layerIndex}, ${phase})`);
          return;
        }
        decodeVectors(data, nTokens * dim, scratch, this.wire);
        for (let j = 0; j < nTokens * dim; j++) partial[j] = partial[j]! + scratch[j]!;
      });
      this.totals.syncWaitMs += this.clock.now() - started;
      return;
    }
    const devices = this.activeDevices(layerIndex, phase);
    const phaseId = SYNC_PHASE_IDS[phase];
    // Complete before the wait: nothing was silent, as far as this phase can tell.
    let longestSilenceMs = 0;
    if (!this.isComplete(positionStart, layerIndex, phaseId, devices)) {
      const critical = this.critical.filter((d) => devices.includes(d));
      const wait = new PhaseWait({
        clock: this.clock, deadline: this.deadline, phaseStartMs: this.phaseStartMs, step: { position: positionStart, layer: layerIndex, phase: phaseId },
        isComplete: (awaited) => this.isComplete(positionStart, layerIndex, phaseId, awaited === "all" ? devices : critical),
        onCriticalOverdue: () => this.chaseCritical(positionStart, layerIndex, phaseId, critical),
      });
      this.waiting = wait;
      longestSilenceMs = await wait.done;
      this.waiting = undefined;
    }
    const completeMs = this.clock.now() - this.phaseStartMs;
    let allArrived = true;
    for (const device of devices) {
      const link = this.links[device - 1]!;
      const received = this.receiver.chunksReceived(positionStart, layerIndex, phaseId, device);
      link.stats.recordMessage(this.chunks.length, received);
      link.stats.recordDeadline(received === this.chunks.length ? 1 : 0, received === this.chunks.length ? 0 : 1);
      if (received < this.chunks.length) {
        allArrived = false;
        this.totals.droppedContributions++;
        this.totals.droppedGroups += this.groupCount(device, layerIndex, phase);
      }
      if (received === 0) continue;
      // Missing chunks are zeros in the row: a lost chunk drops only its range.
      const row = this.receiver.senderValues(positionStart, layerIndex, phaseId, device)!;
      for (let j = 0; j < dim; j++) partial[j] = partial[j]! + row[j]!;
    }
    if (allArrived) this.deadline.learn(completeMs, longestSilenceMs);
    this.totals.syncWaitMs += this.clock.now() - started;
  }

  /** The devices whose contribution to this phase is waited for up to the hard deadline. */
  private criticalDevices(step: PhaseStep, devices: readonly number[]): number[] {
    const { layerIndex, phase } = step;
    const critical = new Set<number>();
    if (this.options.isCritical !== undefined) for (const d of devices) if (this.options.isCritical(d, layerIndex, phase)) critical.add(d);
    const predictor = this.options.predictor;
    const planned = this.schedule?.critical[layerIndex]?.[phase];
    if (predictor === undefined && planned !== undefined) for (const d of planned) if (d !== 0 && devices.includes(d)) critical.add(d);
    if (predictor !== undefined) {
      const started = this.clock.now();
      const nGroups = this.placement.layers[layerIndex]![phase].length;
      if (this.options.importance === "static") predictor.staticImportance(layerIndex, phase, this.scores);
      // Skipping already predicted this single token's scores in beginPhase.
      else if (this.skipper !== undefined && step.nTokens === 1) this.scores.set(this.skipper.lastScores.subarray(0, this.scores.length));
      else predictor.predict(layerIndex, phase, step.input, 0, this.scores);
      const nCritical = Math.ceil((this.options.criticalFraction ?? 0.25) * nGroups);
      const owners = this.placement.layers[layerIndex]![phase];
      for (const g of topK(this.scores, 0, nGroups, nCritical)) if (owners[g] !== 0 && devices.includes(owners[g]!)) critical.add(owners[g]!);
      this.totals.predictorMs += this.clock.now() - started;
    }
    return [...critical];
  }

  private sendTimeUs(): number {
    return Math.floor(this.clock.now() * 1000) >>> 0;
  }

  /** One chunk of the current input (in `encodedInput`, for `inputStep`) to one worker. */
  private sendInputChunk(link: WorkerLink, chunkIndex: number, isDuplicateCopy: boolean, sendTimeUs: number): void {
    const step = this.inputStep!;
    const chunk = this.chunks[chunkIndex]!;
    const header = {
      kind: "input" as const, sessionId: this.sessionId, epoch: this.epoch, senderIndex: 0, layer: step.layer, phase: step.phase, isDuplicateCopy,
      chunkIndex, nChunks: this.chunks.length, position: step.position, offset: chunk.offset, nElements: chunk.nElements, sendTimeUs,
    };
    const length = encodeDatagramBlocks(header, this.encodedInput, wireByteLength(chunk.offset, this.wire), link.sessionKey, this.datagram, this.wire);
    const address = link.address.host;
    // dgram.send reads its buffer later, so each datagram needs its own copy.
    const datagram = Buffer.from(this.datagram.subarray(0, length));
    link.emulator.send(datagram, (bytes) => this.udp.send(bytes, link.udpPort, address));
    this.totals.datagramsSent++;
    this.totals.bytesSent += length;
  }

  /** A worker lost a chunk of the current input and asks for it: send it again (a bounded number of times). */
  private onNack(message: Buffer): void {
    const request = openNack(
      message,
      { sessionId: this.sessionId, epoch: this.epoch, nChunks: this.chunks.length, nLayers: this.options.model.config.nLayers },
      (sender) => (sender >= 1 && sender <= this.links.length && this.links[sender - 1]!.state === "active" ? this.links[sender - 1]!.sessionKey : undefined),
    );
    const step = this.inputStep;
    if (typeof request === "string" || step === undefined) return;
    if (request.position !== step.position || request.layer !== step.layer || request.phase !== step.phase) return;
    const key = request.senderIndex * 65536 + request.chunkIndex;
    const timesResent = this.resentInputChunks.get(key) ?? 0;
    if (timesResent >= MAX_NACK_TRIES) return;
    this.resentInputChunks.set(key, timesResent + 1);
    this.sendInputChunk(this.links[request.senderIndex - 1]!, request.chunkIndex, true, this.sendTimeUs());
    this.totals.chunksResent++;
  }

  /** Stops every worker session, stops rejoining, and closes the sockets. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.replanner?.close();
    await Promise.all(this.links.map(async (link) => {
      link.rejoinTimer?.cancel();
      if (link.state !== "lost") await link.connection.close().catch(() => undefined);
      link.emulator.destroy();
      link.stream.destroy();
    }));
    this.udp.close();
  }

  /** The current soft deadline, from the phase's start. */
  softDeadlineMs(): number {
    return this.deadline.softMs();
  }

  /** The relaxed-mode wait as learned so far: soft deadline, grace after the latest arrival, hard deadline. */
  deadlines(): { softMs: number; graceMs: number; hardMs: number } {
    return { softMs: this.deadline.softMs(), graceMs: this.deadline.graceMs(), hardMs: this.deadline.hardMs };
  }

  private groupCount(device: number, layerIndex: number, phase: GroupKind): number {
    let n = 0;
    for (const owner of this.placement.layers[layerIndex]![phase]) if (owner === device) n++;
    return n;
  }

  private activeDevices(layerIndex: number, phase: GroupKind): number[] {
    return devicesInPhase(this.placement, layerIndex, phase).filter((d) => d !== 0 && this.links[d - 1]!.state === "active");
  }

  /** Complete when every listed device that is still active sent all its chunks (a lost one will send nothing more). */
  private isComplete(position: number, layer: number, phase: SyncPhaseId, devices: readonly number[]): boolean {
    return devices.every((d) => this.links[d - 1]!.state !== "active" || this.receiver.chunksReceived(position, layer, phase, d) === this.chunks.length);
  }

  private onDatagram(message: Buffer): void {
    if (isNackDatagram(message)) {
      this.onNack(message);
      return;
    }
    const result = this.receiver.accept(message);
    if (!result.ok) return;
    const { senderIndex, sendTimeUs, position, layer, phase } = result.header;
    const link = this.links[senderIndex - 1]!;
    this.totals.bytesReceived += message.byteLength;
    link.stats.recordTransit(sendTimeUs, this.clock.now());
    if (this.receiver.chunksReceived(position, layer, phase, senderIndex) === this.chunks.length) link.stats.recordRtt(this.clock.now() - this.phaseStartMs);
    else this.nackLaterIfMissing(link, position, layer, phase);
    this.waiting?.onArrival(position, layer, phase);
  }

  /**
   * Past the soft deadline a critical contribution is still missing: ask its worker for the
   * partial-sum chunks it may have sent (a NACK, answered from what it keeps), and send it the
   * input again in case that was what got lost (a duplicate of an input it had is dropped).
   */
  private chaseCritical(position: number, layer: number, phase: SyncPhaseId, critical: readonly number[]): void {
    for (const device of critical) {
      const link = this.links[device - 1]!;
      if (link.state !== "active") continue;
      const missing = this.receiver.missingChunks(position, layer, phase, device);
      for (const chunkIndex of missing) this.sendNack(link, position, layer, phase, chunkIndex);
      const step = this.inputStep;
      if (missing.length === this.chunks.length && step !== undefined && step.position === position && step.layer === layer && step.phase === phase) {
        for (let chunkIndex = 0; chunkIndex < this.chunks.length; chunkIndex++) this.sendInputChunk(link, chunkIndex, true, this.sendTimeUs());
      }
    }
  }

  private sendNack(link: WorkerLink, position: number, layer: number, phase: SyncPhaseId, chunkIndex: number): void {
    const length = encodeNack({ sessionId: this.sessionId, epoch: this.epoch, senderIndex: 0, position, layer, phase, chunkIndex, nChunks: this.chunks.length }, link.sessionKey, this.nackDatagram);
    const datagram = Buffer.from(this.nackDatagram.subarray(0, length));
    link.emulator.send(datagram, (bytes) => this.udp.send(bytes, link.udpPort, link.address.host));
    this.totals.nacksSent++;
  }

  /** Some chunks of a worker's partial sum arrived: the others should follow at once, else ask for them. */
  private nackLaterIfMissing(link: WorkerLink, position: number, layer: number, phase: SyncPhaseId): void {
    const sessionKey = link.sessionKey;
    this.nacks.onChunk(`${this.epoch}:${link.index}:${position}:${layer}:${phase}`, () => this.receiver.missingChunks(position, layer, phase, link.index), (chunkIndex) => {
      if (link.sessionKey !== sessionKey || link.state !== "active") return;
      this.sendNack(link, position, layer, phase, chunkIndex);
    });
  }

  private startNewSequence(): void {
    this.epoch = (this.epoch + 1) >>> 0;
    this.receiver.reset(this.epoch, 0, 0, 0);
    for (const link of this.links) if (link.state === "active") link.connection.send({ type: "reset" });
  }

  /** Rejoined workers take their groups from this token on; the positions before it stay masked in their KV caches. */
  private activateRejoined(position: number): void {
    for (const link of this.links) {
      if (link.state !== "ready") continue;
      link.connection.send(planMessage(this.placement, this.layout, link.index, this.epoch, this.wire, position, this.options.copies ?? 1, workerSkipBelow(this.options)));
      link.state = "active";
      this.totals.workersRejoined++;
      this.options.log?.(`halo coordinator: worker ${link.index} rejoined at position ${position}`);
    }
  }

  private async pump(link: WorkerLink, connection: ControlConnection): Promise<void> {
    try {
      for await (const message of connection) this.onControlMessage(link, message);
    } catch (error) {
      this.options.log?.(`halo coordinator: worker ${link.index}: ${describeError(error)}`);
    }
    if (link.connection !== connection || this.closed) return;
    connection.destroy();
    link.state = "lost";
    this.totals.workersLost++;
    link.stream.destroy();
    for (const resolve of link.waiting.values()) resolve(undefined);
    link.waiting.clear();
    link.profileRequest?.done();
    this.replanner?.onLost(link);
    // A phase waiting on the lost worker need not wait for its deadline.
    this.waiting?.check();
    this.scheduleRejoin(link);
  }

  private scheduleRejoin(link: WorkerLink): void {
    const interval = this.options.rejoinIntervalMs ?? 1000;
    if (interval <= 0 || this.closed) return;
    link.rejoinTimer = this.clock.setTimer(interval, () => {
      link.rejoinTimer = undefined;
      void this.tryRejoin(link);
    });
  }

  private async tryRejoin(link: WorkerLink): Promise<void> {
    if (this.closed || link.state !== "lost") return;
    let joined: { connection: ControlConnection; udpPort: number };
    let answer: PlanAnswer;
    try {
      const { clusterKey, modelSha256, model } = this.options;
      joined = await joinWorker(link.address, link.index, { clusterKey, modelSha256, modelName: model.config.name, clock: this.clock, sessionId: this.sessionId, epoch: this.epoch, udpPort: this.udp.address().port });
    } catch {
      // Still down (or refusing): try again later, quietly.
      this.scheduleRejoin(link);
      return;
    }
    try {
      // The worker loads its weights now (or receives them); it starts computing at the next token's plan.
      answer = await sendPlan(joined.connection, planMessage(this.placement, this.layout, link.index, this.epoch, this.wire, Math.max(0, this.lastPositionStart), this.options.copies ?? 1, workerSkipBelow(this.options)), shardSource(this.options, this.layout, this.placement, link.index, this.clock));
    } catch (error) {
      this.options.log?.(`halo coordinator: worker ${link.index} joined again but its plan failed: ${describeError(error)}`);
      joined.connection.destroy();
      this.scheduleRejoin(link);
      return;
    }
    if (this.closed) {
      joined.connection.destroy();
      return;
    }
    reconnectWorkerLink(link, joined.connection, joined.udpPort, (this.options.seed ?? 1) * 7919 + link.index + this.totals.workersRejoined + 2, this.clock, answer);
    void this.pump(link, joined.connection);
  }

  private onControlMessage(link: WorkerLink, message: ControlMessage): void {
    if (this.replanner?.onMessage(link, message) === true) return;
    if (message.type === "partial") {
      const key = stepKey(message.position, message.layer, message.phase);
      const resolve = link.waiting.get(key);
      if (resolve === undefined) return;
      link.waiting.delete(key);
      this.totals.bytesReceived += message.data.byteLength;
      link.stats.recordRtt(this.clock.now() - this.phaseStartMs);
      resolve(message.data);
    } else {
      if (message.type === "error") this.options.log?.(`halo coordinator: worker ${link.index} reported ${message.code}: ${message.message}`);
      onProfileMessage(link, message);
    }
  }
}
