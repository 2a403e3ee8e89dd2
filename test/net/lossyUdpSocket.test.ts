/** LossyUdpSocket over real sockets on 127.0.0.1: pass-through, seeded loss, copies, errors, close. */
import { createSocket } from "node:dgram";
import type { Socket } from "node:dgram";
import { test } from "node:test";
import type { TestContext } from "node:test";
import { FakeClock, systemClock } from "../../src/base/index.js";
import { LinkEmulator, ZERO_LINK_PROFILE } from "../../src/net/linkEmulator.js";
import type { LinkProfile } from "../../src/net/linkEmulator.js";
import { LossyUdpSocket } from "../../src/net/lossyUdpSocket.js";

const LOOPBACK = "127.0.0.1";

async function boundSocket(): Promise<Socket> {
  const socket = createSocket("udp4");
  socket.on("error", () => {}); // the tests assert on what arrives; a socket error shows up as a missing datagram
  await new Promise<void>((resolve) => socket.bind(0, LOOPBACK, resolve));
  return socket;
}

/** Resolves when `predicate` holds (checked on each message), or rejects after `timeoutMs`. */
function waitFor(receiver: Socket, predicate: () => boolean, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (predicate()) return resolve();
    const timer = setTimeout(() => {
      receiver.off("message", check);
      reject(new Error(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    function check(): void {
      if (!predicate()) return;
      clearTimeout(timer);
      receiver.off("message", check);
      resolve();
    }
    receiver.on("message", check);
  });
}

const profileOf = (overrides: Partial<LinkProfile>): LinkProfile => ({ ...ZERO_LINK_PROFILE, ...overrides });

test("a zero profile sends inside send(), with no timer", async (t: TestContext) => {
  t.plan(4);
  const receiver = await boundSocket();
  const clock = new FakeClock();
  const lossy = new LossyUdpSocket({ socket: await boundSocket(), profile: ZERO_LINK_PROFILE, seed: 1, clock });
  const got: string[] = [];
  receiver.on("message", (message) => got.push(message.toString()));
  t.assert.equal(lossy.send(Buffer.from("ping"), receiver.address().port, LOOPBACK), "delivered");
  t.assert.equal(clock.pendingTimers, 0);
  await waitFor(receiver, () => got.length === 1, 2000);
  t.assert.deepEqual(got, ["ping"]);
  t.assert.ok(lossy.socket.listenerCount("error") >= 1);
  await lossy.close();
  receiver.close();
});

test("a loopback round trip through 50 % loss delivers the seeded half, and only it", async (t: TestContext) => {
  t.plan(4);
  const profile = profileOf({ lossRatio: 0.5, delayMs: 2, jitterMs: 1, bandwidthMbit: 4 });
  const seed = 2024;
  const lossy = new LossyUdpSocket({ socket: await boundSocket(), profile, seed, clock: systemClock });
  // Echo every datagram back, so the round trip crosses the emulated link once and the return path plain.
  const echo = await boundSocket();
  echo.on("message", (message, from) => echo.send(message, from.port, from.address));
  const received = new Set<number>();
  lossy.socket.on("message", (message) => received.add(message.readUInt32LE(0)));
  const n = 400;
  const expected = new Set<number>();
  const datagram = Buffer.alloc(100);
  for (let i = 0; i < n; i++) {
    datagram.writeUInt32LE(i, 0);
    const fate = lossy.send(datagram, echo.address().port, LOOPBACK);
    if (fate === "delivered" || fate === "scheduled") expected.add(i);
  }
  // The same seed and profile on a FakeClock make the same decisions (the queue never fills: 40 kB < 256 KiB).
  const reference = new LinkEmulator({ profile, seed, clock: new FakeClock() });
  const referenceKept = Array.from({ length: n }, () => reference.send(datagram, () => {})).flatMap((fate, i) => (fate === "dropped-random" ? [] : [i]));
  t.assert.deepEqual([...expected], referenceKept);
  t.assert.ok(expected.size > 0.45 * n && expected.size < 0.55 * n, `kept ${expected.size} of ${n}`);
  // 40 kB at 4 Mbit/s takes 80 ms; allow 5 s on a loaded machine.
  await waitFor(lossy.socket, () => received.size === expected.size, 5000);
  t.assert.deepEqual([...received].sort((a, b) => a - b), [...expected]);
  t.assert.equal(lossy.counters().delivered, expected.size);
  await lossy.close();
  echo.close();
});

test("a delayed datagram is copied, and a send that meets a closed socket is reported, not thrown", async (t: TestContext) => {
  t.plan(5);
  const receiver = await boundSocket();
  const clock = new FakeClock();
  const errors: Error[] = [];
  const socket = await boundSocket();
  const lossy = new LossyUdpSocket({ socket, profile: profileOf({ delayMs: 5 }), seed: 1, clock, onError: (error) => errors.push(error) });
  const got: string[] = [];
  receiver.on("message", (message) => got.push(message.toString()));
  const buffer = Buffer.from("first");
  t.assert.equal(lossy.send(buffer, receiver.address().port, LOOPBACK), "scheduled");
  buffer.write("XXXXX");
  clock.advance(5);
  await waitFor(receiver, () => got.length === 1, 2000);
  t.assert.deepEqual(got, ["first"]);
  lossy.send(Buffer.from("late"), receiver.address().port, LOOPBACK);
  socket.close(); // closed under the wrapper while a datagram is in the emulated link
  clock.advance(5);
  t.assert.equal(errors.length, 1);
  t.assert.equal(lossy.nSocketErrors, 1);
  lossy.destroy();
  t.assert.throws(() => lossy.send(Buffer.from("x"), receiver.address().port, LOOPBACK), /after close/);
  receiver.close();
});

test("close() delivers what is still in the link, then closes the socket", async (t: TestContext) => {
  t.plan(2);
  const receiver = await boundSocket();
  const lossy = new LossyUdpSocket({ socket: await boundSocket(), profile: profileOf({ delayMs: 20 }), seed: 1, clock: systemClock });
  const got: string[] = [];
  receiver.on("message", (message) => got.push(message.toString()));
  const arrived = waitFor(receiver, () => got.length === 1, 2000);
  lossy.send(Buffer.from("in flight"), receiver.address().port, LOOPBACK);
  await lossy.close();
  await arrived;
  t.assert.deepEqual(got, ["in flight"]);
  t.assert.throws(() => lossy.socket.address(), /Not running|ERR_SOCKET_DGRAM_NOT_RUNNING/);
  receiver.close();
});
