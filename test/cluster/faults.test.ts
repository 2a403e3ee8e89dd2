/**
 * RELIABILITY F1, F5, F6 and F9 with real processes: `halo worker` children killed with SIGKILL
 * in the middle of a generation and restarted on the same port, or stopped with SIGSTOP and
 * resumed; and a second coordinator taking the workers over. The coordinator (this process) must
 * finish every token, drop the missing worker's groups, and take the worker back.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { after, test } from "node:test";
import { ClusterCoordinator, modelSha256, type SyncMode } from "../../src/cluster/index.js";
import { Engine, argmax } from "../../src/engine/index.js";
import { haloMainPath } from "../helpers/cliRunner.js";
import { loadStories, maxAbsDiff, readGolden, stories260KPath, testKernels } from "../helpers/golden.js";

const golden = readGolden();
const KEY = "a fault-test cluster key, 32 B!!";
const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill("SIGKILL");
});

async function startWorkerProcess(port: number): Promise<{ child: ChildProcess; port: number }> {
  const env: NodeJS.ProcessEnv = { ...process.env, HALO_KERNELS: "ts" };
  delete env.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, [haloMainPath(), "worker", "--host", "127.0.0.1", "--port", String(port), "--model", stories260KPath(), "--cluster-key", KEY, "--ctx-size", "256"], { stdio: ["ignore", "pipe", "pipe"], env });
  children.add(child);
  child.once("exit", () => children.delete(child));
  const line = await new Promise<string>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`worker exited with ${code} before listening`)));
    createInterface({ input: child.stdout! }).once("line", resolve);
  });
  const event = JSON.parse(line) as { event: string; tcpPort: number };
  assert.equal(event.event, "listening");
  return { child, port: event.tcpPort };
}

async function killAndRestart(mode: SyncMode): Promise<void> {
  const workers = [await startWorkerProcess(0), await startWorkerProcess(0)];
  const { model } = await loadStories();
  const coordinator = await ClusterCoordinator.connect({
    model,
    modelSha256: modelSha256(stories260KPath()),
    clusterKey: Buffer.from(KEY),
    workers: workers.map((w) => ({ host: "127.0.0.1", port: w.port })),
    mode,
    deadlines: { minMs: 200, hardMs: 1000 },
    rejoinIntervalMs: 100,
  });
  try {
    const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: coordinator });
    const prompt = golden.greedy_prompt.prompt_ids;
    let logits = (await engine.evaluate(prompt, 0, "last"))!;
    const tokens: number[] = [];
    let restarted: Promise<unknown> | undefined;
    let tokensAfterRejoin = -1;
    let droppedAtRejoin = 0;
    while (tokensAfterRejoin < 10) {
      assert.ok(prompt.length + tokens.length < 250, `no rejoin after ${tokens.length} tokens: ${JSON.stringify(coordinator.totals)}`);
      const token = argmax(logits);
      tokens.push(token);
      if (tokens.length === 10) workers[1]!.child.kill("SIGKILL");
      if (tokens.length === 15) restarted = startWorkerProcess(workers[1]!.port);
      if (tokensAfterRejoin >= 0) tokensAfterRejoin++;
      else if (restarted !== undefined && coordinator.totals.workersRejoined > 0) {
        tokensAfterRejoin = 0;
        droppedAtRejoin = coordinator.totals.droppedContributions;
      }
      logits = await engine.step(token, prompt.length + tokens.length - 1);
      assert.ok(logits.every(Number.isFinite));
      // Lets the restarted process start while generation goes on (stories260K decodes in ~1 ms).
      await sleep(10);
    }
    await restarted;
    assert.deepEqual(tokens.slice(0, 10), golden.greedy_prompt.generated_ids.slice(0, 10));
    assert.equal(coordinator.totals.workersLost, 1);
    assert.equal(coordinator.totals.workersRejoined, 1);
    assert.deepEqual(coordinator.lostWorkers, []);
    assert.ok(coordinator.totals.droppedContributions > 0, "the dead worker's contributions are counted as dropped");
    // Back to full strength: nothing dropped over the 10 tokens after the rejoin (0% loss, generous deadline).
    assert.equal(coordinator.totals.droppedContributions, droppedAtRejoin);
    assert.deepEqual(coordinator.linkStats().map((l) => l.state), ["active", "active"]);
  } finally {
    await coordinator.close();
    for (const child of children) child.kill("SIGKILL");
  }
}

test("F1 + F6, relaxed: kill -9 of a worker mid-generation, generation completes; restarted on its port, it rejoins and contributes", async () => {
  await killAndRestart("relaxed");
});

test("F1 + F6, strict: the same, with the reliable baseline", async () => {
  await killAndRestart("strict");
});

test("F5: a worker stopped (SIGSTOP) for 4 s: tokens keep coming, it is declared lost, and after SIGCONT it is re-admitted without a restart", async () => {
  const workers = [await startWorkerProcess(0), await startWorkerProcess(0)];
  const { model } = await loadStories();
  const coordinator = await ClusterCoordinator.connect({
    model, modelSha256: modelSha256(stories260KPath()), clusterKey: Buffer.from(KEY), mode: "relaxed",
    workers: workers.map((w) => ({ host: "127.0.0.1", port: w.port })),
    deadlines: { minMs: 20, hardMs: 100 },
    rejoinIntervalMs: 100,
  });
  try {
    const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: coordinator });
    const prompt = golden.greedy_prompt.prompt_ids;
    let logits = (await engine.evaluate(prompt, 0, "last"))!;
    const stoppedAt = performance.now();
    workers[1]!.child.kill("SIGSTOP");
    let resumed = false;
    let tokensWhileStopped = 0;
    for (let i = 0; i < 200 && !(resumed && coordinator.totals.workersRejoined === 1); i++) {
      logits = await engine.step(argmax(logits), prompt.length + i);
      if (!resumed) tokensWhileStopped++;
      // Past the 3 s (3 heartbeats) after which the silent worker counts as lost.
      if (!resumed && performance.now() - stoppedAt > 4000) {
        workers[1]!.child.kill("SIGCONT");
        resumed = true;
      }
      await sleep(10);
    }
    assert.ok(tokensWhileStopped >= 4, `only ${tokensWhileStopped} tokens while the worker was stopped`);
    assert.deepEqual([coordinator.totals.workersLost, coordinator.totals.workersRejoined, coordinator.lostWorkers], [1, 1, []]);
    assert.equal(workers[1]!.child.exitCode, null, "the same process came back");
  } finally {
    await coordinator.close();
    for (const child of children) child.kill("SIGKILL");
  }
});

test("F9: a new coordinator takes the workers over; the old one sees them gone and still finishes on its own groups", async () => {
  const workers = [await startWorkerProcess(0), await startWorkerProcess(0)];
  const { model } = await loadStories();
  const connect = () => ClusterCoordinator.connect({
    model, modelSha256: modelSha256(stories260KPath()), clusterKey: Buffer.from(KEY), mode: "relaxed", wire: "f32",
    workers: workers.map((w) => ({ host: "127.0.0.1", port: w.port })),
    deadlines: { minMs: 1000, hardMs: 2000 },
    rejoinIntervalMs: 0,
  });
  const old = await connect();
  const oldEngine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: old });
  await oldEngine.evaluate(golden.greedy_prompt.prompt_ids, 0, "last");
  const replacement = await connect();
  try {
    const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: replacement });
    const logits = Float32Array.from((await engine.evaluate(golden.logits.input_ids, 0, "last"))!);
    assert.ok(maxAbsDiff(logits, golden.logits.last) < 1e-4);
    // The old session's workers are gone; its phases stop waiting for them at once.
    for (let i = 0; i < 50 && old.lostWorkers.length < 2; i++) await sleep(20);
    assert.deepEqual(old.lostWorkers, [1, 2]);
    const lone = await oldEngine.step(golden.greedy_prompt.generated_ids[0]!, golden.greedy_prompt.prompt_ids.length);
    assert.ok(lone.every(Number.isFinite));
    assert.equal(replacement.totals.droppedContributions, 0);
  } finally {
    await old.close();
    await replacement.close();
    for (const child of children) child.kill("SIGKILL");
  }
});
