/**
 * How long relaxed mode waits for a phase's contributions: like TCP's retransmission timer
 * (RFC 6298), the mean completion time plus four mean deviations (both EWMAs, gains 1/8 and
 * 1/4) plus slack, never below minMs nor above hardMs. Before any sample it is hardMs.
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
  private meanMs: number | undefined;
  private deviationMs = 0;

  constructor(options: DeadlineOptions = {}) {
    this.hardMs = options.hardMs ?? 250;
    this.minMs = options.minMs ?? 5;
    this.slackMs = options.slackMs ?? 1;
  }

  /** A phase in which every contribution arrived, `completeMs` after it started. */
  learn(completeMs: number): void {
    if (this.meanMs === undefined) {
      this.meanMs = completeMs;
      this.deviationMs = completeMs / 2;
      return;
    }
    this.deviationMs = 0.75 * this.deviationMs + 0.25 * Math.abs(completeMs - this.meanMs);
    this.meanMs = 0.875 * this.meanMs + 0.125 * completeMs;
  }

  /** The current soft deadline, from the phase's start. */
  softMs(): number {
    if (this.meanMs === undefined) return this.hardMs;
    return Math.min(this.hardMs, Math.max(this.minMs, this.meanMs + 4 * this.deviationMs + this.slackMs));
  }
}
