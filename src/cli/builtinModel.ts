/** The demo model shipped inside the package, used when --model is not given. */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The package root: the nearest ancestor of this file with a package.json. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("halo's package.json was not found above " + fileURLToPath(import.meta.url));
    dir = parent;
  }
  return dir;
}

export function builtinModelPath(): string {
  return join(packageRoot(), "models", "stories260K.gguf");
}
