/** Pinned groups (ScheduleInput.pinned): exact cases, their errors, and a property on generated clusters and pins. */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ScheduleError } from "../../src/base/index.js";
import { GROUP_KINDS, validatePlacement, type Placement } from "../../src/partition/index.js";
import { evaluatePlacement, explainSchedule, scheduleForChoice, scheduleHalo, speedProportionalPlacement, uniformPlacement, type ScheduleInput } from "../../src/scheduler/index.js";
import { FC_SEED, clusterArb, clusterInput, randomPins, type Pins } from "./clusters.js";

function assertScheduleError(fn: () => unknown, reason: string, message: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ScheduleError, String(error));
    assert.equal(error.code, "HALO_ERR_SCHEDULE");
    assert.equal(error.reason, reason);
    assert.equal(error.message, message);
    return true;
  });
}

/** The placement with every pinned entry overwritten onto its pin. */
function overwritten(placement: Placement, pins: Pins): Placement {
  return {
    nDevices: placement.nDevices,
    layers: placement.layers.map((layer, l) => ({
      attention: layer.attention.map((d, g) => ((pins[l]!.attention?.[g] ?? -1) >= 0 ? pins[l]!.attention![g]! : d)),
      ffn: layer.ffn.map((d, g) => ((pins[l]!.ffn?.[g] ?? -1) >= 0 ? pins[l]!.ffn![g]! : d)),
    })),
  };
}

test("a pinned FFN block on a slow device stays there; the free groups plan around it", () => {
  const input = clusterInput([{ attentionGroupMs: 1, ffnGroupMs: 1 }, { attentionGroupMs: 10, ffnGroupMs: 10 }], { nAttention: 2, nFfn: 4 });
  assert.deepEqual(scheduleHalo(input).placement.layers, [{ attention: [0, 0], ffn: [0, 0, 0, 0] }], "free, the slow device gets nothing");
  const schedule = scheduleHalo({ ...input, pinned: [{ ffn: [-1, -1, -1, 1] }] });
  // The pinned block makes the FFN phase 10 ms whatever else happens; the other three fit beside it on the fast device.
  assert.deepEqual(schedule.placement.layers, [{ attention: [0, 0], ffn: [0, 0, 0, 1] }]);
  assert.deepEqual(schedule.objective, { makespanMs: 2 + 10, lostImportance: 0, lambdaMs: 100, costMs: 12 });
  assert.deepEqual(schedule.devices.map((d) => [d.nAttentionGroups, d.nFfnGroups]), [[2, 3], [0, 1]]);
});

test("a live re-plan with every attention group pinned moves only FFN blocks, as a free plan would", () => {
  const before = clusterInput([{}, {}, {}], { nAttention: 6, nFfn: 12, nLayers: 2 });
  const previous = scheduleHalo(before).placement;
  assert.deepEqual(previous.layers[0], { attention: [0, 0, 1, 1, 2, 2], ffn: [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2] });
  // Device 2 became four times slower; its KV cache keeps its attention groups where they are.
  const after = clusterInput([{}, {}, { attentionGroupMs: 4, ffnGroupMs: 4 }], { nAttention: 6, nFfn: 12, nLayers: 2 });
  const pinned = previous.layers.map((layer) => ({ attention: layer.attention }));
  const schedule = scheduleHalo({ ...after, pinned });
  const free = scheduleHalo(after);
  schedule.placement.layers.forEach((layer, l) => {
    assert.deepEqual(layer.attention, previous.layers[l]!.attention, `layer ${l}: attention stays`);
    assert.notDeepEqual(free.placement.layers[l]!.attention, layer.attention, `layer ${l}: free, attention would have moved`);
    // Phases are priced apart and memory is ample, so the FFN phase is planned as if nothing were pinned.
    assert.deepEqual(layer.ffn, free.placement.layers[l]!.ffn);
    assert.deepEqual(layer.ffn, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2], "6 ms, 5 ms and 4 ms");
  });
  const { explanation, text } = explainSchedule({ ...after, pinned });
  assert.deepEqual(explanation.nPinned, { attention: 12, ffn: 0 });
  assert.equal(explanation.trace!.greedy.length, 24, "one decision per free group, none for the pinned");
  assert.ok(explanation.trace!.greedy.every((decision) => decision.kind === "ffn"));
  assert.match(text, /^Pinned: 12 attention \+ 0 FFN groups stay on their devices \(placed first, never moved\)$/m);
  assert.doesNotMatch(explainSchedule(after).text, /^Pinned/m, "no line without pins");
});

test("the baselines carry the pins: their split with each pinned group overwritten", () => {
  const input = clusterInput([{ attentionGroupMs: 1, ffnGroupMs: 1 }, { attentionGroupMs: 3, ffnGroupMs: 3 }], { nAttention: 4, nFfn: 8, nLayers: 2 });
  const pinned: Pins = [{ attention: [1, -1, -1, 0] }, { ffn: [1, 1, -1, -1, -1, -1, -1, 0] }];
  const pinnedInput = { ...input, pinned };
  assert.deepEqual(uniformPlacement(pinnedInput).layers, [
    { attention: [1, 0, 1, 0], ffn: [0, 0, 0, 0, 1, 1, 1, 1] },
    { attention: [0, 0, 1, 1], ffn: [1, 1, 0, 0, 1, 1, 1, 0] },
  ]);
  assert.deepEqual(speedProportionalPlacement(pinnedInput), overwritten(speedProportionalPlacement(input), pinned));
  for (const choice of ["uniform", "proportional"] as const) {
    const schedule = scheduleForChoice(choice, pinnedInput);
    assert.deepEqual(schedule, evaluatePlacement(input, overwritten(scheduleForChoice(choice, input).placement, pinned)));
  }
  const halo = scheduleForChoice("halo", pinnedInput);
  assert.deepEqual(halo.placement, overwritten(halo.placement, pinned));
});

test("pins of the wrong shape or out of range: invalid-input naming the layer, kind and group", () => {
  const input = clusterInput([{}, {}], { nAttention: 2, nFfn: 3, nLayers: 2 });
  const cases: Array<[unknown, string]> = [
    [[{}], "pinned has 1 layers, the model has 2"],
    [[{}, { attention: [0, 1, 1] }], "pinned of layer 1 attention has 3 groups, expected 2"],
    [[{ ffn: [0, 1] }, {}], "pinned of layer 0 ffn has 2 groups, expected 3"],
    [[{}, { ffn: [-1, 2, 0] }], "pinned of layer 1 ffn group 1 must be a device index in [0, 2) or -1 (free), got 2"],
    [[{ attention: [-2, 0] }, {}], "pinned of layer 0 attention group 0 must be a device index in [0, 2) or -1 (free), got -2"],
    [[{ attention: [0, 0.5] }, {}], "pinned of layer 0 attention group 1 must be a device index in [0, 2) or -1 (free), got 0.5"],
    [[{ attention: [NaN, 0] }, {}], "pinned of layer 0 attention group 0 must be a device index in [0, 2) or -1 (free), got NaN"],
    [[{}, null], "pinned of layer 1 must be an object with optional attention and ffn lists, got null"],
  ];
  for (const [pinned, message] of cases) {
    const bad = { ...input, pinned } as ScheduleInput;
    assertScheduleError(() => scheduleHalo(bad), "invalid-input", message);
    assertScheduleError(() => scheduleForChoice("uniform", bad), "invalid-input", message);
    assertScheduleError(() => evaluatePlacement(bad, uniformPlacement(input)), "invalid-input", message);
  }
});

test("a pin onto a device that cannot hold its kind: invalid-input with the device's reason, for halo and the baselines", () => {
  const input = clusterInput([{}, { ffnGroupMs: Infinity }, { link: { lossRatio: 1 } }], { nAttention: 2, nFfn: 2 });
  const onSlowless = { ...input, pinned: [{ attention: [1, -1], ffn: [-1, 1] }] };
  const message = "layer 0 ffn group 1 is pinned to device 1 (device 1), which cannot hold ffn groups: no measured time for ffn groups; pin it to another device or leave it free (-1)";
  assertScheduleError(() => scheduleHalo(onSlowless), "invalid-input", message);
  assertScheduleError(() => scheduleForChoice("proportional", onSlowless), "invalid-input", message);
  assertScheduleError(() => uniformPlacement(onSlowless), "invalid-input", message);
  assertScheduleError(() => scheduleHalo({ ...input, pinned: [{ attention: [-1, 2] }] }), "invalid-input", "layer 0 attention group 1 is pinned to device 2 (device 2), which cannot hold attention groups: its link loses every packet; pin it to another device or leave it free (-1)");
  assert.deepEqual(scheduleHalo({ ...input, pinned: [{ attention: [1, -1] }] }).placement.layers[0]!.attention[0], 1, "its attention groups are fine");
});

test("pins over a device's budget: insufficient-memory naming the device, before any group is placed", () => {
  // Device 1 holds 150 B: one attention group (100 B) fits, two pinned do not, however much room device 0 has.
  const input = clusterInput([{}, { memoryBudgetBytes: 150 }], { nAttention: 2, nFfn: 4, nLayers: 2 });
  const overBudget = { ...input, pinned: [{ attention: [1, -1], ffn: [1, 1, -1, -1] }, { attention: [-1, 1] }] };
  assertScheduleError(() => scheduleHalo(overBudget), "insufficient-memory", "the groups pinned to device 1 (device 1) need 220 B (2 attention × 100 B + 2 FFN × 10 B) but its memory budget is 150 B; pin fewer groups to it or raise its budget");
  // A lost worker comes with a budget of 0: pinning to it is a shortfall of memory first.
  const lost = clusterInput([{}, { attentionGroupMs: Infinity, ffnGroupMs: Infinity, memoryBudgetBytes: 0 }], { nAttention: 2, nFfn: 2 });
  assertScheduleError(() => scheduleHalo({ ...lost, pinned: [{ ffn: [-1, 1] }] }), "insufficient-memory", "the groups pinned to device 1 (device 1) need 10 B (0 attention × 100 B + 1 FFN × 10 B) but its memory budget is 0 B; pin fewer groups to it or raise its budget");
  // Within budget, the pins count toward it: device 1 keeps one attention group and room for five FFN blocks, no more.
  const schedule = scheduleHalo({ ...input, pinned: [{ attention: [1, -1] }, {}] });
  assert.ok(schedule.devices[1]!.usedBytes <= 150);
  assert.equal(schedule.placement.layers[0]!.attention[0], 1);
  assert.equal(schedule.devices[1]!.nAttentionGroups, 1);
});

test("with random pins that fit: each pinned group at its pin, each group placed once within memory, never worse than the pinned baselines", () => {
  let nPlanned = 0;
  let nPinned = 0;
  const pinsArb = fc.record({ seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }), ratio: fc.constantFrom(0.1, 0.5, 1), fromPlan: fc.boolean() });
  fc.assert(
    fc.property(clusterArb, pinsArb, ({ input, lambdaMs }, { seed, ratio, fromPlan }) => {
      let from: Placement | undefined;
      if (fromPlan) {
        // Planned under another λ, as a live re-plan pins a placement planned under other conditions.
        try {
          from = scheduleHalo(input, { lambdaMs: lambdaMs === 0 ? 100 : 0 }).placement;
        } catch {
          // The cluster cannot hold the model: pins to random devices instead.
        }
      }
      const pinned = randomPins(input, seed, ratio, from);
      const pinnedInput: ScheduleInput = { ...input, pinned };
      let explained;
      try {
        explained = explainSchedule(pinnedInput, { lambdaMs }).explanation;
      } catch (error) {
        assert.ok(error instanceof ScheduleError, String(error));
        assert.ok(error.reason === "insufficient-memory" || error.reason === "no-capable-device", error.message);
        return;
      }
      const { schedule, trace } = explained;
      nPlanned++;
      validatePlacement(schedule.placement, input.layout, input.nLayers);
      schedule.placement.layers.forEach((layer, l) => {
        for (const kind of GROUP_KINDS) {
          pinned[l]![kind]!.forEach((d, g) => {
            if (d < 0) return;
            nPinned++;
            assert.equal(layer[kind][g], d, `layer ${l} ${kind} group ${g} left its pin`);
          });
        }
      });
      const isPinned = (layer: number, kind: "attention" | "ffn", group: number): boolean => pinned[layer]![kind]![group]! >= 0;
      assert.ok(trace!.greedy.every((decision) => !isPinned(decision.layer, decision.kind, decision.group)), "the greedy pass decides only free groups");
      assert.ok(trace!.localSearch.every((step) => step.type !== "move" || !isPinned(step.layer, step.kind, step.group)), "local search moves only free groups");
      schedule.devices.forEach((load, d) => assert.ok(load.usedBytes <= input.devices[d]!.memoryBudgetBytes, `device ${d} uses ${load.usedBytes} of ${input.devices[d]!.memoryBudgetBytes} B`));
      const totalGroups = schedule.devices.reduce((sum, load) => sum + load.nAttentionGroups + load.nFfnGroups, 0);
      assert.equal(totalGroups, input.nLayers * (input.layout.nAttentionGroups + input.layout.nFfnGroups));
      for (const baseline of [uniformPlacement(input), speedProportionalPlacement(input)]) {
        const start = evaluatePlacement(input, overwritten(baseline, pinned), { lambdaMs });
        if (start.devices.some((load, d) => load.usedBytes > input.devices[d]!.memoryBudgetBytes)) continue;
        assert.ok(schedule.objective.costMs <= start.objective.costMs * (1 + 1e-9), `a pinned baseline costs ${start.objective.costMs} ms < halo ${schedule.objective.costMs} ms`);
      }
    }),
    { seed: FC_SEED, numRuns: 300 },
  );
  assert.ok(nPlanned > 150, `only ${nPlanned} of 300 pinned clusters planned: the generator tests refusals more than pins`);
  assert.ok(nPinned > 1000, `only ${nPinned} pins were checked`);
});
