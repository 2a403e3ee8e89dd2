/**
 * Per-peer link statistics for the coordinator, and the probability that a k-datagram message
 * beats a deadline (DESIGN.md, "Stable vs unstable": no fixed cut-off, a probability from
 * per-link EWMAs of loss, RTT and jitter).
 *
 * What is measured, and how it is smoothed (every weight is an option; defaults in brackets):
 * - lossRatio: EWMA over datagrams of "was this datagram lost" [lossAlpha = 1/256, a memory of
 *   about 256 datagrams: the standard error at 5 % loss is ≈ 1 percentage point]. Fed either per
 *   message ("expected k, received j", `recordMessage`) or per datagram sequence number
 *   (`recordSequence`, gaps count as losses).
 * - lateRatio: EWMA over arrived datagrams of "arrived after its deadline" [lateAlpha = 1/256].
 * - rttMsEwma, rttMsDev: RFC 6298 smoothed RTT and mean deviation [rttAlpha = 1/8,
 *   rttDevAlpha = 1/4]; the first sample sets rttMsEwma = r and rttMsDev = r/2.
 * - jitterMs: RFC 3550 §6.4.1 interarrival jitter, J += (|D| − J) · jitterAlpha [1/16], where
 *   D = (Rj − Ri) − (Sj − Si) compares consecutive arrivals' spacing with their send spacing
 *   (the sender's clock offset cancels, so unsynchronised clocks are fine). A constant-delay
 *   link has jitter 0.
 * The ratio EWMAs start as plain running means until 1/alpha observations have been seen
 * (weight max(alpha, 1/n)), so early estimates are not biased towards 0.
 * Every EWMA advances per observation, not per unit of time: an idle link keeps its estimates.
 */
import { UsageError } from "../base/index.js";

export interface LinkStatsOptions {
  /** Per-datagram EWMA weight of the loss ratio, in (0, 1]. Defaults to 1/256. */
  lossAlpha?: number;
  /** Per-datagram EWMA weight of the late ratio, in (0, 1]. Defaults to 1/256. */
  lateAlpha?: number;
  /** Per-sample EWMA weight of the smoothed RTT (RFC 6298 α), in (0, 1]. Defaults to 1/8. */
  rttAlpha?: number;
  /** Per-sample EWMA weight of the RTT mean deviation (RFC 6298 β), in (0, 1]. Defaults to 1/4. */
  rttDevAlpha?: number;
  /** Per-datagram gain of the interarrival jitter (RFC 3550 uses 1/16), in (0, 1]. Defaults to 1/16. */
  jitterAlpha?: number;
}

/** A JSON-able view of one link's statistics. Times in ms; null until the first sample. */
export interface LinkStatsSnapshot {
  /** Smoothed fraction of datagrams lost, in [0, 1]. */
  lossRatio: number;
  /** Smoothed fraction of arrived datagrams that came after their deadline, in [0, 1]. */
  lateRatio: number;
  /** RFC 6298 smoothed round-trip time, ms. */
  rttMsEwma: number | null;
  /** RFC 6298 RTT mean deviation (RTTVAR), ms. */
  rttMsDev: number | null;
  /** Smallest RTT sample, ms. */
  rttMsMin: number | null;
  /** RFC 3550 interarrival jitter, ms (0 before two transit samples). */
  jitterMs: number;
  /** Datagrams whose fate (received or lost) has been recorded. */
  nDatagramsObserved: number;
  /** Of those, lost. */
  nDatagramsLost: number;
  /** Datagrams whose sequence number was at or below the highest seen (reordered or duplicated). */
  nDatagramsReordered: number;
  /** Arrived datagrams classified on time or late. */
  nDeadlineObserved: number;
  /** Of those, late. */
  nDeadlineLate: number;
  nRttSamples: number;
  nTransitSamples: number;
}

/** A running mean for the first ceil(1/alpha) observations, then an EWMA with weight alpha. */
class RatioEwma {
  value = 0;
  private n = 0;
  private readonly warmup: number;

  constructor(private readonly alpha: number) {
    this.warmup = Math.ceil(1 / alpha);
  }

  /** Folds in `count` observations whose mean is `mean` (the same as count single observations of that value). */
  observe(mean: number, count: number): void {
    let remaining = count;
    if (this.n < this.warmup && remaining > 0) {
      const m = Math.min(remaining, this.warmup - this.n);
      this.value = (this.value * this.n + mean * m) / (this.n + m);
      this.n += m;
      remaining -= m;
    }
    if (remaining > 0) {
      const keep = Math.pow(1 - this.alpha, remaining);
      this.value = keep * this.value + (1 - keep) * mean;
      this.n += remaining;
    }
  }
}

function checkAlpha(name: string, value: number | undefined, fallback: number): number {
  const alpha = value ?? fallback;
  if (!(typeof alpha === "number" && alpha > 0 && alpha <= 1)) throw new UsageError(`link stats: '${name}' must be in (0, 1], got ${String(alpha)}`);
  return alpha;
}

function checkCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new UsageError(`link stats: '${name}' must be a non-negative integer, got ${String(value)}`);
}

/** 2^31 µs ≈ 35.8 min: send-time differences beyond this are ambiguous in a u32 µs clock. */
const HALF_U32_US = 2 ** 31;

export class LinkStats {
  private readonly loss: RatioEwma;
  private readonly late: RatioEwma;
  private readonly rttAlpha: number;
  private readonly rttDevAlpha: number;
  private readonly jitterAlpha: number;
  private rttMsEwma: number | null = null;
  private rttMsDev: number | null = null;
  private rttMsMin: number | null = null;
  private jitterMs = 0;
  private highestSequence: number | null = null;
  private lastTransit: { sendTimeUs: number; arrivalTimeMs: number } | null = null;
  private counts = { nDatagramsObserved: 0, nDatagramsLost: 0, nDatagramsReordered: 0, nDeadlineObserved: 0, nDeadlineLate: 0, nRttSamples: 0, nTransitSamples: 0 };

  constructor(options: LinkStatsOptions = {}) {
    this.loss = new RatioEwma(checkAlpha("lossAlpha", options.lossAlpha, 1 / 256));
    this.late = new RatioEwma(checkAlpha("lateAlpha", options.lateAlpha, 1 / 256));
    this.rttAlpha = checkAlpha("rttAlpha", options.rttAlpha, 1 / 8);
    this.rttDevAlpha = checkAlpha("rttDevAlpha", options.rttDevAlpha, 1 / 4);
    this.jitterAlpha = checkAlpha("jitterAlpha", options.jitterAlpha, 1 / 16);
  }

  /**
   * A message of `nExpected` datagrams is complete or past its deadline and `nReceived` of them
   * arrived (on time or late). Counts as nExpected observations with mean loss (nExpected − nReceived) / nExpected.
   */
  recordMessage(nExpected: number, nReceived: number): void {
    checkCount("nExpected", nExpected);
    checkCount("nReceived", nReceived);
    if (nReceived > nExpected) throw new UsageError(`link stats: 'nReceived' ${nReceived} exceeds 'nExpected' ${nExpected}`);
    if (nExpected === 0) return;
    this.observeLoss(nExpected - nReceived, nExpected);
  }

  /**
   * A datagram with a per-link sequence number (u32, wrapping) arrived. A jump past the highest
   * sequence seen counts the skipped numbers as lost. A number at or below the highest is counted
   * as reordered (or duplicated) and does not undo the loss already counted: under reordering the
   * estimate errs high. Call `resetSequence()` when the sender restarts its numbering.
   */
  recordSequence(sequence: number): void {
    if (!Number.isInteger(sequence) || sequence < 0 || sequence > 0xffffffff) throw new UsageError(`link stats: 'sequence' must be a u32, got ${String(sequence)}`);
    if (this.highestSequence === null) {
      this.highestSequence = sequence;
      this.observeLoss(0, 1);
      return;
    }
    const ahead = (sequence - this.highestSequence) | 0; // serial-number arithmetic (RFC 1982) on 32 bits
    if (ahead <= 0) {
      this.counts.nDatagramsReordered++;
      return;
    }
    this.highestSequence = sequence;
    if (ahead > 1) this.observeLoss(ahead - 1, ahead - 1);
    this.observeLoss(0, 1);
  }

  /** Forgets the highest sequence number seen (the sender restarted its numbering). */
  resetSequence(): void {
    this.highestSequence = null;
  }

  /** One round-trip time sample, ms (RFC 6298 update). */
  recordRtt(rttMs: number): void {
    if (!(Number.isFinite(rttMs) && rttMs >= 0)) throw new UsageError(`link stats: 'rttMs' must be a finite number ≥ 0, got ${String(rttMs)}`);
    this.counts.nRttSamples++;
    this.rttMsMin = this.rttMsMin === null ? rttMs : Math.min(this.rttMsMin, rttMs);
    if (this.rttMsEwma === null || this.rttMsDev === null) {
      this.rttMsEwma = rttMs;
      this.rttMsDev = rttMs / 2;
      return;
    }
    this.rttMsDev += this.rttDevAlpha * (Math.abs(this.rttMsEwma - rttMs) - this.rttMsDev);
    this.rttMsEwma += this.rttAlpha * (rttMs - this.rttMsEwma);
  }

  /**
   * One datagram's timestamps for the RFC 3550 jitter: `sendTimeUs`, the sender's monotonic clock
   * in µs as a wrapping u32 (the datagram header's sendTimeUs), and `arrivalTimeMs`, the receiver's
   * monotonic clock in ms. Arrivals more than 2^31 µs (≈ 35.8 min) apart are not compared.
   */
  recordTransit(sendTimeUs: number, arrivalTimeMs: number): void {
    if (!Number.isInteger(sendTimeUs) || sendTimeUs < 0 || sendTimeUs > 0xffffffff) throw new UsageError(`link stats: 'sendTimeUs' must be a u32, got ${String(sendTimeUs)}`);
    if (!Number.isFinite(arrivalTimeMs)) throw new UsageError(`link stats: 'arrivalTimeMs' must be finite, got ${String(arrivalTimeMs)}`);
    const previous = this.lastTransit;
    this.lastTransit = { sendTimeUs, arrivalTimeMs };
    this.counts.nTransitSamples++;
    if (previous === null) return;
    const arrivalDeltaMs = arrivalTimeMs - previous.arrivalTimeMs;
    if (Math.abs(arrivalDeltaMs) * 1000 >= HALF_U32_US) return;
    const sendDeltaMs = ((sendTimeUs - previous.sendTimeUs) | 0) / 1000;
    const d = arrivalDeltaMs - sendDeltaMs;
    this.jitterMs += this.jitterAlpha * (Math.abs(d) - this.jitterMs);
  }

  /** Of the datagrams that arrived, `nOnTime` beat their deadline and `nLate` did not. */
  recordDeadline(nOnTime: number, nLate: number): void {
    checkCount("nOnTime", nOnTime);
    checkCount("nLate", nLate);
    const n = nOnTime + nLate;
    if (n === 0) return;
    this.counts.nDeadlineObserved += n;
    this.counts.nDeadlineLate += nLate;
    this.late.observe(nLate / n, n);
  }

  snapshot(): LinkStatsSnapshot {
    return {
      lossRatio: this.loss.value,
      lateRatio: this.late.value,
      rttMsEwma: this.rttMsEwma,
      rttMsDev: this.rttMsDev,
      rttMsMin: this.rttMsMin,
      jitterMs: this.jitterMs,
      ...this.counts,
    };
  }

  private observeLoss(nLost: number, nObserved: number): void {
    this.counts.nDatagramsObserved += nObserved;
    this.counts.nDatagramsLost += nLost;
    this.loss.observe(nLost / nObserved, nObserved);
  }
}

/**
 * How the arrival times of one message's datagrams relate: "shared" (the default) — sent back to
 * back on one path, they see the same delay, so the message is on time with the probability of
 * one datagram; "independent" — each datagram's delay is drawn on its own (a pessimistic bound).
 */
export type ArrivalTiming = "shared" | "independent";

export interface DeliveryProbabilityOptions {
  /** Defaults to "shared". */
  timing?: ArrivalTiming;
}

/**
 * P(all `nDatagrams` datagrams of a message arrive within `deadlineMs`), where `deadlineMs` is the
 * network time budget: from the send of the request to the deadline, minus any compute in between
 * (the RTT samples are request → reply times).
 *
 * Model: losses are independent with probability lossRatio per datagram (so all arrive with
 * probability (1 − lossRatio)^k); an arriving datagram's time is normal with mean rttMsEwma and
 * standard deviation σ = √(π/2) · max(rttMsDev, jitterMs). For a normal variable the mean absolute
 * deviation is σ·√(2/π), which turns rttMsDev into σ; RFC 3550 jitter estimates E|D| = 2σ₁/√π for
 * one direction's transit σ₁, and a round trip of two such directions has σ = √2·σ₁ = J·√(π/2).
 * The larger estimate is used. Then P = (1 − p)^k · Φ((deadline − μ) / σ) with "shared" timing,
 * or ((1 − p) · Φ((deadline − μ) / σ))^k with "independent" timing. σ = 0 makes Φ a step at μ.
 * Without any RTT sample the timing factor is 1: only loss counts, so require samples before
 * trusting the result.
 */
export function deliveryProbability(
  stats: Pick<LinkStatsSnapshot, "lossRatio" | "rttMsEwma" | "rttMsDev" | "jitterMs">,
  nDatagrams: number,
  deadlineMs: number,
  options: DeliveryProbabilityOptions = {},
): number {
  checkCount("nDatagrams", nDatagrams);
  if (Number.isNaN(deadlineMs)) throw new UsageError("link stats: 'deadlineMs' must be a number, got NaN");
  const arrive = 1 - Math.min(1, Math.max(0, stats.lossRatio));
  let onTime = 1;
  if (stats.rttMsEwma !== null) {
    const sigmaMs = Math.sqrt(Math.PI / 2) * Math.max(stats.rttMsDev ?? 0, stats.jitterMs);
    onTime = sigmaMs > 0 ? normalCdf((deadlineMs - stats.rttMsEwma) / sigmaMs) : deadlineMs >= stats.rttMsEwma ? 1 : 0;
  }
  const timing = options.timing ?? "shared";
  switch (timing) {
    case "shared":
      return Math.pow(arrive, nDatagrams) * onTime;
    case "independent":
      return Math.pow(arrive * onTime, nDatagrams);
    default:
      throw new UsageError(`link stats: unknown timing ${String(timing satisfies never)}`);
  }
}

/**
 * Φ(z), the standard normal CDF, from erf by Abramowitz & Stegun 7.1.26 (absolute error of erf
 * below 1.5e-7, ample for a scheduling estimate). Φ(z) is exactly 1 for z above about 8.3.
 */
function normalCdf(z: number): number {
  if (z === Infinity) return 1;
  if (z === -Infinity) return 0;
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  const erf = 1 - poly * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}
