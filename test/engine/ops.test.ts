import assert from "node:assert/strict";
import { test } from "node:test";
import { applyRope, ropeAngles, rmsNorm, swiglu } from "../../src/engine/ops.js";

test("RoPE 'normal' rotates neighbouring pairs and 'neox' rotates the two halves", () => {
  const headDim = 4;
  const cos = new Float64Array(2);
  const sin = new Float64Array(2);
  ropeAngles(3, headDim, 10000, cos, sin, 0);
  // θ_i = 10000^(−2i/4): θ_0 = 1, θ_1 = 0.01; angles 3·θ_i
  assert.ok(Math.abs(cos[0]! - Math.cos(3)) < 1e-15 && Math.abs(sin[1]! - Math.sin(0.03)) < 1e-15);
  const rotate = (x0: number, x1: number, angle: number): [number, number] => [x0 * Math.cos(angle) - x1 * Math.sin(angle), x0 * Math.sin(angle) + x1 * Math.cos(angle)];

  const normal = Float32Array.from([1, 2, 3, 4]);
  applyRope(normal, 0, 0, 1, headDim, headDim, "normal", cos, sin, 0);
  const [a0, a1] = rotate(1, 2, 3);
  const [b0, b1] = rotate(3, 4, 0.03);
  assert.deepEqual([...normal], [a0, a1, b0, b1].map(Math.fround));

  const neox = Float32Array.from([1, 2, 3, 4]);
  applyRope(neox, 0, 0, 1, headDim, headDim, "neox", cos, sin, 0);
  const [c0, c2] = rotate(1, 3, 3);
  const [c1, c3] = rotate(2, 4, 0.03);
  assert.deepEqual([...neox], [c0, c1, c2, c3].map(Math.fround));
});

test("RoPE at position 0 is the identity, and only the heads asked for rotate", () => {
  const cos = new Float64Array(2);
  const sin = new Float64Array(2);
  ropeAngles(0, 4, 10000, cos, sin, 0);
  const x = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  applyRope(x, 0, 0, 2, 4, 4, "normal", cos, sin, 0);
  assert.deepEqual([...x], [1, 2, 3, 4, 5, 6, 7, 8]);
  ropeAngles(5, 4, 10000, cos, sin, 0);
  applyRope(x, 0, 1, 2, 4, 4, "normal", cos, sin, 0);
  assert.deepEqual([...x.slice(0, 4)], [1, 2, 3, 4]);
  assert.notDeepEqual([...x.slice(4)], [5, 6, 7, 8]);
});

test("RMSNorm scales to unit root-mean-square, then by the weight", () => {
  const x = Float32Array.from([3, 4, 0, 0]);
  const out = new Float32Array(4);
  rmsNorm(out, 0, x, 0, Float32Array.from([1, 2, 1, 1]), 0);
  // rms = √(25/4) = 2.5
  assert.deepEqual([...out], [1.2, 3.2, 0, 0].map(Math.fround));
});

test("SwiGLU is silu(gate) ⊙ up", () => {
  const gate = Float32Array.from([0, 1, -2]);
  const up = Float32Array.from([5, 2, 3]);
  swiglu(gate, up, 0, 3);
  assert.deepEqual([...gate], [0, 2 / (1 + Math.exp(-1)), (3 * -2) / (1 + Math.exp(2))].map(Math.fround));
});
