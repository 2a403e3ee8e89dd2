/**
 * The coordinator's record of every device's profile, for the scheduler: its own, measured at
 * connect, and each worker's as the worker measured it (plan-ok, or a profile answering
 * profile-request), with the link figures taken from the coordinator's live statistics of that
 * worker at the time of asking. What a worker cannot know of itself (a name the operator gave
 * it, a memory budget set for it) the coordinator's per-device overrides supply.
 */
import type { Clock } from "../base/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import type { LoadedModel } from "../model/index.js";
import type { ControlMessage, MeasuredProfile } from "../net/index.js";
import { PERFECT_LINK, type DeviceProfile, type LinkSample } from "../scheduler/index.js";
import { measureDeviceProfile } from "./deviceProfiler.js";
import { tensorTypesOfLayer } from "./syntheticGroup.js";
import type { WorkerLink } from "./workerLink.js";

/** What the operator says of one device, coordinator first (halo cluster --spec). */
export interface DeviceOverride {
  /** Replaces "coordinator" / "worker host:port" in its profile. */
  readonly name?: string;
  /** Bytes of weights it may keep: replaces the budget it measured (its free memory). */
  readonly memoryBudgetBytes?: number;
}

/**
 * The link part of a worker's profile. RTT is the coordinator's smoothed phase round trip (it
 * includes the worker's compute; 0 before the first sample), loss the smoothed fraction of
 * chunks missing at the deadline. Bandwidth is known only when the link is emulated (its cap);
 * otherwise 0, unknown. Before the first sample an emulated link is described by its emulation
 * (halo cluster --local knows what it set up), so the scheduler can plan at join.
 */
export function linkSampleOf(link: WorkerLink): LinkSample {
  const stats = link.stats.snapshot();
  const emulated = link.emulator.profile;
  if (stats.rttMsEwma === null) return { rttMs: 2 * emulated.delayMs, jitterMs: emulated.jitterMs, lossRatio: emulated.lossRatio, bandwidthMbit: emulated.bandwidthMbit };
  return { rttMs: stats.rttMsEwma, jitterMs: stats.jitterMs, lossRatio: stats.lossRatio, bandwidthMbit: emulated.bandwidthMbit };
}

export function deviceProfileOf(measured: MeasuredProfile, name: string, link: LinkSample, override: DeviceOverride | undefined): DeviceProfile {
  return { name: override?.name ?? name, ...measured, memoryBudgetBytes: override?.memoryBudgetBytes ?? measured.memoryBudgetBytes, link };
}

/** Every device's profile, coordinator first; null for a worker that sent none (a build that predates profiles). */
export function clusterProfiles(local: MeasuredProfile | undefined, links: readonly WorkerLink[], overrides: readonly DeviceOverride[] | undefined): Array<DeviceProfile | null> {
  const coordinator = local === undefined ? null : deviceProfileOf(local, "coordinator", PERFECT_LINK, overrides?.[0]);
  const workers = links.map((link) => (link.profile === undefined ? null : deviceProfileOf(link.profile, `worker ${link.address.host}:${link.address.port}`, linkSampleOf(link), overrides?.[link.index])));
  return [coordinator, ...workers];
}

/** The ClusterOptions the coordinator's own profile depends on. */
export interface CoordinatorProfiling {
  model: LoadedModel;
  profileKernels?: readonly MatrixKernels[];
  ffnBlockSize?: number;
  computeSlowdown?: number;
  devices?: readonly DeviceOverride[];
}

/** The coordinator's own profile (its model's types, its engine's kernels, its compute slowdown), or undefined without profileKernels. */
export async function measureCoordinatorProfile(options: CoordinatorProfiling, clock: Clock): Promise<MeasuredProfile | undefined> {
  const { model, profileKernels } = options;
  if (profileKernels === undefined) return undefined;
  return measureDeviceProfile({
    // The model's own types only, as a worker measures at join.
    config: model.config, tensorTypes: tensorTypesOfLayer(model.weights.layers[0]!), extraTypes: [], modelPath: model.file.path, kernels: profileKernels,
    ffnBlockSize: options.ffnBlockSize, slowdown: options.computeSlowdown, memoryBudgetBytes: options.devices?.[0]?.memoryBudgetBytes, clock,
  });
}

/**
 * Asks `link`'s worker to measure itself again; resolves once it answered (its profile then
 * updated by `onProfileMessage`), reported an error, was lost, or `timeoutMs` passed.
 */
export function requestWorkerProfile(link: WorkerLink, requestId: number, clock: Clock, timeoutMs: number): Promise<void> {
  // One request at a time per worker: a newer one ends the wait for an older one.
  link.profileRequest?.done();
  return new Promise((resolve) => {
    const done = (): void => {
      timer.cancel();
      if (link.profileRequest?.requestId === requestId) link.profileRequest = undefined;
      resolve();
    };
    const timer = clock.setTimer(timeoutMs, done);
    link.profileRequest = { requestId, done };
    link.connection.send({ type: "profile-request", requestId });
  });
}

/** Takes a profile from a worker's plan-ok or profile message; an error from it ends a pending request. */
export function onProfileMessage(link: WorkerLink, message: ControlMessage): void {
  if ((message.type === "plan-ok" || message.type === "profile") && message.profile !== undefined) link.profile = message.profile;
  if (message.type === "error" || (message.type === "profile" && link.profileRequest?.requestId === message.requestId)) link.profileRequest?.done();
}
