/** The scheduler's guarantees on generated clusters (fast-check, fixed seed). */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ScheduleError } from "../../src/base/index.js";
import { validatePlacement, type GroupKind } from "../../src/partition/index.js";
import { scheduleForChoice, scheduleHalo, type Schedule, type ScheduleInput } from "../../src/scheduler/index.js";
import { FC_SEED, clusterArb, clusterInput, countsOf } from "./clusters.js";

const KINDS: readonly GroupKind[] = ["attention", "ffn"];

/** The plan, or undefined when the cluster cannot hold the model (and the error says so). */
function planOrRefusal(input: ScheduleInput, lambdaMs: number): Schedule | undefined {
  try {
    return scheduleHalo(input, { lambdaMs });
  } catch (error) {
    assert.ok(error instanceof ScheduleError, String(error));
    assert.ok(error.reason === "insufficient-memory" || error.reason === "no-capable-device", error.message);
    return undefined;
  }
}

const ms = (input: ScheduleInput, d: number, kind: GroupKind): number => (kind === "attention" ? input.devices[d]!.attentionGroupMs : input.devices[d]!.ffnGroupMs);

test("every group is placed exactly once, within every memory budget, never on a device that cannot hold it", () => {
  let nPlanned = 0;
  fc.assert(
    fc.property(clusterArb, ({ input, lambdaMs }) => {
      const schedule = planOrRefusal(input, lambdaMs);
      if (schedule === undefined) return;
      nPlanned++;
      validatePlacement(schedule.placement, input.layout, input.nLayers);
      assert.equal(schedule.placement.nDevices, input.devices.length);
      schedule.devices.forEach((load, d) => {
        assert.ok(load.usedBytes <= input.devices[d]!.memoryBudgetBytes, `device ${d} uses ${load.usedBytes} of ${input.devices[d]!.memoryBudgetBytes} B`);
        if (input.devices[d]!.memoryBudgetBytes < input.ffnGroupBytes) assert.equal(load.usedBytes, 0);
      });
      const totalGroups = schedule.devices.reduce((sum, load) => sum + load.nAttentionGroups + load.nFfnGroups, 0);
      assert.equal(totalGroups, input.nLayers * (input.layout.nAttentionGroups + input.layout.nFfnGroups));
    }),
    { seed: FC_SEED, numRuns: 300 },
  );
  assert.ok(nPlanned > 150, `only ${nPlanned} of 300 clusters fit: the generator tests refusals more than plans`);
});

test("the same input gives the same schedule, also after a JSON round trip of the profiles", () => {
  fc.assert(
    fc.property(clusterArb, ({ input, lambdaMs }) => {
      const first = planOrRefusal(input, lambdaMs);
      const again = planOrRefusal(JSON.parse(JSON.stringify(input)) as ScheduleInput, lambdaMs);
      assert.deepEqual(again, first);
    }),
    { seed: FC_SEED, numRuns: 100 },
  );
});

test("on a reliable homogeneous network, load follows speed to within one group per device", () => {
  // No loss and no jitter leave only the makespan T. Every device is loaded to within one of its
  // own groups of T: c·ms + transfer ≤ T < (c + 1)·ms + transfer, i.e. c = ⌊(T − transfer) / ms⌋,
  // proportional to its speed. (Counts within one of N·speed/Σspeed would be stricter than
  // optimal: three slow devices that each round down push several groups onto one fast device.)
  const homogeneous = fc.record({
    speeds: fc.array(fc.record({ attentionGroupMs: fc.double({ min: 0.1, max: 4, noNaN: true }), ffnGroupMs: fc.double({ min: 0.1, max: 4, noNaN: true }) }), { minLength: 1, maxLength: 9 }),
    rttMs: fc.constantFrom(0, 0.5, 3),
    nAttention: fc.integer({ min: 1, max: 12 }),
    nFfn: fc.integer({ min: 1, max: 40 }),
    importance: fc.array(fc.double({ min: 0, max: 5, noNaN: true }), { minLength: 40, maxLength: 40 }),
  });
  fc.assert(
    fc.property(homogeneous, (c) => {
      const input = clusterInput(
        c.speeds.map((s) => ({ ...s, link: { rttMs: c.rttMs } })),
        { nAttention: c.nAttention, nFfn: c.nFfn, nLayers: 2 },
        { importance: [0, 1].map((l) => ({ attention: c.importance.slice(l, l + c.nAttention), ffn: c.importance.slice(0, c.nFfn) })) },
      );
      const schedule = scheduleHalo(input, { lambdaMs: 100 });
      schedule.placement.layers.forEach((layer, l) => {
        for (const kind of KINDS) {
          const makespanMs = schedule.layers[l]!.makespanMs[kind];
          countsOf(layer[kind], input.devices.length).forEach((count, d) => {
            const transferMs = d === 0 ? 0 : c.rttMs;
            if (count > 0) assert.ok(count * ms(input, d, kind) + transferMs <= makespanMs + 1e-9);
            assert.ok((count + 1) * ms(input, d, kind) + transferMs >= makespanMs - 1e-9, `layer ${l} ${kind}: device ${d} with ${count} groups could take one more before ${makespanMs} ms`);
          });
        }
      });
      assert.equal(schedule.objective.lostImportance, 0);
    }),
    { seed: FC_SEED, numRuns: 300 },
  );
});

test("a more important group never sits on a less reliable device while a more reliable one holds a less important group", () => {
  // Without jitter a device's P(miss) is its links' alone, so reliability orders devices the
  // same in every phase. Swapping two groups of a phase keeps counts and memory, so any such
  // inversion is an improving swap that local search must have taken (unless its gain is a
  // rounding-sized tie: λ × Δimportance × ΔP within 1e-9 of the phase's cost).
  fc.assert(
    fc.property(clusterArb, ({ input, lambdaMs }) => {
      const calm: ScheduleInput = { ...input, devices: input.devices.map((d) => ({ ...d, link: { ...d.link, jitterMs: 0 } })) };
      const schedule = planOrRefusal(calm, lambdaMs);
      if (schedule === undefined || calm.importance === undefined) return;
      const missOf = (d: number): number => (d === 0 ? 0 : 1 - (1 - calm.devices[d]!.link.lossRatio) ** 2);
      const total = calm.importance.reduce((sum, layer) => sum + [...layer.attention, ...layer.ffn].reduce((a, b) => a + b, 0), 0);
      const scale = (v: number): number => (total === 0 ? 0 : (v / total) * 2 * calm.nLayers);
      schedule.placement.layers.forEach((layer, l) => {
        for (const kind of KINDS) {
          const importance = calm.importance![l]![kind].map(scale);
          const tieMs = 1e-9 * Math.max(1, schedule.layers[l]!.makespanMs[kind] + lambdaMs * importance.reduce((a, b) => a + b, 0));
          const owners = layer[kind];
          owners.forEach((a, g) => {
            owners.forEach((b, h) => {
              const gainMs = lambdaMs * (importance[g]! - importance[h]!) * (missOf(a) - missOf(b));
              assert.ok(gainMs <= tieMs, `layer ${l} ${kind}: group ${g} (${importance[g]}) on device ${a} (P ${missOf(a)}), group ${h} (${importance[h]}) on device ${b} (P ${missOf(b)})`);
            });
          });
        }
      });
    }),
    { seed: FC_SEED, numRuns: 300 },
  );
});

test("the critical devices hold at least the critical fraction of each phase's importance", () => {
  fc.assert(
    fc.property(clusterArb, fc.double({ min: 0, max: 1, noNaN: true }), ({ input, lambdaMs }, criticalFraction) => {
      let schedule: Schedule;
      try {
        schedule = scheduleHalo(input, { lambdaMs, criticalFraction });
      } catch (error) {
        if (error instanceof ScheduleError && error.reason !== "invalid-input") return;
        throw error;
      }
      schedule.placement.layers.forEach((layer, l) => {
        for (const kind of KINDS) {
          const importance = input.importance?.[l]?.[kind] ?? layer[kind].map(() => 1);
          const critical = new Set(schedule.layers[l]!.critical[kind]);
          const total = importance.reduce((a, b) => a + b, 0);
          const held = importance.reduce((sum, v, g) => sum + (critical.has(layer[kind][g]!) ? v : 0), 0);
          assert.ok(held >= criticalFraction * total * (1 - 1e-9), `layer ${l} ${kind}: ${held} of ${total}`);
          const { softMs, hardMs } = schedule.layers[l]!.deadlines[kind];
          assert.ok(softMs > 0 && softMs <= hardMs);
        }
      });
    }),
    { seed: FC_SEED, numRuns: 200 },
  );
});

test("halo's objective is no worse than the baselines' wherever they fit in memory", () => {
  fc.assert(
    fc.property(clusterArb, ({ input, lambdaMs }) => {
      const halo = planOrRefusal(input, lambdaMs);
      if (halo === undefined) return;
      for (const choice of ["uniform", "proportional"] as const) {
        const baseline = scheduleForChoice(choice, input, { lambdaMs });
        if (baseline.devices.some((load, d) => load.usedBytes > input.devices[d]!.memoryBudgetBytes)) continue;
        assert.ok(halo.objective.costMs <= baseline.objective.costMs * (1 + 1e-9), `${choice}: ${baseline.objective.costMs} ms < halo ${halo.objective.costMs} ms`);
      }
    }),
    { seed: FC_SEED, numRuns: 300 },
  );
});
