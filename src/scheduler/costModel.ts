/**
 * The scheduler's model of one token, phase by phase (each layer has an attention and an FFN
 * phase, each ending at a barrier on the coordinator):
 * - a device holding n groups of a phase returns after n × groupMs + transferMs + a random delay,
 *   where transferMs = rtt/2 + broadcast/bandwidth down plus rtt/2 + partial sum/bandwidth up,
 *   and the delay is exponential with mean jitterMs. So it is expected back after
 *   n × groupMs + transferMs + jitterMs. A device holding none of the phase costs nothing (it is
 *   sent nothing);
 * - the phase's makespan is the latest expected return;
 * - a device's contribution misses the phase when either of its two messages is lost,
 *   1 − (1 − loss)², or when it is late: its delay passes the soft deadline
 *   S = max over the phase's devices of (expected return + 4 × jitter), the RFC 6298 bound the
 *   cluster's PhaseDeadline learns. P(late) = exp(−(S − expected + jitter) / jitter);
 * - cost = makespan + λ × Σ importance × P(miss).
 * The coordinator computes locally: no transfer, no loss, no jitter, whatever its profile's link says.
 */
import { ScheduleError } from "../base/index.js";
import { GROUP_KINDS, groupCount, type GroupKind } from "../partition/index.js";
import { PhasePins } from "./pinnedGroups.js";
import { DEFAULT_CRITICAL_FRACTION, DEFAULT_LAMBDA_MS, groupBytes, type ScheduleInput, type ScheduleOptions } from "./scheduleInput.js";

/** The RFC 6298 multiplier of the deviation in the learned soft deadline. */
export const JITTER_DEVIATIONS = 4;

/** What the model keeps of one device. */
export interface DeviceCost {
  readonly name: string;
  /** [attention, ffn]: ms per group; Infinity when the device gets no group of that kind. */
  readonly groupMs: readonly number[];
  /** Both messages of a phase, when the device holds any group of it. */
  readonly transferMs: number;
  /** Mean delay beyond the transfer; also the scale of its exponential tail. */
  readonly rttMs: number;
  readonly jitterMs: number;
  /** P(the broadcast or the partial sum is lost). */
  readonly lossMissRatio: number;
  readonly budgetBytes: number;
  /** [attention, ffn]: why the device gets no group of that kind, or undefined when it may. */
  readonly excluded: readonly (string | undefined)[];
}

export interface PhaseTerms {
  readonly makespanMs: number;
  /** The soft deadline the lateness term is measured against. */
  readonly softMs: number;
  /** Σ importance × P(miss), in units of a phase's average importance. */
  readonly lostImportance: number;
}

export interface DeviceArrival {
  readonly nGroups: number;
  readonly computeMs: number;
  readonly transferMs: number;
  /** The mean delay beyond the transfer. */
  readonly jitterMs: number;
  /** compute + transfer + jitter */
  readonly expectedMs: number;
  readonly lateRatio: number;
  readonly missRatio: number;
  readonly importance: number;
}


function exclusionReason(input: ScheduleInput, index: number, kind: GroupKind): string | undefined {
  const device = input.devices[index]!;
  const ms = kind === "attention" ? device.attentionGroupMs : device.ffnGroupMs;
  if (ms === 0 || ms === Infinity) return `no measured time for ${kind} groups`;
  if (device.memoryBudgetBytes < groupBytes(input, kind)) return `memory budget ${device.memoryBudgetBytes} B is below one ${kind} group (${groupBytes(input, kind)} B)`;
  if (index !== 0 && device.link.lossRatio >= 1) return "its link loses every packet";
  return undefined;
}

function deviceCost(input: ScheduleInput, index: number): DeviceCost {
  const device = input.devices[index]!;
  const excluded = GROUP_KINDS.map((kind) => exclusionReason(input, index, kind));
  const groupMs = [device.attentionGroupMs, device.ffnGroupMs].map((ms, k) => (excluded[k] === undefined ? ms : Infinity));
  if (index === 0) return { name: device.name, groupMs, transferMs: 0, rttMs: 0, jitterMs: 0, lossMissRatio: 0, budgetBytes: device.memoryBudgetBytes, excluded };
  const { rttMs, jitterMs, lossRatio, bandwidthMbit } = device.link;
  // Mbit/s is bits per µs; an unknown bandwidth (0) leaves only the round trip, which dominates small messages anyway (TPI-LLM).
  const bytesMs = bandwidthMbit > 0 ? ((input.broadcastBytes + input.partialSumBytes) * 8) / (bandwidthMbit * 1000) : 0;
  return { name: device.name, groupMs, transferMs: rttMs + bytesMs, rttMs, jitterMs, lossMissRatio: 1 - (1 - lossRatio) ** 2, budgetBytes: device.memoryBudgetBytes, excluded };
}

export class CostModel {
  readonly nDevices: number;
  readonly nLayers: number;
  readonly nPhases: number;
  readonly lambdaMs: number;
  readonly criticalFraction: number;
  readonly devices: readonly DeviceCost[];
  /** [attention, ffn] */
  readonly groupBytes: readonly number[];
  /** [attention, ffn] */
  readonly nGroups: readonly number[];
  /** (nPhases) (nGroups of the phase's kind) importance scaled so an average phase sums to 1. */
  readonly importance: readonly Float64Array[];
  /** (nPhases) groups by decreasing importance, ties by index. */
  readonly byImportance: readonly Int32Array[];
  /** The groups that must stay on their device (none when the input pins nothing). */
  readonly pins: PhasePins;
  /** The terms of the last phaseCost call: makespan ms, soft deadline ms, lost importance. */
  readonly lastTerms = new Float64Array(3);
  // The devices' figures again as typed arrays: phaseCost runs about a hundred thousand times
  // per plan, so it reads flat arrays and allocates nothing.
  private readonly groupMsByKind: readonly Float64Array[];
  /** transfer + mean jitter: what a device adds to its compute when it holds any group of a phase */
  private readonly fixedMs: Float64Array;
  private readonly jitterMs: Float64Array;
  private readonly lossMissRatios: Float64Array;
  /** (nPhases × nDevices × 2) see lateRatio */
  private readonly memoSlackMs: Float64Array;
  private readonly memoLateRatio: Float64Array;
  private readonly memoNext: Uint8Array;

  constructor(readonly input: ScheduleInput, options: ScheduleOptions = {}) {
    this.nDevices = input.devices.length;
    this.nLayers = input.nLayers;
    this.nPhases = input.nLayers * 2;
    this.lambdaMs = options.lambdaMs ?? DEFAULT_LAMBDA_MS;
    this.criticalFraction = options.criticalFraction ?? DEFAULT_CRITICAL_FRACTION;
    this.devices = input.devices.map((_, d) => deviceCost(input, d));
    this.groupBytes = GROUP_KINDS.map((kind) => groupBytes(input, kind));
    this.nGroups = GROUP_KINDS.map((kind) => groupCount(input.layout, kind));
    this.importance = scaledImportance(input, this.nGroups);
    this.byImportance = this.importance.map((importance) => indicesByDecreasing(importance));
    this.pins = new PhasePins(input, this.nDevices, this.byImportance);
    this.groupMsByKind = [0, 1].map((k) => Float64Array.from(this.devices, (d) => d.groupMs[k]!));
    this.fixedMs = Float64Array.from(this.devices, (d) => d.transferMs + d.jitterMs);
    this.jitterMs = Float64Array.from(this.devices, (d) => d.jitterMs);
    this.lossMissRatios = Float64Array.from(this.devices, (d) => d.lossMissRatio);
    this.memoSlackMs = new Float64Array(2 * this.nPhases * this.nDevices).fill(NaN);
    this.memoLateRatio = new Float64Array(2 * this.nPhases * this.nDevices);
    this.memoNext = new Uint8Array(this.nPhases * this.nDevices);
  }

  /**
   * The phase's cost for the per-device group counts and importance sums at [base, base + nDevices);
   * each device's P(miss) goes to missRatios[base + d] when given (0 where it holds nothing).
   */
  phaseCost(kindIndex: number, counts: Int32Array, importanceSums: Float64Array, base: number, missRatios?: Float64Array): number {
    const groupMs = this.groupMsByKind[kindIndex]!;
    const softMs = this.softDeadlineMs(kindIndex, counts, base);
    let makespanMs = 0;
    let lostImportance = 0;
    for (let d = 0; d < this.nDevices; d++) {
      const n = counts[base + d]!;
      if (missRatios !== undefined) missRatios[base + d] = 0;
      if (n === 0) continue;
      const expectedMs = n * groupMs[d]! + this.fixedMs[d]!;
      if (expectedMs > makespanMs) makespanMs = expectedMs;
      const missRatio = this.missRatio(base + d, d, expectedMs, softMs);
      if (missRatios !== undefined) missRatios[base + d] = missRatio;
      lostImportance += importanceSums[base + d]! * missRatio;
    }
    this.lastTerms[0] = makespanMs;
    this.lastTerms[1] = softMs;
    this.lastTerms[2] = lostImportance;
    return makespanMs + this.lambdaMs * lostImportance;
  }

  /**
   * Into out[d], for every device: the phase's cost if one more group of `importance` went to d,
   * given the phase's current terms (at terms[termsOffset…+3), as lastTerms lays them out) and
   * P(miss) (at missRatios[base + d]) from phaseCost. The greedy pass asks this for every group,
   * so the common case is priced in O(1): when d's new return plus four jitters stays within the
   * soft deadline, no other device's lateness changes and only d's terms are replaced;
   * otherwise the phase is priced in full.
   */
  costsIfAdded(kindIndex: number, counts: Int32Array, importanceSums: Float64Array, base: number, importance: number, terms: Float64Array, termsOffset: number, missRatios: Float64Array, out: Float64Array): void {
    const groupMs = this.groupMsByKind[kindIndex]!;
    const [makespanMs, softMs, lostImportance] = [terms[termsOffset]!, terms[termsOffset + 1]!, terms[termsOffset + 2]!];
    for (let d = 0; d < this.nDevices; d++) {
      const n = counts[base + d]!;
      const sum = importanceSums[base + d]!;
      const expectedMs = (n + 1) * groupMs[d]! + this.fixedMs[d]!;
      if (expectedMs + JITTER_DEVIATIONS * this.jitterMs[d]! <= softMs) {
        const lost = lostImportance - sum * missRatios[base + d]! + (sum + importance) * this.missRatio(base + d, d, expectedMs, softMs);
        out[d] = Math.max(makespanMs, expectedMs) + this.lambdaMs * lost;
        continue;
      }
      counts[base + d] = n + 1;
      importanceSums[base + d] = sum + importance;
      out[d] = this.phaseCost(kindIndex, counts, importanceSums, base);
      counts[base + d] = n;
      importanceSums[base + d] = sum;
    }
  }

  phaseTerms(kindIndex: number, counts: Int32Array, importanceSums: Float64Array, base: number): PhaseTerms {
    this.phaseCost(kindIndex, counts, importanceSums, base);
    return { makespanMs: this.lastTerms[0]!, softMs: this.lastTerms[1]!, lostImportance: this.lastTerms[2]! };
  }

  /** Per device: expected return, P(late), P(miss), for the same arrays as phaseCost. */
  arrivals(kindIndex: number, counts: Int32Array, importanceSums: Float64Array, base: number): { terms: PhaseTerms; devices: DeviceArrival[] } {
    const terms = this.phaseTerms(kindIndex, counts, importanceSums, base);
    const devices = this.devices.map((device, d) => {
      const nGroups = counts[base + d]!;
      const computeMs = nGroups === 0 ? 0 : nGroups * device.groupMs[kindIndex]!;
      const transferMs = nGroups === 0 ? 0 : device.transferMs;
      const jitterMs = nGroups === 0 ? 0 : device.jitterMs;
      const expectedMs = computeMs + transferMs + jitterMs;
      const lateRatio = nGroups === 0 ? 0 : this.lateRatio(base + d, d, expectedMs, terms.softMs);
      const missRatio = nGroups === 0 ? 0 : this.missRatio(base + d, d, expectedMs, terms.softMs);
      return { nGroups, computeMs, transferMs, jitterMs, expectedMs, lateRatio, missRatio, importance: importanceSums[base + d]! };
    });
    return { terms, devices };
  }

  /** P(miss) of each device for the phase's counts at [base, base + nDevices), into out (0 where it holds nothing). */
  missRatios(kindIndex: number, counts: Int32Array, base: number, out: Float64Array): void {
    const groupMs = this.groupMsByKind[kindIndex]!;
    const softMs = this.softDeadlineMs(kindIndex, counts, base);
    for (let d = 0; d < this.nDevices; d++) {
      const n = counts[base + d]!;
      out[d] = n === 0 ? 0 : this.missRatio(base + d, d, n * groupMs[d]! + this.fixedMs[d]!, softMs);
    }
  }

  private softDeadlineMs(kindIndex: number, counts: Int32Array, base: number): number {
    const groupMs = this.groupMsByKind[kindIndex]!;
    let softMs = 0;
    for (let d = 0; d < this.nDevices; d++) {
      const n = counts[base + d]!;
      if (n === 0) continue;
      const boundMs = n * groupMs[d]! + this.fixedMs[d]! + JITTER_DEVIATIONS * this.jitterMs[d]!;
      if (boundMs > softMs) softMs = boundMs;
    }
    return softMs;
  }

  /**
   * P(late) of device d expected back at expectedMs, against the soft deadline. Slot (base + d) remembers its last two
   * answers: the greedy pass asks each phase's devices the same slack again and again (a phase
   * changes one device at a time and its soft deadline rarely), and exp is most of its cost.
   * The answer is the same either way; `base` is always phase × nDevices, so a slot is one (phase, device).
   */
  private lateRatio(slot: number, d: number, expectedMs: number, softMs: number): number {
    const jitterMs = this.jitterMs[d]!;
    if (jitterMs === 0) return 0;
    // The delay beyond the transfer passes the deadline: P(delay > S − (expected − jitter)).
    const slackMs = softMs - expectedMs + jitterMs;
    const i = 2 * slot;
    if (this.memoSlackMs[i] === slackMs) return this.memoLateRatio[i]!;
    if (this.memoSlackMs[i + 1] === slackMs) return this.memoLateRatio[i + 1]!;
    const lateRatio = Math.exp(-slackMs / jitterMs);
    const replaced = i + this.memoNext[slot]!;
    this.memoSlackMs[replaced] = slackMs;
    this.memoLateRatio[replaced] = lateRatio;
    this.memoNext[slot]! ^= 1;
    return lateRatio;
  }

  private missRatio(slot: number, d: number, expectedMs: number, softMs: number): number {
    return 1 - (1 - this.lossMissRatios[d]!) * (1 - this.lateRatio(slot, d, expectedMs, softMs));
  }
}

/**
 * Indices of `values` by decreasing value, equal values in the order `tieOrder` lists them
 * (index order by default). A bottom-up merge sort on typed arrays, stable, with the keys read
 * directly: several times faster than a comparator sort, and it runs over every group of the
 * model on each plan.
 */
export function indicesByDecreasing(values: Float64Array, tieOrder?: Int32Array): Int32Array {
  const n = values.length;
  let from = tieOrder === undefined ? Int32Array.from({ length: n }, (_, i) => i) : Int32Array.from(tieOrder);
  let to = new Int32Array(n);
  for (let width = 1; width < n; width *= 2) {
    for (let start = 0; start < n; start += 2 * width) {
      const mid = Math.min(start + width, n);
      const end = Math.min(start + 2 * width, n);
      let a = start;
      let b = mid;
      let k = start;
      // `>=` keeps the left run first among equals, which is what makes the sort stable.
      while (a < mid && b < end) to[k++] = values[from[a]!]! >= values[from[b]!]! ? from[a++]! : from[b++]!;
      while (a < mid) to[k++] = from[a++]!;
      while (b < end) to[k++] = from[b++]!;
    }
    [from, to] = [to, from];
  }
  return from;
}

/** Throws unless each kind of group has at least one device that may compute it. */
export function requireCapableDevices(model: CostModel): void {
  GROUP_KINDS.forEach((kind, k) => {
    if (model.devices.every((d) => d.excluded[k] !== undefined)) {
      const reasons = model.devices.map((d, i) => `device ${i} (${d.name}): ${d.excluded[k]}`).join("; ");
      throw new ScheduleError("no-capable-device", `no device can compute ${kind} groups: ${reasons}`);
    }
  });
}

/**
 * Scales calibration importance so an average phase sums to 1, which makes λ read as "ms per
 * phase of importance" whatever the calibration's units; one scale for the whole model keeps
 * the differences between layers and kinds (both are norms of a contribution to the residual).
 */
function scaledImportance(input: ScheduleInput, nGroups: readonly number[]): Float64Array[] {
  const phases: Float64Array[] = [];
  let total = 0;
  for (let l = 0; l < input.nLayers; l++) {
    GROUP_KINDS.forEach((kind, k) => {
      const values = input.importance?.[l]?.[kind];
      const phase = values === undefined ? new Float64Array(nGroups[k]!) : Float64Array.from(values);
      for (const v of phase) total += v;
      phases.push(phase);
    });
  }
  // Absent or all-zero importance: every group of a phase weighs the same.
  if (total === 0) return phases.map((phase, p) => phase.fill(1 / nGroups[p & 1]!));
  // Divided first: a tiny total (denormal calibration figures) would overflow phases.length / total.
  return phases.map((phase) => phase.map((v) => (v / total) * phases.length));
}
