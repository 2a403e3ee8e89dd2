/**
 * The cluster over real loopback sockets: workers as WorkerNodes in this process, the
 * coordinator as the engine's Synchronizer. Relaxed (UDP) and strict (TCP) modes reproduce the
 * single-node golden output at 0% loss; emulated loss drops contributions without stopping.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ClusterCoordinator, WorkerNode, modelSha256, type DeadlineOptions, type SyncMode } from "../../src/cluster/index.js";
import type { WireFormat } from "../../src/net/index.js";
import { Engine, Sampler, argmax, generate } from "../../src/engine/index.js";
import { HaloError } from "../../src/base/index.js";
import { loadStories, maxAbsDiff, readGolden, stories260KPath, testKernels } from "../helpers/golden.js";

const golden = readGolden();
const clusterKey = Buffer.from("a test cluster key of 32 bytes!!");
const sha = modelSha256(stories260KPath());
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function startWorkers(n: number, options: { lossRatio?: number; key?: Buffer; sha?: string } = {}): Promise<WorkerNode[]> {
  const { model } = await loadStories();
  const workers: WorkerNode[] = [];
  for (let i = 0; i < n; i++) {
    const worker = await WorkerNode.start({
      model: { file: model.file, config: model.config, sha256: options.sha ?? sha },
      kernels: testKernels(),
      clusterKey: options.key ?? clusterKey,
      contextLength: 256,
      linkProfile: { lossRatio: options.lossRatio ?? 0, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 },
      seed: 100 + i,
    });
    workers.push(worker);
    cleanups.push(() => worker.close());
  }
  return workers;
}

/** At 0% loss every datagram arrives, so a generous deadline makes the test independent of machine load. */
async function runCluster(mode: SyncMode, nWorkers: number, lossRatio = 0, options: { wire?: WireFormat; deadlines?: DeadlineOptions; rejoinIntervalMs?: number } = {}) {
  const workers = await startWorkers(nWorkers, { lossRatio });
  const { model } = await loadStories();
  const coordinator = await ClusterCoordinator.connect({
    model,
    modelSha256: sha,
    clusterKey,
    workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
    mode,
    wire: options.wire,
    deadlines: options.deadlines ?? (lossRatio === 0 ? { minMs: 2000, hardMs: 5000 } : { minMs: 20, hardMs: 100 }),
    linkProfiles: workers.map(() => ({ lossRatio, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 })),
    rejoinIntervalMs: options.rejoinIntervalMs,
    seed: 7,
  });
  cleanups.push(() => coordinator.close());
  const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: coordinator });
  return { model, engine, coordinator, workers };
}

const greedy = (vocabSize: number) => new Sampler(vocabSize, { temperature: 0, seed: 1 });

// Acceptance 1: N = 1, 2, 3, 5, 8 devices, both modes, exact (f32) wire: a single node's logits within 1e-4 and its tokens.
for (const mode of ["relaxed", "strict"] as const) {
  for (const nWorkers of [0, 1, 2, 4, 7]) {
    test(`${mode}, ${nWorkers + 1} devices at 0% loss, f32 wire: the golden logits within 1e-4 and 60 greedy tokens`, async () => {
      const { model, engine, coordinator } = await runCluster(mode, nWorkers, 0, { wire: "f32" });
      const logits = Float32Array.from((await engine.evaluate(golden.logits.input_ids, 0, "last"))!);
      assert.ok(maxAbsDiff(logits, golden.logits.last) < 1e-4, `max diff ${maxAbsDiff(logits, golden.logits.last)}`);
      const result = await generate(engine, model.tokenizer, greedy(model.config.vocabSize), golden.greedy_prompt.prompt_ids, { maxTokens: 60 });
      assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids);
      assert.equal(coordinator.totals.droppedContributions, 0);
      assert.equal(coordinator.totals.expectedContributions > 0, nWorkers > 0);
      await coordinator.close();
    });
  }
}

for (const [wire, tolerance] of [["q8_0", 0.25], ["f16", 0.01]] as const) {
  test(`relaxed, 3 devices, ${wire} wire: the golden tokens; logits within ${wire}'s rounding (${tolerance})`, async () => {
    const { model, engine, coordinator } = await runCluster("relaxed", 2, 0, { wire });
    const logits = Float32Array.from((await engine.evaluate(golden.logits.input_ids, 0, "last"))!);
    const diff = maxAbsDiff(logits, golden.logits.last);
    assert.ok(diff < tolerance && diff > 1e-6, `max diff ${diff}`);
    const result = await generate(engine, model.tokenizer, greedy(model.config.vocabSize), golden.greedy_prompt.prompt_ids, { maxTokens: 60 });
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids);
    assert.equal(coordinator.wire, wire);
    await coordinator.close();
  });
}

test("relaxed at 5% emulated loss completes, finite, and counts dropped contributions; strict is exact", async () => {
  const relaxed = await runCluster("relaxed", 2, 0.05);
  const sampler = new Sampler(relaxed.model.config.vocabSize, { temperature: 0, seed: 1 });
  const result = await generate(relaxed.engine, relaxed.model.tokenizer, sampler, golden.greedy_prompt.prompt_ids, { maxTokens: 40 });
  assert.equal(result.tokens.length, 40);
  assert.ok(relaxed.coordinator.totals.droppedContributions > 0, "5% loss on ~40 datagrams per token must drop some");
  await relaxed.coordinator.close();
  const strict = await runCluster("strict", 2, 0.05);
  const exact = await generate(strict.engine, strict.model.tokenizer, new Sampler(strict.model.config.vocabSize, { temperature: 0, seed: 1 }), golden.greedy_prompt.prompt_ids, { maxTokens: 40 });
  assert.deepEqual(exact.tokens, golden.greedy_prompt.generated_ids.slice(0, 40));
  await strict.coordinator.close();
});

test("a wrong cluster key and a different model are refused with clear errors", async () => {
  const { model } = await loadStories();
  const [wrongKey] = await startWorkers(1, { key: Buffer.from("another cluster key, 32 bytes!!!") });
  await assert.rejects(
    ClusterCoordinator.connect({ model, modelSha256: sha, clusterKey, workers: [{ host: "127.0.0.1", port: wrongKey!.tcpPort }], mode: "relaxed" }),
    (error: unknown) => error instanceof HaloError && /AUTH|REJECTED/.test(error.code),
  );
  const [otherModel] = await startWorkers(1, { sha: "0".repeat(64) });
  await assert.rejects(
    ClusterCoordinator.connect({ model, modelSha256: sha, clusterKey, workers: [{ host: "127.0.0.1", port: otherModel!.tcpPort }], mode: "relaxed" }),
    (error: unknown) => error instanceof HaloError && error.message.includes(sha) && error.message.includes("0".repeat(64)),
  );
});

test("a worker that dies mid-generation does not stop it: its groups are dropped", async () => {
  const { model, engine, coordinator, workers } = await runCluster("relaxed", 2);
  const tokens: number[] = [];
  const result = await generate(engine, model.tokenizer, new Sampler(model.config.vocabSize, { temperature: 0, seed: 1 }), golden.greedy_prompt.prompt_ids, {
    maxTokens: 30,
    onToken: (id) => {
      tokens.push(id);
      if (tokens.length === 10) void workers[1]!.close();
    },
  });
  assert.equal(result.tokens.length, 30);
  assert.deepEqual(result.tokens.slice(0, 10), golden.greedy_prompt.generated_ids.slice(0, 10));
  assert.deepEqual(coordinator.lostWorkers, [2]);
  await coordinator.close();
});

test("critical contributions are awaited up to the hard deadline; the others only until the soft one", async () => {
  const hardMs = 120;
  const measure = async (critical: boolean) => {
    // Worker 2's datagrams are lost 30% of the time, so some of its contributions never complete.
    const workers = await startWorkers(2);
    const { model } = await loadStories();
    const coordinator = await ClusterCoordinator.connect({
      model, modelSha256: sha, clusterKey, mode: "relaxed",
      workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
      deadlines: { minMs: 5, hardMs, slackMs: 1 },
      linkProfiles: [{ lossRatio: 0, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 }, { lossRatio: 0.3, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 }],
      isCritical: critical ? (device) => device === 2 : undefined,
      seed: 11,
    });
    cleanups.push(() => coordinator.close());
    const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: coordinator });
    await engine.evaluate(golden.greedy_prompt.prompt_ids, 0, "last");
    const before = { ...coordinator.totals };
    let token = golden.greedy_prompt.generated_ids[0]!;
    for (let i = 0; i < 12; i++) token = argmax(await engine.step(token, golden.greedy_prompt.prompt_ids.length + i));
    const dropped = coordinator.totals.droppedContributions - before.droppedContributions;
    const waitedMs = coordinator.totals.syncWaitMs - before.syncWaitMs;
    const datagramsSent = coordinator.totals.datagramsSent - before.datagramsSent;
    await coordinator.close();
    return { dropped, waitedMs, datagramsSent };
  };
  const soft = await measure(false);
  const critical = await measure(true);
  assert.ok(soft.dropped > 3 && critical.dropped > 3, `dropped ${soft.dropped} / ${critical.dropped}`);
  // Each drop of a critical contribution cost the whole hard deadline; a non-critical one far less.
  assert.ok(critical.waitedMs >= critical.dropped * hardMs * 0.9, `critical: ${critical.waitedMs} ms for ${critical.dropped} drops`);
  assert.ok(soft.waitedMs < soft.dropped * hardMs * 0.5, `soft: ${soft.waitedMs} ms for ${soft.dropped} drops`);
  // The critical worker's inputs go out twice (3 copies per chunk instead of 2 across the two
  // workers), and once more for each phase in which it was overdue.
  assert.ok(critical.datagramsSent * 2 >= soft.datagramsSent * 3, `${critical.datagramsSent} datagrams with a critical worker, ${soft.datagramsSent} without`);
});

test("workers without the model file receive their slices from the coordinator, hash-checked and cached; the cluster still matches a single node", async () => {
  const { model } = await loadStories();
  const root = mkdtempSync(join(tmpdir(), "halo-shards-"));
  cleanups.push(async () => rmSync(root, { recursive: true, force: true }));
  const startBare = async (i: number) => {
    const worker = await WorkerNode.start({ kernels: testKernels(), clusterKey, contextLength: 256, shardCacheDir: join(root, `worker-${i}`), seed: 200 + i });
    cleanups.push(() => worker.close());
    return worker;
  };
  const connect = (workers: WorkerNode[], logs: string[]) => ClusterCoordinator.connect({
    model, modelSha256: sha, clusterKey, mode: "strict", wire: "f32", shardCacheDir: join(root, "coordinator"),
    workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })), log: (line) => logs.push(line),
  });
  const workers = [await startBare(1), await startBare(2)];
  const logs: string[] = [];
  const coordinator = await connect(workers, logs);
  assert.deepEqual(workers.map((w) => w.loadedGroups?.fromShard), [true, true]);
  assert.deepEqual(logs.filter((l) => l.includes("received its weights")).length, 2, logs.join("\n"));
  const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: coordinator });
  const logits = Float32Array.from((await engine.evaluate(golden.logits.input_ids, 0, "last"))!);
  assert.ok(maxAbsDiff(logits, golden.logits.last) < 1e-4, `max diff ${maxAbsDiff(logits, golden.logits.last)}`);
  await coordinator.close();
  // New worker processes on the same caches: nothing is sent again.
  const again = [await startBare(1), await startBare(2)];
  const logsAgain: string[] = [];
  const second = await connect(again, logsAgain);
  assert.deepEqual(again.map((w) => w.loadedGroups?.fromShard), [true, true]);
  assert.equal(logsAgain.filter((l) => l.includes("already had its weights")).length, 2, logsAgain.join("\n"));
  const result = await generate(new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: second }), model.tokenizer, greedy(model.config.vocabSize), golden.greedy_prompt.prompt_ids, { maxTokens: 20 });
  assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids.slice(0, 20));
  await second.close();
});

test("copies: 2 sends every datagram twice both ways; the duplicates change nothing", async () => {
  const workers = await startWorkers(2);
  const { model } = await loadStories();
  const coordinator = await ClusterCoordinator.connect({
    model, modelSha256: sha, clusterKey, mode: "relaxed", wire: "f32", copies: 2,
    workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
    deadlines: { minMs: 2000, hardMs: 5000 },
  });
  cleanups.push(() => coordinator.close());
  const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: coordinator });
  await engine.evaluate(golden.logits.input_ids, 0, "last");
  const sentBefore = coordinator.totals.datagramsSent;
  const workerSentBefore = workers.map((w) => w.counters.datagramsSent);
  const logits = await engine.step(golden.greedy_prompt.generated_ids[0]!, golden.logits.input_ids.length);
  assert.ok(logits.every(Number.isFinite));
  // One token: 2 workers × 2 phases × 5 layers × 1 chunk, twice.
  assert.equal(coordinator.totals.datagramsSent - sentBefore, 2 * 2 * 5 * 2);
  assert.deepEqual(workers.map((w, i) => w.counters.datagramsSent - workerSentBefore[i]!), [20, 20]);
  assert.equal(coordinator.totals.droppedContributions, 0);
  await assert.rejects(ClusterCoordinator.connect({ model, modelSha256: sha, clusterKey, mode: "relaxed", copies: 5, workers: [] }), /copies must be an integer from 1 to 4, got 5/);
});
