/**
 * Where a forward pass meets the other devices. At each phase of each layer the forward pass
 * asks which groups run here, announces the normed input (a cluster broadcasts it), computes
 * its own groups' partial sum, and hands that to endPhase, which adds the other devices'
 * contributions. Single-node, strict and relaxed runs all use the same forward pass; only the
 * Synchronizer differs.
 */
import { allGroups, type GroupKind, type GroupLayout, type GroupRange } from "../partition/index.js";

export interface PhaseStep {
  readonly phase: GroupKind;
  readonly layerIndex: number;
  readonly positionStart: number;
  readonly nTokens: number;
  /** (nTokens, dim) the normed input of this phase */
  readonly input: Float32Array;
}

/** The forward pass's own, reused step objects; a Synchronizer must not keep a step past endPhase. */
export type MutablePhaseStep = { -readonly [K in keyof PhaseStep]: PhaseStep[K] };

export interface Synchronizer {
  /** The group layout the synchronizer's group ranges refer to, when it fixes one (a cluster's plan does). */
  readonly layout?: GroupLayout;
  /** The groups this device computes for a layer's phase. */
  localGroups(layerIndex: number, phase: GroupKind): readonly GroupRange[];
  /** Called before the local groups run, so remote devices can start at the same time. */
  beginPhase(step: PhaseStep): void;
  /** Adds every other device's contribution to `partial` (nTokens, dim), in place. */
  endPhase(step: PhaseStep, partial: Float32Array): void | Promise<void>;
}

/** Of a phase's candidate groups, the ones to compute for this step (compute skipping). */
export type GroupSelector = (step: PhaseStep, candidates: readonly GroupRange[]) => readonly GroupRange[];

/** One device holding every group: nothing to exchange. A selector may leave some groups out. */
export class LocalSynchronizer implements Synchronizer {
  private readonly groups: Record<GroupKind, readonly GroupRange[]>;
  private selected: readonly GroupRange[] | undefined;
  constructor(readonly layout: GroupLayout, private readonly select?: GroupSelector) {
    this.groups = { attention: allGroups(layout, "attention"), ffn: allGroups(layout, "ffn") };
  }
  localGroups(_layerIndex: number, phase: GroupKind): readonly GroupRange[] {
    return this.selected ?? this.groups[phase];
  }
  beginPhase(step: PhaseStep): void {
    this.selected = this.select?.(step, this.groups[step.phase]);
  }
  endPhase(): void {}
}
