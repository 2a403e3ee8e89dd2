/**
 * One generation at a time (the engine holds one sequence's KV cache), with a bounded line of
 * waiting requests. A request past the line's capacity is refused at once with 429 and an
 * estimate of when to retry, rather than queued without bound (RELIABILITY H10).
 */
import { RequestError } from "../base/index.js";

/** The right to run one generation; release it exactly once, when the generation is over. */
export interface GenerationSlot {
  release(): void;
}

interface Waiter {
  grant(slot: GenerationSlot): void;
  refuse(error: Error): void;
}

/** Weight of the newest hold time in the running mean used for Retry-After. */
const HOLD_EWMA_WEIGHT = 0.2;
/** The assumed hold time before any generation has finished. */
const INITIAL_HOLD_MS = 1_000;

export class GenerationQueue {
  #busy = false;
  #closed = false;
  readonly #waiting: Waiter[] = [];
  #meanHoldMs = INITIAL_HOLD_MS;
  #idle: Array<() => void> = [];

  /** `maxWaiting`: requests allowed to wait behind the running one. */
  constructor(readonly maxWaiting: number) {
    if (!Number.isInteger(maxWaiting) || maxWaiting < 0) throw new RangeError(`maxWaiting must be an integer ≥ 0, got ${maxWaiting}`);
  }

  /** Generations running now (0 or 1). */
  get active(): number {
    return this.#busy ? 1 : 0;
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  /** Whether close() was called: every request is refused from then on. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Seconds a refused client should wait: the line ahead of it times the mean generation time, at least 1. */
  retryAfterSeconds(): number {
    return Math.max(1, Math.ceil(((this.#waiting.length + 1) * this.#meanHoldMs) / 1000));
  }

  /**
   * Waits for the slot. Refuses with 429 when the line is full and 503 once closing; when
   * `signal` aborts while waiting, leaves the line and rejects with the signal's reason.
   */
  acquire(signal?: AbortSignal): Promise<GenerationSlot> {
    if (this.#closed) return Promise.reject(shuttingDown());
    if (signal?.aborted === true) return Promise.reject(signal.reason);
    if (!this.#busy && this.#waiting.length === 0) {
      this.#busy = true;
      return Promise.resolve(this.#slot());
    }
    if (this.#waiting.length >= this.maxWaiting) {
      const retryAfter = this.retryAfterSeconds();
      return Promise.reject(new RequestError(429, `the server is busy: 1 generation running and ${this.#waiting.length} waiting, the most it queues; retry after ${retryAfter} s`, { type: "rate_limit_error", apiCode: "queue_full", headers: { "retry-after": String(retryAfter) } }));
    }
    return new Promise<GenerationSlot>((resolve, reject) => {
      const onAbort = (): void => {
        const index = this.#waiting.indexOf(waiter);
        if (index >= 0) this.#waiting.splice(index, 1);
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        grant: (slot) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(slot);
        },
        refuse: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiting.push(waiter);
    });
  }

  /** Refuses everyone waiting and every later request with 503; the running generation goes on. */
  close(): void {
    this.#closed = true;
    for (const waiter of this.#waiting.splice(0)) waiter.refuse(shuttingDown());
  }

  /** Resolves once no generation runs and nobody waits. */
  whenIdle(): Promise<void> {
    if (!this.#busy && this.#waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #slot(): GenerationSlot {
    const startedMs = performance.now();
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#meanHoldMs += HOLD_EWMA_WEIGHT * (performance.now() - startedMs - this.#meanHoldMs);
        const next = this.#waiting.shift();
        if (next !== undefined) {
          next.grant(this.#slot());
          return;
        }
        this.#busy = false;
        for (const resolve of this.#idle.splice(0)) resolve();
      },
    };
  }
}

function shuttingDown(): RequestError {
  return new RequestError(503, "the server is shutting down", { type: "server_error", apiCode: "shutting_down" });
}
