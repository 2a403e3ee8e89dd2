/** Reading the text files commands take (a corpus, a text to score). */
import { readFileSync } from "node:fs";
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
