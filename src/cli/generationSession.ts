/**
 * What every generating command sets up the same way: the model, the kernels, the cluster
 * coordinator (--workers, or halo cluster/serve --local), the importance predictor and compute
 * skipping, and the engine over them; plus the per-token stats line that separates compute, sync
 * and loss. `halo run`, `cluster`, `serve` and `chat` differ only in what they do with it.
 */
import { ClusterCoordinator, clusterScheduleInput, kernelThreads, replanScheduleInput, modelSha256, type ClusterOptions, type DeadlineOptions, type DeviceOverride, type SyncMode } from "../cluster/index.js";
import { Engine, LocalSynchronizer, type ResolvedSamplingOptions } from "../engine/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import type { LoadedModel } from "../model/index.js";
import type { LinkProfile, WireFormat } from "../net/index.js";
import { createGroupLayout, type Placement } from "../partition/index.js";
import { GroupSkipper, ImportancePredictor, readPredictor } from "../predictor/index.js";
import { evaluatePlacement, explainSchedule, scheduleForChoice, type DeviceProfile, type PlacementChoice, type ScheduleInput } from "../scheduler/index.js";
import { commandKernels, loadCommandModel } from "./engineSetup.js";
import type { CommandIo } from "./io.js";
import type { ModelFlagValues } from "./modelFlags.js";

export interface GenerationRequest {
  modelFlags: ModelFlagValues;
  sampling: ResolvedSamplingOptions;
  prompt: string;
  maxTokens: number;
  ignoreEos: boolean;
  json: boolean;
  importance: ImportanceRequest;
  /** How groups are placed on a cluster's devices (readPlacement: halo unless --placement or --shares says otherwise). */
  placement: PlacementChoice;
  explain: boolean;
  /** Live re-planning with --placement halo (a worker leaving, rejoining or drifting); --no-replan turns it off. */
  replan: boolean;
  cluster?: {
    workers: Array<{ host: string; port: number }>;
    mode: SyncMode;
    wire: WireFormat;
    shares?: number[];
    copies?: number;
    ffnBlockSize?: number;
    deadlines?: DeadlineOptions;
    /** halo cluster --devices/--spec: the coordinator's compute slowdown, and every device's preset (null: none) and slowdown for the stats. */
    computeSlowdown?: number;
    devicePresets?: Array<string | null>;
    slowdowns?: number[];
    /** halo cluster --spec: each device's name and memory budget, for the profiles. */
    devices?: DeviceOverride[];
    clusterKey: Buffer;
    /** The emulated link to each worker (what this coordinator sends). */
    linkProfiles?: LinkProfile[];
    seed?: number;
  };
}

/** Where group importance comes from, and what uses it. */
export interface ImportanceRequest {
  predictorPath?: string;
  source: "predictor" | "static";
  criticalFraction?: number;
  skipBelow?: number;
}

/**
 * The coordinator's planner for --placement: the scheduler's placement for the devices' profiles,
 * its critical sets and its soft-deadline estimate; undefined keeps the initial equal split.
 */
export function placementPlanner(
  choice: PlacementChoice, explain: boolean, cluster: { ffnBlockSize?: number; wire: WireFormat }, model: LoadedModel, predictor: ImportancePredictor | undefined, io: CommandIo,
): ClusterOptions["plan"] {
  if (choice === "uniform" && !explain) return undefined;
  return (profiles, context) => {
    // The baselines are fixed splits: only halo plans again while generating.
    if (context !== undefined && choice !== "halo") return undefined;
    const missing = profiles.findIndex((p) => p === null);
    if (missing >= 0) {
      io.stderr(`halo: placement ${context === undefined ? "stays uniform" : "stays as it is"}: device ${missing} sent no profile\n`);
      return undefined;
    }
    const layout = createGroupLayout(model.config, cluster.ffnBlockSize);
    const free = clusterScheduleInput(model, layout, profiles as DeviceProfile[], cluster.wire, predictor?.predictor);
    const input = context === undefined ? free : replanScheduleInput(free, context);
    // Once, at join: a dump per live re-plan would bury the generated text.
    if (explain && context === undefined) io.stderr(explainSchedule(input, {}, choice).text + "\n");
    if (choice === "uniform") return undefined;
    const schedule = scheduleForChoice(choice, input);
    const softMs = Math.max(schedule.deadlines.attention.softMs, schedule.deadlines.ffn.softMs);
    const planned = { placement: schedule.placement, schedule: { critical: schedule.layers.map((l) => l.critical), softMs }, costMs: schedule.objective.costMs };
    return context === undefined ? planned : { ...planned, ...currentCost(input, context.current) };
  };
}

/**
 * What the placement in use costs under the same profiles, for the re-plan's gain check: Infinity
 * when it leaves groups on a device that can no longer compute them (the cost model's arithmetic
 * gives NaN there), nothing when it cannot be priced.
 */
function currentCost(input: ScheduleInput, current: Placement): { currentCostMs?: number } {
  try {
    const { costMs } = evaluatePlacement(input, current).objective;
    return { currentCostMs: Number.isNaN(costMs) ? Infinity : costMs };
  } catch {
    return {};
  }
}

/** How many groups (all layers, both phases) each device computes, coordinator first. */
export function groupsPerDevice(placement: Placement): number[] {
  const counts = new Array<number>(placement.nDevices).fill(0);
  for (const layer of placement.layers) for (const device of [...layer.attention, ...layer.ffn]) counts[device]!++;
  return counts;
}

/**
 * The line saying which placement is in use once it is planned: what moved at join, and how many
 * groups each device computes ("halo: placement halo: 50 groups on the coordinator, 0 on workers; …").
 */
export function describePlacement(choice: PlacementChoice, shares: readonly number[] | undefined, coordinator: Pick<ClusterCoordinator, "placement" | "replanned">): string {
  const [here = 0, ...workers] = groupsPerDevice(coordinator.placement);
  const onWorkers = workers.reduce((a, b) => a + b, 0);
  const label = shares === undefined ? choice : `${choice}, --shares ${shares.join(",")}`;
  const { replanned } = coordinator;
  const moved = replanned === undefined ? "" : `${replanned.groupsMoved} groups moved after profiling, the workers loaded them in ${replanned.migrationMs.toFixed(0)} ms; `;
  const split = `${here} groups on the coordinator, ${onWorkers} on workers${onWorkers > 0 && workers.length > 1 ? ` (${workers.join(", ")})` : ""}`;
  const hint = onWorkers === 0 && choice !== "uniform" ? "; --placement uniform spreads them over the workers" : "";
  return `halo: placement ${label}: ${moved}${split}${hint}`;
}

/** The line saying which importance is active, and for what. */
function describeImportance(importance: ImportanceRequest, clustered: boolean): string {
  if (importance.predictorPath === undefined) return `halo: importance uniform (no --predictor)${clustered ? ": no contribution is critical" : ""}\n`;
  const uses = [
    ...(clustered ? [`the top ${Math.round((importance.criticalFraction ?? 0.25) * 100)}% of groups make their devices critical`] : []),
    ...(importance.skipBelow === undefined ? [] : [`groups under ${(importance.skipBelow * 100).toFixed(1)}% of their phase's predicted importance are skipped`]),
  ];
  const what = importance.source === "static" ? "static calibration averages" : "predicted per token from each phase's input";
  return `halo: importance ${what} (${importance.predictorPath})${uses.length === 0 ? "" : `: ${uses.join("; ")}`}\n`;
}

export interface GenerationSession {
  readonly model: LoadedModel;
  readonly kernels: MatrixKernels;
  readonly engine: Engine;
  readonly coordinator: ClusterCoordinator | undefined;
  readonly skipper: GroupSkipper | undefined;
  /** Closes the cluster and the model file. */
  close(): Promise<void>;
}

/** Loads the model, connects the cluster if any, and builds the engine over them. */
export async function openGenerationSession(request: GenerationRequest, io: CommandIo): Promise<GenerationSession> {
  const { model, kernels } = await loadCommandModel(request.modelFlags);
  let coordinator: ClusterCoordinator | undefined;
  try {
    const { importance } = request;
    // Hashing a large model takes a while: only when a cluster or a predictor needs it.
    const sha = request.cluster !== undefined || importance.predictorPath !== undefined ? modelSha256(request.modelFlags.modelPath) : "";
    const predictor = importance.predictorPath === undefined ? undefined : new ImportancePredictor(await readPredictor(importance.predictorPath, sha), kernels);
    let skipper: GroupSkipper | undefined;
    let synchronizer: LocalSynchronizer | undefined;
    if (request.cluster !== undefined) {
      const c = request.cluster;
      coordinator = await ClusterCoordinator.connect({
        model,
        modelSha256: sha,
        predictor,
        importance: importance.source,
        criticalFraction: importance.criticalFraction,
        skipBelow: importance.skipBelow,
        clusterKey: c.clusterKey,
        workers: c.workers,
        mode: c.mode,
        wire: c.wire,
        shares: c.shares,
        copies: c.copies,
        ffnBlockSize: c.ffnBlockSize,
        deadlines: c.deadlines,
        computeSlowdown: c.computeSlowdown,
        // The engine's kernels, and one thread besides, so the profile shows what the threads buy.
        profileKernels: kernelThreads(kernels) > 1 ? [kernels, commandKernels(1).kernels] : [kernels],
        devices: c.devices,
        plan: placementPlanner(request.placement, request.explain, c, model, predictor, io),
        replan: request.replan ? undefined : false,
        linkProfiles: c.linkProfiles,
        seed: c.seed,
        log: (line) => io.stderr(line + "\n"),
      });
      skipper = coordinator.skipper;
      io.stderr(describePlacement(request.placement, c.shares, coordinator) + "\n");
    } else if (predictor !== undefined && importance.skipBelow !== undefined) {
      const layout = createGroupLayout(model.config, predictor.predictor.ffnBlockSize);
      const single = new GroupSkipper(predictor, layout, importance.skipBelow);
      skipper = single;
      synchronizer = new LocalSynchronizer(layout, (step, candidates) => single.select(step.layerIndex, step.phase, step.input, step.nTokens, candidates));
    }
    if (request.cluster !== undefined || importance.predictorPath !== undefined) io.stderr(describeImportance(importance, request.cluster !== undefined));
    const engine = new Engine(model.config, model.weights, { kernels, contextLength: request.modelFlags.contextLength, synchronizer: coordinator ?? synchronizer });
    const connected = coordinator;
    return {
      model, kernels, engine, coordinator: connected, skipper,
      close: async () => {
        await connected?.close();
        model.file.close();
      },
    };
  } catch (error) {
    await coordinator?.close();
    model.file.close();
    throw error;
  }
}

/** One token's share of the cluster's work, from the coordinator's running totals. */
export interface TokenStats {
  ms: number;
  syncWaitMs: number;
  predictorMs: number;
  sentBytes: number;
  receivedBytes: number;
  droppedGroups: number;
  dropped: number;
  expected: number;
}

/** Turns the coordinator's running totals into per-token figures, one `next()` per token. */
export class TokenStatsMeter {
  #last: ReturnType<TokenStatsMeter["snapshot"]>;

  constructor(private readonly coordinator: ClusterCoordinator | undefined) {
    this.#last = this.snapshot();
  }

  /** The figures since the previous call (or since construction). */
  next(): TokenStats {
    const now = this.snapshot();
    const last = this.#last;
    this.#last = now;
    return { ms: now.at - last.at, syncWaitMs: now.sync - last.sync, predictorMs: now.predict - last.predict, sentBytes: now.sent - last.sent, receivedBytes: now.received - last.received, droppedGroups: now.groups - last.groups, dropped: now.dropped - last.dropped, expected: now.expected - last.expected };
  }

  private snapshot() {
    const totals = this.coordinator?.totals;
    return { at: performance.now(), sync: totals?.syncWaitMs ?? 0, predict: totals?.predictorMs ?? 0, sent: totals?.bytesSent ?? 0, received: totals?.bytesReceived ?? 0, groups: totals?.droppedGroups ?? 0, dropped: totals?.droppedContributions ?? 0, expected: totals?.expectedContributions ?? 0 };
  }
}

/** `[token n] ms | compute | sync | sent/received | dropped`, the line a clustered run prints per token. */
export function formatTokenStats(index: number, token: TokenStats, showPredictor: boolean): string {
  return (
    `[token ${index}] ${token.ms.toFixed(1)} ms | compute ${(token.ms - token.syncWaitMs).toFixed(1)} ms${showPredictor ? ` (predict ${token.predictorMs.toFixed(2)} ms)` : ""} | sync ${token.syncWaitMs.toFixed(1)} ms | ` +
    `sent ${(token.sentBytes / 1024).toFixed(1)} kB, received ${(token.receivedBytes / 1024).toFixed(1)} kB | dropped ${token.dropped}/${token.expected} contributions (${token.droppedGroups} groups)`
  );
}
