/**
 * When to ask for a lost chunk again: once some chunk of a (sender, step) arrived, the rest
 * should follow within microseconds (they leave back to back); if after `delayMs` some are still
 * missing, they were lost, and each is asked for. The NACK or the resend can be lost too, so it
 * asks again after twice the delay, up to `maxTries` times. Both ends use it: workers for
 * inputs, the coordinator for partial sums.
 */
import type { Clock } from "../base/index.js";

/** Long enough for back-to-back datagrams to land on a busy machine, short against a phase. Defaults the NACK delay. */
export const DEFAULT_NACK_DELAY_MS = 2;

/** Tries per missing chunk: a chunk is then lost only if it and three NACK round trips all fail. */
export const MAX_NACK_TRIES = 3;

export class NackScheduler {
  /** Asks made so far. */
  nRequested = 0;
  private readonly armed = new Set<string>();

  constructor(private readonly clock: Clock, private readonly delayMs: number = DEFAULT_NACK_DELAY_MS, private readonly maxTries = MAX_NACK_TRIES) {}

  /**
   * A chunk of `key` (sender and step) arrived. The first time per key, checks `missing()` after
   * the delay and calls `request` for each chunk index still missing.
   */
  onChunk(key: string, missing: () => readonly number[], request: (chunkIndex: number) => void): void {
    if (this.armed.has(key)) return;
    // Keys of finished steps are useless; a bound keeps a long session's set small.
    if (this.armed.size >= 4096) this.armed.clear();
    this.armed.add(key);
    this.check(missing, request, this.delayMs, 1);
  }

  private check(missing: () => readonly number[], request: (chunkIndex: number) => void, delayMs: number, attempt: number): void {
    this.clock.setTimer(delayMs, () => {
      const stillMissing = missing();
      if (stillMissing.length === 0) return;
      for (const chunkIndex of stillMissing) {
        this.nRequested++;
        request(chunkIndex);
      }
      if (attempt < this.maxTries) this.check(missing, request, 2 * delayMs, attempt + 1);
    });
  }
}
