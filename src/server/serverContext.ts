/** What every route of one server shares; extensions (the dashboard) receive it too. */
import type { FastifyBaseLogger } from "fastify";
import type { GenerationQueue } from "./generationQueue.js";
import type { ServerMetrics } from "./serverMetrics.js";
import type { TextGenerator } from "./textGenerator.js";

export interface ServerContext {
  readonly generator: TextGenerator;
  readonly queue: GenerationQueue;
  readonly metrics: ServerMetrics;
  /** max_tokens for a request that gives none. */
  readonly defaultMaxTokens: number;
  /** Aborted when shutdown stops waiting for the running generation. */
  readonly shutdownSignal: AbortSignal;
  readonly log: FastifyBaseLogger;
}
