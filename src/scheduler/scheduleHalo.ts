/**
 * The halo scheduler: a pure planner from device profiles, group sizes and importance to a
 * placement, its critical devices and deadlines (DESIGN "Scheduler"). Three steps:
 * 1. greedy: groups in decreasing importance, each onto the device whose cost rises least;
 * 2. local search (localSearch.ts) from the greedy placement, and also from each baseline
 *    placement that fits in memory and is cheaper than the best result so far; the cheapest
 *    result is kept, so halo is never worse than the baselines it is compared with. The greedy
 *    pass is myopic about memory across phases: under a tight budget it can fill the fast
 *    devices with one kind and strand the other on a slow link, where a speed-proportional
 *    start does better;
 * 3. regrouping: groups of equal importance are interchangeable, so they are dealt back to
 *    their devices in index order, which leaves each device as few ranges (matvecs, reads) as
 *    the objective allows.
 * Pinned groups (ScheduleInput.pinned) are placed before step 1 and never move: the greedy pass
 * prices the free groups around them, the baseline starts carry them, local search and
 * regrouping skip them. They count toward their devices' memory and phase costs like any group.
 * Phases are numbered layer × 2 + kind index (attention 0, FFN 1) throughout.
 * No randomness: every tie goes to the lower device index, then the lower group and layer, and
 * between starts to the earlier one.
 */
import { ScheduleError } from "../base/index.js";
import { GROUP_KINDS, type GroupKind, type LayerPlacement, type Placement } from "../partition/index.js";
import { baselinePlacement } from "./baselines.js";
import { CostModel, indicesByDecreasing, requireCapableDevices } from "./costModel.js";
import { evaluateWithModel, type Schedule } from "./evaluatePlacement.js";
import { improveLocally, tieMs, type LocalSearchStep } from "./localSearch.js";
import { requirePinsOnCapableDevices, requirePinsWithinBudgets } from "./pinnedGroups.js";
import { validateScheduleInput, type ScheduleInput, type ScheduleOptions } from "./scheduleInput.js";
import { SearchState } from "./searchState.js";

/** One greedy placement: the chosen device and its cost increase, and the next best device (-1 if none had room). */
export interface GreedyDecision {
  readonly layer: number;
  readonly kind: GroupKind;
  readonly group: number;
  readonly device: number;
  readonly deltaCostMs: number;
  readonly runnerUp: number;
  readonly runnerUpDeltaCostMs: number;
}

/** A placement local search may start from, its cost before and after. */
export interface SearchStart {
  readonly name: "greedy" | "proportional" | "uniform";
  readonly fits: boolean;
  /** False when it exceeds a memory budget or is no cheaper than the best result so far. */
  readonly searched: boolean;
  readonly costBeforeMs: number;
  readonly costAfterMs: number;
  readonly nSteps: number;
}

export interface ScheduleTrace {
  readonly greedy: GreedyDecision[];
  /** The steps of the start that was kept. */
  localSearch: LocalSearchStep[];
  readonly starts: SearchStart[];
  chosenStart: SearchStart["name"];
  /** Groups whose device changed in regrouping (the objective does not). */
  nRegrouped: number;
}

export function emptyTrace(): ScheduleTrace {
  return { greedy: [], localSearch: [], starts: [], chosenStart: "greedy", nRegrouped: 0 };
}

function checkCapacity(model: CostModel): void {
  requireCapableDevices(model);
  const neededBytes = model.nLayers * (model.nGroups[0]! * model.groupBytes[0]! + model.nGroups[1]! * model.groupBytes[1]!);
  const availableBytes = model.devices.reduce((sum, d) => sum + (d.excluded.every((e) => e !== undefined) ? 0 : d.budgetBytes), 0);
  if (neededBytes > availableBytes) {
    throw new ScheduleError(
      "insufficient-memory",
      `the model's groups need ${neededBytes} B (${model.nLayers} layers × (${model.nGroups[0]} attention × ${model.groupBytes[0]} B + ${model.nGroups[1]} FFN × ${model.groupBytes[1]} B)) but the usable devices' memory budgets total ${availableBytes} B; add devices or raise their memory budgets`,
    );
  }
}

/**
 * Larger groups first (first-fit-decreasing keeps memory from being stranded in pieces too small
 * for them), then by importance; ties go group-major, so equal groups of all layers are dealt
 * round-robin and memory fills evenly across layers. Returns (phase, group) pairs, flattened,
 * of the free groups only: the pinned ones are placed already.
 */
function greedyOrder(model: CostModel): Int32Array {
  const kinds = model.groupBytes[1]! > model.groupBytes[0]! ? [1, 0] : [0, 1];
  const order = new Int32Array(2 * model.nLayers * (model.nGroups[0]! + model.nGroups[1]!));
  let next = 0;
  for (const k of kinds) {
    const nGroups = model.nGroups[k]!;
    const n = model.nLayers * nGroups;
    // item = layer × nGroups + group; groupMajor lists the items group by group, the tie order.
    const importance = new Float64Array(n);
    const groupMajor = new Int32Array(n);
    for (let l = 0; l < model.nLayers; l++) {
      for (let g = 0; g < nGroups; g++) {
        importance[l * nGroups + g] = model.importance[2 * l + k]![g]!;
        groupMajor[g * model.nLayers + l] = l * nGroups + g;
      }
    }
    for (const item of indicesByDecreasing(importance, groupMajor)) {
      const [phase, group] = [2 * Math.floor(item / nGroups) + k, item % nGroups];
      if (model.pins.isPinned(phase, group)) continue;
      order[next++] = phase;
      order[next++] = group;
    }
  }
  return order.subarray(0, next);
}

function placeGreedily(state: SearchState, trace: ScheduleTrace | undefined): void {
  const model = state.model;
  const order = greedyOrder(model);
  const costs = new Float64Array(model.nDevices);
  // Each phase's terms and P(miss) per device as of its last placement (all zero while empty), so pricing a group needs no full pass.
  const terms = new Float64Array(3 * model.nPhases);
  const missRatios = new Float64Array(model.nPhases * model.nDevices);
  // Pinned groups first: the free ones are then priced against the memory and the phase costs the pins already take.
  state.placePinned();
  model.pins.devices.forEach((pins, phase) => {
    if (pins === undefined) return;
    model.phaseCost(phase & 1, state.counts, state.importanceSums, phase * model.nDevices, missRatios);
    terms.set(model.lastTerms, 3 * phase);
  });
  for (let i = 0; i < order.length; i += 2) {
    const [phase, group] = [order[i]!, order[i + 1]!];
    const base = phase * model.nDevices;
    const current = state.phaseCosts[phase]!;
    const tie = tieMs(current);
    model.costsIfAdded(phase & 1, state.counts, state.importanceSums, base, model.importance[phase]![group]!, terms, 3 * phase, missRatios, costs);
    let [best, bestCost, runnerUp, runnerUpCost] = [-1, Infinity, -1, Infinity];
    for (let d = 0; d < model.nDevices; d++) {
      if (!state.hasRoom(phase, d)) continue;
      const cost = costs[d]!;
      if (cost < bestCost - tie) [runnerUp, runnerUpCost, best, bestCost] = [best, bestCost, d, cost];
      else if (cost < runnerUpCost - tie) [runnerUp, runnerUpCost] = [d, cost];
    }
    if (best < 0) {
      const kind = GROUP_KINDS[phase & 1]!;
      const free = model.devices.map((d, i) => `${i}: ${Math.max(0, d.budgetBytes - state.usedBytes[i]!)} B`).join(", ");
      throw new ScheduleError("insufficient-memory", `no device has room for layer ${phase >> 1} ${kind} group ${group} (${model.groupBytes[phase & 1]} B); free memory per device: ${free}. The budgets add up but are split into pieces smaller than a group: raise a budget`);
    }
    state.move(phase, group, best, bestCost);
    // Priced afresh: the O(1) estimate rounds differently, and rounding must not accumulate over a phase's groups.
    state.phaseCosts[phase] = model.phaseCost(phase & 1, state.counts, state.importanceSums, base, missRatios);
    terms.set(model.lastTerms, 3 * phase);
    trace?.greedy.push({ layer: phase >> 1, kind: GROUP_KINDS[phase & 1]!, group, device: best, deltaCostMs: bestCost - current, runnerUp, runnerUpDeltaCostMs: runnerUpCost - current });
  }
}

/** Deals each class of equal-importance free groups back to its devices, lower device first, in group order; pinned groups stay. */
function regroup(state: SearchState): number {
  let nChanged = 0;
  state.owners.forEach((owners, phase) => {
    const importance = state.model.importance[phase]!;
    const order = state.model.pins.freeByImportance[phase]!;
    for (let start = 0; start < order.length; ) {
      let end = start + 1;
      while (end < order.length && importance[order[end]!] === importance[order[start]!]) end++;
      if (end - start === 1) {
        start = end;
        continue;
      }
      const members = order.subarray(start, end);
      const devices = Int32Array.from(members, (g) => owners[g]!).sort();
      members.forEach((g, i) => {
        if (owners[g] !== devices[i]) nChanged++;
        owners[g] = devices[i]!;
      });
      start = end;
    }
  });
  return nChanged;
}

/** Local search from the greedy placement and from each baseline that fits; the cheapest, ties to the earlier. */
function searchFromStarts(model: CostModel, greedy: SearchState, maxSteps: number, trace: ScheduleTrace | undefined): SearchState {
  const candidates: Array<{ name: SearchStart["name"]; state: SearchState }> = [{ name: "greedy", state: greedy }];
  for (const name of ["proportional", "uniform"] as const) {
    const state = new SearchState(model);
    state.assignAll(baselinePlacement(model, name).layers.flatMap((layer) => [layer.attention, layer.ffn]));
    candidates.push({ name, state });
  }
  let best: { state: SearchState; cost: number } | undefined;
  for (const { name, state } of candidates) {
    const costBeforeMs = state.totalCost();
    // Local search only lowers a cost, so a start already no cheaper than the best result cannot win: skip its search.
    const fits = state.fitsEveryDevice();
    if (!fits || (best !== undefined && costBeforeMs >= best.cost - tieMs(best.cost))) {
      trace?.starts.push({ name, fits, searched: false, costBeforeMs, costAfterMs: costBeforeMs, nSteps: 0 });
      continue;
    }
    const steps: LocalSearchStep[] = [];
    const nSteps = improveLocally(state, maxSteps, trace === undefined ? undefined : steps);
    const cost = state.totalCost();
    trace?.starts.push({ name, fits: true, searched: true, costBeforeMs, costAfterMs: cost, nSteps });
    if (best === undefined || cost < best.cost - tieMs(best.cost)) {
      best = { state, cost };
      if (trace !== undefined) [trace.chosenStart, trace.localSearch] = [name, steps];
    }
  }
  return best!.state;
}

/** The placement of the halo scheduler, with the record of its decisions when `trace` is given. */
export function planPlacement(input: ScheduleInput, options: ScheduleOptions = {}, trace?: ScheduleTrace): { model: CostModel; placement: Placement } {
  validateScheduleInput(input, options);
  const model = new CostModel(input, options);
  // Memory first: a pin onto a device with no budget is a shortfall of memory before it is a device that cannot hold the kind.
  requirePinsWithinBudgets(model);
  requirePinsOnCapableDevices(model);
  checkCapacity(model);
  const greedy = new SearchState(model);
  placeGreedily(greedy, trace);
  const state = searchFromStarts(model, greedy, options.maxLocalSearchMoves ?? model.nLayers * (model.nGroups[0]! + model.nGroups[1]!), trace);
  const nRegrouped = regroup(state);
  if (trace !== undefined) trace.nRegrouped = nRegrouped;
  const layers: LayerPlacement[] = [];
  for (let l = 0; l < model.nLayers; l++) layers.push({ attention: Array.from(state.owners[2 * l]!), ffn: Array.from(state.owners[2 * l + 1]!) });
  return { model, placement: { nDevices: model.nDevices, layers } };
}

/**
 * Plans a placement that minimizes Σ phase makespans + λ × expected importance missed, within
 * every device's memory budget, with each phase's critical devices and suggested deadlines.
 * Every pinned group is on its pin in the result.
 * Throws ScheduleError when the input is invalid (a pin onto a device that cannot hold its kind
 * included), the model does not fit, or the pins alone exceed a device's budget.
 */
export function scheduleHalo(input: ScheduleInput, options: ScheduleOptions = {}): Schedule {
  const { model, placement } = planPlacement(input, options);
  return evaluateWithModel(model, placement).schedule;
}
