/**
 * The I/O thread's code (a worker_threads Worker started by readThread.ts). It owns the file
 * descriptor and runs each requested list of positioned reads back to back with readSync, into
 * shared buffers, then publishes completion in a shared status word. Its own event loop drives
 * it, so a main thread busy computing never delays the next read.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import type { ReadThreadInit, ReadThreadReply, ReadThreadRequest } from "./readThread.js";

const init = workerData as ReadThreadInit;
const port = parentPort!;
const status = new Int32Array(init.status);
const ioMs = new Float64Array(init.ioMs);
const buffers = init.buffers.map((b) => new Uint8Array(b));
const scratch = new Uint8Array(init.scratchBytes);
let fd = -1;
let identity: { size: bigint; mtimeNs: bigint } | undefined;

function reply(message: ReadThreadReply): void {
  port.postMessage(message);
}

class Changed extends Error {}

function start(): void {
  fd = openSync(init.path, "r");
  const stat = fstatSync(fd, { bigint: true });
  if (stat.size !== BigInt(init.expectedSize)) throw new Changed(`has ${stat.size} bytes, its header was read with ${init.expectedSize}`);
  identity = { size: stat.size, mtimeNs: stat.mtimeNs };
}

function run(request: ReadThreadRequest): void {
  const started = performance.now();
  const dest = buffers[request.buffer]!;
  const ops = init.parts[request.part]!;
  for (const index of request.order ?? ops.keys()) {
    const op = ops[index]!;
    const target = op.direct ? dest : scratch;
    const offset = op.direct ? op.runs[0]!.dest : 0;
    let done = 0;
    while (done < op.length) {
      const n = readSync(fd, target, offset + done, op.length - done, op.position + done);
      // A regular file returns short only at its end: the file is shorter than when opened.
      if (n === 0) throw new Changed(`short read: ${done} of ${op.length} bytes at ${op.position} (truncated since it was opened?)`);
      done += n;
    }
    if (!op.direct) for (const run of op.runs) dest.set(scratch.subarray(run.position - op.position, run.position - op.position + run.length), run.dest);
  }
  const stat = fstatSync(fd, { bigint: true });
  if (stat.size !== identity!.size || stat.mtimeNs !== identity!.mtimeNs) {
    throw new Changed(`changed while being read (size ${identity!.size} → ${stat.size}${stat.mtimeNs !== identity!.mtimeNs ? ", modified again" : ""})`);
  }
  ioMs[request.buffer] = performance.now() - started;
  Atomics.store(status, request.buffer, request.sequence);
  reply({ type: "done", sequence: request.sequence });
}

function fail(sequence: number, error: unknown): void {
  const message = error instanceof Error ? ((error as NodeJS.ErrnoException).code ?? error.message) : String(error);
  reply({ type: "failed", sequence, changed: error instanceof Changed, message: error instanceof Changed ? error.message : `cannot read: ${message}` });
}

try {
  start();
  reply({ type: "ready" });
} catch (error) {
  fail(0, error);
}

port.on("message", (request: ReadThreadRequest | { type: "close" }) => {
  if (request.type === "close") {
    if (fd >= 0) closeSync(fd);
    port.close();
    return;
  }
  try {
    run(request);
  } catch (error) {
    fail(request.sequence, error);
  }
});
