/**
 * What the dashboard shows, as plain JSON-ready objects: a snapshot on connect, a cluster status
 * every second, and one sample per generated token that splits its time into compute and sync
 * wait. It listens on `halo:server:generation` and reads the cluster view; it knows no HTTP
 * (the extension writes what it emits as server-sent events).
 *
 * The token split reads the coordinator's running totals at the moment a token is published, so
 * the sync wait and dropped groups charged to a token are those accrued since the previous one.
 * The diagnostics channel is process-wide: two servers in one process would see each other's
 * tokens (halo serve runs one).
 */
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { SERVER_GENERATION_CHANNEL, type GenerationEvent } from "../completionRoutes.js";
import type { ServerContext } from "../serverContext.js";

export interface DeviceStatus {
  index: number;
  name: string;
  /** From the device's measured profile; null when it sent none (or a single node, never profiled). */
  attentionGroupMs: number | null;
  ffnGroupMs: number | null;
  memoryBudgetBytes: number | null;
  status: "active" | "lost";
}

export interface LinkStatus {
  worker: number;
  address: string;
  state: string;
  lossRatio: number;
  lateRatio: number;
  rttMs: number | null;
  jitterMs: number;
}

export interface ClusterStatus {
  /** Unix ms. */
  at: number;
  devices: DeviceStatus[];
  links: LinkStatus[];
  /** Running totals since start (zeros on a single node). */
  totals: { syncWaitMs: number; droppedGroups: number; droppedContributions: number; expectedContributions: number; bytesSent: number; bytesReceived: number };
  queue: { active: number; waiting: number; capacity: number };
}

export interface TokenSample {
  /** The generation (request) id. */
  id: string;
  /** 1-based within its generation; the first includes the prompt's prefill. */
  index: number;
  ms: number;
  computeMs: number;
  syncWaitMs: number;
  droppedGroups: number;
}

export interface PlacementView {
  nDevices: number;
  /** (nLayers) each group's device, per phase. */
  layers: Array<{ attention: readonly number[]; ffn: readonly number[] }>;
}

export interface DashboardSnapshot extends ClusterStatus {
  model: string;
  contextLength: number;
  placement: PlacementView;
  /** The latest tokens, oldest first, so a page opened mid-run has a chart at once. */
  recentTokens: TokenSample[];
  /** The latest statuses' dropped-group totals, oldest first. */
  droppedHistory: Array<{ at: number; droppedGroups: number }>;
}

export type DashboardEvent =
  | { type: "status"; data: ClusterStatus }
  /** The placement changed (a live re-plan took effect): every group's device again. */
  | { type: "placement"; data: PlacementView }
  | { type: "token"; data: TokenSample }
  | { type: "end"; data: { id: string; finishReason: string; completionTokens: number } };

const RECENT_TOKENS = 240;
const DROPPED_HISTORY = 120;

export class DashboardFeed {
  readonly #context: ServerContext;
  readonly #listeners = new Set<(event: DashboardEvent) => void>();
  readonly #recentTokens: TokenSample[] = [];
  readonly #droppedHistory: Array<{ at: number; droppedGroups: number }> = [];
  #lastSyncWaitMs = 0;
  #lastDroppedGroups = 0;
  #timer: NodeJS.Timeout | undefined;
  /** The cluster's placement the listeners last saw, to tell them when a re-plan replaced it. */
  #placementSeen: unknown;
  readonly #onGeneration = (message: unknown): void => this.#handle(message as GenerationEvent);

  constructor(context: ServerContext, readonly statusIntervalMs = 1_000) {
    this.#context = context;
  }

  /** Starts listening; returns a function that stops. Status ticks run only while someone listens. */
  listen(listener: (event: DashboardEvent) => void): () => void {
    this.#listeners.add(listener);
    if (this.#listeners.size === 1) {
      // Tokens seen from here on are charged only what accrues from here on.
      const totals = this.#context.generator.cluster?.totals;
      this.#lastSyncWaitMs = totals?.syncWaitMs ?? 0;
      this.#lastDroppedGroups = totals?.droppedGroups ?? 0;
      subscribe(SERVER_GENERATION_CHANNEL, this.#onGeneration);
      this.#placementSeen = this.#context.generator.cluster?.placement;
      this.#timer = setInterval(() => this.#tick(), this.statusIntervalMs);
      this.#timer.unref();
    }
    return () => {
      if (!this.#listeners.delete(listener) || this.#listeners.size > 0) return;
      unsubscribe(SERVER_GENERATION_CHANNEL, this.#onGeneration);
      clearInterval(this.#timer);
      this.#timer = undefined;
    };
  }

  snapshot(): DashboardSnapshot {
    const { generator } = this.#context;
    return {
      ...this.#status(),
      model: generator.modelId,
      contextLength: generator.contextLength,
      placement: this.#placement(),
      recentTokens: [...this.#recentTokens],
      droppedHistory: [...this.#droppedHistory],
    };
  }

  #tick(): void {
    const placement = this.#context.generator.cluster?.placement;
    if (placement !== this.#placementSeen) {
      this.#placementSeen = placement;
      this.#emit({ type: "placement", data: this.#placement() });
    }
    this.#emit({ type: "status", data: this.#status() });
  }

  #emit(event: DashboardEvent): void {
    for (const listener of this.#listeners) listener(event);
  }

  #handle(event: GenerationEvent): void {
    if (event.type === "end") {
      const { finishReason, completionTokens } = event.outcome;
      this.#emit({ type: "end", data: { id: event.id, finishReason, completionTokens } });
      return;
    }
    const totals = this.#context.generator.cluster?.totals;
    const syncWaitMs = Math.max(0, (totals?.syncWaitMs ?? 0) - this.#lastSyncWaitMs);
    const droppedGroups = Math.max(0, (totals?.droppedGroups ?? 0) - this.#lastDroppedGroups);
    this.#lastSyncWaitMs = totals?.syncWaitMs ?? 0;
    this.#lastDroppedGroups = totals?.droppedGroups ?? 0;
    // Sync wait is measured inside the token's time, so compute is the rest of it.
    const sample: TokenSample = { id: event.id, index: event.index, ms: event.ms, computeMs: Math.max(0, event.ms - syncWaitMs), syncWaitMs, droppedGroups };
    pushBounded(this.#recentTokens, sample, RECENT_TOKENS);
    this.#emit({ type: "token", data: sample });
  }

  #status(): ClusterStatus {
    const { generator, queue } = this.#context;
    const cluster = generator.cluster;
    const at = Date.now();
    const t = cluster?.totals;
    const totals = { syncWaitMs: t?.syncWaitMs ?? 0, droppedGroups: t?.droppedGroups ?? 0, droppedContributions: t?.droppedContributions ?? 0, expectedContributions: t?.expectedContributions ?? 0, bytesSent: t?.bytesSent ?? 0, bytesReceived: t?.bytesReceived ?? 0 };
    const last = this.#droppedHistory.at(-1);
    if (last === undefined || at - last.at >= this.statusIntervalMs / 2) pushBounded(this.#droppedHistory, { at, droppedGroups: totals.droppedGroups }, DROPPED_HISTORY);
    return { at, devices: this.#devices(), links: this.#links(), totals, queue: { active: queue.active, waiting: queue.waiting, capacity: queue.maxWaiting } };
  }

  #devices(): DeviceStatus[] {
    const cluster = this.#context.generator.cluster;
    if (cluster === undefined) return [{ index: 0, name: "this machine", attentionGroupMs: null, ffnGroupMs: null, memoryBudgetBytes: null, status: "active" }];
    const profiles = cluster.profiles();
    const lost = new Set(cluster.lostWorkers);
    return Array.from({ length: cluster.nDevices }, (_, index) => {
      const profile = profiles[index] ?? null;
      return {
        index,
        name: profile?.name ?? (index === 0 ? "coordinator" : `worker ${index}`),
        attentionGroupMs: profile?.attentionGroupMs ?? null,
        ffnGroupMs: profile?.ffnGroupMs ?? null,
        memoryBudgetBytes: profile?.memoryBudgetBytes ?? null,
        status: lost.has(index) ? "lost" : "active",
      };
    });
  }

  #links(): LinkStatus[] {
    return (this.#context.generator.cluster?.linkStats() ?? []).map((l) => ({ worker: l.worker, address: l.address, state: l.state, lossRatio: l.lossRatio, lateRatio: l.lateRatio, rttMs: l.rttMsEwma, jitterMs: l.jitterMs }));
  }

  #placement(): PlacementView {
    const { generator } = this.#context;
    const placement = generator.cluster?.placement;
    if (placement !== undefined) return { nDevices: placement.nDevices, layers: placement.layers.map((l) => ({ attention: l.attention, ffn: l.ffn })) };
    // A single node computes every group itself.
    const shape = generator.groupShape;
    const layer = { attention: new Array<number>(shape.nAttentionGroups).fill(0), ffn: new Array<number>(shape.nFfnGroups).fill(0) };
    return { nDevices: 1, layers: Array.from({ length: shape.nLayers }, () => layer) };
  }
}

function pushBounded<T>(list: T[], item: T, max: number): void {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}
