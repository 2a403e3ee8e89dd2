/**
 * `halo profile` end to end: the DeviceProfile record in --json, the table, help and a bad flag.
 *
 * Needs the compiled CLI (`npx tsc -p .`).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { assertErrorLine, describeRun, parseJsonLine, runHalo } from "../helpers/cliRunner.js";

describe("halo profile", () => {
  test("--json prints a DeviceProfile of this machine for the built-in model; the table shows the same rows", async () => {
    const args = ["profile", "--threads", "1", "--json"];
    type Profile = { name: string; compute: Array<{ tensorType: string; threads: number; attentionGroupMs: number; ffnGroupMs: number }>; attentionGroupMs: number; ffnGroupMs: number; freeMemoryBytes: number; memoryBudgetBytes: number; readBytesPerSecond: number; link: Record<string, number> };
    const run = await runHalo(args);
    assert.equal(run.stderr, "", describeRun(args, run));
    const profile = parseJsonLine<Profile>(args, run);
    assert.deepEqual(Object.keys(profile).sort(), ["attentionGroupMs", "compute", "ffnGroupMs", "freeMemoryBytes", "link", "memoryBudgetBytes", "name", "readBytesPerSecond"]);
    assert.deepEqual(profile.compute.map((s) => `${s.tensorType}/${s.threads}`), ["F32/1", "Q8_0/1", "Q4_0/1"]);
    assert.ok(profile.compute.every((s) => s.attentionGroupMs > 0 && s.ffnGroupMs > 0) && profile.readBytesPerSecond > 0 && profile.freeMemoryBytes > 0, JSON.stringify(profile));
    assert.deepEqual(profile.link, { rttMs: 0, jitterMs: 0, lossRatio: 0, bandwidthMbit: 0 });
    const table = await runHalo(["profile", "-t", "1"]);
    assert.equal(table.code, 0, describeRun(["profile"], table));
    assert.match(table.stdout, /^device +\S/m);
    assert.match(table.stdout, /^  F32 \* +1 +[\d.e-]+ +[\d.e-]+$/m);
    assert.match(table.stdout, /^  Q4_0 +1 +[\d.e-]+ +[\d.e-]+$/m);
    const help = await runHalo(["profile", "--help"]);
    assert.match(help.stdout, /^usage: halo profile /);
    assertErrorLine(["profile", "--threads", "0"], await runHalo(["profile", "--threads", "0"]), { command: "profile", exitCode: 2, code: "HALO_ERR_USAGE", message: "--threads must be an integer from 1 to 256, got '0'", exact: true });
  });
});
