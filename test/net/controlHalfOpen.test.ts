/**
 * C7: 1,000 half-open TCP connects that never authenticate. Each is closed after the handshake
 * deadline (shortened to 300 ms here, on the system clock), a legitimate coordinator still
 * completes its handshake and exchanges a message during the flood, and the process's fd count
 * returns to its baseline.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import { DeadlineExceededError, HaloError, systemClock } from "../../src/base/index.js";
import { ControlConnection } from "../../src/net/controlConnection.js";
import { CLUSTER_KEY, closeServer, fdCount, listenLoopback, portOf, waitFor } from "./controlHelpers.js";

const N_HALF_OPEN = 1000;
const HANDSHAKE_TIMEOUT_MS = 300;

test("C7: 1,000 half-open connects are each closed after the auth deadline; a legitimate peer still joins; fds return to baseline", async () => {
  const baselineFds = fdCount();
  const outcomes: { error: unknown; elapsedMs: number }[] = [];
  const workers: ControlConnection[] = [];
  const server = await listenLoopback((socket) => {
    const start = systemClock.now();
    ControlConnection.accept(socket, { clusterKey: CLUSTER_KEY, handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS }).then(
      (worker) => workers.push(worker),
      (error: unknown) => outcomes.push({ error, elapsedMs: systemClock.now() - start }),
    );
  }, 2048);
  const port = portOf(server);

  let nClosedByServer = 0;
  const clients: net.Socket[] = [];
  for (let i = 0; i < N_HALF_OPEN; i++) {
    // Half-open: connects, reads the hello, never answers.
    const client = net.connect(port, "127.0.0.1");
    client.on("error", () => {});
    client.on("data", () => {});
    client.on("close", () => nClosedByServer++);
    clients.push(client);
  }

  // A legitimate coordinator in the middle of the flood.
  const legit = net.connect(port, "127.0.0.1");
  const coordinator = await ControlConnection.connect(legit, { clusterKey: CLUSTER_KEY });
  await waitFor(() => workers.length === 1, "the legitimate worker side");
  coordinator.send({ type: "reset" });
  assert.deepEqual(await workers[0]!.receive(), { type: "reset" });

  await waitFor(() => outcomes.length === N_HALF_OPEN && nClosedByServer === N_HALF_OPEN, "every half-open connection to be closed", 20_000);
  for (const { error, elapsedMs } of outcomes) {
    assert.ok(error instanceof DeadlineExceededError, String(error));
    assert.equal((error as HaloError).message, `control handshake did not complete within ${HANDSHAKE_TIMEOUT_MS} ms`);
    assert.ok(elapsedMs >= HANDSHAKE_TIMEOUT_MS - 1, `closed after ${elapsedMs} ms`);
  }
  assert.equal(coordinator.state, "open", "the legitimate connection outlived the flood");

  await coordinator.close();
  await workers[0]!.closed;
  await closeServer(server);
  await waitFor(() => fdCount() <= baselineFds, `fd count back to ${baselineFds}`, 5000);
  assert.equal(fdCount(), baselineFds);
});
