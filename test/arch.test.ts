/**
 * The layering rule of STYLE.md, enforced: a folder under src/ imports only from the folders
 * below it, and only through their index.ts. Nothing under src/ imports test/ or bench/.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { projectRoot } from "./helpers/paths.js";

const ALLOWED: Record<string, readonly string[]> = {
  base: [],
  kernels: ["base"],
  model: ["base", "kernels"],
  partition: ["base", "model"],
  predictor: ["base", "kernels", "model", "partition"],
  engine: ["base", "kernels", "model", "partition"],
  loader: ["base", "kernels", "model", "partition"],
  scheduler: ["base", "model", "partition", "predictor"],
  net: ["base", "kernels"],
  cluster: ["base", "kernels", "model", "partition", "predictor", "engine", "loader", "scheduler", "net"],
  server: ["base", "model", "engine", "cluster"],
  // The namespace testbed drives processes and the kernel's network tools; it knows no model or protocol.
  testbed: ["base"],
  cli: ["base", "kernels", "model", "partition", "predictor", "engine", "loader", "scheduler", "net", "cluster", "server", "testbed"],
};

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? sourceFiles(path) : entry.name.endsWith(".ts") ? [path] : [];
  });
}

test("imports point down the layer stack and through each folder's index", () => {
  const src = join(projectRoot(), "src");
  const violations: string[] = [];
  let nImports = 0;
  for (const file of sourceFiles(src)) {
    const folder = relative(src, file).split("/")[0]!;
    const text = readFileSync(file, "utf8");
    for (const match of text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"/gms)) {
      const specifier = match[1]!;
      if (!specifier.startsWith(".")) continue;
      nImports++;
      const target = relative(src, resolve(dirname(file), specifier));
      if (target.startsWith("..")) {
        violations.push(`${relative(src, file)} imports ${specifier}, outside src/`);
        continue;
      }
      const parts = target.split("/");
      const targetFolder = parts[0]!;
      if (parts.length === 1 || targetFolder === folder) continue;
      if (!(ALLOWED[folder] ?? []).includes(targetFolder)) violations.push(`${relative(src, file)} (${folder}) may not import ${targetFolder}`);
      else if (parts.slice(1).join("/") !== "index.js") violations.push(`${relative(src, file)} imports ${specifier}; import ${targetFolder}/index.js instead`);
    }
  }
  assert.ok(nImports > 20, `only ${nImports} relative imports found: is the parser broken?`);
  assert.deepEqual(violations, []);
});
