/**
 * `npm run bench:report`: the evaluation protocol of DESIGN.md in one run. Speed: TPOT of strict
 * TCP, relaxed (uniform), relaxed + predictor and full halo (relaxed + predictor + --placement
 * halo + budgeted, streaming workers) at each loss rate and device count, every device a process
 * in its own network namespace, loss dropped on the wire (bench/cluster's machinery), on a
 * synthetic TinyLlama-shape model. Fidelity: perplexity and top-1 agreement against the dense
 * model on stories260K, with `halo eval --cluster N --loss P`, the predictor calibrated by `halo
 * calibrate` on the corpus's first half and evaluated on its second.
 *
 * Writes bench/results/<date>/results.json (after every cell: an interrupted run resumes),
 * report.md and SVG plots; prints a summary beside the paper's targets. Needs root.
 *
 * Flags: --quick (losses 0,5; devices 1,4; 2 layers; 12 tokens; 1 repeat; 256 eval tokens)
 * --loss 0,1,2,3,5,10 --devices 1,2,4,8 --modes strict,relaxed,predictor,halo --layers N (4)
 * --tokens N (24) --repeats N (2) --delay MS (3) --jitter MS (1) --shape S (tinyllama-1.1b)
 * --budget-fraction X (0.5 of a uniform share per full-halo worker; 0: no budget)
 * --eval-tokens N (1024) --eval-window L (128) --calibration-tokens N (8192) --corpus FILE
 * --copies N (1: datagram copies in the relaxed modes and the fidelity runs)
 * --no-fidelity --out DIR (default bench/results/<date>) --baseline-dllama PATH (not implemented: skipped).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { openGguf, SYNTH_SHAPES } from "../../src/model/index.js";
import { PROJECT_ROOT, ensureSynthModel } from "../cluster/namespaceCluster.js";
import { describeRun } from "../report.js";
import { ensurePredictor, measureFidelity, splitCorpus, type FidelitySettings } from "./fidelity.js";
import { renderPlots } from "./plots.js";
import { Progress, SPEED_MODES, configHash, fidelityKey, hasCell, loadResults, putCell, saveResults, type SpeedMode } from "./results.js";
import { measureDevices, measureSingleDevice, type SpeedSettings } from "./speed.js";
import { fidelityStats, renderTables, speedStats, summarize } from "./summary.js";

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean" }, loss: { type: "string" }, devices: { type: "string" }, modes: { type: "string" }, layers: { type: "string" }, tokens: { type: "string" },
    repeats: { type: "string" }, delay: { type: "string" }, jitter: { type: "string" }, shape: { type: "string" }, "budget-fraction": { type: "string" },
    "eval-tokens": { type: "string" }, "eval-window": { type: "string" }, "calibration-tokens": { type: "string" }, corpus: { type: "string" },
    "no-fidelity": { type: "boolean" }, out: { type: "string" }, "baseline-dllama": { type: "string" }, copies: { type: "string" },
  },
});
const quick = flags.quick === true;
const numbers = (name: string, value: string | undefined, fallback: string): number[] => {
  const list = (value ?? fallback).split(",").map(Number);
  if (list.some((v) => !(Number.isFinite(v) && v >= 0))) throw new Error(`--${name} takes non-negative numbers separated by commas, got '${value}'`);
  return list;
};
const one = (name: string, value: string | undefined, fallback: number): number => numbers(name, value, String(fallback))[0]!;
const shape = flags.shape ?? "tinyllama-1.1b";
if (!Object.hasOwn(SYNTH_SHAPES, shape)) throw new Error(`--shape takes one of ${Object.keys(SYNTH_SHAPES).join(", ")}, got '${shape}'`);
const defaultCorpus = join(PROJECT_ROOT, "..", "shared", "models", "corpora", "tinystories_valid_excerpt.txt");
const config = {
  shape,
  nLayers: one("layers", flags.layers, quick ? 2 : 4),
  nTokens: one("tokens", flags.tokens, quick ? 12 : 24),
  repeats: one("repeats", flags.repeats, quick ? 1 : 2),
  lossPercents: numbers("loss", flags.loss, quick ? "0,5" : "0,1,2,3,5,10"),
  devices: numbers("devices", flags.devices, quick ? "1,4" : "1,2,4,8"),
  modes: (flags.modes ?? SPEED_MODES.join(",")).split(",") as SpeedMode[],
  delayMs: one("delay", flags.delay, 3),
  jitterMs: one("jitter", flags.jitter, 1),
  budgetFraction: one("budget-fraction", flags["budget-fraction"], 0.5),
  /** Every datagram of the relaxed modes sent this many times (halo run --copies). */
  copies: one("copies", flags.copies, 1),
  synthCalibration: { tokens: 128, window: 64 },
  fidelity: flags["no-fidelity"] === true ? undefined : {
    evalTokens: one("eval-tokens", flags["eval-tokens"], quick ? 256 : 1024),
    window: one("eval-window", flags["eval-window"], 128),
    calibrationTokens: one("calibration-tokens", flags["calibration-tokens"], quick ? 2048 : 8192),
    dropPercents: [10, 30],
    corpus: flags.corpus ?? defaultCorpus,
  },
};
if (!(Number.isInteger(config.copies) && config.copies >= 1 && config.copies <= 4)) throw new Error(`--copies takes an integer from 1 to 4, got ${config.copies}`);
if (config.modes.some((m) => !(SPEED_MODES as readonly string[]).includes(m))) throw new Error(`--modes takes ${SPEED_MODES.join(",")}; got ${config.modes.join(",")}`);
if (config.devices.some((n) => !(Number.isInteger(n) && n >= 1 && n <= 64))) throw new Error(`--devices: each count must be an integer from 1 to 64, got ${config.devices.join(",")}`);
if (config.lossPercents.some((p) => p > 100) || config.budgetFraction > 1 || config.repeats < 1 || config.nTokens < 3) throw new Error("--loss ≤ 100, --budget-fraction ≤ 1, --repeats ≥ 1 and --tokens ≥ 3 (TPOT needs two decode steps)");
if (process.getuid?.() !== 0) throw new Error("bench:report builds network namespaces, nft rules and qdiscs: run it as root (without root, halo cluster --local N --loss P emulates links in userspace)");

const run = describeRun();
const commit = String(run.record["commit"]);
const outDir = flags.out ?? join(PROJECT_ROOT, "bench", "results", new Date().toISOString().slice(0, 10));
mkdirSync(outDir, { recursive: true });
const resultsPath = join(outDir, "results.json");
// Copies enter the hashes only when not 1, so results from before the flag existed still resume.
const withCopies = <T extends object>(value: T): T | (T & { copies: number }) => (config.copies === 1 ? value : { ...value, copies: config.copies });
const hashes = {
  speed: configHash(withCopies({ shape, nLayers: config.nLayers, nTokens: config.nTokens, delayMs: config.delayMs, jitterMs: config.jitterMs, budgetFraction: config.budgetFraction, synthCalibration: config.synthCalibration })),
  fidelity: configHash(config.fidelity === undefined ? null : withCopies(config.fidelity)),
};
const results = loadResults(resultsPath, { version: 1, run: run.record, config, configHash: hashes });

// Setup: the synthetic model and its predictor, the corpus halves and stories260K's predictor.
const modelPath = ensureSynthModel(shape, config.nLayers);
const corpusHalves = splitCorpus(flags.corpus ?? defaultCorpus);
const synthPredictor = ensurePredictor(modelPath, corpusHalves.calibration, config.synthCalibration);
const storiesModel = join(PROJECT_ROOT, "models", "stories260K.gguf");
const storiesPredictor = config.fidelity === undefined ? "" : ensurePredictor(storiesModel, corpusHalves.calibration, { tokens: config.fidelity.calibrationTokens, window: 256 });

/** The layers' weights (what the devices split) and the largest layer phase's (a streaming worker stages one at a time), in MiB. */
async function layerMiB(path: string): Promise<{ total: number; largestPhase: number }> {
  const file = await openGguf(path);
  try {
    const bytes = (pattern: RegExp): number => file.tensors.filter((t) => pattern.test(t.name)).reduce((sum, t) => sum + t.byteLength, 0) / 2 ** 20;
    return { total: bytes(/^blk\./), largestPhase: Math.max(bytes(/^blk\.0\.attn_(q|k|v|output)\./), bytes(/^blk\.0\.ffn_(gate|up|down)\./)) };
  } finally {
    file.close();
  }
}
const layers = await layerMiB(modelPath);
/** A fraction of a uniform share, but never below what a worker needs to stream at all (its largest phase's staging, with room to spare). */
const budgetMiB = (nDevices: number): number | undefined => (config.budgetFraction > 0 ? Math.max(config.budgetFraction * layers.total, 1.25 * layers.largestPhase) / nDevices : undefined);
const speedSettings: SpeedSettings = {
  modelPath, predictorPath: synthPredictor, nTokens: config.nTokens, repeats: config.repeats, lossPercents: config.lossPercents, modes: config.modes,
  delayMs: config.delayMs, jitterMs: config.jitterMs, budgetMiB, copies: config.copies, configHash: hashes.speed, commit,
};
const fidelitySettings: FidelitySettings | undefined = config.fidelity === undefined ? undefined : {
  modelPath: storiesModel, corpusPath: config.fidelity.corpus, calibrationTokens: config.fidelity.calibrationTokens, evalTokens: config.fidelity.evalTokens,
  window: config.fidelity.window, dropPercents: config.fidelity.dropPercents, copies: config.copies, configHash: hashes.fidelity, commit,
};
const placements = [...(config.modes.some((m) => m === "relaxed" || m === "predictor") ? ["uniform" as const] : []), ...(config.modes.includes("halo") ? ["halo" as const] : [])];
const clusterSizes = config.devices.filter((n) => n > 1);
const nSpeedCells = (config.devices.includes(1) ? config.repeats : 0) + clusterSizes.length * config.lossPercents.length * config.repeats * config.modes.length;
const nFidelityCells = fidelitySettings === undefined ? 0 : clusterSizes.length * config.lossPercents.length * placements.length;
const progress = new Progress({ speed: nSpeedCells, fidelity: nFidelityCells }, (text) => void process.stderr.write(text), process.stderr.isTTY === true);

const speedSink = {
  isDone: (key: string) => hasCell(results.speed, key, hashes.speed),
  record: (cell: (typeof results.speed)[number]) => {
    putCell(results.speed, cell);
    saveResults(resultsPath, results);
  },
  progress: (label: string, ms: number | undefined) => progress.step("speed", label, ms),
};
if (config.devices.includes(1)) measureSingleDevice(speedSettings, speedSink);
for (const nDevices of clusterSizes) await measureDevices(nDevices, speedSettings, speedSink);
if (fidelitySettings !== undefined) {
  for (const nDevices of clusterSizes) {
    for (const lossPercent of config.lossPercents) {
      for (const placement of placements) {
        const label = `fidelity, ${nDevices} devices, ${lossPercent}%, ${placement} placement`;
        if (hasCell(results.fidelity, fidelityKey(nDevices, lossPercent, placement), hashes.fidelity)) {
          progress.step("fidelity", label, undefined);
          continue;
        }
        const started = performance.now();
        putCell(results.fidelity, measureFidelity(nDevices, lossPercent, placement, storiesPredictor, corpusHalves.evaluation, fidelitySettings));
        saveResults(resultsPath, results);
        progress.step("fidelity", label, performance.now() - started);
      }
    }
  }
}

// Only this configuration's cells, and only those of the matrix asked for, make the report.
const inMatrix = (c: { devices: number; lossPercent: number }): boolean => config.devices.includes(c.devices) && (c.devices === 1 || config.lossPercents.includes(c.lossPercent));
const speed = speedStats(results.speed.filter((c) => c.configHash === hashes.speed && inMatrix(c) && (c.mode === "single" || config.modes.includes(c.mode)) && c.repeat < config.repeats));
const fidelityCells = results.fidelity.filter((c) => c.configHash === hashes.fidelity && inMatrix(c));
const fidelity = fidelityStats(fidelityCells);
const budgetNote = config.budgetFraction > 0 && config.modes.includes("halo")
  ? ` (full halo's workers: --memory-budget ${config.budgetFraction} × a uniform share (at least 1.25 × its largest layer phase), ${clusterSizes.map((n) => `${budgetMiB(n)!.toFixed(1)} MiB at ${n}`).join(", ")} devices)` : "";
const baselineNote = flags["baseline-dllama"] === undefined ? "distributed-llama baseline: skipped (no --baseline-dllama)" : `distributed-llama baseline: skipped (--baseline-dllama ${flags["baseline-dllama"]}: running it is not implemented yet)`;
const summary = summarize(speed, fidelity, budgetNote, baselineNote);
const policyCell = fidelityCells.find((c) => c.placement === "uniform" && c.devices === summary.fidelity?.devices && c.lossPercent === 0) ?? fidelityCells[0];
const setting = `${config.nLayers}-layer ${shape}-shape Q4_0 model, ${config.nTokens} tokens (TPOT over the last ${config.nTokens - 1}), ${config.repeats} repeat(s), --threads 1 per process; ` +
  `links: ${config.delayMs} ms delay ± ${config.jitterMs} ms jitter emulated in userspace by every sender, loss dropped by nft on every worker link, each way` +
  (config.copies === 1 ? "" : `; relaxed modes send every datagram ${config.copies} times`) +
  (fidelitySettings === undefined ? "" : `; fidelity: stories260K, predictor calibrated on ${fidelitySettings.calibrationTokens} tokens of the corpus's first half, ${fidelitySettings.evalTokens} tokens of its second half evaluated in windows of ${fidelitySettings.window}, loss emulated in userspace`);
results.summary = { ...summary, lines: undefined, text: summary.lines };
saveResults(resultsPath, results);

const plots = renderPlots(speed, fidelity, summary);
for (const [name, svg] of Object.entries(plots)) writeFileSync(join(outDir, name), svg);
const markdown = `# halo report\n\n${run.line}\n\n${setting}\n\n## Summary\n\n${summary.lines.map((l) => `- ${l}`).join("\n")}\n\n## Results\n\n${renderTables(speed, fidelity, policyCell, `${config.nLayers}-layer ${shape}-shape synthetic model`)}\n## Plots\n\n` +
  Object.keys(plots).map((name) => `![${name}](${name})`).join("\n") + "\n";
writeFileSync(join(outDir, "report.md"), markdown);
console.log(`\n${run.line}\n${setting}\n\n${summary.lines.join("\n")}\n\nwrote ${resultsPath}, report.md and ${Object.keys(plots).length} plots in ${outDir}`);
