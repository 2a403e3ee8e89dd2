import assert from "node:assert/strict";
import { test } from "node:test";
import { FakeClock, systemClock } from "../../src/base/index.js";

test("FakeClock fires timers in deadline order, ties in creation order, only when advanced", async () => {
  const clock = new FakeClock(100);
  const fired: string[] = [];
  clock.setTimer(20, () => fired.push(`b@${clock.now()}`));
  clock.setTimer(10, () => fired.push(`a@${clock.now()}`));
  clock.setTimer(20, () => fired.push(`c@${clock.now()}`));
  const cancelled = clock.setTimer(5, () => fired.push("never"));
  cancelled.cancel();
  clock.advance(9);
  assert.deepEqual(fired, []);
  clock.advance(11);
  assert.deepEqual(fired, ["a@110", "b@120", "c@120"]);
  assert.equal(clock.now(), 120);
  assert.equal(clock.pendingTimers, 0);
});

test("sleepUntil resolves at the deadline and rejects on abort", async () => {
  const clock = new FakeClock();
  let woke = false;
  const sleeping = clock.sleepUntil(50).then(() => (woke = true));
  await clock.advanceAsync(49);
  assert.equal(woke, false);
  await clock.advanceAsync(1);
  await sleeping;
  assert.equal(woke, true);
  const controller = new AbortController();
  const aborted = clock.sleepUntil(1000, controller.signal);
  controller.abort(new Error("stop"));
  await assert.rejects(aborted, /stop/);
  assert.equal(clock.pendingTimers, 0);
});

test("the system clock is monotonic and sleeps at least until the deadline", async () => {
  const start = systemClock.now();
  await systemClock.sleepUntil(start + 5);
  assert.ok(systemClock.now() >= start + 5);
});
