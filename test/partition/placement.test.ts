import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { createGroupLayout, groupsOfDevice, proportionalPlacement, proportionalSplit, validatePlacement } from "../../src/partition/index.js";

const FC_SEED = 515151;
const shapes = fc.record({
  nKvHeads: fc.integer({ min: 1, max: 32 }),
  rep: fc.integer({ min: 1, max: 8 }),
  headDim: fc.constantFrom(8, 64, 128),
  hiddenDim: fc.integer({ min: 1, max: 400 }).map((n) => n * 32),
});
const sharesArb = fc.array(fc.double({ min: 0, max: 10, noNaN: true }), { minLength: 1, maxLength: 16 }).filter((s) => s.some((x) => x > 0.01));

test("every group of every layer is placed exactly once, contiguous per device, in proportion to the shares", () => {
  fc.assert(
    fc.property(shapes, sharesArb, fc.integer({ min: 1, max: 4 }), (shape, shares, nLayers) => {
      const layout = createGroupLayout({ nHeads: shape.nKvHeads * shape.rep, nKvHeads: shape.nKvHeads, headDim: shape.headDim, hiddenDim: shape.hiddenDim });
      const placement = proportionalPlacement(layout, nLayers, shares);
      validatePlacement(placement, layout, nLayers);
      const total = shares.reduce((a, b) => a + b, 0);
      for (const kind of ["attention", "ffn"] as const) {
        const nGroups = kind === "attention" ? layout.nAttentionGroups : layout.nFfnGroups;
        const covered = new Array<number>(nGroups).fill(0);
        shares.forEach((share, device) => {
          const ranges = groupsOfDevice(placement, 0, kind, device);
          assert.ok(ranges.length <= 1, "one contiguous run per device");
          let count = 0;
          for (const r of ranges) for (let g = r.start; g < r.end; g++) (covered[g]! += 1, count++);
          // Largest remainder: each count is within one group of the exact share.
          assert.ok(Math.abs(count - (share / total) * nGroups) < 1 + 1e-9);
          if (share === 0) assert.equal(count, 0);
        });
        assert.ok(covered.every((c) => c === 1));
      }
    }),
    { seed: FC_SEED, numRuns: 300 },
  );
});

test("more devices than groups, uneven shares and zero shares", () => {
  assert.deepEqual(proportionalSplit(4, [1, 1, 1, 1, 1, 1, 1, 1]), [0, 1, 2, 3]);
  assert.deepEqual(proportionalSplit(6, [2, 1]), [0, 0, 0, 0, 1, 1]);
  assert.deepEqual(proportionalSplit(5, [0, 1, 0, 1]), [1, 1, 1, 3, 3]);
  assert.deepEqual(proportionalSplit(3, [1, 1, 1, 1, 1]), [0, 1, 2]);
});

test("invalid shares and placements are rejected with a named reason", () => {
  const layout = createGroupLayout({ nHeads: 8, nKvHeads: 4, headDim: 8, hiddenDim: 172 });
  assert.throws(() => proportionalPlacement(layout, 2, []), /at least one device/);
  assert.throws(() => proportionalPlacement(layout, 2, [0, 0]), /at least one device share must be positive/);
  assert.throws(() => proportionalPlacement(layout, 2, [1, -1]), /finite and ≥ 0/);
  const good = proportionalPlacement(layout, 2, [1, 1]);
  assert.throws(() => validatePlacement(good, layout, 3), /2 layers, the model has 3/);
  const bad = { nDevices: 2, layers: [good.layers[0]!, { attention: [0, 1, 2, 0], ffn: good.layers[0]!.ffn }] };
  assert.throws(() => validatePlacement(bad, layout, 2), /layer 1 attention group 2 on device 2/);
  const short = { nDevices: 2, layers: [good.layers[0]!, { attention: [0, 1], ffn: good.layers[0]!.ffn }] };
  assert.throws(() => validatePlacement(short, layout, 2), /2 groups, expected 4/);
});
