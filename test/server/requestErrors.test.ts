/**
 * Every refusal of halo serve: its exact status, OpenAI-shaped body {error:{message, type, param,
 * code}} and message (RELIABILITY H1, H5, H6, H7, H11, H13), through raw HTTP and the openai client.
 */
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { ChatTemplate } from "../../src/model/index.js";
import { MODEL_ID, metricValue, postJson, startServer, type Harness } from "./serverHarness.js";

const CONTEXT = 64;
const API_KEY = "test-key-0123456789";

const chat = (extra: Record<string, unknown>) => ({ model: MODEL_ID, messages: [{ role: "user", content: "Hi" }], max_tokens: 2, ...extra });

function invalid(message: string, param: string | null, code = "invalid_value") {
  return { error: { message, type: "invalid_request_error", param, code } };
}

describe("halo serve refusals", () => {
  let h: Harness;
  let chatUrl: string;
  before(async () => {
    h = await startServer({ contextLength: CONTEXT, bodyLimitBytes: 256 * 1024 });
    chatUrl = `${h.url}/v1/chat/completions`;
  });
  after(async () => {
    await h.close();
  });

  test("each out-of-range or mistyped parameter gets 400 naming it (H5, H6)", async () => {
    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ max_tokens: 0 }, "max_tokens must be an integer from 1 to 2147483647", "max_tokens"],
      [{ max_tokens: -1 }, "max_tokens must be an integer from 1 to 2147483647", "max_tokens"],
      [{ max_tokens: 2 ** 53 }, "max_tokens must be an integer from 1 to 2147483647", "max_tokens"],
      [{ max_tokens: "5" }, "max_tokens must be an integer from 1 to 2147483647", "max_tokens"],
      [{ max_completion_tokens: 1.5 }, "max_completion_tokens must be an integer from 1 to 2147483647", "max_completion_tokens"],
      [{ temperature: -1 }, "temperature must be a number from 0 to 2", "temperature"],
      [{ temperature: 1e308 }, "temperature must be a number from 0 to 2", "temperature"],
      [{ top_p: 2 }, "top_p must be a number from 0 to 1", "top_p"],
      [{ seed: 1.5 }, "seed must be an integer from 0 to 4294967295", "seed"],
      [{ n: 1000 }, "n must be 1: the server generates one choice per request", "n"],
      [{ stop: Array.from({ length: 10_000 }, (_, i) => `s${i}`) }, "stop must be a string or an array of at most 4 strings, each of 1 to 256 characters", "stop"],
      [{ stop: "" }, "stop must be a string or an array of at most 4 strings, each of 1 to 256 characters", "stop"],
      [{ stream: "yes" }, "stream must be true or false", "stream"],
      [{ messages: [] }, "messages must be an array of 1 to 4096 {role, content} objects", "messages"],
      [{ messages: "Hi" }, "messages must be an array of 1 to 4096 {role, content} objects", "messages"],
      [{ messages: [{ role: "user", content: "a" }, { role: "wizard", content: "b" }] }, "messages[1].role: role must be one of system, developer, user, assistant, tool", "messages[1].role"],
      [{ messages: [{ role: "user", content: 7 }] }, 'messages[0].content: content must be a string or an array of {type: "text", text} parts', "messages[0].content"],
      [{ messages: [5] }, "messages[0]: each message must be an object {role, content}", "messages[0]"],
    ];
    for (const [extra, message, param] of cases) {
      const { status, json } = await postJson(chatUrl, chat(extra));
      assert.equal(status, 400, JSON.stringify(extra).slice(0, 80));
      assert.deepEqual(json, invalid(message, param), JSON.stringify(extra).slice(0, 80));
    }
    const { status, json } = await postJson(chatUrl, { messages: [{ role: "user", content: "Hi" }] });
    assert.equal(status, 400);
    assert.deepEqual(json, invalid("model must be a string naming the model (GET /v1/models lists it)", "model", "missing_required_parameter"));
  });

  test("malformed, empty, non-object and deeply nested JSON get 400 (H5)", async () => {
    const cases: Array<[string, unknown]> = [
      ["{bad", invalid("the request body is not valid JSON", null, "invalid_json")],
      ["[1, 2]", invalid("the request body must be a JSON object", null)],
      ["null", invalid("the request body must be a JSON object", null)],
      ['{"__proto__": {"polluted": 1}}', invalid("the request body is not valid JSON", null, "invalid_json")],
      ['{"model": ' + "[".repeat(100_000) + "]".repeat(100_000) + "}", invalid("model must be a string naming the model (GET /v1/models lists it)", "model")],
    ];
    for (const [body, expected] of cases) {
      const { status, json } = await postJson(chatUrl, body);
      assert.equal(status, 400, body.slice(0, 40));
      assert.deepEqual(json, expected, body.slice(0, 40));
    }
    const empty = await fetch(chatUrl, { method: "POST", headers: { "content-type": "application/json" } });
    assert.equal(empty.status, 400);
    assert.deepEqual(await empty.json(), invalid("the request body is empty; send a JSON object", null, "invalid_json"));
    assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
  });

  test("an unknown model is 404 model_not_found, through the openai client too", async () => {
    const { status, json } = await postJson(chatUrl, chat({ model: "gpt-4o" }));
    assert.equal(status, 404);
    assert.deepEqual(json, invalid("the model 'gpt-4o' does not exist; this server serves 'stories260K'", "model", "model_not_found"));
    await assert.rejects(h.client.completions.create({ model: "llama", prompt: "x" }), (error: unknown) => {
      assert.ok(error instanceof OpenAI.NotFoundError);
      assert.equal(error.code, "model_not_found");
      assert.equal(error.param, "model");
      return true;
    });
    const model = await fetch(`${h.url}/v1/models/llama`);
    assert.equal(model.status, 404);
  });

  test("a prompt longer than the context is 400 with both token counts (H7)", async () => {
    const prompt = "Once upon a time there was a little dog. ".repeat(12);
    const nTokens = h.model.tokenizer.encode(prompt, { addBos: true }).length;
    assert.ok(nTokens > CONTEXT);
    const { status, json } = await postJson(`${h.url}/v1/completions`, { model: MODEL_ID, prompt });
    assert.equal(status, 400);
    assert.deepEqual(json, invalid(`the prompt is ${nTokens} tokens, more than the model's context of ${CONTEXT} tokens (prompt and completion together); shorten it`, "prompt", "context_length_exceeded"));
    const viaChat = await postJson(chatUrl, chat({ messages: [{ role: "user", content: prompt }] }));
    assert.equal(viaChat.status, 400);
    assert.equal((viaChat.json as { error: { param: string } }).error.param, "messages");
  });

  test("a body over the limit is 413 and the connection is closed; a wrong content type is 415 (H1)", async () => {
    const big = JSON.stringify(chat({ messages: [{ role: "user", content: "x".repeat(300_000) }] }));
    const response = await new Promise<{ status: number; connection: string | undefined; body: string }>((resolve, reject) => {
      const req = httpRequest(chatUrl, { method: "POST", headers: { "content-type": "application/json", "content-length": Buffer.byteLength(big) } }, (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode!, connection: res.headers.connection, body }));
      });
      req.on("error", reject);
      req.end(big);
    });
    assert.equal(response.status, 413);
    assert.equal(response.connection, "close");
    assert.deepEqual(JSON.parse(response.body), invalid("the request body is larger than 262144 bytes", null, "request_too_large"));
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]) {
      const res = await fetch(chatUrl, { method: "POST", headers: { "content-type": type }, body: JSON.stringify(chat({})) });
      assert.equal(res.status, 415, type);
      assert.deepEqual(await res.json(), invalid("the request body must be JSON, sent with 'Content-Type: application/json'", null, "unsupported_media_type"));
    }
  });

  test("an unknown route is 404 and a known route with the wrong method is 405 with Allow (H13)", async () => {
    const unknown = await fetch(`${h.url}/v1/engines`, { method: "POST" });
    assert.equal(unknown.status, 404);
    assert.deepEqual(await unknown.json(), invalid("Invalid URL (POST /v1/engines)", null, "unknown_url"));
    const wrong = await fetch(`${h.url}/v1/chat/completions?x=1`);
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.get("allow"), "POST");
    assert.deepEqual(await wrong.json(), invalid("GET is not allowed on /v1/chat/completions; use POST", null, "method_not_allowed"));
  });

  test("refusals are counted in /metrics by route and status", async () => {
    const text = await h.metrics();
    assert.ok((metricValue(text, "halo_http_requests_total", 'route="/v1/chat/completions",status="400"') ?? 0) >= 20);
    assert.ok((metricValue(text, "halo_http_requests_total", 'route="unmatched",status="404"') ?? 0) >= 1);
    assert.ok((metricValue(text, "halo_http_requests_total", 'route="/v1/chat/completions",status="413"') ?? 0) >= 1);
    assert.equal(metricValue(text, "halo_active_generations"), 0);
  });
});

describe("halo serve with a chat template that refuses", () => {
  let h: Harness;
  before(async () => {
    const template = new ChatTemplate("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}");
    h = await startServer({ chatTemplate: template });
  });
  after(async () => {
    await h.close();
  });

  test("a conversation the template refuses is 400 chat_template_error; one it accepts is answered", async () => {
    const refused = await postJson(`${h.url}/v1/chat/completions`, chat({ messages: [{ role: "system", content: "x" }, { role: "user", content: "Hi" }] }));
    assert.equal(refused.status, 400);
    assert.deepEqual(refused.json, invalid("the chat template failed to render these messages: System role not supported", "messages", "chat_template_error"));
    const answered = await postJson(`${h.url}/v1/chat/completions`, chat({}));
    assert.equal(answered.status, 200);
  });
});

describe("halo serve --api-key (H11)", () => {
  let h: Harness;
  before(async () => {
    h = await startServer({ apiKey: API_KEY });
  });
  after(async () => {
    await h.close();
  });

  test("no key, a wrong key, or a key in the query string is 401 authentication_error; /health stays public", async () => {
    const body = chat({});
    const denied = (message: string) => ({ error: { message, type: "authentication_error", param: null, code: "invalid_api_key" } });
    const none = await postJson(`${h.url}/v1/chat/completions`, body);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("www-authenticate"), "Bearer");
    assert.deepEqual(none.json, denied("no API key: send the header 'Authorization: Bearer <key>'"));
    const wrong = await postJson(`${h.url}/v1/chat/completions`, body, { authorization: `Bearer ${API_KEY}x` });
    assert.equal(wrong.status, 401);
    assert.deepEqual(wrong.json, denied("incorrect API key"));
    const basic = await postJson(`${h.url}/v1/chat/completions`, body, { authorization: `Basic ${API_KEY}` });
    assert.deepEqual(basic.json, denied("no API key: send the header 'Authorization: Bearer <key>'"));
    const query = await postJson(`${h.url}/v1/chat/completions?api_key=${API_KEY}`, body);
    assert.equal(query.status, 401);
    for (const path of ["/v1/models", "/metrics"]) assert.equal((await fetch(`${h.url}${path}`)).status, 401, path);
    assert.equal((await fetch(`${h.url}/health`)).status, 200);
    await assert.rejects(h.clientWithKey("wrong-key").models.list(), (error: unknown) => error instanceof OpenAI.AuthenticationError && error.status === 401);
  });

  test("the right key is accepted", async () => {
    const completion = await h.client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: "Hi" }], max_tokens: 3 });
    assert.equal(completion.choices.length, 1);
    assert.equal(completion.usage!.completion_tokens <= 3, true);
  });
});
