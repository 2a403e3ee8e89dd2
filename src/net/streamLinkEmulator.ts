/**
 * One direction of an emulated link for a reliable byte stream (the strict baseline's TCP
 * messages under `halo cluster --local`), where loopback TCP itself never loses anything.
 *
 * A stream never loses a message; a lost segment costs time instead. The model, per message:
 * - it is cut into ⌈bytes / mssBytes⌉ segments; each segment is lost with the profile's loss
 *   ratio, and each loss of the same segment waits one retransmission timeout, doubling from
 *   `rtoMs` (RFC 6298 back-off). Messages of one or two segments never collect the three
 *   duplicate ACKs fast retransmit needs, which is exactly the per-layer sync message: DESIGN's
 *   measured baseline shows these stalls (≈ 250 ms each) as the whole cost of loss;
 * - serialisation at the link rate, then the profile's delay and jitter;
 * - delivery in order: a message never arrives before the one sent ahead of it (head-of-line
 *   blocking, which is why one stalled segment stalls the whole layer barrier).
 * This is a model, not TCP: the netns testbed (real kernel TCP, nft drops on the wire) is the
 * measurement; this keeps the one-command local cluster honest about what loss does to strict mode.
 */
import { SeededRandom, UsageError, type Clock, type TimerHandle } from "../base/index.js";
import { validateLinkProfile, type LinkProfile } from "./linkEmulator.js";

export interface StreamLinkEmulatorOptions {
  profile: LinkProfile;
  seed: number;
  clock: Clock;
  /** Linux's minimum retransmission timeout is 200 ms; DESIGN measured ≈ 250 ms stalls. Defaults to 200. */
  rtoMs?: number;
  /** TCP payload per segment on a 1,500-byte MTU. Defaults to 1,448. */
  mssBytes?: number;
}

const MAX_RETRANSMISSIONS = 15;

interface PendingMessage {
  atMs: number;
  deliver: () => void;
}

export class StreamLinkEmulator {
  /** Messages sent, and retransmissions the loss model charged. */
  readonly counters = { messages: 0, retransmissions: 0 };
  private readonly profile: Readonly<LinkProfile>;
  private readonly random: SeededRandom;
  private readonly clock: Clock;
  private readonly rtoMs: number;
  private readonly mssBytes: number;
  private readonly queue: PendingMessage[] = [];
  private lastDeliveryAtMs = -Infinity;
  private linkFreeAtMs = -Infinity;
  private timer: TimerHandle | undefined;
  private destroyed = false;

  constructor(options: StreamLinkEmulatorOptions) {
    this.profile = validateLinkProfile(options.profile);
    this.random = new SeededRandom(options.seed);
    this.clock = options.clock;
    this.rtoMs = options.rtoMs ?? 200;
    this.mssBytes = options.mssBytes ?? 1448;
    if (!(this.rtoMs > 0) || !(this.mssBytes >= 1)) throw new UsageError(`stream link: rtoMs ${this.rtoMs} and mssBytes ${this.mssBytes} must be positive`);
  }

  /** True when the profile adds nothing, so callers can send directly. */
  get isTransparent(): boolean {
    const p = this.profile;
    return p.lossRatio === 0 && p.delayMs === 0 && p.jitterMs === 0 && p.bandwidthMbit === 0 && p.gilbertElliott === undefined;
  }

  /** Schedules `deliver` for when a message of `nBytes` would have crossed the link. */
  send(nBytes: number, deliver: () => void): void {
    if (this.destroyed) return;
    this.counters.messages++;
    const nowMs = this.clock.now();
    const p = this.profile;
    let stallMs = 0;
    const nSegments = Math.max(1, Math.ceil(nBytes / this.mssBytes));
    for (let s = 0; s < nSegments; s++) {
      let rto = this.rtoMs;
      // The loss draw is per transmission: a retransmitted segment can be lost again, up to
      // Linux's default tcp_retries2 (15); a link that loses everything is a dead connection,
      // which heartbeats report, not this model.
      for (let attempt = 0; attempt < MAX_RETRANSMISSIONS && this.random.nextFloat() < p.lossRatio; attempt++) {
        stallMs += rto;
        rto = Math.min(2 * rto, 60_000);
        this.counters.retransmissions++;
      }
    }
    const serialisationMs = p.bandwidthMbit > 0 ? (nBytes * 8) / (p.bandwidthMbit * 1000) : 0;
    const departMs = Math.max(nowMs, this.linkFreeAtMs) + serialisationMs;
    this.linkFreeAtMs = departMs;
    const jitterMs = p.jitterMs === 0 ? 0 : p.jitterMs * this.random.nextGaussian();
    const atMs = Math.max(this.lastDeliveryAtMs, departMs + Math.max(0, p.delayMs + jitterMs) + stallMs);
    this.lastDeliveryAtMs = atMs;
    if (atMs <= nowMs && this.queue.length === 0) {
      deliver();
      return;
    }
    this.queue.push({ atMs, deliver });
    if (this.timer === undefined) this.arm();
  }

  /** Drops every pending message (the connection is gone). */
  destroy(): void {
    this.destroyed = true;
    this.timer?.cancel();
    this.timer = undefined;
    this.queue.length = 0;
  }

  private arm(): void {
    const head = this.queue[0];
    if (head === undefined) return;
    this.timer = this.clock.setTimer(head.atMs - this.clock.now(), () => {
      this.timer = undefined;
      const nowMs = this.clock.now();
      while (this.queue.length > 0 && this.queue[0]!.atMs <= nowMs) this.queue.shift()!.deliver();
      this.arm();
    });
  }
}
