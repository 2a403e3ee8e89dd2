/**
 * Sends a device's shard from the coordinator to a worker over their authenticated control
 * connection, into the worker's cache (docs/cluster.md, "Shard transfer"):
 *
 *   coordinator → shard-offer {sha256, sizeBytes}
 *   worker      → shard-accept {sha256, cached}      cached: done, nothing follows
 *   coordinator → shard-chunk {sha256, offset, data} …  (in order, ≤ 1 MiB each)
 *   coordinator → shard-end {sha256, sizeBytes}
 *   worker      → shard-stored {sha256}              or error {code, message}
 *
 * The worker writes `<sha256>.gguf.partial`, hashing as it goes, and renames it to
 * `<sha256>.gguf` only once size and hash match, so the cache never holds a bad entry; any
 * failure removes the partial file and throws a ShardTransferError. After a failure the
 * connection may still carry chunks in flight: close it.
 *
 * Both functions run inside the join/plan exchange, when nothing else reads the connection.
 */
import { createHash } from "node:crypto";
import { mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { HaloError, ShardTransferError, describeError, systemClock, type Clock, type ShardTransferFailure } from "../base/index.js";
import { sha256OfFile, shardCachePath, shardPartialPath, type ShardDescriptor } from "../loader/index.js";
import { CONTROL_LIMITS, type ControlConnection, type ControlMessage, type ShardOfferMessage } from "../net/index.js";

/** Called after every chunk (and once at the start and end). */
export type ShardProgress = (doneBytes: number, totalBytes: number) => void;

export interface SendShardOptions {
  /** Bytes per shard-chunk, at most 1 MiB. Defaults to 1 MiB. */
  chunkBytes?: number;
  /** How long to wait for shard-accept, and for shard-stored after shard-end. Defaults to 60000 ms. */
  replyTimeoutMs?: number;
  onProgress?: ShardProgress;
  clock?: Clock;
}

export interface ReceiveShardOptions {
  /** The shard cache (see defaultShardCacheDir). */
  cacheDir: string;
  /** How long to wait for each chunk and for shard-end. Defaults to 60000 ms. */
  chunkTimeoutMs?: number;
  /** The largest shard accepted. Defaults to CONTROL_LIMITS.maxShardBytes. */
  maxShardBytes?: number;
  /** Re-hash a cached entry before trusting it (a disk error, a hand-edited file). Defaults to true. */
  verifyCached?: boolean;
  onProgress?: ShardProgress;
  clock?: Clock;
}

export interface ReceivedShard extends ShardDescriptor {
  /** True when the cache already held it and nothing was transferred. */
  readonly cached: boolean;
}

const DEFAULT_TIMEOUT_MS = 60_000;

function transferError(reason: ShardTransferFailure, sha256: string, message: string, cause?: unknown): ShardTransferError {
  return new ShardTransferError(reason, sha256, message, cause === undefined ? undefined : { cause });
}

/**
 * Any failure as a transfer error: a file error (or an unexpected throw) is "io", anything else
 * from the connection (closed, lost, a deadline, a bad frame) is "connection-lost".
 */
function asTransferError(sha256: string, doneBytes: number, totalBytes: number, error: unknown): ShardTransferError {
  if (error instanceof ShardTransferError) return error;
  if (!(error instanceof HaloError) || error.code === "HALO_ERR_FILE") return transferError("io", sha256, `failed after ${doneBytes} of ${totalBytes} bytes: ${describeError(error)}`, error);
  return transferError("connection-lost", sha256, `connection failed after ${doneBytes} of ${totalBytes} bytes: ${describeError(error)}`, error);
}

/** The error for a message other than the one expected (`expected` says what was). */
function unsolicited(message: ControlMessage, sha256: string, expected: string): ShardTransferError {
  if (message.type === "error") return transferError("rejected", sha256, `the peer refused: ${message.message} [${message.code}]`);
  return transferError("unexpected-message", sha256, `expected ${expected}, got '${message.type}'`);
}

/** The peer's answer, or a transfer error for an error message, another type or another shard. */
function expectReply<T extends ControlMessage["type"]>(message: ControlMessage, type: T, sha256: string): Extract<ControlMessage, { type: T }> {
  if (message.type !== type) throw unsolicited(message, sha256, `'${type}'`);
  const reply = message as Extract<ControlMessage, { type: T }>;
  if ("sha256" in reply && reply.sha256 !== sha256) throw transferError("unexpected-message", sha256, `'${type}' names shard ${String(reply.sha256)}`);
  return reply;
}

/**
 * Coordinator side: offers `shard` and streams it unless the worker has it. Resolves with
 * whether bytes were sent; throws ShardTransferError otherwise.
 */
export async function sendShard(connection: ControlConnection, shard: ShardDescriptor, options: SendShardOptions = {}): Promise<{ transferred: boolean }> {
  const clock = options.clock ?? systemClock;
  const timeoutMs = options.replyTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  const chunkBytes = options.chunkBytes ?? CONTROL_LIMITS.maxShardChunkBytes;
  if (!(Number.isInteger(chunkBytes) && chunkBytes >= 1 && chunkBytes <= CONTROL_LIMITS.maxShardChunkBytes)) {
    throw new HaloError("HALO_ERR_USAGE", `chunkBytes must be 1..${CONTROL_LIMITS.maxShardChunkBytes}, got ${chunkBytes}`);
  }
  const { sha256, sizeBytes } = shard;
  const progress = { sentBytes: 0 };
  const actualBytes = sizeOf(shard.path);
  if (actualBytes !== sizeBytes) throw transferError("size-mismatch", sha256, `${shard.path} has ${actualBytes ?? "no"} bytes, the descriptor says ${sizeBytes}; nothing was offered`);
  try {
    connection.send({ type: "shard-offer", sha256, sizeBytes });
    const accept = expectReply(await connection.receive({ deadlineMs: clock.now() + timeoutMs }), "shard-accept", sha256);
    if (accept.cached) {
      options.onProgress?.(sizeBytes, sizeBytes);
      return { transferred: false };
    }
    options.onProgress?.(0, sizeBytes);
    await streamChunks(connection, shard, chunkBytes, progress, options.onProgress);
    connection.send({ type: "shard-end", sha256, sizeBytes: progress.sentBytes });
    expectReply(await connection.receive({ deadlineMs: clock.now() + timeoutMs }), "shard-stored", sha256);
    return { transferred: true };
  } catch (error) {
    throw asTransferError(sha256, progress.sentBytes, sizeBytes, error);
  }
}

/** Sends the file's bytes in order, counting them in `progress.sentBytes`. */
async function streamChunks(connection: ControlConnection, shard: ShardDescriptor, chunkBytes: number, progress: { sentBytes: number }, onProgress: ShardProgress | undefined): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(shard.path, "r");
  } catch (error) {
    throw transferError("io", shard.sha256, `cannot open ${shard.path}: ${describeError(error)}`, error);
  }
  try {
    const size = (await handle.stat()).size;
    if (size !== shard.sizeBytes) throw transferError("size-mismatch", shard.sha256, `${shard.path} has ${size} bytes, the offer said ${shard.sizeBytes}`);
    while (progress.sentBytes < size) {
      const offset = progress.sentBytes;
      // A worker that failed says so at once; stop streaming rather than send the rest into the void.
      if (connection.stats.queuedMessages > 0) throw unsolicited(await connection.receive(), shard.sha256, "nothing while chunks go out");
      // Each chunk gets its own buffer: send() frames it, but the socket may still hold it.
      const data = Buffer.allocUnsafe(Math.min(chunkBytes, size - offset));
      const { bytesRead } = await handle.read(data, 0, data.length, offset);
      if (bytesRead !== data.length) throw transferError("io", shard.sha256, `short read of ${shard.path} at ${offset}`);
      if (!connection.send({ type: "shard-chunk", sha256: shard.sha256, offset, data })) await connection.drained();
      progress.sentBytes += bytesRead;
      onProgress?.(progress.sentBytes, size);
    }
  } finally {
    await handle.close();
  }
}

/** The size of a regular file, or undefined. */
function sizeOf(path: string): number | undefined {
  try {
    const stat = statSync(path);
    return stat.isFile() ? stat.size : undefined;
  } catch {
    // Absent: not cached.
    return undefined;
  }
}

/** True when the cache holds `offer` (size, and hash unless told not to check). A bad entry is removed. */
async function cachedEntry(path: string, offer: ShardOfferMessage, verify: boolean): Promise<boolean> {
  if (sizeOf(path) !== offer.sizeBytes) return false;
  if (!verify || (await sha256OfFile(path)) === offer.sha256) return true;
  rmSync(path, { force: true });
  return false;
}

/** Tells the coordinator why, if the connection still carries messages; the error is thrown regardless. */
function reportFailure(connection: ControlConnection, error: ShardTransferError): void {
  if (connection.state !== "open") return;
  try {
    connection.send({ type: "error", code: error.code, message: error.message.slice(0, CONTROL_LIMITS.maxErrorMessageChars) });
  } catch {
    // The connection failed meanwhile; the caller learns that from the thrown error and its close.
  }
}

/**
 * Worker side, called with the coordinator's shard-offer: answers it from the cache or receives
 * the shard into it. Resolves with the cached file; throws ShardTransferError (the partial file
 * removed, the coordinator told why where the connection allows).
 */
export async function receiveShard(connection: ControlConnection, offer: ShardOfferMessage, options: ReceiveShardOptions): Promise<ReceivedShard> {
  const { sha256, sizeBytes } = offer;
  const path = shardCachePath(options.cacheDir, sha256);
  const maxBytes = options.maxShardBytes ?? CONTROL_LIMITS.maxShardBytes;
  try {
    if (sizeBytes > maxBytes) throw transferError("too-large", sha256, `offered ${sizeBytes} bytes, this worker takes at most ${maxBytes}`);
    if (await cachedEntry(path, offer, options.verifyCached ?? true)) {
      connection.send({ type: "shard-accept", sha256, cached: true });
      options.onProgress?.(sizeBytes, sizeBytes);
      return { path, sha256, sizeBytes, cached: true };
    }
  } catch (error) {
    const failure = asTransferError(sha256, 0, sizeBytes, error);
    reportFailure(connection, failure);
    throw failure;
  }
  await receiveIntoCache(connection, offer, path, options);
  return { path, sha256, sizeBytes, cached: false };
}

async function receiveIntoCache(connection: ControlConnection, offer: ShardOfferMessage, path: string, options: ReceiveShardOptions): Promise<void> {
  const { sha256, sizeBytes } = offer;
  const clock = options.clock ?? systemClock;
  const timeoutMs = options.chunkTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  const partial = shardPartialPath(options.cacheDir, sha256);
  let handle: FileHandle | undefined;
  let received = 0;
  try {
    try {
      mkdirSync(options.cacheDir, { recursive: true });
      // A partial file left by a crash is stale: start over.
      handle = await open(partial, "w");
    } catch (error) {
      throw transferError("io", sha256, `cannot write ${partial}: ${describeError(error)}`, error);
    }
    connection.send({ type: "shard-accept", sha256, cached: false });
    options.onProgress?.(0, sizeBytes);
    const hash = createHash("sha256");
    for (;;) {
      const message = await connection.receive({ deadlineMs: clock.now() + timeoutMs });
      if (message.type === "shard-end") {
        expectReply(message, "shard-end", sha256);
        if (message.sizeBytes !== sizeBytes || received !== sizeBytes) {
          throw transferError("size-mismatch", sha256, `ended after ${received} bytes (end says ${message.sizeBytes}), the offer said ${sizeBytes}`);
        }
        break;
      }
      const chunk = expectReply(message, "shard-chunk", sha256);
      if (chunk.offset !== received) throw transferError("out-of-order", sha256, `chunk at offset ${chunk.offset}, expected ${received}`);
      if (chunk.offset + chunk.data.byteLength > sizeBytes) throw transferError("beyond-size", sha256, `chunk [${chunk.offset}, ${chunk.offset + chunk.data.byteLength}) runs past the ${sizeBytes}-byte shard`);
      await writeAll(handle, chunk.data, chunk.offset, sha256);
      hash.update(chunk.data);
      received += chunk.data.byteLength;
      options.onProgress?.(received, sizeBytes);
    }
    const digest = hash.digest("hex");
    if (digest !== sha256) throw transferError("hash-mismatch", sha256, `received bytes hash to ${digest}`);
    await handle.sync();
    await handle.close();
    handle = undefined;
    renameSync(partial, path);
    connection.send({ type: "shard-stored", sha256 });
  } catch (error) {
    await handle?.close().catch(() => {
      // Closing a handle whose write failed can fail too; the file is removed next either way.
    });
    rmSync(partial, { force: true });
    const failure = asTransferError(sha256, received, sizeBytes, error);
    reportFailure(connection, failure);
    throw failure;
  }
}

async function writeAll(handle: FileHandle, data: Uint8Array, position: number, sha256: string): Promise<void> {
  try {
    for (let done = 0; done < data.byteLength; ) {
      const { bytesWritten } = await handle.write(data, done, data.byteLength - done, position + done);
      done += bytesWritten;
    }
  } catch (error) {
    throw transferError("io", sha256, `cannot write the shard: ${describeError(error)}`, error);
  }
}

/**
 * A one-line progress bar: `[######......]  50% 1.5/3.0 MiB`. `width` is the number of bar
 * cells; a total of 0 counts as done.
 */
export function formatProgressBar(doneBytes: number, totalBytes: number, width: number): string {
  const cells = Math.max(0, Math.floor(width));
  const fraction = totalBytes > 0 ? Math.min(1, Math.max(0, doneBytes / totalBytes)) : 1;
  const filled = Math.floor(fraction * cells);
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const mib = (bytes: number): string => (bytes / (1 << 20)).toFixed(1);
  return `[${"#".repeat(filled)}${".".repeat(cells - filled)}] ${percent} ${mib(Math.min(doneBytes, totalBytes))}/${mib(totalBytes)} MiB`;
}
