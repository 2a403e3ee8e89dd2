/**
 * Shared by the slice and shard tests: the models they cut (stories260K in F32, synthetic
 * "tiny" in Q8_0 and Q4_0), random placements, and a driver that runs workers through several
 * positions of every layer and phase with the same seeded inputs.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { SeededRandom } from "../../src/base/index.js";
import type { GroupWorker } from "../../src/cluster/index.js";
import type { DeviceGroups } from "../../src/loader/index.js";
import { loadModel, writeSyntheticModel, type LoadedModel } from "../../src/model/index.js";
import { groupsOfDevice, type GroupLayout, type Placement } from "../../src/partition/index.js";
import { stories260KPath } from "../helpers/golden.js";

export interface TestModel {
  readonly label: string;
  readonly model: LoadedModel;
  /** FFN block sizes whose W2 column cuts suit the model's types. */
  readonly ffnBlockSizes: readonly number[];
}

/** stories260K (F32, hiddenDim 172 so the last block is short) and tiny synthetic Q8_0 / Q4_0 models. */
export async function openTestModels(dir: string): Promise<TestModel[]> {
  const models: TestModel[] = [{ label: "stories260K F32", model: await loadModel(stories260KPath()), ffnBlockSizes: [16, 24, 32, 172] }];
  for (const type of ["q8_0", "q4_0"] as const) {
    const path = join(dir, `tiny-${type}.gguf`);
    writeSyntheticModel(path, { shape: "tiny", type, seed: 11 });
    models.push({ label: `tiny ${type}`, model: await loadModel(path), ffnBlockSizes: [32, 64, 96] });
  }
  return models;
}

export function tempDir(prefix: string): { path: string; cleanup(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** Placements where every group of every layer goes to a random device (scattered, so devices hold several ranges). */
export function placementArbitrary(layout: GroupLayout, nLayers: number, maxDevices: number): fc.Arbitrary<Placement> {
  return fc.integer({ min: 1, max: maxDevices }).chain((nDevices) =>
    fc.array(
      fc.record({
        attention: fc.array(fc.integer({ min: 0, max: nDevices - 1 }), { minLength: layout.nAttentionGroups, maxLength: layout.nAttentionGroups }),
        ffn: fc.array(fc.integer({ min: 0, max: nDevices - 1 }), { minLength: layout.nFfnGroups, maxLength: layout.nFfnGroups }),
      }),
      { minLength: nLayers, maxLength: nLayers },
    ).map((layers) => ({ nDevices, layers })),
  );
}

/** The groups `device` holds under `placement`, per layer. */
export function deviceGroups(placement: Placement, device: number): DeviceGroups[] {
  return placement.layers.map((_, l) => ({ attention: groupsOfDevice(placement, l, "attention", device), ffn: groupsOfDevice(placement, l, "ffn", device) }));
}

/** Batches [positionStart, nTokens] run in order, so later ones attend to earlier KV. */
export const STEPS: ReadonlyArray<readonly [number, number]> = [[0, 3], [3, 1], [4, 1], [5, 2]];

/**
 * Runs every worker through STEPS × layers × phases with the same seeded input, calling
 * `check(step, layer, phase, partials)` with each worker's partial (copied).
 */
export function runLockstep(
  workers: readonly GroupWorker[],
  dim: number,
  nLayers: number,
  seed: number,
  check: (where: string, partials: Float32Array[]) => void,
): void {
  const random = new SeededRandom(seed);
  for (const [positionStart, nTokens] of STEPS) {
    for (let layer = 0; layer < nLayers; layer++) {
      for (const phase of ["attention", "ffn"] as const) {
        const input = Float32Array.from({ length: nTokens * dim }, () => random.nextGaussian());
        const partials = workers.map((w) => Float32Array.from(w.compute(phase, layer, positionStart, nTokens, input)));
        check(`positions ${positionStart}+${nTokens} layer ${layer} ${phase}`, partials);
      }
    }
  }
}

/** Asserts ‖actual − expected‖∞ ≤ tolerance · max(‖expected‖∞, 1e-3). */
export function assertClose(actual: Float32Array, expected: Float32Array, tolerance: number, where: string): void {
  assert.equal(actual.length, expected.length);
  let scale = 1e-3;
  let maxDiff = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]!));
    maxDiff = Math.max(maxDiff, Math.abs(actual[i]! - expected[i]!));
  }
  assert.ok(Number.isFinite(maxDiff) && maxDiff <= tolerance * scale, `${where}: max diff ${maxDiff} vs scale ${scale}`);
}

export function sum(vectors: readonly Float32Array[], length: number): Float32Array {
  const out = new Float32Array(length);
  for (const v of vectors) for (let i = 0; i < length; i++) out[i] = out[i]! + v[i]!;
  return out;
}
