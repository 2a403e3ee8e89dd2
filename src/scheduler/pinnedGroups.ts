/**
 * Pinned groups (ScheduleInput.pinned) as the search reads them: per phase, the device each
 * group must stay on; and the checks that a pin can be honoured at all.
 *
 * A pin onto a device that may not hold its kind (no measured time, a link that loses every
 * packet) is rejected as invalid input rather than taken as given: the cost model prices such a
 * group at Infinity ms or as always missed, so every placement would cost the same Infinity and
 * the search would have nothing left to compare. A live re-plan pins only the groups of devices
 * that are still up; when one of them could not be priced, its re-plan fails and the current
 * placement stays, which is what the caller does with any ScheduleError.
 */
import { ScheduleError } from "../base/index.js";
import { GROUP_KINDS, type Placement } from "../partition/index.js";
import type { CostModel } from "./costModel.js";
import type { ScheduleInput } from "./scheduleInput.js";

export class PhasePins {
  /** (nPhases) (nGroups of the phase's kind) the device each group is pinned to, -1 where free; undefined for a phase without pins */
  readonly devices: readonly (Int32Array | undefined)[];
  /** (nPhases × nDevices) pinned groups per device */
  readonly counts: Int32Array;
  /** [attention, ffn] pinned groups over all layers */
  readonly nPinned: readonly number[];
  /** (nPhases) the phase's free groups by decreasing importance: byImportance without the pinned ones (the same array when none is) */
  readonly freeByImportance: readonly Int32Array[];

  /** From a validated input: `byImportance` is the model's order of each phase's groups. */
  constructor(input: ScheduleInput, nDevices: number, byImportance: readonly Int32Array[]) {
    const nPhases = byImportance.length;
    const nPinned = [0, 0];
    this.counts = new Int32Array(nPhases * nDevices);
    this.devices = byImportance.map((_, phase) => {
      const given = input.pinned?.[phase >> 1]?.[GROUP_KINDS[phase & 1]!];
      if (given === undefined || given.every((d) => d < 0)) return undefined;
      for (const d of given) {
        if (d < 0) continue;
        this.counts[phase * nDevices + d]!++;
        nPinned[phase & 1]!++;
      }
      return Int32Array.from(given);
    });
    this.nPinned = nPinned;
    this.freeByImportance = byImportance.map((order, phase) => {
      const pins = this.devices[phase];
      return pins === undefined ? order : order.filter((g) => pins[g]! < 0);
    });
  }

  /** Whether `group` of the phase must stay where it is. */
  isPinned(phase: number, group: number): boolean {
    const pins = this.devices[phase];
    return pins !== undefined && pins[group]! >= 0;
  }

  /** Overwrites the pinned entries of a placement (a baseline's), leaving the free ones as they are. */
  apply(placement: Placement): Placement {
    if (this.nPinned[0] === 0 && this.nPinned[1] === 0) return placement;
    const layers = placement.layers.map((layer, l) => {
      const [attention, ffn] = GROUP_KINDS.map((kind, k) => {
        const pins = this.devices[2 * l + k];
        return pins === undefined ? layer[kind] : layer[kind].map((d, g) => (pins[g]! >= 0 ? pins[g]! : d));
      });
      return { attention: attention!, ffn: ffn! };
    });
    return { nDevices: placement.nDevices, layers };
  }
}

/** Throws an invalid-input ScheduleError for the first pin onto a device that may not hold the pinned kind, with the device's reason. */
export function requirePinsOnCapableDevices(model: CostModel): void {
  model.pins.devices.forEach((pins, phase) => {
    if (pins === undefined) return;
    const k = phase & 1;
    pins.forEach((d, g) => {
      const reason = d < 0 ? undefined : model.devices[d]!.excluded[k];
      if (reason === undefined) return;
      throw new ScheduleError("invalid-input", `layer ${phase >> 1} ${GROUP_KINDS[k]} group ${g} is pinned to device ${d} (${model.devices[d]!.name}), which cannot hold ${GROUP_KINDS[k]} groups: ${reason}; pin it to another device or leave it free (-1)`);
    });
  });
}

/** Throws an insufficient-memory ScheduleError naming the first device whose pinned groups alone exceed its memory budget. */
export function requirePinsWithinBudgets(model: CostModel): void {
  model.devices.forEach((device, d) => {
    const nPinned = [0, 0];
    for (let phase = 0; phase < model.nPhases; phase++) nPinned[phase & 1]! += model.pins.counts[phase * model.nDevices + d]!;
    const pinnedBytes = nPinned[0]! * model.groupBytes[0]! + nPinned[1]! * model.groupBytes[1]!;
    if (pinnedBytes <= device.budgetBytes) return;
    throw new ScheduleError(
      "insufficient-memory",
      `the groups pinned to device ${d} (${device.name}) need ${pinnedBytes} B (${nPinned[0]} attention × ${model.groupBytes[0]} B + ${nPinned[1]} FFN × ${model.groupBytes[1]} B) but its memory budget is ${device.budgetBytes} B; pin fewer groups to it or raise its budget`,
    );
  });
}
