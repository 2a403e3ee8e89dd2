/** stories260K against the independent float64 reference: logits, greedy tokens, text. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Sampler, argmax, generate } from "../../src/engine/index.js";
import { loadStories, maxAbsDiff, readGolden } from "../helpers/golden.js";

const golden = readGolden();
const LOGIT_TOLERANCE = 1e-4;

test("logits at position 0 and at the last prompt position are within 1e-4 of the reference", async () => {
  const { model, engine } = await loadStories();
  const ids = golden.logits.input_ids;
  assert.deepEqual(model.tokenizer.encode("Once upon a time"), ids);
  const pos0 = Float32Array.from((await engine.evaluate([ids[0]!], 0, "last"))!);
  const last = Float32Array.from((await engine.evaluate(ids, 0, "last"))!);
  assert.ok(maxAbsDiff(pos0, golden.logits.pos0) < LOGIT_TOLERANCE, `pos0 max diff ${maxAbsDiff(pos0, golden.logits.pos0)}`);
  assert.ok(maxAbsDiff(last, golden.logits.last) < LOGIT_TOLERANCE, `last max diff ${maxAbsDiff(last, golden.logits.last)}`);
  const top5 = [...last.keys()].sort((a, b) => last[b]! - last[a]!).slice(0, 5);
  assert.deepEqual(top5, golden.logits.top5_last.map(([id]) => id));
  model.file.close();
});

test("batched prefill gives the same logits as token-by-token decoding", async () => {
  const { model, engine } = await loadStories({ maxBatch: 3 });
  const ids = golden.greedy_prompt.prompt_ids;
  const batched = Float32Array.from((await engine.evaluate(ids, 0, "last"))!);
  let stepped = await engine.evaluate([ids[0]!], 0, "last");
  for (let p = 1; p < ids.length; p++) stepped = await engine.step(ids[p]!, p);
  assert.ok(maxAbsDiff(batched, stepped!) < 1e-5);
  model.file.close();
});

test("greedy decoding from BOS reproduces all 256 reference tokens and the text", async () => {
  const { model, engine } = await loadStories();
  const sampler = new Sampler(model.config.vocabSize, { temperature: 0, seed: 1 });
  const result = await generate(engine, model.tokenizer, sampler, [model.tokenizer.bosId], { maxTokens: 256 });
  assert.deepEqual(result.tokens, golden.greedy_from_bos.generated_ids);
  assert.equal(result.text, golden.greedy_from_bos.text);
  assert.equal(result.stopReason, "max_tokens");
  model.file.close();
});

test("greedy decoding after the prompt 'Once upon a time' reproduces the 60 reference tokens", async () => {
  const { model, engine } = await loadStories();
  const promptIds = model.tokenizer.encode(golden.greedy_prompt.prompt);
  assert.deepEqual(promptIds, golden.greedy_prompt.prompt_ids);
  const sampler = new Sampler(model.config.vocabSize, { temperature: 0, seed: 1 });
  const result = await generate(engine, model.tokenizer, sampler, promptIds, { maxTokens: golden.greedy_prompt.generated_ids.length });
  assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids);
  assert.equal(golden.greedy_prompt.prompt + result.text, golden.greedy_prompt.text_including_prompt);
  model.file.close();
});

test("the argmax of the last prompt logits is the first generated reference token", async () => {
  const { model, engine } = await loadStories();
  const logits = (await engine.evaluate(golden.greedy_prompt.prompt_ids, 0, "last"))!;
  assert.equal(argmax(logits), golden.greedy_prompt.generated_ids[0]);
  model.file.close();
});
