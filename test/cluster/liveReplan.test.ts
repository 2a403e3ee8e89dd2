/**
 * Live re-planning in a real cluster over loopback: groups move while tokens are generated,
 * after a request, a worker leaving, or a worker slowing down. FFN blocks move with no state;
 * attention groups of a device still up stay with their KV cache, so strict f32 tokens stay
 * exactly the golden ones across a move.
 */
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, test } from "node:test";
import { placementPlanner } from "../../src/cli/generationSession.js";
import type { CommandIo } from "../../src/cli/io.js";
import { ClusterCoordinator, WorkerNode, modelSha256, replanScheduleInput, type ClusterOptions, type ReplanContext, type SyncMode } from "../../src/cluster/index.js";
import { Engine, argmax } from "../../src/engine/index.js";
import type { Placement } from "../../src/partition/index.js";
import { PERFECT_LINK, type DeviceProfile, type ScheduleInput } from "../../src/scheduler/index.js";
import { loadStories, readGolden, stories260KPath, testKernels } from "../helpers/golden.js";
import { joinAsRawCoordinator } from "./rawSession.js";

const clusterKey = Buffer.from("a live re-plan test key of 32 B!");
const sha = modelSha256(stories260KPath());
const golden = readGolden();
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function startWorker(options: { withModel?: boolean; log?: (line: string) => void } = {}): Promise<WorkerNode> {
  const { model } = await loadStories();
  const worker = await WorkerNode.start({
    ...(options.withModel === false ? {} : { model: { file: model.file, config: model.config, sha256: sha } }),
    kernels: testKernels(), clusterKey, contextLength: 256, log: options.log,
  });
  cleanups.push(async () => {
    await worker.close();
    model.file.close();
  });
  return worker;
}

/** Each group's new device: where a pin says, else `move(device)` of its current one. */
function movePlacement(context: ReplanContext, move: (device: number, kind: "attention" | "ffn") => number): Placement {
  return {
    nDevices: context.current.nDevices,
    layers: context.current.layers.map((layer, l) => ({
      attention: layer.attention.map((d, g) => (context.pinned[l]!.attention[g]! >= 0 ? context.pinned[l]!.attention[g]! : move(d, "attention"))),
      ffn: layer.ffn.map((d, g) => (context.pinned[l]!.ffn[g]! >= 0 ? context.pinned[l]!.ffn[g]! : move(d, "ffn"))),
    })),
  };
}

async function connect(workers: WorkerNode[], mode: SyncMode, extra: Partial<ClusterOptions>): Promise<{ coordinator: ClusterCoordinator; engine: Engine; logs: string[] }> {
  const { model } = await loadStories();
  const logs: string[] = [];
  const coordinator = await ClusterCoordinator.connect({
    model, modelSha256: sha, clusterKey, mode, wire: "f32",
    workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
    deadlines: { minMs: 200, hardMs: 1000 },
    rejoinIntervalMs: 0,
    log: (line) => logs.push(line),
    ...extra,
  });
  cleanups.push(() => coordinator.close());
  const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: coordinator });
  return { coordinator, engine, logs };
}

/** Greedy tokens after the golden prompt; `onToken(n)` runs after the n-th. */
async function greedy(engine: Engine, nTokens: number, onToken: (n: number) => void | Promise<void>): Promise<number[]> {
  const prompt = golden.greedy_prompt.prompt_ids;
  let logits = (await engine.evaluate(prompt, 0, "last"))!;
  const tokens: number[] = [];
  while (tokens.length < nTokens) {
    const token = argmax(logits);
    tokens.push(token);
    await onToken(tokens.length);
    logits = await engine.step(token, prompt.length + tokens.length - 1);
    // The workers load their new groups on this event loop too: give them turns.
    await sleep(2);
  }
  return tokens;
}

const ffnGroupsOn = (placement: Placement, device: number): number => placement.layers.reduce((n, l) => n + l.ffn.filter((d) => d === device).length, 0);
const groupsOn = (placement: Placement, device: number): number => placement.layers.reduce((n, l) => n + l.attention.filter((d) => d === device).length + l.ffn.filter((d) => d === device).length, 0);

test("a requested re-plan moves worker 1's FFN blocks to worker 2 mid-generation; strict f32 tokens stay golden (the KV cache stays with the attention groups)", async () => {
  const workers = [await startWorker(), await startWorker()];
  const contexts: ReplanContext[] = [];
  const { coordinator, engine } = await connect(workers, "strict", {
    plan: (_profiles, context) => {
      if (context === undefined) return undefined;
      contexts.push(context);
      return { placement: movePlacement(context, (d, kind) => (kind === "ffn" && d === 1 ? 2 : d)) };
    },
  });
  const before = coordinator.placement;
  const ffnOfWorker1 = ffnGroupsOn(before, 1);
  assert.ok(ffnOfWorker1 > 0);
  const tokens = await greedy(engine, 24, (n) => {
    if (n === 3) coordinator.requestReplan();
  });
  assert.deepEqual(tokens, golden.greedy_prompt.generated_ids.slice(0, 24));
  assert.equal(contexts.length, 1);
  // Every attention group of a device that is up is pinned where it is; no FFN block is.
  assert.deepEqual(contexts[0]!.pinned.map((l) => l.attention), before.layers.map((l) => l.attention));
  assert.ok(contexts[0]!.pinned.every((l) => l.ffn.every((d) => d === -1)));
  assert.deepEqual(contexts[0]!.trigger, { kind: "request" });
  const [replan] = coordinator.liveReplans;
  assert.ok(replan !== undefined && coordinator.liveReplans.length === 1, JSON.stringify(coordinator.liveReplans));
  assert.equal(replan.trigger, "a re-plan was requested");
  assert.equal(replan.groupsMoved, ffnOfWorker1);
  assert.equal(replan.workersChanged, 2);
  assert.ok(replan.position > golden.greedy_prompt.prompt_ids.length + 3 && replan.position < golden.greedy_prompt.prompt_ids.length + 24, `took effect at ${replan.position}`);
  assert.ok(replan.prepareMs >= 0 && replan.activateMs >= 0);
  assert.equal(ffnGroupsOn(coordinator.placement, 1), 0);
  assert.deepEqual(coordinator.placement.layers.map((l) => l.attention), before.layers.map((l) => l.attention));
  assert.equal(coordinator.totals.droppedContributions, 0);
});

test("relaxed: a worker that leaves mid-generation has all its groups re-planned onto the others; no contribution is dropped after the switch", async () => {
  const workers = [await startWorker(), await startWorker(), await startWorker()];
  let droppedAtSwitch = -1;
  const { coordinator, engine } = await connect(workers, "relaxed", {
    plan: (profiles, context) => {
      if (context === undefined) return undefined;
      assert.equal(profiles[3]?.ffnGroupMs, Infinity, "the lost worker is planned as unable to compute");
      assert.ok(context.pinned.every((l) => l.attention.every((d) => d !== 3)), "its attention groups are free to move");
      return { placement: movePlacement(context, (d) => (d === 3 ? 0 : d)) };
    },
  });
  const tokens = await greedy(engine, 30, async (n) => {
    if (n === 5) await workers[2]!.close();
    if (droppedAtSwitch < 0 && coordinator.liveReplans.length > 0) droppedAtSwitch = coordinator.totals.droppedContributions;
  });
  assert.equal(tokens.length, 30);
  assert.deepEqual(tokens.slice(0, 5), golden.greedy_prompt.generated_ids.slice(0, 5));
  const [replan] = coordinator.liveReplans;
  assert.ok(replan !== undefined, "the leave was re-planned");
  assert.equal(replan.trigger, "worker 3 left");
  assert.equal(replan.workersChanged, 0, "only the coordinator takes groups: nobody loads");
  assert.equal(groupsOn(coordinator.placement, 3), 0);
  assert.ok(droppedAtSwitch >= 0);
  assert.equal(coordinator.totals.droppedContributions, droppedAtSwitch, "nothing is waited for from the lost worker any more");
});

test("relaxed: a worker slowing down mid-generation is drift; its FFN blocks move away", async () => {
  const workers = [await startWorker(), await startWorker()];
  const { coordinator, engine, logs } = await connect(workers, "relaxed", {
    replan: { settleTokens: 4, rttRatio: 1, rttMinMs: 3 },
    plan: (_profiles, context) => {
      if (context === undefined || context.trigger.kind !== "drift") return undefined;
      const slow = context.trigger.device;
      return { placement: movePlacement(context, (d, kind) => (kind === "ffn" && d === slow ? 0 : d)) };
    },
  });
  await greedy(engine, 40, (n) => {
    if (n === 10) workers[0]!.setSlowdown(500);
  });
  const replan = coordinator.liveReplans.find((r) => r.trigger.startsWith("worker 1's round trip drifted"));
  assert.ok(replan !== undefined, `${JSON.stringify(coordinator.liveReplans)}\n${logs.join("\n")}`);
  assert.equal(ffnGroupsOn(coordinator.placement, 1), 0);
});

test("on the wire: prepare loads beside the current groups and answers prepare-ok; activate without its prepare ends the session", async () => {
  const workerLog: string[] = [];
  const withModel = await startWorker({ log: (line) => workerLog.push(line) });
  const session = await joinAsRawCoordinator(withModel.tcpPort, clusterKey, sha);
  cleanups.push(session.close);
  const { peer, next } = session;
  peer.sendSealed({ type: "plan", sequence: 1, epoch: 1, groups: { attention: [[0, 2]], ffn: [[0, 3]] }, ffnBlockSize: 32, wire: "f32", position: 0, copies: 1 });
  assert.equal((await next()).type, "plan-ok");
  const heldBefore = withModel.loadedGroups!.sizeBytes;
  peer.sendSealed({ type: "prepare", sequence: 7, groups: { attention: [[0, 2]], ffn: [[0, 1]] }, ffnBlockSize: 32 });
  assert.deepEqual(await next(), { type: "prepare-ok", sequence: 7 });
  assert.equal(withModel.loadedGroups!.sizeBytes, heldBefore, "the current groups compute until activate");
  peer.sendSealed({ type: "activate", sequence: 7, position: 0 });
  assert.deepEqual(await next(), { type: "activate-ok", sequence: 7 });
  assert.ok(withModel.loadedGroups!.sizeBytes < heldBefore, "then the new, smaller set");
  peer.sendSealed({ type: "activate", sequence: 8, position: 0 });
  await assert.rejects(next(), /the peer closed/);
  assert.ok(workerLog.some((line) => line.includes("activate 8 before its groups were prepared")), workerLog.join("\n"));
});

test("a worker that takes shards (no model file) is frozen: the planner is told, and if a plan moves its groups anyway it refuses with HALO_ERR_REPLAN and the placement stays", async () => {
  const workers = [await startWorker({ withModel: false }), await startWorker()];
  const contexts: ReplanContext[] = [];
  const { coordinator, engine, logs } = await connect(workers, "strict", {
    shardCacheDir: await mkdtemp(join(tmpdir(), "halo-replan-")),
    plan: (_profiles, context) => {
      if (context === undefined) return undefined;
      contexts.push(context);
      // Ignores the pins on purpose: worker 1's FFN blocks go to worker 2.
      return { placement: { nDevices: 3, layers: context.current.layers.map((l) => ({ attention: [...l.attention], ffn: l.ffn.map((d) => (d === 1 ? 2 : d)) })) } };
    },
  });
  const before = coordinator.placement;
  const tokens = await greedy(engine, 16, (n) => {
    if (n === 2) coordinator.requestReplan();
  });
  assert.deepEqual(tokens, golden.greedy_prompt.generated_ids.slice(0, 16));
  assert.deepEqual(contexts[0]!.frozen, [1]);
  assert.deepEqual(contexts[0]!.pinned.map((l) => l.ffn), before.layers.map((l) => l.ffn.map((d) => (d === 1 ? 1 : -1))));
  assert.deepEqual(coordinator.liveReplans, []);
  assert.deepEqual(coordinator.placement, before);
  assert.ok(logs.some((line) => line.includes("cannot prepare re-plan 1: this worker has no model file of its own")), logs.join("\n"));
  assert.ok(logs.some((line) => line.includes("re-plan 1 abandoned")), logs.join("\n"));
});

test("with the halo scheduler: a worker leaving is re-planned with the attention of live devices pinned, nothing left on the lost worker, and the costs reported", async () => {
  const workers = [await startWorker(), await startWorker(), await startWorker()];
  const { model } = await loadStories();
  const io = { stdout: () => undefined, stderr: () => undefined } as unknown as CommandIo;
  const halo = placementPlanner("halo", false, { wire: "f32" }, model, undefined, io)!;
  const contexts: ReplanContext[] = [];
  const { coordinator, engine } = await connect(workers, "relaxed", {
    profileKernels: [testKernels()],
    // Uniform at join (on loopback halo would keep this tiny model on the coordinator); halo from then on.
    plan: (profiles, context) => {
      if (context === undefined) return undefined;
      contexts.push(context);
      return halo(profiles, context);
    },
  });
  const before = coordinator.placement;
  await greedy(engine, 24, async (n) => {
    if (n === 4) await workers[1]!.close();
  });
  const [replan] = coordinator.liveReplans;
  assert.ok(replan !== undefined && replan.trigger === "worker 2 left", JSON.stringify(coordinator.liveReplans));
  // The old placement leaves groups on a device that cannot compute them: it costs Infinity under the new profiles.
  assert.ok(replan.costMs !== undefined && Number.isFinite(replan.costMs) && replan.previousCostMs === Infinity, JSON.stringify(replan));
  const after = coordinator.placement;
  assert.equal(groupsOn(after, 2), 0);
  after.layers.forEach((layer, l) => layer.attention.forEach((d, g) => {
    if (before.layers[l]!.attention[g] !== 2) assert.equal(d, before.layers[l]!.attention[g], `layer ${l} attention group ${g} stayed`);
  }));
});

test("replanScheduleInput: pins pass through; a frozen worker's budget is exactly its pinned groups", () => {
  const device = (name: string): DeviceProfile => ({ name, attentionGroupMs: 1, ffnGroupMs: 1, compute: [], freeMemoryBytes: 1e9, memoryBudgetBytes: 1e9, readBytesPerSecond: 1e9, link: PERFECT_LINK });
  const input = { devices: [device("c"), device("w1"), device("w2")], attentionGroupBytes: 100, ffnGroupBytes: 10 } as unknown as ScheduleInput;
  const pinned = [{ attention: [0, 1], ffn: [1, -1, 2] }, { attention: [1, -1], ffn: [-1, 1, -1] }];
  const current = { nDevices: 3, layers: [] };
  const out = replanScheduleInput(input, { current, pinned, frozen: [1], trigger: { kind: "request" } });
  assert.deepEqual(out.pinned, pinned);
  assert.deepEqual(out.devices.map((d) => d.memoryBudgetBytes), [1e9, 2 * 100 + 2 * 10, 1e9]);
});

test("leave, rejoin, join: a worker killed mid-generation loses its groups, comes back with none, and the join re-plan gives it FFN blocks again", async () => {
  const workers = [await startWorker(), await startWorker()];
  const { coordinator, engine, logs } = await connect(workers, "relaxed", {
    rejoinIntervalMs: 50,
    plan: (_profiles, context) => {
      if (context === undefined) return undefined;
      const { trigger } = context;
      if (trigger.kind === "leave") return { placement: movePlacement(context, (d) => (d === trigger.device ? 0 : d)) };
      if (trigger.kind !== "join") return undefined;
      // Every other FFN block of the coordinator's goes to the worker that came back.
      let n = 0;
      return { placement: movePlacement(context, (d, kind) => (kind === "ffn" && d === 0 && n++ % 2 === 0 ? trigger.device : d)) };
    },
  });
  const port = workers[1]!.tcpPort;
  let restarted: Promise<WorkerNode> | undefined;
  await greedy(engine, 60, async (n) => {
    if (n === 4) await workers[1]!.close();
    if (n === 6 && coordinator.liveReplans.length === 1) restarted = (async () => {
      const { model } = await loadStories();
      const worker = await WorkerNode.start({ model: { file: model.file, config: model.config, sha256: sha }, kernels: testKernels(), clusterKey, contextLength: 256, port });
      cleanups.push(async () => {
        await worker.close();
        model.file.close();
      });
      return worker;
    })();
    if (restarted !== undefined) await sleep(5);
  });
  await restarted;
  assert.deepEqual(coordinator.liveReplans.map((r) => r.trigger), ["worker 2 left", "worker 2 joined again"], logs.join("\n"));
  assert.equal(coordinator.totals.workersRejoined, 1);
  assert.ok(ffnGroupsOn(coordinator.placement, 2) > 0);
  assert.equal(coordinator.placement.layers.reduce((n, l) => n + l.attention.filter((d) => d === 2).length, 0), 0, "attention stays where it went: its KV cache is there now");
});

test("every worker dies: the halo re-plans move all groups onto the coordinator, and the next sequence is exactly a single node's", async () => {
  const workers = [await startWorker(), await startWorker()];
  const { model } = await loadStories();
  const io = { stdout: () => undefined, stderr: () => undefined } as unknown as CommandIo;
  const halo = placementPlanner("halo", false, { wire: "f32" }, model, undefined, io)!;
  const { coordinator, engine } = await connect(workers, "relaxed", {
    profileKernels: [testKernels()],
    plan: (profiles, context) => (context === undefined ? undefined : halo(profiles, context)),
  });
  assert.ok(groupsOn(coordinator.placement, 1) > 0 && groupsOn(coordinator.placement, 2) > 0);
  await greedy(engine, 16, async (n) => {
    if (n === 3) await workers[0]!.close();
    if (n === 6) await workers[1]!.close();
  });
  assert.deepEqual(coordinator.liveReplans.map((r) => r.trigger), ["worker 1 left", "worker 2 left"]);
  assert.equal(groupsOn(coordinator.placement, 0), 50);
  // A new sequence starts with an empty cache everywhere: nothing is masked any more.
  assert.deepEqual(await greedy(engine, 12, () => undefined), golden.greedy_prompt.generated_ids.slice(0, 12));
});

test("slowdownAfter (halo worker --slowdown-after): the worker becomes slower once the time has passed, says so, and its next profile shows it", async () => {
  const { model } = await loadStories();
  const logs: string[] = [];
  const worker = await WorkerNode.start({ model: { file: model.file, config: model.config, sha256: sha }, kernels: testKernels(), clusterKey, contextLength: 256, slowdownAfter: { afterMs: 0, slowdown: 10 }, log: (line) => logs.push(line) });
  cleanups.push(() => worker.close());
  const { coordinator, engine } = await connect([worker], "strict", { replan: false });
  const before = coordinator.profiles()[1]!;
  await greedy(engine, 2, () => undefined);
  assert.ok(logs.includes("halo worker: now 10 times slower (--slowdown-after)"), logs.join("\n"));
  const after = (await coordinator.refreshProfiles(20_000))[1]!;
  const ratio = after.ffnGroupMs / before.ffnGroupMs;
  // The profile multiplies measured times by the slowdown, so only timing noise stands between the ratio and 10.
  assert.ok(ratio > 3, `profiled FFN group ${before.ffnGroupMs} ms before, ${after.ffnGroupMs} ms after (×${ratio.toFixed(2)})`);
});
