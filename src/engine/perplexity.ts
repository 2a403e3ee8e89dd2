/**
 * Perplexity by the protocol of golden-reference.json: the token stream (encoded without BOS)
 * is cut into consecutive non-overlapping windows of L tokens (the remainder is dropped); each
 * window is scored with input [BOS] + window[:−1] against targets window, positions restarting
 * at 0; the result is exp(mean NLL) over every scored token.
 */
import { HaloError } from "../base/index.js";
import type { Engine } from "./engine.js";

export interface PerplexityResult {
  window: number;
  nWindows: number;
  tokensScored: number;
  meanNll: number;
  perplexity: number;
}

export async function perplexity(engine: Engine, tokens: readonly number[], bosId: number, window: number, onWindow?: (done: number, total: number) => void): Promise<PerplexityResult> {
  if (!Number.isInteger(window) || window < 2) throw new HaloError("HALO_ERR_USAGE", `window must be an integer ≥ 2, got ${window}`);
  if (window > engine.contextLength) throw new HaloError("HALO_ERR_CONTEXT", `window ${window} exceeds the context length ${engine.contextLength}`);
  const nWindows = Math.floor(tokens.length / window);
  if (nWindows === 0) throw new HaloError("HALO_ERR_USAGE", `the text has ${tokens.length} tokens, fewer than one window of ${window}`);
  const vocabSize = engine.config.vocabSize;
  let nllSum = 0;
  for (let w = 0; w < nWindows; w++) {
    const targets = tokens.slice(w * window, (w + 1) * window);
    const input = [bosId, ...targets.slice(0, -1)];
    await engine.evaluate(input, 0, "all", (logits, batchStart, nTokens) => {
      for (let t = 0; t < nTokens; t++) {
        const base = t * vocabSize;
        let max = -Infinity;
        for (let i = 0; i < vocabSize; i++) if (logits[base + i]! > max) max = logits[base + i]!;
        let sum = 0;
        for (let i = 0; i < vocabSize; i++) sum += Math.exp(logits[base + i]! - max);
        nllSum += Math.log(sum) + max - logits[base + targets[batchStart + t]!]!;
      }
    });
    onWindow?.(w + 1, nWindows);
  }
  const tokensScored = nWindows * window;
  const meanNll = nllSum / tokensScored;
  return { window, nWindows, tokensScored, meanNll, perplexity: Math.exp(meanNll) };
}
