/**
 * bench:report's fidelity cells, on a real trained model (stories260K): a predictor calibrated by
 * `halo calibrate` on the first half of a TinyStories excerpt, then `halo eval --cluster N --loss P`
 * on the second half, which runs the real relaxed protocol token by token (in one process, with
 * the userspace link emulator: a cell is about what dropping contributions does to the model,
 * not about speed) and compares perplexity and greedy top-1 choices with the dense model.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { BENCH_CACHE_DIR, haloSync } from "../cluster/namespaceCluster.js";
import { fidelityKey, type FidelityCell } from "./results.js";

export interface FidelitySettings {
  modelPath: string;
  corpusPath: string;
  /** Corpus tokens fitted by halo calibrate (from the first half). */
  calibrationTokens: number;
  /** Corpus tokens evaluated (from the second half), in windows of `window`. */
  evalTokens: number;
  window: number;
  /** The eval's own drop table: percentages of groups dropped by each policy. */
  dropPercents: readonly number[];
  /** Datagram copies in the relaxed protocol (halo eval --copies). */
  copies: number;
  configHash: string;
  commit: string;
}

/** The corpus cut in two at the line boundary nearest its middle, so no story is in both halves' files twice. */
export function splitCorpus(corpusPath: string): { calibration: string; evaluation: string } {
  mkdirSync(BENCH_CACHE_DIR, { recursive: true });
  const base = basename(corpusPath).replace(/\.txt$/, "");
  const calibration = join(BENCH_CACHE_DIR, `${base}.first-half.txt`);
  const evaluation = join(BENCH_CACHE_DIR, `${base}.second-half.txt`);
  const text = readFileSync(corpusPath, "utf8");
  const middle = text.indexOf("\n", Math.floor(text.length / 2));
  const cut = middle < 0 ? Math.floor(text.length / 2) : middle + 1;
  writeFileSync(calibration, text.slice(0, cut));
  writeFileSync(evaluation, text.slice(cut));
  return { calibration, evaluation };
}

/** `halo calibrate`'s predictor for a model, fitted once per model, corpus and size, then reused from the cache. */
export function ensurePredictor(modelPath: string, corpusPath: string, options: { tokens: number; window: number; rank?: number }): string {
  const name = `${basename(modelPath, ".gguf")}.${basename(corpusPath, ".txt")}.${options.tokens}t${options.window}w${options.rank === undefined ? "" : `r${options.rank}`}.halo`;
  const path = join(BENCH_CACHE_DIR, name);
  if (!existsSync(path)) {
    process.stderr.write(`calibrating ${path}…\n`);
    const rank = options.rank === undefined ? [] : ["--rank", String(options.rank)];
    haloSync(["calibrate", "--model", modelPath, "--corpus", corpusPath, "--tokens", String(options.tokens), "--window", String(options.window), ...rank, "--out", path]);
  }
  return path;
}

interface EvalJson {
  points: Array<{ policy: string; dropPercent: number; perplexity: number; top1Agreement: number }>;
  cluster: FidelityCell["rows"];
}

/** One eval run: both of its critical-set variants (none, predictor) under `placement`. */
export function measureFidelity(devices: number, lossPercent: number, placement: "uniform" | "halo", predictorPath: string, evaluationCorpus: string, settings: FidelitySettings): FidelityCell {
  const dir = mkdtempSync(join(tmpdir(), "halo-report-eval-"));
  try {
    const jsonPath = join(dir, "eval.json");
    haloSync([
      "eval", "--model", settings.modelPath, "--predictor", predictorPath, "--corpus", evaluationCorpus, "--tokens", String(settings.evalTokens), "--window", String(settings.window),
      "--fractions", settings.dropPercents.join(","), "--cluster", String(devices), "--loss", String(lossPercent), "--placement", placement, "--copies", String(settings.copies), "--json", jsonPath,
    ]);
    const json = JSON.parse(readFileSync(jsonPath, "utf8")) as EvalJson;
    const dense = json.points.find((p) => p.policy === "dense")!;
    return {
      key: fidelityKey(devices, lossPercent, placement), configHash: settings.configHash, devices, lossPercent, placement,
      densePerplexity: dense.perplexity, rows: json.cluster, dropPolicies: json.points.filter((p) => p.policy !== "dense"), commit: settings.commit,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
