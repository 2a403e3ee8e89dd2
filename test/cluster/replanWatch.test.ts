/**
 * When to plan again: membership changes at once, drift only past its thresholds once the
 * placement has settled; and the re-planner's waits end by timeout or at close.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { FakeClock } from "../../src/base/index.js";
import { DEFAULT_REPLAN_POLICY, ReplanWatch, describeTrigger, type WorkerSample } from "../../src/cluster/index.js";
import { LiveReplanner } from "../../src/cluster/liveReplan.js";
import type { WorkerLink } from "../../src/cluster/workerLink.js";
import { LinkStats, type ControlMessage } from "../../src/net/index.js";
import { createGroupLayout, type Placement } from "../../src/partition/index.js";

const up = (rttMs: number | null, lossRatio = 0): WorkerSample => ({ active: true, rttMs, lossRatio });
const down: WorkerSample = { active: false, rttMs: 5, lossRatio: 0 };

test("a worker leaving or coming back triggers at once, even right after a plan", () => {
  const watch = new ReplanWatch();
  watch.planned([up(5), up(5)], 10);
  assert.equal(watch.check([up(5), up(5)], 11), undefined);
  assert.deepEqual(watch.check([up(5), down], 11), { kind: "leave", device: 2 });
  watch.planned([up(5), down], 11);
  assert.equal(watch.check([up(5), down], 12), undefined);
  assert.deepEqual(watch.check([up(5), up(5)], 12), { kind: "join", device: 2 });
});

test("drift: measured from the baseline taken settleTokens after the plan, past both the ratio and the minimum change", () => {
  const watch = new ReplanWatch({ settleTokens: 4, rttRatio: 1, rttMinMs: 2, lossDelta: 0.05 });
  watch.planned([up(null), up(null)], 0);
  // Not settled yet: even a tenfold change is the new placement's own doing.
  assert.equal(watch.check([up(50), up(5)], 3), undefined);
  // Settled: this is the baseline.
  assert.equal(watch.check([up(5), up(1)], 4), undefined);
  assert.equal(watch.check([up(9.9), up(1.9)], 5), undefined, "under ×2");
  assert.equal(watch.check([up(5), up(2.5)], 6), undefined, "×2.5 but only 1.5 ms");
  assert.deepEqual(watch.check([up(10.5), up(1)], 7), { kind: "drift", device: 1, what: "rtt", from: 5, to: 10.5 });
  assert.deepEqual(watch.check([up(2), up(1)], 7), { kind: "drift", device: 1, what: "rtt", from: 5, to: 2 }, "faster counts too");
  assert.equal(watch.check([up(5), up(1, 0.049)], 8), undefined);
  assert.deepEqual(watch.check([up(5), up(1, 0.05)], 8), { kind: "drift", device: 2, what: "loss", from: 0, to: 0.05 });
});

test("a worker without a round trip at the baseline takes its first sample as its baseline", () => {
  const watch = new ReplanWatch({ settleTokens: 1 });
  watch.planned([up(null)], 0);
  assert.equal(watch.check([up(null)], 1), undefined);
  assert.equal(watch.check([up(30)], 2), undefined);
  assert.equal(watch.check([up(31)], 3), undefined);
  assert.equal(watch.check([up(70)], 4)?.kind, "drift");
});

test("triggers read as sentences; a policy out of range is a usage error naming the fields", () => {
  assert.equal(describeTrigger({ kind: "drift", device: 3, what: "rtt", from: 2, to: 7.25 }), "worker 3's round trip drifted from 2.0 ms to 7.3 ms");
  assert.equal(describeTrigger({ kind: "drift", device: 1, what: "loss", from: 0.01, to: 0.08 }), "worker 1's missed contributions drifted from 1.0% to 8.0%");
  assert.equal(describeTrigger({ kind: "leave", device: 2 }), "worker 2 left");
  assert.equal(describeTrigger({ kind: "join", device: 2 }), "worker 2 joined again");
  assert.equal(describeTrigger({ kind: "request" }), "a re-plan was requested");
  assert.throws(() => new ReplanWatch({ settleTokens: 0 }), {
    code: "HALO_ERR_USAGE",
    message: `re-plan policy out of range: ${JSON.stringify({ ...DEFAULT_REPLAN_POLICY, settleTokens: 0 })} (rttRatio > 0, rttMinMs ≥ 0, lossDelta in (0, 1], settleTokens an integer ≥ 1)`,
  });
  assert.throws(() => new ReplanWatch({ lossDelta: Number.NaN }), { code: "HALO_ERR_USAGE" });
});

test("LiveReplanner: a prepare that is never answered times out and abandons the re-plan; close() ends a pending wait and its timer", async () => {
  const layout = createGroupLayout({ nHeads: 8, nKvHeads: 4, headDim: 8, hiddenDim: 64 });
  const current: Placement = { nDevices: 2, layers: [{ attention: [0, 0, 1, 1], ffn: [0, 1] }] };
  const sent: ControlMessage[] = [];
  const logs: string[] = [];
  const link = { index: 1, state: "active", receivesShards: false, stats: new LinkStats(), connection: { send: (m: ControlMessage) => sent.push(m) } } as unknown as WorkerLink;
  const make = (clock: FakeClock): LiveReplanner<undefined> => new LiveReplanner<undefined>({
    layout, nLayers: 1, links: [link], clock, placement: () => current, profiles: () => [null, null], refreshProfile: async () => undefined,
    plan: (_p, context) => ({ placement: { nDevices: 2, layers: [{ attention: [...context.current.layers[0]!.attention], ffn: [1, 1] }] } }),
    apply: () => assert.fail("nothing is applied"), activateTimeoutMs: () => 2000, log: (line) => logs.push(line),
  });
  const clock = new FakeClock();
  const replanner = make(clock);
  replanner.request();
  await replanner.afterToken(10);
  assert.deepEqual(sent, [{ type: "prepare", sequence: 1, groups: [{ attention: [[2, 4]], ffn: [[0, 2]] }], ffnBlockSize: 32 }]);
  assert.equal(clock.pendingTimers, 1);
  clock.advance(300_000);
  await new Promise((resolve) => setImmediate(resolve));
  await replanner.afterToken(11);
  assert.ok(logs.some((line) => line.includes("re-plan 1 abandoned: a worker could not prepare its groups")), logs.join("\n"));
  assert.deepEqual(replanner.history, []);

  const second = new FakeClock();
  const closing = make(second);
  closing.request();
  await closing.afterToken(3);
  assert.equal(second.pendingTimers, 1);
  closing.close();
  assert.equal(second.pendingTimers, 0);
});
