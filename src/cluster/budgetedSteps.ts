/**
 * A worker's computes under a memory budget (halo worker --memory-budget): each waits until its
 * layer phase's weights are in memory (loader/groupStore.ts), in arrival order, and the store's
 * exposed and hidden I/O go to one stderr line per second.
 */
import type { GroupStore, GroupStoreOptions } from "../loader/index.js";
import type { GroupKind } from "../partition/index.js";
import type { GroupPredictor, ImportancePredictor } from "../predictor/index.js";

export class BudgetedSteps {
  /** The step waiting for its weights, with those queued behind it. */
  private pending: Promise<void> | undefined;
  private passesLogged = 0;
  private loggedAtMs = -Infinity;

  constructor(private readonly log: (line: string) => void) {}

  /**
   * Runs `compute` for (layer, phase) once its weights are in memory: at once without a store or
   * when they are resident or already read (the common case), else after the read and after any
   * step still waiting. The store is released when compute returns. Errors reach the caller
   * (thrown, or as the returned promise's rejection).
   */
  run(store: GroupStore | undefined, layer: number, phase: GroupKind, compute: () => void): Promise<void> | undefined {
    if (store === undefined) {
      compute();
      return undefined;
    }
    const computeLoaded = (): void => {
      try {
        compute();
      } finally {
        store.release(layer, phase);
      }
      if (layer === 0 && phase === "attention") this.logPass(store);
    };
    const start = (): Promise<void> | undefined => {
      const ready = store.acquire(layer, phase);
      if (ready !== undefined) return ready.then(computeLoaded);
      computeLoaded();
      return undefined;
    };
    const step = this.pending === undefined ? start() : this.pending.then(start);
    if (step === undefined) return undefined;
    this.pending = step;
    const settle = (): void => {
      if (this.pending === step) this.pending = undefined;
    };
    step.then(settle, settle);
    return step;
  }

  /** Settles when no step is waiting (whatever their outcome). */
  async idle(): Promise<void> {
    while (this.pending !== undefined) await this.pending.catch(() => undefined);
  }

  private logPass(store: GroupStore): void {
    const stats = store.stats();
    const now = performance.now();
    if (stats.lastPass === undefined || stats.passes === this.passesLogged || now - this.loggedAtMs < 1000) return;
    this.passesLogged = stats.passes;
    this.loggedAtMs = now;
    const { exposedIoMs, hiddenIoMs, reads, bytesRead } = stats.lastPass;
    const hiddenPercent = exposedIoMs + hiddenIoMs > 0 ? (100 * hiddenIoMs) / (exposedIoMs + hiddenIoMs) : 100;
    this.log(`loader: token ${stats.passes}: exposed I/O ${exposedIoMs.toFixed(2)} ms, hidden I/O ${hiddenIoMs.toFixed(2)} ms (${hiddenPercent.toFixed(0)}% hidden), ${reads} reads, ${(bytesRead / 2 ** 20).toFixed(2)} MiB`);
  }
}

/** What a worker knows per token for ranking its reads: the predictor, and the latest phase input it received. */
export interface LookAhead {
  predictor: ImportancePredictor;
  /** (dim) the normed input of the latest phase this worker received, or undefined before the first. */
  latestInput(): Float32Array | undefined;
}

/**
 * Store options for a plan with FFN blocks of `ffnBlockSize`; the predictor's averages only when
 * they index the same groups. With `lookAhead`, a part's reads are ordered by the predictor's
 * scores for that part from the latest input received (a later layer's groups ranked from an
 * earlier layer's input: the residual stream changes little from one layer to the next), else
 * by the calibration averages. Every streamed group of a part is read before it computes, so the
 * order decides which arrive first, not what is computed.
 */
export function budgetOptions(budgetBytes: number | undefined, predictor: GroupPredictor | undefined, ffnBlockSize: number, log: (line: string) => void, lookAhead?: LookAhead): Omit<GroupStoreOptions, "now"> | undefined {
  if (budgetBytes === undefined) return undefined;
  if (predictor === undefined) return { budgetBytes };
  if (predictor.ffnBlockSize !== ffnBlockSize) {
    log(`the predictor's FFN blocks are ${predictor.ffnBlockSize} neurons, the plan's ${ffnBlockSize}: resident groups are chosen in group order`);
    return { budgetBytes };
  }
  const mean = (layer: number, kind: GroupKind): Float64Array | undefined => predictor.maps[kind][layer]?.mean;
  const scores = new Float64Array(Math.max(...predictor.maps.attention.map((m) => m.nOutputs), ...predictor.maps.ffn.map((m) => m.nOutputs)));
  const byScore = (n: number): number[] => Array.from({ length: n }, (_, g) => g).sort((a, b) => scores[b]! - scores[a]! || a - b);
  // The calibration order never changes: sorted once per part, not per read.
  const staticOrders = new Map<string, number[]>();
  return {
    budgetBytes,
    importance: mean,
    rank: (layer, kind) => {
      const map = predictor.maps[kind][layer];
      if (map === undefined) return [];
      const input = lookAhead?.latestInput();
      if (input !== undefined) {
        lookAhead!.predictor.predict(layer, kind, input, 0, scores);
        return byScore(map.nOutputs);
      }
      const key = `${layer}:${kind}`;
      let order = staticOrders.get(key);
      if (order === undefined) {
        scores.set(map.mean);
        order = byScore(map.nOutputs);
        staticOrders.set(key, order);
      }
      return order;
    },
  };
}

export function describeResidency(store: GroupStore): string {
  const { residentBytes, shareBytes, streamedBytesPerToken, nSlots, slotBytes, scratchBytes } = store.residency;
  const slots = slotBytes.map((b) => (b / 2 ** 20).toFixed(2)).join(" + ");
  const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
  if (streamedBytesPerToken === 0) return `memory budget: all ${mib(shareBytes)} of its groups resident`;
  const from = store.source.path;
  const overlap = nSlots < 2 ? "; one slot: reads cannot overlap compute" : "";
  return `memory budget: ${mib(residentBytes)} of its ${mib(shareBytes)} resident; streams ${mib(streamedBytesPerToken)} per token from ${from} in ${store.readsPerPass} reads (${mib(store.bytesReadPerPass)} read) through ${nSlots === 1 ? "1 slot" : `${nSlots} slots`} of ${slots} MiB and ${mib(scratchBytes)} of scratch${overlap}`;
}
