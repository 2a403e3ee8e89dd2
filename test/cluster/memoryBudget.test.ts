/**
 * Workers under a memory budget in a real loopback cluster: streaming part of their groups from
 * the model file, from a shard they cut from it, or from the shard the coordinator sent, they
 * give the single-node golden
 * output, count their exposed and hidden I/O, and refuse a plan their budget cannot hold with
 * the minimum in the error.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ClusterCoordinator, WorkerNode, modelSha256, type SyncMode } from "../../src/cluster/index.js";
import { Engine, Sampler, generate } from "../../src/engine/index.js";
import { HaloError } from "../../src/base/index.js";
import { loadStories, maxAbsDiff, readGolden, stories260KPath, testKernels } from "../helpers/golden.js";

const golden = readGolden();
const clusterKey = Buffer.from("a test cluster key of 32 bytes!!");
const sha = modelSha256(stories260KPath());
const root = mkdtempSync(join(tmpdir(), "halo-budget-"));
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  rmSync(root, { recursive: true, force: true });
});

/** Each of three workers holds a quarter of stories260K's ~0.9 MB of layer weights; 100 kB keeps under half of that resident. */
const BUDGET_BYTES = 100_000;

interface BudgetedWorker {
  bytes: number;
  /** "model" and "shard" hold the model file and stream from it or from a shard they cut; "received" streams the coordinator's shard. */
  source: "model" | "shard" | "received";
}

async function startWorkers(budgets: readonly BudgetedWorker[], logs: string[]): Promise<WorkerNode[]> {
  const { model } = await loadStories();
  const workers: WorkerNode[] = [];
  for (const [i, { bytes, source }] of budgets.entries()) {
    const worker = await WorkerNode.start({
      model: source === "received" ? undefined : { file: model.file, config: model.config, sha256: sha },
      streamFrom: source === "received" ? undefined : source,
      kernels: testKernels(),
      clusterKey,
      contextLength: 256,
      shardCacheDir: join(root, `worker-${i}`),
      memoryBudgetBytes: bytes,
      seed: 300 + i,
      log: (line) => logs.push(line),
    });
    workers.push(worker);
    cleanups.push(() => worker.close());
  }
  return workers;
}

for (const mode of ["relaxed", "strict"] as const satisfies readonly SyncMode[]) {
  test(`${mode}: three workers streaming under a ${BUDGET_BYTES}-byte budget (from the model file, a shard they cut, the shard received) give the golden logits and tokens`, async () => {
    const logs: string[] = [];
    const workers = await startWorkers((["model", "shard", "received"] as const).map((source) => ({ bytes: BUDGET_BYTES, source })), logs);
    const { model } = await loadStories();
    const coordinator = await ClusterCoordinator.connect({
      model, modelSha256: sha, clusterKey, mode, wire: "f32",
      workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
      deadlines: { minMs: 2000, hardMs: 5000 },
      seed: 7,
    });
    cleanups.push(() => coordinator.close());
    const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: coordinator });
    const logits = Float32Array.from((await engine.evaluate(golden.logits.input_ids, 0, "last"))!);
    assert.ok(maxAbsDiff(logits, golden.logits.last) < 1e-4, `max diff ${maxAbsDiff(logits, golden.logits.last)}`);
    const result = await generate(engine, model.tokenizer, new Sampler(model.config.vocabSize, { temperature: 0, seed: 1 }), golden.greedy_prompt.prompt_ids, { maxTokens: 40 });
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids.slice(0, 40));
    assert.equal(coordinator.totals.droppedContributions, 0);
    for (const worker of workers) {
      const held = worker.loadedGroups!;
      assert.ok(held.sizeBytes <= BUDGET_BYTES, `holds ${held.sizeBytes} bytes`);
      const stats = worker.loaderStats()!;
      assert.ok(stats.passes >= 40, `${stats.passes} passes`);
      assert.ok(stats.reads > 0 && stats.exposedIoMs + stats.hiddenIoMs > 0);
    }
    assert.equal(logs.filter((line) => /memory budget: .* resident; streams .* per token from .* in \d+ reads/.test(line)).length, 3, logs.join("\n"));
    await coordinator.close();
  });
}

test("a budget too small for the plan is refused with HALO_ERR_MEMORY_BUDGET and the minimum", async () => {
  const logs: string[] = [];
  const [worker] = await startWorkers([{ bytes: 4096, source: "model" }], logs);
  const { model } = await loadStories();
  await assert.rejects(
    ClusterCoordinator.connect({ model, modelSha256: sha, clusterKey, mode: "relaxed", workers: [{ host: "127.0.0.1", port: worker!.tcpPort }] }),
    (error: unknown) => error instanceof HaloError && /HALO_ERR_MEMORY_BUDGET/.test(error.message) && /at least [\d.]+ MiB \(\d+ bytes\)/.test(error.message),
  );
});
