/** The Pi-class presets: figures traced to their sources, and slowdowns relative to the fastest device listed. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { DEVICE_PRESETS, DEVICE_PRESET_NAMES, slowdownFactors } from "../../src/cluster/index.js";

test("pi4 and pi5 stream Llama-2 7B Q40 at distributed-llama's 1312 and 441 ms/token", () => {
  const bytes = 6.74e9 * 4.5 / 8;
  assert.ok(Math.abs(bytes / (DEVICE_PRESETS.pi4.weightGBps * 1e9) - 1.312) < 1e-9);
  assert.ok(Math.abs(bytes / (DEVICE_PRESETS.pi5.weightGBps * 1e9) - 0.441) < 1e-9);
  for (const name of DEVICE_PRESET_NAMES) {
    const preset = DEVICE_PRESETS[name];
    assert.equal(preset.name, name);
    assert.ok(preset.source.length > 20 && preset.memoryBytes >= 2 ** 32 && preset.link.delayMs > 0, name);
  }
});

test("slowdowns: the fastest listed device runs at full speed, the others by their speed ratio", () => {
  assert.deepEqual(slowdownFactors(["pi5", "pi5"]), [1, 1]);
  const [pi4, pi5] = slowdownFactors(["pi4", "pi5"]);
  assert.equal(pi5, 1);
  assert.ok(Math.abs(pi4! - 1312 / 441) < 1e-12);
  assert.ok(slowdownFactors(["x86", "pi4", "jetson-nano"]).every((f, i) => (i === 0 ? f === 1 : f > 1)));
});
