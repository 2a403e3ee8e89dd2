/**
 * A model's identity for the handshake: the SHA-256 of the whole file, so a worker with a
 * different file (even one differing in one weight) is refused. Hashing a multi-GB file takes
 * seconds, so the digest is cached beside the file keyed by its size and modification time.
 */
import { createHash } from "node:crypto";
import { closeSync, openSync, readFileSync, readSync, statSync, writeFileSync } from "node:fs";
import { FileError } from "../base/index.js";

const CHUNK_BYTES = 8 << 20;

function hashFile(path: string): string {
  const hash = createHash("sha256");
  const fd = openSync(path, "r");
  try {
    const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
    for (let position = 0; ; ) {
      const n = readSync(fd, buffer, 0, CHUNK_BYTES, position);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
      position += n;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

/** The file's SHA-256 (hex), from `<path>.sha256` when that records the same size and mtime. */
export function modelSha256(path: string): string {
  let stat;
  try {
    stat = statSync(path);
  } catch (error) {
    throw new FileError(path, `cannot stat: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
  const stamp = `${stat.size} ${stat.mtimeMs}`;
  const cachePath = `${path}.sha256`;
  try {
    const [digest, cachedStamp] = readFileSync(cachePath, "utf8").trim().split("\n");
    if (cachedStamp === stamp && /^[0-9a-f]{64}$/.test(digest ?? "")) return digest!;
  } catch {
    // No cache yet (or unreadable): hash the file.
  }
  const digest = hashFile(path);
  try {
    writeFileSync(cachePath, `${digest}\n${stamp}\n`);
  } catch {
    // A read-only model directory only costs a re-hash next time.
  }
  return digest;
}
