/**
 * The cluster without a network: device 0 (the coordinator) runs the forward pass and the
 * other devices are GroupWorkers called in-process. A contribution can be dropped by a
 * policy, which is exactly what a lost or late datagram does in relaxed mode. Used by tests
 * and by fidelity evaluation.
 */
import type { PhaseStep, Synchronizer } from "../engine/index.js";
import { devicesInPhase, groupsOfDevice, type GroupKind, type GroupRange, type Placement } from "../partition/index.js";
import type { GroupWorker } from "./groupWorker.js";

export interface DroppedContribution {
  readonly device: number;
  readonly layerIndex: number;
  readonly phase: GroupKind;
  readonly position: number;
}

export interface InProcessOptions {
  /** Returns true to drop a worker's contribution (as if it arrived late or not at all). */
  dropContribution?: (contribution: DroppedContribution) => boolean;
}

export class InProcessSynchronizer implements Synchronizer {
  readonly dropped: DroppedContribution[] = [];
  private readonly coordinatorGroups: Array<Record<GroupKind, GroupRange[]>>;

  /** `workers[d]` is device d's worker for d ≥ 1; index 0 is unused (the coordinator). */
  constructor(private readonly placement: Placement, private readonly workers: ReadonlyArray<GroupWorker | undefined>, private readonly options: InProcessOptions = {}) {
    this.coordinatorGroups = placement.layers.map((_, l) => ({ attention: groupsOfDevice(placement, l, "attention", 0), ffn: groupsOfDevice(placement, l, "ffn", 0) }));
  }

  localGroups(layerIndex: number, phase: GroupKind): readonly GroupRange[] {
    return this.coordinatorGroups[layerIndex]![phase];
  }

  beginPhase(): void {}

  endPhase(step: PhaseStep, partial: Float32Array): void {
    for (const device of devicesInPhase(this.placement, step.layerIndex, step.phase)) {
      if (device === 0) continue;
      const contribution = { device, layerIndex: step.layerIndex, phase: step.phase, position: step.positionStart };
      if (this.options.dropContribution?.(contribution)) {
        this.dropped.push(contribution);
        continue;
      }
      const worker = this.workers[device]!;
      const theirs = worker.compute(step.phase, step.layerIndex, step.positionStart, step.nTokens, step.input);
      for (let i = 0; i < theirs.length; i++) partial[i] = partial[i]! + theirs[i]!;
    }
  }
}
