/**
 * `halo eval`: how much quality dropping neuron groups costs, by how they are chosen. For each
 * drop fraction, each token's lowest-scored groups of every layer phase are dropped (they add
 * zero, as a late device's groups do), scored four ways: by the predictor, by the oracle (the
 * true contribution norms), by the static calibration average, and at random. Prints perplexity
 * and greedy top-1 agreement with the dense model, and the predictor's recall@k and Spearman
 * correlation against the true norms; writes JSON and an SVG plot.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { SeededRandom, UsageError } from "../base/index.js";
import { ClusterCoordinator, WorkerNode, modelSha256, type ClusterOptions } from "../cluster/index.js";
import { Engine, GroupProbe, argmax, type GroupObservation } from "../engine/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import type { LoadedModel } from "../model/index.js";
import { createGroupLayout } from "../partition/index.js";
import { ImportancePredictor, predictImportance, readPredictor, recallAtK, spearman, topK, type GroupPredictor } from "../predictor/index.js";
import { booleanFlag, integerFlag, numberFlag, parseFlags, requiredStringFlag, stringFlag } from "./flags.js";
import type { CommandIo } from "./io.js";
import { readTextFile } from "./textFile.js";
import { DEFAULT_LINK_SPEC, linkProfileOf } from "./clusterFlags.js";
import { readClusterSpec, type LocalDevice } from "./clusterSpec.js";
import { groupsPerDevice, placementPlanner } from "./generationSession.js";
import { readPlacement } from "./run.js";
import { loadCommandModel } from "./engineSetup.js";
import { linePlot } from "./linePlot.js";
import { MODEL_FLAGS, MODEL_FLAGS_HELP, readModelFlags } from "./modelFlags.js";

export const EVAL_HELP = `usage: halo eval [--model F] --predictor P --corpus T [--tokens N] [--window L] [--fractions 5,10,20,30,50]
                [--seed S] [--json F] [--plot F.svg]

Drops each token's lowest-scored neuron groups of every layer phase and measures what it costs:
perplexity and greedy top-1 agreement with the dense model, for groups chosen by the predictor,
by their true contribution (oracle), by the calibration's static average, and at random.
      --predictor P      the predictor file (halo calibrate)
      --corpus T         UTF-8 text to evaluate on (held out from calibration)
      --tokens N         tokens of the corpus to use (default 2048)
      --window L         tokens per window (default 128)
      --fractions LIST   percentages of groups to drop (default 5,10,20,30,50)
      --seed S           seed of the random policy (default 1)
      --json F           write the results as JSON
      --plot F           write perplexity against drop fraction as SVG
      --cluster N        also run the real relaxed protocol on N local devices, token by token, at
      --loss PCT         this emulated loss (default 5): once protecting no contribution, once with
                         the predictor's critical sets (--critical-fraction, default 0.25);
      --copies N         with every datagram sent N times (default 1)
      --spec FILE        per-device speed and links instead of --loss (halo cluster --spec; N devices)
      --placement P      halo (default, as for halo run and cluster), uniform or proportional: how
                         groups are placed. On one machine halo may keep the whole model on this
                         device, so nothing crosses the lossy links: uniform measures the protocol
${MODEL_FLAGS_HELP}`;

export const DROP_POLICIES = ["predictor", "oracle", "static", "random"] as const;
export type DropPolicy = (typeof DROP_POLICIES)[number];

export interface FidelityPoint {
  policy: DropPolicy | "dense";
  dropPercent: number;
  perplexity: number;
  top1Agreement: number;
}

export interface FidelityReport {
  nTokens: number;
  window: number;
  points: FidelityPoint[];
  /** Predictor against the true norms, over every token and phase: recall of the true top quarter, and rank correlation. */
  recallAtQuarter: number;
  spearman: number;
}

/** Scores one token's groups (higher = keep) into `out`. */
type Scorer = (o: GroupObservation, t: number, out: Float64Array) => void;

async function scoreRun(model: LoadedModel, kernels: MatrixKernels, tokens: readonly number[], window: number, dropFraction: number, scorer: Scorer | undefined, onPhase?: (o: GroupObservation) => void): Promise<{ nll: number; argmaxes: number[] }> {
  const { config } = model;
  const layout = createGroupLayout(config);
  const scores = new Float64Array(Math.max(layout.nAttentionGroups, layout.nFfnGroups));
  const choose = scorer === undefined ? undefined : (o: GroupObservation, keep: Uint8Array): void => {
    const nDrop = Math.round(dropFraction * o.nGroups);
    if (nDrop === 0) return;
    for (let t = 0; t < o.nTokens; t++) {
      scorer(o, t, scores);
      // The nDrop lowest: the complement of the top (nGroups − nDrop).
      const kept = new Set(topK(scores, 0, o.nGroups, o.nGroups - nDrop));
      for (let g = 0; g < o.nGroups; g++) if (!kept.has(g)) keep[t * o.nGroups + g] = 0;
    }
  };
  const probe = new GroupProbe({ config, weights: model.weights, kernels, layout, contextLength: window, maxBatch: Math.min(window, 64), onPhase, choose });
  const engine = new Engine(config, model.weights, { kernels, contextLength: window, maxBatch: Math.min(window, 64), synchronizer: probe });
  const vocabSize = config.vocabSize;
  let nll = 0;
  const argmaxes: number[] = [];
  for (let w = 0; w + window <= tokens.length; w += window) {
    const targets = tokens.slice(w, w + window);
    await engine.evaluate([model.tokenizer.bosId, ...targets.slice(0, -1)], 0, "all", (logits, batchStart, nTokens) => {
      for (let t = 0; t < nTokens; t++) {
        const row = logits.subarray(t * vocabSize, (t + 1) * vocabSize);
        let max = -Infinity;
        for (let i = 0; i < vocabSize; i++) if (row[i]! > max) max = row[i]!;
        let sum = 0;
        for (let i = 0; i < vocabSize; i++) sum += Math.exp(row[i]! - max);
        nll += Math.log(sum) + max - row[targets[batchStart + t]!]!;
        argmaxes.push(argmax(row));
      }
    });
  }
  return { nll: nll / argmaxes.length, argmaxes };
}

export async function evaluateFidelity(model: LoadedModel, kernels: MatrixKernels, predictor: GroupPredictor, tokens: readonly number[], options: { window: number; dropPercents: readonly number[]; seed: number }): Promise<FidelityReport> {
  const { window } = options;
  if (tokens.length < window) throw new UsageError(`the corpus has ${tokens.length} tokens, fewer than one window of ${window}`);
  const dim = model.config.dim;
  let recall = 0;
  let rho = 0;
  let nSamples = 0;
  const layout = createGroupLayout(model.config);
  const predicted = new Float64Array(Math.max(layout.nAttentionGroups, layout.nFfnGroups));
  const dense = await scoreRun(model, kernels, tokens, window, 0, undefined, (o) => {
    for (let t = 0; t < o.nTokens; t++) {
      predictImportance(predictor, o.layerIndex, o.phase, o.input, t * dim, predicted);
      recall += recallAtK(predicted, 0, o.norms, t * o.nGroups, o.nGroups, Math.max(1, Math.round(o.nGroups / 4)));
      if (o.nGroups > 2) rho += spearman(predicted, 0, o.norms, t * o.nGroups, o.nGroups);
      nSamples++;
    }
  });
  const points: FidelityPoint[] = [{ policy: "dense", dropPercent: 0, perplexity: Math.exp(dense.nll), top1Agreement: 1 }];
  const random = new SeededRandom(options.seed);
  const scorers: Record<DropPolicy, Scorer> = {
    predictor: (o, t, out) => predictImportance(predictor, o.layerIndex, o.phase, o.input, t * dim, out),
    oracle: (o, t, out) => {
      for (let g = 0; g < o.nGroups; g++) out[g] = o.norms[t * o.nGroups + g]!;
    },
    static: (o, _t, out) => out.set(predictor.maps[o.phase][o.layerIndex]!.mean),
    random: (o, _t, out) => {
      for (let g = 0; g < o.nGroups; g++) out[g] = random.nextFloat();
    },
  };
  for (const dropPercent of options.dropPercents) {
    for (const policy of DROP_POLICIES) {
      const run = await scoreRun(model, kernels, tokens, window, dropPercent / 100, scorers[policy]);
      const agree = run.argmaxes.filter((a, i) => a === dense.argmaxes[i]).length / run.argmaxes.length;
      points.push({ policy, dropPercent, perplexity: Math.exp(run.nll), top1Agreement: agree });
    }
  }
  return { nTokens: dense.argmaxes.length, window, points, recallAtQuarter: recall / nSamples, spearman: rho / nSamples };
}

/** Perplexity against drop fraction, one line per policy, as a self-contained SVG. */
export function fidelityPlot(report: FidelityReport): string {
  const dense = report.points.find((p) => p.policy === "dense")!;
  const colours: Record<DropPolicy, string> = { predictor: "#1f77b4", oracle: "#2ca02c", static: "#ff7f0e", random: "#d62728" };
  return linePlot({
    xLabel: "groups dropped per token and layer phase",
    yLabel: "perplexity",
    xFormat: (v) => `${v}%`,
    yMin: dense.perplexity * 0.95,
    series: DROP_POLICIES.map((policy) => ({
      label: policy, colour: colours[policy],
      points: [dense, ...report.points.filter((p) => p.policy === policy)].map((p) => [p.dropPercent, p.perplexity] as const),
    })),
  });
}

export async function evalCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, {
    ...MODEL_FLAGS, predictor: { type: "string" }, corpus: { type: "string" }, tokens: { type: "string" }, window: { type: "string" },
    fractions: { type: "string" }, seed: { type: "string" }, json: { type: "string" }, plot: { type: "string" },
    cluster: { type: "string" }, loss: { type: "string" }, "critical-fraction": { type: "string" }, copies: { type: "string" },
    spec: { type: "string" }, placement: { type: "string" },
  });
  if (booleanFlag(flags, "help")) {
    io.stdout(EVAL_HELP + "\n");
    return 0;
  }
  const modelFlags = readModelFlags(flags);
  const predictorPath = requiredStringFlag(flags, "predictor");
  const corpusPath = requiredStringFlag(flags, "corpus");
  const maxTokens = integerFlag(flags, "tokens", 2, 1 << 30) ?? 2048;
  const window = integerFlag(flags, "window", 2, 1 << 20) ?? 128;
  const seed = integerFlag(flags, "seed", 0, 2 ** 32 - 1) ?? 1;
  const fractionsText = stringFlag(flags, "fractions") ?? "5,10,20,30,50";
  const dropPercents = fractionsText.split(",").map(Number);
  if (dropPercents.some((p) => !(Number.isFinite(p) && p > 0 && p < 100))) throw new UsageError(`--fractions takes percentages between 0 and 100, got '${fractionsText}'`);
  const text = readTextFile(corpusPath);
  const { model, kernels } = await loadCommandModel(modelFlags);
  try {
    const predictor = await readPredictor(predictorPath, modelSha256(modelFlags.modelPath));
    const tokens = model.tokenizer.encode(text, { addBos: false }).slice(0, maxTokens);
    const report = await evaluateFidelity(model, kernels, predictor, tokens, { window, dropPercents, seed });
    const dense = report.points[0]!;
    const nDevices = integerFlag(flags, "cluster", 2, 64);
    let cluster: ClusterFidelity[] | undefined;
    if (nDevices !== undefined) {
      const lossPercent = numberFlag(flags, "loss", 0, 100) ?? 5;
      const specPath = stringFlag(flags, "spec");
      const devices = specPath === undefined ? undefined : readClusterSpec(specPath, { ...DEFAULT_LINK_SPEC, loss: lossPercent }, false);
      if (devices !== undefined && devices.length !== nDevices) throw new UsageError(`--spec ${specPath} lists ${devices.length} devices; --cluster says ${nDevices}`);
      const placement = readPlacement(flags);
      const denseArgmaxes = (await scoreRun(model, kernels, tokens, window, 0, undefined)).argmaxes;
      const sha = modelSha256(modelFlags.modelPath);
      const common = { window, nDevices, lossPercent, seed, denseArgmaxes, criticalFraction: numberFlag(flags, "critical-fraction", 0, 1), copies: integerFlag(flags, "copies", 1, 4),
        devices, plan: (importance: ImportancePredictor | undefined) => placementPlanner(placement, false, { wire: "q8_0" }, model, importance, io) };
      cluster = [
        await clusterFidelity(model, sha, kernels, tokens, { ...common, predictor: undefined }),
        await clusterFidelity(model, sha, kernels, tokens, { ...common, predictor }),
      ];
      const links = devices === undefined ? `${lossPercent}% emulated loss each way` : `links and speeds of ${specPath}`;
      io.stdout(`relaxed protocol, ${nDevices} devices, ${placement} placement, ${links}, ${common.copies ?? 1} cop${(common.copies ?? 1) === 1 ? "y" : "ies"} of each datagram, token by token:\n` +
        `| critical sets | groups per device | perplexity | vs dense | top-1 agreement | contributions dropped | critical |\n| --- | --- | --- | --- | --- | --- | --- |\n` +
        cluster.map((c) => `| ${c.critical} | ${c.groupsPerDevice.join(" ")} | ${c.perplexity.toFixed(4)} | ${(100 * (c.perplexity / dense.perplexity - 1)).toFixed(1)}% | ${(100 * c.top1Agreement).toFixed(1)}% | ${c.droppedContributions}/${c.expectedContributions} | ${c.criticalContributions} |`).join("\n") + "\n\n");
    }
    const rows = report.points.slice(1).map((p) => `| ${p.dropPercent}% | ${p.policy} | ${p.perplexity.toFixed(4)} | ${(100 * (p.perplexity / dense.perplexity - 1)).toFixed(1)}% | ${(100 * p.top1Agreement).toFixed(1)}% |`);
    io.stdout(`${report.nTokens} tokens in windows of ${window}; dense perplexity ${dense.perplexity.toFixed(4)}\n` +
      `predictor vs true norms: recall of the top quarter ${report.recallAtQuarter.toFixed(3)}, Spearman ${report.spearman.toFixed(3)}\n\n` +
      `| dropped | chosen by | perplexity | vs dense | top-1 agreement |\n| --- | --- | --- | --- | --- |\n${rows.join("\n")}\n`);
    const jsonPath = stringFlag(flags, "json");
    if (jsonPath !== undefined) writeFileSync(jsonPath, JSON.stringify({ model: modelFlags.modelPath, predictor: predictorPath, corpus: corpusPath, ...report, cluster }, null, 2) + "\n");
    const plotPath = stringFlag(flags, "plot");
    if (plotPath !== undefined) writeFileSync(plotPath, fidelityPlot(report));
    return 0;
  } finally {
    model.file.close();
  }
}

export interface ClusterFidelity {
  critical: "none" | "predictor";
  perplexity: number;
  top1Agreement: number;
  droppedContributions: number;
  expectedContributions: number;
  criticalContributions: number;
  /** Groups (all layers, both phases) each device held at the end, coordinator first: where the placement put them. */
  groupsPerDevice: number[];
}

/**
 * The real relaxed protocol at emulated loss: `nDevices` devices on loopback (workers in this
 * process), every token fed as a decode step so each phase crosses the lossy data plane, scored
 * against the dense model's targets and greedy choices.
 */
export async function clusterFidelity(
  model: LoadedModel, sha256: string, kernels: MatrixKernels, tokens: readonly number[],
  options: { window: number; nDevices: number; lossPercent: number; seed: number; predictor: GroupPredictor | undefined; criticalFraction?: number; copies?: number; denseArgmaxes: readonly number[];
    /** Per-device speed and link (halo cluster --spec), instead of lossPercent on every link. */
    devices?: readonly LocalDevice[];
    plan?: (predictor: ImportancePredictor | undefined) => ClusterOptions["plan"] },
): Promise<ClusterFidelity> {
  const clusterKey = randomBytes(32);
  const loss = { lossRatio: options.lossPercent / 100, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 };
  const linkOf = (worker: number) => (options.devices === undefined ? loss : linkProfileOf(options.devices[worker + 1]!.link!));
  const workers = await Promise.all(Array.from({ length: options.nDevices - 1 }, (_, i) => WorkerNode.start({
    model: { file: model.file, config: model.config, sha256 }, kernels, clusterKey, contextLength: options.window, linkProfile: linkOf(i), seed: options.seed * 1000 + i,
    slowdown: options.devices?.[i + 1]!.slowdown, profileKernels: [kernels],
  })));
  const importance = options.predictor === undefined ? undefined : new ImportancePredictor(options.predictor, kernels);
  const coordinator = await ClusterCoordinator.connect({
    model, modelSha256: sha256, clusterKey, mode: "relaxed", seed: options.seed,
    workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
    linkProfiles: workers.map((_, i) => linkOf(i)), predictor: importance, criticalFraction: options.criticalFraction, copies: options.copies,
    computeSlowdown: options.devices?.[0]!.slowdown, profileKernels: [kernels], plan: options.plan?.(importance),
  });
  try {
    const engine = new Engine(model.config, model.weights, { kernels, contextLength: options.window, synchronizer: coordinator });
    const vocabSize = model.config.vocabSize;
    let nll = 0;
    let agree = 0;
    let n = 0;
    for (let w = 0; w + options.window <= tokens.length; w += options.window) {
      const targets = tokens.slice(w, w + options.window);
      const inputs = [model.tokenizer.bosId, ...targets.slice(0, -1)];
      for (let t = 0; t < inputs.length; t++) {
        const logits = await engine.step(inputs[t]!, t);
        let max = -Infinity;
        for (let i = 0; i < vocabSize; i++) if (logits[i]! > max) max = logits[i]!;
        let sum = 0;
        for (let i = 0; i < vocabSize; i++) sum += Math.exp(logits[i]! - max);
        nll += Math.log(sum) + max - logits[targets[t]!]!;
        if (argmax(logits) === options.denseArgmaxes[n]) agree++;
        n++;
      }
    }
    const { droppedContributions, expectedContributions, criticalContributions } = coordinator.totals;
    return { critical: options.predictor === undefined ? "none" : "predictor", perplexity: Math.exp(nll / n), top1Agreement: agree / n, droppedContributions, expectedContributions, criticalContributions, groupsPerDevice: groupsPerDevice(coordinator.placement) };
  } finally {
    await coordinator.close();
    for (const worker of workers) await worker.close();
  }
}
