/** `halo inspect F`: a GGUF file's metadata and tensor table. */
import { UsageError } from "../base/index.js";
import { GgufValueType, openGguf, readModelConfig, type GgufFile } from "../model/index.js";
import { booleanFlag, parseFlags } from "./flags.js";
import type { CommandIo } from "./io.js";

export const INSPECT_HELP = `usage: halo inspect FILE [--json]

Prints a GGUF file's metadata and tensor table (--json: as one object).`;

const MAX_ARRAY_PREVIEW = 8;

function describeValue(file: GgufFile, key: string): string {
  const value = file.metadata.raw(key);
  const type = file.metadata.typeOf(key);
  if (Array.isArray(value)) {
    const preview = value.slice(0, MAX_ARRAY_PREVIEW).map((v) => (typeof v === "string" ? JSON.stringify(v) : String(v)));
    const more = value.length > MAX_ARRAY_PREVIEW ? ", …" : "";
    return `[${preview.join(", ")}${more}] (${value.length} × type ${type?.elementType})`;
  }
  if (type?.type === GgufValueType.STRING) {
    const text = String(value);
    return JSON.stringify(text.length > 200 ? text.slice(0, 200) + "…" : text);
  }
  return String(value);
}

export async function inspectCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { json: { type: "boolean" } }, true);
  if (booleanFlag(flags, "help")) {
    io.stdout(INSPECT_HELP + "\n");
    return 0;
  }
  if (flags.positionals.length !== 1) throw new UsageError("inspect takes exactly one GGUF file");
  const file = await openGguf(flags.positionals[0]!);
  try {
    let config: unknown;
    try {
      config = readModelConfig(file.metadata);
    } catch (error) {
      config = { error: error instanceof Error ? error.message : String(error) };
    }
    if (booleanFlag(flags, "json")) {
      const metadata = Object.fromEntries(file.metadata.keys().map((k) => [k, describeValue(file, k)]));
      const tensors = file.tensors.map((t) => ({ name: t.name, type: t.typeName, shape: t.shape, offset: t.fileOffset, bytes: t.byteLength }));
      io.stdout(JSON.stringify({ path: file.path, version: file.version, fileSize: file.fileSize, alignment: file.alignment, config, metadata, tensors }) + "\n");
      return 0;
    }
    const lines = [`${file.path}: GGUF v${file.version}, ${file.fileSize} bytes, alignment ${file.alignment}, ${file.metadata.keys().length} keys, ${file.tensors.length} tensors`, "", "metadata:"];
    for (const key of file.metadata.keys()) lines.push(`  ${key} = ${describeValue(file, key)}`);
    lines.push("", "config:", `  ${JSON.stringify(config)}`, "", "tensors:");
    const nameWidth = Math.max(4, ...file.tensors.map((t) => t.name.length));
    lines.push(`  ${"name".padEnd(nameWidth)}  ${"type".padEnd(6)}  ${"shape".padEnd(18)}  ${"bytes".padStart(12)}  ${"offset".padStart(12)}`);
    for (const t of file.tensors) {
      lines.push(`  ${t.name.padEnd(nameWidth)}  ${t.typeName.padEnd(6)}  ${`[${t.shape.join(", ")}]`.padEnd(18)}  ${String(t.byteLength).padStart(12)}  ${String(t.fileOffset).padStart(12)}`);
    }
    io.stdout(lines.join("\n") + "\n");
    return 0;
  } finally {
    file.close();
  }
}
