/**
 * What a cluster coordinator is given (ClusterOptions) and what it counts (PhaseStats): the
 * contract of clusterCoordinator.ts, kept apart so it reads on its own.
 */
import type { Clock } from "../base/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import type { LoadedModel } from "../model/index.js";
import type { LinkProfile, WireFormat } from "../net/index.js";
import type { GroupKind, Placement } from "../partition/index.js";
import type { ImportancePredictor } from "../predictor/index.js";
import type { DeviceProfile } from "../scheduler/index.js";
import type { DeviceOverride } from "./clusterProfiles.js";
import type { PlannedPlacement, ReplanContext } from "./liveReplan.js";
import type { DeadlineOptions } from "./phaseDeadline.js";
import type { ReplanPolicy } from "./replanWatch.js";
import type { WorkerAddress } from "./workerLink.js";

export type SyncMode = "relaxed" | "strict";

export interface ClusterOptions {
  model: LoadedModel;
  modelSha256: string;
  clusterKey: Uint8Array;
  workers: readonly WorkerAddress[];
  /** Share of each device, coordinator first (workers + 1 entries). Defaults to equal shares. */
  shares?: readonly number[];
  /**
   * Every group's device, instead of a split by shares: the scheduler's placement. Its critical
   * sets and deadlines come with it in `schedule` when it has them.
   */
  placement?: Placement;
  /**
   * The scheduler's critical devices per layer phase, and deadline estimates that seed the learned
   * soft deadline (so the first relaxed tokens need not wait the hard deadline for a lost packet).
   * Per-token predictions (`predictor`) take precedence over the static critical sets.
   */
  schedule?: ClusterSchedule;
  /**
   * The scheduler, consulted once every worker has joined and sent its profile: given every
   * device's profile (null: not measured), it returns the placement to run, or undefined to keep
   * the initial one. Workers whose groups change load them before the first token.
   */
  plan?: (profiles: ReadonlyArray<DeviceProfile | null>, context?: ReplanContext) => PlannedPlacement<ClusterSchedule> | undefined;
  /**
   * Live re-planning with `plan` (liveReplan.ts): when a worker leaves or comes back, or a link
   * drifts past these thresholds, `plan` is asked again (with a context) during generation and
   * groups move without stopping it. false turns it off. Defaults to on, DEFAULT_REPLAN_POLICY.
   */
  replan?: Partial<ReplanPolicy> | false;
  /** Neurons per FFN group. Defaults to DEFAULT_FFN_BLOCK_SIZE (32, one quantization block). */
  ffnBlockSize?: number;
  mode: SyncMode;
  /** How vectors travel, both ways. Defaults to Q8_0 (DESIGN "Sync precision"); f32 reproduces a single node exactly. */
  wire?: WireFormat;
  /**
   * How many times each datagram is sent, both ways. Defaults to 1: a lost chunk costs a NACK
   * round trip. 2 makes a loss cost nothing unless both copies go, for twice the bytes: for
   * links where bandwidth is cheaper than round trips.
   */
  copies?: number;
  deadlines?: DeadlineOptions;
  /** Whether a device's contribution to (layer, phase) is awaited up to the hard deadline. Defaults to none. */
  isCritical?: (device: number, layerIndex: number, phase: GroupKind) => boolean;
  /**
   * Predicts each group's importance from the phase's input before the phase runs; the devices
   * holding the `criticalFraction` most important groups of a token are critical for it (relaxed
   * mode, one token at a time). Without it no contribution is critical unless isCritical says so.
   */
  predictor?: ImportancePredictor;
  /** Share of a phase's groups, by predicted importance, whose devices are critical. Defaults to 0.25. */
  criticalFraction?: number;
  /**
   * Where importance comes from when a predictor is given: its per-token prediction (the
   * default), or only the calibration's static average per group (no per-token cost).
   */
  importance?: "predictor" | "static";
  /**
   * Compute skipping: the coordinator's own groups whose predicted share of the phase's importance
   * is below this are not computed (needs the predictor), and the plans ask the workers to do the
   * same with theirs (a worker needs its own copy of the predictor; without one it computes all).
   */
  skipBelow?: number;
  /** The emulated link for what is sent to each worker (halo cluster --local). */
  linkProfiles?: readonly LinkProfile[];
  /** Where shards for workers without the model file are cut and kept. Defaults to $XDG_CACHE_HOME/halo/shards or ~/.cache/halo/shards. */
  shardCacheDir?: string;
  /**
   * Emulates a slower coordinator (a Pi-class preset under halo cluster --local): each phase's
   * own compute is followed by a wait of (slowdown − 1) × its own compute time (ownCompute.ts). Defaults to 1.
   */
  computeSlowdown?: number;
  /**
   * The kernels this device's engine computes with, first, then any others to time (e.g. one
   * thread): the coordinator measures its own profile with them at connect. Without them its
   * profile (device 0 of `profiles()`) is null.
   */
  profileKernels?: readonly MatrixKernels[];
  /** Per device, coordinator first: a name and a memory budget for its profile, where the operator gives them. */
  devices?: readonly DeviceOverride[];
  /** How often a lost worker is dialled again. Defaults to 1,000 ms; 0 turns rejoining off. */
  rejoinIntervalMs?: number;
  seed?: number;
  clock?: Clock;
  /** Bind address for the coordinator's UDP socket. Defaults to 127.0.0.1 when every worker is on loopback, else 0.0.0.0. */
  host?: string;
  log?: (line: string) => void;
}

export interface PhaseStats {
  /** Time spent waiting for workers after the local groups were done. */
  syncWaitMs: number;
  /** Worker contributions that were incomplete at the deadline (dropped for this token). */
  droppedContributions: number;
  /** Contributions expected. */
  expectedContributions: number;
  /** Neuron groups in the dropped contributions (a contribution holds one or more groups). */
  droppedGroups: number;
  datagramsSent: number;
  bytesSent: number;
  /** Payload bytes of accepted partial sums (datagrams and reliable messages). */
  bytesReceived: number;
  /** Times a worker's connection was lost, and times a lost worker joined again. */
  workersLost: number;
  workersRejoined: number;
  /** NACKs sent for lost chunks of partial sums, and input chunks sent again on a worker's NACK. */
  nacksSent: number;
  chunksResent: number;
  /** Time spent predicting group importance, and contributions made critical by the prediction. */
  predictorMs: number;
  criticalContributions: number;
}

export interface ClusterSchedule {
  readonly critical: ReadonlyArray<Readonly<Record<GroupKind, readonly number[]>>>;
  readonly softMs?: number;
}
