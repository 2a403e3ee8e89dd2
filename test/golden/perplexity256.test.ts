/** Perplexity of stories260K at window 256 by the golden protocol (split per window so the runner parallelises them). */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { perplexity } from "../../src/engine/index.js";
import { loadStories, readGolden } from "../helpers/golden.js";
import { sharedModelsDir } from "../helpers/paths.js";

test("perplexity at window 256 matches the reference within 0.005", async () => {
  const golden = readGolden();
  const reference = golden.perplexity_reference.results.find((r) => r.window === 256)!;
  const { model, engine } = await loadStories({ maxBatch: 256 });
  const text = readFileSync(join(sharedModelsDir(), "corpora", "tinystories_valid_excerpt.txt"), "utf8").slice(0, 100_000);
  const tokens = model.tokenizer.encode(text, { addBos: false });
  assert.equal(tokens.length, golden.perplexity_reference.n_tokens);
  const result = await perplexity(engine, tokens, model.tokenizer.bosId, 256);
  assert.equal(result.tokensScored, reference.tokens_scored);
  assert.ok(Math.abs(result.perplexity - reference.ppl) < 0.005, `perplexity ${result.perplexity} vs ${reference.ppl}`);
  assert.ok(Math.abs(result.meanNll - reference.mean_nll) < 1e-4, `mean NLL ${result.meanNll} vs ${reference.mean_nll}`);
  model.file.close();
});
