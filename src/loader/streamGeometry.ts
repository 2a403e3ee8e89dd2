/**
 * Where a device's compact layer tensors lie in a file, by rows, and how to read a set of rows
 * with few large positioned reads. Pure functions: no I/O.
 *
 * A *part* is one layer phase of the device: attention (W_q, W_k, W_v rows and W_o columns of
 * its KV-head bundles) or FFN (W_1, W_3 rows and W_2 columns of its neuron blocks). A group's
 * record is its rows of the row tensors; the part's column tensor (W_o or W_2) is shared by all
 * its groups, and is split only by output rows (see rowSplitMatrix.ts for why).
 *
 * How the bytes read. In the GGUF model file a group's rows of W_q/W_k/W_v/W_1/W_3 are contiguous
 * (one run per tensor, adjacent groups merged); its W_o/W_2 *columns* are one short run per
 * output row (a fraction of every row), because GGUF stores those tensors row-major by output.
 * Reading them run by run would cost one system call per row (2,048 per tensor at TinyLlama's
 * width), so runs closer than `maxGapBytes` are covered by one read into a scratch buffer and
 * copied out: few reads, at the price of reading the other devices' columns in between (about
 * 1/share as many bytes). A shard (loader/shardFile.ts) stores the compact tensors, so there
 * every part's streamed rows are a few contiguous runs; that is why a budgeted worker streams
 * from a shard by default. We keep the stored orientation rather than writing W_o/W_2
 * transposed: the kernels' dot products run over stored rows, and a transposed copy would
 * compute (and round) differently from a fully resident worker.
 */
import { QUANT_TRAITS, type GgmlType } from "../kernels/index.js";
import type { GroupKind } from "../partition/index.js";
import type { SliceRole, TensorSlicePlan } from "./sliceGeometry.js";

/** One compact tensor of a part and where its rows are in the file. */
export interface TensorSource {
  readonly role: SliceRole;
  readonly name: string;
  readonly type: GgmlType;
  /** Compact shape: the tensor the kernels multiply. */
  readonly nRows: number;
  readonly nCols: number;
  readonly rowBytes: number;
  /** Absolute file offset of the file tensor's first byte. */
  readonly fileOffset: number;
  /** The compact tensor as a part of the file tensor (for a shard: all of it, by rows). */
  readonly filePlan: TensorSlicePlan;
  readonly fileRowBytes: number;
  /** Compact rows per local group (a row tensor); 0 for the shared column tensor. */
  readonly rowsPerGroup: number;
}

export interface PartGeometry {
  readonly layerIndex: number;
  readonly kind: GroupKind;
  /** (nLocalGroups) the global index of each local group. */
  readonly globalGroups: readonly number[];
  /** W_o or W_2 (compact (dim, local columns)). */
  readonly shared: TensorSource;
  /** W_q, W_k, W_v or W_1, W_3. */
  readonly rowTensors: readonly TensorSource[];
  readonly sizeBytes: number;
}

/** A run of file bytes that lands at `dest` of a destination buffer. */
export interface ByteRun {
  readonly position: number;
  readonly length: number;
  readonly dest: number;
}

/** A run and the local group it belongs to, −1 for shared rows. */
export interface ReadRun extends ByteRun {
  readonly group: number;
}

/** One positioned read: straight into the destination (one run), or into scratch and copied out. */
export interface ReadOp {
  readonly position: number;
  readonly length: number;
  readonly runs: readonly ByteRun[];
  /** True when the read lands in the destination as is (a single run). */
  readonly direct: boolean;
  /** The local groups it carries, −1 for shared rows. */
  readonly groups: readonly number[];
}

export interface ReadLimits {
  /** Runs at most this far apart (and each shorter than it) share one read. Defaults to 64 KiB. */
  maxGapBytes: number;
  /** Largest covering read, i.e. the scratch buffer. */
  scratchBytes: number;
}

export const DEFAULT_MAX_GAP_BYTES = 64 << 10;

/** Rows of local group `g` in a row tensor (the last block may be short). */
export function groupRows(source: TensorSource, g: number): { start: number; end: number } {
  return { start: g * source.rowsPerGroup, end: Math.min((g + 1) * source.rowsPerGroup, source.nRows) };
}

/** Record bytes of each local group: its rows of every row tensor. */
export function groupRecordBytes(part: PartGeometry): number[] {
  return part.globalGroups.map((_, g) => part.rowTensors.reduce((n, t) => {
    const rows = groupRows(t, g);
    return n + (rows.end - rows.start) * t.rowBytes;
  }, 0));
}

/** The file runs of compact rows [rowStart, rowEnd) of `source`, landing from `dest` on in compact (row-major) order. */
export function rowRuns(source: TensorSource, rowStart: number, rowEnd: number, dest: number): ReadRun[] {
  const plan = source.filePlan;
  const runs: ReadRun[] = [];
  const groupOf = (row: number): number => (source.rowsPerGroup === 0 ? -1 : Math.floor(row / source.rowsPerGroup));
  if (plan.axis === "rows") {
    // Compact rows are the kept file rows in order; within one kept range they are contiguous.
    let compact = 0;
    for (const range of plan.ranges) {
      const n = range.end - range.start;
      const lo = Math.max(rowStart, compact);
      const hi = Math.min(rowEnd, compact + n);
      for (let row = lo; row < hi; ) {
        // Split at group boundaries so each run names one group (for importance-ordered reads).
        const end = source.rowsPerGroup === 0 ? hi : Math.min(hi, (groupOf(row) + 1) * source.rowsPerGroup);
        const fileRow = range.start + (row - compact);
        runs.push({ position: source.fileOffset + fileRow * source.fileRowBytes, length: (end - row) * source.rowBytes, dest: dest + (row - rowStart) * source.rowBytes, group: groupOf(row) });
        row = end;
      }
      compact += n;
    }
    return runs;
  }
  // Column slice: compact row r is file row r, made of the kept column ranges' bytes.
  const { blockSize, blockBytes } = QUANT_TRAITS[source.type];
  const bytesOf = (nElements: number): number => (nElements / blockSize) * blockBytes;
  for (let row = rowStart; row < rowEnd; row++) {
    let offset = dest + (row - rowStart) * source.rowBytes;
    for (const range of plan.ranges) {
      const length = bytesOf(range.end - range.start);
      runs.push({ position: source.fileOffset + row * source.fileRowBytes + bytesOf(range.start), length, dest: offset, group: -1 });
      offset += length;
    }
  }
  return runs;
}

/**
 * Few large reads for `runs`: runs adjacent in the file and in the destination become one;
 * short runs close together are covered by one read of at most `scratchBytes`. Ordered by file
 * position.
 */
export function planReads(runs: readonly ReadRun[], limits: ReadLimits): ReadOp[] {
  const sorted = [...runs].sort((a, b) => a.position - b.position);
  const merged: Array<ByteRun & { groups: Set<number> }> = [];
  for (const run of sorted) {
    const last = merged[merged.length - 1];
    if (last !== undefined && last.position + last.length === run.position && last.dest + last.length === run.dest) {
      merged[merged.length - 1] = { position: last.position, length: last.length + run.length, dest: last.dest, groups: last.groups.add(run.group) };
    } else {
      merged.push({ position: run.position, length: run.length, dest: run.dest, groups: new Set([run.group]) });
    }
  }
  const ops: ReadOp[] = [];
  let cover: typeof merged = [];
  const flush = (): void => {
    if (cover.length === 0) return;
    const first = cover[0]!;
    const last = cover[cover.length - 1]!;
    const position = first.position;
    const length = last.position + last.length - position;
    const groups = new Set<number>();
    for (const run of cover) for (const g of run.groups) groups.add(g);
    ops.push({ position, length, runs: cover.map(({ position: p, length: n, dest }) => ({ position: p, length: n, dest })), direct: cover.length === 1, groups: [...groups] });
    cover = [];
  };
  const small = (run: ByteRun): boolean => run.length < limits.maxGapBytes;
  for (const run of merged) {
    const first = cover[0];
    const last = cover[cover.length - 1];
    const joins = first !== undefined && last !== undefined && small(run) && small(last) &&
      run.position - (last.position + last.length) <= limits.maxGapBytes && run.position + run.length - first.position <= limits.scratchBytes;
    if (!joins) flush();
    cover.push(run);
    if (!small(run)) flush();
  }
  flush();
  return ops;
}

/** Bytes a list of reads transfers. */
export function bytesRead(ops: readonly ReadOp[]): number {
  return ops.reduce((n, op) => n + op.length, 0);
}
