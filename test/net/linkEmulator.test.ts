/** LinkEmulator: loss (iid, Gilbert-Elliott), delay/jitter, token bucket and queue, determinism, on a FakeClock. */
import { test } from "node:test";
import type { TestContext } from "node:test";
import { FakeClock, HaloError } from "../../src/base/index.js";
import { LinkEmulator, ZERO_LINK_PROFILE, gilbertElliottForBursts, meanLossRatio, validateLinkProfile } from "../../src/net/linkEmulator.js";
import type { LinkEmulatorOptions, LinkFate, LinkProfile } from "../../src/net/linkEmulator.js";

const profileOf = (overrides: Partial<LinkProfile>): LinkProfile => ({ ...ZERO_LINK_PROFILE, ...overrides });

/** Sends n datagrams `spacingMs` apart (each's first 4 bytes: its index), runs the clock out, and returns what happened. */
function run(
  options: Omit<LinkEmulatorOptions, "clock">,
  n: number,
  spacingMs: number,
  sizeBytes = 100,
): { fates: LinkFate[]; sentAtMs: number[]; arrivals: { index: number; atMs: number }[]; emulator: LinkEmulator; clock: FakeClock } {
  const clock = new FakeClock();
  const emulator = new LinkEmulator({ ...options, clock });
  const fates: LinkFate[] = [];
  const sentAtMs: number[] = [];
  const arrivals: { index: number; atMs: number }[] = [];
  const datagram = Buffer.alloc(sizeBytes);
  for (let i = 0; i < n; i++) {
    if (i > 0 && spacingMs > 0) clock.advance(spacingMs);
    datagram.writeUInt32LE(i, 0);
    sentAtMs.push(clock.now());
    fates.push(emulator.send(datagram, (d) => arrivals.push({ index: d.readUInt32LE(0), atMs: clock.now() })));
  }
  clock.advance(1e7);
  return { fates, sentAtMs, arrivals, emulator, clock };
}

/** Mean length of runs of consecutive drops. */
function meanBurstLength(fates: readonly LinkFate[]): number {
  let nBursts = 0;
  let nLost = 0;
  let previousLost = false;
  for (const fate of fates) {
    const lost = fate === "dropped-random";
    if (lost) nLost++;
    if (lost && !previousLost) nBursts++;
    previousLost = lost;
  }
  return nLost / nBursts;
}

function meanAndStd(values: readonly number[]): { mean: number; std: number } {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const variance = values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1);
  return { mean, std: Math.sqrt(variance) };
}

test("profile and option validation throws HALO_ERR_USAGE naming the field", (t: TestContext) => {
  const bad: [Partial<LinkProfile> | Record<string, unknown>, string][] = [
    [{ lossRatio: -0.01 }, "'lossRatio'"],
    [{ lossRatio: 1.5 }, "'lossRatio'"],
    [{ lossRatio: Number.NaN }, "'lossRatio'"],
    [{ delayMs: -1 }, "'delayMs'"],
    [{ delayMs: Infinity }, "'delayMs'"],
    [{ jitterMs: "5" }, "'jitterMs'"],
    [{ bandwidthMbit: -2 }, "'bandwidthMbit'"],
    [{ jitterDistribution: "pareto" }, "'jitterDistribution'"],
    [{ gilbertElliott: { pGoodToBad: 1.2, pBadToGood: 0.5, lossInBad: 1, lossInGood: 0 } }, "'gilbertElliott.pGoodToBad'"],
    [{ gilbertElliott: { pGoodToBad: 0.1, pBadToGood: 0, lossInBad: 1, lossInGood: 0 } }, "'gilbertElliott.pBadToGood'"],
    [{ gilbertElliott: { pGoodToBad: 0.1, pBadToGood: 0.5, lossInBad: -1, lossInGood: 0 } }, "'gilbertElliott.lossInBad'"],
    [{ gilbertElliott: { pGoodToBad: 0.1, pBadToGood: 0.5, lossInBad: 1 } }, "'gilbertElliott.lossInGood'"],
    [{ lossRatio: 0.1, gilbertElliott: { pGoodToBad: 0.1, pBadToGood: 0.5, lossInBad: 1, lossInGood: 0 } }, "'lossRatio'"],
  ];
  const badOptions: [Partial<LinkEmulatorOptions>, string][] = [
    [{ queueLimitBytes: -1 }, "'queueLimitBytes'"],
    [{ burstBytes: 0 }, "'burstBytes'"],
    [{ seed: 1.5 }, "'seed'"],
  ];
  t.plan(2 * bad.length + badOptions.length + 2);
  for (const [overrides, field] of bad) {
    const profile = { ...ZERO_LINK_PROFILE, ...overrides } as LinkProfile;
    t.assert.throws(() => validateLinkProfile(profile), (error: unknown) => error instanceof HaloError && error.code === "HALO_ERR_USAGE" && error.message.includes(field));
    t.assert.throws(() => new LinkEmulator({ profile, seed: 1, clock: new FakeClock() }), (error: unknown) => error instanceof HaloError && error.message.includes(field));
  }
  for (const [overrides, field] of badOptions) {
    const options = { profile: ZERO_LINK_PROFILE, seed: 1, clock: new FakeClock(), ...overrides } as LinkEmulatorOptions;
    t.assert.throws(() => new LinkEmulator(options), (error: unknown) => error instanceof HaloError && error.code === "HALO_ERR_USAGE" && error.message.includes(field));
  }
  t.assert.deepEqual(validateLinkProfile({ lossRatio: 1, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 }), { lossRatio: 1, delayMs: 0, jitterMs: 0, bandwidthMbit: 0 });
  t.assert.ok(Object.isFrozen(validateLinkProfile(profileOf({ delayMs: 3 }))));
});

test("a zero profile delivers inside send(), with no timer and no copy", (t: TestContext) => {
  t.plan(6);
  const clock = new FakeClock();
  const emulator = new LinkEmulator({ profile: ZERO_LINK_PROFILE, seed: 1, clock });
  const datagram = Buffer.from("hello");
  let received: Buffer | null = null;
  const fate = emulator.send(datagram, (d) => (received = d));
  t.assert.equal(fate, "delivered");
  t.assert.equal(received, datagram);
  t.assert.equal(clock.pendingTimers, 0);
  t.assert.equal(emulator.pendingDatagrams, 0);
  t.assert.deepEqual(emulator.counters(), { sent: 1, droppedRandom: 0, droppedQueue: 0, delivered: 1, discarded: 0, sentBytes: 5, deliveredBytes: 5 });
  // Loss alone adds no timer either.
  const lossy = new LinkEmulator({ profile: profileOf({ lossRatio: 0.5 }), seed: 1, clock });
  for (let i = 0; i < 100; i++) lossy.send(datagram, () => {});
  t.assert.equal(clock.pendingTimers, 0);
});

test("iid drop rate over 10^5 datagrams is within ±0.5 percentage points of 1, 5, 10 and 30 %", (t: TestContext) => {
  const rates = [0.01, 0.05, 0.1, 0.3];
  t.plan(2 * rates.length);
  for (const [i, lossRatio] of rates.entries()) {
    const { emulator } = run({ profile: profileOf({ lossRatio }), seed: 100 + i }, 100_000, 0);
    const c = emulator.counters();
    t.assert.ok(Math.abs(c.droppedRandom / c.sent - lossRatio) < 0.005, `${lossRatio}: measured ${c.droppedRandom / c.sent}`);
    t.assert.equal(c.delivered + c.droppedRandom, c.sent);
  }
});

test("Gilbert-Elliott loss averages its stationary value and comes in bursts longer than iid loss", (t: TestContext) => {
  t.plan(7);
  const params = gilbertElliottForBursts(0.1, 4);
  t.assert.ok(Math.abs(meanLossRatio(profileOf({ gilbertElliott: params })) - 0.1) < 1e-12);
  const n = 400_000;
  const bursty = run({ profile: profileOf({ gilbertElliott: params }), seed: 5 }, n, 0);
  const iid = run({ profile: profileOf({ lossRatio: 0.1 }), seed: 5 }, n, 0);
  const burstyLoss = bursty.emulator.counters().droppedRandom / n;
  t.assert.ok(Math.abs(burstyLoss - 0.1) < 0.005, `bursty loss ${burstyLoss}`);
  const burstyBurst = meanBurstLength(bursty.fates);
  const iidBurst = meanBurstLength(iid.fates);
  t.assert.ok(Math.abs(burstyBurst - 4) < 0.2, `bursty mean burst ${burstyBurst}`);
  t.assert.ok(Math.abs(iidBurst - 1 / 0.9) < 0.05, `iid mean burst ${iidBurst}`);
  t.assert.ok(burstyBurst > 3 * iidBurst);
  // A general two-state chain: loss in both states.
  const general = { pGoodToBad: 0.02, pBadToGood: 0.2, lossInBad: 0.7, lossInGood: 0.01 };
  const expected = (0.02 / 0.22) * 0.7 + (0.2 / 0.22) * 0.01;
  t.assert.ok(Math.abs(meanLossRatio(profileOf({ gilbertElliott: general })) - expected) < 1e-12);
  const measured = run({ profile: profileOf({ gilbertElliott: general }), seed: 6 }, n, 0).emulator.counters().droppedRandom / n;
  t.assert.ok(Math.abs(measured - expected) < 0.005, `general GE loss ${measured}, expected ${expected}`);
});

test("normal jitter: one-way delays have mean delayMs and standard deviation jitterMs", (t: TestContext) => {
  t.plan(4);
  const n = 20_000;
  const { arrivals, sentAtMs } = run({ profile: profileOf({ delayMs: 20, jitterMs: 5 }), seed: 9, allowReordering: true }, n, 1);
  t.assert.equal(arrivals.length, n);
  const delays = arrivals.map(({ index, atMs }) => atMs - sentAtMs[index]!);
  const { mean, std } = meanAndStd(delays);
  t.assert.ok(Math.abs(mean - 20) < 0.15, `mean ${mean}`);
  t.assert.ok(Math.abs(std - 5) < 0.15, `std ${std}`);
  t.assert.ok(Math.min(...delays) >= 0);
});

test("uniform jitter: one-way delays lie in delayMs ± jitterMs with the uniform's moments", (t: TestContext) => {
  t.plan(4);
  const n = 20_000;
  const { arrivals, sentAtMs } = run({ profile: profileOf({ delayMs: 20, jitterMs: 5, jitterDistribution: "uniform" }), seed: 9, allowReordering: true }, n, 1);
  const delays = arrivals.map(({ index, atMs }) => atMs - sentAtMs[index]!);
  const { mean, std } = meanAndStd(delays);
  t.assert.ok(Math.abs(mean - 20) < 0.1, `mean ${mean}`);
  t.assert.ok(Math.abs(std - 5 / Math.sqrt(3)) < 0.1, `std ${std}`);
  t.assert.ok(Math.min(...delays) >= 15);
  t.assert.ok(Math.max(...delays) <= 25);
});

test("FIFO by default: each delivery time is the running maximum of the reordering link's times", (t: TestContext) => {
  t.plan(4);
  const profile = profileOf({ delayMs: 10, jitterMs: 5, lossRatio: 0.05 });
  const fifo = run({ profile, seed: 21 }, 5_000, 1);
  const free = run({ profile, seed: 21, allowReordering: true }, 5_000, 1);
  t.assert.deepEqual(fifo.arrivals.map((a) => a.index), [...fifo.arrivals.map((a) => a.index)].sort((a, b) => a - b));
  const freeOrder = free.arrivals.map((a) => a.index);
  t.assert.notDeepEqual(freeOrder, [...freeOrder].sort((a, b) => a - b), "jitter reorders when allowed");
  const rawByIndex = new Map(free.arrivals.map((a) => [a.index, a.atMs]));
  let runningMax = -Infinity;
  const expected = fifo.arrivals.map(({ index }) => (runningMax = Math.max(runningMax, rawByIndex.get(index)!)));
  t.assert.deepEqual(fifo.arrivals.map((a) => a.atMs), expected);
  t.assert.deepEqual(fifo.fates, free.fates);
});

test("bandwidth: a backlog drains at the configured rate within 2 %", (t: TestContext) => {
  const cases = [
    { bandwidthMbit: 10, sizeBytes: 1000 },
    { bandwidthMbit: 1, sizeBytes: 1400 },
    { bandwidthMbit: 100, sizeBytes: 200 },
  ];
  t.plan(2 * cases.length);
  for (const { bandwidthMbit, sizeBytes } of cases) {
    const n = 5_000;
    const { arrivals, emulator } = run({ profile: profileOf({ bandwidthMbit, delayMs: 3 }), seed: 1, queueLimitBytes: n * sizeBytes }, n, 0, sizeBytes);
    t.assert.equal(emulator.counters().delivered, n);
    const spanMs = arrivals[n - 1]!.atMs - arrivals[0]!.atMs;
    const rateMbit = ((n - 1) * sizeBytes * 8) / (spanMs * 1000);
    t.assert.ok(Math.abs(rateMbit / bandwidthMbit - 1) < 0.02, `${bandwidthMbit} Mbit/s configured, ${rateMbit} measured`);
  }
});

test("bandwidth: the token bucket lets burstBytes through at once, then paces", (t: TestContext) => {
  t.plan(2);
  const { arrivals } = run({ profile: profileOf({ bandwidthMbit: 10 }), seed: 1, burstBytes: 3000 }, 6, 0, 1000);
  // 10 Mbit/s = 1250 B/ms: three datagrams leave at 0, then one every 0.8 ms.
  t.assert.deepEqual(arrivals.map((a) => a.index), [0, 1, 2, 3, 4, 5]);
  t.assert.deepEqual(arrivals.map((a) => Math.round(a.atMs * 1e9) / 1e9), [0, 0, 0, 0.8, 1.6, 2.4]);
});

test("bandwidth: overload tail-drops at the queue limit, counted apart from random loss", (t: TestContext) => {
  t.plan(7);
  const clock = new FakeClock();
  const queueLimitBytes = 20_000;
  const emulator = new LinkEmulator({ profile: profileOf({ bandwidthMbit: 8, lossRatio: 0.1 }), seed: 3, clock, queueLimitBytes });
  // 8 Mbit/s = 1000 B/ms; offer 2000 B/ms for 4 s.
  const deliveredAt: number[] = [];
  let maxQueuedBytes = 0;
  const sentAt = new Map<number, number>();
  const delays: number[] = [];
  const datagram = Buffer.alloc(1000);
  for (let i = 0; i < 8_000; i++) {
    datagram.writeUInt32LE(i, 0);
    sentAt.set(i, clock.now());
    emulator.send(datagram, (d) => {
      deliveredAt.push(clock.now());
      delays.push(clock.now() - sentAt.get(d.readUInt32LE(0))!);
    });
    maxQueuedBytes = Math.max(maxQueuedBytes, emulator.queuedBytes);
    clock.advance(0.5);
  }
  clock.advance(1e6);
  const c = emulator.counters();
  t.assert.ok(maxQueuedBytes <= queueLimitBytes, `queue peaked at ${maxQueuedBytes}`);
  t.assert.ok(c.droppedQueue > 3_500 && c.droppedQueue < 4_500, `queue drops ${c.droppedQueue}`);
  // Random loss hits about 10 % of every datagram offered (drawn before the queue).
  t.assert.ok(Math.abs(c.droppedRandom / (c.sent - c.droppedQueue) - 0.1) < 0.02, `random drops ${c.droppedRandom}`);
  t.assert.equal(c.sent, c.delivered + c.droppedQueue + c.droppedRandom);
  // Lost datagrams used their airtime: delivered bytes run at 90 % of the link rate in steady state.
  const steady = deliveredAt.filter((at) => at >= 500 && at < 3500);
  t.assert.ok(Math.abs((steady.length * 1000) / 3000 / 1000 - 0.9) < 0.03, `steady delivered share ${(steady.length * 1000) / 3000 / 1000}`);
  // Queueing delay is bounded by the queue limit over the rate (20 ms) plus one datagram.
  t.assert.ok(Math.max(...delays) <= queueLimitBytes / 1000 + 1, `max delay ${Math.max(...delays)}`);
  t.assert.equal(emulator.queuedBytes, 0);
});

test("determinism: the same seed gives the same drops and delivery times, another seed does not", (t: TestContext) => {
  t.plan(4);
  const profile = profileOf({ delayMs: 15, jitterMs: 4, bandwidthMbit: 5, gilbertElliott: gilbertElliottForBursts(0.05, 3) });
  const options = { profile, seed: 1234, queueLimitBytes: 8_000 };
  const a = run(options, 3_000, 0.25, 700);
  const b = run(options, 3_000, 0.25, 700);
  const c = run({ ...options, seed: 1235 }, 3_000, 0.25, 700);
  t.assert.deepEqual(a.arrivals, b.arrivals);
  t.assert.deepEqual(a.emulator.counters(), b.emulator.counters());
  t.assert.notDeepEqual(a.fates, c.fates);
  // Pinned: the loss pattern of seed 7 at 30 % (changing the draw order breaks recorded scenarios).
  const pinned = run({ profile: profileOf({ lossRatio: 0.3 }), seed: 7 }, 40, 0).fates.map((f) => (f === "dropped-random" ? "x" : ".")).join("");
  t.assert.equal(pinned, "x..x.....x....xx..x.x...xx...xx.......xx");
});

test("setProfile switches the link for later datagrams (a flap); close drains, destroy discards", async (t: TestContext) => {
  t.plan(7);
  const clock = new FakeClock();
  const emulator = new LinkEmulator({ profile: profileOf({ lossRatio: 1 }), seed: 1, clock });
  let nDelivered = 0;
  const count = (): void => void nDelivered++;
  for (let i = 0; i < 10; i++) emulator.send(Buffer.alloc(10), count);
  emulator.setProfile(profileOf({ delayMs: 5 }));
  const fates = Array.from({ length: 10 }, () => emulator.send(Buffer.alloc(10), count));
  t.assert.deepEqual(fates, Array(10).fill("scheduled"));
  const closed = emulator.close();
  t.assert.throws(() => emulator.send(Buffer.alloc(1), count), /after close/);
  clock.advance(5);
  await closed;
  t.assert.equal(nDelivered, 10);
  t.assert.equal(emulator.counters().droppedRandom, 10);

  const other = new LinkEmulator({ profile: profileOf({ delayMs: 5 }), seed: 1, clock });
  other.send(Buffer.alloc(10), count);
  other.send(Buffer.alloc(10), count);
  other.destroy();
  clock.advance(10);
  t.assert.equal(nDelivered, 10);
  t.assert.equal(other.counters().discarded, 2);
  t.assert.equal(clock.pendingTimers, 0);
});

test("a deliver callback that throws from a timer goes to onDeliverError and the rest still arrive", (t: TestContext) => {
  t.plan(3);
  const clock = new FakeClock();
  const errors: unknown[] = [];
  const emulator = new LinkEmulator({ profile: profileOf({ delayMs: 2 }), seed: 1, clock, onDeliverError: (e) => errors.push(e) });
  const arrived: number[] = [];
  emulator.send(Buffer.from([1]), () => {
    throw new Error("boom");
  });
  emulator.send(Buffer.from([2]), (d) => arrived.push(d[0]!));
  clock.advance(2);
  t.assert.equal(errors.length, 1);
  t.assert.deepEqual(arrived, [2]);
  t.assert.equal(emulator.counters().delivered, 2);
});

test("a datagram that waits is copied, so the caller may reuse its buffer", (t: TestContext) => {
  t.plan(1);
  const clock = new FakeClock();
  const emulator = new LinkEmulator({ profile: profileOf({ delayMs: 1 }), seed: 1, clock });
  const buffer = Buffer.from("abc");
  let got = "";
  emulator.send(buffer, (d) => (got = d.toString()));
  buffer.write("xyz");
  clock.advance(1);
  t.assert.equal(got, "abc");
});
