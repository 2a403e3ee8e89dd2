/**
 * GET /metrics: Prometheus text from a registry owned by one server (never prom-client's global
 * one, so two servers in a process do not share counters). Request and generation figures are
 * counted as they happen; the cluster's are read from the coordinator at scrape time, so they
 * cost nothing between scrapes.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { GenerationQueue } from "./generationQueue.js";
import type { ClusterView, FinishReason } from "./textGenerator.js";

/** Seconds per output token: from sub-millisecond (a tiny model) to a slow lossy cluster. */
const TPOT_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const TTFT_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"route" | "status">;
  readonly generations: Counter<"finish_reason">;
  readonly tokensGenerated: Counter;
  readonly promptTokens: Counter;
  readonly timePerOutputToken: Histogram;
  readonly timeToFirstToken: Histogram;

  constructor(queue: GenerationQueue, cluster: ClusterView | undefined) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "halo_" });
    this.requests = new Counter({ name: "halo_http_requests_total", help: "HTTP requests answered, by route and status (rejections included)", labelNames: ["route", "status"], registers });
    this.generations = new Counter({ name: "halo_generations_total", help: "Generations ended, by finish reason (cancelled: the client left or the server shut down)", labelNames: ["finish_reason"], registers });
    this.tokensGenerated = new Counter({ name: "halo_tokens_generated_total", help: "Completion tokens generated", registers });
    this.promptTokens = new Counter({ name: "halo_prompt_tokens_total", help: "Prompt tokens evaluated", registers });
    this.timePerOutputToken = new Histogram({ name: "halo_time_per_output_token_seconds", help: "Time between consecutive generated tokens (TPOT)", buckets: TPOT_BUCKETS_S, registers });
    this.timeToFirstToken = new Histogram({ name: "halo_time_to_first_token_seconds", help: "Time from the start of a generation (prefill included) to its first token", buckets: TTFT_BUCKETS_S, registers });
    new Gauge({ name: "halo_active_generations", help: "Generations running now (0 or 1)", registers, collect() { this.set(queue.active); } });
    new Gauge({ name: "halo_queued_requests", help: "Requests waiting for the generation slot", registers, collect() { this.set(queue.waiting); } });
    new Gauge({ name: "halo_queue_capacity", help: "Requests that may wait before the server answers 429", registers, collect() { this.set(queue.maxWaiting); } });
    if (cluster !== undefined) registerClusterMetrics(this.registry, cluster);
  }

  /** Counts one finished generation. */
  recordGeneration(finishReason: FinishReason, promptTokens: number, completionTokens: number): void {
    this.generations.inc({ finish_reason: finishReason });
    this.promptTokens.inc(promptTokens);
    this.tokensGenerated.inc(completionTokens);
  }

  /** One generated token, `ms` after the previous one (the first: after the generation started). */
  recordToken(index: number, ms: number): void {
    (index === 1 ? this.timeToFirstToken : this.timePerOutputToken).observe(ms / 1000);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Gauges and counters read from the coordinator at scrape time. */
function registerClusterMetrics(registry: Registry, cluster: ClusterView): void {
  const registers = [registry];
  const total = (name: string, help: string, read: () => number): void => {
    new Counter({ name, help, registers, collect() { this.reset(); this.inc(Math.max(0, read())); } });
  };
  total("halo_cluster_sync_wait_seconds_total", "Time the coordinator waited for workers after its own groups were done", () => cluster.totals.syncWaitMs / 1000);
  total("halo_cluster_groups_dropped_total", "Neuron groups whose contribution missed its deadline and counted as zero", () => cluster.totals.droppedGroups);
  total("halo_cluster_contributions_dropped_total", "Worker contributions dropped at the deadline", () => cluster.totals.droppedContributions);
  total("halo_cluster_contributions_expected_total", "Worker contributions expected", () => cluster.totals.expectedContributions);
  total("halo_cluster_sent_bytes_total", "Bytes sent to workers", () => cluster.totals.bytesSent);
  total("halo_cluster_received_bytes_total", "Payload bytes of partial sums received from workers", () => cluster.totals.bytesReceived);
  total("halo_cluster_workers_lost_total", "Times a worker's connection was lost", () => cluster.totals.workersLost);
  new Gauge({ name: "halo_cluster_devices", help: "Devices in the cluster, the coordinator included", registers, collect() { this.set(cluster.nDevices); } });

  const linkLabels = ["worker", "address"] as const;
  const linkGauge = (name: string, help: string, read: (link: ReturnType<ClusterView["linkStats"]>[number]) => number | null): void => {
    new Gauge({
      name, help, labelNames: linkLabels, registers,
      collect() {
        this.reset();
        for (const link of cluster.linkStats()) {
          const value = read(link);
          if (value !== null) this.set({ worker: String(link.worker), address: link.address }, value);
        }
      },
    });
  };
  linkGauge("halo_link_loss_ratio", "Smoothed fraction of datagrams lost on the link to a worker", (l) => l.lossRatio);
  linkGauge("halo_link_late_ratio", "Smoothed fraction of a worker's datagrams that came after their deadline", (l) => l.lateRatio);
  linkGauge("halo_link_rtt_seconds", "Smoothed round-trip time to a worker (RFC 6298)", (l) => (l.rttMsEwma === null ? null : l.rttMsEwma / 1000));
  linkGauge("halo_link_jitter_seconds", "Interarrival jitter from a worker (RFC 3550)", (l) => l.jitterMs / 1000);

  const deviceLabels = ["device", "name"] as const;
  new Gauge({
    name: "halo_device_up", help: "1 while a device computes its groups, 0 while it is lost or rejoining (device 0 is the coordinator)", labelNames: deviceLabels, registers,
    collect() {
      this.reset();
      const profiles = cluster.profiles();
      const lost = new Set(cluster.lostWorkers);
      for (let device = 0; device < cluster.nDevices; device++) {
        const name = profiles[device]?.name ?? (device === 0 ? "coordinator" : `worker ${device}`);
        this.set({ device: String(device), name }, lost.has(device) ? 0 : 1);
      }
    },
  });
  const profileGauge = (name: string, help: string, read: (p: NonNullable<ReturnType<ClusterView["profiles"]>[number]>) => number): void => {
    new Gauge({
      name, help, labelNames: deviceLabels, registers,
      collect() {
        this.reset();
        cluster.profiles().forEach((p, device) => {
          if (p !== null) this.set({ device: String(device), name: p.name }, read(p));
        });
      },
    });
  };
  profileGauge("halo_device_attention_group_seconds", "Measured time per attention group for one decode token", (p) => p.attentionGroupMs / 1000);
  profileGauge("halo_device_ffn_group_seconds", "Measured time per FFN group for one decode token", (p) => p.ffnGroupMs / 1000);
  profileGauge("halo_device_memory_budget_bytes", "Bytes of weights the device may keep resident", (p) => p.memoryBudgetBytes);
  new Gauge({ name: "halo_live_replans", help: "Placements changed while generating (a worker left, rejoined or drifted)", registers, collect() { this.set(cluster.liveReplans.length); } });
  new Gauge({
    name: "halo_last_replan_seconds", help: "The last live re-plan: time the workers took to load their new groups while tokens went on (prepare), and the stall at the switch (activate)", labelNames: ["stage"], registers,
    collect() {
      this.reset();
      const last = cluster.liveReplans.at(-1);
      if (last === undefined) return;
      this.set({ stage: "prepare" }, last.prepareMs / 1000);
      this.set({ stage: "activate" }, last.activateMs / 1000);
    },
  });
}
