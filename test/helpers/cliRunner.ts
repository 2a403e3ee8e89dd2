/**
 * Runs the compiled `halo` CLI (dist/src/cli/main.js) in a child process, the way a user does,
 * and checks the CLI's error contract: exactly one `halo <cmd>: error: <message> [HALO_ERR_*]`
 * line on stderr, nothing on stdout, no stack trace.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { projectRoot } from "./paths.js";

export interface HaloRun {
  /** Exit status, or null when killed by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface HaloRunOptions {
  /** Killed after this long (then the promise rejects). Defaults to 30 s. */
  timeoutMs?: number;
  /** Working directory. Defaults to the project root. */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
}

export function haloMainPath(): string {
  return path.join(projectRoot(), "dist", "src", "cli", "main.js");
}

export function runHalo(args: readonly string[], options: HaloRunOptions = {}): Promise<HaloRun> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  // node --test marks its children through NODE_TEST_CONTEXT; the CLI is not a test process.
  const env = { ...process.env, ...options.env };
  delete env.NODE_TEST_CONTEXT;
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [haloMainPath(), ...args],
      { cwd: options.cwd ?? projectRoot(), env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: "utf8" },
      (error, stdout, stderr) => {
        if (error !== null && typeof error.code !== "number" && error.signal == null) {
          reject(error); // spawn failure
          return;
        }
        if (error?.killed === true) {
          reject(new Error(`halo ${args.join(" ")} timed out after ${timeoutMs} ms; stderr: ${stderr}`));
          return;
        }
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, signal: error?.signal ?? null, stdout, stderr });
      },
    );
  });
}

/** Shown with a failed assertion, so the output that broke it is in the report. */
export function describeRun(args: readonly string[], run: HaloRun): string {
  return `halo ${JSON.stringify(args)} → exit ${run.code}\n--- stdout ---\n${run.stdout}--- stderr ---\n${run.stderr}`;
}

export interface ExpectedError {
  /** The command in the prefix (`halo run: error:`), or undefined for `halo: error:`. */
  command: string | undefined;
  exitCode: 1 | 2;
  code: `HALO_ERR_${string}`;
  /** What the message must contain (a string is matched literally), or the exact message. */
  message: RegExp | string;
  exact?: boolean;
}

/** Asserts the CLI error contract and returns the message between the prefix and the code. */
export function assertErrorLine(args: readonly string[], run: HaloRun, expected: ExpectedError): string {
  const context = describeRun(args, run);
  assert.equal(run.code, expected.exitCode, context);
  assert.equal(run.stdout, "", context);
  assert.ok(!run.stderr.includes("    at "), `stack trace on stderr:\n${context}`);
  assert.ok(run.stderr.endsWith("\n"), context);
  const lines = run.stderr.slice(0, -1).split("\n");
  assert.equal(lines.length, 1, `expected exactly one stderr line:\n${context}`);
  const prefix = expected.command === undefined ? "halo: error: " : `halo ${expected.command}: error: `;
  const suffix = ` [${expected.code}]`;
  const line = lines[0]!;
  assert.ok(line.startsWith(prefix), `expected prefix '${prefix}':\n${context}`);
  assert.ok(line.endsWith(suffix), `expected code ${expected.code}:\n${context}`);
  const message = line.slice(prefix.length, -suffix.length);
  if (expected.exact === true) assert.equal(message, expected.message, context);
  else if (typeof expected.message === "string") assert.ok(message.includes(expected.message), `message lacks '${expected.message}':\n${context}`);
  else assert.match(message, expected.message, context);
  return message;
}

/** The JSON object of a `--json` run: stdout must be exactly one line holding it. */
export function parseJsonLine<T>(args: readonly string[], run: HaloRun): T {
  const context = describeRun(args, run);
  assert.equal(run.code, 0, context);
  assert.ok(run.stdout.endsWith("\n"), context);
  assert.equal(run.stdout.indexOf("\n"), run.stdout.length - 1, `stdout must be exactly one line:\n${context}`);
  return JSON.parse(run.stdout) as T;
}
