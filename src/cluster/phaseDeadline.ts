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
