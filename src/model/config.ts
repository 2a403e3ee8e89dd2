/**
 * LLaMA-family hyperparameters read from GGUF metadata, with the converters' defaults, and
 * validated so that an absurd or inconsistent value is rejected with the offending key named.
 */
import { ModelConfigError } from "../base/index.js";
import { GgufValueType } from "./ggufFormat.js";
import type { GgufMetadata } from "./ggufReader.js";

/** RoPE pairing: "normal" rotates (x[2i], x[2i+1]) (llama, ggml mode 0); "neox" rotates (x[i], x[i+d/2]). */
export type RopeStyle = "normal" | "neox";

/** Architectures halo runs, and what distinguishes them. An architecture variant gets an entry here, never an `if` in the forward pass. */
export const ARCHITECTURES = {
  llama: { ropeStyle: "normal" },
} as const satisfies Record<string, { ropeStyle: RopeStyle }>;

export type Architecture = keyof typeof ARCHITECTURES;

export interface ModelConfig {
  readonly architecture: Architecture;
  readonly name: string;
  /** Residual stream width (embedding_length). */
  readonly dim: number;
  /** FFN width (feed_forward_length). */
  readonly hiddenDim: number;
  readonly nLayers: number;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  /** nKvHeads · headDim. */
  readonly kvDim: number;
  readonly vocabSize: number;
  /** The context the model was converted with; the KV cache may be sized smaller. */
  readonly contextLength: number;
  readonly rmsNormEps: number;
  readonly ropeFreqBase: number;
  /** Rotated dimensions per head (rope.dimension_count); usually headDim. */
  readonly ropeDim: number;
  readonly ropeStyle: RopeStyle;
}

/** Largest values accepted; far above any real LLaMA, far below what would exhaust memory by accident. */
const LIMITS = { dim: 1 << 16, hiddenDim: 1 << 18, nLayers: 1024, nHeads: 1024, vocabSize: 1 << 22, contextLength: 1 << 24 };

/** Reads `key` through GgufMetadata, re-coding its type error (e.g. a string where a number belongs) as a config error naming the key. */
function readKey<T>(key: string, read: (key: string) => T): T {
  try {
    return read(key);
  } catch (error) {
    throw new ModelConfigError(key, error instanceof Error ? error.message : String(error));
  }
}

function requirePositive(metadata: GgufMetadata, key: string, max: number, fallback?: number): number {
  const value = readKey(key, (k) => metadata.integer(k));
  if (value === undefined) {
    if (fallback !== undefined) return fallback;
    throw new ModelConfigError(key, "missing");
  }
  if (value <= 0 || value > max) throw new ModelConfigError(key, `${value} is out of range (1..${max})`);
  return value;
}

function optionalFloat(metadata: GgufMetadata, key: string, fallback: number): number {
  const value = readKey(key, (k) => metadata.float(k));
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw new ModelConfigError(key, `${value} must be a positive finite number`);
  return value;
}

export function readModelConfig(metadata: GgufMetadata): ModelConfig {
  const architecture = readKey("general.architecture", (k) => metadata.string(k));
  if (architecture === undefined) throw new ModelConfigError("general.architecture", "missing");
  if (!Object.hasOwn(ARCHITECTURES, architecture)) {
    throw new ModelConfigError("general.architecture", `'${architecture}' is not supported (supported: ${Object.keys(ARCHITECTURES).join(", ")})`);
  }
  const arch = architecture as Architecture;
  const key = (suffix: string): string => `${arch}.${suffix}`;
  const dim = requirePositive(metadata, key("embedding_length"), LIMITS.dim);
  const hiddenDim = requirePositive(metadata, key("feed_forward_length"), LIMITS.hiddenDim);
  const nLayers = requirePositive(metadata, key("block_count"), LIMITS.nLayers);
  const nHeads = requirePositive(metadata, key("attention.head_count"), LIMITS.nHeads);
  const nKvHeads = requirePositive(metadata, key("attention.head_count_kv"), nHeads, nHeads);
  if (nHeads % nKvHeads !== 0) throw new ModelConfigError(key("attention.head_count_kv"), `${nKvHeads} does not divide head_count ${nHeads}`);
  if (dim % nHeads !== 0) throw new ModelConfigError(key("attention.head_count"), `${nHeads} does not divide embedding_length ${dim}`);
  const headDim = dim / nHeads;
  const tokenCount = metadata.typeOf("tokenizer.ggml.tokens")?.type === GgufValueType.ARRAY ? metadata.typeOf("tokenizer.ggml.tokens")?.length : undefined;
  const vocabSize = requirePositive(metadata, key("vocab_size"), LIMITS.vocabSize, tokenCount);
  if (tokenCount !== undefined && metadata.has(key("vocab_size")) && tokenCount !== vocabSize) {
    throw new ModelConfigError(key("vocab_size"), `${vocabSize} differs from the ${tokenCount} tokens in tokenizer.ggml.tokens`);
  }
  const contextLength = requirePositive(metadata, key("context_length"), LIMITS.contextLength);
  const ropeDim = requirePositive(metadata, key("rope.dimension_count"), headDim, headDim);
  if (ropeDim % 2 !== 0) throw new ModelConfigError(key("rope.dimension_count"), `${ropeDim} must be even`);
  return {
    architecture: arch,
    name: readKey("general.name", (k) => metadata.string(k)) ?? arch,
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    headDim,
    kvDim: nKvHeads * headDim,
    vocabSize,
    contextLength,
    rmsNormEps: optionalFloat(metadata, key("attention.layer_norm_rms_epsilon"), 1e-5),
    // The converters' default when the key is absent.
    ropeFreqBase: optionalFloat(metadata, key("rope.freq_base"), 10000),
    ropeDim,
    ropeStyle: ARCHITECTURES[arch].ropeStyle,
  };
}
