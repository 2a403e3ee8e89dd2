/** Flags shared by the commands that load a model and generate. */
import { resolveSampling, type ResolvedSamplingOptions } from "../engine/index.js";
import { builtinModelPath } from "./builtinModel.js";
import { integerFlag, numberFlag, stringFlag, type FlagSpec, type ParsedFlags } from "./flags.js";

export const MODEL_FLAGS = {
  model: { type: "string", short: "m" },
  threads: { type: "string", short: "t" },
  "ctx-size": { type: "string" },
} as const satisfies FlagSpec;

export const SAMPLING_FLAGS = {
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  "repeat-penalty": { type: "string" },
  seed: { type: "string", short: "s" },
} as const satisfies FlagSpec;

export interface ModelFlagValues {
  modelPath: string;
  threads: number | undefined;
  contextLength: number | undefined;
}

export function readModelFlags(flags: ParsedFlags): ModelFlagValues {
  return {
    modelPath: stringFlag(flags, "model") ?? builtinModelPath(),
    threads: integerFlag(flags, "threads", 1, 256),
    contextLength: integerFlag(flags, "ctx-size", 1, 1 << 20),
  };
}

export function readSamplingFlags(flags: ParsedFlags): ResolvedSamplingOptions {
  return resolveSampling({
    temperature: numberFlag(flags, "temperature", 0, 100),
    topK: integerFlag(flags, "top-k", 0, 1 << 24),
    topP: numberFlag(flags, "top-p", Number.MIN_VALUE, 1),
    minP: numberFlag(flags, "min-p", 0, 0.999999),
    repetitionPenalty: numberFlag(flags, "repeat-penalty", Number.MIN_VALUE, 100),
    seed: integerFlag(flags, "seed", 0, 2 ** 32 - 1),
  });
}

export const MODEL_FLAGS_HELP = `  -m, --model F          GGUF model file (default: the built-in stories260K)
  -t, --threads N        compute threads (default: all cores)
      --ctx-size N       KV cache length in tokens (default: the model's, at most 4096)`;

export const SAMPLING_FLAGS_HELP = `      --temperature T    0 = greedy (default 0.8)
      --top-k K          0 = off (default 40)
      --top-p P          1 = off (default 0.95)
      --min-p P          0 = off (default 0.05)
      --repeat-penalty R 1 = off (default 1)
  -s, --seed S           sampling seed (default: random, reported in --json)`;
