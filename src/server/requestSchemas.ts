/**
 * The request bodies of the OpenAI-compatible endpoints, as zod schemas. Every field that halo
 * reads is bounded (RELIABILITY H5/H6: no NaN, no 2^53 token counts, no 10^4 stop strings);
 * fields halo does not use are ignored, as OpenAI-compatible servers commonly do. A failure
 * becomes a 400 naming the first offending parameter by its path ("messages[2].role").
 */
import { z } from "zod";
import { RequestError } from "../base/index.js";

/** Messages per request at most: far beyond any context, and a cheap bound on validation work. */
export const MAX_MESSAGES = 4096;
/** Stop strings per request at most (OpenAI's limit), and characters per stop string. */
export const MAX_STOP_STRINGS = 4;
export const MAX_STOP_LENGTH = 256;

const ROLES = ["system", "developer", "user", "assistant", "tool"] as const;

function integerIn(param: string, min: number, max: number) {
  const message = `${param} must be an integer from ${min} to ${max}`;
  return z.int({ error: message }).min(min, { error: message }).max(max, { error: message });
}

function numberIn(param: string, min: number, max: number) {
  const message = `${param} must be a number from ${min} to ${max}`;
  return z.number({ error: message }).min(min, { error: message }).max(max, { error: message });
}

function boolean(param: string) {
  return z.boolean({ error: `${param} must be true or false` });
}

const stopMessage = `stop must be a string or an array of at most ${MAX_STOP_STRINGS} strings, each of 1 to ${MAX_STOP_LENGTH} characters`;
const stopString = z.string({ error: stopMessage }).min(1, { error: stopMessage }).max(MAX_STOP_LENGTH, { error: stopMessage });

const contentMessage = "content must be a string or an array of {type: \"text\", text} parts";
const textPart = z.object({ type: z.literal("text", { error: contentMessage }), text: z.string({ error: contentMessage }) }, { error: contentMessage });

const chatMessage = z.object(
  {
    role: z.enum(ROLES, { error: `role must be one of ${ROLES.join(", ")}` }),
    content: z.union([z.string(), z.array(textPart)], { error: contentMessage }),
  },
  { error: "each message must be an object {role, content}" },
);

const messagesMessage = `messages must be an array of 1 to ${MAX_MESSAGES} {role, content} objects`;

/** What both endpoints take besides the prompt. */
const common = {
  model: z.string({ error: "model must be a string naming the model (GET /v1/models lists it)" }),
  max_tokens: integerIn("max_tokens", 1, 2 ** 31 - 1).nullish(),
  temperature: numberIn("temperature", 0, 2).nullish(),
  top_p: numberIn("top_p", 0, 1).nullish(),
  seed: integerIn("seed", 0, 2 ** 32 - 1).nullish(),
  stop: z.union([stopString, z.array(stopString, { error: stopMessage }).max(MAX_STOP_STRINGS, { error: stopMessage })], { error: stopMessage }).nullish(),
  n: z.literal(1, { error: "n must be 1: the server generates one choice per request" }).nullish(),
  stream: boolean("stream").nullish(),
  stream_options: z.object({ include_usage: boolean("stream_options.include_usage").nullish() }, { error: "stream_options must be an object {include_usage}" }).nullish(),
  /** llama.cpp's extension: keep generating past the end-of-sequence token. */
  ignore_eos: boolean("ignore_eos").nullish(),
};

const bodyMessage = "the request body must be a JSON object";

export const chatCompletionSchema = z.object(
  {
    ...common,
    messages: z.array(chatMessage, { error: messagesMessage }).min(1, { error: messagesMessage }).max(MAX_MESSAGES, { error: messagesMessage }),
    max_completion_tokens: integerIn("max_completion_tokens", 1, 2 ** 31 - 1).nullish(),
  },
  { error: bodyMessage },
);

const promptMessage = "prompt must be a string, or an array holding one string";

export const completionSchema = z.object(
  {
    ...common,
    prompt: z.union([z.string(), z.array(z.string()).length(1)], { error: promptMessage }),
  },
  { error: bodyMessage },
);

export type ChatCompletionBody = z.infer<typeof chatCompletionSchema>;
export type CompletionBody = z.infer<typeof completionSchema>;

/** "messages[2].content" from zod's path. */
function paramOf(path: readonly PropertyKey[]): string | null {
  if (path.length === 0) return null;
  return path.map((key, i) => (typeof key === "number" ? `[${key}]` : `${i === 0 ? "" : "."}${String(key)}`)).join("");
}

/** The validated body, or a 400 RequestError naming the first offending parameter. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const param = paramOf(issue.path);
  // Messages inside arrays name their element; the schema's own messages name only the field.
  const prefix = param !== null && /\[\d+\]/.test(param) ? `${param}: ` : "";
  const missing = issue.code === "invalid_type" && valueAt(body, issue.path) === undefined;
  throw new RequestError(400, `${prefix}${issue.message}`, { param, apiCode: missing ? "missing_required_parameter" : "invalid_value" });
}

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let at = value;
  for (const key of path) {
    if (typeof at !== "object" || at === null || !Object.hasOwn(at, key)) return undefined;
    at = (at as Record<PropertyKey, unknown>)[key];
  }
  return at;
}

/** A message's content as text: parts joined with no separator, as OpenAI concatenates text parts. */
export function messageText(content: string | ReadonlyArray<{ text: string }>): string {
  return typeof content === "string" ? content : content.map((part) => part.text).join("");
}
