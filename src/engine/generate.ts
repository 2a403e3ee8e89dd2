/**
 * Text generation: prefill the prompt as a batch, then decode one token at a time, streaming
 * text that never splits a UTF-8 character.
 */
import { ContextOverflowError, HaloError } from "../base/index.js";
import type { Engine } from "./engine.js";
import type { Sampler } from "./sampler.js";

/** What generation needs of a tokenizer. */
export interface StreamingDetokenizer {
  readonly eosId: number;
  /** A decoder whose first token follows `precedingId`. */
  createStreamDecoder(precedingId?: number): { push(id: number): string; flush(): string };
}

export interface GenerateOptions {
  /** Generated tokens at most (the prompt does not count). */
  maxTokens: number;
  /** Keep going past the end-of-sequence token. */
  ignoreEos?: boolean;
  /** Called with each generated token and the text it completes (may be ""). */
  onToken?: (id: number, text: string) => void;
  /** Stops generation between tokens when aborted. */
  signal?: AbortSignal;
  /**
   * Lets pending I/O run between tokens (one macrotask turn), so that a server sees a client
   * disconnect, answers other requests and can abort through `signal` mid-generation. A local
   * forward pass never yields by itself. Defaults to false: a CLI has nothing else to do.
   */
  yieldToEventLoop?: boolean;
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export type StopReason = "eos" | "max_tokens" | "context_full" | "aborted";

export interface GenerationTimings {
  promptTokens: number;
  promptMs: number;
  generatedTokens: number;
  /** Decode time, from the first sampled token to the last. */
  decodeMs: number;
  promptTokensPerSecond: number;
  decodeTokensPerSecond: number;
  msPerToken: number;
}

export interface GenerationResult {
  tokens: number[];
  text: string;
  stopReason: StopReason;
  timings: GenerationTimings;
}

export async function generate(engine: Engine, detokenizer: StreamingDetokenizer, sampler: Sampler, promptIds: readonly number[], options: GenerateOptions): Promise<GenerationResult> {
  if (promptIds.length === 0) throw new HaloError("HALO_ERR_USAGE", "the prompt has no tokens (add BOS or give text)");
  if (!Number.isInteger(options.maxTokens) || options.maxTokens < 0) throw new HaloError("HALO_ERR_USAGE", `max tokens must be an integer ≥ 0, got ${options.maxTokens}`);
  if (promptIds.length > engine.contextLength) throw new ContextOverflowError(promptIds.length, engine.contextLength);

  const history = [...promptIds];
  const generated: number[] = [];
  const decoder = detokenizer.createStreamDecoder(promptIds[promptIds.length - 1]);
  let text = "";
  const t0 = performance.now();
  let logits = (await engine.evaluate(promptIds, 0, "last"))!;
  const promptMs = performance.now() - t0;
  const t1 = performance.now();
  let stopReason: StopReason = "max_tokens";
  while (generated.length < options.maxTokens) {
    if (options.yieldToEventLoop === true) await nextTurn();
    if (options.signal?.aborted) {
      stopReason = "aborted";
      break;
    }
    const id = sampler.sample(logits, history);
    if (id === detokenizer.eosId && !options.ignoreEos) {
      stopReason = "eos";
      break;
    }
    generated.push(id);
    history.push(id);
    const piece = decoder.push(id);
    text += piece;
    options.onToken?.(id, piece);
    if (generated.length === options.maxTokens) break;
    // The next step evaluates this token at position history.length − 1, the last one being
    // contextLength − 1; past that the token is emitted but cannot be evaluated.
    if (history.length > engine.contextLength) {
      stopReason = "context_full";
      break;
    }
    logits = await engine.step(id, history.length - 1);
  }
  const rest = decoder.flush();
  if (rest.length > 0) {
    text += rest;
    options.onToken?.(-1, rest);
  }
  const decodeMs = performance.now() - t1;
  return {
    tokens: generated,
    text,
    stopReason,
    timings: {
      promptTokens: promptIds.length,
      promptMs,
      generatedTokens: generated.length,
      decodeMs,
      promptTokensPerSecond: promptIds.length / (promptMs / 1000),
      decodeTokensPerSecond: generated.length / (decodeMs / 1000),
      msPerToken: generated.length > 0 ? decodeMs / generated.length : 0,
    },
  };
}
