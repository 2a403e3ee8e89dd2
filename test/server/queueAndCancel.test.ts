/**
 * One generation at a time: the bounded queue's 429 with Retry-After, cancellation by a client
 * that disconnects (streaming or not, running or queued), and 50 concurrent clients (H9, H10).
 * Each layer phase is slowed by 1 ms so that a generation lasts long enough to overlap others.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import type { ChatCompletionCreateParamsNonStreaming, ChatCompletionCreateParamsStreaming } from "openai/resources/chat/completions";
import { MODEL_ID, metricValue, postJson, startServer, waitFor, type Harness } from "./serverHarness.js";

/** A long generation: the model's end-of-sequence token does not stop it (llama.cpp's ignore_eos). */
function longChat(stream: true): ChatCompletionCreateParamsStreaming;
function longChat(stream: false): ChatCompletionCreateParamsNonStreaming;
function longChat(stream: boolean): ChatCompletionCreateParamsStreaming | ChatCompletionCreateParamsNonStreaming {
  const params = { model: MODEL_ID, messages: [{ role: "user" as const, content: "Tell me a long story" }], max_tokens: 400, ignore_eos: true };
  return stream ? { ...params, stream: true } : params;
}

async function health(h: Harness): Promise<{ status: string; queue: { active: number; waiting: number } }> {
  return (await (await fetch(`${h.url}/health`)).json()) as { status: string; queue: { active: number; waiting: number } };
}

const counter = async (h: Harness, name: string, labels = ""): Promise<number> => metricValue(await h.metrics(), name, labels) ?? 0;

describe("halo serve queue and cancellation (slowed to ≥10 ms per token)", { timeout: 120_000 }, () => {
  let h: Harness;
  before(async () => {
    h = await startServer({ phaseDelayMs: 1, maxQueue: 1 });
  });
  after(async () => {
    await h.close();
  });

  test("past the queue's capacity a request gets 429 with Retry-After at once; a queued client that leaves frees its place", async () => {
    const running = new AbortController();
    const stream = await h.client.chat.completions.create(longChat(true), { signal: running.signal });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    await waitFor("a generation running", () => health(h), (s) => s.queue.active === 1);
    const queuedAbort = new AbortController();
    const queued = h.client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "Hi" }], max_tokens: 3 }, { signal: queuedAbort.signal });
    const queuedOutcome = queued.then(() => "answered", (error: unknown) => (error instanceof OpenAI.APIUserAbortError ? "aborted" : String(error)));
    await waitFor("one request waiting", () => health(h), (s) => s.queue.waiting === 1);

    const refused = await postJson(`${h.url}/v1/chat/completions`, { model: MODEL_ID, messages: [{ role: "user", content: "Hi" }] });
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get("retry-after"), "2");
    assert.deepEqual(refused.json, { error: { message: "the server is busy: 1 generation running and 1 waiting, the most it queues; retry after 2 s", type: "rate_limit_error", param: null, code: "queue_full" } });
    await assert.rejects(h.client.completions.create({ model: MODEL_ID, prompt: "x" }), (error: unknown) => {
      assert.ok(error instanceof OpenAI.RateLimitError);
      assert.equal(error.headers.get("retry-after"), "2");
      return true;
    });

    queuedAbort.abort();
    assert.equal(await queuedOutcome, "aborted");
    await waitFor("the queue empty", () => health(h), (s) => s.queue.waiting === 0);
    running.abort();
    await iterator.return?.();
    await waitFor("no generation running", () => health(h), (s) => s.queue.active === 0);
    assert.equal(await counter(h, "halo_generations_total", 'finish_reason="cancelled"'), 1, "the queued request never started");
    assert.equal(await counter(h, "halo_http_requests_total", 'route="/v1/chat/completions",status="429"'), 1);
  });

  test("a streaming client that disconnects cancels its generation between tokens; the next request runs", async () => {
    const tokensBefore = await counter(h, "halo_tokens_generated_total");
    const cancelledBefore = await counter(h, "halo_generations_total", 'finish_reason="cancelled"');
    let nChunks = 0;
    for await (const chunk of await h.client.chat.completions.create(longChat(true))) {
      if ((chunk.choices[0]?.delta.content ?? "") !== "" && ++nChunks === 3) break; // leaving the loop aborts the response
    }
    await waitFor("the generation cancelled", () => counter(h, "halo_generations_total", 'finish_reason="cancelled"'), (n) => n === cancelledBefore + 1);
    assert.equal((await health(h)).queue.active, 0);
    const generated = (await counter(h, "halo_tokens_generated_total")) - tokensBefore;
    assert.ok(generated >= 3 && generated < 400, `generated ${generated} of 400 tokens`);

    const next = await h.client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0 });
    assert.equal(next.usage!.completion_tokens, 4);
  });

  test("a non-streaming client that disconnects mid-generation cancels it too", async () => {
    const cancelledBefore = await counter(h, "halo_generations_total", 'finish_reason="cancelled"');
    // Observed per token, where the tokens counter only moves when a generation ends.
    const firstTokensBefore = await counter(h, "halo_time_to_first_token_seconds_count");
    const abort = new AbortController();
    const pending = h.client.chat.completions.create(longChat(false), { signal: abort.signal }).then(() => "answered", () => "aborted");
    await waitFor("tokens being generated", () => counter(h, "halo_time_to_first_token_seconds_count"), (n) => n > firstTokensBefore);
    abort.abort();
    assert.equal(await pending, "aborted");
    await waitFor("the generation cancelled", () => counter(h, "halo_generations_total", 'finish_reason="cancelled"'), (n) => n === cancelledBefore + 1);
    assert.equal((await health(h)).queue.active, 0);
  });
});

describe("halo serve under 50 concurrent clients", { timeout: 120_000 }, () => {
  let h: Harness;
  before(async () => {
    h = await startServer({ phaseDelayMs: 1 });
  });
  after(async () => {
    await h.close();
  });

  test("every client is answered in full or refused with 429 and Retry-After; nothing hangs and the server stays healthy (H10)", async () => {
    const N_CLIENTS = 50;
    const outcomes = await Promise.all(Array.from({ length: N_CLIENTS }, async (_, i) => {
      const client = h.clientWithKey("unused");
      const params = { model: MODEL_ID, messages: [{ role: "user" as const, content: `Story number ${i}` }], max_tokens: 8, temperature: 0 };
      try {
        if (i % 2 === 0) {
          const reply = await client.chat.completions.create(params);
          return reply.choices[0]!.finish_reason === "length" || reply.choices[0]!.finish_reason === "stop" ? "answered" : `finish ${reply.choices[0]!.finish_reason}`;
        }
        let finish: string | null | undefined;
        for await (const chunk of await client.chat.completions.create({ ...params, stream: true })) finish = chunk.choices[0]?.finish_reason ?? finish;
        return finish === "length" || finish === "stop" ? "answered" : `stream ended without a finish reason (${finish})`;
      } catch (error) {
        if (error instanceof OpenAI.RateLimitError && Number(error.headers.get("retry-after")) >= 1) return "refused";
        return `unexpected: ${String(error)}`;
      }
    }));
    const answered = outcomes.filter((o) => o === "answered").length;
    const refused = outcomes.filter((o) => o === "refused").length;
    assert.deepEqual(outcomes.filter((o) => o !== "answered" && o !== "refused"), []);
    assert.equal(answered + refused, N_CLIENTS);
    assert.ok(answered >= 1 + 16, `${answered} answered: at least the running one and a full queue`);
    assert.ok(refused >= 1, "50 simultaneous clients overflow a queue of 16");
    const after = await health(h);
    assert.deepEqual([after.status, after.queue], ["ok", { active: 0, waiting: 0, capacity: 16 }]);
    const text = await h.metrics();
    assert.equal(metricValue(text, "halo_http_requests_total", 'route="/v1/chat/completions",status="429"'), refused);
    assert.equal(metricValue(text, "halo_http_requests_total", 'route="/v1/chat/completions",status="200"'), answered);
    const reply = await h.client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "Still there?" }], max_tokens: 2 });
    assert.equal(reply.choices.length, 1);
  });
});
