/**
 * A worker: listens for one coordinator at a time, authenticates it, checks that both hold the
 * same model, takes its placement, and computes its groups' partial sums, for inputs arriving
 * as UDP datagrams (relaxed) or TCP messages (prefill, strict). An input whose datagrams did not
 * all arrive is never computed, so the positions it covers stay masked in this worker's KV cache.
 */
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import { createServer, type Server, type Socket } from "node:net";
import { cpus } from "node:os";
import { HaloError, describeError, systemClock, type Clock } from "../base/index.js";
import { QUANT_TRAITS, type MatrixKernels } from "../kernels/index.js";
import type { LoadedModel } from "../model/index.js";
import {
  ControlConnection, DATAGRAM_MAX_BYTES, DatagramReceiver, LossyUdpSocket, NACK_BYTES, SYNC_PHASE_IDS, StreamLinkEmulator, ZERO_LINK_PROFILE,
  encodeDatagram, encodeNack, isNackDatagram, openNack, planChunks,
  type ControlMessage, type DatagramChunk, type LinkProfile, type SyncPhaseId, type WireFormat,
} from "../net/index.js";
import { createGroupLayout, type GroupKind, type GroupLayout, type Placement } from "../partition/index.js";
import { GroupWorker } from "./groupWorker.js";
import { NackScheduler } from "./nackScheduler.js";
import { decodeVectors, encodeVectors } from "./wireVectors.js";

export interface WorkerNodeOptions {
  model: LoadedModel;
  modelSha256: string;
  kernels: MatrixKernels;
  clusterKey: Uint8Array;
  /** Defaults to 127.0.0.1. */
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** KV cache length. Defaults to the model's context, capped at 4096. */
  contextLength?: number;
  /** The emulated link for datagrams this worker sends (halo cluster --local). */
  linkProfile?: LinkProfile;
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
  receiver: DatagramReceiver | undefined;
  /** The connection's session key (the connection hands out a copy per call). */
  key: Buffer;
  /** The plan's wire format and its chunk plan. */
  wire: WireFormat;
  chunks: DatagramChunk[];
  /** Partial sums sent over TCP (strict mode, prefill) cross the emulated link here. */
  stream: StreamLinkEmulator;
}

export class WorkerNode {
  private session: Session | undefined;
  private groupWorker: GroupWorker;
  private layout: GroupLayout;
  private readonly udp: LossyUdpSocket;
  private readonly input: Float32Array;
  private readonly datagram = new Uint8Array(DATAGRAM_MAX_BYTES);
  private closed = false;
  /** Inputs computed, partial datagrams sent, NACKs sent for lost input chunks, partial chunks sent again on request. */
  readonly counters = { stepsComputed: 0, stepsMissed: 0, datagramsSent: 0, nacksSent: 0, chunksResent: 0 };
  private readonly nacks: NackScheduler;
  private readonly nackDatagram = new Uint8Array(NACK_BYTES);
  /** The partial-sum datagrams of the last few steps, by step index, so a lost chunk can be sent again. */
  private readonly recentPartials = new Map<number, Buffer[]>();

  private constructor(private readonly options: WorkerNodeOptions, private readonly server: Server, udpSocket: UdpSocket) {
    const { model } = options;
    this.layout = createGroupLayout(model.config);
    this.nacks = new NackScheduler(options.clock ?? systemClock);
    this.groupWorker = this.createGroupWorker();
    this.input = new Float32Array(512 * model.config.dim);
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
      udpSocket.bind(0, host, () => resolve());
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
  }

  private createGroupWorker(): GroupWorker {
    const { model } = this.options;
    const contextLength = this.options.contextLength ?? Math.min(model.config.contextLength, 4096);
    return new GroupWorker(model.config, model.weights, this.options.kernels, this.layout, contextLength, 512);
  }

  /** The coordinator chose another FFN block size: regroup (the KV cache starts empty anyway after join). */
  private useFfnBlockSize(ffnBlockSize: number): void {
    const ffnDown = this.options.model.weights.layers[0]!.ffnDown;
    const blockSize = QUANT_TRAITS[ffnDown.type].blockSize;
    if (ffnBlockSize % blockSize !== 0) throw new HaloError("HALO_ERR_MESSAGE_INVALID", `plan FFN block size ${ffnBlockSize} is not a multiple of the ${ffnDown.type} block size ${blockSize}`);
    this.layout = createGroupLayout(this.options.model.config, ffnBlockSize);
    this.groupWorker = this.createGroupWorker();
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
      connection = await ControlConnection.accept(socket, { clusterKey: this.options.clusterKey, clock: this.options.clock });
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
  }

  private async onMessage(connection: ControlConnection, socket: Socket, message: ControlMessage): Promise<void> {
    switch (message.type) {
      case "join": {
        if (this.session !== undefined && this.session.connection === connection) throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", "a second join on one connection");
        if (message.modelSha256 !== this.options.modelSha256) {
          connection.send({ type: "error", code: "HALO_ERR_MODEL_MISMATCH", message: `the coordinator's model is ${message.modelSha256}, this worker's is ${this.options.modelSha256}` });
          await connection.close();
          return;
        }
        this.session = {
          connection, nodeIndex: message.nodeIndex, sessionId: message.sessionId, epoch: message.epoch, coordinatorAddress: socket.remoteAddress ?? "127.0.0.1", coordinatorUdpPort: message.coordinatorUdpPort,
          receiver: undefined, key: connection.sessionKey, wire: "q8_0", chunks: planChunks(this.options.model.config.dim),
          stream: new StreamLinkEmulator({ profile: this.options.linkProfile ?? ZERO_LINK_PROFILE, seed: (this.options.seed ?? 1) + 104_729, clock: this.options.clock ?? systemClock }),
        };
        this.groupWorker.reset();
        connection.send({ type: "join-ok", udpPort: this.udpPort, profile: { nThreads: 1, memoryBytes: 0, kernels: this.options.kernels.name, cpuModel: cpus()[0]?.model ?? "unknown", matvecGflops: 0 } });
        return;
      }
      case "plan": {
        const session = this.requireSession(connection, "plan");
        const layers = Array.isArray(message.groups) ? message.groups : Array.from({ length: this.options.model.config.nLayers }, () => message.groups as Exclude<typeof message.groups, unknown[]>);
        if (layers.length !== this.options.model.config.nLayers) throw new HaloError("HALO_ERR_MESSAGE_INVALID", `plan for ${layers.length} layers, the model has ${this.options.model.config.nLayers}`);
        if (message.ffnBlockSize !== this.layout.ffnBlockSize) this.useFfnBlockSize(message.ffnBlockSize);
        const placement = placementFromRanges(layers, this.layout, message.ffnBlockSize, this.options.model.config.hiddenDim);
        this.groupWorker.setPlacement(placement, 1);
        session.epoch = message.epoch;
        session.wire = message.wire;
        session.chunks = planChunks(this.options.model.config.dim, message.wire);
        session.receiver = this.createReceiver(session, placement);
        this.recentPartials.clear();
        // A worker that joins mid-sequence starts at the coordinator's position; what came before stays masked.
        session.receiver.setCurrent(message.position, 0, 0);
        connection.send({ type: "plan-ok", sequence: message.sequence });
        return;
      }
      case "input": {
        const session = this.requireSession(connection, "input");
        const nValues = message.nTokens * this.options.model.config.dim;
        if (message.nTokens > 512) throw new HaloError("HALO_ERR_MESSAGE_INVALID", `${message.nTokens} tokens in one input; at most 512`);
        decodeVectors(message.data, nValues, this.input, session.wire);
        const partial = this.groupWorker.compute(message.phase, message.layer, message.position, message.nTokens, this.input);
        const data = encodeVectors(partial, nValues, session.wire);
        const reply: ControlMessage = { type: "partial", position: message.position, nTokens: message.nTokens, layer: message.layer, phase: message.phase, data };
        session.stream.send(data.byteLength, () => {
          if (this.session === session) connection.send(reply);
        });
        this.counters.stepsComputed++;
        if (message.layer === this.options.model.config.nLayers - 1 && message.phase === "ffn") session.receiver?.setCurrent(message.position + message.nTokens, 0, 0);
        return;
      }
      case "reset": {
        const session = this.requireSession(connection, "reset");
        // A new sequence is a new epoch, so late datagrams of the old one are stale.
        session.epoch = (session.epoch + 1) >>> 0;
        session.receiver?.reset(session.epoch, 0, 0, 0);
        this.recentPartials.clear();
        this.groupWorker.reset();
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

  private requireSession(connection: ControlConnection, what: string): Session {
    if (this.session === undefined || this.session.connection !== connection) throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `${what} before join`);
    return this.session;
  }

  private createReceiver(session: Session, placement: Placement): DatagramReceiver {
    const { config } = this.options.model;
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
      mayContribute: (_sender, layer, phase) => this.groupWorker.groupsOf(layer, PHASES[phase]!).length > 0 && placement.layers[layer] !== undefined,
      maxStepsAhead: 2 * config.nLayers,
    });
  }

  private onDatagram(message: Buffer, _remote: RemoteInfo): void {
    const session = this.session;
    const receiver = session?.receiver;
    if (session === undefined || receiver === undefined) return;
    if (isNackDatagram(message)) {
      this.onNack(session, message);
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
    const skipped = stepIndex(position, layer, phase, this.options.model.config.nLayers) - stepIndex(receiver.position, receiver.layer, receiver.phase, this.options.model.config.nLayers);
    if (skipped > 0) this.counters.stepsMissed += skipped;
    receiver.setCurrent(position, layer, phase);
    const values = receiver.senderValues(position, layer, phase, 0)!;
    const phaseName = PHASES[phase]!;
    let partial: Float32Array;
    try {
      partial = this.groupWorker.compute(phaseName, layer, position, 1, values);
    } catch (error) {
      this.log(`cannot compute (${position}, ${layer}, ${phaseName}): ${describeError(error)}`);
      return;
    }
    this.sendPartial(session, position, layer, phase, partial);
    this.counters.stepsComputed++;
    const next = nextStep(position, layer, phase, this.options.model.config.nLayers);
    receiver.setCurrent(next.position, next.layer, next.phase);
  }

  /** The coordinator lost a chunk of a partial sum this worker sent: send it again, if it is still kept. */
  private onNack(session: Session, message: Buffer): void {
    const { nLayers } = this.options.model.config;
    const request = openNack(message, { sessionId: session.sessionId, epoch: session.epoch, nChunks: session.chunks.length, nLayers }, (sender) => (sender === 0 ? session.key : undefined));
    if (typeof request === "string") return;
    const datagram = this.recentPartials.get(stepIndex(request.position, request.layer, request.phase, nLayers))?.[request.chunkIndex];
    if (datagram === undefined) return;
    this.udp.send(datagram, session.coordinatorUdpPort, session.coordinatorAddress);
    this.counters.chunksResent++;
  }

  private sendPartial(session: Session, position: number, layer: number, phase: SyncPhaseId, partial: Float32Array): void {
    const chunks = session.chunks;
    const key = session.key;
    const sent: Buffer[] = [];
    const sendTimeUs = Math.floor((this.options.clock ?? systemClock).now() * 1000) >>> 0;
    chunks.forEach((chunk, chunkIndex) => {
      const header = { kind: "partial" as const, sessionId: session.sessionId, epoch: session.epoch, senderIndex: session.nodeIndex, layer, phase, isDuplicateCopy: false, chunkIndex, nChunks: chunks.length, position, offset: chunk.offset, nElements: chunk.nElements, sendTimeUs };
      const length = encodeDatagram(header, partial, chunk.offset, key, this.datagram, session.wire);
      const datagram = Buffer.from(this.datagram.subarray(0, length));
      sent.push(datagram);
      this.udp.send(datagram, session.coordinatorUdpPort, session.coordinatorAddress);
      this.counters.datagramsSent++;
    });
    this.recentPartials.set(stepIndex(position, layer, phase, this.options.model.config.nLayers), sent);
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

/** A placement with this device as 1 and everyone else as 0, from the ranges a plan message gives this worker. */
function placementFromRanges(layers: ReadonlyArray<{ attention: ReadonlyArray<readonly [number, number]>; ffn: ReadonlyArray<readonly [number, number]> }>, layout: GroupLayout, ffnBlockSize: number, hiddenDim: number): Placement {
  const nFfn = Math.ceil(hiddenDim / ffnBlockSize);
  if (ffnBlockSize !== layout.ffnBlockSize) throw new HaloError("HALO_ERR_MESSAGE_INVALID", `plan FFN block size ${ffnBlockSize}; this worker uses ${layout.ffnBlockSize}`);
  const owners = (ranges: ReadonlyArray<readonly [number, number]>, n: number): number[] => {
    const out = new Array<number>(n).fill(0);
    for (const [start, end] of ranges) {
      if (end > n) throw new HaloError("HALO_ERR_MESSAGE_INVALID", `group range [${start}, ${end}) outside [0, ${n})`);
      for (let g = start; g < end; g++) out[g] = 1;
    }
    return out;
  };
  return { nDevices: 2, layers: layers.map((l) => ({ attention: owners(l.attention, layout.nAttentionGroups), ffn: owners(l.ffn, nFfn) })) };
}
