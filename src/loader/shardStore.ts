/**
 * The on-disk shard cache: `<cacheDir>/<sha256>.gguf`, named by the SHA-256 of the shard's
 * bytes, so an entry is either absent or exactly the shard of that hash (files are written
 * under another name and renamed in only once verified). The coordinator also keeps an index
 * `<cacheDir>/index/<key>` from (model, groups, block size) to the shard's hash, so a later
 * run neither rebuilds nor re-hashes a shard it already cut.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { FileError } from "../base/index.js";
import type { GgufFile, ModelConfig } from "../model/index.js";
import type { GroupLayout } from "../partition/index.js";
import { SHARD_FORMAT_VERSION, writeShardFromModelAsync } from "./shardFile.js";
import { normalizeDeviceGroups, type DeviceGroups } from "./sliceGeometry.js";

/** A shard file ready to send or load. */
export interface ShardDescriptor {
  readonly path: string;
  /** SHA-256 of the file's bytes, lowercase hex. */
  readonly sha256: string;
  readonly sizeBytes: number;
}

/**
 * `$XDG_CACHE_HOME/halo/shards`, else `<home>/.cache/halo/shards`. The caller passes the
 * environment and home directory (only cli/ reads them).
 */
export function defaultShardCacheDir(env: Readonly<Record<string, string | undefined>>, homeDir: string): string {
  const xdg = env["XDG_CACHE_HOME"];
  // The XDG spec says a relative path is invalid and must be ignored.
  const base = xdg !== undefined && xdg.startsWith("/") ? xdg : join(homeDir, ".cache");
  return join(base, "halo", "shards");
}

export function shardCachePath(cacheDir: string, sha256: string): string {
  return join(cacheDir, `${sha256}.gguf`);
}

/** Where a transfer writes before the hash is verified. */
export function shardPartialPath(cacheDir: string, sha256: string): string {
  return join(cacheDir, `${sha256}.gguf.partial`);
}

const HASH_CHUNK_BYTES = 4 << 20;

/** SHA-256 (hex) of a file, read in chunks without blocking the event loop for long. */
export async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  let handle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    throw new FileError(path, `cannot open: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
  try {
    const buffer = Buffer.allocUnsafe(HASH_CHUNK_BYTES);
    for (let position = 0; ; ) {
      const { bytesRead } = await handle.read(buffer, 0, HASH_CHUNK_BYTES, position);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      position += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return hash.digest("hex");
}

/** The index key of a shard: what determines its bytes. */
export function shardKey(sourceSha256: string, layout: GroupLayout, groups: readonly DeviceGroups[]): string {
  const canonical = JSON.stringify({
    version: SHARD_FORMAT_VERSION,
    sourceSha256,
    ffnBlockSize: layout.ffnBlockSize,
    groups: groups.map((g) => [g.attention.map((r) => [r.start, r.end]), g.ffn.map((r) => [r.start, r.end])]),
  });
  return createHash("sha256").update(canonical).digest("hex");
}

/** The size of a regular file, or undefined when there is none. */
function fileSize(path: string): number | undefined {
  try {
    const stat = statSync(path);
    return stat.isFile() ? stat.size : undefined;
  } catch {
    // Absent or unreadable: treated as not cached.
    return undefined;
  }
}

function makeDir(path: string): void {
  try {
    mkdirSync(path, { recursive: true });
  } catch (error) {
    throw new FileError(path, `cannot create the shard cache: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
}

export interface PrepareShardOptions {
  /** The model, opened; its SHA-256 is `sourceSha256`. */
  file: GgufFile;
  config: ModelConfig;
  layout: GroupLayout;
  /** (nLayers) the device's groups. */
  groups: readonly DeviceGroups[];
  sourceSha256: string;
  cacheDir: string;
}

/**
 * The shard of `groups` in the cache, cut from the model (one tensor in memory at a time) on
 * first use. `reused` says it came from the index.
 */
export async function prepareShard(options: PrepareShardOptions): Promise<ShardDescriptor & { reused: boolean }> {
  const { file, config, layout, sourceSha256, cacheDir } = options;
  const groups = normalizeDeviceGroups(options.groups, layout, config.nLayers);
  const key = shardKey(sourceSha256, layout, groups);
  const indexDir = join(cacheDir, "index");
  const indexPath = join(indexDir, key);
  try {
    const [sha256, size] = readFileSync(indexPath, "utf8").trim().split(" ");
    const path = shardCachePath(cacheDir, sha256 ?? "");
    if (/^[0-9a-f]{64}$/.test(sha256 ?? "") && fileSize(path) === Number(size)) return { path, sha256: sha256!, sizeBytes: Number(size), reused: true };
  } catch {
    // No index entry yet: cut the shard.
  }
  makeDir(indexDir);
  const building = join(cacheDir, `.build-${process.pid}-${randomBytes(4).toString("hex")}.gguf`);
  try {
    const sizeBytes = await writeShardFromModelAsync(building, file, config, layout, groups, sourceSha256);
    const sha256 = await sha256OfFile(building);
    const path = shardCachePath(cacheDir, sha256);
    renameSync(building, path);
    writeFileSync(indexPath, `${sha256} ${sizeBytes}\n`);
    return { path, sha256, sizeBytes, reused: false };
  } finally {
    rmSync(building, { force: true });
  }
}
