/**
 * The OpenAI-compatible endpoints through the official `openai` client, against stories260K in
 * this process: chat and completions, streaming and not, usage, stop strings, models, health.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { readGolden } from "../helpers/golden.js";
import { MODEL_ID, metricValue, startServer, type Harness } from "./serverHarness.js";

const golden = readGolden().greedy_prompt;
/** The golden greedy continuation of "Once upon a time", without the prompt. */
const goldenText = golden.text_including_prompt.slice(golden.prompt.length);

describe("halo serve API (stories260K, in process)", () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
  });
  after(async () => {
    await h.close();
  });

  test("completions at temperature 0 reproduce the golden greedy continuation, with its usage", async () => {
    const completion = await h.client.completions.create({ model: MODEL_ID, prompt: golden.prompt, max_tokens: golden.generated_ids.length, temperature: 0 });
    assert.equal(completion.object, "text_completion");
    assert.equal(completion.model, MODEL_ID);
    assert.equal(completion.choices.length, 1);
    assert.equal(completion.choices[0]!.text, goldenText);
    assert.equal(completion.choices[0]!.finish_reason, "length");
    assert.deepEqual(completion.usage, { prompt_tokens: golden.prompt_ids.length, completion_tokens: golden.generated_ids.length, total_tokens: golden.prompt_ids.length + golden.generated_ids.length });
  });

  test("streamed completions concatenate to the same golden text; include_usage adds a final usage chunk", async () => {
    const stream = await h.client.completions.create({ model: MODEL_ID, prompt: [golden.prompt], max_tokens: golden.generated_ids.length, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "";
    const finishReasons: Array<string | null> = [];
    let usage: unknown;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.text;
        finishReasons.push(choice.finish_reason);
      }
    }
    assert.equal(text, goldenText);
    assert.equal(finishReasons.at(-1), "length");
    assert.ok(finishReasons.slice(0, -1).every((r) => r === null));
    assert.deepEqual(usage, { prompt_tokens: 5, completion_tokens: golden.generated_ids.length, total_tokens: 5 + golden.generated_ids.length });
  });

  test("a stop string ends generation and is cut from the text, streamed or not", async () => {
    const params = { model: MODEL_ID, prompt: golden.prompt, max_tokens: 60, temperature: 0, stop: ["girl named L", "park"] };
    const whole = await h.client.completions.create(params);
    assert.equal(whole.choices[0]!.text, ", there was a little ");
    assert.equal(whole.choices[0]!.finish_reason, "stop");
    // "girl named L" ends inside the token " Lily": the tokens up to it were generated, nothing after.
    assert.ok(whole.usage!.completion_tokens < 60);
    let streamed = "";
    for await (const chunk of await h.client.completions.create({ ...params, stop: "Lily", stream: true })) streamed += chunk.choices[0]?.text ?? "";
    assert.equal(streamed, ", there was a little girl named ");
  });

  test("chat completions: the reply is the completion of the rendered transcript (no chat template: 'role: content' lines)", async () => {
    const messages = [{ role: "system" as const, content: "You tell stories." }, { role: "user" as const, content: "Once upon a time" }];
    const chat = await h.client.chat.completions.create({ model: MODEL_ID, messages, max_tokens: 24, temperature: 0 });
    assert.equal(chat.object, "chat.completion");
    assert.equal(chat.choices[0]!.message.role, "assistant");
    assert.equal(chat.choices[0]!.finish_reason, "length");
    const transcript = "system: You tell stories.\nuser: Once upon a time\nassistant:";
    const promptIds = h.generator.encodeChat(messages);
    assert.deepEqual(promptIds, h.model.tokenizer.encode(transcript, { addBos: true }));
    assert.deepEqual(chat.usage, { prompt_tokens: promptIds.length, completion_tokens: 24, total_tokens: promptIds.length + 24 });
    const completion = await h.client.completions.create({ model: MODEL_ID, prompt: transcript, max_tokens: 24, temperature: 0 });
    assert.equal(chat.choices[0]!.message.content, completion.choices[0]!.text);
    assert.ok(chat.choices[0]!.message.content!.length > 0);
  });

  test("streamed chat: a role chunk, content deltas equal to the non-streamed reply, a finish chunk, then usage", async () => {
    const messages = [{ role: "user" as const, content: [{ type: "text" as const, text: "Tell me " }, { type: "text" as const, text: "a story" }] }];
    const whole = await h.client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "Tell me a story" }], max_tokens: 20, temperature: 0 });
    const stream = await h.client.chat.completions.create({ model: MODEL_ID, messages, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.equal(chunks[0]!.object, "chat.completion.chunk");
    assert.deepEqual(chunks[0]!.choices[0]!.delta, { role: "assistant", content: "" });
    const content = chunks.flatMap((c) => c.choices.map((choice) => choice.delta.content ?? "")).join("");
    assert.equal(content, whole.choices[0]!.message.content);
    const last = chunks.at(-1)!;
    assert.deepEqual(last.choices, []);
    assert.deepEqual(last.usage, whole.usage);
    assert.equal(chunks.at(-2)!.choices[0]!.finish_reason, "length");
    assert.ok(new Set(chunks.map((c) => c.id)).size === 1 && chunks[0]!.id.startsWith("chatcmpl-"));
  });

  test("without include_usage no chunk carries usage, and the stream still ends with [DONE]", async () => {
    const response = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: MODEL_ID, messages: [{ role: "user", content: "Hi" }], max_tokens: 3, stream: true }) });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type")!, /^text\/event-stream/);
    const events = (await response.text()).split("\n\n").filter((e) => e !== "");
    assert.ok(events.every((e) => e.startsWith("data: ")));
    assert.equal(events.at(-1), "data: [DONE]");
    const payloads = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)) as Record<string, unknown>);
    assert.ok(payloads.every((p) => !("usage" in p)));
    assert.equal(payloads.length, 1 + 3 + 1);
  });

  test("the same seed gives the same sampled text; max_completion_tokens bounds the reply", async () => {
    const params = { model: MODEL_ID, messages: [{ role: "user" as const, content: "A dog" }], max_completion_tokens: 16, temperature: 1, top_p: 0.9, seed: 1234 };
    const a = await h.client.chat.completions.create(params);
    const b = await h.client.chat.completions.create(params);
    assert.equal(a.choices[0]!.message.content, b.choices[0]!.message.content);
    assert.ok(a.usage!.completion_tokens <= 16);
  });

  test("GET /v1/models lists the model; /v1/models/:id finds it; /health reports the queue", async () => {
    const models = [];
    for await (const model of h.client.models.list()) models.push(model);
    assert.deepEqual(models.map((m) => [m.id, m.object, m.owned_by]), [[MODEL_ID, "model", "halo"]]);
    assert.equal((await h.client.models.retrieve(MODEL_ID)).id, MODEL_ID);
    const health = await (await fetch(`${h.url}/health`)).json();
    assert.deepEqual(health, { status: "ok", model: MODEL_ID, contextLength: h.generator.contextLength, queue: { active: 0, waiting: 0, capacity: 16 } });
  });

  test("/metrics counts requests, generations and tokens, with a TPOT histogram", async () => {
    const before = await h.metrics();
    const tokensBefore = metricValue(before, "halo_tokens_generated_total") ?? 0;
    await h.client.completions.create({ model: MODEL_ID, prompt: "Hi", max_tokens: 7, temperature: 0, stop: null });
    const text = await h.metrics();
    assert.equal(metricValue(text, "halo_tokens_generated_total"), tokensBefore + 7);
    assert.ok((metricValue(text, "halo_time_per_output_token_seconds_count") ?? 0) >= 6);
    assert.ok((metricValue(text, "halo_generations_total", 'finish_reason="length"') ?? 0) >= 1);
    assert.ok((metricValue(text, "halo_http_requests_total", 'route="/v1/completions",status="200"') ?? 0) >= 1);
    assert.equal(metricValue(text, "halo_active_generations"), 0);
    assert.equal(metricValue(text, "halo_queue_capacity"), 16);
    assert.equal(metricValue(text, "halo_cluster_devices"), undefined, "no cluster gauges on a single node");
  });
});
