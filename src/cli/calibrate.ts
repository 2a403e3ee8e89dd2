/**
 * `halo calibrate`: runs the dense model over a corpus with every neuron group computed on its
 * own (engine GroupProbe), records each group's true contribution norm beside the layer's normed
 * input, and fits one ridge map per layer phase from that input to the log-importance of every
 * group (predictor/). Writes the predictor file with the model's hash.
 */
import { HaloError, UsageError } from "../base/index.js";
import { modelSha256 } from "../cluster/index.js";
import { Engine, GroupProbe, type GroupObservation } from "../engine/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import type { LoadedModel } from "../model/index.js";
import { createGroupLayout, groupCount, type GroupKind } from "../partition/index.js";
import { RidgeAccumulator, writePredictor, type GroupPredictor } from "../predictor/index.js";
import { booleanFlag, integerFlag, numberFlag, parseFlags, requiredStringFlag, stringFlag } from "./flags.js";
import type { CommandIo } from "./io.js";
import { readTextFile } from "./textFile.js";
import { loadCommandModel } from "./engineSetup.js";
import { MODEL_FLAGS, MODEL_FLAGS_HELP, readModelFlags } from "./modelFlags.js";

export const CALIBRATE_HELP = `usage: halo calibrate [--model F] --corpus T --out F.halo [--tokens N] [--window L] [--lambda X] [--rank R]

Fits the importance predictor: the model runs over the corpus (its first N tokens, in windows of
L tokens from BOS), every neuron group's true contribution norm is recorded, and a ridge map per
layer phase learns the log of those norms from the layer's normed input. The output file carries
the model's SHA-256; using it with another model is an error.
      --corpus T         UTF-8 text to calibrate on
      --out F            the predictor file to write
      --tokens N         corpus tokens to use (default 8192)
      --window L         tokens per window (default 256)
      --lambda X         ridge penalty per sample (default 0.001)
      --rank R           keep each map to its R strongest output directions (reduced-rank
                         regression): R·(dim + groups) multiply-adds per prediction instead of
                         dim·groups; default full rank
${MODEL_FLAGS_HELP}`;

/** log(norm + floor): a group that contributed nothing still has a finite target. */
const LOG_FLOOR = 1e-6;

export interface CalibrationOptions {
  kernels: MatrixKernels;
  window: number;
  lambda: number;
  /** Reduced rank of every map; full when absent. */
  rank?: number;
  ffnBlockSize?: number;
  onWindow?: (done: number, total: number) => void;
}

/** Fits a predictor for `model` (whose file hashes to `sha256`) on `tokens` (no BOS). */
export async function calibratePredictor(model: LoadedModel, sha256: string, tokens: readonly number[], options: CalibrationOptions): Promise<GroupPredictor> {
  const { config } = model;
  const layout = createGroupLayout(config, options.ffnBlockSize);
  const accumulators: Record<GroupKind, RidgeAccumulator[]> = {
    attention: Array.from({ length: config.nLayers }, () => new RidgeAccumulator(config.dim, groupCount(layout, "attention"))),
    ffn: Array.from({ length: config.nLayers }, () => new RidgeAccumulator(config.dim, groupCount(layout, "ffn"))),
  };
  const target = new Float64Array(Math.max(groupCount(layout, "attention"), groupCount(layout, "ffn")));
  const onPhase = (o: GroupObservation): void => {
    const fit = accumulators[o.phase][o.layerIndex]!;
    for (let t = 0; t < o.nTokens; t++) {
      for (let g = 0; g < o.nGroups; g++) target[g] = Math.log(o.norms[t * o.nGroups + g]! + LOG_FLOOR);
      fit.add(o.input, t * config.dim, target, 0);
    }
  };
  const maxBatch = Math.min(options.window, 64);
  const probe = new GroupProbe({ config, weights: model.weights, kernels: options.kernels, layout, contextLength: options.window, maxBatch, onPhase });
  const engine = new Engine(config, model.weights, { kernels: options.kernels, contextLength: options.window, maxBatch, synchronizer: probe });
  const nWindows = Math.floor(tokens.length / options.window);
  if (nWindows === 0) throw new UsageError(`the corpus has ${tokens.length} tokens, fewer than one window of ${options.window}`);
  for (let w = 0; w < nWindows; w++) {
    const windowTokens = tokens.slice(w * options.window, (w + 1) * options.window);
    await engine.evaluate([model.tokenizer.bosId, ...windowTokens.slice(0, -1)], 0, "none");
    options.onWindow?.(w + 1, nWindows);
  }
  return {
    modelSha256: sha256,
    nLayers: config.nLayers,
    inputDim: config.dim,
    ffnBlockSize: layout.ffnBlockSize,
    maps: { attention: accumulators.attention.map((a) => a.solve(options.lambda, options.rank)), ffn: accumulators.ffn.map((a) => a.solve(options.lambda, options.rank)) },
  };
}

export async function calibrateCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { ...MODEL_FLAGS, corpus: { type: "string" }, out: { type: "string", short: "o" }, tokens: { type: "string" }, window: { type: "string" }, lambda: { type: "string" }, rank: { type: "string" } });
  if (booleanFlag(flags, "help")) {
    io.stdout(CALIBRATE_HELP + "\n");
    return 0;
  }
  const modelFlags = readModelFlags(flags);
  const corpusPath = requiredStringFlag(flags, "corpus");
  const outPath = requiredStringFlag(flags, "out");
  const maxTokens = integerFlag(flags, "tokens", 2, 1 << 30) ?? 8192;
  const window = integerFlag(flags, "window", 2, 1 << 20) ?? 256;
  const lambda = numberFlag(flags, "lambda", 1e-12, 1e6) ?? 1e-3;
  const rank = integerFlag(flags, "rank", 1, 1 << 20);
  if (stringFlag(flags, "out") === corpusPath) throw new UsageError("--out would overwrite the corpus");
  const text = readTextFile(corpusPath);
  const { model, kernels } = await loadCommandModel(modelFlags);
  try {
    if (window > model.config.contextLength) throw new HaloError("HALO_ERR_CONTEXT", `window ${window} exceeds the model's context of ${model.config.contextLength}`);
    const tokens = model.tokenizer.encode(text, { addBos: false }).slice(0, maxTokens);
    const started = performance.now();
    const predictor = await calibratePredictor(model, modelSha256(modelFlags.modelPath), tokens, {
      kernels, window, lambda, ...(rank === undefined ? {} : { rank }),
      onWindow: (done, total) => io.stderr(`\rhalo calibrate: window ${done}/${total}${done === total ? "\n" : ""}`),
    });
    const bytes = writePredictor(outPath, predictor);
    io.stderr(`halo calibrate: ${Math.floor(tokens.length / window) * window} tokens, ${predictor.nLayers} layers, ${(bytes / 1024).toFixed(1)} KiB written to ${outPath} in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    return 0;
  } finally {
    model.file.close();
  }
}
