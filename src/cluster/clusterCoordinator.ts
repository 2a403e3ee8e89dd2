/**
 * The coordinator side of a cluster, as the engine's Synchronizer. It connects to every worker,
 * authenticates, checks the model, sends each its groups, and then per phase: sends the normed
 * input (UDP datagrams in relaxed mode, TCP in strict mode and for prefill), computes its own
 * groups meanwhile (the engine does), and adds the workers' partial sums.
 *
 * Relaxed mode waits for every contribution only until a soft deadline learned from recent
 * completion times (an EWMA, times a margin, plus slack, capped by a hard deadline); whatever
 * has not arrived by then counts as zero for this token, and is counted. Strict mode waits for
 * all, like distributed-llama. A worker whose connection dies is dropped from every later phase.
 */
import { randomBytes } from "node:crypto";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { connect as tcpConnect } from "node:net";
import { HaloError, describeError, systemClock, type Clock } from "../base/index.js";
import type { PhaseStep, Synchronizer } from "../engine/index.js";
import type { LoadedModel } from "../model/index.js";
import {
  ControlConnection, DATAGRAM_MAX_BYTES, DatagramReceiver, LinkEmulator, SYNC_PHASE_IDS, ZERO_LINK_PROFILE, encodeDatagramBlocks, encodeQ8Range, planChunks, q8ByteLength,
  type ControlMessage, type DatagramChunk, type LinkProfile,
} from "../net/index.js";
import { createGroupLayout, devicesInPhase, groupsOfDevice, proportionalPlacement, type GroupKind, type GroupLayout, type GroupRange, type Placement } from "../partition/index.js";
import { decodeVectors, encodeVectors } from "./wireVectors.js";

export type SyncMode = "relaxed" | "strict";

export interface WorkerAddress {
  host: string;
  port: number;
}

/**
 * The relaxed-mode wait: like TCP's retransmission timer, mean completion time plus four mean
 * deviations (both EWMAs) plus slack, never below minMs nor above hardMs. Before any sample
 * it is hardMs.
 */
export interface DeadlineOptions {
  /** The longest a phase waits. Defaults to 250 ms. */
  hardMs?: number;
  /** The shortest soft deadline, so scheduling noise on a loaded machine is not taken for loss. Defaults to 5 ms. */
  minMs?: number;
  /** Added to the learned deadline. Defaults to 1 ms. */
  slackMs?: number;
}

export interface ClusterOptions {
  model: LoadedModel;
  modelSha256: string;
  clusterKey: Uint8Array;
  workers: readonly WorkerAddress[];
  /** Share of each device, coordinator first (workers + 1 entries). Defaults to equal shares. */
  shares?: readonly number[];
  mode: SyncMode;
  deadlines?: DeadlineOptions;
  /** The emulated link for datagrams sent to each worker (halo cluster --local). */
  linkProfiles?: readonly LinkProfile[];
  seed?: number;
  clock?: Clock;
  /** Bind address for the coordinator's UDP socket. Defaults to 127.0.0.1 when every worker is on loopback, else 0.0.0.0. */
  host?: string;
  log?: (line: string) => void;
}

export interface PhaseStats {
  /** Time spent waiting for workers after the local groups were done. */
  syncWaitMs: number;
  /** Worker contributions that were incomplete at the deadline (dropped for this token). */
  droppedContributions: number;
  /** Contributions expected. */
  expectedContributions: number;
  datagramsSent: number;
  bytesSent: number;
}

interface WorkerLink {
  index: number;
  address: WorkerAddress;
  connection: ControlConnection;
  udpPort: number;
  emulator: LinkEmulator;
  lost: boolean;
  /** Pending reliable partials, by step key. */
  waiting: Map<string, { resolve: (data: Uint8Array | undefined) => void }>;
}

function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

const stepKey = (position: number, layer: number, phase: GroupKind): string => `${position}:${layer}:${phase}`;

export class ClusterCoordinator implements Synchronizer {
  readonly layout: GroupLayout;
  readonly placement: Placement;
  /** Totals since connect. */
  readonly totals: PhaseStats = { syncWaitMs: 0, droppedContributions: 0, expectedContributions: 0, datagramsSent: 0, bytesSent: 0 };
  private readonly clock: Clock;
  private readonly coordinatorGroups: Array<Record<GroupKind, GroupRange[]>>;
  private readonly chunks: DatagramChunk[];
  private readonly blocks: Uint8Array;
  private readonly datagram = new Uint8Array(DATAGRAM_MAX_BYTES);
  private readonly receiver: DatagramReceiver;
  private epoch: number;
  private lastPositionStart = -1;
  private completionEwmaMs: number | undefined;
  private completionDeviationMs = 0;
  private pendingRelaxed: { position: number; layer: number; phase: 0 | 1; devices: number[]; resolve: () => void } | undefined;
  private reliableWaits: Array<Promise<Uint8Array | undefined>> = [];
  private phaseStartMs = 0;
  private closed = false;

  private constructor(
    private readonly options: ClusterOptions,
    private readonly links: WorkerLink[],
    private readonly udp: UdpSocket,
    private readonly sessionId: number,
    epoch: number,
    layout: GroupLayout,
    placement: Placement,
  ) {
    this.clock = options.clock ?? systemClock;
    this.layout = layout;
    this.placement = placement;
    this.epoch = epoch;
    const { config } = options.model;
    this.coordinatorGroups = placement.layers.map((_, l) => ({ attention: groupsOfDevice(placement, l, "attention", 0), ffn: groupsOfDevice(placement, l, "ffn", 0) }));
    this.chunks = planChunks(config.dim);
    this.blocks = new Uint8Array(q8ByteLength(config.dim));
    this.receiver = new DatagramReceiver({
      kind: "partial",
      sessionId,
      epoch,
      dim: config.dim,
      nLayers: config.nLayers,
      nSenders: links.length + 1,
      keys: (sender) => (sender >= 1 && sender <= links.length && !links[sender - 1]!.lost ? links[sender - 1]!.connection.sessionKey : undefined),
      mayContribute: (sender, layer, phase) => placement.layers[layer]![phase === 0 ? "attention" : "ffn"].includes(sender),
    });
    udp.on("message", (message: Buffer) => this.onDatagram(message));
    for (const link of links) void this.pump(link);
  }

  /** Connects to every worker, authenticates, joins and sends the plan. */
  static async connect(options: ClusterOptions): Promise<ClusterCoordinator> {
    const { model } = options;
    const nDevices = options.workers.length + 1;
    const shares = options.shares ?? new Array<number>(nDevices).fill(1);
    if (shares.length !== nDevices) throw new HaloError("HALO_ERR_USAGE", `${shares.length} shares for ${nDevices} devices (the coordinator and ${options.workers.length} workers)`);
    const layout = createGroupLayout(model.config);
    const placement = proportionalPlacement(layout, model.config.nLayers, shares);
    // Workers off loopback reach the coordinator at whatever address routes to it.
    const host = options.host ?? (options.workers.every((w) => isLoopbackHost(w.host)) ? "127.0.0.1" : "0.0.0.0");
    const udp = createSocket(host.includes(":") ? "udp6" : "udp4");
    udp.on("error", (error) => options.log?.(`halo coordinator: udp error: ${describeError(error)}`));
    await new Promise<void>((resolve, reject) => {
      udp.once("error", reject);
      udp.bind(0, host, () => resolve());
    });
    const sessionId = randomBytes(4).readUInt32LE(0);
    const epoch = 1;
    const clock = options.clock ?? systemClock;
    const links: WorkerLink[] = [];
    try {
      for (const [i, address] of options.workers.entries()) {
        const index = i + 1;
        const socket = tcpConnect({ host: address.host, port: address.port });
        socket.setNoDelay(true);
        socket.on("error", () => {
          // Reported through the connection's close event or the handshake's rejection.
        });
        await new Promise<void>((resolve, reject) => {
          socket.once("connect", () => resolve());
          socket.once("error", (error) => reject(new HaloError("HALO_ERR_CONNECTION_CLOSED", `cannot reach worker ${address.host}:${address.port}: ${describeError(error)}`)));
        });
        const connection = await ControlConnection.connect(socket, { clusterKey: options.clusterKey, clock });
        connection.send({ type: "join", sessionId, epoch, nodeIndex: index, modelSha256: options.modelSha256, modelName: model.config.name.slice(0, 256), coordinatorUdpPort: udp.address().port });
        const joined = await connection.receive({ deadlineMs: clock.now() + 30_000 });
        if (joined.type === "error") throw new HaloError("HALO_ERR_PEER_REJECTED", `worker ${address.host}:${address.port} refused to join: ${joined.message} [${joined.code}]`);
        if (joined.type !== "join-ok") throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `worker ${address.host}:${address.port} answered join with '${joined.type}'`);
        const groups = placement.layers.map((_, l) => ({
          attention: groupsOfDevice(placement, l, "attention", index).map((r) => [r.start, r.end] as [number, number]),
          ffn: groupsOfDevice(placement, l, "ffn", index).map((r) => [r.start, r.end] as [number, number]),
        }));
        connection.send({ type: "plan", sequence: 1, epoch, groups, ffnBlockSize: layout.ffnBlockSize, wire: "q8_0", position: 0 });
        const planned = await connection.receive({ deadlineMs: clock.now() + 30_000 });
        if (planned.type !== "plan-ok") throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `worker ${address.host}:${address.port} answered plan with '${planned.type}'`);
        const profile = options.linkProfiles?.[i] ?? ZERO_LINK_PROFILE;
        links.push({ index, address, connection, udpPort: joined.udpPort, emulator: new LinkEmulator({ profile, seed: (options.seed ?? 1) * 7919 + index, clock }), lost: false, waiting: new Map() });
      }
    } catch (error) {
      for (const link of links) link.connection.destroy();
      udp.close();
      throw error;
    }
    return new ClusterCoordinator(options, links, udp, sessionId, epoch, layout, placement);
  }

  get nDevices(): number {
    return this.links.length + 1;
  }

  /** Workers whose connection is gone. */
  get lostWorkers(): number[] {
    return this.links.filter((l) => l.lost).map((l) => l.index);
  }

  localGroups(layerIndex: number, phase: GroupKind): readonly GroupRange[] {
    return this.coordinatorGroups[layerIndex]![phase];
  }

  beginPhase(step: PhaseStep): void {
    const { layerIndex, phase, positionStart, nTokens } = step;
    if (positionStart === 0 && layerIndex === 0 && phase === "attention" && this.lastPositionStart >= 0) this.startNewSequence();
    this.lastPositionStart = positionStart;
    this.phaseStartMs = this.clock.now();
    const devices = this.activeDevices(layerIndex, phase);
    this.totals.expectedContributions += devices.length;
    if (this.options.mode === "strict" || nTokens > 1) {
      const data = encodeVectors(step.input, nTokens * this.options.model.config.dim);
      this.reliableWaits = devices.map((device) => {
        const link = this.links[device - 1]!;
        const wait = new Promise<Uint8Array | undefined>((resolve) => link.waiting.set(stepKey(positionStart, layerIndex, phase), { resolve }));
        link.connection.send({ type: "input", position: positionStart, nTokens, layer: layerIndex, phase, data });
        this.totals.bytesSent += data.byteLength;
        return wait;
      });
      return;
    }
    const phaseId = SYNC_PHASE_IDS[phase];
    this.receiver.setCurrent(positionStart, layerIndex, phaseId);
    encodeQ8Range(step.input, 0, this.options.model.config.dim, this.blocks, 0);
    const sendTimeUs = Math.floor(this.clock.now() * 1000) >>> 0;
    for (const device of devices) {
      const link = this.links[device - 1]!;
      this.chunks.forEach((chunk, chunkIndex) => {
        const header = { kind: "input" as const, sessionId: this.sessionId, epoch: this.epoch, senderIndex: 0, layer: layerIndex, phase: phaseId, isDuplicateCopy: false, chunkIndex, nChunks: this.chunks.length, position: positionStart, offset: chunk.offset, nElements: chunk.nElements, sendTimeUs };
        const length = encodeDatagramBlocks(header, this.blocks, q8ByteLength(chunk.offset), link.connection.sessionKey, this.datagram);
        const address = link.address.host;
        // dgram.send reads its buffer later, so each datagram needs its own copy.
        const datagram = Buffer.from(this.datagram.subarray(0, length));
        link.emulator.send(datagram, (bytes) => this.udp.send(bytes, link.udpPort, address));
        this.totals.datagramsSent++;
        this.totals.bytesSent += length;
      });
    }
  }

  async endPhase(step: PhaseStep, partial: Float32Array): Promise<void> {
    const { layerIndex, phase, positionStart, nTokens } = step;
    const dim = this.options.model.config.dim;
    const started = this.clock.now();
    const devices = this.activeDevices(layerIndex, phase);
    if (this.options.mode === "strict" || nTokens > 1) {
      const results = await Promise.all(this.reliableWaits);
      const scratch = new Float32Array(nTokens * dim);
      results.forEach((data, i) => {
        if (data === undefined) {
          this.totals.droppedContributions++;
          this.options.log?.(`halo coordinator: worker ${devices[i]} lost; its groups are dropped for (${positionStart}, ${layerIndex}, ${phase})`);
          return;
        }
        decodeVectors(data, nTokens * dim, scratch);
        for (let j = 0; j < nTokens * dim; j++) partial[j] = partial[j]! + scratch[j]!;
      });
      this.totals.syncWaitMs += this.clock.now() - started;
      return;
    }
    const phaseId = SYNC_PHASE_IDS[phase];
    if (!this.isComplete(positionStart, layerIndex, phaseId, devices)) {
      await new Promise<void>((resolve) => {
        const deadline = this.phaseStartMs + this.softDeadlineMs();
        const timer = this.clock.setTimer(deadline - this.clock.now(), () => {
          this.pendingRelaxed = undefined;
          resolve();
        });
        this.pendingRelaxed = { position: positionStart, layer: layerIndex, phase: phaseId, devices, resolve: () => {
          timer.cancel();
          this.pendingRelaxed = undefined;
          resolve();
        } };
      });
    }
    const completeMs = this.clock.now() - this.phaseStartMs;
    let allArrived = true;
    for (const device of devices) {
      const received = this.receiver.chunksReceived(positionStart, layerIndex, phaseId, device);
      if (received < this.chunks.length) {
        allArrived = false;
        this.totals.droppedContributions++;
      }
      if (received === 0) continue;
      // Missing chunks are zeros in the row: a lost chunk drops only its range.
      const row = this.receiver.senderValues(positionStart, layerIndex, phaseId, device)!;
      for (let j = 0; j < dim; j++) partial[j] = partial[j]! + row[j]!;
    }
    if (allArrived) this.learnCompletion(completeMs);
    this.totals.syncWaitMs += this.clock.now() - started;
  }

  /** Stops every worker session and closes the sockets. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.links.map(async (link) => {
      if (!link.lost) await link.connection.close().catch(() => undefined);
      link.emulator.destroy();
    }));
    this.udp.close();
  }

  /** RFC 6298's smoothing: mean gain 1/8, deviation gain 1/4. */
  private learnCompletion(completeMs: number): void {
    if (this.completionEwmaMs === undefined) {
      this.completionEwmaMs = completeMs;
      this.completionDeviationMs = completeMs / 2;
      return;
    }
    this.completionDeviationMs = 0.75 * this.completionDeviationMs + 0.25 * Math.abs(completeMs - this.completionEwmaMs);
    this.completionEwmaMs = 0.875 * this.completionEwmaMs + 0.125 * completeMs;
  }

  /** The current soft deadline, from the phase's start. */
  softDeadlineMs(): number {
    const d = this.options.deadlines ?? {};
    const hard = d.hardMs ?? 250;
    if (this.completionEwmaMs === undefined) return hard;
    const learned = this.completionEwmaMs + 4 * this.completionDeviationMs + (d.slackMs ?? 1);
    return Math.min(hard, Math.max(d.minMs ?? 5, learned));
  }

  private activeDevices(layerIndex: number, phase: GroupKind): number[] {
    return devicesInPhase(this.placement, layerIndex, phase).filter((d) => d !== 0 && !this.links[d - 1]!.lost);
  }

  private isComplete(position: number, layer: number, phase: 0 | 1, devices: readonly number[]): boolean {
    return devices.every((d) => this.receiver.chunksReceived(position, layer, phase, d) === this.chunks.length);
  }

  private onDatagram(message: Buffer): void {
    const result = this.receiver.accept(message);
    const pending = this.pendingRelaxed;
    if (!result.ok || pending === undefined) return;
    if (this.isComplete(pending.position, pending.layer, pending.phase, pending.devices)) pending.resolve();
  }

  private startNewSequence(): void {
    this.epoch = (this.epoch + 1) >>> 0;
    this.receiver.reset(this.epoch, 0, 0, 0);
    for (const link of this.links) if (!link.lost) link.connection.send({ type: "reset" });
  }

  private async pump(link: WorkerLink): Promise<void> {
    try {
      for await (const message of link.connection) this.onControlMessage(link, message);
    } catch (error) {
      this.options.log?.(`halo coordinator: worker ${link.index}: ${describeError(error)}`);
    }
    link.lost = true;
    for (const waiter of link.waiting.values()) waiter.resolve(undefined);
    link.waiting.clear();
    // A phase waiting on the lost worker need not wait for its deadline.
    const pending = this.pendingRelaxed;
    if (pending !== undefined && pending.devices.includes(link.index)) {
      const others = pending.devices.filter((d) => d !== link.index);
      if (this.isComplete(pending.position, pending.layer, pending.phase, others)) pending.resolve();
    }
  }

  private onControlMessage(link: WorkerLink, message: ControlMessage): void {
    if (message.type === "partial") {
      const key = stepKey(message.position, message.layer, message.phase);
      const waiter = link.waiting.get(key);
      if (waiter === undefined) return;
      link.waiting.delete(key);
      waiter.resolve(message.data);
    } else if (message.type === "error") {
      this.options.log?.(`halo coordinator: worker ${link.index} reported ${message.code}: ${message.message}`);
    }
  }
}
