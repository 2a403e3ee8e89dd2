/**
 * A device's share under a memory budget: a resident set of rows (residency.ts) and, for the
 * rest, staging slots refilled from the file while inference runs.
 *
 * Parts (layer phases) run in a fixed cycle: layer 0 attention, layer 0 FFN, layer 1 …, then the
 * next token. Each streamed part gets a free slot as soon as one exists, so while part s
 * computes in one slot, the parts after it are read into the others (with two slots: double
 * buffering, one part ahead). The reads run on the loader's I/O thread (readThread.ts), one at
 * a time, leaving the other core to compute. A part's slot is released when its compute returns.
 *
 * The caller brackets every compute with `acquire(layer, kind)` and `release(layer, kind)`.
 * `acquire` returns undefined when the part's bytes are in memory (compute at once) or a
 * promise that settles when its read completes; the time spent waiting there is *exposed* I/O,
 * and the part of each read that overlapped earlier compute is *hidden* I/O. Until acquire has
 * settled, the part's streamed pieces have no matrix, so multiplying them throws rather than
 * reading another part's bytes. A part requested out of cycle (a skipped step, a new sequence)
 * discards the reads queued ahead of it and restarts the cycle there.
 *
 * The file is checked when opened (its size must be the one its header was read with) and after
 * every part's reads (size and modification time unchanged, no short read); a change is a
 * FileChangedError and no compute uses those bytes.
 */
import { HaloError, MemoryBudgetError } from "../base/index.js";
import { createMatrix, type Matrix } from "../kernels/index.js";
import type { GroupKind } from "../partition/index.js";
import { assembleSlice, emptySliceMatrix, layerFromMatrices, type DeviceSlice } from "./deviceSlice.js";
import { buildPart, type StreamedPiece } from "./partLayout.js";
import { ReadThread } from "./readThread.js";
import { planResidency, type GroupImportance, type ResidencyPlan } from "./residency.js";
import { layerSlicePlans } from "./sliceGeometry.js";
import { DEFAULT_MAX_GAP_BYTES, bytesRead, type PartGeometry, type ReadOp } from "./streamGeometry.js";
import type { StreamSource } from "./streamSources.js";

export interface GroupStoreOptions {
  /** Bytes for weights: resident rows, staging slots and read scratch. Infinity keeps everything resident. */
  budgetBytes: number;
  /** Static importance per group (e.g. the calibration's average); decides which groups stay resident. Defaults to group order. */
  importance?: GroupImportance;
  /** Prefetch order: the part's global groups, most important first; reads carrying them go first. Called as each part's reads start. */
  rank?: (layerIndex: number, kind: GroupKind) => readonly number[];
  /** How far ahead reads start: see ResidencyOptions.lookahead. */
  lookahead?: "layer" | "phase";
  /** Largest covering read. Defaults to 1 MiB. */
  scratchBytes?: number;
  /** Defaults to 64 KiB (see streamGeometry.ts). */
  maxGapBytes?: number;
  /** Milliseconds, monotonic. Defaults to performance.now. */
  now?: () => number;
}

/** I/O of one pass through the layers (one decoded token), or of all passes. */
export interface LoaderIoStats {
  /** Time computes waited for reads. */
  exposedIoMs: number;
  /** Read time that overlapped compute (the read finished, or had progressed, before it was needed). */
  hiddenIoMs: number;
  reads: number;
  bytesRead: number;
}

export interface GroupStoreStats extends LoaderIoStats {
  /** Completed passes (a pass starts when a layer phase at or before the previous one is acquired). */
  passes: number;
  /** The last completed pass, if any. */
  lastPass: LoaderIoStats | undefined;
}

interface StreamedPart {
  readonly index: number;
  readonly part: PartGeometry;
  /** Its staging slot, fixed by the plan. */
  readonly slot: number;
  readonly ops: readonly ReadOp[];
  readonly pieces: readonly StreamedPiece[];
  /** [slot] the pieces' matrices over that slot, made on first use. */
  readonly matrices: Array<Matrix[] | undefined>;
}

interface LiveLoad {
  readonly streamed: StreamedPart;
  readonly slot: number;
  /** The I/O thread's request number. */
  readonly sequence: number;
}

const DEFAULT_SCRATCH_BYTES = 1 << 20;
const emptyIo = (): LoaderIoStats => ({ exposedIoMs: 0, hiddenIoMs: 0, reads: 0, bytesRead: 0 });

function sharedBytes(n: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(n));
}

export class GroupStore {
  /** The share as compact tensors; streamed ones are RowSplitMatrix, to multiply with rowSplitKernels. */
  readonly slice: DeviceSlice;
  private readonly streamedOf = new Map<number, StreamedPart>();
  private readonly streamed: StreamedPart[] = [];
  /** Slots, then each part's resident buffer: the I/O thread's destination buffers by index. */
  private readonly buffers: Uint8Array[];
  private readonly residentOps: Array<readonly ReadOp[]> = [];
  private readonly slotFree: boolean[];
  private readonly live: LiveLoad[] = [];
  private nextToSchedule = 0;
  private held: LiveLoad | undefined;
  private thread: ReadThread | undefined;
  private closed = false;
  private lastStep = Infinity;
  private readonly total = emptyIo();
  private current = emptyIo();
  private passes = 0;
  private lastPass: LoaderIoStats | undefined;
  private readonly now: () => number;

  private constructor(readonly source: StreamSource, readonly residency: ResidencyPlan, private readonly options: GroupStoreOptions) {
    this.now = options.now ?? (() => performance.now());
    const limits = { maxGapBytes: options.maxGapBytes ?? DEFAULT_MAX_GAP_BYTES, scratchBytes: residency.scratchBytes };
    this.buffers = residency.slotBytes.map(sharedBytes);
    this.slotFree = residency.slotBytes.map(() => true);
    const matrices = new Map<string, Matrix>();
    source.parts.forEach((part, p) => {
      const built = buildPart(part, residency.parts[p]!, limits, sharedBytes);
      this.buffers.push(built.residentBuffer);
      this.residentOps.push(built.residentOps);
      for (const [name, matrix] of built.matrices) matrices.set(name, matrix);
      if (built.streamedPieces.length === 0) return;
      const streamed: StreamedPart = { index: this.streamed.length, part, slot: residency.parts[p]!.slot, ops: built.streamedOps, pieces: built.streamedPieces, matrices: [] };
      this.streamed.push(streamed);
      this.streamedOf.set(stepOf(part.layerIndex, part.kind), streamed);
    });
    const { config, layout, groups } = source;
    const layers = groups.map((g, l) => layerFromMatrices(layerSlicePlans(config, layout, l, g).map((plan) => matrices.get(plan.name) ?? emptySliceMatrix(plan))));
    this.slice = { ...assembleSlice(config, layout, groups, layers), sizeBytes: residency.residentBytes };
  }

  /**
   * Plans the resident set for `budgetBytes`, starts the I/O thread on the file and reads the
   * resident rows. Throws MemoryBudgetError when the budget cannot hold one part's staging
   * beside the rest, FileChangedError when the file is not the size its header was read with.
   */
  static async open(source: StreamSource, options: GroupStoreOptions): Promise<GroupStore> {
    if (!(options.budgetBytes > 0)) throw new HaloError("HALO_ERR_USAGE", `the memory budget must be a positive number of bytes, got ${options.budgetBytes}`);
    const residency = planResidency(source.parts, { budgetBytes: options.budgetBytes, importance: options.importance, lookahead: options.lookahead, scratchBytes: options.scratchBytes ?? DEFAULT_SCRATCH_BYTES }, (minimumBytes, detail) => {
      throw new MemoryBudgetError(options.budgetBytes, minimumBytes, detail);
    });
    const store = new GroupStore(source, residency, options);
    // Thread part indices: each part's resident reads, then each streamed part's reads.
    const parts = [...store.residentOps, ...store.streamed.map((s) => s.ops)];
    const thread = await ReadThread.start(source.path, source.fileSize, store.buffers.map((b) => b.buffer as SharedArrayBuffer), parts, residency.scratchBytes);
    store.thread = thread;
    try {
      const nSlots = residency.nSlots;
      await Promise.all(store.residentOps.map((ops, p) => (ops.length === 0 ? undefined : thread.whenDone(nSlots + p, thread.request(nSlots + p, p)))));
      store.schedule();
      return store;
    } catch (error) {
      await thread.close();
      throw error;
    }
  }

  /**
   * Undefined when the part can be computed now; else a promise that settles when its bytes are
   * loaded (rejecting with the read's error). Exactly one part is held between acquire and release.
   */
  acquire(layerIndex: number, kind: GroupKind): Promise<void> | undefined {
    const thread = this.requireThread();
    if (thread.error !== undefined) throw thread.error;
    if (this.held !== undefined) throw new HaloError("HALO_ERR_USAGE", `acquire(${layerIndex}, ${kind}) while layer ${this.held.streamed.part.layerIndex} ${this.held.streamed.part.kind} is held`);
    const step = stepOf(layerIndex, kind);
    if (step <= this.lastStep && this.lastStep !== Infinity) this.endPass();
    this.lastStep = step;
    const streamed = this.streamedOf.get(step);
    if (streamed === undefined) return undefined;
    const waitStarted = this.now();
    let k = this.live.findIndex((load) => load.streamed === streamed);
    if (k < 0) {
      // Out of cycle: what is queued ahead is for steps that will not come. The thread still
      // reads it (requests run in order, so a slot given out again is overwritten after).
      k = this.live.length;
      this.nextToSchedule = streamed.index;
    }
    for (const stale of this.live.splice(0, k)) this.slotFree[stale.slot] = true;
    this.schedule();
    const load = this.live[0]!;
    this.held = load;
    if (thread.isDone(load.slot, load.sequence)) {
      this.attach(load, 0);
      return undefined;
    }
    return thread.whenDone(load.slot, load.sequence).then(
      () => this.attach(load, this.now() - waitStarted),
      (error: unknown) => {
        this.held = undefined;
        throw error;
      },
    );
  }

  /** Ends the compute of a part acquired before: its slot takes the next part's reads. */
  release(layerIndex: number, kind: GroupKind): void {
    const load = this.held;
    if (load === undefined || stepOf(layerIndex, kind) !== stepOf(load.streamed.part.layerIndex, load.streamed.part.kind)) return;
    this.held = undefined;
    for (const { piece } of load.streamed.pieces) piece.matrix = undefined;
    this.live.shift();
    this.slotFree[load.slot] = true;
    this.schedule();
  }

  stats(): GroupStoreStats {
    return { ...this.total, passes: this.passes, lastPass: this.lastPass === undefined ? undefined : { ...this.lastPass } };
  }

  /** Reads per pass as planned (every streamed part once). */
  get readsPerPass(): number {
    return this.streamed.reduce((n, s) => n + s.ops.length, 0);
  }

  /** Bytes read per pass, scratch-covered gaps included. */
  get bytesReadPerPass(): number {
    return this.streamed.reduce((n, s) => n + bytesRead(s.ops), 0);
  }

  /** Lets reads in flight finish, then ends the I/O thread and closes the file. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.thread?.close();
  }

  private requireThread(): ReadThread {
    if (this.closed || this.thread === undefined) throw new HaloError("HALO_ERR_USAGE", "the group store is closed");
    return this.thread;
  }

  private endPass(): void {
    this.passes++;
    this.lastPass = this.current;
    this.current = emptyIo();
  }

  private attach(load: LiveLoad, waitedMs: number): void {
    const { streamed, slot } = load;
    const matrices = (streamed.matrices[slot] ??= streamed.pieces.map(({ source, piece, offset }) => {
      const nRows = piece.rowEnd - piece.rowStart;
      return createMatrix(source.name, source.type, nRows, source.nCols, this.buffers[slot]!.subarray(offset, offset + nRows * source.rowBytes));
    }));
    streamed.pieces.forEach(({ piece }, i) => {
      piece.matrix = matrices[i];
    });
    const readMs = this.thread!.readMs(slot);
    const io = { exposedIoMs: waitedMs, hiddenIoMs: Math.max(0, readMs - waitedMs), reads: streamed.ops.length, bytesRead: bytesRead(streamed.ops) };
    for (const bucket of [this.current, this.total]) {
      bucket.exposedIoMs += io.exposedIoMs;
      bucket.hiddenIoMs += io.hiddenIoMs;
      bucket.reads += io.reads;
      bucket.bytesRead += io.bytesRead;
    }
  }

  /** Queues the reads of the next parts of the cycle, in order, while each one's slot is free. */
  private schedule(): void {
    const thread = this.thread;
    if (thread === undefined || thread.error !== undefined) return;
    while (this.live.length < this.streamed.length) {
      const streamed = this.streamed[this.nextToSchedule]!;
      const slot = streamed.slot;
      if (!this.slotFree[slot]) return;
      this.slotFree[slot] = false;
      this.nextToSchedule = (this.nextToSchedule + 1) % this.streamed.length;
      const sequence = thread.request(slot, this.residentOps.length + streamed.index, this.order(streamed));
      this.live.push({ streamed, slot, sequence });
    }
  }

  /** With a ranking, the part's reads carrying its most important groups go first. */
  private order(streamed: StreamedPart): number[] | undefined {
    const rank = this.options.rank;
    if (rank === undefined) return undefined;
    const { part, ops } = streamed;
    const position = new Map(rank(part.layerIndex, part.kind).map((global, i) => [global, i]));
    const priority = ops.map((op) => Math.min(...op.groups.map((g) => (g < 0 ? -1 : position.get(part.globalGroups[g]!) ?? Infinity))));
    return ops.map((_, i) => i).sort((a, b) => priority[a]! - priority[b]! || a - b);
  }
}

function stepOf(layerIndex: number, kind: GroupKind): number {
  return 2 * layerIndex + (kind === "ffn" ? 1 : 0);
}
