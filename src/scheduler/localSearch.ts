/**
 * Local search on a placement, phase by phase, with two kinds of step:
 * - rearrange: with each device's group count fixed, its P(miss) is fixed too (it depends on
 *   counts, not on which groups), so the best assignment of importance is the sorted one: most
 *   important groups onto the least likely to miss (the rearrangement inequality). One step
 *   does what any sequence of swaps could, in O(groups), and changes no count or byte;
 * - move: one group to another device with room, which changes counts (makespan, lateness,
 *   memory). Its cost is affine in the moved importance, so only each device's least and most
 *   important groups are tried: O(devices²) candidates, not O(groups × devices).
 * Each phase alternates them until neither improves; passes over all phases repeat because a
 * move frees memory that another phase may use, up to a budget of steps.
 * Pinned groups never change device: rearrange deals only the free groups over each device's
 * places left beside its pinned ones (P(miss) still depends on counts alone, so the sorted deal
 * of the free groups is optimal among those that keep the pins), and moves try only free groups.
 */
import { GROUP_KINDS, type GroupKind } from "../partition/index.js";
import type { SearchState } from "./searchState.js";

/** One accepted step: a move of `group` from `from` to `to`, or a rearrangement of `nChanged` groups (group, from, to = -1). */
export interface LocalSearchStep {
  readonly type: "move" | "rearrange";
  readonly layer: number;
  readonly kind: GroupKind;
  readonly group: number;
  readonly from: number;
  readonly to: number;
  readonly nChanged: number;
  readonly deltaCostMs: number;
}

/** Differences below this share of a phase's cost are ties, so rounding never decides a placement. */
export const RELATIVE_TIE = 1e-9;

export function tieMs(costMs: number): number {
  return RELATIVE_TIE * Math.max(1, Math.abs(costMs));
}

class PhaseSearch {
  private readonly missRatios: Float64Array;

  constructor(private readonly state: SearchState, private readonly steps: LocalSearchStep[] | undefined) {
    this.missRatios = new Float64Array(state.model.nDevices);
  }

  private record(phase: number, step: Omit<LocalSearchStep, "layer" | "kind">): void {
    this.steps?.push({ layer: phase >> 1, kind: GROUP_KINDS[phase & 1]!, ...step });
  }

  /** Applies the sorted assignment if it lowers the phase's cost beyond a tie. */
  rearrange(phase: number): boolean {
    const { state } = this;
    const model = state.model;
    const base = phase * model.nDevices;
    model.missRatios(phase & 1, state.counts, base, this.missRatios);
    const nPinned = model.pins.counts;
    const devices = Array.from({ length: model.nDevices }, (_, d) => d)
      .filter((d) => state.counts[base + d]! > nPinned[base + d]!)
      .sort((a, b) => this.missRatios[a]! - this.missRatios[b]! || a - b);
    const owners = state.owners[phase]!;
    const before = Int32Array.from(owners);
    const costBefore = state.phaseCosts[phase]!;
    let next = 0;
    const free = model.pins.freeByImportance[phase]!;
    for (const d of devices) for (let c = state.counts[base + d]! - nPinned[base + d]!; c > 0; c--) owners[free[next++]!] = d;
    state.recomputePhase(phase);
    const deltaCostMs = state.phaseCosts[phase]! - costBefore;
    if (deltaCostMs < -tieMs(costBefore)) {
      let nChanged = 0;
      owners.forEach((d, g) => (nChanged += d === before[g] ? 0 : 1));
      this.record(phase, { type: "rearrange", group: -1, from: -1, to: -1, nChanged, deltaCostMs });
      return true;
    }
    owners.set(before);
    state.recomputePhase(phase);
    return false;
  }

  /** Applies the best improving single move, if any. */
  move(phase: number): boolean {
    const { state } = this;
    const model = state.model;
    const importance = model.importance[phase]!;
    const least = new Int32Array(model.nDevices).fill(-1);
    const most = new Int32Array(model.nDevices).fill(-1);
    const pins = model.pins.devices[phase];
    state.owners[phase]!.forEach((d, g) => {
      if (pins !== undefined && pins[g]! >= 0) return;
      if (least[d]! < 0 || importance[g]! < importance[least[d]!]!) least[d] = g;
      if (most[d]! < 0 || importance[g]! > importance[most[d]!]!) most[d] = g;
    });
    const current = state.phaseCosts[phase]!;
    let [bestGroup, bestFrom, bestTo, bestCost] = [-1, -1, -1, current - tieMs(current)];
    for (let a = 0; a < model.nDevices; a++) {
      if (least[a]! < 0) continue;
      for (let b = 0; b < model.nDevices; b++) {
        if (b === a || !state.hasRoom(phase, b)) continue;
        for (const g of least[a] === most[a] ? [least[a]!] : [least[a]!, most[a]!]) {
          const cost = state.costIfMoved(phase, g, a, b);
          if (cost < bestCost) [bestGroup, bestFrom, bestTo, bestCost] = [g, a, b, cost];
        }
      }
    }
    if (bestGroup < 0) return false;
    state.move(phase, bestGroup, bestTo, bestCost);
    this.record(phase, { type: "move", group: bestGroup, from: bestFrom, to: bestTo, nChanged: 1, deltaCostMs: bestCost - current });
    return true;
  }
}

/** Improves the state in place within `maxSteps` accepted steps; appends them to `steps` when given. Returns how many were taken. */
export function improveLocally(state: SearchState, maxSteps: number, steps?: LocalSearchStep[]): number {
  const search = new PhaseSearch(state, steps);
  let stepsLeft = maxSteps;
  let improved = true;
  while (improved && stepsLeft > 0) {
    improved = false;
    for (let phase = 0; phase < state.model.nPhases && stepsLeft > 0; phase++) {
      if (search.rearrange(phase)) (stepsLeft--, (improved = true));
      while (stepsLeft > 0 && search.move(phase)) {
        stepsLeft--;
        improved = true;
        if (stepsLeft > 0 && search.rearrange(phase)) stepsLeft--;
      }
    }
  }
  return maxSteps - stepsLeft;
}
