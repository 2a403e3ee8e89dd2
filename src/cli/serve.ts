/** `halo serve`: the OpenAI-compatible HTTP API over this machine's model or a cluster. */
import { basename } from "node:path";
import { pino, type Logger } from "pino";
import { UsageError } from "../base/index.js";
import { ChatTemplate } from "../model/index.js";
import { DEFAULT_BODY_LIMIT_BYTES, DEFAULT_MAX_QUEUE, HaloServer, TextGenerator, dashboardExtension } from "../server/index.js";
import { TARGET_FLAGS, TARGET_FLAGS_HELP, generationTarget } from "./cluster.js";
import { booleanFlag, choiceFlag, integerFlag, parseFlags, stringFlag, type FlagSpec } from "./flags.js";
import type { CommandIo } from "./io.js";
import { openGenerationSession, type GenerationRequest, type GenerationSession } from "./generationSession.js";

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

const SERVE_FLAGS = {
  ...TARGET_FLAGS,
  host: { type: "string" },
  port: { type: "string" },
  "api-key": { type: "string" },
  "max-queue": { type: "string" },
  "max-body-kb": { type: "string" },
  "log-level": { type: "string" },
} as const satisfies FlagSpec;

export const SERVE_HELP = `usage: halo serve [--model F] [--workers h:p,… | --local N [link flags]] [--host H] [--port P]
                 [--api-key K] [--max-queue N] [--log-level L]

Serves the model over an OpenAI-compatible HTTP API (docs/server.md): POST /v1/chat/completions
and /v1/completions (streaming with "stream": true), GET /v1/models, /health and /metrics
(Prometheus), and a live dashboard at / (devices, links, placement, per-token latency, chat).
One generation runs at a time; others wait in a bounded queue. Logs are JSON lines
(pino) on stderr. SIGINT or SIGTERM stops accepting, lets the running generation finish (up to
10 s), closes the cluster and exits 0.
      --host H           address to listen on (default 127.0.0.1)
      --port P           port (default 8080; 0 picks a free one, logged as "listening")
      --api-key K        require 'Authorization: Bearer K' (or HALO_API_KEY); /health stays public
      --max-queue N      requests that may wait behind the running one before 429 (default ${DEFAULT_MAX_QUEUE})
      --max-body-kb N    largest request body in KiB (default ${DEFAULT_BODY_LIMIT_BYTES / 1024})
      --log-level L      ${LOG_LEVELS.join(", ")} (default info)
${TARGET_FLAGS_HELP}`;

/** The model's id for clients: its file name without .gguf. */
export function modelIdOf(modelPath: string): string {
  return basename(modelPath).replace(/\.gguf$/i, "");
}

/** The server's facade over a session, with the command's sampling flags as request defaults. */
export function sessionGenerator(session: GenerationSession, request: GenerationRequest): TextGenerator {
  const { model, engine, coordinator } = session;
  return new TextGenerator({ modelId: modelIdOf(request.modelFlags.modelPath), engine, tokenizer: model.tokenizer, chatTemplate: ChatTemplate.fromGguf(model.file.metadata), sampling: request.sampling, cluster: coordinator });
}

/** Session output (cluster joins, importance) as log records instead of bare lines. */
function loggingIo(io: CommandIo, logger: Logger): CommandIo {
  return { stdout: io.stdout, stderr: (text) => text.split("\n").filter((line) => line.trim() !== "").forEach((line) => logger.info(line.replace(/^halo[^:]*: /, ""))) };
}

function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals): void => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
      resolve(signal);
    };
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
  });
}

export async function serveCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, SERVE_FLAGS);
  if (booleanFlag(flags, "help")) {
    io.stdout(SERVE_HELP + "\n");
    return 0;
  }
  const host = stringFlag(flags, "host") ?? "127.0.0.1";
  const port = integerFlag(flags, "port", 0, 65535) ?? 8080;
  const apiKey = stringFlag(flags, "api-key") ?? process.env["HALO_API_KEY"];
  if (apiKey !== undefined && apiKey.trim() === "") throw new UsageError("--api-key must not be empty");
  const maxQueue = integerFlag(flags, "max-queue", 0, 100_000) ?? DEFAULT_MAX_QUEUE;
  const bodyLimitKb = integerFlag(flags, "max-body-kb", 1, 1 << 20) ?? DEFAULT_BODY_LIMIT_BYTES / 1024;
  const logger = pino({ level: choiceFlag(flags, "log-level", LOG_LEVELS) ?? "info", base: { pid: process.pid } }, { write: (line: string) => io.stderr(line) });
  const logIo = loggingIo(io, logger);

  const { request, stop } = await generationTarget(flags, logIo);
  let session: GenerationSession | undefined;
  try {
    session = await openGenerationSession(request, logIo);
    const generator = sessionGenerator(session, request);
    const server = await HaloServer.create({ generator, apiKey, maxQueue, bodyLimitBytes: bodyLimitKb * 1024, defaultMaxTokens: request.maxTokens, logger, extensions: [dashboardExtension()] });
    const { url } = await server.listen(host, port);
    const signal = waitForSignal();
    if (apiKey === undefined && !/^(127\.|localhost$|::1$)/.test(host)) logger.warn({ host }, "listening beyond loopback without --api-key: anyone who can reach this port can use the model");
    logger.info({ url, model: generator.modelId, devices: session.coordinator?.nDevices ?? 1, chatTemplate: generator.chatTemplate.isFallback ? "fallback" : "model", kernels: session.kernels.name }, "listening");
    logger.info({ signal: await signal }, "shutting down");
    await server.close();
    logger.info("stopped");
    return 0;
  } finally {
    await session?.close();
    stop();
  }
}
