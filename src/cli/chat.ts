/**
 * `halo chat`: a conversation in the terminal. Each line read is a user turn; the reply streams
 * to stdout, the stats go to stderr (per token when clustered, as halo run prints them, and one
 * summary per reply). Ends at end of input or on "/exit".
 */
import { createInterface } from "node:readline";
import type { ChatMessage } from "../model/index.js";
import { TARGET_FLAGS, TARGET_FLAGS_HELP, generationTarget } from "./cluster.js";
import { booleanFlag, parseFlags, stringFlag, type FlagSpec } from "./flags.js";
import { formatTokenStats, openGenerationSession, TokenStatsMeter, type GenerationSession } from "./generationSession.js";
import type { CommandIo } from "./io.js";
import { sessionGenerator } from "./serve.js";

const CHAT_FLAGS = { ...TARGET_FLAGS, system: { type: "string" } } as const satisfies FlagSpec;

export const CHAT_HELP = `usage: halo chat [--model F | --workers h:p,… | --local N] [--system TEXT] [sampling flags]

An interactive chat on stdin/stdout, rendered with the model's chat template (or "role: content"
lines for a model without one). Type a message and Enter; "/exit" or end of input (Ctrl-D) quits.
The whole conversation is the prompt of each reply; the oldest turns are dropped when it no
longer fits the context.
      --system TEXT      a system message to start the conversation with
${TARGET_FLAGS_HELP}`;

/** Tokens kept free for the reply when old turns have to be dropped. */
const MIN_REPLY_TOKENS = 32;

export async function chatCommand(argv: readonly string[], io: CommandIo, input: NodeJS.ReadableStream = process.stdin): Promise<number> {
  const flags = parseFlags(argv, CHAT_FLAGS);
  if (booleanFlag(flags, "help")) {
    io.stdout(CHAT_HELP + "\n");
    return 0;
  }
  const system = stringFlag(flags, "system");
  const { request, stop } = await generationTarget(flags, io);
  let session: GenerationSession | undefined;
  try {
    session = await openGenerationSession(request, io);
    const generator = sessionGenerator(session, request);
    const coordinator = session.coordinator;
    const interactive = (input as { isTTY?: boolean }).isTTY === true;
    const prompt = (): void => {
      if (interactive) io.stdout("> ");
    };
    const history: ChatMessage[] = system === undefined ? [] : [{ role: "system", content: system }];
    const firstTurn = history.length;
    prompt();
    for await (const line of createInterface({ input, crlfDelay: Infinity })) {
      const text = line.trim();
      if (text === "/exit") break;
      if (text === "") {
        prompt();
        continue;
      }
      history.push({ role: "user", content: text });
      let promptIds = generator.encodeChat(history);
      while (promptIds.length + MIN_REPLY_TOKENS > generator.contextLength && history.length - firstTurn > 1) {
        history.splice(firstTurn, 1);
        promptIds = generator.encodeChat(history);
      }
      if (promptIds.length >= generator.contextLength) {
        io.stderr(`halo chat: the message makes a prompt of ${promptIds.length} tokens, more than the context of ${generator.contextLength} leaves room for; shorten it\n`);
        history.pop();
        prompt();
        continue;
      }
      const meter = new TokenStatsMeter(coordinator);
      const outcome = await generator.generate(promptIds, { maxTokens: request.maxTokens }, {
        onText: (delta) => io.stdout(delta),
        onToken: (index) => {
          if (coordinator !== undefined) io.stderr(`\n${formatTokenStats(index, meter.next(), request.importance.predictorPath !== undefined)}\n`);
        },
      });
      io.stdout("\n");
      io.stderr(`halo: prompt ${outcome.promptTokens} tokens, ${outcome.promptMs.toFixed(1)} ms | reply ${outcome.completionTokens} tokens, ${outcome.msPerToken.toFixed(2)} ms/token | stop: ${outcome.finishReason}\n`);
      history.push({ role: "assistant", content: outcome.text });
      prompt();
    }
    return 0;
  } finally {
    await session?.close();
    stop();
  }
}
