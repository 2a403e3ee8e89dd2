/** `halo chat` with its stdin piped: replies on stdout, stats on stderr, exit at /exit or end of input. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { haloMainPath, runHalo } from "../helpers/cliRunner.js";
import { stories260KPath } from "../helpers/golden.js";

interface ChatRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `halo chat args` with `input` written to its stdin, then stdin closed. */
function chat(args: readonly string[], input: string, timeoutMs = 60_000): Promise<ChatRun> {
  const env = { ...process.env };
  delete env["NODE_TEST_CONTEXT"];
  const child = spawn(process.execPath, [haloMainPath(), "chat", "--model", stories260KPath(), ...args], { env, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(input);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`halo chat timed out; stderr:\n${stderr}`));
    }, timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("a piped conversation: the reply is the greedy continuation of the 'role: content' transcript; /exit ends it", async () => {
  const run = await chat(["--temperature", "0", "-n", "12"], "Once upon a time\n/exit\nnever read\n");
  assert.equal(run.code, 0, run.stderr);
  const same = await runHalo(["run", "--model", stories260KPath(), "--temperature", "0", "-n", "12", "--prompt", "user: Once upon a time\nassistant:"]);
  assert.equal(same.code, 0, same.stderr);
  assert.equal(run.stdout, same.stdout);
  assert.match(run.stderr, /^halo: prompt \d+ tokens, [\d.]+ ms \| reply 12 tokens, [\d.]+ ms\/token \| stop: length\n$/);
});

test("each line is a turn with the conversation so far as context; end of input ends the chat", async () => {
  const run = await chat(["--temperature", "0", "-n", "6", "--system", "You tell stories."], "Hi\n\nWhat then?\n");
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout.split("\n").length, 3, JSON.stringify(run.stdout));
  const summaries = run.stderr.trimEnd().split("\n");
  assert.equal(summaries.length, 2);
  const promptTokens = summaries.map((line) => Number(/prompt (\d+) tokens/.exec(line)![1]));
  assert.ok(promptTokens[1]! > promptTokens[0]! + 6, `the second prompt holds the first turn: ${promptTokens}`);
});

test("halo chat --local 2 prints the per-token stats line of a cluster", { timeout: 120_000 }, async () => {
  const run = await chat(["--local", "2", "--temperature", "0", "-n", "4", "--threads", "1"], "Hello\n", 100_000);
  assert.equal(run.code, 0, run.stderr);
  const tokenLines = run.stderr.split("\n").filter((line) => line.startsWith("[token "));
  assert.equal(tokenLines.length, 4, run.stderr);
  assert.match(tokenLines[0]!, /^\[token 1\] [\d.]+ ms \| compute [\d.]+ ms \| sync [\d.]+ ms \| sent [\d.]+ kB, received [\d.]+ kB \| dropped \d+\/\d+ contributions \(\d+ groups\)$/);
  assert.ok(run.stdout.length > 1);
});

test("--workers and --local together are refused", async () => {
  const run = await runHalo(["chat", "--local", "2", "--workers", "127.0.0.1:9"]);
  assert.equal(run.code, 2);
  assert.equal(run.stderr, "halo chat: error: --workers and --local conflict: give the workers' addresses, or start local ones [HALO_ERR_USAGE]\n");
});
