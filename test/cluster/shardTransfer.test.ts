/**
 * Shard transfer over a real authenticated loopback control connection: a transfer lands
 * verified in the cache and a second offer is a cache hit; a real shard arrives and computes;
 * every failure (wrong hash or size, chunks out of order or past the end, a stray message, an
 * oversized offer, either side disconnecting) is a coded ShardTransferError on the worker, the
 * coordinator is told, and the cache is left with no file at all.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ShardTransferError, systemClock, type ShardTransferFailure } from "../../src/base/index.js";
import { GroupWorker, formatProgressBar, receiveShard, sendShard } from "../../src/cluster/index.js";
import { defaultShardCacheDir, loadShard, prepareShard, readDeviceSlice, shardCachePath, type ShardDescriptor } from "../../src/loader/index.js";
import { loadModel, writeSyntheticModel } from "../../src/model/index.js";
import { ControlConnection, type ControlMessage } from "../../src/net/index.js";
import { createGroupLayout, proportionalPlacement } from "../../src/partition/index.js";
import { testKernels } from "../helpers/golden.js";
import { deviceGroups, runLockstep } from "../loader/sliceHelpers.js";
import { CLUSTER_KEY, tcpPair } from "../net/controlHelpers.js";

const root = mkdtempSync(join(tmpdir(), "halo-transfer-"));
after(() => rmSync(root, { recursive: true, force: true }));
let nDirs = 0;
const freshDir = (): string => join(root, `cache-${nDirs++}`);

async function connectedPair(): Promise<{ coordinator: ControlConnection; worker: ControlConnection }> {
  const { client, server } = await tcpPair();
  const [worker, coordinator] = await Promise.all([ControlConnection.accept(server, { clusterKey: CLUSTER_KEY }), ControlConnection.connect(client, { clusterKey: CLUSTER_KEY })]);
  return { coordinator, worker };
}

function shardOf(bytes: Uint8Array, name: string): ShardDescriptor {
  const path = join(root, name);
  writeFileSync(path, bytes);
  return { path, sha256: createHash("sha256").update(bytes).digest("hex"), sizeBytes: bytes.length };
}

async function nextOffer(worker: ControlConnection): Promise<Extract<ControlMessage, { type: "shard-offer" }>> {
  const offer = await worker.receive();
  assert.equal(offer.type, "shard-offer");
  return offer;
}

const isTransferError = (reason: ShardTransferFailure, pattern: RegExp) => (error: unknown): boolean => {
  assert.ok(error instanceof ShardTransferError, String(error));
  assert.equal(error.code, "HALO_ERR_SHARD_TRANSFER");
  assert.equal(error.reason, reason, error.message);
  assert.match(error.message, pattern);
  return true;
};

test("a shard arrives verified in the cache with progress, and a second offer is a cache hit", async () => {
  const { coordinator, worker } = await connectedPair();
  const bytes = randomBytes(3 * (1 << 20) + 12345);
  const shard = shardOf(bytes, "random.bin");
  const cacheDir = freshDir();
  const progress: number[] = [];
  const [sent, received] = await Promise.all([
    sendShard(coordinator, shard),
    nextOffer(worker).then((offer) => receiveShard(worker, offer, { cacheDir, onProgress: (done, total) => (assert.equal(total, bytes.length), progress.push(done)) })),
  ]);
  assert.deepEqual(sent, { transferred: true });
  assert.deepEqual(received, { path: shardCachePath(cacheDir, shard.sha256), sha256: shard.sha256, sizeBytes: bytes.length, cached: false });
  assert.deepEqual(progress, [0, 1 << 20, 2 << 20, 3 << 20, bytes.length], "one step per 1 MiB chunk");
  assert.ok(readFileSync(received.path).equals(bytes));
  assert.deepEqual(readdirSync(cacheDir), [`${shard.sha256}.gguf`]);

  const sentBefore = coordinator.stats.bytesSent;
  const [again, hit] = await Promise.all([sendShard(coordinator, shard), nextOffer(worker).then((offer) => receiveShard(worker, offer, { cacheDir }))]);
  assert.deepEqual(again, { transferred: false });
  assert.equal(hit.cached, true);
  assert.ok(coordinator.stats.bytesSent - sentBefore < 1024, "a cache hit sends only the offer");
  await coordinator.close();
});

test("a real shard travels in small chunks, loads from the worker's cache and computes like its slice", async () => {
  const modelPath = join(root, "tiny-q4_0.gguf");
  writeSyntheticModel(modelPath, { shape: "tiny", type: "q4_0", seed: 3 });
  const model = await loadModel(modelPath);
  const { config, file } = model;
  const layout = createGroupLayout(config, 32);
  const groups = deviceGroups(proportionalPlacement(layout, config.nLayers, [2, 1]), 1);
  const sourceSha256 = "0f".repeat(32);
  const shard = await prepareShard({ file, config, layout, groups, sourceSha256, cacheDir: freshDir() });
  const { coordinator, worker } = await connectedPair();
  const cacheDir = freshDir();
  const [, received] = await Promise.all([sendShard(coordinator, shard, { chunkBytes: 50_000 }), nextOffer(worker).then((offer) => receiveShard(worker, offer, { cacheDir }))]);
  const loaded = await loadShard(received.path, { expect: { sourceSha256, groups, config, ffnBlockSize: 32 } });
  const kernels = testKernels();
  const workers = [GroupWorker.fromSlice(readDeviceSlice(file, config, layout, groups), kernels, 8, 4), GroupWorker.fromSlice(loaded.slice, kernels, 8, 4)];
  runLockstep(workers, config.dim, config.nLayers, 5, (where, [a, b]) => assert.deepEqual(b, a, where));
  await coordinator.close();
  file.close();
});

test("bytes that do not hash to the offer are refused; the cache stays empty and the coordinator is told", async () => {
  const { coordinator, worker } = await connectedPair();
  const shard = { ...shardOf(randomBytes(70_000), "liar.bin"), sha256: "ab".repeat(32) };
  const cacheDir = freshDir();
  await Promise.all([
    assert.rejects(sendShard(coordinator, shard, { chunkBytes: 16_384 }), isTransferError("rejected", /the peer refused: .*hash to .*HALO_ERR_SHARD_TRANSFER/)),
    assert.rejects(nextOffer(worker).then((offer) => receiveShard(worker, offer, { cacheDir })), isTransferError("hash-mismatch", /received bytes hash to [0-9a-f]{64}/)),
  ]);
  assert.deepEqual(readdirSync(cacheDir), []);
  await coordinator.close();
});

test("a descriptor whose size disagrees with its file is refused before anything is offered", async () => {
  const { coordinator, worker } = await connectedPair();
  const shard = shardOf(randomBytes(1000), "wrong-size.bin");
  await assert.rejects(sendShard(coordinator, { ...shard, sizeBytes: 999 }), isTransferError("size-mismatch", /has 1000 bytes, the descriptor says 999; nothing was offered/));
  await assert.rejects(sendShard(coordinator, { ...shard, path: join(root, "absent.bin") }), isTransferError("size-mismatch", /has no bytes/));
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(worker.stats.queuedMessages, 0, "no offer went out");
  await coordinator.close();
});

/** A coordinator that speaks the protocol by hand, to send what sendShard never would. */
async function handDriven(
  script: (coordinator: ControlConnection, sha256: string) => Promise<unknown>,
  options: { sizeBytes?: number; maxShardBytes?: number } = {},
): Promise<{ error: unknown; cacheDir: string; told: ControlMessage | undefined }> {
  const { coordinator, worker } = await connectedPair();
  const sha256 = "cd".repeat(32);
  const cacheDir = freshDir();
  coordinator.send({ type: "shard-offer", sha256, sizeBytes: options.sizeBytes ?? 100 });
  const receiving = nextOffer(worker).then((offer) => receiveShard(worker, offer, { cacheDir, maxShardBytes: options.maxShardBytes ?? 1 << 20 }));
  const outcome = receiving.then(() => undefined, (error: unknown) => error);
  await script(coordinator, sha256);
  const error = await outcome;
  const told = coordinator.state === "open" ? await coordinator.receive({ deadlineMs: systemClock.now() + 5000 }).catch(() => undefined) : undefined;
  coordinator.destroy();
  worker.destroy();
  return { error, cacheDir, told };
}

async function accepted(coordinator: ControlConnection): Promise<void> {
  const accept = await coordinator.receive();
  assert.deepEqual(accept.type === "shard-accept" && accept.cached, false);
}

const chunk = (sha256: string, offset: number, length: number): ControlMessage => ({ type: "shard-chunk", sha256, offset, data: new Uint8Array(length).fill(7) });

test("chunks out of order or past the end, a short total, a stray message or an oversized offer: coded errors, no file left", async () => {
  const cases: Array<{ reason: ShardTransferFailure; pattern: RegExp; script: (c: ControlConnection, sha: string) => Promise<unknown>; sizeBytes?: number; maxShardBytes?: number }> = [
    { reason: "out-of-order", pattern: /chunk at offset 40, expected 30/, script: async (c, sha) => (await accepted(c), c.send(chunk(sha, 0, 30)), c.send(chunk(sha, 40, 10))) },
    { reason: "out-of-order", pattern: /chunk at offset 0, expected 30/, script: async (c, sha) => (await accepted(c), c.send(chunk(sha, 0, 30)), c.send(chunk(sha, 0, 30))) },
    { reason: "beyond-size", pattern: /chunk \[60, 120\) runs past the 100-byte shard/, script: async (c, sha) => (await accepted(c), c.send(chunk(sha, 0, 60)), c.send(chunk(sha, 60, 60))) },
    { reason: "size-mismatch", pattern: /ended after 60 bytes \(end says 60\), the offer said 100/, script: async (c, sha) => (await accepted(c), c.send(chunk(sha, 0, 60)), c.send({ type: "shard-end", sha256: sha, sizeBytes: 60 })) },
    { reason: "size-mismatch", pattern: /ended after 100 bytes \(end says 99\)/, script: async (c, sha) => (await accepted(c), c.send(chunk(sha, 0, 100)), c.send({ type: "shard-end", sha256: sha, sizeBytes: 99 })) },
    { reason: "unexpected-message", pattern: /expected 'shard-chunk', got 'reset'/, script: async (c, sha) => (await accepted(c), c.send(chunk(sha, 0, 10)), c.send({ type: "reset" })) },
    { reason: "unexpected-message", pattern: /'shard-chunk' names shard efef/, script: async (c) => (await accepted(c), c.send(chunk("ef".repeat(32), 0, 10))) },
    { reason: "rejected", pattern: /the peer refused: gave up \[HALO_ERR_USAGE\]/, script: async (c) => (await accepted(c), c.send({ type: "error", code: "HALO_ERR_USAGE", message: "gave up" })) },
    { reason: "too-large", pattern: /offered 2000000 bytes, this worker takes at most 1048576/, script: async () => {}, sizeBytes: 2_000_000 },
  ];
  for (const { reason, pattern, script, sizeBytes, maxShardBytes } of cases) {
    const { error, cacheDir, told } = await handDriven(script, { sizeBytes, maxShardBytes });
    isTransferError(reason, pattern)(error);
    assert.ok(!existsSync(cacheDir) || readdirSync(cacheDir).length === 0, `${reason}: nothing left in the cache`);
    if (reason !== "rejected") assert.deepEqual(told?.type === "error" && told.code, "HALO_ERR_SHARD_TRANSFER", `${reason}: the coordinator is told`);
  }
});

test("a coordinator that disconnects mid-transfer leaves no partial file", async () => {
  const { error, cacheDir } = await handDriven(async (c, sha) => {
    await accepted(c);
    c.send(chunk(sha, 0, 50));
    await new Promise((resolve) => setTimeout(resolve, 20));
    c.destroy();
  });
  isTransferError("connection-lost", /connection failed after 50 of 100 bytes/)(error);
  assert.deepEqual(readdirSync(cacheDir), []);
});

test("a worker that disconnects mid-transfer fails the send as connection-lost, and nothing is cached", async () => {
  const { coordinator, worker } = await connectedPair();
  const shard = shardOf(randomBytes(8 << 20), "big.bin");
  const cacheDir = freshDir();
  let partialSeen = false;
  await Promise.all([
    assert.rejects(sendShard(coordinator, shard, { chunkBytes: 65_536 }), (error: unknown) => {
      assert.ok(error instanceof ShardTransferError && (error.reason === "connection-lost" || error.reason === "rejected"), String(error));
      return true;
    }),
    assert.rejects(
      nextOffer(worker).then((offer) =>
        receiveShard(worker, offer, {
          cacheDir,
          onProgress: (done) => {
            if (done < 1 << 20) return;
            partialSeen = existsSync(join(cacheDir, `${shard.sha256}.gguf.partial`));
            worker.destroy();
          },
        }),
      ),
      isTransferError("connection-lost", /connection failed after/),
    ),
  ]);
  assert.ok(partialSeen, "the transfer was under way in a .partial file");
  assert.deepEqual(readdirSync(cacheDir), []);
});

test("a damaged cache entry of the right size is re-fetched, not trusted", async () => {
  const { coordinator, worker } = await connectedPair();
  const bytes = randomBytes(5000);
  const shard = shardOf(bytes, "damaged.bin");
  const cacheDir = freshDir();
  const [first] = await Promise.all([sendShard(coordinator, shard), nextOffer(worker).then((offer) => receiveShard(worker, offer, { cacheDir }))]);
  assert.equal(first.transferred, true);
  const cached = shardCachePath(cacheDir, shard.sha256);
  const damaged = Buffer.from(bytes);
  damaged[100] = damaged[100]! ^ 1;
  writeFileSync(cached, damaged);
  const [second, received] = await Promise.all([sendShard(coordinator, shard), nextOffer(worker).then((offer) => receiveShard(worker, offer, { cacheDir }))]);
  assert.deepEqual([second.transferred, received.cached], [true, false]);
  assert.ok(readFileSync(cached).equals(bytes));
  await coordinator.close();
});

test("formatProgressBar draws the share done, and the default cache follows XDG", () => {
  assert.equal(formatProgressBar(0, 4 << 20, 10), "[..........]   0% 0.0/4.0 MiB");
  assert.equal(formatProgressBar(1 << 20, 4 << 20, 8), "[##......]  25% 1.0/4.0 MiB");
  assert.equal(formatProgressBar(3 << 19, 3 << 20, 5), "[##...]  50% 1.5/3.0 MiB");
  assert.equal(formatProgressBar(9, 4, 4), "[####] 100% 0.0/0.0 MiB", "clamped past the end");
  assert.equal(formatProgressBar(0, 0, 3), "[###] 100% 0.0/0.0 MiB", "an empty shard is done");
  assert.equal(formatProgressBar(1, 2, 0), "[]  50% 0.0/0.0 MiB");
  assert.equal(defaultShardCacheDir({ XDG_CACHE_HOME: "/var/cache/me" }, "/home/u"), "/var/cache/me/halo/shards");
  assert.equal(defaultShardCacheDir({}, "/home/u"), "/home/u/.cache/halo/shards");
  assert.equal(defaultShardCacheDir({ XDG_CACHE_HOME: "relative/dir" }, "/home/u"), "/home/u/.cache/halo/shards", "a relative XDG path is ignored");
});
