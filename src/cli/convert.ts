/** `halo convert --from llama2c`: a llama2.c checkpoint and tokenizer to GGUF. */
import { UsageError } from "../base/index.js";
import { convertLlama2cToGguf } from "../model/index.js";
import { booleanFlag, choiceFlag, parseFlags, requiredStringFlag, stringFlag } from "./flags.js";
import type { CommandIo } from "./io.js";

export const CONVERT_HELP = `usage: halo convert --from llama2c MODEL.bin --tokenizer TOK.bin --out OUT.gguf [--name NAME]

Converts a llama2.c checkpoint (float32, legacy format) and its tokenizer.bin to a GGUF file.`;

export async function convertCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { from: { type: "string" }, tokenizer: { type: "string" }, out: { type: "string", short: "o" }, name: { type: "string" } }, true);
  if (booleanFlag(flags, "help")) {
    io.stdout(CONVERT_HELP + "\n");
    return 0;
  }
  const format = choiceFlag(flags, "from", ["llama2c"] as const);
  if (format === undefined) throw new UsageError("--from is required (supported: llama2c)");
  if (flags.positionals.length !== 1) throw new UsageError("convert takes exactly one input checkpoint");
  const result = convertLlama2cToGguf(flags.positionals[0]!, requiredStringFlag(flags, "tokenizer"), requiredStringFlag(flags, "out"), stringFlag(flags, "name"));
  const c = result.config;
  io.stderr(`halo: wrote ${result.nTensors} tensors, ${result.bytesWritten} bytes (dim ${c.dim}, ${c.nLayers} layers, ${c.nHeads} heads, ${c.nKvHeads} kv heads, vocab ${c.vocabSize}, context ${c.seqLen})\n`);
  return 0;
}
