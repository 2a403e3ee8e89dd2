/**
 * What the scheduler plans from, and the checks that turn a bad figure into a coded error
 * before any arithmetic can hide it (a NaN compares false with everything, so an unchecked one
 * would silently steer the greedy search).
 */
import { ScheduleError } from "../base/index.js";
import { groupCount, type GroupKind, type GroupLayout } from "../partition/index.js";
import type { DeviceProfile } from "./deviceProfile.js";

/** Average importance of every group of one layer, from calibration; any non-negative scale. */
export interface LayerImportance {
  /** (nAttentionGroups) */
  readonly attention: readonly number[];
  /** (nFfnGroups) */
  readonly ffn: readonly number[];
}

export interface ScheduleInput {
  /** Device 0 is the coordinator (its link is taken as perfect whatever its profile says); the others are workers. */
  readonly devices: readonly DeviceProfile[];
  readonly layout: GroupLayout;
  readonly nLayers: number;
  /** Bytes of weights of one attention group in one layer (its rows of wq/wk/wv and columns of wo). */
  readonly attentionGroupBytes: number;
  /** Bytes of weights of one FFN block in one layer (its rows of ffn_gate/ffn_up and columns of ffn_down). */
  readonly ffnGroupBytes: number;
  /** (nLayers) Average importance per group; uniform when absent. */
  readonly importance?: readonly LayerImportance[];
  /** Bytes of a phase's input that the coordinator sends each worker holding groups of it (dim × wire bytes per element). */
  readonly broadcastBytes: number;
  /** Bytes of the partial sum a worker returns per phase (dim × wire bytes per element). */
  readonly partialSumBytes: number;
  /**
   * (nLayers) Groups that must stay where they are, by kind: the device index per group, or -1 where the
   * scheduler is free. Absent (or an absent kind): everything free. A live re-plan pins the attention
   * groups of devices still up, whose KV cache lives there. Every placement the scheduler returns, the
   * baselines' included, has each pinned group on its device; see docs/scheduler.md "Pinned groups".
   */
  readonly pinned?: ReadonlyArray<{ readonly attention?: readonly number[]; readonly ffn?: readonly number[] }>;
}

export interface ScheduleOptions {
  /**
   * λ: ms of makespan worth one phase's average importance (importance is scaled so the groups of
   * an average layer phase sum to 1). Defaults to DEFAULT_LAMBDA_MS.
   */
  lambdaMs?: number;
  /**
   * Share of each phase's importance mass whose devices are critical (waited for up to the hard
   * deadline): the fewest most important groups whose importance reaches it. Mass, not a count of
   * groups as in the cluster's --critical-fraction, because what must be protected is the
   * contribution. Defaults to DEFAULT_CRITICAL_FRACTION.
   */
  criticalFraction?: number;
  /** Most improving moves or swaps local search applies. Defaults to the number of groups in the model. */
  maxLocalSearchMoves?: number;
}

/**
 * 100 ms per phase of importance. On Pi-class devices a 7B phase takes ~5 ms, and dropping 5% of
 * one phase's importance costs a visible share of accuracy (DESIGN: < 1% loss is the target at
 * 5% packet loss), so losing that 5% should weigh as much as a 5 ms slower phase.
 */
export const DEFAULT_LAMBDA_MS = 100;

/** Half the importance mass: the minimum that keeps the layer's output dominated by what arrives. */
export const DEFAULT_CRITICAL_FRACTION = 0.5;

function invalid(message: string): never {
  throw new ScheduleError("invalid-input", message);
}

function checkFigure(what: string, value: number, options: { max?: number; allowInfinity?: boolean } = {}): void {
  const ok = (Number.isFinite(value) || (options.allowInfinity === true && value === Infinity)) && value >= 0 && value <= (options.max ?? Infinity);
  if (!ok) invalid(`${what} must be ${options.max === undefined ? "≥ 0" : `in [0, ${options.max}]`}${options.allowInfinity === true ? " or Infinity" : " and finite"}, got ${value}`);
}

function checkProfile(device: DeviceProfile, index: number): void {
  const who = `device ${index} (${device.name})`;
  // 0 or Infinity ms both mean the device does not compute that kind: unmeasured is not fast.
  checkFigure(`${who} attentionGroupMs`, device.attentionGroupMs, { allowInfinity: true });
  checkFigure(`${who} ffnGroupMs`, device.ffnGroupMs, { allowInfinity: true });
  checkFigure(`${who} memoryBudgetBytes`, device.memoryBudgetBytes);
  checkFigure(`${who} link.rttMs`, device.link.rttMs);
  checkFigure(`${who} link.jitterMs`, device.link.jitterMs);
  checkFigure(`${who} link.lossRatio`, device.link.lossRatio, { max: 1 });
  checkFigure(`${who} link.bandwidthMbit`, device.link.bandwidthMbit);
}

function checkImportance(importance: readonly LayerImportance[], layout: GroupLayout, nLayers: number): void {
  if (importance.length !== nLayers) invalid(`importance has ${importance.length} layers, the model has ${nLayers}`);
  importance.forEach((layer, l) => {
    for (const kind of ["attention", "ffn"] as const) {
      const values = layer[kind];
      if (values.length !== groupCount(layout, kind)) invalid(`importance of layer ${l} ${kind} has ${values.length} groups, expected ${groupCount(layout, kind)}`);
      values.forEach((v, g) => {
        if (!(Number.isFinite(v) && v >= 0)) invalid(`importance of layer ${l} ${kind} group ${g} must be finite and ≥ 0, got ${v}`);
      });
    }
  });
}

function checkPinned(pinned: NonNullable<ScheduleInput["pinned"]>, layout: GroupLayout, nLayers: number, nDevices: number): void {
  if (pinned.length !== nLayers) invalid(`pinned has ${pinned.length} layers, the model has ${nLayers}`);
  pinned.forEach((layer, l) => {
    // JSON may bring a null where a layer's pins belong; an absent kind is allowed, an absent layer is a mistake.
    if (typeof layer !== "object" || layer === null) invalid(`pinned of layer ${l} must be an object with optional attention and ffn lists, got ${String(layer)}`);
    for (const kind of ["attention", "ffn"] as const) {
      const devices = layer[kind];
      if (devices === undefined) continue;
      if (devices.length !== groupCount(layout, kind)) invalid(`pinned of layer ${l} ${kind} has ${devices.length} groups, expected ${groupCount(layout, kind)}`);
      devices.forEach((d, g) => {
        if (!(Number.isInteger(d) && d >= -1 && d < nDevices)) invalid(`pinned of layer ${l} ${kind} group ${g} must be a device index in [0, ${nDevices}) or -1 (free), got ${d}`);
      });
    }
  });
}

/** Throws a ScheduleError ("invalid-input") naming the first figure that is negative, NaN or out of shape. */
export function validateScheduleInput(input: ScheduleInput, options: ScheduleOptions = {}): void {
  if (input.devices.length === 0) invalid("no devices: the coordinator at least is needed");
  input.devices.forEach(checkProfile);
  if (!(Number.isInteger(input.nLayers) && input.nLayers >= 1)) invalid(`nLayers must be a positive integer, got ${input.nLayers}`);
  for (const kind of ["attention", "ffn"] as const) {
    const n = groupCount(input.layout, kind);
    if (!(Number.isInteger(n) && n >= 1)) invalid(`the layout's ${kind} group count must be a positive integer, got ${n}`);
  }
  checkFigure("attentionGroupBytes", input.attentionGroupBytes);
  checkFigure("ffnGroupBytes", input.ffnGroupBytes);
  checkFigure("broadcastBytes", input.broadcastBytes);
  checkFigure("partialSumBytes", input.partialSumBytes);
  if (input.importance !== undefined) checkImportance(input.importance, input.layout, input.nLayers);
  if (input.pinned !== undefined) checkPinned(input.pinned, input.layout, input.nLayers, input.devices.length);
  if (options.lambdaMs !== undefined) checkFigure("lambdaMs", options.lambdaMs);
  if (options.criticalFraction !== undefined) checkFigure("criticalFraction", options.criticalFraction, { max: 1 });
  const moves = options.maxLocalSearchMoves;
  if (moves !== undefined && !(Number.isInteger(moves) && moves >= 0)) invalid(`maxLocalSearchMoves must be an integer ≥ 0, got ${moves}`);
}

/** Bytes of one group of a kind in one layer. */
export function groupBytes(input: ScheduleInput, kind: GroupKind): number {
  return kind === "attention" ? input.attentionGroupBytes : input.ffnGroupBytes;
}
