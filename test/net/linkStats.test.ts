/** LinkStats (loss, late, RTT, jitter estimators) and deliveryProbability, fed by a seeded LinkEmulator on a FakeClock. */
import { test } from "node:test";
import type { TestContext } from "node:test";
import { FakeClock, HaloError } from "../../src/base/index.js";
import { LinkEmulator, ZERO_LINK_PROFILE } from "../../src/net/linkEmulator.js";
import { LinkStats, deliveryProbability } from "../../src/net/linkStats.js";
import type { LinkStatsSnapshot } from "../../src/net/linkStats.js";

const isUsage = (field: string) => (error: unknown) => error instanceof HaloError && error.code === "HALO_ERR_USAGE" && error.message.includes(field);

test("the loss estimate from messages converges to the link's true loss", (t: TestContext) => {
  t.plan(4);
  const clock = new FakeClock();
  const emulator = new LinkEmulator({ profile: { ...ZERO_LINK_PROFILE, lossRatio: 0.1 }, seed: 17, clock });
  const quick = new LinkStats();
  const slow = new LinkStats({ lossAlpha: 1 / 4096 });
  const k = 8;
  for (let message = 0; message < 12_500; message++) {
    let nReceived = 0;
    for (let i = 0; i < k; i++) emulator.send(Buffer.alloc(1), () => nReceived++);
    quick.recordMessage(k, nReceived);
    slow.recordMessage(k, nReceived);
  }
  const c = emulator.counters();
  const s = slow.snapshot();
  t.assert.ok(Math.abs(quick.snapshot().lossRatio - 0.1) < 0.03, `default alpha: ${quick.snapshot().lossRatio}`);
  t.assert.ok(Math.abs(s.lossRatio - 0.1) < 0.01, `alpha 1/4096: ${s.lossRatio}`);
  t.assert.equal(s.nDatagramsObserved, c.sent);
  t.assert.equal(s.nDatagramsLost, c.droppedRandom);
});

test("the loss estimate from sequence gaps counts every skipped number, across the u32 wrap", (t: TestContext) => {
  t.plan(5);
  const clock = new FakeClock();
  const emulator = new LinkEmulator({ profile: { ...ZERO_LINK_PROFILE, lossRatio: 0.05 }, seed: 4, clock });
  const stats = new LinkStats({ lossAlpha: 1 / 4096 });
  const first = 0xffffff00;
  let firstDelivered = -1;
  let lastDelivered = -1;
  const n = 50_000;
  for (let i = 0; i < n; i++) {
    emulator.send(Buffer.alloc(1), () => {
      stats.recordSequence((first + i) >>> 0);
      if (firstDelivered < 0) firstDelivered = i;
      lastDelivered = i;
    });
  }
  const s = stats.snapshot();
  const c = emulator.counters();
  t.assert.equal(s.nDatagramsObserved - s.nDatagramsLost, c.delivered);
  // Losses before the first arrival and after the last are invisible to sequence gaps; all others are counted.
  t.assert.equal(s.nDatagramsLost, c.droppedRandom - firstDelivered - (n - 1 - lastDelivered));
  t.assert.ok(lastDelivered > 0 && (first + lastDelivered) >>> 0 < first, "the sequence numbers wrapped");
  t.assert.ok(Math.abs(s.lossRatio - 0.05) < 0.01, `${s.lossRatio}`);
  stats.recordSequence((first + 3) >>> 0);
  t.assert.equal(stats.snapshot().nDatagramsReordered, 1);
});

test("RTT follows RFC 6298 and jitter of a constant-delay link is 0", (t: TestContext) => {
  t.plan(7);
  const stats = new LinkStats();
  stats.recordRtt(40);
  t.assert.deepEqual([stats.snapshot().rttMsEwma, stats.snapshot().rttMsDev], [40, 20]);
  stats.recordRtt(48);
  // rttvar = 3/4·20 + 1/4·|40 − 48| = 17; srtt = 7/8·40 + 1/8·48 = 41.
  t.assert.deepEqual([stats.snapshot().rttMsEwma, stats.snapshot().rttMsDev, stats.snapshot().rttMsMin], [41, 17, 40]);
  // Constant 25 ms one-way transit, sender clock in µs starting just below the u32 wrap, an arbitrary offset between the clocks.
  const constant = new LinkStats();
  let sendUs = 0xffff0000;
  for (let i = 0; i < 1000; i++) {
    constant.recordTransit(sendUs >>> 0, 123_456 + i * 1.5 + 25);
    sendUs += 1500;
  }
  t.assert.equal(constant.snapshot().jitterMs, 0);
  t.assert.equal(constant.snapshot().nTransitSamples, 1000);
  // A normal jitter of σ = 4 ms one way: RFC 3550 J averages E|D| = 2σ/√π.
  const clock = new FakeClock();
  const emulator = new LinkEmulator({ profile: { ...ZERO_LINK_PROFILE, delayMs: 30, jitterMs: 4 }, seed: 8, clock, allowReordering: true });
  const jittery = new LinkStats();
  let sum = 0;
  let nSamples = 0;
  for (let i = 0; i < 20_000; i++) {
    const sentUs = Math.round(clock.now() * 1000) >>> 0;
    emulator.send(Buffer.alloc(1), () => jittery.recordTransit(sentUs, clock.now()));
    clock.advance(1);
    if (i > 1000) {
      sum += jittery.snapshot().jitterMs;
      nSamples++;
    }
  }
  const meanJitterMs = sum / nSamples;
  t.assert.ok(Math.abs(meanJitterMs / ((2 * 4) / Math.sqrt(Math.PI)) - 1) < 0.1, `mean J ${meanJitterMs}`);
  t.assert.throws(() => stats.recordRtt(-1), isUsage("'rttMs'"));
  t.assert.throws(() => stats.recordTransit(2 ** 32, 0), isUsage("'sendTimeUs'"));
});

test("late ratio, counters, argument checks and a JSON round trip of the snapshot", (t: TestContext) => {
  t.plan(7);
  const stats = new LinkStats();
  stats.recordDeadline(7, 3);
  stats.recordDeadline(0, 0);
  t.assert.equal(stats.snapshot().lateRatio, 0.3);
  t.assert.deepEqual([stats.snapshot().nDeadlineObserved, stats.snapshot().nDeadlineLate], [10, 3]);
  const empty = new LinkStats().snapshot();
  t.assert.deepEqual([empty.rttMsEwma, empty.rttMsDev, empty.rttMsMin, empty.lossRatio, empty.jitterMs], [null, null, null, 0, 0]);
  const snapshot: LinkStatsSnapshot = stats.snapshot();
  t.assert.deepEqual(JSON.parse(JSON.stringify(snapshot)), snapshot);
  t.assert.throws(() => stats.recordMessage(3, 4), isUsage("'nReceived'"));
  t.assert.throws(() => stats.recordMessage(-1, 0), isUsage("'nExpected'"));
  t.assert.throws(() => new LinkStats({ lossAlpha: 0 }), isUsage("'lossAlpha'"));
});

test("deliveryProbability: 1 without loss and a generous deadline, falling with k and with loss", (t: TestContext) => {
  t.plan(9);
  const steady = new LinkStats();
  for (let i = 0; i < 200; i++) steady.recordRtt(40 + (i % 2)); // rttMsEwma ≈ 40.5, rttMsDev ≈ 0.5
  const clean = { ...steady.snapshot(), lossRatio: 0 };
  t.assert.equal(deliveryProbability(clean, 1, 1000), 1);
  t.assert.equal(deliveryProbability(clean, 64, 1000), 1);
  // At the mean arrival time, half the messages are late.
  t.assert.ok(Math.abs(deliveryProbability(clean, 8, clean.rttMsEwma!) - 0.5) < 1e-6);
  const byK = [1, 2, 8, 32].map((k) => deliveryProbability({ ...clean, lossRatio: 0.05 }, k, 1000));
  t.assert.deepEqual(
    byK.map((p) => Math.round(p * 1e12)),
    [1, 2, 8, 32].map((k) => Math.round(0.95 ** k * 1e12)),
  );
  const byLoss = [0, 0.01, 0.05, 0.1, 0.3].map((lossRatio) => deliveryProbability({ ...clean, lossRatio }, 8, 1000));
  t.assert.ok(byLoss.every((p, i) => i === 0 || p < byLoss[i - 1]!), `${byLoss}`);
  // A tight deadline: independent timing is never above shared timing.
  const tight = { ...clean, lossRatio: 0.02 };
  t.assert.ok(deliveryProbability(tight, 8, 41, { timing: "independent" }) < deliveryProbability(tight, 8, 41));
  // Without RTT samples only loss counts; σ = 0 is a step at the mean.
  t.assert.equal(deliveryProbability({ lossRatio: 0.5, rttMsEwma: null, rttMsDev: null, jitterMs: 0 }, 2, 1), 0.25);
  t.assert.deepEqual(
    [39.9, 40].map((deadlineMs) => deliveryProbability({ lossRatio: 0, rttMsEwma: 40, rttMsDev: 0, jitterMs: 0 }, 4, deadlineMs)),
    [0, 1],
  );
  t.assert.throws(() => deliveryProbability(clean, 1.5, 10), isUsage("'nDatagrams'"));
});
