/**
 * How one part's rows are laid out in memory under a residency plan: resident rows in a buffer
 * of their own (read once), streamed rows packed into whichever staging slot the part gets, and
 * the matrices the kernels see (a plain one when a tensor is all resident, else a RowSplitMatrix).
 */
import { createMatrix, type Matrix } from "../kernels/index.js";
import type { PartResidency } from "./residency.js";
import { RowSplitMatrix, type RowPiece } from "./rowSplitMatrix.js";
import { groupRows, planReads, rowRuns, type PartGeometry, type ReadLimits, type ReadOp, type ReadRun, type TensorSource } from "./streamGeometry.js";

/** A streamed piece: rows of `source` at `offset` of whichever slot the part is read into. */
export interface StreamedPiece {
  readonly piece: RowPiece;
  readonly source: TensorSource;
  readonly offset: number;
}

export interface PartLayout {
  readonly residentBuffer: Uint8Array;
  /** Reads that fill `residentBuffer`. */
  readonly residentOps: readonly ReadOp[];
  /** Reads that fill a slot, offsets from the slot's start. */
  readonly streamedOps: readonly ReadOp[];
  readonly streamedPieces: readonly StreamedPiece[];
  /** By tensor name. */
  readonly matrices: ReadonlyMap<string, Matrix>;
}

/** Row ranges of a tensor that stay resident (true) or stream (false), in row order. */
function rowStates(source: TensorSource, plan: PartResidency): Array<{ start: number; end: number; resident: boolean }> {
  const states: Array<{ start: number; end: number; resident: boolean }> = [];
  const push = (start: number, end: number, resident: boolean): void => {
    if (end <= start) return;
    const last = states[states.length - 1];
    if (last !== undefined && last.resident === resident && last.end === start) last.end = end;
    else states.push({ start, end, resident });
  };
  if (source.rowsPerGroup === 0) {
    push(0, plan.sharedRows, true);
    push(plan.sharedRows, source.nRows, false);
  } else {
    plan.residentGroups.forEach((resident, g) => {
      const rows = groupRows(source, g);
      push(rows.start, rows.end, resident);
    });
  }
  return states;
}

/** One part's pieces, its resident buffer (filled by `residentOps`) and the reads of its streamed rows into a slot. */
export function buildPart(part: PartGeometry, plan: PartResidency, limits: ReadLimits, allocate: (nBytes: number) => Uint8Array): PartLayout {
  const residentBuffer = allocate(plan.residentBytes);
  const residentRuns: ReadRun[] = [];
  const streamedRuns: ReadRun[] = [];
  const streamedPieces: StreamedPiece[] = [];
  const matrices = new Map<string, Matrix>();
  let residentOffset = 0;
  let streamedOffset = 0;
  for (const source of [part.shared, ...part.rowTensors]) {
    const pieces: RowPiece[] = [];
    for (const { start, end, resident } of rowStates(source, plan)) {
      const length = (end - start) * source.rowBytes;
      if (resident) {
        residentRuns.push(...rowRuns(source, start, end, residentOffset));
        pieces.push({ rowStart: start, rowEnd: end, matrix: createMatrix(source.name, source.type, end - start, source.nCols, residentBuffer.subarray(residentOffset, residentOffset + length)) });
        residentOffset += length;
      } else {
        streamedRuns.push(...rowRuns(source, start, end, streamedOffset));
        const piece: RowPiece = { rowStart: start, rowEnd: end, matrix: undefined };
        streamedPieces.push({ piece, source, offset: streamedOffset });
        pieces.push(piece);
        streamedOffset += length;
      }
    }
    const only = pieces.length === 1 ? pieces[0]!.matrix : undefined;
    matrices.set(source.name, only ?? new RowSplitMatrix(source.name, source.type, source.nRows, source.nCols, pieces));
  }
  return { residentBuffer, residentOps: planReads(residentRuns, limits), streamedOps: planReads(streamedRuns, limits), streamedPieces, matrices };
}
