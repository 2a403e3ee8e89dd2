/**
 * Device profiles in a real cluster over loopback: workers measure themselves once their weights
 * are loaded and send it in plan-ok, answer profile-request, and the coordinator lists every
 * device (itself first) with the link as it sees it and the operator's names and budgets.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { ClusterCoordinator, WorkerNode, modelSha256 } from "../../src/cluster/index.js";
import { Engine, Sampler, generate } from "../../src/engine/index.js";
import { PERFECT_LINK, type DeviceProfile } from "../../src/scheduler/index.js";
import { loadStories, readGolden, stories260KPath, testKernels } from "../helpers/golden.js";
import { joinAsRawCoordinator } from "./rawSession.js";

const clusterKey = Buffer.from("a test cluster key of 32 bytes!!");
const sha = modelSha256(stories260KPath());
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function startWorker(slowdown: number): Promise<WorkerNode> {
  const { model } = await loadStories();
  const worker = await WorkerNode.start({ model: { file: model.file, config: model.config, sha256: sha }, kernels: testKernels(), clusterKey, contextLength: 128, slowdown });
  cleanups.push(async () => {
    await worker.close();
    model.file.close();
  });
  return worker;
}

/** Every compute figure of a profile, added up: one noisy figure moves the sum less. */
const totalMs = (profile: DeviceProfile): number => profile.compute.reduce((sum, s) => sum + s.attentionGroupMs + s.ffnGroupMs, 0);

test("profiles(): the coordinator and each worker, with names, budgets and live links; a worker at --slowdown 2 reports more compute than one at 1", async () => {
  const workers = [await startWorker(1), await startWorker(2)];
  const { model } = await loadStories();
  const coordinator = await ClusterCoordinator.connect({
    model, modelSha256: sha, clusterKey, mode: "strict", wire: "f32",
    workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
    profileKernels: [testKernels()],
    devices: [{ name: "desk" }, {}, { name: "attic", memoryBudgetBytes: 123 * 2 ** 20 }],
  });
  cleanups.push(() => coordinator.close());
  const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 128, synchronizer: coordinator });
  const golden = readGolden();
  const result = await generate(engine, model.tokenizer, new Sampler(model.config.vocabSize, { temperature: 0, seed: 1 }), golden.greedy_prompt.prompt_ids, { maxTokens: 8 });
  assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids.slice(0, 8));

  const profiles = coordinator.profiles();
  assert.equal(profiles.length, 3);
  const [desk, plain, attic] = profiles.map((p) => {
    assert.ok(p !== null, "every device of this build sends a profile");
    return p;
  }) as [DeviceProfile, DeviceProfile, DeviceProfile];
  assert.deepEqual([desk.name, plain.name, attic.name], ["desk", `worker 127.0.0.1:${workers[0]!.tcpPort}`, "attic"]);
  assert.deepEqual(desk.link, PERFECT_LINK);
  for (const worker of [plain, attic]) {
    assert.ok(worker.link.rttMs > 0 && worker.link.lossRatio === 0 && worker.link.bandwidthMbit === 0, JSON.stringify(worker.link));
    assert.ok(worker.compute.length >= 1 && worker.compute[0]!.tensorType === "F32" && worker.readBytesPerSecond > 0, JSON.stringify(worker));
  }
  assert.equal(attic.memoryBudgetBytes, 123 * 2 ** 20);
  assert.equal(plain.memoryBudgetBytes, plain.freeMemoryBytes);
  // Both measured in this process, interleaved, so load affects them alike; the slowed one's times are doubled.
  const ratio = totalMs(attic) / totalMs(plain);
  assert.ok(ratio > 1.3, `slowdown 2 vs 1: ${ratio.toFixed(2)}× (${totalMs(attic)} vs ${totalMs(plain)} ms)`);

  // refreshProfiles: each worker measures again and answers; its record is replaced.
  const refreshed = await coordinator.refreshProfiles(20_000);
  assert.equal(refreshed.length, 3);
  assert.ok(refreshed.every((p) => p !== null));
  assert.notEqual(refreshed[1]!.compute, plain.compute);
  assert.notEqual(refreshed[2]!.compute, attic.compute);
  assert.notEqual(refreshed[0]!.compute, desk.compute);
  await coordinator.close();
});

test("a coordinator without profileKernels lists itself as null", async () => {
  const workers = [await startWorker(1)];
  const { model } = await loadStories();
  const coordinator = await ClusterCoordinator.connect({ model, modelSha256: sha, clusterKey, mode: "strict", workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })) });
  cleanups.push(() => coordinator.close());
  const profiles = coordinator.profiles();
  assert.equal(profiles[0], null);
  assert.ok(profiles[1] !== null && profiles[1]!.attentionGroupMs > 0);
  await coordinator.close();
});

test("on the wire: plan-ok carries the profile, profile-request is answered with the request's id", async () => {
  const worker = await startWorker(1);
  const session = await joinAsRawCoordinator(worker.tcpPort, clusterKey, sha);
  cleanups.push(session.close);
  const { peer, next } = session;
  peer.sendSealed({ type: "plan", sequence: 1, epoch: 1, groups: { attention: [[0, 2]], ffn: [[0, 3]] }, ffnBlockSize: 32, wire: "f32", position: 0, copies: 1 });
  const planOk = await next();
  assert.ok(planOk.type === "plan-ok" && planOk.profile !== undefined && planOk.profile.compute[0]!.tensorType === "F32", JSON.stringify(planOk));
  peer.sendSealed({ type: "profile-request", requestId: 41 });
  const answer = await next();
  assert.ok(answer.type === "profile" && answer.requestId === 41 && answer.profile.attentionGroupMs > 0, JSON.stringify(answer));
});
