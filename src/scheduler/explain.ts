/**
 * `--explain`: every decision behind a schedule, as a structured record and as text. The text
 * condenses the greedy pass per (phase, device), since a 7B model has twelve thousand groups;
 * the record keeps each decision.
 */
import { GROUP_KINDS, rangesFromIndices, type GroupKind, type GroupRange } from "../partition/index.js";
import { baselinePlacement } from "./baselines.js";
import { CostModel } from "./costModel.js";
import type { LinkSample } from "./deviceProfile.js";
import { evaluateWithModel, type DeviceLoad, type PhaseEvaluation, type Schedule } from "./evaluatePlacement.js";
import { emptyTrace, planPlacement, type ScheduleTrace } from "./scheduleHalo.js";
import type { PlacementChoice } from "./scheduleForChoice.js";
import { validateScheduleInput, type ScheduleInput, type ScheduleOptions } from "./scheduleInput.js";

export interface DeviceExplanation {
  readonly index: number;
  readonly name: string;
  readonly attentionGroupMs: number;
  readonly ffnGroupMs: number;
  readonly memoryBudgetBytes: number;
  /** As profiled; the model takes device 0's as perfect. */
  readonly link: LinkSample;
  /** Both messages of a phase, as the model prices them. */
  readonly transferMs: number;
  /** P(the broadcast or the partial sum is lost). */
  readonly lossMissRatio: number;
  /** Why the device gets no group of a kind, when it gets none by rule. */
  readonly excluded: Readonly<Record<GroupKind, string | undefined>>;
  readonly load: DeviceLoad;
}

export interface ScheduleExplanation {
  readonly choice: PlacementChoice;
  readonly lambdaMs: number;
  readonly criticalFraction: number;
  readonly broadcastBytes: number;
  readonly partialSumBytes: number;
  /** Groups pinned to their device over all layers, per kind (ScheduleInput.pinned). */
  readonly nPinned: Readonly<Record<GroupKind, number>>;
  readonly devices: readonly DeviceExplanation[];
  /** (nLayers × 2) attention then FFN of each layer */
  readonly phases: readonly PhaseEvaluation[];
  /** The scheduler's decisions (halo only). */
  readonly trace: ScheduleTrace | undefined;
  readonly schedule: Schedule;
}

/** Plans (or evaluates a baseline) and records why. */
export function explainSchedule(input: ScheduleInput, options: ScheduleOptions = {}, choice: PlacementChoice = "halo"): { explanation: ScheduleExplanation; text: string } {
  validateScheduleInput(input, options);
  let trace: ScheduleTrace | undefined;
  let model: CostModel;
  let placement;
  if (choice === "halo") {
    trace = emptyTrace();
    ({ model, placement } = planPlacement(input, options, trace));
  } else {
    model = new CostModel(input, options);
    placement = baselinePlacement(model, choice);
  }
  const { schedule, phases } = evaluateWithModel(model, placement);
  const devices = input.devices.map((profile, d): DeviceExplanation => {
    const cost = model.devices[d]!;
    return {
      index: d,
      name: profile.name,
      attentionGroupMs: profile.attentionGroupMs,
      ffnGroupMs: profile.ffnGroupMs,
      memoryBudgetBytes: profile.memoryBudgetBytes,
      link: profile.link,
      transferMs: cost.transferMs,
      lossMissRatio: cost.lossMissRatio,
      excluded: { attention: cost.excluded[0], ffn: cost.excluded[1] },
      load: schedule.devices[d]!,
    };
  });
  const explanation: ScheduleExplanation = {
    choice, lambdaMs: model.lambdaMs, criticalFraction: model.criticalFraction,
    broadcastBytes: input.broadcastBytes, partialSumBytes: input.partialSumBytes,
    nPinned: { attention: model.pins.nPinned[0]!, ffn: model.pins.nPinned[1]! }, devices, phases, trace, schedule,
  };
  return { explanation, text: formatExplanation(explanation) };
}

const ms = (x: number): string => (Number.isFinite(x) ? String(Number(x.toFixed(3))) : "—");
const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
const mib = (x: number): string => (x < 2 ** 20 ? `${x} B` : `${(x / 2 ** 20).toFixed(1)} MiB`);
const ranges = (list: readonly GroupRange[]): string => list.map((r) => (r.end - r.start === 1 ? `${r.start}` : `${r.start}-${r.end - 1}`)).join(",") || "none";

function formatDevices(e: ScheduleExplanation): string[] {
  const lines = ["Devices (expected return = groups × ms per group + transfer + jitter; P(lost) = 1 − (1 − loss)², both messages)"];
  for (const d of e.devices) {
    const role = d.index === 0 ? "coordinator, local: perfect link" : `rtt ${d.link.rttMs} ms, jitter ${d.link.jitterMs} ms, loss ${pct(d.link.lossRatio)}, ${d.link.bandwidthMbit > 0 ? `${d.link.bandwidthMbit} Mbit/s` : "bandwidth unknown"}`;
    lines.push(
      `  ${d.index} ${d.name}: attention ${ms(d.attentionGroupMs)} ms/group, FFN ${ms(d.ffnGroupMs)} ms/block, budget ${mib(d.memoryBudgetBytes)}, uses ${mib(d.load.usedBytes)}; ${role}; transfer ${ms(d.transferMs)} ms, P(lost) ${pct(d.lossMissRatio)}; holds ${d.load.nAttentionGroups} attention + ${d.load.nFfnGroups} FFN groups`,
    );
    for (const kind of GROUP_KINDS) if (d.excluded[kind] !== undefined) lines.push(`    gets no ${kind} group: ${d.excluded[kind]}`);
  }
  return lines;
}

function formatGreedy(e: ScheduleExplanation, trace: ScheduleTrace): string[] {
  const lines = ["Greedy (larger groups first, then decreasing importance; each onto the device whose phase cost rises least, ties to the lower index)"];
  const byPhaseDevice = new Map<string, { layer: number; kind: GroupKind; device: number; groups: number[]; minDelta: number; maxDelta: number; runnersUp: Map<number, number> }>();
  for (const decision of trace.greedy) {
    const key = `${decision.layer}.${decision.kind}.${decision.device}`;
    let entry = byPhaseDevice.get(key);
    if (entry === undefined) byPhaseDevice.set(key, (entry = { layer: decision.layer, kind: decision.kind, device: decision.device, groups: [], minDelta: Infinity, maxDelta: -Infinity, runnersUp: new Map() }));
    entry.groups.push(decision.group);
    entry.minDelta = Math.min(entry.minDelta, decision.deltaCostMs);
    entry.maxDelta = Math.max(entry.maxDelta, decision.deltaCostMs);
    entry.runnersUp.set(decision.runnerUp, (entry.runnersUp.get(decision.runnerUp) ?? 0) + 1);
  }
  const nGroups = (kind: GroupKind): number => e.schedule.placement.layers[0]![kind].length;
  const entries = [...byPhaseDevice.values()].sort((a, b) => a.layer - b.layer || GROUP_KINDS.indexOf(a.kind) - GROUP_KINDS.indexOf(b.kind) || a.device - b.device);
  for (const entry of entries) {
    const runnersUp = [...entry.runnersUp].sort((a, b) => a[0] - b[0]).map(([d, n]) => `${d < 0 ? "none with room" : d} ×${n}`).join(", ");
    lines.push(`  layer ${entry.layer} ${entry.kind} → ${entry.device}: groups ${ranges(rangesFromIndices(entry.groups, nGroups(entry.kind)))} (${entry.groups.length}), cost +${ms(entry.minDelta)}…+${ms(entry.maxDelta)} ms; next best: ${runnersUp}`);
  }
  lines.push("Local search (per phase: rearrange importance onto the least-missing devices, then the best single move; repeated) from each start:");
  for (const start of trace.starts) {
    const outcome = !start.fits ? `${ms(start.costBeforeMs)} ms, not searched: exceeds a memory budget` : start.searched ? `${ms(start.costBeforeMs)} → ${ms(start.costAfterMs)} ms in ${start.nSteps} steps` : `${ms(start.costBeforeMs)} ms, not searched: no cheaper than the best result`;
    lines.push(`  ${start.name}: ${outcome}${start.name === trace.chosenStart ? " (kept)" : ""}`);
  }
  lines.push(`Steps of the kept start (${trace.chosenStart}): ${trace.localSearch.length}`);
  for (const s of trace.localSearch) {
    const what = s.type === "move" ? `move group ${s.group}: ${s.from} → ${s.to}` : `rearrange: ${s.nChanged} groups change device`;
    lines.push(`  layer ${s.layer} ${s.kind}: ${what}, cost ${ms(s.deltaCostMs)} ms`);
  }
  lines.push(`Regrouping: ${trace.nRegrouped} groups of equal importance dealt back in index order for contiguous ranges (cost unchanged)`);
  return lines;
}

function formatPhases(e: ScheduleExplanation): string[] {
  const lines = [`Phases (critical: devices holding the top ${pct(e.criticalFraction)} of importance; soft = latest non-critical return + 4 jitters; hard = 2 × (latest return + 4 jitters + rtt))`];
  for (const phase of e.phases) {
    const owners = e.schedule.placement.layers[phase.layer]![phase.kind];
    lines.push(
      `  layer ${phase.layer} ${phase.kind}: makespan ${ms(phase.terms.makespanMs)} ms, soft ${ms(phase.deadlines.softMs)} ms, hard ${ms(phase.deadlines.hardMs)} ms, critical {${phase.critical.join(", ")}}, expected loss ${phase.terms.lostImportance.toFixed(5)}`,
    );
    phase.arrivals.forEach((a, d) => {
      if (a.nGroups === 0) return;
      const mine = rangesFromIndices(owners.flatMap((owner, g) => (owner === d ? [g] : [])), owners.length);
      lines.push(`    ${d}: groups ${ranges(mine)} (${a.nGroups}), compute ${ms(a.computeMs)} + transfer ${ms(a.transferMs)} + jitter ${ms(a.jitterMs)} = ${ms(a.expectedMs)} ms, P(late) ${pct(a.lateRatio)}, P(miss) ${pct(a.missRatio)}, importance ${a.importance.toFixed(4)}`);
    });
  }
  return lines;
}

/** The text of `halo … --explain`. */
export function formatExplanation(e: ScheduleExplanation): string {
  const o = e.schedule.objective;
  const lines = [
    `Placement: ${e.choice}, ${e.devices.length} devices, ${e.schedule.placement.layers.length} layers; per phase ${e.broadcastBytes} B broadcast + ${e.partialSumBytes} B partial sum per worker`,
    `Objective: ${ms(o.costMs)} ms = makespan ${ms(o.makespanMs)} ms + λ ${o.lambdaMs} ms × expected importance lost ${o.lostImportance.toFixed(5)} (importance scaled so an average phase sums to 1)`,
    `Deadlines per kind (latest over layers): attention soft ${ms(e.schedule.deadlines.attention.softMs)} / hard ${ms(e.schedule.deadlines.attention.hardMs)} ms; FFN soft ${ms(e.schedule.deadlines.ffn.softMs)} / hard ${ms(e.schedule.deadlines.ffn.hardMs)} ms`,
    ...(e.nPinned.attention + e.nPinned.ffn === 0 ? [] : [`Pinned: ${e.nPinned.attention} attention + ${e.nPinned.ffn} FFN groups stay on their devices (placed first, never moved)`]),
    ...formatDevices(e),
    ...(e.trace === undefined ? [] : formatGreedy(e, e.trace)),
    ...formatPhases(e),
  ];
  return lines.join("\n") + "\n";
}
