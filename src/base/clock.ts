/**
 * Time, injected. Deadlines and timeouts use a Clock so they can be tested with FakeClock,
 * deterministically and without waiting. The system clock is monotonic (performance.now), so
 * a wall-clock jump changes nothing.
 */

export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Calls `callback` once, `delayMs` from now (0 or less: on the next turn). */
  setTimer(delayMs: number, callback: () => void): TimerHandle;
  /** Resolves once now() ≥ deadlineMs, or at once when already past; rejects with the signal's reason when aborted first. */
  sleepUntil(deadlineMs: number, signal?: AbortSignal): Promise<void>;
}

function sleepWith(clock: Clock, deadlineMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    let timer: TimerHandle;
    const onAbort = (): void => {
      timer.cancel();
      reject(signal!.reason);
    };
    // Node's timers may fire up to a millisecond before performance.now() reaches the
    // deadline, so an early wake-up sleeps again for the rest.
    const arm = (): void => {
      timer = clock.setTimer(deadlineMs - clock.now(), () => {
        if (clock.now() < deadlineMs) return arm();
        signal?.removeEventListener("abort", onAbort);
        resolve();
      });
    };
    arm();
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimer(delayMs, callback) {
    const handle = setTimeout(callback, Math.max(0, delayMs));
    return { cancel: () => clearTimeout(handle) };
  },
  sleepUntil(deadlineMs, signal) {
    return sleepWith(systemClock, deadlineMs, signal);
  },
};

/** A clock that moves only when told to; timers fire in deadline order (ties in creation order). */
export class FakeClock implements Clock {
  private current: number;
  private sequence = 0;
  private readonly timers = new Map<number, { at: number; callback: () => void }>();

  constructor(startMs = 0) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const id = this.sequence++;
    this.timers.set(id, { at: this.current + Math.max(0, delayMs), callback });
    return { cancel: () => void this.timers.delete(id) };
  }

  sleepUntil(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    return sleepWith(this, deadlineMs, signal);
  }

  /** Timers not yet fired. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing every timer due on the way, in order. */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      let nextId = -1;
      let nextAt = Infinity;
      for (const [id, timer] of this.timers) {
        if (timer.at <= target && (timer.at < nextAt || (timer.at === nextAt && id < nextId))) {
          nextId = id;
          nextAt = timer.at;
        }
      }
      if (nextId === -1) break;
      const timer = this.timers.get(nextId)!;
      this.timers.delete(nextId);
      this.current = Math.max(this.current, timer.at);
      timer.callback();
    }
    this.current = target;
  }

  /** Advances by `ms` in steps, letting promise callbacks run between timers. */
  async advanceAsync(ms: number, stepMs = 1): Promise<void> {
    const target = this.current + ms;
    while (this.current < target) {
      this.advance(Math.min(stepMs, target - this.current));
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}
