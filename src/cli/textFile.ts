/** Reading the text files commands take (a corpus, a text to score). */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { FileError, UsageError } from "../base/index.js";

/** The file's UTF-8 text, or a FileError naming it and the system's reason. */
export function readTextFile(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw new FileError(path, `cannot read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
}

/** The file parsed as JSON; a file that is not JSON is a usage error naming the flag that gave it. */
export function readJsonFile(path: string, flag: string): unknown {
  const text = readTextFile(path);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${flag} ${path}: not JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/**
 * The file parsed as YAML when its name ends in .yaml or .yml, else as JSON; either way a file
 * that does not parse is a usage error naming the flag and, for YAML, the line and column.
 */
export function readJsonOrYamlFile(path: string, flag: string): unknown {
  if (!/\.ya?ml$/i.test(path)) return readJsonFile(path, flag);
  const text = readTextFile(path);
  try {
    // Plain data only: no custom tags, and aliases bounded so a crafted file cannot expand without limit.
    return parseYaml(text, { schema: "core", maxAliasCount: 100, prettyErrors: false });
  } catch (error) {
    const offset = (error as { pos?: [number, number] }).pos?.[0];
    const message = error instanceof Error ? error.message.split("\n")[0] : String(error);
    const before = offset === undefined ? undefined : text.slice(0, offset);
    const where = before === undefined ? "" : ` (line ${before.split("\n").length}, column ${before.length - before.lastIndexOf("\n")})`;
    throw new UsageError(`${flag} ${path}: not YAML${where}: ${message}`);
  }
}
