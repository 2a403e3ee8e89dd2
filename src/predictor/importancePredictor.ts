/**
 * The predictor as it runs beside inference: every map turned into F32 weight matrices that the
 * matrix kernels multiply (native, SIMD, threaded), since the float64 loops of the fit cost
 * several percent of a layer's compute on a 2048-wide model. A full map is one (groups, dim)
 * matrix; a reduced-rank one is down (rank, dim) then up (groups, rank).
 */
import { createMatrix, type Matrix, type MatrixKernels } from "../kernels/index.js";
import type { GroupKind } from "../partition/index.js";
import type { GroupPredictor } from "./predictorFile.js";
import type { LinearMap } from "./ridge.js";

interface CompiledMap {
  readonly nOutputs: number;
  readonly bias: Float32Array;
  /** (nOutputs, dim), or (rank, dim) when `up` is set */
  readonly first: Matrix;
  /** (nOutputs, rank) */
  readonly up: Matrix | undefined;
}

/** (rows, cols) row-major F32 bytes of the transpose of a (cols, rows) row-major float64 array. */
function transposedMatrix(name: string, values: Float64Array, rows: number, cols: number): Matrix {
  const out = new Float32Array(rows * cols);
  for (let c = 0; c < cols; c++) for (let r = 0; r < rows; r++) out[r * cols + c] = values[c * rows + r]!;
  return createMatrix(name, "F32", rows, cols, new Uint8Array(out.buffer));
}

function compile(map: LinearMap, name: string): CompiledMap {
  const bias = Float32Array.from(map.bias);
  if (map.factors === undefined) return { nOutputs: map.nOutputs, bias, first: transposedMatrix(name, map.weights, map.nOutputs, map.nInputs), up: undefined };
  const { rank, down, up } = map.factors;
  return { nOutputs: map.nOutputs, bias, first: transposedMatrix(`${name}.down`, down, rank, map.nInputs), up: transposedMatrix(`${name}.up`, up, map.nOutputs, rank) };
}

export class ImportancePredictor {
  private readonly maps: Record<GroupKind, CompiledMap[]>;
  private readonly hidden: Float32Array;
  private readonly scores: Float32Array;

  constructor(readonly predictor: GroupPredictor, private readonly kernels: MatrixKernels) {
    this.maps = {
      attention: predictor.maps.attention.map((m, l) => compile(m, `blk.${l}.attn_pred`)),
      ffn: predictor.maps.ffn.map((m, l) => compile(m, `blk.${l}.ffn_pred`)),
    };
    const all = [...this.maps.attention, ...this.maps.ffn];
    this.hidden = new Float32Array(Math.max(1, ...all.map((m) => (m.up === undefined ? 0 : m.first.nRows))));
    this.scores = new Float32Array(Math.max(...all.map((m) => m.nOutputs)));
  }

  /** The predicted log-importance of every group of (layer, phase) for the input at input[offset…offset+dim). */
  predict(layerIndex: number, phase: GroupKind, input: Float32Array, offset: number, out: Float64Array | Float32Array): void {
    const map = this.maps[phase][layerIndex]!;
    const dim = this.predictor.inputDim;
    const { kernels, scores } = this;
    if (map.up === undefined) {
      kernels.matvec(map.first, input, offset, scores, 0, 0, map.nOutputs, 0, dim);
    } else {
      kernels.matvec(map.first, input, offset, this.hidden, 0, 0, map.first.nRows, 0, dim);
      kernels.matvec(map.up, this.hidden, 0, scores, 0, 0, map.nOutputs, 0, map.first.nRows);
    }
    for (let g = 0; g < map.nOutputs; g++) out[g] = scores[g]! + map.bias[g]!;
  }

  /** The calibration's static average log-importance of every group of (layer, phase). */
  staticImportance(layerIndex: number, phase: GroupKind, out: Float64Array | Float32Array): void {
    out.set(this.predictor.maps[phase][layerIndex]!.mean);
  }
}
