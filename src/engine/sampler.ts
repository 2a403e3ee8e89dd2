/**
 * Token sampling: repetition penalty, then greedy (temperature 0) or top-k → top-p → min-p →
 * temperature → a seeded draw. Same seed and logits give the same tokens.
 */
import { HaloError, SeededRandom } from "../base/index.js";

export interface SamplingOptions {
  /** 0 means greedy. Defaults to 0.8. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 disables. Defaults to 40. */
  topK?: number;
  /** Keep the smallest set whose probability reaches p; 1 disables. Defaults to 0.95. */
  topP?: number;
  /** Drop tokens below minP × the top probability; 0 disables. Defaults to 0.05. */
  minP?: number;
  /** Divides positive (multiplies negative) logits of recent tokens; 1 disables. Defaults to 1. */
  repetitionPenalty?: number;
  /** How many recent tokens the penalty looks at. Defaults to 64. */
  repeatLastN?: number;
  /** Seed of the draw. Defaults to a random seed. */
  seed?: number;
}

export type ResolvedSamplingOptions = Required<SamplingOptions>;

export const DEFAULT_SAMPLING: Omit<ResolvedSamplingOptions, "seed"> = { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, repetitionPenalty: 1, repeatLastN: 64 };

export function resolveSampling(options: SamplingOptions): ResolvedSamplingOptions {
  const resolved = { ...DEFAULT_SAMPLING, seed: Math.floor(Math.random() * 2 ** 31), ...stripUndefined(options) };
  const check = (ok: boolean, message: string): void => {
    if (!ok) throw new HaloError("HALO_ERR_USAGE", message);
  };
  check(Number.isFinite(resolved.temperature) && resolved.temperature >= 0, `temperature must be a finite number ≥ 0, got ${resolved.temperature}`);
  check(Number.isInteger(resolved.topK) && resolved.topK >= 0, `top-k must be an integer ≥ 0, got ${resolved.topK}`);
  check(Number.isFinite(resolved.topP) && resolved.topP > 0 && resolved.topP <= 1, `top-p must be in (0, 1], got ${resolved.topP}`);
  check(Number.isFinite(resolved.minP) && resolved.minP >= 0 && resolved.minP < 1, `min-p must be in [0, 1), got ${resolved.minP}`);
  check(Number.isFinite(resolved.repetitionPenalty) && resolved.repetitionPenalty > 0, `repetition penalty must be > 0, got ${resolved.repetitionPenalty}`);
  check(Number.isInteger(resolved.repeatLastN) && resolved.repeatLastN >= 0, `repeat-last-n must be an integer ≥ 0, got ${resolved.repeatLastN}`);
  check(Number.isInteger(resolved.seed) && resolved.seed >= 0 && resolved.seed < 2 ** 32, `seed must be an integer in [0, 2^32), got ${resolved.seed}`);
  return resolved;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

export class Sampler {
  readonly options: ResolvedSamplingOptions;
  private readonly random: SeededRandom;
  private readonly penalized: Float32Array;
  /** (vocabSize) candidate ids, best first in [0, kept) */
  private readonly order: Int32Array;
  private readonly probs: Float64Array;

  constructor(vocabSize: number, options: SamplingOptions = {}) {
    this.options = resolveSampling(options);
    this.random = new SeededRandom(this.options.seed);
    this.penalized = new Float32Array(vocabSize);
    this.order = new Int32Array(vocabSize);
    this.probs = new Float64Array(vocabSize);
  }

  /** Picks the next token from `logits` given the tokens so far (for the repetition penalty). */
  sample(logits: Float32Array, history: readonly number[]): number {
    const { temperature, topK, topP, minP, repetitionPenalty, repeatLastN } = this.options;
    let scores = logits;
    if (repetitionPenalty !== 1 && repeatLastN > 0) {
      scores = this.penalized;
      scores.set(logits);
      const seen = new Set(history.slice(-repeatLastN));
      for (const id of seen) {
        if (id < 0 || id >= scores.length) continue;
        scores[id] = scores[id]! > 0 ? scores[id]! / repetitionPenalty : scores[id]! * repetitionPenalty;
      }
    }
    if (temperature === 0) return argmax(scores);

    // Candidates: the top k by logit (a bounded heap, no full sort), then sorted best first.
    const n = scores.length;
    let kept = topK > 0 ? Math.min(topK, n) : n;
    const sorted = this.topCandidates(scores, kept);

    // Softmax of the kept logits (before temperature, as llama.cpp's chain does), then top-p and min-p.
    const probs = this.probs;
    const maxLogit = scores[sorted[0]!]!;
    let sum = 0;
    for (let i = 0; i < kept; i++) {
      probs[i] = Math.exp(scores[sorted[i]!]! - maxLogit);
      sum += probs[i]!;
    }
    let cumulative = 0;
    for (let i = 0; i < kept; i++) {
      cumulative += probs[i]! / sum;
      if (cumulative >= topP) {
        kept = i + 1;
        break;
      }
    }
    if (minP > 0) {
      const threshold = (probs[0]! / sum) * minP;
      let i = 1;
      while (i < kept && probs[i]! / sum >= threshold) i++;
      kept = i;
    }

    // Temperature over the survivors, then a seeded draw.
    let total = 0;
    for (let i = 0; i < kept; i++) {
      probs[i] = Math.exp((scores[sorted[i]!]! - maxLogit) / temperature);
      total += probs[i]!;
    }
    let r = this.random.nextFloat() * total;
    for (let i = 0; i < kept; i++) {
      r -= probs[i]!;
      if (r < 0) return sorted[i]!;
    }
    return sorted[kept - 1]!;
  }

  /** The k highest-scoring ids, best first (ties: lower id first), in this.order[0..k). */
  private topCandidates(scores: Float32Array, k: number): Int32Array {
    const heap = this.order;
    const better = (a: number, b: number): boolean => scores[a]! > scores[b]! || (scores[a] === scores[b] && a < b);
    // A min-heap (by `better`) of the best k seen so far.
    const siftDown = (i: number, size: number): void => {
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let worst = i;
        if (l < size && better(heap[worst]!, heap[l]!)) worst = l;
        if (r < size && better(heap[worst]!, heap[r]!)) worst = r;
        if (worst === i) return;
        const t = heap[i]!;
        heap[i] = heap[worst]!;
        heap[worst] = t;
        i = worst;
      }
    };
    for (let id = 0; id < k; id++) heap[id] = id;
    for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(i, k);
    for (let id = k; id < scores.length; id++) {
      if (better(id, heap[0]!)) {
        heap[0] = id;
        siftDown(0, k);
      }
    }
    // Heap sort in place: repeatedly move the worst to the end, leaving best first.
    for (let size = k - 1; size > 0; size--) {
      const t = heap[0]!;
      heap[0] = heap[size]!;
      heap[size] = t;
      siftDown(0, size);
    }
    return heap;
  }
}
