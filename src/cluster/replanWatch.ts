/**
 * When the coordinator should plan again while generating: a worker left or came back, or a
 * worker's link drifted from what it was when the placement was made. Pure: fed samples and a
 * token count, it answers with a trigger or nothing, so the thresholds are tested offline.
 *
 * Drift is judged against a baseline taken once the placement has settled (`settleTokens` after
 * it took effect), not against the figures the plan was made from: moving groups changes a
 * worker's round trip by itself (it includes the worker's compute), and that must not look like
 * drift, or placements would swing back and forth.
 */
import { HaloError } from "../base/index.js";

export interface ReplanPolicy {
  /** A round-trip EWMA this much above or below the baseline (0.5: ×1.5 or ÷1.5) is drift. */
  readonly rttRatio: number;
  /** ...and only when it moved by at least this many ms: a 0.2 → 0.4 ms change is noise. */
  readonly rttMinMs: number;
  /** A loss EWMA this far (absolute, 0.02 = 2 points) from the baseline is drift. */
  readonly lossDelta: number;
  /** Tokens after a placement takes effect before its baseline is taken, and before drift may trigger again. */
  readonly settleTokens: number;
}

export const DEFAULT_REPLAN_POLICY: ReplanPolicy = { rttRatio: 1, rttMinMs: 2, lossDelta: 0.03, settleTokens: 16 };

/** What the watch reads of one worker (device index = position + 1). */
export interface WorkerSample {
  readonly active: boolean;
  /** Smoothed phase round trip; null before the first sample. */
  readonly rttMs: number | null;
  /** Smoothed fraction of contributions missing at the deadline. */
  readonly lossRatio: number;
}

export type ReplanTrigger =
  | { readonly kind: "request" }
  | { readonly kind: "leave" | "join"; readonly device: number }
  | { readonly kind: "drift"; readonly device: number; readonly what: "rtt" | "loss"; readonly from: number; readonly to: number };

export function describeTrigger(trigger: ReplanTrigger): string {
  if (trigger.kind === "request") return "a re-plan was requested";
  if (trigger.kind !== "drift") return trigger.kind === "leave" ? `worker ${trigger.device} left` : `worker ${trigger.device} joined again`;
  const unit = trigger.what === "rtt" ? " ms" : "";
  const show = (v: number): string => (trigger.what === "rtt" ? v.toFixed(1) : `${(v * 100).toFixed(1)}%`);
  // The loss figure counts contributions missing at the deadline: lost, or late.
  return `worker ${trigger.device}'s ${trigger.what === "rtt" ? "round trip" : "missed contributions"} drifted from ${show(trigger.from)}${unit} to ${show(trigger.to)}${unit}`;
}

export class ReplanWatch {
  private readonly policy: ReplanPolicy;
  /** Who was active when the placement was made. */
  private activeAtPlan: boolean[] = [];
  private plannedAtToken = 0;
  /** The settled figures drift is measured from; undefined until settled. */
  private baseline: WorkerSample[] | undefined;

  constructor(policy: Partial<ReplanPolicy> = {}) {
    this.policy = { ...DEFAULT_REPLAN_POLICY, ...policy };
    const { rttRatio, rttMinMs, lossDelta, settleTokens } = this.policy;
    const ok = rttRatio > 0 && Number.isFinite(rttRatio) && rttMinMs >= 0 && Number.isFinite(rttMinMs) && lossDelta > 0 && lossDelta <= 1 && Number.isInteger(settleTokens) && settleTokens >= 1;
    if (!ok) throw new HaloError("HALO_ERR_USAGE", `re-plan policy out of range: ${JSON.stringify(this.policy)} (rttRatio > 0, rttMinMs ≥ 0, lossDelta in (0, 1], settleTokens an integer ≥ 1)`);
  }

  /** A placement took effect (or a plan was considered) at `token`: membership is judged from these samples, drift from a baseline taken later. */
  planned(samples: readonly WorkerSample[], token: number): void {
    this.activeAtPlan = samples.map((s) => s.active);
    this.plannedAtToken = token;
    this.baseline = undefined;
  }

  /** The first trigger among the workers, checked after token `token` ended; undefined: keep the placement. */
  check(samples: readonly WorkerSample[], token: number): ReplanTrigger | undefined {
    for (let i = 0; i < samples.length; i++) {
      const was = this.activeAtPlan[i] ?? true;
      if (was && !samples[i]!.active) return { kind: "leave", device: i + 1 };
      if (!was && samples[i]!.active) return { kind: "join", device: i + 1 };
    }
    if (token - this.plannedAtToken < this.policy.settleTokens) return undefined;
    if (this.baseline === undefined) {
      this.baseline = samples.map((s) => ({ ...s }));
      return undefined;
    }
    for (let i = 0; i < samples.length; i++) {
      const now = samples[i]!;
      const base = this.baseline[i]!;
      if (!now.active || !base.active) continue;
      if (base.rttMs === null || now.rttMs === null) {
        if (now.rttMs !== null) this.baseline[i] = { ...now };
        continue;
      }
      const { rttRatio, rttMinMs, lossDelta } = this.policy;
      const ratio = now.rttMs / Math.max(base.rttMs, 1e-6);
      if ((ratio > 1 + rttRatio || ratio < 1 / (1 + rttRatio)) && Math.abs(now.rttMs - base.rttMs) >= rttMinMs) return { kind: "drift", device: i + 1, what: "rtt", from: base.rttMs, to: now.rttMs };
      if (Math.abs(now.lossRatio - base.lossRatio) >= lossDelta) return { kind: "drift", device: i + 1, what: "loss", from: base.lossRatio, to: now.lossRatio };
    }
    return undefined;
  }
}
