/**
 * `halo cluster --spec FILE` end to end: a valid spec runs a 3-process local cluster with
 * golden tokens and per-device profiles in --json; a worker's memoryMB is its process's memory
 * budget; every invalid field, count and flag combination is one usage error naming the file,
 * the device and the field.
 *
 * Needs the compiled CLI (`npx tsc -p .`) and the shared model files.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { assertErrorLine, parseJsonLine, runHalo, type ExpectedError } from "../helpers/cliRunner.js";
import { createTempDir, readGolden, type GoldenReference, type TempDir } from "../helpers/modelFiles.js";

let tmp: TempDir;
let golden: GoldenReference;
before(() => {
  tmp = createTempDir("halo-spec-test-");
  golden = readGolden();
});
after(() => tmp.cleanup());

describe("halo cluster --spec", () => {
  test("--spec: names, presets, a memory budget and per-worker links on 3 processes; strict f32 reproduces the golden tokens and --json lists every device's profile", async () => {
    const spec = path.join(tmp.path, "spec.json");
    writeFileSync(spec, JSON.stringify([
      { name: "desk", preset: "pi5" },
      { name: "kitchen", preset: "pi4", memoryMB: 2048, loss: 2 },
      { slowdown: 1.5, delay: 1, bandwidth: 200 },
    ]));
    const args = ["cluster", "--spec", spec, "--placement", "uniform", "--sync", "strict", "--wire", "f32", "--seed", "5", "--prompt", "Once upon a time", "--temperature", "0", "-n", "12", "--json"];
    type Profile = { name: string; attentionGroupMs: number; ffnGroupMs: number; compute: Array<{ tensorType: string; threads: number }>; memoryBudgetBytes: number; freeMemoryBytes: number; readBytesPerSecond: number; link: { rttMs: number; lossRatio: number; bandwidthMbit: number } };
    type Result = { tokens: number[]; cluster: { devices: number; presets: Array<{ preset: string | null; slowdown: number }>; profiles: Profile[] } };
    const run = await runHalo(args, { timeoutMs: 90_000 });
    const result = parseJsonLine<Result>(args, run);
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids.slice(0, 12));
    assert.equal(result.cluster.devices, 3);
    assert.deepEqual(result.cluster.presets.map((d) => [d.preset, Number(d.slowdown.toFixed(2))]), [["pi5", 1], ["pi4", 2.98], [null, 1.5]]);
    assert.match(run.stderr, /halo cluster: devices coordinator "desk" pi5 \(8\.6 GB\/s, compute ×1\.00\), worker 1 "kitchen" pi4 \(2\.9 GB\/s, compute ×2\.98\), worker 2 \(compute ×1\.50\)/);
    const profiles = result.cluster.profiles;
    assert.equal(profiles.length, 3, JSON.stringify(profiles));
    assert.deepEqual(profiles.map((p) => p.name.replace(/:\d+$/, ":PORT")), ["desk", "kitchen", "worker 127.0.0.1:PORT"]);
    // Workers run on --threads (1 here) and time only the model's type.
    assert.deepEqual(profiles.slice(1).map((p) => p.compute.map((c) => `${c.tensorType}/${c.threads}`)), [["F32/1"], ["F32/1"]]);
    // memoryMB, else the preset's memory, else what the device has free.
    assert.deepEqual(profiles.map((p) => p.memoryBudgetBytes), [8 * 2 ** 30, 2048 * 2 ** 20, profiles[2]!.freeMemoryBytes]);
    for (const p of profiles) {
      assert.ok(p.attentionGroupMs > 0 && p.ffnGroupMs > 0 && p.readBytesPerSecond > 0 && p.compute[0]!.tensorType === "F32" && p.compute[0]!.threads >= 1, JSON.stringify(p));
    }
    assert.deepEqual(profiles[0]!.link, { rttMs: 0, jitterMs: 0, lossRatio: 0, bandwidthMbit: 0 });
    // The pi4 worker's link is the preset's Wi-Fi (100 Mbit/s, 2 ms each way), worker 2's the spec's own.
    assert.ok(profiles[1]!.link.rttMs >= 4 && profiles[1]!.link.bandwidthMbit === 100, JSON.stringify(profiles[1]!.link));
    assert.ok(profiles[2]!.link.rttMs >= 2 && profiles[2]!.link.bandwidthMbit === 200, JSON.stringify(profiles[2]!.link));
  });

  test("a worker's memoryMB becomes its --memory-budget: it streams what does not fit and strict f32 stays golden; a preset's memory and the coordinator's memoryMB inform the scheduler only", async () => {
    const spec = path.join(tmp.path, "budget.json");
    // A uniform third of stories260K is about 0.29 MiB per worker: 0.1 MiB keeps part of it resident and streams the rest.
    writeFileSync(spec, JSON.stringify([{ name: "desk", memoryMB: 1 }, { name: "small", memoryMB: 0.1 }, { name: "board", preset: "pi4" }]));
    const args = ["cluster", "--spec", spec, "--placement", "uniform", "--sync", "strict", "--wire", "f32", "--prompt", "Once upon a time", "--temperature", "0", "-n", "12", "--json"];
    type Result = { tokens: number[]; cluster: { placement: { groupsPerDevice: number[] }; profiles: Array<{ name: string; memoryBudgetBytes: number }> } };
    // The budgeted worker cuts its rows into the shard cache once: keep that out of the home directory.
    const run = await runHalo(args, { timeoutMs: 90_000, env: { XDG_CACHE_HOME: path.join(tmp.path, "cache") } });
    const result = parseJsonLine<Result>(args, run);
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids.slice(0, 12));
    assert.ok(result.cluster.placement.groupsPerDevice.every((n) => n > 0), JSON.stringify(result.cluster.placement));
    // Only the worker with memoryMB runs under a budget, and it streams: the pi4 preset's 8 GiB limits no process.
    const budgetLines = run.stderr.split("\n").filter((line) => line.startsWith("halo worker: memory budget:"));
    assert.equal(budgetLines.length, 1, run.stderr);
    assert.match(budgetLines[0]!, /^halo worker: memory budget: [\d.]+ MiB of its [\d.]+ MiB resident; streams (?!0\.00 )[\d.]+ MiB per token from .*cache\/halo\/shards\/[0-9a-f]{64}\.gguf in \d+ reads/);
    // The scheduler sees every memoryMB (the coordinator's too), else the preset's memory.
    assert.deepEqual(result.cluster.profiles.map((p) => [p.name, p.memoryBudgetBytes]), [["desk", 2 ** 20], ["small", Math.floor(0.1 * 2 ** 20)], ["board", 8 * 2 ** 30]]);
  });

  test("a bad --spec is a usage error naming the file, the device and the field", async () => {
    const spec = path.join(tmp.path, "bad-spec.json");
    const cases: Array<[string, string]> = [
      ["{", "not JSON"],
      ['{"devices": []}', "must be a JSON array with one object per device, the coordinator first"],
      ["[]", "lists 0 devices; a local cluster has 1 to 64, the coordinator first"],
      ['[{}, 5]', "device 1 (worker 1): must be an object of name, preset, slowdown, slowdownAfter, memoryMB, loss, lossBurst, delay, jitter, bandwidth"],
      ['[{}, {"los": 5}]', "device 1 (worker 1): unknown field 'los'; the fields are name, preset, slowdown, slowdownAfter, memoryMB, loss, lossBurst, delay, jitter, bandwidth"],
      ['[{"name": ""}]', "device 0 (the coordinator): 'name' must be a string of 1 to 64 characters, got \"\""],
      [`[{"name": "${"n".repeat(65)}"}]`, `device 0 (the coordinator): 'name' must be a string of 1 to 64 characters, got "${"n".repeat(39)}…`],
      ['[{}, {"preset": "pi9"}]', "device 1 (worker 1): 'preset' must be one of pi4, pi5, jetson-nano, x86, got \"pi9\""],
      ['[{}, {"slowdown": 0.5}]', "device 1 (worker 1): 'slowdown' must be a number from 1 to 1000, got 0.5"],
      ['[{}, {}, {"memoryMB": 0}]', "device 2 (worker 2): 'memoryMB' must be a number of MiB from 0.01 to 1048576 (a worker's --memory-budget), got 0"],
      ['[{}, {"memoryMB": 2000000}]', "device 1 (worker 1): 'memoryMB' must be a number of MiB from 0.01 to 1048576 (a worker's --memory-budget), got 2000000"],
      ['[{"memoryMB": "2G"}]', "device 0 (the coordinator): 'memoryMB' must be a number of MiB from 0.01 to 1048576 (a worker's --memory-budget), got \"2G\""],
      ['[{}, {"loss": 101}]', "device 1 (worker 1): 'loss' must be a number from 0 to 100 (percent), got 101"],
      ['[{}, {"lossBurst": 0.5}]', "device 1 (worker 1): 'lossBurst' must be a number from 1 to 1000000 (datagrams), got 0.5"],
      ['[{}, {"delay": -1}]', "device 1 (worker 1): 'delay' must be a number from 0 to 60000 (ms), got -1"],
      ['[{}, {"jitter": 60001}]', "device 1 (worker 1): 'jitter' must be a number from 0 to 60000 (ms), got 60001"],
      ['[{}, {"bandwidth": null}]', "device 1 (worker 1): 'bandwidth' must be a number from 0 to 1000000 (Mbit/s, 0 = unlimited), got null"],
      ['[{"delay": 5}, {}]', "device 0 (the coordinator): 'delay' is a link setting, and the coordinator has no link of its own; set it on the workers"],
      ['[{"slowdownAfter": "3:2"}, {}]', "device 0 (the coordinator): 'slowdownAfter' is a worker setting (halo worker --slowdown-after); the coordinator's speed stays as given"],
      ['[{}, {"slowdownAfter": "soon"}]', "device 1 (worker 1): 'slowdownAfter' must be \"SECONDS:FACTOR\", e.g. \"30:4\" (a worker's --slowdown-after), got \"soon\""],
      ['[{}, {"slowdownAfter": "3:0.5"}]', "device 1 (worker 1): 'slowdownAfter' takes seconds from 0 to 86400 and a factor from 1 to 1000, got \"3:0.5\""],
    ];
    for (const [text, message] of cases) {
      writeFileSync(spec, text);
      const args = ["cluster", "--spec", spec];
      const expected: ExpectedError = text === "{"
        ? { command: "cluster", exitCode: 2, code: "HALO_ERR_USAGE", message: `--spec ${spec}: not JSON` }
        : { command: "cluster", exitCode: 2, code: "HALO_ERR_USAGE", message: `--spec ${spec}: ${message}`, exact: true };
      assertErrorLine(args, await runHalo(args), expected);
    }
  });

  test("--spec conflicts with --devices and --links, and must agree with --local", async () => {
    const spec = path.join(tmp.path, "two.json");
    writeFileSync(spec, "[{}, {}]");
    const cases = [
      [["cluster", "--spec", spec, "--devices", "pi4,pi5"], "--spec and --devices conflict: the spec gives each device's preset"],
      [["cluster", "--spec", spec, "--links", spec], "--spec and --links conflict: the spec gives each device's link"],
      [["cluster", "--spec", spec, "--local", "3"], `--spec ${spec} describes 2 devices; --local 3 needs one per device, the coordinator first`],
      [["cluster", "--spec", path.join(tmp.path, "missing.json")], `${path.join(tmp.path, "missing.json")}: cannot read: ENOENT`],
    ] as const;
    for (const [args, message] of cases) {
      const code = message.endsWith("ENOENT") ? "HALO_ERR_FILE" : "HALO_ERR_USAGE";
      assertErrorLine(args, await runHalo(args), { command: "cluster", exitCode: code === "HALO_ERR_FILE" ? 1 : 2, code, message, exact: true });
    }
    const help = await runHalo(["cluster", "--help"]);
    assert.match(help.stdout, /--spec FILE +every device at once, instead of --devices and --links/);
  });
});
