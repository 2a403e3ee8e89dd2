/**
 * The device profiler on stories260K: sane figures with the real clock, exact arithmetic (median,
 * groups per run, slowdown, read throughput) with a clock that advances a fixed step per reading,
 * memory from the OS and a cgroup, and the shapes a tensor type cannot be split into.
 */
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { test, type TestContext } from "node:test";
import type { Clock } from "../../src/base/index.js";
import {
  createSyntheticGroups, freeMemoryBytes, kernelThreads, measureDeviceProfile, tensorTypesOfLayer, uniformTypes,
} from "../../src/cluster/index.js";
import { createReferenceKernels } from "../../src/kernels/index.js";
import { loadStories, stories260KPath, testKernels } from "../helpers/golden.js";

/** A clock whose every reading is `stepMs` after the previous one: each timed span is exactly one step. */
function steppingClock(stepMs: number): Clock {
  let now = 0;
  return {
    now: () => (now += stepMs),
    setTimer: () => assert.fail("the profiler sets no timers"),
    sleepUntil: () => assert.fail("the profiler does not sleep"),
  };
}

test("stories260K: every figure positive and finite, the model's F32 first, Q8_0 and Q4_0 too; an FFN group and an attention group within 10× of each other", async (t: TestContext) => {
  t.plan(9);
  const { model } = await loadStories();
  const profile = await measureDeviceProfile({ config: model.config, tensorTypes: tensorTypesOfLayer(model.weights.layers[0]!), kernels: [testKernels()], modelPath: stories260KPath() });
  model.file.close();
  const figures = profile.compute.flatMap((s) => [s.attentionGroupMs, s.ffnGroupMs]);
  t.assert.ok(figures.every((ms) => Number.isFinite(ms) && ms > 0), JSON.stringify(profile.compute));
  t.assert.deepEqual(profile.compute.map((s) => `${s.tensorType}/${s.threads}`), ["F32/1", "Q8_0/1", "Q4_0/1"]);
  t.assert.equal(profile.attentionGroupMs, profile.compute[0]!.attentionGroupMs);
  t.assert.equal(profile.ffnGroupMs, profile.compute[0]!.ffnGroupMs);
  // A decode token through one group is microseconds on this model, not seconds.
  t.assert.ok(figures.every((ms) => ms < 50), JSON.stringify(profile.compute));
  // An FFN block has twice an attention group's multiply-adds here (3·32·64 vs (16+8+8+16)·64)
  // while attention makes more kernel calls (four products, RoPE, the cache, attention): the two
  // stay within a small factor; 10× either way would mean a phase timed the wrong number of groups.
  const ratio = profile.ffnGroupMs / profile.attentionGroupMs;
  t.assert.ok(ratio > 0.1 && ratio < 10, `ffn/attention = ${ratio}`);
  t.assert.ok(profile.freeMemoryBytes > 0 && Number.isSafeInteger(profile.freeMemoryBytes));
  t.assert.equal(profile.memoryBudgetBytes, profile.freeMemoryBytes);
  t.assert.ok(profile.readBytesPerSecond > 1e6 && Number.isFinite(profile.readBytesPerSecond), String(profile.readBytesPerSecond));
});

test("with a clock stepping 2 ms per reading: each figure is 2 ms per timed run, divided by the groups in it and times the slowdown", async (t: TestContext) => {
  t.plan(6);
  const { model } = await loadStories();
  const base = {
    config: model.config, tensorTypes: tensorTypesOfLayer(model.weights.layers[0]!), modelPath: stories260KPath(),
    kernels: [createReferenceKernels(), createReferenceKernels()], freeMemory: () => 5e9,
  };
  const plain = await measureDeviceProfile({ ...base, clock: steppingClock(2) });
  const slowed = await measureDeviceProfile({ ...base, clock: steppingClock(2), slowdown: 3, memoryBudgetBytes: 1e9 });
  model.file.close();
  // Two kernel sets on one thread time the same thing: kept once. Q8_0 and Q4_0 blocks of 32 need
  // two attention groups (16 columns of wo each), so their attention run is divided by 2.
  t.assert.deepEqual(plain.compute, [
    { tensorType: "F32", threads: 1, attentionGroupMs: 2, ffnGroupMs: 2 },
    { tensorType: "Q8_0", threads: 1, attentionGroupMs: 1, ffnGroupMs: 2 },
    { tensorType: "Q4_0", threads: 1, attentionGroupMs: 1, ffnGroupMs: 2 },
  ]);
  t.assert.deepEqual(slowed.compute.map((s) => [s.attentionGroupMs, s.ffnGroupMs]), [[6, 6], [3, 6], [3, 6]]);
  t.assert.deepEqual([plain.attentionGroupMs, plain.ffnGroupMs, slowed.attentionGroupMs, slowed.ffnGroupMs], [2, 2, 6, 6]);
  // The whole file (under 64 MiB) read in one 2 ms step.
  t.assert.equal(plain.readBytesPerSecond, statSync(stories260KPath()).size * 500);
  t.assert.deepEqual([plain.freeMemoryBytes, plain.memoryBudgetBytes, slowed.memoryBudgetBytes], [5e9, 5e9, 1e9]);
  t.assert.equal(kernelThreads(createReferenceKernels()), 1);
});

test("without a model file the read throughput is 0; a slowdown below 1 is refused", async (t: TestContext) => {
  t.plan(2);
  const { model } = await loadStories();
  const options = { config: model.config, tensorTypes: tensorTypesOfLayer(model.weights.layers[0]!), kernels: [testKernels()], extraTypes: [], clock: steppingClock(2) };
  const profile = await measureDeviceProfile(options);
  model.file.close();
  t.assert.equal(profile.readBytesPerSecond, 0);
  await t.assert.rejects(measureDeviceProfile({ ...options, slowdown: 0.5 }), /slowdown must be a number ≥ 1, got 0.5/);
});

test("free memory: the OS's, or a cgroup's limit minus its usage when lower; 'max', absurd and missing files change nothing", (t: TestContext) => {
  t.plan(5);
  const files = (entries: Record<string, string>) => (path: string): string | undefined => entries[path];
  t.assert.equal(freeMemoryBytes({ osFreeBytes: 8e9, readText: files({}) }), 8e9);
  t.assert.equal(freeMemoryBytes({ osFreeBytes: 8e9, readText: files({ "/sys/fs/cgroup/memory.max": "max\n", "/sys/fs/cgroup/memory.current": "100\n" }) }), 8e9);
  t.assert.equal(freeMemoryBytes({ osFreeBytes: 8e9, readText: files({ "/sys/fs/cgroup/memory.max": "2147483648\n", "/sys/fs/cgroup/memory.current": "1073741824\n" }) }), 2 ** 30);
  // cgroup v1 writes "no limit" as a huge page-aligned number.
  t.assert.equal(freeMemoryBytes({ osFreeBytes: 8e9, readText: files({ "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n" }) }), 8e9);
  t.assert.equal(freeMemoryBytes({ osFreeBytes: 8e9, readText: files({ "/sys/fs/cgroup/memory/memory.limit_in_bytes": "1000\n", "/sys/fs/cgroup/memory/memory.usage_in_bytes": "4000\n" }) }), 0);
});

test("a type is timed only on a shape it splits into whole blocks", async (t: TestContext) => {
  t.plan(4);
  const { model } = await loadStories();
  const config = model.config;
  model.file.close();
  t.assert.equal(createSyntheticGroups(config, 32, uniformTypes("F32"))?.nAttentionGroups, 1);
  t.assert.equal(createSyntheticGroups(config, 32, uniformTypes("Q8_0"))?.nAttentionGroups, 2);
  // FFN blocks of 16 neurons are half a Q8_0 block of ffn_down's columns; dim 48 is not whole blocks.
  t.assert.equal(createSyntheticGroups(config, 16, uniformTypes("Q8_0")), undefined);
  t.assert.equal(createSyntheticGroups({ ...config, dim: 48 }, 32, uniformTypes("Q4_0")), undefined);
});
