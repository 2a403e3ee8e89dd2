/** The server's pieces without HTTP: stop strings over split text, and the one-slot queue. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { RequestError } from "../../src/base/index.js";
import { GenerationQueue, StopMatcher } from "../../src/server/index.js";

describe("StopMatcher", () => {
  test("holds back text that may begin a stop string, cuts the stop string, and emits nothing after it", () => {
    const m = new StopMatcher(["\nUser:", "END"]);
    assert.deepEqual(m.push("Hello"), { emit: "Hello", stopped: false });
    assert.deepEqual(m.push(" wor\n"), { emit: " wor", stopped: false });
    assert.deepEqual(m.push("Us"), { emit: "", stopped: false });
    assert.deepEqual(m.push("ually"), { emit: "\nUsually", stopped: false });
    assert.deepEqual(m.push(" E"), { emit: " ", stopped: false });
    assert.deepEqual(m.push("NDING"), { emit: "", stopped: true });
    assert.deepEqual(m.push("more"), { emit: "", stopped: true });
    assert.equal(m.flush(), "");
  });

  test("flush returns a held-back partial match when generation ends without the stop string", () => {
    const m = new StopMatcher(["stop here"]);
    assert.deepEqual(m.push("we stop"), { emit: "we ", stopped: false });
    assert.equal(m.flush(), "stop");
  });

  test("property: however the text is split, the output is the text up to the earliest stop string", () => {
    fc.assert(fc.property(fc.string({ unit: fc.constantFrom("a", "b", "c", "\n") }), fc.array(fc.string({ unit: fc.constantFrom("a", "b", "\n"), minLength: 1, maxLength: 4 }), { maxLength: 3 }), fc.array(fc.nat()), (text, stops, cuts) => {
      const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
      const pieces = [0, ...points].map((start, i, all) => text.slice(start, all[i + 1] ?? text.length));
      const m = new StopMatcher(stops);
      let out = "";
      for (const piece of pieces) out += m.push(piece).emit;
      out += m.flush();
      const hits = stops.map((s) => text.indexOf(s)).filter((i) => i >= 0);
      assert.equal(out, hits.length === 0 ? text : text.slice(0, Math.min(...hits)));
    }), { seed: 42, numRuns: 500 });
  });
});

describe("GenerationQueue", () => {
  test("grants one slot at a time in arrival order, refuses past capacity with 429, and skips a waiter that left", async () => {
    const queue = new GenerationQueue(2);
    const first = await queue.acquire();
    const order: string[] = [];
    const leaving = new AbortController();
    const second = queue.acquire().then((slot) => (order.push("second"), slot));
    const gone = queue.acquire(leaving.signal).catch((reason: unknown) => reason);
    assert.deepEqual([queue.active, queue.waiting], [1, 2]);
    await assert.rejects(queue.acquire(), (error: unknown) => {
      assert.ok(error instanceof RequestError);
      assert.equal(error.status, 429);
      assert.equal(error.headers["retry-after"], "3");
      return true;
    });
    leaving.abort(new Error("left"));
    assert.equal(((await gone) as Error).message, "left");
    assert.equal(queue.waiting, 1);
    first.release();
    first.release(); // a second release is ignored
    const slot = await second;
    assert.deepEqual(order, ["second"]);
    assert.deepEqual([queue.active, queue.waiting], [1, 0]);
    const idle = queue.whenIdle();
    slot.release();
    await idle;
    assert.equal(queue.active, 0);
  });

  test("close refuses the waiting and later requests with 503 while the running one finishes", async () => {
    const queue = new GenerationQueue(4);
    const running = await queue.acquire();
    const waiting = queue.acquire();
    queue.close();
    await assert.rejects(waiting, (error: unknown) => error instanceof RequestError && error.status === 503);
    await assert.rejects(queue.acquire(), (error: unknown) => error instanceof RequestError && error.status === 503 && error.message === "the server is shutting down");
    assert.equal(queue.active, 1);
    running.release();
    await queue.whenIdle();
  });
});
