/**
 * The mutable state the greedy pass and local search share: who owns each group, each phase's
 * per-device counts and importance sums, each device's bytes, and each phase's cost. Phases are
 * independent in the objective, so a change is priced by recomputing its one phase (O(devices)).
 */
import type { CostModel } from "./costModel.js";

export class SearchState {
  /** (nPhases) (nGroups of the phase's kind) device of each group, -1 before the greedy pass places it */
  readonly owners: Int32Array[];
  /** (nPhases × nDevices) */
  readonly counts: Int32Array;
  /** (nPhases × nDevices) */
  readonly importanceSums: Float64Array;
  /** (nDevices) */
  readonly usedBytes: Float64Array;
  /** (nPhases) */
  readonly phaseCosts: Float64Array;

  constructor(readonly model: CostModel) {
    this.owners = Array.from({ length: model.nPhases }, (_, p) => new Int32Array(model.nGroups[p & 1]!).fill(-1));
    this.counts = new Int32Array(model.nPhases * model.nDevices);
    this.importanceSums = new Float64Array(model.nPhases * model.nDevices);
    this.usedBytes = new Float64Array(model.nDevices);
    this.phaseCosts = new Float64Array(model.nPhases);
  }

  /** Whether `device` may take one more group of the phase's kind. */
  hasRoom(phase: number, device: number): boolean {
    const k = phase & 1;
    const d = this.model.devices[device]!;
    return d.excluded[k] === undefined && this.usedBytes[device]! + this.model.groupBytes[k]! <= d.budgetBytes;
  }

  /** The phase's cost if `group` moved from `from` (-1: unplaced) to `to`, without changing anything. */
  costIfMoved(phase: number, group: number, from: number, to: number): number {
    const base = phase * this.model.nDevices;
    const importance = this.model.importance[phase]![group]!;
    const savedFrom = from < 0 ? 0 : this.importanceSums[base + from]!;
    const savedTo = this.importanceSums[base + to]!;
    this.shift(base, from, to, importance);
    const cost = this.model.phaseCost(phase & 1, this.counts, this.importanceSums, base);
    this.counts[base + to]!--;
    // Restored from copies so repeated trials leave no rounding drift behind.
    if (from >= 0) {
      this.counts[base + from]!++;
      this.importanceSums[base + from] = savedFrom;
    }
    this.importanceSums[base + to] = savedTo;
    return cost;
  }

  /** Recomputes a phase's counts, importance sums and cost from its owners, leaving no rounding drift. */
  recomputePhase(phase: number): void {
    const n = this.model.nDevices;
    const base = phase * n;
    const importance = this.model.importance[phase]!;
    this.counts.fill(0, base, base + n);
    this.importanceSums.fill(0, base, base + n);
    this.owners[phase]!.forEach((d, g) => {
      if (d < 0) return;
      this.counts[base + d]!++;
      this.importanceSums[base + d]! += importance[g]!;
    });
    this.phaseCosts[phase] = this.model.phaseCost(phase & 1, this.counts, this.importanceSums, base);
  }

  /** Puts every pinned group on its device (the greedy pass's first step) and prices the phases that have pins. */
  placePinned(): void {
    const { model } = this;
    model.pins.devices.forEach((pins, phase) => {
      if (pins === undefined) return;
      const bytes = model.groupBytes[phase & 1]!;
      pins.forEach((d, g) => {
        if (d < 0) return;
        this.owners[phase]![g] = d;
        this.usedBytes[d]! += bytes;
      });
      this.recomputePhase(phase);
    });
  }

  /** Sets every owner from a starting placement (one owner list per phase) and recomputes the rest. */
  assignAll(owners: readonly (readonly number[])[]): void {
    this.usedBytes.fill(0);
    owners.forEach((phaseOwners, phase) => {
      this.owners[phase]!.set(phaseOwners);
      for (const d of phaseOwners) this.usedBytes[d]! += this.model.groupBytes[phase & 1]!;
      this.recomputePhase(phase);
    });
  }

  /** Whether every device holds only kinds it may hold, within its budget. */
  fitsEveryDevice(): boolean {
    const withinBudgets = this.model.devices.every((device, d) => this.usedBytes[d]! <= device.budgetBytes);
    return withinBudgets && this.owners.every((owners, phase) => owners.every((d) => this.model.devices[d]!.excluded[phase & 1] === undefined));
  }

  totalCost(): number {
    return this.phaseCosts.reduce((a, b) => a + b, 0);
  }

  move(phase: number, group: number, to: number, newCost: number): void {
    const from = this.owners[phase]![group]!;
    const bytes = this.model.groupBytes[phase & 1]!;
    this.shift(phase * this.model.nDevices, from, to, this.model.importance[phase]![group]!);
    if (from >= 0) this.usedBytes[from]! -= bytes;
    this.usedBytes[to]! += bytes;
    this.owners[phase]![group] = to;
    this.phaseCosts[phase] = newCost;
  }

  private shift(base: number, from: number, to: number, importance: number): void {
    if (from >= 0) {
      this.counts[base + from]!--;
      this.importanceSums[base + from]! -= importance;
    }
    this.counts[base + to]!++;
    this.importanceSums[base + to]! += importance;
  }
}
