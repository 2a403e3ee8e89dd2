/** `halo perplexity`: mean NLL and perplexity of a text file, by the golden-reference protocol. */
import { ContextOverflowError } from "../base/index.js";
import { Engine, perplexity } from "../engine/index.js";
import { booleanFlag, integerFlag, parseFlags, requiredStringFlag } from "./flags.js";
import type { CommandIo } from "./io.js";
import { readTextFile } from "./textFile.js";
import { loadCommandModel } from "./engineSetup.js";
import { MODEL_FLAGS, MODEL_FLAGS_HELP, readModelFlags } from "./modelFlags.js";

export const PERPLEXITY_HELP = `usage: halo perplexity [--model F] --file T [--window L] [--max-chars N] [--json]

Scores a text the way golden-reference.json's protocol does: the first N characters
(UTF-16 code units, default 100000; 0 = all) are encoded without BOS and cut into
non-overlapping windows of L tokens (default 256); each window is scored from BOS with
positions restarting at 0. Prints mean NLL and perplexity.
      --file T           UTF-8 text file
      --window L         tokens per window (default 256)
      --max-chars N      characters of the file to use (default 100000, 0 = all)
      --json             print one JSON object
${MODEL_FLAGS_HELP}`;

export async function perplexityCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { ...MODEL_FLAGS, file: { type: "string", short: "f" }, window: { type: "string" }, "max-chars": { type: "string" }, json: { type: "boolean" } });
  if (booleanFlag(flags, "help")) {
    io.stdout(PERPLEXITY_HELP + "\n");
    return 0;
  }
  const modelFlags = readModelFlags(flags);
  const textPath = requiredStringFlag(flags, "file");
  const window = integerFlag(flags, "window", 2, 1 << 20) ?? 256;
  const maxChars = integerFlag(flags, "max-chars", 0, Number.MAX_SAFE_INTEGER) ?? 100_000;
  let text = readTextFile(textPath);
  if (maxChars > 0) text = text.slice(0, maxChars);
  const { model, kernels } = await loadCommandModel(modelFlags);
  if (window > model.config.contextLength) {
    model.file.close();
    throw new ContextOverflowError(window, model.config.contextLength);
  }
  const engine = new Engine(model.config, model.weights, { kernels, contextLength: window, maxBatch: Math.min(window, 512) });
  const tokens = model.tokenizer.encode(text, { addBos: false });
  const t0 = performance.now();
  const result = await perplexity(engine, tokens, model.tokenizer.bosId, window);
  const seconds = (performance.now() - t0) / 1000;
  model.file.close();
  if (booleanFlag(flags, "json")) {
    io.stdout(JSON.stringify({ ...result, nTokens: tokens.length, seconds }) + "\n");
  } else {
    io.stdout(`tokens ${tokens.length}, window ${window}, windows ${result.nWindows}, scored ${result.tokensScored}\nmean NLL ${result.meanNll.toFixed(6)}\nperplexity ${result.perplexity.toFixed(4)}\n`);
    io.stderr(`halo: ${(result.tokensScored / seconds).toFixed(0)} tok/s, ${seconds.toFixed(1)} s\n`);
  }
  return 0;
}
