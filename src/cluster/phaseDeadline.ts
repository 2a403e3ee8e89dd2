/**
 * How long relaxed mode waits for a phase's contributions. Two learned bounds, each like TCP's
 * retransmission timer (RFC 6298: an EWMA plus four mean deviations, gains 1/8 and 1/4, plus
 * slack, never below minMs nor above hardMs; hardMs before any sample):
 * - the soft deadline, from the phase's start: the time by which every contribution usually
 *   arrived;
 * - the grace, from the latest arrival: the longest silence between arrivals of a phase that
 *   completed. Contributions arrive in a burst once the slowest device is done, so when the
 *   others are in and nothing has come for that long, what is missing was lost: waiting on to
 *   the soft deadline would only add its margin to every token that lost a packet.
 * Critical contributions are awaited up to hardMs.
 */
import type { Clock, TimerHandle } from "../base/index.js";
import type { SyncPhaseId } from "../net/index.js";

export interface DeadlineOptions {
  /** The longest a phase waits (for critical contributions). Defaults to 250 ms. */
  hardMs?: number;
  /** The shortest soft deadline, so scheduling noise on a loaded machine is not taken for loss. Defaults to 5 ms. */
  minMs?: number;
  /** Added to the learned deadline. Defaults to 1 ms. */
  slackMs?: number;
}

export class PhaseDeadline {
  readonly hardMs: number;
  private readonly minMs: number;
  private readonly slackMs: number;
  private readonly completion = new SmoothedTime();
  private readonly silence = new SmoothedTime();

  constructor(options: DeadlineOptions = {}) {
    this.hardMs = options.hardMs ?? 250;
    this.minMs = options.minMs ?? 5;
    this.slackMs = options.slackMs ?? 1;
  }

  /** A phase in which every contribution arrived: `completeMs` after its start, with at most `longestSilenceMs` between arrivals. */
  learn(completeMs: number, longestSilenceMs: number): void {
    this.completion.add(completeMs);
    this.silence.add(longestSilenceMs);
  }

  /**
   * An estimate of a phase's completion before any phase completed (the scheduler's, from the
   * devices' profiles): one sample, so the first tokens get a deadline near it instead of hardMs.
   * Silence between arrivals is seeded at the same value.
   */
  seed(completionMs: number): void {
    if (!(completionMs >= 0 && Number.isFinite(completionMs)) || this.completion.meanMs !== undefined) return;
    this.completion.add(completionMs);
    this.silence.add(completionMs);
  }

  /** The current soft deadline, from the phase's start. */
  softMs(): number {
    return this.bound(this.completion);
  }

  /** How long to wait after the latest arrival before taking the rest as lost. */
  graceMs(): number {
    return this.bound(this.silence);
  }

  private bound(time: SmoothedTime): number {
    if (time.meanMs === undefined) return this.hardMs;
    return Math.min(this.hardMs, Math.max(this.minMs, time.meanMs + 4 * time.deviationMs + this.slackMs));
  }
}

/** RFC 6298's smoothed mean and mean deviation; the first sample sets mean = x, deviation = x/2. */
class SmoothedTime {
  meanMs: number | undefined;
  deviationMs = 0;

  add(sampleMs: number): void {
    if (this.meanMs === undefined) {
      this.meanMs = sampleMs;
      this.deviationMs = sampleMs / 2;
      return;
    }
    this.deviationMs = 0.75 * this.deviationMs + 0.25 * Math.abs(sampleMs - this.meanMs);
    this.meanMs = 0.875 * this.meanMs + 0.125 * sampleMs;
  }
}

export interface PhaseWaitOptions {
  clock: Clock;
  deadline: PhaseDeadline;
  phaseStartMs: number;
  /** The step whose chunks count as arrivals. */
  step: { position: number; layer: number; phase: SyncPhaseId };
  /** Whether every contribution ("all"), or every critical one, is in (a lost device counts as in). */
  isComplete: (awaited: "all" | "critical") => boolean;
  /** Called once, when only critical contributions are awaited any more and some are still missing. */
  onCriticalOverdue?: () => void;
}

/**
 * One relaxed phase's wait: done when every contribution arrived; or when the soft deadline
 * passed, or nothing arrived for the grace, with every critical contribution in; or at the hard
 * deadline. `done` resolves with the longest silence between arrivals, which a complete phase
 * teaches the grace.
 */
export class PhaseWait {
  readonly done: Promise<number>;
  private softExpired = false;
  private lastArrivalMs: number;
  private longestSilenceMs = 0;
  private readonly timers: TimerHandle[] = [];
  private graceTimer: TimerHandle | undefined;
  private resolve!: (longestSilenceMs: number) => void;
  private finished = false;

  constructor(private readonly options: PhaseWaitOptions) {
    const { clock, deadline, phaseStartMs } = options;
    this.lastArrivalMs = clock.now();
    this.done = new Promise<number>((resolve) => {
      this.resolve = resolve;
    });
    this.timers.push(clock.setTimer(phaseStartMs + deadline.softMs() - clock.now(), () => this.expire()));
    this.timers.push(clock.setTimer(phaseStartMs + deadline.hardMs - clock.now(), () => this.finish()));
    this.armGrace();
  }

  /** A chunk arrived (of any step): the silence ends if it is this phase's, then completion is checked. */
  onArrival(position: number, layer: number, phase: SyncPhaseId): void {
    const { step, clock } = this.options;
    if (position === step.position && layer === step.layer && phase === step.phase && !this.finished) {
      const now = clock.now();
      this.longestSilenceMs = Math.max(this.longestSilenceMs, now - this.lastArrivalMs);
      this.lastArrivalMs = now;
      if (!this.softExpired) this.armGrace();
    }
    this.check();
  }

  /** Finishes if what is awaited now is in. */
  check(): void {
    if (!this.finished && this.options.isComplete(this.softExpired ? "critical" : "all")) this.finish();
  }

  private armGrace(): void {
    this.graceTimer?.cancel();
    this.graceTimer = this.options.clock.setTimer(this.options.deadline.graceMs(), () => this.expire());
  }

  private expire(): void {
    if (this.softExpired) return;
    this.softExpired = true;
    this.check();
    if (!this.finished) this.options.onCriticalOverdue?.();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    for (const timer of this.timers) timer.cancel();
    this.graceTimer?.cancel();
    this.resolve(Math.max(this.longestSilenceMs, this.options.clock.now() - this.lastArrivalMs));
  }
}
