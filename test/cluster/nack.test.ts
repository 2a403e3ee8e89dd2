/**
 * NACKs end to end: on a TinyLlama-width model (dim 2048, so every Q8_0 vector takes two
 * datagrams) at 10% emulated loss both ways, workers ask for lost input chunks and the
 * coordinator for lost partial-sum chunks, each is sent again, and far fewer contributions are
 * dropped than the loss alone would cause.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ClusterCoordinator, WorkerNode, modelSha256 } from "../../src/cluster/index.js";
import { Engine, argmax } from "../../src/engine/index.js";
import { loadModel, writeSyntheticModel } from "../../src/model/index.js";
import { testKernels } from "../helpers/golden.js";

const dir = mkdtempSync(join(tmpdir(), "halo-nack-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("10% loss both ways: lost chunks are asked for and sent again; few contributions are dropped", async () => {
  const path = join(dir, "tinyllama-1l.gguf");
  writeSyntheticModel(path, { shape: "tinyllama-1.1b", type: "q8_0", seed: 3, nLayers: 1 });
  const model = await loadModel(path);
  const sha = modelSha256(path);
  const key = Buffer.from("a NACK test cluster key, 32 B!!!");
  const loss = { lossRatio: 0.1, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 };
  const workers = await Promise.all([1, 2].map((i) => WorkerNode.start({ model: { file: model.file, config: model.config, sha256: sha }, kernels: testKernels(), clusterKey: key, contextLength: 64, linkProfile: loss, seed: 40 + i })));
  const coordinator = await ClusterCoordinator.connect({
    model, modelSha256: sha, clusterKey: key, mode: "relaxed", seed: 5,
    workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
    linkProfiles: [loss, loss],
    deadlines: { minMs: 100, hardMs: 400 },
  });
  try {
    const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 64, synchronizer: coordinator });
    let logits = (await engine.evaluate([1, 450, 4996], 0, "last"))!;
    const before = { ...coordinator.totals };
    for (let i = 0; i < 25; i++) logits = await engine.step(argmax(logits), 3 + i);
    const expected = coordinator.totals.expectedContributions - before.expectedContributions;
    const dropped = coordinator.totals.droppedContributions - before.droppedContributions;
    assert.equal(expected, 25 * 2 * 2, "2 workers × 2 phases × 1 layer per token");
    // Without NACKs a contribution survives only if all 4 of its datagrams do: 0.9^4 ≈ 66%.
    assert.ok(dropped / expected < 0.1, `dropped ${dropped}/${expected}`);
    const workerNacks = workers.reduce((n, w) => n + w.counters.nacksSent, 0);
    const workerResends = workers.reduce((n, w) => n + w.counters.chunksResent, 0);
    assert.ok(workerNacks > 0 && coordinator.totals.chunksResent > 0, `inputs: ${workerNacks} NACKs, ${coordinator.totals.chunksResent} resent`);
    assert.ok(coordinator.totals.nacksSent > 0 && workerResends > 0, `partials: ${coordinator.totals.nacksSent} NACKs, ${workerResends} resent`);
    assert.ok(logits.every(Number.isFinite));
  } finally {
    await coordinator.close();
    for (const worker of workers) await worker.close();
    model.file.close();
  }
});
