/**
 * Read planning: runs adjacent in the file and in the destination become one read; short runs a
 * small gap apart share one covering read up to the scratch size; long runs are read straight
 * into place. A column slice of the model file is one short run per output row; a shard's
 * compact tensor is one run.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { planReads, rowRuns, type ReadRun, type TensorSource } from "../../src/loader/index.js";

const limits = { maxGapBytes: 64, scratchBytes: 1024 };
const run = (position: number, length: number, dest: number, group = 0): ReadRun => ({ position, length, dest, group });

test("adjacent runs merge into one direct read; long runs are never covered", () => {
  const ops = planReads([run(100, 40, 0, 0), run(140, 40, 40, 1), run(1000, 500, 80, 2)], limits);
  assert.deepEqual(ops.map((op) => [op.position, op.length, op.direct, [...op.groups].sort()]), [[100, 80, true, [0, 1]], [1000, 500, true, [2]]]);
});

test("short runs a small gap apart share a covering read into scratch, capped at the scratch size", () => {
  const runs = Array.from({ length: 40 }, (_, i) => run(i * 48, 16, i * 16, -1));
  const ops = planReads(runs, limits);
  assert.ok(ops.every((op) => !op.direct && op.length <= limits.scratchBytes));
  assert.equal(ops.reduce((n, op) => n + op.runs.length, 0), 40);
  assert.equal(ops.length, Math.ceil((39 * 48 + 16) / 1024), "one read per scratch-full");
  const far = planReads([run(0, 16, 0), run(1000, 16, 16)], limits);
  assert.equal(far.length, 2, "a gap over maxGapBytes is two reads");
});

test("a column slice of the file is one run per output row; the same tensor compact in a shard is one run", () => {
  const base = { role: "wo" as const, name: "blk.0.attn_output.weight", type: "F32" as const, fileOffset: 1000, rowsPerGroup: 0 };
  const columns: TensorSource = {
    ...base, nRows: 4, nCols: 8, rowBytes: 32, fileRowBytes: 64,
    filePlan: { role: "wo", layerIndex: 0, name: base.name, axis: "columns", nRows: 4, nCols: 16, ranges: [{ start: 4, end: 12 }], nKept: 8 },
  };
  assert.deepEqual(rowRuns(columns, 1, 3, 0).map((r) => [r.position, r.length, r.dest]), [[1000 + 64 + 16, 32, 0], [1000 + 128 + 16, 32, 32]]);
  const compact: TensorSource = { ...columns, fileRowBytes: 32, filePlan: { ...columns.filePlan, axis: "rows", nCols: 8, ranges: [{ start: 0, end: 4 }], nKept: 4 } };
  assert.deepEqual(planReads(rowRuns(compact, 1, 4, 0), limits).map((op) => [op.position, op.length]), [[1032, 96]]);
});
