/** Where the project and the shared model files live, found from this file rather than the working directory. */
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The nearest directory above this (compiled) file that holds package.json. */
export function projectRoot(): string {
  const here = fileURLToPath(import.meta.url);
  for (let dir = path.dirname(here); ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "package.json"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json in any directory above ${here}`);
  }
}

/** `shared/models`, a sibling of the project root. */
export function sharedModelsDir(): string {
  return path.join(projectRoot(), "..", "shared", "models");
}
