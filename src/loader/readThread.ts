/**
 * The loader's I/O thread, seen from the main thread. Requests ("fill buffer b with part p's
 * reads") queue in order and run one at a time on a worker thread (readThreadMain.ts); whether
 * one finished is a synchronous look at a shared status word, so the compute loop checks
 * without yielding, and a promise settles for callers that must wait.
 *
 * Why a thread of our own rather than fs.promises reads on libuv's pool: chained async reads
 * issue the next read from a callback on the main thread's event loop, which does not run while
 * the main thread computes a layer phase. Measured on the loader bench, a part's second read then
 * started only when compute next waited for it, and most read time was exposed.
 */
import { Worker } from "node:worker_threads";
import { FileChangedError, FileError } from "../base/index.js";
import type { ReadOp } from "./streamGeometry.js";

export interface ReadThreadInit {
  readonly path: string;
  readonly expectedSize: number;
  /** Destination buffers, by index. */
  readonly buffers: readonly SharedArrayBuffer[];
  /** Int32 per buffer: the sequence number of the last request that filled it. */
  readonly status: SharedArrayBuffer;
  /** Float64 per buffer: how long that request's reads took. */
  readonly ioMs: SharedArrayBuffer;
  /** Each part's reads, sent once. */
  readonly parts: ReadonlyArray<readonly ReadOp[]>;
  readonly scratchBytes: number;
}

export interface ReadThreadRequest {
  readonly type: "read";
  readonly sequence: number;
  readonly buffer: number;
  readonly part: number;
  /** Op indices in the order to read them; file order when absent. */
  readonly order?: readonly number[];
}

export type ReadThreadReply =
  | { type: "ready" }
  | { type: "done"; sequence: number }
  | { type: "failed"; sequence: number; changed: boolean; message: string };

export class ReadThread {
  private readonly status: Int32Array;
  private readonly ioMs: Float64Array;
  private nextSequence = 1;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (error: Error) => void }>();
  private failure: Error | undefined;
  private closed = false;

  private constructor(private readonly worker: Worker, private readonly path: string, init: ReadThreadInit) {
    this.status = new Int32Array(init.status);
    this.ioMs = new Float64Array(init.ioMs);
  }

  /** Starts the thread; it opens the file and checks its size. */
  static async start(path: string, expectedSize: number, buffers: readonly SharedArrayBuffer[], parts: ReadonlyArray<readonly ReadOp[]>, scratchBytes: number): Promise<ReadThread> {
    const init: ReadThreadInit = {
      path, expectedSize, buffers, parts, scratchBytes,
      status: new SharedArrayBuffer(4 * Math.max(1, buffers.length)),
      ioMs: new SharedArrayBuffer(8 * Math.max(1, buffers.length)),
    };
    const worker = new Worker(new URL("./readThreadMain.js", import.meta.url), { workerData: init });
    const thread = new ReadThread(worker, path, init);
    const ready = new Promise<void>((resolve, reject) => {
      worker.on("message", (reply: ReadThreadReply) => {
        if (reply.type === "ready") resolve();
        else thread.settle(reply);
      });
      worker.on("error", (error) => {
        thread.fail(new FileError(path, `the I/O thread failed: ${error.message}`, { cause: error }));
        reject(thread.failure);
      });
      worker.on("exit", () => {
        if (!thread.closed) thread.fail(new FileError(path, "the I/O thread exited"));
        reject(thread.failure);
      });
      thread.waiting.set(0, { resolve, reject });
    });
    try {
      await ready;
    } catch (error) {
      thread.closed = true;
      await worker.terminate();
      throw error;
    }
    thread.waiting.delete(0);
    return thread;
  }

  /** Queues part `part`'s reads into buffer `buffer`; returns the request's sequence number. */
  request(buffer: number, part: number, order?: readonly number[]): number {
    if (this.failure !== undefined) throw this.failure;
    const sequence = this.nextSequence++;
    const request: ReadThreadRequest = order === undefined ? { type: "read", sequence, buffer, part } : { type: "read", sequence, buffer, part, order };
    this.worker.postMessage(request);
    return sequence;
  }

  /** True once request `sequence` into `buffer` has completed (a synchronous look). */
  isDone(buffer: number, sequence: number): boolean {
    return Atomics.load(this.status, buffer) === sequence;
  }

  /** How long the last completed request into `buffer` took to read. */
  readMs(buffer: number): number {
    return this.ioMs[buffer]!;
  }

  /** Settles when request `sequence` into `buffer` has completed; rejects with its error. */
  whenDone(buffer: number, sequence: number): Promise<void> {
    if (this.isDone(buffer, sequence)) return Promise.resolve();
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.waiting.set(sequence, { resolve, reject }));
  }

  get error(): Error | undefined {
    return this.failure;
  }

  /** Lets queued reads finish, then ends the thread and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const exited = new Promise<void>((resolve) => this.worker.once("exit", () => resolve()));
    this.worker.postMessage({ type: "close" });
    await exited;
  }

  private settle(reply: Exclude<ReadThreadReply, { type: "ready" }>): void {
    if (reply.type === "failed") {
      this.fail(reply.changed ? new FileChangedError(this.path, reply.message) : new FileError(this.path, reply.message));
      return;
    }
    const waiter = this.waiting.get(reply.sequence);
    this.waiting.delete(reply.sequence);
    waiter?.resolve();
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const waiter of this.waiting.values()) waiter.reject(this.failure);
    this.waiting.clear();
  }
}
