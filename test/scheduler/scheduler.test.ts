/** The halo scheduler on small hand-made clusters whose best placement is known, and its errors. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ScheduleError } from "../../src/base/index.js";
import { evaluatePlacement, explainSchedule, scheduleForChoice, scheduleHalo, speedProportionalPlacement, uniformPlacement } from "../../src/scheduler/index.js";
import { clusterInput, countsOf, sameImportance } from "./clusters.js";

test("equal devices on perfect links split each phase in two contiguous halves", () => {
  const schedule = scheduleHalo(clusterInput([{}, {}], { nAttention: 4, nFfn: 4 }));
  assert.deepEqual(schedule.placement.layers, [{ attention: [0, 0, 1, 1], ffn: [0, 0, 1, 1] }]);
  assert.equal(schedule.objective.makespanMs, 4);
  assert.equal(schedule.objective.lostImportance, 0);
});

test("a device twice as fast takes twice the groups", () => {
  const schedule = scheduleHalo(clusterInput([{ attentionGroupMs: 1, ffnGroupMs: 1 }, { attentionGroupMs: 2, ffnGroupMs: 2 }], { nAttention: 3, nFfn: 6 }));
  assert.deepEqual(schedule.placement.layers, [{ attention: [0, 0, 1], ffn: [0, 0, 0, 0, 1, 1] }]);
});

test("the most important groups go to the coordinator, then to the more reliable worker", () => {
  // Equal speeds force two groups per device; λ only decides which two.
  const importance = [1, 8, 2, 4, 3, 6];
  const input = clusterInput(
    [{ attentionGroupMs: 10, ffnGroupMs: 10 }, { attentionGroupMs: 10, ffnGroupMs: 10, link: { lossRatio: 0.2 } }, { attentionGroupMs: 10, ffnGroupMs: 10, link: { lossRatio: 0.05 } }],
    { nAttention: 6, nFfn: 6 },
    { importance: sameImportance(1, importance, importance) },
  );
  const schedule = scheduleHalo(input, { lambdaMs: 1 });
  assert.deepEqual(schedule.placement.layers, [{ attention: [1, 0, 1, 2, 2, 0], ffn: [1, 0, 1, 2, 2, 0] }]);
  // 8 + 6 of 24 is over half the mass, and both sit on the coordinator.
  assert.deepEqual(schedule.layers[0]!.critical, { attention: [0], ffn: [0] });
  const lost = ((2 + 1) * (1 - 0.8 ** 2) + (4 + 3) * (1 - 0.95 ** 2)) / 24;
  assert.ok(Math.abs(schedule.objective.lostImportance - 2 * lost) < 1e-12);
  // No jitter: soft is the non-critical workers' return, hard twice the latest return.
  assert.deepEqual(schedule.layers[0]!.deadlines.attention, { softMs: 20, hardMs: 40 });
});

test("a critical fraction of 1 makes every holder critical, 0 none", () => {
  // λ = 0: loss does not keep the worker idle, so both devices hold a group.
  const input = clusterInput([{}, { link: { lossRatio: 0.1 } }], { nAttention: 2, nFfn: 2 });
  assert.deepEqual(scheduleHalo(input, { criticalFraction: 1, lambdaMs: 0 }).layers[0]!.critical.ffn, [0, 1]);
  assert.deepEqual(scheduleHalo(input, { criticalFraction: 0.5, lambdaMs: 0 }).layers[0]!.critical.ffn, [0], "of two equal groups, the reliable one's");
  assert.deepEqual(scheduleHalo(input, { criticalFraction: 0, lambdaMs: 0 }).layers[0]!.critical.ffn, []);
});

test("a round trip longer than the work keeps the groups on the coordinator", () => {
  const schedule = scheduleHalo(clusterInput([{}, { link: { rttMs: 10 } }], { nAttention: 4, nFfn: 4 }));
  assert.deepEqual(schedule.placement.layers, [{ attention: [0, 0, 0, 0], ffn: [0, 0, 0, 0] }]);
});

test("jitter and transfer set the deadlines: soft = return + 4 jitters, hard = 2 × (return + 4 jitters + rtt)", () => {
  // 8 bytes each way at 1 Mbit/s: 0.128 ms; the worker is expected back after 1 (compute) + 1 (rtt) + 0.128 + 0.5 (mean jitter) ms.
  const input = clusterInput([{ attentionGroupMs: 2, ffnGroupMs: 2 }, { link: { rttMs: 1, jitterMs: 0.5, bandwidthMbit: 1 } }], { nAttention: 2, nFfn: 2 }, { broadcastBytes: 8, partialSumBytes: 8 });
  const schedule = scheduleHalo(input, { criticalFraction: 0 });
  assert.deepEqual(schedule.placement.layers, [{ attention: [0, 1], ffn: [0, 1] }]);
  const expectedMs = 1 + 1 + 0.128 + 0.5;
  assert.ok(Math.abs(schedule.deadlines.ffn.softMs - (expectedMs + 2)) < 1e-12);
  assert.ok(Math.abs(schedule.deadlines.ffn.hardMs - 2 * (expectedMs + 2 + 1)) < 1e-12);
  assert.ok(Math.abs(schedule.layers[0]!.makespanMs.ffn - expectedMs) < 1e-12);
  // The worker's delay passes the soft deadline with P = exp(−(4.628 − 2.128) / 0.5) = e⁻⁵; λ weighs half a phase's importance.
  assert.ok(Math.abs(schedule.objective.lostImportance - 2 * 0.5 * Math.exp(-5)) < 1e-12);
});

test("a jittery worker gets fewer groups than a steady one of the same speed", () => {
  // Its mean delay (2 ms) counts in its expected return, so it finishes earlier work by the same makespan.
  const schedule = scheduleHalo(clusterInput([{}, { link: { jitterMs: 2 } }, {}], { nAttention: 3, nFfn: 12 }));
  assert.deepEqual(countsOf(schedule.placement.layers[0]!.ffn, 3), [5, 2, 5]);
  assert.equal(schedule.layers[0]!.makespanMs.ffn, 5);
});

test("the coordinator's own link is taken as perfect whatever its profile says", () => {
  const input = clusterInput([{ link: { rttMs: 50, jitterMs: 5, lossRatio: 0.5 } }, {}], { nAttention: 2, nFfn: 2 });
  const schedule = scheduleHalo(input);
  assert.deepEqual(schedule.placement.layers, [{ attention: [0, 1], ffn: [0, 1] }]);
  assert.equal(schedule.objective.lostImportance, 0);
  assert.equal(explainSchedule(input).explanation.devices[0]!.transferMs, 0);
});

test("a memory budget caps the fast device; the rest goes to the slow one", () => {
  // The coordinator holds one attention group (100 B) and two FFN blocks (10 B each).
  const input = clusterInput([{ memoryBudgetBytes: 120 }, { attentionGroupMs: 2, ffnGroupMs: 2 }], { nAttention: 4, nFfn: 4 });
  const schedule = scheduleHalo(input);
  assert.deepEqual(schedule.placement.layers, [{ attention: [0, 1, 1, 1], ffn: [0, 0, 1, 1] }]);
  assert.deepEqual(schedule.devices.map((d) => d.usedBytes), [120, 320]);
});

test("devices without memory, without a measured time or with a dead link get nothing", () => {
  const input = clusterInput(
    [{}, { memoryBudgetBytes: 0 }, { attentionGroupMs: 0 }, { ffnGroupMs: Infinity }, { link: { lossRatio: 1 } }],
    { nAttention: 6, nFfn: 6, nLayers: 2 },
  );
  const schedule = scheduleHalo(input);
  for (const layer of schedule.placement.layers) {
    assert.ok(!layer.attention.some((d) => d === 1 || d === 2 || d === 4));
    assert.ok(!layer.ffn.some((d) => d === 1 || d === 3 || d === 4));
  }
  assert.deepEqual(schedule.devices.map((d) => [d.nAttentionGroups, d.nFfnGroups]), [[6, 6], [0, 0], [0, 6], [6, 0], [0, 0]]);
  const { explanation, text } = explainSchedule(input);
  assert.match(explanation.devices[1]!.excluded.ffn!, /memory budget 0 B is below one ffn group/);
  assert.match(text, /2 device 2: .*\n {4}gets no attention group: no measured time for attention groups/);
  assert.match(text, /gets no ffn group: its link loses every packet/);
});

test("more devices than groups: each group on its own device, the spare devices idle", () => {
  const schedule = scheduleHalo(clusterInput([{}, {}, {}, {}, {}, {}], { nAttention: 2, nFfn: 3 }));
  assert.deepEqual(schedule.placement.layers, [{ attention: [0, 1], ffn: [0, 1, 2] }]);
  assert.deepEqual(countsOf(schedule.placement.layers[0]!.ffn, 6), [1, 1, 1, 0, 0, 0]);
});

test("the baselines: equal shares and speed shares over the devices that can hold groups", () => {
  const input = clusterInput([{ attentionGroupMs: 1, ffnGroupMs: 1 }, { memoryBudgetBytes: 0 }, { attentionGroupMs: 3, ffnGroupMs: 3 }], { nAttention: 4, nFfn: 8, nLayers: 2 });
  assert.deepEqual(uniformPlacement(input).layers[1], { attention: [0, 0, 2, 2], ffn: [0, 0, 0, 0, 2, 2, 2, 2] });
  assert.deepEqual(speedProportionalPlacement(input).layers[0], { attention: [0, 0, 0, 2], ffn: [0, 0, 0, 0, 0, 0, 2, 2] });
  assert.deepEqual(scheduleForChoice("uniform", input).placement, uniformPlacement(input));
  assert.deepEqual(scheduleForChoice("halo", input), scheduleHalo(input));
  const proportional = scheduleForChoice("proportional", input);
  assert.deepEqual(proportional, evaluatePlacement(input, speedProportionalPlacement(input)));
  assert.equal(proportional.objective.makespanMs, 2 * (3 + 6));
});

test("--explain names every device, the greedy choices, local search and each phase", () => {
  const importance = [1, 8, 2, 4, 3, 6];
  const input = clusterInput(
    [{ name: "coordinator", attentionGroupMs: 10, ffnGroupMs: 10 }, { name: "pi-a", attentionGroupMs: 10, ffnGroupMs: 10, link: { lossRatio: 0.2, rttMs: 2, jitterMs: 1 } }, { name: "pi-b", attentionGroupMs: 10, ffnGroupMs: 10, link: { lossRatio: 0.05 } }],
    { nAttention: 6, nFfn: 6, nLayers: 2 },
    { importance: sameImportance(2, importance, importance) },
  );
  const { explanation, text } = explainSchedule(input, { lambdaMs: 1 });
  assert.equal(explanation.trace!.greedy.length, 24, "one decision per group");
  assert.ok(explanation.trace!.localSearch.every((s) => s.deltaCostMs < 0), "only improving steps are accepted");
  assert.deepEqual(explanation.schedule, scheduleHalo(input, { lambdaMs: 1 }));
  assert.equal(explanation.phases.length, 4);
  for (const expected of [/^Placement: halo, 3 devices, 2 layers/m, /^Objective: .* = makespan .* \+ λ 1 ms × expected importance lost/m, /1 pi-a: .*rtt 2 ms, jitter 1 ms, loss 20\.00%/, /^Greedy/m, /^ {2}layer 1 ffn → 0: groups/m, /^Local search .*\n  greedy: [\d.]+ → [\d.]+ ms in \d+ steps \(kept\)\n  proportional: .*\n  uniform: .*\nSteps of the kept start \(greedy\): \d+\n  layer 0 attention: rearrange: \d+ groups change device/m, /^ {2}layer 1 attention: makespan .* critical \{0\}/m, /P\(late\)/]) {
    assert.match(text, expected);
  }
  const baseline = explainSchedule(input, {}, "uniform");
  assert.equal(baseline.explanation.trace, undefined);
  assert.match(baseline.text, /^Placement: uniform/);
  assert.doesNotMatch(baseline.text, /^Greedy/m);
});

function assertScheduleError(fn: () => unknown, reason: string, message: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ScheduleError);
    assert.equal(error.code, "HALO_ERR_SCHEDULE");
    assert.equal(error.reason, reason);
    assert.match(error.message, message);
    return true;
  });
}

test("budgets smaller than the model: HALO_ERR_SCHEDULE with the bytes needed and available", () => {
  const input = clusterInput([{ memoryBudgetBytes: 200 }, { memoryBudgetBytes: 100 }], { nAttention: 2, nFfn: 4, nLayers: 2 });
  assertScheduleError(() => scheduleHalo(input), "insufficient-memory", /need 480 B \(2 layers × \(2 attention × 100 B \+ 4 FFN × 10 B\)\) but the usable devices' memory budgets total 300 B; add devices or raise/);
});

test("budgets that add up but are cut too small for a group: HALO_ERR_SCHEDULE naming the group", () => {
  // 145 + 115 = 260 B for 2 × 100 + 2 × 30 B, but after one attention group each only 45 and 15 B remain.
  const input = clusterInput([{ memoryBudgetBytes: 145 }, { memoryBudgetBytes: 115 }], { nAttention: 2, nFfn: 2 }, { ffnGroupBytes: 30 });
  assertScheduleError(() => scheduleHalo(input), "insufficient-memory", /no device has room for layer 0 ffn group 1 \(30 B\); free memory per device: 0: 15 B, 1: 15 B/);
});

test("no device able to compute a kind: HALO_ERR_SCHEDULE with each device's reason", () => {
  const input = clusterInput([{ ffnGroupMs: 0 }, { ffnGroupMs: 1, memoryBudgetBytes: 5 }], { nAttention: 1, nFfn: 1 });
  assertScheduleError(() => scheduleHalo(input), "no-capable-device", /no device can compute ffn groups: device 0 \(device 0\): no measured time for ffn groups; device 1 \(device 1\): memory budget 5 B/);
  assertScheduleError(() => uniformPlacement(input), "no-capable-device", /ffn/);
});

test("negative, NaN and out-of-range figures: HALO_ERR_SCHEDULE naming the figure", () => {
  const shape = { nAttention: 2, nFfn: 2 };
  const cases: Array<[ReturnType<typeof clusterInput>, RegExp]> = [
    [clusterInput([{}, { attentionGroupMs: NaN }], shape), /device 1 \(device 1\) attentionGroupMs must be ≥ 0 or Infinity, got NaN/],
    [clusterInput([{ ffnGroupMs: -1 }], shape), /device 0 \(device 0\) ffnGroupMs .* got -1/],
    [clusterInput([{}, { memoryBudgetBytes: -5 }], shape), /memoryBudgetBytes must be ≥ 0 and finite, got -5/],
    [clusterInput([{}, { memoryBudgetBytes: Infinity }], shape), /memoryBudgetBytes .* got Infinity/],
    [clusterInput([{}, { link: { lossRatio: 1.5 } }], shape), /link.lossRatio must be in \[0, 1\] and finite, got 1.5/],
    [clusterInput([{}, { link: { rttMs: NaN } }], shape), /link.rttMs .* got NaN/],
    [clusterInput([{}, { link: { jitterMs: -0.1 } }], shape), /link.jitterMs .* got -0.1/],
    [clusterInput([], shape), /no devices/],
    [clusterInput([{}], shape, { nLayers: 0 }), /nLayers must be a positive integer, got 0/],
    [clusterInput([{}], shape, { ffnGroupBytes: NaN }), /ffnGroupBytes .* got NaN/],
    [clusterInput([{}], shape, { importance: sameImportance(1, [1, -1], [1, 1]) }), /importance of layer 0 attention group 1 must be finite and ≥ 0, got -1/],
    [clusterInput([{}], shape, { importance: sameImportance(1, [1, 1], [1]) }), /importance of layer 0 ffn has 1 groups, expected 2/],
    [clusterInput([{}], shape, { importance: sameImportance(2, [1, 1], [1, 1]) }), /importance has 2 layers, the model has 1/],
  ];
  for (const [input, message] of cases) assertScheduleError(() => scheduleHalo(input), "invalid-input", message);
  const input = clusterInput([{}], shape);
  assertScheduleError(() => scheduleHalo(input, { lambdaMs: -1 }), "invalid-input", /lambdaMs/);
  assertScheduleError(() => scheduleHalo(input, { criticalFraction: 2 }), "invalid-input", /criticalFraction must be in \[0, 1\]/);
  assertScheduleError(() => scheduleHalo(input, { maxLocalSearchMoves: 1.5 }), "invalid-input", /maxLocalSearchMoves/);
  assertScheduleError(() => evaluatePlacement(input, { nDevices: 2, layers: [{ attention: [0, 1], ffn: [0, 0] }] }), "invalid-input", /for 2 devices, the input has 1/);
});
