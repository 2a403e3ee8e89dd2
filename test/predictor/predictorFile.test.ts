/** The predictor sidecar: a byte-exact round trip, and clear errors for another model, another version or a damaged file. */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { after, test } from "node:test";
import { SeededRandom } from "../../src/base/index.js";
import { predictorRank, readPredictor, writePredictor, type GroupPredictor } from "../../src/predictor/index.js";
import { createTempDir } from "../helpers/modelFiles.js";

const tmp = createTempDir("halo-predictor-");
after(() => tmp.cleanup());
const SHA = "ab".repeat(32);

function samplePredictor(): GroupPredictor {
  const random = new SeededRandom(5);
  // Values that f32 holds exactly, so the round trip can be compared bit for bit.
  const values = (n: number) => Float64Array.from({ length: n }, () => Math.fround(random.nextGaussian()));
  const map = (g: number) => ({ nInputs: 8, nOutputs: g, weights: values(8 * g), bias: values(g), mean: values(g) });
  return { modelSha256: SHA, nLayers: 2, inputDim: 8, ffnBlockSize: 32, maps: { attention: [map(4), map(4)], ffn: [map(6), map(6)] } };
}

test("a predictor file reads back exactly what was written", async () => {
  const path = tmp.file("p.halo");
  const predictor = samplePredictor();
  writePredictor(path, predictor);
  assert.deepEqual(await readPredictor(path, SHA), predictor);
});

test("another model, another version, a truncated or damaged file: HALO_ERR_PREDICTOR naming the problem", async () => {
  const path = tmp.file("q.halo");
  writePredictor(path, samplePredictor());
  const other = "cd".repeat(32);
  await assert.rejects(readPredictor(path, other), (error: unknown) => {
    assert.ok(error instanceof Error && "code" in error && error.code === "HALO_ERR_PREDICTOR");
    assert.equal(error.message, `predictor ${path}: fitted for the model ${SHA}, not this one (${other}); calibrate again`);
    return true;
  });
  const bytes = readFileSync(path);
  const truncated = tmp.file("truncated.halo");
  writeFileSync(truncated, bytes.subarray(0, bytes.length - 20));
  await assert.rejects(readPredictor(truncated, SHA), (error: unknown) => error instanceof Error && "code" in error && error.code === "HALO_ERR_PREDICTOR" && error.message.startsWith(`predictor ${truncated}: `));
  const versioned = tmp.file("v2.halo");
  writePredictor(versioned, samplePredictor());
  const patched = readFileSync(versioned);
  const key = Buffer.from("halo.predictor.version");
  const at = patched.indexOf(key) + key.length + 4; // the uint32 value after its type id
  patched.writeUInt32LE(2, at);
  writeFileSync(versioned, patched);
  await assert.rejects(readPredictor(versioned, SHA), /format version 2, this build reads 1/);
  const missing = tmp.file("missing.halo");
  await assert.rejects(readPredictor(missing, SHA), (error: unknown) => error instanceof Error && "code" in error && error.code === "HALO_ERR_PREDICTOR" && error.message.startsWith(`predictor ${missing}: `) && error.message.includes("ENOENT"));
});

test("a reduced-rank predictor stores its two factors, reads back bit for bit, and reports its rank", async () => {
  const random = new SeededRandom(9);
  const values = (n: number) => Float64Array.from({ length: n }, () => Math.fround(random.nextGaussian()));
  const map = (g: number) => {
    const down = values(8 * 2);
    const up = values(2 * g);
    const weights = new Float64Array(8 * g);
    for (let i = 0; i < 8; i++) for (let r = 0; r < 2; r++) for (let k = 0; k < g; k++) weights[i * g + k] = weights[i * g + k]! + down[i * 2 + r]! * up[r * g + k]!;
    return { nInputs: 8, nOutputs: g, weights, bias: values(g), mean: values(g), factors: { rank: 2, down, up } };
  };
  const predictor: GroupPredictor = { modelSha256: SHA, nLayers: 1, inputDim: 8, ffnBlockSize: 32, maps: { attention: [map(4)], ffn: [map(6)] } };
  const path = tmp.file("rank.halo");
  writePredictor(path, predictor);
  const back = await readPredictor(path, SHA);
  assert.equal(predictorRank(back), 2);
  assert.equal(predictorRank(samplePredictor()), 0);
  assert.deepEqual(back, predictor);
});
