/**
 * A worker's own profile: measured once the first plan's weights are loaded (plan-ok carries
 * it), kept while later plans are for the same model and block size (a rejoin), and measured
 * again whenever the coordinator sends profile-request.
 */
import { HaloError, describeError, type Clock } from "../base/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import { measuredProfileSchema, type ControlMessage, type MeasuredProfile } from "../net/index.js";
import { measureDeviceProfile } from "./deviceProfiler.js";
import type { LoadedGroups } from "./workerSlices.js";

export interface WorkerProfilerOptions {
  /** The worker's kernels first, then any other thread counts to time. */
  kernels: readonly MatrixKernels[];
  /** The emulated slowdown now (it can change while the worker runs). */
  slowdown: () => number;
  modelPath: string | undefined;
  memoryBudgetBytes: number | undefined;
  clock: Clock | undefined;
  log: (line: string) => void;
}

export class WorkerProfiler {
  private latest: { modelSha256: string; ffnBlockSize: number; measured: MeasuredProfile } | undefined;

  constructor(private readonly options: WorkerProfilerOptions) {}

  /** The profile for plan-ok, or undefined when it could not be measured. */
  async atPlan(loaded: LoadedGroups): Promise<MeasuredProfile | undefined> {
    const latest = this.latest;
    if (latest !== undefined && latest.modelSha256 === loaded.modelSha256 && latest.ffnBlockSize === loaded.ffnBlockSize) return latest.measured;
    try {
      return await this.measure(loaded);
    } catch (error) {
      // The profile only informs scheduling: a plan-ok without one is what an older worker sends.
      this.options.log(`cannot measure its profile: ${describeError(error)}`);
      return undefined;
    }
  }

  /** The answer to profile-request `requestId`: a fresh profile, or an error message naming what failed. */
  async answer(loaded: LoadedGroups, requestId: number): Promise<ControlMessage> {
    try {
      return { type: "profile", requestId, profile: await this.measure(loaded) };
    } catch (error) {
      // A failed measurement is the coordinator's to know about, not a reason to end the session.
      return { type: "error", code: error instanceof HaloError ? error.code : "HALO_ERR_USAGE", message: `cannot measure its profile: ${describeError(error)}`.slice(0, 1024) };
    }
  }

  private async measure(loaded: LoadedGroups): Promise<MeasuredProfile> {
    const { kernels, modelPath, memoryBudgetBytes, clock } = this.options;
    const slowdown = this.options.slowdown();
    // Only the model's own types: the scheduler places this model, and joining stays quick (halo profile times the others).
    const measured = await measureDeviceProfile({ config: loaded.config, tensorTypes: loaded.tensorTypes, extraTypes: [], ffnBlockSize: loaded.ffnBlockSize, kernels, slowdown, modelPath, memoryBudgetBytes, clock });
    // Checked here rather than by send(), where a figure out of the wire's bounds would end the session.
    const checked = measuredProfileSchema.safeParse(measured);
    if (!checked.success) throw new HaloError("HALO_ERR_MESSAGE_INVALID", `the measured profile does not fit the protocol: ${checked.error.issues[0]?.path.join(".")}: ${checked.error.issues[0]?.message}`);
    this.latest = { modelSha256: loaded.modelSha256, ffnBlockSize: loaded.ffnBlockSize, measured };
    return measured;
  }
}
