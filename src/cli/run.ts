/** `halo run`: generate text from a prompt on this machine. */
import { Engine, Sampler, generate } from "../engine/index.js";
import { booleanFlag, integerFlag, parseFlags, stringFlag } from "./flags.js";
import { MODEL_FLAGS, MODEL_FLAGS_HELP, SAMPLING_FLAGS, SAMPLING_FLAGS_HELP, readModelFlags, readSamplingFlags } from "./modelFlags.js";
import type { CommandIo } from "./io.js";
import { loadCommandModel } from "./engineSetup.js";

export const RUN_HELP = `usage: halo run [--model F] [--prompt P] [--max-tokens N] [sampling flags] [--ignore-eos] [--json]

Generates text. stdout carries the generated text only; timings go to stderr.
  -p, --prompt P         prompt text (default: empty, generate from BOS)
  -n, --max-tokens N     tokens to generate (default 256)
      --ignore-eos       keep generating past the end-of-sequence token
      --json             print one JSON object {text, tokens, timings, ...} instead
${MODEL_FLAGS_HELP}
${SAMPLING_FLAGS_HELP}`;

export async function runCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, {
    ...MODEL_FLAGS,
    ...SAMPLING_FLAGS,
    prompt: { type: "string", short: "p" },
    "max-tokens": { type: "string", short: "n" },
    "ignore-eos": { type: "boolean" },
    json: { type: "boolean" },
  });
  if (booleanFlag(flags, "help")) {
    io.stdout(RUN_HELP + "\n");
    return 0;
  }
  const modelFlags = readModelFlags(flags);
  const sampling = readSamplingFlags(flags);
  const maxTokens = integerFlag(flags, "max-tokens", 0, 1 << 24) ?? 256;
  const prompt = stringFlag(flags, "prompt") ?? "";
  const json = booleanFlag(flags, "json");

  const { model, kernels } = await loadCommandModel(modelFlags);
  const engine = new Engine(model.config, model.weights, { kernels, contextLength: modelFlags.contextLength });
  const sampler = new Sampler(model.config.vocabSize, sampling);
  const promptIds = model.tokenizer.encode(prompt, { addBos: true });
  const result = await generate(engine, model.tokenizer, sampler, promptIds, {
    // generate() stops at the context's end itself (stopReason "context_full") and rejects a prompt that overflows it.
    maxTokens,
    ignoreEos: booleanFlag(flags, "ignore-eos"),
    onToken: json ? undefined : (_id, text) => io.stdout(text),
  });
  model.file.close();
  const t = result.timings;
  if (json) {
    io.stdout(JSON.stringify({ text: result.text, tokens: result.tokens, promptTokens: promptIds, stopReason: result.stopReason, seed: sampling.seed, kernels: engine.kernels.name, timings: t }) + "\n");
  } else {
    io.stdout("\n");
    io.stderr(
      `halo: prompt ${t.promptTokens} tokens, ${t.promptTokensPerSecond.toFixed(1)} tok/s | decode ${t.generatedTokens} tokens, ` +
        `${t.decodeTokensPerSecond.toFixed(1)} tok/s, ${t.msPerToken.toFixed(2)} ms/token | stop: ${result.stopReason} | kernels ${engine.kernels.name}\n`,
    );
  }
  return 0;
}
