/** Graceful shutdown: the running generation finishes within the grace period or is cancelled cleanly. */
import assert from "node:assert/strict";
import { test } from "node:test";
import OpenAI from "openai";
import { MODEL_ID, startServer, waitFor } from "./serverHarness.js";

const health = async (url: string) => (await (await fetch(`${url}/health`)).json()) as { queue: { active: number; waiting: number } };

test("close refuses the queued with 503, lets the running generation finish, then stops listening", { timeout: 60_000 }, async () => {
  const h = await startServer({ phaseDelayMs: 1, shutdownGraceMs: 30_000 });
  try {
    const running = h.client.completions.create({ model: MODEL_ID, prompt: "Once upon a time", max_tokens: 20, temperature: 0 });
    await waitFor("a generation running", () => health(h.url), (s) => s.queue.active === 1);
    const queued = h.client.completions.create({ model: MODEL_ID, prompt: "Hi", max_tokens: 2 });
    await waitFor("one request waiting", () => health(h.url), (s) => s.queue.waiting === 1);
    const closing = h.server.close();
    await assert.rejects(queued, (error: unknown) => {
      assert.ok(error instanceof OpenAI.APIError);
      assert.equal(error.status, 503);
      assert.equal(error.code, "shutting_down");
      return true;
    });
    const done = await running;
    assert.equal(done.usage!.completion_tokens, 20);
    assert.equal(done.choices[0]!.finish_reason, "length");
    await closing;
    await assert.rejects(fetch(`${h.url}/health`), TypeError, "no longer listening");
  } finally {
    await h.close();
  }
});

test("past the grace period the running generation is cancelled and its stream ends with a shutting_down error event", { timeout: 60_000 }, async () => {
  const h = await startServer({ phaseDelayMs: 1, shutdownGraceMs: 100 });
  try {
    const response = await fetch(`${h.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: MODEL_ID, prompt: "Once", max_tokens: 400, ignore_eos: true, stream: true }) });
    assert.equal(response.status, 200);
    const reader = response.body!.getReader();
    await reader.read();
    const closing = h.server.close();
    let text = "";
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += new TextDecoder().decode(chunk.value);
    const events = text.split("\n\n").filter((e) => e !== "");
    assert.equal(events.at(-1), 'data: {"error":{"message":"the server is shutting down; the generation was cancelled","type":"server_error","param":null,"code":"shutting_down"}}');
    assert.ok(!text.includes("[DONE]"));
    assert.ok(events.length < 400);
    await closing;
  } finally {
    await h.close();
  }
});
