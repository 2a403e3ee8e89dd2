/**
 * One direction of a lossy, delayed, bandwidth-limited link, emulated in userspace (netem is
 * not available on the target machines). `halo cluster --local N --loss … --delay … --jitter …
 * --bandwidth … --seed …` puts one LinkEmulator in front of each worker link's sends.
 *
 * The model, per datagram offered to `send()`, in this order:
 * 1. Random draws, always made in the same order and number for a given profile, so that the
 *    same seed and the same input sequence give the same decisions whatever the queue does:
 *    the loss draw (one uniform; with Gilbert-Elliott, then one more for the state transition),
 *    then the jitter draw (none when jitterMs is 0; two uniforms for "normal", one for "uniform").
 * 2. Bandwidth (bandwidthMbit > 0): a token bucket of depth `burstBytes` refilled at the link
 *    rate releases datagrams in FIFO order. A datagram that has to wait joins the queue, unless
 *    the bytes already waiting plus its own would exceed `queueLimitBytes`: then it is tail-dropped
 *    (counted in `droppedQueue`, never in `droppedRandom`).
 * 3. Loss "on the wire": a datagram that the loss draw condemned is discarded after it leaves
 *    the bucket, so it still used its share of the bandwidth, as a frame lost on Wi-Fi uses airtime.
 * 4. Propagation: one-way delay = max(0, delayMs + jitter), where jitter is, by `jitterDistribution`,
 *    "normal": jitterMs · N(0, 1) (jitterMs is the standard deviation; the default), or
 *    "uniform": uniform on [−jitterMs, +jitterMs] (tc-netem's default).
 *    Without `allowReordering` (the default, like a real link), a datagram is never delivered
 *    before the one sent ahead of it: its delivery time is raised to that datagram's if needed,
 *    which shifts the delay distribution up when the jitter is large against the send spacing.
 *
 * Timing uses the injected Clock and at most one timer at a time (for the earliest pending
 * delivery), so nothing busy-polls and a FakeClock makes every delivery time exact. A datagram
 * whose delivery time is now and which has nothing pending ahead of it is delivered inside
 * `send()`, without a timer: a zero profile is a pass-through.
 */
import { SeededRandom, UsageError } from "../base/index.js";
import type { Clock, TimerHandle } from "../base/index.js";

/**
 * Two-state Markov loss (Gilbert-Elliott). The state moves once per datagram offered; the
 * loss probability depends on the state. Stationary P(Bad) = pGoodToBad / (pGoodToBad + pBadToGood);
 * with lossInBad 1 and lossInGood 0 the mean burst length is 1 / pBadToGood datagrams.
 */
export interface GilbertElliottParams {
  /** P(Good → Bad) per datagram, in [0, 1]. */
  pGoodToBad: number;
  /** P(Bad → Good) per datagram, in (0, 1]: a Bad state that never ends is a blackhole, use lossRatio 1. */
  pBadToGood: number;
  /** Loss probability in the Bad state, in [0, 1]. */
  lossInBad: number;
  /** Loss probability in the Good state, in [0, 1]. */
  lossInGood: number;
}

/** How the per-datagram jitter is drawn (see the file comment). */
export type JitterDistribution = "normal" | "uniform";

/** One direction of a link. */
export interface LinkProfile {
  /** Independent per-datagram loss probability, in [0, 1]. Must be 0 when `gilbertElliott` is set. */
  lossRatio: number;
  /** Mean one-way propagation delay, ms, ≥ 0. */
  delayMs: number;
  /** Jitter of the one-way delay, ms, ≥ 0: the standard deviation ("normal") or the half-width ("uniform"). */
  jitterMs: number;
  /** Link rate in Mbit/s (10^6 bit/s, counting datagram payload bytes only), ≥ 0; 0 = unlimited. */
  bandwidthMbit: number;
  /** Burst loss instead of independent loss. Defaults to none. */
  gilbertElliott?: GilbertElliottParams;
  /** Defaults to "normal". */
  jitterDistribution?: JitterDistribution;
}

/** No loss, no delay, no bandwidth limit: datagrams pass straight through. */
export const ZERO_LINK_PROFILE: Readonly<LinkProfile> = Object.freeze({ lossRatio: 0, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 });

function checkNumber(field: string, value: unknown, min: number, max: number, minExclusive = false, owner = "link profile"): number {
  const ok = typeof value === "number" && Number.isFinite(value) && (minExclusive ? value > min : value >= min) && value <= max;
  if (!ok) {
    const range = `${minExclusive ? "(" : "["}${min}, ${max === Infinity ? "∞" : max}]`;
    throw new UsageError(`${owner}: '${field}' must be a finite number in ${range}, got ${String(value)}`);
  }
  return value as number;
}

/**
 * Checks every field of a profile (which may come from flags or JSON) and returns a frozen copy.
 * Throws a UsageError (HALO_ERR_USAGE) whose message names the offending field.
 */
export function validateLinkProfile(profile: LinkProfile): Readonly<LinkProfile> {
  if (typeof profile !== "object" || profile === null) throw new UsageError(`link profile: must be an object, got ${String(profile)}`);
  const checked: LinkProfile = {
    lossRatio: checkNumber("lossRatio", profile.lossRatio, 0, 1),
    delayMs: checkNumber("delayMs", profile.delayMs, 0, Infinity),
    jitterMs: checkNumber("jitterMs", profile.jitterMs, 0, Infinity),
    bandwidthMbit: checkNumber("bandwidthMbit", profile.bandwidthMbit, 0, Infinity),
  };
  const distribution = profile.jitterDistribution;
  if (distribution !== undefined) {
    if (distribution !== "normal" && distribution !== "uniform") {
      throw new UsageError(`link profile: 'jitterDistribution' must be "normal" or "uniform", got ${String(distribution)}`);
    }
    checked.jitterDistribution = distribution;
  }
  const ge = profile.gilbertElliott;
  if (ge !== undefined) {
    if (typeof ge !== "object" || ge === null) throw new UsageError(`link profile: 'gilbertElliott' must be an object, got ${String(ge)}`);
    if (checked.lossRatio !== 0) {
      throw new UsageError(`link profile: 'lossRatio' must be 0 when 'gilbertElliott' is set (the burst model defines the loss), got ${checked.lossRatio}`);
    }
    checked.gilbertElliott = Object.freeze({
      pGoodToBad: checkNumber("gilbertElliott.pGoodToBad", ge.pGoodToBad, 0, 1),
      pBadToGood: checkNumber("gilbertElliott.pBadToGood", ge.pBadToGood, 0, 1, true),
      lossInBad: checkNumber("gilbertElliott.lossInBad", ge.lossInBad, 0, 1),
      lossInGood: checkNumber("gilbertElliott.lossInGood", ge.lossInGood, 0, 1),
    });
  }
  return Object.freeze(checked);
}

/** The long-run fraction of datagrams a profile loses at random (the Gilbert-Elliott stationary value when set). */
export function meanLossRatio(profile: LinkProfile): number {
  const ge = profile.gilbertElliott;
  if (ge === undefined) return profile.lossRatio;
  const pBad = ge.pGoodToBad / (ge.pGoodToBad + ge.pBadToGood);
  return pBad * ge.lossInBad + (1 - pBad) * ge.lossInGood;
}

/**
 * Gilbert parameters (lossInBad 1, lossInGood 0) for a mean loss ratio in [0, 1) and a mean
 * burst length ≥ 1 datagrams: pBadToGood = 1 / burst, pGoodToBad = pBadToGood · loss / (1 − loss).
 */
export function gilbertElliottForBursts(lossRatio: number, meanBurstLength: number): GilbertElliottParams {
  checkNumber("lossRatio", lossRatio, 0, 1);
  if (lossRatio === 1) throw new UsageError("link profile: 'lossRatio' must be below 1 for a burst model; use lossRatio 1 for a blackhole");
  checkNumber("meanBurstLength", meanBurstLength, 1, Infinity);
  const pBadToGood = 1 / meanBurstLength;
  const pGoodToBad = (pBadToGood * lossRatio) / (1 - lossRatio);
  if (pGoodToBad > 1) throw new UsageError(`link profile: 'meanBurstLength' ${meanBurstLength} is too short for lossRatio ${lossRatio}`);
  return { pGoodToBad, pBadToGood, lossInBad: 1, lossInGood: 0 };
}

/** What happened to a datagram at `send()`. "delivered": inside the call; "scheduled": a timer (or the queue) will deliver it. */
export type LinkFate = "delivered" | "scheduled" | "dropped-random" | "dropped-queue";

/** Monotonic counters since construction. sent = delivered + droppedRandom + droppedQueue + discarded + pending. */
export interface LinkEmulatorCounters {
  /** Datagrams offered to send(). */
  sent: number;
  /** Datagrams lost to the loss model (iid or Gilbert-Elliott). */
  droppedRandom: number;
  /** Datagrams tail-dropped because the bandwidth queue was full. */
  droppedQueue: number;
  /** Datagrams handed to their deliver callback. */
  delivered: number;
  /** Datagrams still pending when destroy() was called. */
  discarded: number;
  /** Bytes offered to send(). */
  sentBytes: number;
  /** Bytes handed to deliver callbacks. */
  deliveredBytes: number;
}

export interface LinkEmulatorOptions {
  profile: LinkProfile;
  /** Seed of the PRNG that draws losses and jitter (an integer; used modulo 2^32). */
  seed: number;
  /** Time source for the queue and the delivery timers. */
  clock: Clock;
  /** Most bytes that may wait for the bandwidth limit before tail drop (only with bandwidthMbit > 0). Defaults to 262,144 (256 KiB ≈ 210 ms at 10 Mbit/s). */
  queueLimitBytes?: number;
  /** Token bucket depth in bytes: how much may leave back to back after an idle period. Defaults to 1,500 (one full-size datagram). */
  burstBytes?: number;
  /** Let jitter reorder datagrams. Defaults to false (FIFO, like a link that does not reorder). */
  allowReordering?: boolean;
  /** Receives an exception thrown by a deliver callback run from a timer. Defaults to rethrowing it from the timer (an uncaught exception). */
  onDeliverError?: (error: unknown) => void;
}

interface Pending {
  atMs: number;
  sequence: number;
  datagram: Buffer;
  deliver: (datagram: Buffer) => void;
}

/** A binary min-heap of pending deliveries ordered by (atMs, sequence): ties leave in send order. */
class DeliveryHeap {
  private readonly items: Pending[] = [];
  get size(): number {
    return this.items.length;
  }
  peek(): Pending | undefined {
    return this.items[0];
  }
  clear(): void {
    this.items.length = 0;
  }
  push(item: Pending): void {
    const items = this.items;
    let i = items.push(item) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(item, items[parent]!)) break;
      items[i] = items[parent]!;
      i = parent;
    }
    items[i] = item;
  }
  pop(): Pending | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (top === undefined || last === undefined || items.length === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= items.length) break;
      const right = left + 1;
      const child = right < items.length && before(items[right]!, items[left]!) ? right : left;
      if (!before(items[child]!, last)) break;
      items[i] = items[child]!;
      i = child;
    }
    items[i] = last;
    return top;
  }
}

function before(a: Pending, b: Pending): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.sequence < b.sequence);
}

const DEFAULT_QUEUE_LIMIT_BYTES = 262_144;
const DEFAULT_BURST_BYTES = 1_500;
/** Bytes per ms at 1 Mbit/s: 10^6 / 8 / 1000. */
const BYTES_PER_MS_PER_MBIT = 125;

export class LinkEmulator {
  private profileValue: Readonly<LinkProfile>;
  private readonly clock: Clock;
  private readonly random: SeededRandom;
  private readonly queueLimitBytes: number;
  private readonly burstBytes: number;
  private readonly allowReordering: boolean;
  private readonly onDeliverError: ((error: unknown) => void) | undefined;
  private readonly counts: LinkEmulatorCounters = { sent: 0, droppedRandom: 0, droppedQueue: 0, delivered: 0, discarded: 0, sentBytes: 0, deliveredBytes: 0 };
  private inBadState = false;
  /** Token bucket level (bytes, may be negative after a datagram larger than the bucket) at bucketAtMs, the last release. */
  private bucketBytes: number;
  private bucketAtMs: number;
  /** Release times and sizes of datagrams still waiting for the bucket, FIFO from waitingHead. */
  private readonly waiting: { releaseAtMs: number; sizeBytes: number }[] = [];
  private waitingHead = 0;
  private waitingBytes = 0;
  /** Latest delivery time given to a datagram (for FIFO order). */
  private lastDeliveryAtMs = -Infinity;
  private readonly pending = new DeliveryHeap();
  private sequence = 0;
  private timer: TimerHandle | null = null;
  private timerAtMs = Infinity;
  private state: "open" | "closing" | "closed" = "open";
  private drained: (() => void) | null = null;

  constructor(options: LinkEmulatorOptions) {
    this.profileValue = validateLinkProfile(options.profile);
    if (typeof options.seed !== "number" || !Number.isInteger(options.seed)) throw new UsageError(`link emulator: 'seed' must be an integer, got ${String(options.seed)}`);
    this.clock = options.clock;
    this.random = new SeededRandom(options.seed);
    this.queueLimitBytes = checkNumber("queueLimitBytes", options.queueLimitBytes ?? DEFAULT_QUEUE_LIMIT_BYTES, 0, Infinity, false, "link emulator");
    this.burstBytes = checkNumber("burstBytes", options.burstBytes ?? DEFAULT_BURST_BYTES, 0, Infinity, true, "link emulator");
    this.allowReordering = options.allowReordering ?? false;
    this.onDeliverError = options.onDeliverError;
    this.bucketBytes = this.burstBytes;
    this.bucketAtMs = this.clock.now();
  }

  /** The profile in force. */
  get profile(): Readonly<LinkProfile> {
    return this.profileValue;
  }

  /** Replaces the profile for datagrams sent from now on (for link flaps); the Gilbert-Elliott state carries over. */
  setProfile(profile: LinkProfile): void {
    this.profileValue = validateLinkProfile(profile);
  }

  /** A copy of the counters. */
  counters(): LinkEmulatorCounters {
    return { ...this.counts };
  }

  /** Datagrams accepted and not yet delivered (excluding those condemned by the loss model). */
  get pendingDatagrams(): number {
    return this.pending.size;
  }

  /** Bytes waiting for the bandwidth limit now. */
  get queuedBytes(): number {
    this.releaseDeparted(this.clock.now());
    return this.waitingBytes;
  }

  /**
   * Offers one datagram to the link. `deliver` runs with it when (and if) it arrives: inside this
   * call when its delivery time is now, else from a timer. The datagram is copied when it has to
   * wait, so the caller may reuse its buffer at once, as with a real socket.
   */
  send(datagram: Uint8Array, deliver: (datagram: Buffer) => void): LinkFate {
    if (this.state !== "open") throw new UsageError("link emulator: send() after close() or destroy()");
    const nowMs = this.clock.now();
    const sizeBytes = datagram.byteLength;
    this.counts.sent++;
    this.counts.sentBytes += sizeBytes;
    const lost = this.drawLoss();
    const propagationMs = this.drawPropagation();
    const releaseAtMs = this.admit(nowMs, sizeBytes);
    if (releaseAtMs === null) {
      this.counts.droppedQueue++;
      return "dropped-queue";
    }
    if (lost) {
      this.counts.droppedRandom++;
      return "dropped-random";
    }
    let atMs = releaseAtMs + propagationMs;
    if (!this.allowReordering) atMs = Math.max(atMs, this.lastDeliveryAtMs);
    this.lastDeliveryAtMs = Math.max(this.lastDeliveryAtMs, atMs);
    const buffer = Buffer.isBuffer(datagram) ? datagram : Buffer.from(datagram.buffer, datagram.byteOffset, datagram.byteLength);
    if (atMs <= nowMs && this.pending.size === 0) {
      this.counts.delivered++;
      this.counts.deliveredBytes += sizeBytes;
      deliver(buffer);
      return "delivered";
    }
    this.pending.push({ atMs, sequence: this.sequence++, datagram: Buffer.from(buffer), deliver });
    this.arm();
    return "scheduled";
  }

  /** Stops accepting datagrams; resolves once every pending one has been delivered. */
  close(): Promise<void> {
    if (this.state === "open") this.state = "closing";
    if (this.pending.size === 0) {
      this.state = "closed";
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const previous = this.drained;
      this.drained = () => {
        previous?.();
        resolve();
      };
    });
  }

  /** Stops at once: pending datagrams are discarded (counted) and the timer is cancelled. */
  destroy(): void {
    this.counts.discarded += this.pending.size;
    this.pending.clear();
    this.timer?.cancel();
    this.timer = null;
    this.timerAtMs = Infinity;
    this.state = "closed";
    this.finishDrain();
  }

  private drawLoss(): boolean {
    const ge = this.profileValue.gilbertElliott;
    if (ge === undefined) return this.random.nextFloat() < this.profileValue.lossRatio;
    const lost = this.random.nextFloat() < (this.inBadState ? ge.lossInBad : ge.lossInGood);
    const flip = this.random.nextFloat();
    this.inBadState = this.inBadState ? flip >= ge.pBadToGood : flip < ge.pGoodToBad;
    return lost;
  }

  private drawPropagation(): number {
    const { delayMs, jitterMs } = this.profileValue;
    if (jitterMs === 0) return delayMs;
    const distribution = this.profileValue.jitterDistribution ?? "normal";
    let jitter: number;
    switch (distribution) {
      case "normal":
        jitter = jitterMs * this.random.nextGaussian();
        break;
      case "uniform":
        jitter = jitterMs * (2 * this.random.nextFloat() - 1);
        break;
      default:
        throw new UsageError(`link profile: unknown jitterDistribution ${String(distribution satisfies never)}`);
    }
    return Math.max(0, delayMs + jitter);
  }

  /** Forgets waiting-queue entries released by nowMs. */
  private releaseDeparted(nowMs: number): void {
    const waiting = this.waiting;
    while (this.waitingHead < waiting.length && waiting[this.waitingHead]!.releaseAtMs <= nowMs) {
      this.waitingBytes -= waiting[this.waitingHead]!.sizeBytes;
      this.waitingHead++;
    }
    if (this.waitingHead === waiting.length) {
      waiting.length = 0;
      this.waitingHead = 0;
    } else if (this.waitingHead > 1024 && this.waitingHead * 2 > waiting.length) {
      waiting.splice(0, this.waitingHead);
      this.waitingHead = 0;
    }
  }

  /**
   * The token bucket: returns when the datagram leaves the bucket, or null when it would have to
   * wait and the queue has no room (tail drop; the bucket is then left untouched). The head of
   * the queue leaves when the bucket holds min(size, burstBytes); leaving takes size bytes out.
   */
  private admit(nowMs: number, sizeBytes: number): number | null {
    const bandwidthMbit = this.profileValue.bandwidthMbit;
    if (bandwidthMbit === 0) return nowMs;
    const rateBytesPerMs = bandwidthMbit * BYTES_PER_MS_PER_MBIT;
    this.releaseDeparted(nowMs);
    const startMs = Math.max(nowMs, this.bucketAtMs);
    const levelBytes = Math.min(this.burstBytes, this.bucketBytes + (startMs - this.bucketAtMs) * rateBytesPerMs);
    const needBytes = Math.min(sizeBytes, this.burstBytes);
    const waitMs = levelBytes >= needBytes ? 0 : (needBytes - levelBytes) / rateBytesPerMs;
    const releaseAtMs = startMs + waitMs;
    if (releaseAtMs > nowMs) {
      if (this.waitingBytes + sizeBytes > this.queueLimitBytes) return null;
      this.waiting.push({ releaseAtMs, sizeBytes });
      this.waitingBytes += sizeBytes;
    }
    this.bucketBytes = levelBytes + waitMs * rateBytesPerMs - sizeBytes;
    this.bucketAtMs = releaseAtMs;
    return releaseAtMs;
  }

  /** Keeps exactly one timer, set for the earliest pending delivery. */
  private arm(): void {
    const head = this.pending.peek();
    if (head === undefined) {
      this.timer?.cancel();
      this.timer = null;
      this.timerAtMs = Infinity;
      return;
    }
    if (this.timer !== null && this.timerAtMs === head.atMs) return;
    this.timer?.cancel();
    this.timerAtMs = head.atMs;
    this.timer = this.clock.setTimer(head.atMs - this.clock.now(), () => this.onTimer());
  }

  private onTimer(): void {
    this.timer = null;
    this.timerAtMs = Infinity;
    const nowMs = this.clock.now();
    let firstError: { error: unknown } | null = null;
    for (let head = this.pending.peek(); head !== undefined && head.atMs <= nowMs; head = this.pending.peek()) {
      this.pending.pop();
      this.counts.delivered++;
      this.counts.deliveredBytes += head.datagram.byteLength;
      try {
        head.deliver(head.datagram);
      } catch (error) {
        // Keep delivering the rest of the batch and keep the timer armed; the error is reported below.
        firstError ??= { error };
      }
    }
    this.arm();
    if (this.pending.size === 0 && this.state === "closing") {
      this.state = "closed";
      this.finishDrain();
    }
    if (firstError !== null) {
      if (this.onDeliverError === undefined) throw firstError.error;
      this.onDeliverError(firstError.error);
    }
  }

  private finishDrain(): void {
    const drained = this.drained;
    this.drained = null;
    drained?.();
  }
}
