import assert from "node:assert/strict";
import { test } from "node:test";
import { HaloError } from "../../src/base/errors.js";
import { Sampler, argmax, resolveSampling } from "../../src/engine/index.js";

const logitsOf = (probs: number[]): Float32Array => Float32Array.from(probs.map(Math.log));

test("temperature 0 is greedy, and top-k 1 is greedy at any temperature", () => {
  const logits = Float32Array.from([0.1, 2.5, -1, 2.4]);
  assert.equal(new Sampler(4, { temperature: 0, seed: 3 }).sample(logits, []), 1);
  const topOne = new Sampler(4, { temperature: 5, topK: 1, seed: 3 });
  for (let i = 0; i < 50; i++) assert.equal(topOne.sample(logits, []), 1);
  assert.equal(argmax(logits), 1);
});

test("the same seed gives the same draws and another seed different ones", () => {
  const logits = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i));
  const draw = (seed: number): number[] => {
    const sampler = new Sampler(64, { temperature: 1.5, topK: 0, topP: 1, minP: 0, seed });
    return Array.from({ length: 200 }, () => sampler.sample(logits, []));
  };
  assert.deepEqual(draw(42), draw(42));
  assert.notDeepEqual(draw(42), draw(43));
});

test("without truncation the draws follow softmax(logits / T)", () => {
  const probs = [0.5, 0.25, 0.125, 0.125];
  const sampler = new Sampler(4, { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 11 });
  const counts = [0, 0, 0, 0];
  const n = 40_000;
  for (let i = 0; i < n; i++) counts[sampler.sample(logitsOf(probs), [])]!++;
  counts.forEach((c, i) => assert.ok(Math.abs(c / n - probs[i]!) < 0.01, `token ${i}: ${c / n} vs ${probs[i]}`));
  // At T = 2 the distribution flattens to ∝ √p.
  const hot = new Sampler(4, { temperature: 2, topK: 0, topP: 1, minP: 0, seed: 12 });
  const hotCounts = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) hotCounts[hot.sample(logitsOf(probs), [])]!++;
  const roots = probs.map(Math.sqrt);
  const total = roots.reduce((a, b) => a + b, 0);
  hotCounts.forEach((c, i) => assert.ok(Math.abs(c / n - roots[i]! / total) < 0.01));
});

test("top-p keeps the smallest prefix reaching p, min-p drops tokens under minP × the top probability", () => {
  const logits = logitsOf([0.6, 0.3, 0.1]);
  const seen = (options: ConstructorParameters<typeof Sampler>[1]): Set<number> => {
    const sampler = new Sampler(3, { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 5, ...options });
    return new Set(Array.from({ length: 500 }, () => sampler.sample(logits, [])));
  };
  assert.deepEqual(seen({ topP: 0.5 }), new Set([0]));
  assert.deepEqual(seen({ topP: 0.85 }), new Set([0, 1]));
  assert.deepEqual(seen({ topP: 1 }), new Set([0, 1, 2]));
  assert.deepEqual(seen({ minP: 0.6 }), new Set([0]));
  assert.deepEqual(seen({ minP: 0.4 }), new Set([0, 1]));
  assert.deepEqual(seen({ topK: 2 }), new Set([0, 1]));
});

test("the repetition penalty lowers recently seen tokens", () => {
  const logits = Float32Array.from([2, 1.9, -1]);
  assert.equal(new Sampler(3, { temperature: 0, repetitionPenalty: 1.5, seed: 1 }).sample(logits, [0]), 1);
  assert.equal(new Sampler(3, { temperature: 0, repetitionPenalty: 1, seed: 1 }).sample(logits, [0]), 0);
  // A negative logit is multiplied, so it falls further.
  const negative = Float32Array.from([-1, -1.2]);
  assert.equal(new Sampler(2, { temperature: 0, repetitionPenalty: 1.5, seed: 1 }).sample(negative, [0]), 1);
  // Only the last repeatLastN tokens count.
  assert.equal(new Sampler(3, { temperature: 0, repetitionPenalty: 1.5, repeatLastN: 1, seed: 1 }).sample(logits, [0, 2]), 0);
});

test("invalid sampling options are rejected with a usage error naming the option", () => {
  const cases: Array<[Parameters<typeof resolveSampling>[0], RegExp]> = [
    [{ temperature: -1 }, /temperature/],
    [{ temperature: Number.NaN }, /temperature/],
    [{ topK: 1.5 }, /top-k/],
    [{ topP: 0 }, /top-p/],
    [{ topP: 2 }, /top-p/],
    [{ minP: 1 }, /min-p/],
    [{ repetitionPenalty: 0 }, /repetition penalty/],
    [{ seed: -1 }, /seed/],
    [{ seed: 2 ** 32 }, /seed/],
  ];
  for (const [options, pattern] of cases) {
    assert.throws(() => resolveSampling(options), (error: unknown) => error instanceof HaloError && error.code === "HALO_ERR_USAGE" && pattern.test(error.message));
  }
});
