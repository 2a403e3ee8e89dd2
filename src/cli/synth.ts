/** `halo synth`: a synthetic model with real shapes and seeded random weights. */
import { UsageError } from "../base/index.js";
import { SYNTH_SHAPES, SYNTH_TYPES, openGguf, writeSyntheticModel, type SynthShapeName } from "../model/index.js";
import { booleanFlag, choiceFlag, integerFlag, parseFlags, requiredStringFlag, stringFlag } from "./flags.js";
import type { CommandIo } from "./io.js";

export const SYNTH_HELP = `usage: halo synth --shape S --type T [--layers N] [--seed S] [--vocab F] --out F.gguf

Writes a GGUF model with a real model's shapes and seeded random weights, for speed work.
      --shape S          ${Object.keys(SYNTH_SHAPES).join(" | ")}
      --type T           ${SYNTH_TYPES.join(" | ")} (weights; norms stay f32)
      --layers N         override the shape's layer count
      --seed S           weight seed (default 1)
      --vocab F          copy the tokenizer from this GGUF (default: a generated one)
  -o, --out F            output file`;

export async function synthCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { shape: { type: "string" }, type: { type: "string" }, layers: { type: "string" }, seed: { type: "string" }, vocab: { type: "string" }, out: { type: "string", short: "o" } });
  if (booleanFlag(flags, "help")) {
    io.stdout(SYNTH_HELP + "\n");
    return 0;
  }
  const shape = choiceFlag(flags, "shape", Object.keys(SYNTH_SHAPES) as SynthShapeName[]);
  const type = choiceFlag(flags, "type", SYNTH_TYPES);
  if (shape === undefined) throw new UsageError(`--shape is required (${Object.keys(SYNTH_SHAPES).join(", ")})`);
  if (type === undefined) throw new UsageError(`--type is required (${SYNTH_TYPES.join(", ")})`);
  const out = requiredStringFlag(flags, "out");
  const vocabPath = stringFlag(flags, "vocab");
  const vocabFile = vocabPath === undefined ? undefined : await openGguf(vocabPath);
  const started = performance.now();
  try {
    const result = writeSyntheticModel(out, {
      shape,
      type,
      seed: integerFlag(flags, "seed", 0, 2 ** 32 - 1) ?? 1,
      nLayers: integerFlag(flags, "layers", 1, 1024),
      vocab: vocabFile?.metadata,
      onTensor: (done, total, name) => io.stderr(`\rhalo synth: [${"#".repeat(Math.round((30 * done) / total)).padEnd(30)}] ${done}/${total} ${name.padEnd(28)}`),
    });
    const s = result.shape;
    io.stderr(`\nhalo synth: wrote ${out}: ${(result.bytesWritten / 2 ** 20).toFixed(1)} MiB, ${result.nTensors} tensors, dim ${s.dim}, ffn ${s.hiddenDim}, ${s.nLayers} layers, ${s.nHeads}/${s.nKvHeads} heads, vocab ${s.vocabSize} in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  } finally {
    vocabFile?.close();
  }
  return 0;
}
