/** `halo run`: generate text from a prompt, on this machine or with workers (--workers). */
import { UsageError } from "../base/index.js";
import type { SyncMode, DeadlineOptions } from "../cluster/index.js";
import { PLACEMENT_CHOICES, type PlacementChoice } from "../scheduler/index.js";
import { Sampler, generate } from "../engine/index.js";
import { WIRE_FORMAT_NAMES, type WireFormat } from "../net/index.js";
import { booleanFlag, choiceFlag, integerFlag, numberFlag, parseFlags, stringFlag, type FlagSpec, type ParsedFlags } from "./flags.js";
import { KEY_FLAGS, LINK_FLAGS, LINK_FLAGS_HELP, parseWorkerList, readClusterKey, readLinkProfile, readSeed } from "./clusterFlags.js";
import type { CommandIo } from "./io.js";
import { formatTokenStats, groupsPerDevice, openGenerationSession, TokenStatsMeter, type GenerationRequest, type ImportanceRequest, type TokenStats } from "./generationSession.js";
import { MODEL_FLAGS, MODEL_FLAGS_HELP, SAMPLING_FLAGS, SAMPLING_FLAGS_HELP, readModelFlags, readSamplingFlags } from "./modelFlags.js";

export type { GenerationRequest, ImportanceRequest } from "./generationSession.js";

export const GENERATION_FLAGS = {
  ...MODEL_FLAGS,
  ...SAMPLING_FLAGS,
  prompt: { type: "string", short: "p" },
  "max-tokens": { type: "string", short: "n" },
  "ignore-eos": { type: "boolean" },
  json: { type: "boolean" },
  sync: { type: "string" },
  wire: { type: "string" },
  shares: { type: "string" },
  copies: { type: "string" },
  "ffn-block": { type: "string" },
  placement: { type: "string" },
  explain: { type: "boolean" },
  "no-replan": { type: "boolean" },
  "deadline-min": { type: "string" },
  predictor: { type: "string" },
  importance: { type: "string" },
  "critical-fraction": { type: "string" },
  "skip-below": { type: "string" },
  "deadline-max": { type: "string" },
  ...KEY_FLAGS,
} as const satisfies FlagSpec;

export const GENERATION_FLAGS_HELP = `  -p, --prompt P         prompt text (default: empty, generate from BOS)
  -n, --max-tokens N     tokens to generate (default 256)
      --ignore-eos       keep generating past the end-of-sequence token
      --json             print one JSON object {text, tokens, timings, ...} instead
${MODEL_FLAGS_HELP}
${SAMPLING_FLAGS_HELP}`;

/** What a coordinator takes: synchronization, placement, importance, deadlines (halo run --workers and halo cluster). */
export const COORDINATOR_FLAGS_HELP = `      --sync MODE        relaxed (UDP, deadlines; default) or strict (TCP, wait for all)
      --wire FORMAT      q8_0 (default), q4_0, f16 or f32: how hidden states and partial sums travel
      --shares LIST      relative compute share of each device, this one first: a fixed split, no
                         scheduler (not with --placement proportional or halo)
      --placement P      halo (default: the scheduler weighs speed, links, memory and importance), or
                         a baseline: uniform (equal shares) or proportional (to each device's
                         measured speed); planned once every worker has joined and sent its profile.
                         On one machine halo may keep a small model on the coordinator (a link costs
                         more than its groups): --placement uniform spreads it over the workers
      --explain          print the scheduler's decisions (devices, costs, moves, critical sets, deadlines)
      --no-replan        with halo, keep the placement made at join: by default the coordinator plans
                         again while generating when a worker leaves, rejoins or its link drifts, and
                         moves FFN blocks without stopping (docs/scheduler.md)
      --copies N         send every datagram N times (1-4, default 1: a loss costs a NACK round trip)
      --ffn-block N      neurons per FFN group, a multiple of the weights' block size (default 32)
      --predictor F      group-importance predictor (halo calibrate): the devices holding a token's most
                         important groups are waited for up to the hard deadline (default: none; no
                         contribution is critical)
      --importance SRC   predictor (default: predicted per token from the phase's input) or static
                         (the calibration's average per group from the same file: no per-token cost)
      --critical-fraction X  share of groups, by predicted importance, made critical (default 0.25)
      --skip-below X     do not compute this device's groups whose predicted share of their phase's
                         importance is below X (e.g. 0.02); needs --predictor. Workers skip theirs when
                         they have the predictor too (halo worker --predictor; --local passes it)
      --deadline-min MS  relaxed mode: the shortest soft deadline per phase (default 5)
      --deadline-max MS  relaxed mode: the hard deadline per phase, for critical contributions (default 250)`;

export const RUN_HELP = `usage: halo run [--model F] [--prompt P] [--max-tokens N] [sampling flags] [--ignore-eos] [--json]
               [--workers h:p,h:p --sync relaxed|strict --cluster-key K]

Generates text. stdout carries the generated text only; timings go to stderr.
${GENERATION_FLAGS_HELP}
      --workers LIST     host:port of each worker (halo worker); this process coordinates
${COORDINATOR_FLAGS_HELP}
      --cluster-key K    shared secret, at least 16 bytes (or HALO_CLUSTER_KEY); required off loopback
      --slowdown X       emulate a coordinator X times slower (a wait of (X−1) × its compute per phase)
Link emulation of what this coordinator sends (for testing; workers take the same flags):
${LINK_FLAGS_HELP}`;

function readImportance(flags: ParsedFlags): ImportanceRequest {
  const predictorPath = stringFlag(flags, "predictor");
  const source = choiceFlag(flags, "importance", ["predictor", "static"] as const);
  const skipBelow = numberFlag(flags, "skip-below", 0, 0.999);
  if (predictorPath === undefined && source !== undefined) throw new UsageError(`--importance ${source} reads the predictor file: give --predictor`);
  if (predictorPath === undefined && skipBelow !== undefined) throw new UsageError("--skip-below needs --predictor: skipping is decided by predicted importance");
  if (source === "static" && skipBelow !== undefined) throw new UsageError("--skip-below needs per-token predictions, not --importance static");
  return { predictorPath, source: source ?? "predictor", criticalFraction: numberFlag(flags, "critical-fraction", 0, 1), skipBelow };
}

/**
 * --placement, by default halo (the scheduler). --shares fixes the split itself, so without
 * --placement it means uniform (no scheduler: the equal split, weighted by the shares), and with
 * a scheduler placement it is a usage error.
 */
export function readPlacement(flags: ParsedFlags): PlacementChoice {
  const shares = stringFlag(flags, "shares") !== undefined;
  const choice = choiceFlag(flags, "placement", PLACEMENT_CHOICES) ?? (shares ? "uniform" : "halo");
  if (choice !== "uniform" && shares) throw new UsageError(`--shares sets the split itself; it cannot be combined with --placement ${choice}`);
  return choice;
}

/** --shares 1,2,1 → [1, 2, 1]: positive finite numbers, one per device. */
export function readShares(flags: ParsedFlags): number[] | undefined {
  const value = stringFlag(flags, "shares");
  if (value === undefined) return undefined;
  const shares = value.split(",").map((item) => Number(item.trim()));
  if (shares.length === 0 || shares.some((x) => !(Number.isFinite(x) && x > 0))) throw new UsageError(`--shares takes positive numbers separated by commas, one per device; got '${value}'`);
  return shares;
}

function readDeadlines(flags: ParsedFlags): DeadlineOptions {
  const minMs = numberFlag(flags, "deadline-min", 0, 60_000);
  const hardMs = numberFlag(flags, "deadline-max", 1, 60_000);
  if ((minMs ?? 5) > (hardMs ?? 250)) throw new UsageError(`--deadline-min (${minMs ?? 5} ms) must not exceed --deadline-max (${hardMs ?? 250} ms)`);
  return { minMs, hardMs };
}

export function readGenerationFlags(flags: ParsedFlags): Omit<GenerationRequest, "cluster"> & { mode: SyncMode; wire: WireFormat; shares: number[] | undefined; copies: number | undefined; ffnBlockSize: number | undefined; deadlines: DeadlineOptions } {
  return {
    modelFlags: readModelFlags(flags),
    sampling: readSamplingFlags(flags),
    maxTokens: integerFlag(flags, "max-tokens", 0, 1 << 24) ?? 256,
    prompt: stringFlag(flags, "prompt") ?? "",
    ignoreEos: booleanFlag(flags, "ignore-eos"),
    json: booleanFlag(flags, "json"),
    mode: choiceFlag(flags, "sync", ["relaxed", "strict"] as const) ?? "relaxed",
    wire: choiceFlag(flags, "wire", WIRE_FORMAT_NAMES) ?? "q8_0",
    shares: readShares(flags),
    copies: integerFlag(flags, "copies", 1, 4),
    ffnBlockSize: integerFlag(flags, "ffn-block", 1, 1 << 16),
    deadlines: readDeadlines(flags),
    importance: readImportance(flags),
    placement: readPlacement(flags),
    explain: booleanFlag(flags, "explain"),
    replan: !booleanFlag(flags, "no-replan"),
  };
}

export async function runCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { ...GENERATION_FLAGS, ...LINK_FLAGS, workers: { type: "string", short: "w" }, slowdown: { type: "string" } });
  if (booleanFlag(flags, "help")) {
    io.stdout(RUN_HELP + "\n");
    return 0;
  }
  const request = readGenerationFlags(flags);
  return executeGeneration({ ...request, cluster: workersCluster(flags, request) }, io);
}

/** The cluster of --workers h:p,… (this process coordinates), or undefined without the flag. */
export function workersCluster(flags: ParsedFlags, request: ReturnType<typeof readGenerationFlags>): GenerationRequest["cluster"] {
  const workerList = stringFlag(flags, "workers");
  if (workerList === undefined) return undefined;
  const workers = parseWorkerList(workerList);
  return { workers, mode: request.mode, wire: request.wire, shares: request.shares, copies: request.copies, ffnBlockSize: request.ffnBlockSize, deadlines: request.deadlines, clusterKey: readClusterKey(flags, workers.map((w) => w.host)), linkProfiles: workers.map(() => readLinkProfile(flags)), seed: readSeed(flags), computeSlowdown: numberFlag(flags, "slowdown", 1, 1000) };
}

/** Each device's preset and the compute slowdown applied to it, when the cluster emulates presets. */
function devicesApplied(cluster: NonNullable<GenerationRequest["cluster"]>): Array<{ preset: string | null; slowdown: number }> | undefined {
  const { devicePresets, slowdowns } = cluster;
  if (devicePresets === undefined || slowdowns === undefined) return undefined;
  return devicePresets.map((preset, i) => ({ preset, slowdown: slowdowns[i]! }));
}

/** Loads the model, connects the cluster if any, generates, prints text and stats. */
export async function executeGeneration(request: GenerationRequest, io: CommandIo): Promise<number> {
  const session = await openGenerationSession(request, io);
  try {
    const { model, kernels, engine, coordinator, skipper } = session;
    const sampler = new Sampler(model.config.vocabSize, request.sampling);
    const promptIds = model.tokenizer.encode(request.prompt, { addBos: true });
    const perToken: TokenStats[] = [];
    const meter = new TokenStatsMeter(coordinator);
    const result = await generate(engine, model.tokenizer, sampler, promptIds, {
      maxTokens: request.maxTokens,
      ignoreEos: request.ignoreEos,
      onToken: (id, text) => {
        if (!request.json) io.stdout(text);
        if (coordinator === undefined || id < 0) return;
        const token = meter.next();
        perToken.push(token);
        if (!request.json) io.stderr(`\n${formatTokenStats(perToken.length, token, request.importance.predictorPath !== undefined)}\n`);
      },
    });
    const t = result.timings;
    const skipping = skipper === undefined ? undefined : { ...skipper.totals, threshold: skipper.threshold, skippedRatio: skipper.totals.considered === 0 ? 0 : skipper.totals.skipped / skipper.totals.considered };
    const clusterSummary = coordinator === undefined ? undefined : { devices: coordinator.nDevices, mode: request.cluster!.mode, wire: coordinator.wire, lostWorkers: coordinator.lostWorkers, totals: coordinator.totals, deadlines: coordinator.deadlines(), links: coordinator.linkStats(), presets: devicesApplied(request.cluster!), profiles: coordinator.profiles(), placement: { choice: request.placement, replanned: coordinator.replanned, liveReplans: coordinator.liveReplans, groupsPerDevice: groupsPerDevice(coordinator.placement) } };
    if (request.json) {
      io.stdout(JSON.stringify({ text: result.text, tokens: result.tokens, promptTokens: promptIds, stopReason: result.stopReason, seed: request.sampling.seed, kernels: kernels.name, timings: t, skipping, cluster: clusterSummary, perToken: clusterSummary === undefined ? undefined : perToken }) + "\n");
    } else {
      io.stdout("\n");
      const applied = clusterSummary?.presets === undefined || request.cluster?.devicePresets === undefined ? "" : ` (${devicesApplied(request.cluster)!.map((d) => `${d.preset ?? "host"} ×${d.slowdown.toFixed(2)}`).join(", ")})`;
      const skipLine = skipping === undefined ? "" : ` | skipped ${skipping.skipped}/${skipping.considered} local groups (${(100 * skipping.skippedRatio).toFixed(1)}%), predicting ${skipping.predictMs.toFixed(1)} ms`;
      const clusterLine = clusterSummary === undefined ? "" : ` | ${clusterSummary.devices} devices${applied}, ${clusterSummary.mode}, dropped ${clusterSummary.totals.droppedContributions}/${clusterSummary.totals.expectedContributions} contributions`;
      io.stderr(
        `halo: prompt ${t.promptTokens} tokens, ${t.promptTokensPerSecond.toFixed(1)} tok/s | decode ${t.generatedTokens} tokens, ` +
          `${t.decodeTokensPerSecond.toFixed(1)} tok/s, ${t.msPerToken.toFixed(2)} ms/token | stop: ${result.stopReason} | kernels ${kernels.name}${clusterLine}${skipLine}\n`,
      );
    }
    return 0;
  } finally {
    await session.close();
  }
}
