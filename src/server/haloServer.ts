/**
 * `halo serve`'s HTTP server: an OpenAI-compatible API over one TextGenerator.
 *
 * Built on fastify rather than bare node:http because the abuse cases of RELIABILITY's HTTP
 * table are fastify's defaults or one option each: the body limit is checked against
 * Content-Length before reading (413), unknown content types are refused (415), JSON is parsed
 * with prototype-poisoning protection, request and header timeouts bound slow clients, close()
 * stops accepting and drains, and its logger is pino. Plugins give the dashboard a place to mount.
 * (While closing, requests on open connections still reach the routes, so that they are refused
 * in the OpenAI shape by the closed queue rather than by fastify's own 503 body.)
 */
import { createHash, timingSafeEqual } from "node:crypto";
import Fastify, { type FastifyError, type FastifyInstance } from "fastify";
import { pino, type Logger } from "pino";
import { ChatTemplateError, ContextOverflowError, RequestError, UsageError } from "../base/index.js";
import { checkModel, errorObject, registerCompletionRoutes } from "./completionRoutes.js";
import { GenerationQueue } from "./generationQueue.js";
import type { ServerContext } from "./serverContext.js";
import { ServerMetrics } from "./serverMetrics.js";
import type { TextGenerator } from "./textGenerator.js";

/** Mounts more routes or hooks on the server (the dashboard will be one). */
export type ServerExtension = (app: FastifyInstance, context: ServerContext) => void | Promise<void>;

export interface HaloServerOptions {
  generator: TextGenerator;
  /** Clients must send `Authorization: Bearer <apiKey>` (GET /health excepted). Defaults to none. */
  apiKey?: string;
  /** Requests that may wait behind the running generation before 429. Defaults to 16. */
  maxQueue?: number;
  /** Largest request body, bytes. Defaults to 1 MiB. */
  bodyLimitBytes?: number;
  /** max_tokens for a request that gives none. Defaults to 256. */
  defaultMaxTokens?: number;
  /** At close, how long the running generation may take to finish before it is cancelled, ms. Defaults to 10,000. */
  shutdownGraceMs?: number;
  /** Defaults to a silent logger. */
  logger?: Logger;
  extensions?: readonly ServerExtension[];
}

export const DEFAULT_MAX_QUEUE = 16;
export const DEFAULT_BODY_LIMIT_BYTES = 1 << 20;

/** Slow-client bounds (RELIABILITY H3): headers within 10 s, the whole request within 30 s. */
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** At close, once no generation runs, how long other connections may take to end on their own. */
const CONNECTION_DRAIN_MS = 1_000;

/** Routes and their methods, for 405 on a known path with the wrong method. */
const ROUTES: ReadonlyArray<{ path: RegExp; methods: string }> = [
  { path: /^\/v1\/chat\/completions$/, methods: "POST" },
  { path: /^\/v1\/completions$/, methods: "POST" },
  { path: /^\/v1\/models(\/[^/]+)?$/, methods: "GET, HEAD" },
  { path: /^\/(health|metrics)$/, methods: "GET, HEAD" },
];

export class HaloServer {
  #closing: Promise<void> | undefined;

  private constructor(
    readonly app: FastifyInstance,
    readonly context: ServerContext,
    private readonly shutdown: AbortController,
    private readonly graceMs: number,
  ) {}

  static async create(options: HaloServerOptions): Promise<HaloServer> {
    const logger = options.logger ?? pino({ level: "silent" });
    const bodyLimit = options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES;
    // Typed as the plain instance: the pino logger's type parameter buys the routes and extensions nothing.
    const app = Fastify({ loggerInstance: logger, bodyLimit, requestTimeout: REQUEST_TIMEOUT_MS, return503OnClosing: false, forceCloseConnections: "idle" }) as unknown as FastifyInstance;
    app.server.headersTimeout = HEADERS_TIMEOUT_MS;
    const queue = new GenerationQueue(options.maxQueue ?? DEFAULT_MAX_QUEUE);
    const shutdown = new AbortController();
    const context: ServerContext = {
      generator: options.generator,
      queue,
      metrics: new ServerMetrics(queue, options.generator.cluster),
      defaultMaxTokens: options.defaultMaxTokens ?? 256,
      shutdownSignal: shutdown.signal,
      log: app.log,
    };

    // JSON only: text/plain bodies (fastify's other default) get 415 like any other type.
    app.removeContentTypeParser("text/plain");
    app.addHook("onRequest", async (request, reply) => {
      reply.raw.once("close", () => {
        const route = request.routeOptions.url ?? "unmatched";
        context.metrics.requests.inc({ route, status: reply.raw.writableFinished ? String(reply.raw.statusCode) : "499" });
      });
      if (options.apiKey !== undefined && (request.routeOptions.config as { public?: boolean }).public !== true) checkApiKey(request.headers.authorization, options.apiKey);
    });
    app.setErrorHandler((error: FastifyError, request, reply) => {
      const refused = asRequestError(error, bodyLimit);
      if (refused === undefined) {
        request.log.error({ err: error }, "request failed");
        return reply.code(500).send({ error: { message: "internal server error", type: "server_error", param: null, code: null } });
      }
      request.log.info({ status: refused.status, code: refused.apiCode, reason: refused.message }, "request refused");
      return reply.code(refused.status).headers(refused.headers).send({ error: errorObject(refused) });
    });
    app.setNotFoundHandler((request) => {
      const path = request.url.split("?")[0]!;
      const known = ROUTES.find((r) => r.path.test(path));
      if (known !== undefined) throw new RequestError(405, `${request.method} is not allowed on ${path}; use ${known.methods}`, { apiCode: "method_not_allowed", headers: { allow: known.methods } });
      throw new RequestError(404, `Invalid URL (${request.method} ${path})`, { apiCode: "unknown_url" });
    });

    registerCompletionRoutes(app, context);
    const modelEntry = () => ({ id: options.generator.modelId, object: "model", created: 0, owned_by: "halo" });
    app.get("/v1/models", async () => ({ object: "list", data: [modelEntry()] }));
    app.get<{ Params: { id: string } }>("/v1/models/:id", async (request) => {
      checkModel(context, request.params.id);
      return modelEntry();
    });
    app.get("/health", { config: { public: true } }, async (_request, reply) => reply.code(queue.closed ? 503 : 200).send(health(context)));
    app.get("/metrics", async (_request, reply) => reply.type(context.metrics.contentType).send(await context.metrics.text()));
    for (const extension of options.extensions ?? []) await extension(app, context);
    await app.ready();
    return new HaloServer(app, context, shutdown, options.shutdownGraceMs ?? 10_000);
  }

  /** Listens on host:port (0: an ephemeral port) and returns the URL clients use. */
  async listen(host: string, port: number): Promise<{ url: string; port: number }> {
    try {
      await this.app.listen({ host, port });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "EADDRINUSE" || code === "EACCES" || code === "EADDRNOTAVAIL") throw new UsageError(`cannot listen on ${host}:${port}: ${code}`);
      throw error;
    }
    const address = this.app.server.address();
    const actual = typeof address === "object" && address !== null ? address.port : port;
    const shown = host.includes(":") ? `[${host}]` : host;
    return { url: `http://${shown}:${actual}`, port: actual };
  }

  /**
   * Graceful shutdown: stop accepting (new requests get 503), refuse everyone queued, let the
   * running generation finish within the grace period, then cancel it, and close. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const { queue, log } = this.context;
      queue.close();
      const closed = this.app.close();
      const finished = await Promise.race([queue.whenIdle().then(() => true), delay(this.graceMs).then(() => false)]);
      if (!finished) {
        log.warn({ graceMs: this.graceMs }, "cancelling the running generation to shut down");
        this.shutdown.abort(new Error("the server is shutting down"));
        await queue.whenIdle();
      }
      // Whatever connection is left now carries no generation: a keep-alive the client holds
      // open, or a request that is not being sent. Give it a moment, then cut it.
      const drained = await Promise.race([closed.then(() => true), delay(CONNECTION_DRAIN_MS).then(() => false)]);
      if (!drained) this.app.server.closeAllConnections();
      await closed;
    })();
    return this.#closing;
  }
}

function health(context: ServerContext): Record<string, unknown> {
  const { generator, queue } = context;
  const cluster = generator.cluster;
  const lost = cluster?.lostWorkers ?? [];
  return {
    status: queue.closed ? "shutting_down" : lost.length === 0 ? "ok" : "degraded",
    model: generator.modelId,
    contextLength: generator.contextLength,
    queue: { active: queue.active, waiting: queue.waiting, capacity: queue.maxWaiting },
    ...(cluster === undefined ? {} : { cluster: { devices: cluster.nDevices, lostWorkers: lost } }),
  };
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** Constant-time in the key: both sides are hashed to equal length before comparing. */
function checkApiKey(header: string | undefined, apiKey: string): void {
  const details = { type: "authentication_error", apiCode: "invalid_api_key", headers: { "www-authenticate": "Bearer" } } as const;
  const match = header === undefined ? null : /^Bearer\s+(.+)$/i.exec(header.trim());
  if (match === null) throw new RequestError(401, "no API key: send the header 'Authorization: Bearer <key>'", details);
  if (!timingSafeEqual(digest(match[1]!), digest(apiKey))) throw new RequestError(401, "incorrect API key", details);
}

/** The refusal an error stands for, or undefined for a server fault (500). */
function asRequestError(error: FastifyError | Error, bodyLimit: number): RequestError | undefined {
  if (error instanceof RequestError) return error;
  if (error instanceof ChatTemplateError) return new RequestError(400, error.message, { param: "messages", apiCode: "chat_template_error" });
  if (error instanceof ContextOverflowError) return new RequestError(400, error.message, { apiCode: "context_length_exceeded" });
  const code = (error as FastifyError).code;
  switch (code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      // Closing drops whatever of the body is still on its way instead of reading it.
      return new RequestError(413, `the request body is larger than ${bodyLimit} bytes`, { apiCode: "request_too_large", headers: { connection: "close" } });
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new RequestError(415, "the request body must be JSON, sent with 'Content-Type: application/json'", { apiCode: "unsupported_media_type" });
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new RequestError(400, "the request body is empty; send a JSON object", { apiCode: "invalid_json" });
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return new RequestError(400, "the request body is not valid JSON", { apiCode: "invalid_json" });
  }
  const status = (error as FastifyError).statusCode;
  if (status !== undefined && status >= 400 && status < 500) return new RequestError(status, error.message, { apiCode: code ?? null });
  return undefined;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
