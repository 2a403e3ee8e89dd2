/**
 * What a placement means under the cost model: its objective terms, each phase's critical
 * devices and suggested deadlines, and each device's memory. One function for the scheduler's
 * own placement and for the baselines, so they are compared on the same terms.
 */
import { ScheduleError } from "../base/index.js";
import { GROUP_KINDS, validatePlacement, type GroupKind, type Placement } from "../partition/index.js";
import { CostModel, JITTER_DEVIATIONS, type DeviceArrival, type PhaseTerms } from "./costModel.js";
import { validateScheduleInput, type ScheduleInput, type ScheduleOptions } from "./scheduleInput.js";

export interface PhaseDeadlines {
  /** From the phase's start: how long to accept non-critical contributions. */
  readonly softMs: number;
  /** From the phase's start: how long to wait for critical contributions. */
  readonly hardMs: number;
}

export interface LayerSchedule {
  /** Per phase, ascending: the devices holding the groups that make up the critical importance mass (0 may appear; it is local and always in time). */
  readonly critical: Readonly<Record<GroupKind, readonly number[]>>;
  readonly deadlines: Readonly<Record<GroupKind, PhaseDeadlines>>;
  readonly makespanMs: Readonly<Record<GroupKind, number>>;
}

export interface ObjectiveTerms {
  /** Σ over phases of the expected makespan: a token's expected compute and sync time. */
  readonly makespanMs: number;
  /** Σ over phases of the expected importance missed, in phases of average importance. */
  readonly lostImportance: number;
  readonly lambdaMs: number;
  /** makespanMs + lambdaMs × lostImportance: what the scheduler minimizes. */
  readonly costMs: number;
}

export interface DeviceLoad {
  readonly usedBytes: number;
  readonly budgetBytes: number;
  /** Σ over layers */
  readonly nAttentionGroups: number;
  readonly nFfnGroups: number;
}

export interface Schedule {
  readonly placement: Placement;
  /** (nLayers) */
  readonly layers: readonly LayerSchedule[];
  /** Per kind, the latest of its layers' deadlines, for a runtime that keeps one deadline per phase kind. */
  readonly deadlines: Readonly<Record<GroupKind, PhaseDeadlines>>;
  readonly objective: ObjectiveTerms;
  /** (nDevices) A baseline may exceed a budget; the scheduler's placement never does. */
  readonly devices: readonly DeviceLoad[];
}

/** One phase in detail, for --explain. */
export interface PhaseEvaluation {
  readonly layer: number;
  readonly kind: GroupKind;
  readonly terms: PhaseTerms;
  readonly arrivals: readonly DeviceArrival[];
  readonly critical: readonly number[];
  readonly deadlines: PhaseDeadlines;
}

/** Per-device group counts and importance sums per phase, laid out as CostModel.phaseCost reads them. */
export function phaseLoads(model: CostModel, owners: readonly ArrayLike<number>[]): { counts: Int32Array; importanceSums: Float64Array } {
  const n = model.nDevices;
  const counts = new Int32Array(model.nPhases * n);
  const importanceSums = new Float64Array(model.nPhases * n);
  owners.forEach((phaseOwners, p) => {
    const importance = model.importance[p]!;
    for (let g = 0; g < phaseOwners.length; g++) {
      counts[p * n + phaseOwners[g]!]!++;
      importanceSums[p * n + phaseOwners[g]!]! += importance[g]!;
    }
  });
  return { counts, importanceSums };
}

/**
 * The fewest most important groups whose importance reaches the critical fraction; among equal
 * importance the groups on the most reliable devices come first, so the same mass is protected
 * by waiting for fewer unreliable devices.
 */
function criticalDevices(model: CostModel, p: number, owners: ArrayLike<number>, arrivals: readonly DeviceArrival[]): number[] {
  const importance = model.importance[p]!;
  let total = 0;
  for (const v of importance) total += v;
  const target = model.criticalFraction * total;
  const order = model.byImportance[p]!;
  const critical = new Set<number>();
  let mass = 0;
  for (let start = 0; start < order.length && mass < target; ) {
    // A run of equal importance, its most reliable holders first (byImportance orders runs by index only).
    let end = start + 1;
    while (end < order.length && importance[order[end]!] === importance[order[start]!]) end++;
    const run = end - start === 1 ? [order[start]!] : Array.from(order.subarray(start, end)).sort((a, b) => arrivals[owners[a]!]!.missRatio - arrivals[owners[b]!]!.missRatio || a - b);
    for (const g of run) {
      if (mass >= target) break;
      critical.add(owners[g]!);
      mass += importance[g]!;
    }
    start = end;
  }
  return [...critical].sort((a, b) => a - b);
}

/**
 * soft: the latest non-critical device's expected return plus four jitters (critical ones are
 * waited for anyway, so they need not stretch it). hard: twice the latest return plus four
 * jitters and one more round trip, room for a lost critical datagram's retransmission.
 */
function suggestDeadlines(model: CostModel, arrivals: readonly DeviceArrival[], critical: readonly number[]): PhaseDeadlines {
  let softMs = 0;
  let anyNonCritical = false;
  let latestMs = 0;
  let latestBoundMs = 0;
  arrivals.forEach((arrival, d) => {
    if (arrival.nGroups === 0) return;
    const device = model.devices[d]!;
    const boundMs = arrival.expectedMs + JITTER_DEVIATIONS * device.jitterMs;
    latestBoundMs = Math.max(latestBoundMs, boundMs);
    latestMs = Math.max(latestMs, boundMs + device.rttMs);
    if (d === 0 || !critical.includes(d)) {
      softMs = Math.max(softMs, boundMs);
      anyNonCritical ||= d !== 0;
    }
  });
  // Every worker critical: the soft deadline no longer decides anything, so it is the latest return.
  if (!anyNonCritical) softMs = Math.max(softMs, latestBoundMs);
  return { softMs, hardMs: 2 * latestMs };
}

export function evaluateWithModel(model: CostModel, placement: Placement): { schedule: Schedule; phases: PhaseEvaluation[] } {
  const n = model.nDevices;
  const owners = placement.layers.flatMap((layer) => [layer.attention, layer.ffn]);
  const { counts, importanceSums } = phaseLoads(model, owners);
  const phases: PhaseEvaluation[] = [];
  let makespanMs = 0;
  let lostImportance = 0;
  for (let p = 0; p < model.nPhases; p++) {
    // Phases are numbered layer × 2 + kind index (attention 0, FFN 1), so a layer's two sit side by side.
    const k = p & 1;
    const { terms, devices: arrivals } = model.arrivals(k, counts, importanceSums, p * n);
    const critical = criticalDevices(model, p, owners[p]!, arrivals);
    phases.push({ layer: p >> 1, kind: GROUP_KINDS[k]!, terms, arrivals, critical, deadlines: suggestDeadlines(model, arrivals, critical) });
    makespanMs += terms.makespanMs;
    lostImportance += terms.lostImportance;
  }
  const layers: LayerSchedule[] = [];
  for (let l = 0; l < model.nLayers; l++) {
    const [a, f] = [phases[2 * l]!, phases[2 * l + 1]!];
    layers.push({
      critical: { attention: a.critical, ffn: f.critical },
      deadlines: { attention: a.deadlines, ffn: f.deadlines },
      makespanMs: { attention: a.terms.makespanMs, ffn: f.terms.makespanMs },
    });
  }
  const latest = (kind: GroupKind): PhaseDeadlines => ({
    softMs: Math.max(...layers.map((l) => l.deadlines[kind].softMs)),
    hardMs: Math.max(...layers.map((l) => l.deadlines[kind].hardMs)),
  });
  const devices = model.devices.map((device, d): DeviceLoad => {
    let nAttentionGroups = 0;
    let nFfnGroups = 0;
    for (let p = 0; p < model.nPhases; p++) {
      if ((p & 1) === 0) nAttentionGroups += counts[p * n + d]!;
      else nFfnGroups += counts[p * n + d]!;
    }
    const usedBytes = nAttentionGroups * model.groupBytes[0]! + nFfnGroups * model.groupBytes[1]!;
    return { usedBytes, budgetBytes: device.budgetBytes, nAttentionGroups, nFfnGroups };
  });
  const objective = { makespanMs, lostImportance, lambdaMs: model.lambdaMs, costMs: makespanMs + model.lambdaMs * lostImportance };
  return { schedule: { placement, layers, deadlines: { attention: latest("attention"), ffn: latest("ffn") }, objective, devices }, phases };
}

/** Evaluates any valid placement (a baseline's, or one from an earlier plan) under the scheduler's model. */
export function evaluatePlacement(input: ScheduleInput, placement: Placement, options: ScheduleOptions = {}): Schedule {
  validateScheduleInput(input, options);
  validatePlacement(placement, input.layout, input.nLayers);
  if (placement.nDevices !== input.devices.length) throw new ScheduleError("invalid-input", `the placement is for ${placement.nDevices} devices, the input has ${input.devices.length}`);
  return evaluateWithModel(new CostModel(input, options), placement).schedule;
}
