/**
 * POST /v1/chat/completions and /v1/completions: validate, queue for the single generation slot,
 * generate, and answer as one JSON body or as server-sent events (`data: {chunk}` lines ending in
 * `data: [DONE]`). A client that disconnects, or stops reading, cancels its generation between
 * two tokens and frees the slot.
 */
import { randomUUID } from "node:crypto";
import { channel } from "node:diagnostics_channel";
import type { ServerResponse } from "node:http";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { RequestError, describeError } from "../base/index.js";
import { chatCompletionSchema, completionSchema, messageText, parseBody, type ChatCompletionBody, type CompletionBody } from "./requestSchemas.js";
import type { ServerContext } from "./serverContext.js";
import type { GenerationOutcome, GenerationParams } from "./textGenerator.js";

/** Diagnostics channel with a `GenerationEvent` per generated token and per finished generation (for the dashboard). */
export const SERVER_GENERATION_CHANNEL = "halo:server:generation";
const generationChannel = channel(SERVER_GENERATION_CHANNEL);

export type GenerationEvent =
  | { type: "token"; id: string; index: number; ms: number }
  | { type: "end"; id: string; outcome: GenerationOutcome };

/** A streaming client with this much unsent data has stopped reading: its generation is cancelled (H4). */
const MAX_BUFFERED_BYTES = 1 << 20;

interface Job {
  kind: "chat" | "text";
  id: string;
  model: string;
  promptIds: number[];
  params: GenerationParams;
  stream: boolean;
  includeUsage: boolean;
}

export function registerCompletionRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post("/v1/chat/completions", async (request, reply) => {
    const body = parseBody(chatCompletionSchema, request.body);
    checkModel(ctx, body.model);
    // Templates know system, not OpenAI's newer name for it.
    const messages = body.messages.map((m) => ({ role: m.role === "developer" ? "system" : m.role, content: messageText(m.content) }));
    const promptIds = ctx.generator.encodeChat(messages);
    const params = generationParams(ctx, body, body.max_completion_tokens ?? body.max_tokens, promptIds.length, "messages");
    return complete(ctx, request, reply, { kind: "chat", id: `chatcmpl-${randomUUID()}`, model: body.model, promptIds, params, ...streaming(body) });
  });
  app.post("/v1/completions", async (request, reply) => {
    const body = parseBody(completionSchema, request.body);
    checkModel(ctx, body.model);
    const promptIds = ctx.generator.encodePrompt(typeof body.prompt === "string" ? body.prompt : body.prompt[0]!);
    const params = generationParams(ctx, body, body.max_tokens, promptIds.length, "prompt");
    return complete(ctx, request, reply, { kind: "text", id: `cmpl-${randomUUID()}`, model: body.model, promptIds, params, ...streaming(body) });
  });
}

export function checkModel(ctx: ServerContext, model: string): void {
  if (model !== ctx.generator.modelId) throw new RequestError(404, `the model '${model}' does not exist; this server serves '${ctx.generator.modelId}'`, { param: "model", apiCode: "model_not_found" });
}

function streaming(body: ChatCompletionBody | CompletionBody): { stream: boolean; includeUsage: boolean } {
  return { stream: body.stream === true, includeUsage: body.stream_options?.include_usage === true };
}

function generationParams(ctx: ServerContext, body: ChatCompletionBody | CompletionBody, maxTokens: number | null | undefined, nPromptTokens: number, promptParam: string): GenerationParams {
  const contextLength = ctx.generator.contextLength;
  if (nPromptTokens > contextLength) {
    throw new RequestError(400, `the prompt is ${nPromptTokens} tokens, more than the model's context of ${contextLength} tokens (prompt and completion together); shorten it`, { param: promptParam, apiCode: "context_length_exceeded" });
  }
  const stop = body.stop === null || body.stop === undefined ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
  return {
    maxTokens: maxTokens ?? ctx.defaultMaxTokens,
    temperature: body.temperature ?? undefined,
    // top_p 0 keeps only the most likely token; the sampler wants a positive p for that.
    topP: body.top_p === 0 ? Number.MIN_VALUE : (body.top_p ?? undefined),
    seed: body.seed ?? undefined,
    stop,
    ignoreEos: body.ignore_eos ?? false,
  };
}

async function complete(ctx: ServerContext, request: FastifyRequest, reply: FastifyReply, job: Job): Promise<unknown> {
  const gone = new AbortController();
  reply.raw.once("close", () => {
    if (reply.raw.writableFinished) return;
    gone.abort(new Error("the client disconnected"));
    // A client that half-closed leaves the socket open for an answer nobody reads: free it.
    reply.raw.destroy();
  });
  let slot;
  try {
    slot = await ctx.queue.acquire(gone.signal);
  } catch (error) {
    if (!gone.signal.aborted) throw error;
    reply.hijack(); // nobody to answer
    return undefined;
  }
  const signal = AbortSignal.any([gone.signal, ctx.shutdownSignal]);
  try {
    if (job.stream) {
      reply.hijack();
      await streamCompletion(ctx, reply.raw, job, signal, () => gone.abort(new Error("the client stopped reading")));
      return undefined;
    }
    const outcome = await run(ctx, job, signal);
    if (gone.signal.aborted) {
      reply.hijack();
      return undefined;
    }
    if (outcome.finishReason === "cancelled") throw shutdownCancelled();
    return completionBody(job, outcome);
  } finally {
    slot.release();
    request.log.debug({ request: job.id }, "generation slot released");
  }
}

async function run(ctx: ServerContext, job: Job, signal: AbortSignal, onText?: (delta: string) => void): Promise<GenerationOutcome> {
  const outcome = await ctx.generator.generate(job.promptIds, job.params, {
    signal,
    onText,
    onToken: (index, ms) => {
      ctx.metrics.recordToken(index, ms);
      if (generationChannel.hasSubscribers) generationChannel.publish({ type: "token", id: job.id, index, ms } satisfies GenerationEvent);
    },
  });
  ctx.metrics.recordGeneration(outcome.finishReason, outcome.promptTokens, outcome.completionTokens);
  if (generationChannel.hasSubscribers) generationChannel.publish({ type: "end", id: job.id, outcome } satisfies GenerationEvent);
  return outcome;
}

async function streamCompletion(ctx: ServerContext, res: ServerResponse, job: Job, signal: AbortSignal, stopReading: () => void): Promise<void> {
  res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
  const send = (payload: unknown): void => {
    if (res.destroyed) return;
    res.write(`data: ${JSON.stringify(payload)}\n\n`);
    if (res.writableLength > MAX_BUFFERED_BYTES) stopReading();
  };
  const usageField = job.includeUsage ? { usage: null } : {};
  const created = Math.floor(Date.now() / 1000);
  const chunk = (choice: Record<string, unknown>) => ({ id: job.id, object: job.kind === "chat" ? "chat.completion.chunk" : "text_completion", created, model: job.model, choices: [{ index: 0, logprobs: null, ...choice }], ...usageField });
  if (job.kind === "chat") send(chunk({ delta: { role: "assistant", content: "" }, finish_reason: null }));
  try {
    const outcome = await run(ctx, job, signal, (delta) => send(chunk(job.kind === "chat" ? { delta: { content: delta }, finish_reason: null } : { text: delta, finish_reason: null })));
    if (res.destroyed) return;
    if (outcome.finishReason === "cancelled") {
      send({ error: errorObject(shutdownCancelled()) });
    } else {
      send(chunk(job.kind === "chat" ? { delta: {}, finish_reason: outcome.finishReason } : { text: "", finish_reason: outcome.finishReason }));
      if (job.includeUsage) send({ id: job.id, object: chunk({}).object, created, model: job.model, choices: [], usage: usage(outcome) });
      res.write("data: [DONE]\n\n");
    }
  } catch (error) {
    // The status line went out with the first chunk: an error can only be one last event.
    ctx.log.error({ err: error, request: job.id }, "generation failed mid-stream");
    send({ error: { message: `generation failed: ${describeError(error)}`, type: "server_error", param: null, code: "generation_failed" } });
  }
  res.end();
}

function completionBody(job: Job, outcome: GenerationOutcome): Record<string, unknown> {
  const finishReason = outcome.finishReason;
  const choice = job.kind === "chat"
    ? { index: 0, message: { role: "assistant", content: outcome.text, refusal: null }, logprobs: null, finish_reason: finishReason }
    : { index: 0, text: outcome.text, logprobs: null, finish_reason: finishReason };
  return { id: job.id, object: job.kind === "chat" ? "chat.completion" : "text_completion", created: Math.floor(Date.now() / 1000), model: job.model, choices: [choice], usage: usage(outcome) };
}

function usage(outcome: GenerationOutcome): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  return { prompt_tokens: outcome.promptTokens, completion_tokens: outcome.completionTokens, total_tokens: outcome.promptTokens + outcome.completionTokens };
}

function shutdownCancelled(): RequestError {
  return new RequestError(503, "the server is shutting down; the generation was cancelled", { type: "server_error", apiCode: "shutting_down" });
}

/** The OpenAI error object of a refused request. */
export function errorObject(error: RequestError): { message: string; type: string; param: string | null; code: string | null } {
  return { message: error.message, type: error.type, param: error.param, code: error.apiCode };
}
