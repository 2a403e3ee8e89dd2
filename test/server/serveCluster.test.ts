/**
 * `halo serve --local 2` as a user runs it: a real coordinator and worker process on loopback
 * with emulated loss, answering through the openai client, with per-link gauges in /metrics,
 * the dashboard mounted, and a graceful SIGTERM (exit 0 with the cluster closed, even with a
 * dashboard event stream open). `--placement uniform`, so that the worker computes: the default
 * halo placement keeps this tiny model on the coordinator at 5% loss.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { test } from "node:test";
import OpenAI from "openai";
import { createServer } from "node:net";
import { assertErrorLine, haloMainPath, runHalo } from "../helpers/cliRunner.js";
import { stories260KPath } from "../helpers/golden.js";
import type { DashboardSnapshot } from "../../src/server/index.js";
import { SseReader } from "./dashboardHarness.js";
import { metricValue } from "./serverHarness.js";

test("halo serve --local 2 answers a chat completion over a lossy 2-process cluster and exits 0 on SIGTERM", { timeout: 120_000 }, async () => {
  const env = { ...process.env };
  delete env["NODE_TEST_CONTEXT"];
  const args = [haloMainPath(), "serve", "--local", "2", "--placement", "uniform", "--loss", "5", "--seed", "3", "--model", stories260KPath(), "--port", "0", "--threads", "1"];
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const records: Array<Record<string, unknown>> = [];
  const stderrLines: string[] = [];
  let stdout = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  const listening = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stderr }).on("line", (line) => {
      stderrLines.push(line);
      // Worker processes share this stderr with their own plain lines.
      if (!line.startsWith("{")) return;
      const record = JSON.parse(line) as Record<string, unknown>;
      records.push(record);
      if (record["msg"] === "listening") resolve(record["url"] as string);
    });
    void exited.then(({ code }) => reject(new Error(`halo serve exited (${code}) before listening:\n${stderrLines.join("\n")}`)));
  });
  try {
    const url = await listening;
    assert.equal(records.find((r) => r["msg"] === "listening")!["devices"], 2);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 60_000 });
    const reply = await client.chat.completions.create({ model: "stories260K", messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 8, temperature: 0 });
    assert.equal(reply.choices.length, 1);
    assert.equal(reply.usage!.completion_tokens, 8);
    assert.ok(reply.choices[0]!.message.content!.length > 0);

    const health = (await (await fetch(`${url}/health`)).json()) as { status: string; cluster: unknown };
    assert.deepEqual([health.status, health.cluster], ["ok", { devices: 2, lostWorkers: [] }]);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.equal(metricValue(metrics, "halo_cluster_devices"), 2);
    const link = /^halo_link_loss_ratio\{worker="1",address="127\.0\.0\.1:(\d+)"\} ([\d.e-]+)$/m.exec(metrics);
    assert.ok(link !== null, `no loss gauge for worker 1 in:\n${metrics}`);
    const labels = `worker="1",address="127.0.0.1:${link[1]}"`;
    for (const gauge of ["halo_link_loss_ratio", "halo_link_late_ratio", "halo_link_rtt_seconds", "halo_link_jitter_seconds"]) {
      const value = metricValue(metrics, gauge, labels);
      assert.ok(value !== undefined && Number.isFinite(value) && value >= 0, `${gauge}{${labels}} = ${value}`);
    }
    assert.match(metrics, /^halo_device_up\{device="0",name="[^"]+"\} 1$/m);
    assert.match(metrics, /^halo_device_up\{device="1",name="[^"]+"\} 1$/m);
    assert.ok((metricValue(metrics, "halo_cluster_contributions_expected_total") ?? 0) > 0);
    assert.ok(metricValue(metrics, "halo_cluster_sync_wait_seconds_total") !== undefined);
    assert.ok(metricValue(metrics, "halo_cluster_groups_dropped_total") !== undefined);
    assert.equal(metricValue(metrics, "halo_tokens_generated_total"), 8);

    // The dashboard is mounted, and an open event stream does not hold up shutdown.
    const page = await fetch(`${url}/`);
    assert.deepEqual([page.status, page.headers.get("content-type")], [200, "text/html; charset=utf-8"]);
    await page.body?.cancel();
    const events = new SseReader(await fetch(`${url}/dashboard/events`));
    const snapshot = JSON.parse((await events.next()).data) as DashboardSnapshot;
    assert.deepEqual([snapshot.devices.length, snapshot.links.length, snapshot.placement.nDevices], [2, 1, 2]);

    child.kill("SIGTERM");
    const { code, signal } = await exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, stderrLines.join("\n"));
    // The dashboard stream, ended by the shutdown, logs its completion in between.
    assert.deepEqual(records.filter((r) => r["msg"] !== "request completed").slice(-2).map((r) => r["msg"]), ["shutting down", "stopped"]);
    assert.equal(stdout, "", "logs go to stderr only");
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
});

test("halo serve flag errors and a port in use are one error line", async () => {
  for (const [args, message] of [
    [["--port", "70000"], "--port must be an integer from 0 to 65535, got '70000'"],
    [["--log-level", "loud"], "--log-level must be one of fatal, error, warn, info, debug, trace, silent, got 'loud'"],
    [["--max-queue", "-1"], "--max-queue must be an integer from 0 to 100000, got '-1'"],
    [["--prompt", "x"], "unknown flag '--prompt'"],
  ] as const) {
    const run = await runHalo(["serve", ...args]);
    assertErrorLine(args, run, { command: "serve", exitCode: 2, code: "HALO_ERR_USAGE", message, exact: true });
  }
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
  const port = (taken.address() as { port: number }).port;
  try {
    const args = ["serve", "--model", stories260KPath(), "--port", String(port), "--log-level", "silent"];
    assertErrorLine(args, await runHalo(args), { command: "serve", exitCode: 2, code: "HALO_ERR_USAGE", message: `cannot listen on 127.0.0.1:${port}: EADDRINUSE`, exact: true });
  } finally {
    taken.close();
  }
});
