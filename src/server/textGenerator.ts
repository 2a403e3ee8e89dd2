/**
 * The server's one way to the model: the Generator facade of STYLE.md. It turns messages or a
 * prompt into token ids, runs one generation with the request's sampling, cuts stop strings, and
 * exposes a read-only view of the cluster (when there is one) for the metrics. It knows nothing
 * of HTTP; `halo chat` uses it too.
 */
import { Sampler, generate, type Engine, type SamplingOptions } from "../engine/index.js";
import type { ClusterCoordinator } from "../cluster/index.js";
import type { ChatMessage, ChatTemplate, Tokenizer } from "../model/index.js";
import { StopMatcher } from "./stopStrings.js";

/** What the server reads of a cluster coordinator: totals, links, devices, and which device computes each group. */
export type ClusterView = Pick<ClusterCoordinator, "nDevices" | "totals" | "lostWorkers" | "linkStats" | "profiles" | "placement" | "liveReplans">;

/** How many neuron groups the model splits into, per layer and phase (the placement's shape). */
export interface GroupShape {
  nLayers: number;
  nAttentionGroups: number;
  nFfnGroups: number;
}

export interface TextGeneratorOptions {
  /** The id clients name the model by (GET /v1/models). */
  modelId: string;
  engine: Engine;
  tokenizer: Tokenizer;
  chatTemplate: ChatTemplate;
  /** Sampling for whatever a request leaves out (the serve command's flags); its seed is ignored. */
  sampling: SamplingOptions;
  cluster?: ClusterView;
}

export interface GenerationParams {
  maxTokens: number;
  temperature?: number;
  topP?: number;
  /** Defaults to a random seed. */
  seed?: number;
  stop?: readonly string[];
  ignoreEos?: boolean;
}

/** OpenAI's finish reasons, plus "cancelled" for a generation aborted by its caller. */
export type FinishReason = "stop" | "length" | "cancelled";

export interface GenerationHooks {
  signal?: AbortSignal;
  /** Text ready to show (stop strings held back until decided, then cut). */
  onText?: (delta: string) => void;
  /** After each generated token: its 1-based index and the ms since the previous one (or since the start). */
  onToken?: (index: number, ms: number) => void;
}

export interface GenerationOutcome {
  text: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: FinishReason;
  /** Prefill time, and mean decode ms per token (0 with fewer than two tokens). */
  promptMs: number;
  msPerToken: number;
}

export class TextGenerator {
  readonly modelId: string;
  readonly cluster: ClusterView | undefined;
  readonly #options: TextGeneratorOptions;

  constructor(options: TextGeneratorOptions) {
    this.#options = options;
    this.modelId = options.modelId;
    this.cluster = options.cluster;
  }

  /** Tokens in the KV cache: prompt and completion together. */
  get contextLength(): number {
    return this.#options.engine.contextLength;
  }

  get groupShape(): GroupShape {
    const { config, layout } = this.#options.engine;
    return { nLayers: config.nLayers, nAttentionGroups: layout.nAttentionGroups, nFfnGroups: layout.nFfnGroups };
  }

  get chatTemplate(): ChatTemplate {
    return this.#options.chatTemplate;
  }

  encodeChat(messages: readonly ChatMessage[]): number[] {
    return this.#options.chatTemplate.encode(messages, this.#options.tokenizer);
  }

  encodePrompt(text: string): number[] {
    return this.#options.tokenizer.encode(text, { addBos: true });
  }

  /** Runs one generation. Not reentrant: the engine holds one sequence (the caller queues). */
  async generate(promptIds: readonly number[], params: GenerationParams, hooks: GenerationHooks = {}): Promise<GenerationOutcome> {
    const { engine, tokenizer, sampling } = this.#options;
    const sampler = new Sampler(tokenizer.vocabSize, { ...sampling, ...defined({ temperature: params.temperature, topP: params.topP }), seed: params.seed });
    const matcher = new StopMatcher(params.stop ?? []);
    // A stop string ends generation through the same abort path as a gone client.
    const stopped = new AbortController();
    const signal = hooks.signal === undefined ? stopped.signal : AbortSignal.any([hooks.signal, stopped.signal]);
    let text = "";
    let nTokens = 0;
    let lastMs = performance.now();
    const show = (delta: string): void => {
      if (delta.length === 0) return;
      text += delta;
      hooks.onText?.(delta);
    };
    const result = await generate(engine, tokenizer, sampler, promptIds, {
      maxTokens: params.maxTokens,
      ignoreEos: params.ignoreEos,
      signal,
      yieldToEventLoop: true,
      onToken: (id, piece) => {
        if (id >= 0) {
          const now = performance.now();
          hooks.onToken?.(++nTokens, now - lastMs);
          lastMs = now;
        }
        if (matcher.stopped) return;
        const { emit, stopped: reached } = matcher.push(piece);
        show(emit);
        if (reached) stopped.abort();
      },
    });
    show(matcher.flush());
    const finishReason: FinishReason = matcher.stopped || result.stopReason === "eos" ? "stop" : result.stopReason === "aborted" ? "cancelled" : "length";
    const t = result.timings;
    return { text, promptTokens: promptIds.length, completionTokens: result.tokens.length, finishReason, promptMs: t.promptMs, msPerToken: t.msPerToken };
  }
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
