/** Reading the text files commands take (a corpus, a text to score). */
import { readFileSync } from "node:fs";
import { FileError } from "../base/index.js";

/** The file's UTF-8 text, or a FileError naming it and the system's reason. */
export function readTextFile(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw new FileError(path, `cannot read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
}
