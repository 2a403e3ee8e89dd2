/**
 * `--placement halo` end to end: after every worker joined and sent its profile, the scheduler
 * moves groups off a device emulated four times slower, the workers load their new groups before
 * the first token, and an exact (f32, loss-free) run still gives the golden tokens. `--explain`
 * prints the decisions. halo is the default and a line says where the groups went; `--shares`
 * without `--placement` is a fixed split, and with a scheduler placement a usage error.
 *
 * Needs the compiled CLI (`npx tsc -p .`) and the shared model files.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { assertErrorLine, parseJsonLine, runHalo } from "../helpers/cliRunner.js";
import { createTempDir, readGolden, type GoldenReference, type TempDir } from "../helpers/modelFiles.js";

let tmp: TempDir;
let golden: GoldenReference;
before(() => {
  tmp = createTempDir("halo-placement-test-");
  golden = readGolden();
});
after(() => tmp.cleanup());

describe("halo cluster --placement", () => {
  test("halo placement: the slow worker gets fewer groups than the fast one, the move is timed, tokens stay golden, --explain shows the plan", async () => {
    const spec = path.join(tmp.path, "spec.json");
    writeFileSync(spec, JSON.stringify([{ name: "here" }, { name: "fast" }, { name: "slow", slowdown: 4 }]));
    const args = ["cluster", "--spec", spec, "--placement", "halo", "--explain", "--no-replan", "--wire", "f32", "--deadline-min", "1000", "--deadline-max", "2000", "--prompt", "Once upon a time", "--temperature", "0", "-n", "12", "--json"];
    type Result = { tokens: number[]; cluster: { placement: { choice: string; groupsPerDevice: number[]; replanned?: { groupsMoved: number; migrationMs: number }; liveReplans: unknown[] } } };
    const run = await runHalo(args, { timeoutMs: 90_000 });
    const result = parseJsonLine<Result>(args, run);
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids.slice(0, 12));
    const { placement } = result.cluster;
    assert.equal(placement.choice, "halo");
    assert.deepEqual(placement.liveReplans, []);
    // stories260K: 5 layers × (4 attention + 6 FFN groups).
    assert.equal(placement.groupsPerDevice.reduce((a, b) => a + b, 0), 50);
    assert.ok(placement.groupsPerDevice[2]! < placement.groupsPerDevice[1]!, `slow worker ${placement.groupsPerDevice[2]} groups, fast ${placement.groupsPerDevice[1]}`);
    assert.ok(placement.replanned !== undefined && placement.replanned.groupsMoved > 0 && placement.replanned.migrationMs >= 0, JSON.stringify(placement.replanned));
    assert.match(run.stderr, new RegExp(`^halo: placement halo: \\d+ groups moved after profiling, the workers loaded them in \\d+ ms; ${placement.groupsPerDevice[0]} groups on the coordinator, ${placement.groupsPerDevice[1]! + placement.groupsPerDevice[2]!} on workers \\(${placement.groupsPerDevice.slice(1).join(", ")}\\)$`, "m"));
    assert.match(run.stderr, /Local search \(per phase: rearrange importance onto the least-missing devices, then the best single move; repeated\) from each start:/);
  });

  test("halo is the default and says where the groups went; --placement uniform and --shares without --placement keep a fixed split", async () => {
    type Result = { cluster: { placement: { choice: string; groupsPerDevice: number[]; replanned?: unknown; liveReplans: unknown[] } } };
    const byDefault = ["cluster", "--local", "2", "--loss", "5", "--prompt", "Once", "-n", "2", "--json"];
    const defaultRun = await runHalo(byDefault, { timeoutMs: 60_000 });
    const chosen = parseJsonLine<Result>(byDefault, defaultRun).cluster.placement;
    assert.equal(chosen.choice, "halo");
    assert.equal(chosen.groupsPerDevice.reduce((a, b) => a + b, 0), 50);
    // Where the scheduler puts a tiny model depends on the measured profiles; the line says what it chose.
    const [here, worker] = chosen.groupsPerDevice;
    const hint = worker === 0 ? "; --placement uniform spreads them over the workers" : "";
    assert.match(defaultRun.stderr, new RegExp(`^halo: placement halo: (\\d+ groups moved after profiling, the workers loaded them in \\d+ ms; )?${here} groups on the coordinator, ${worker} on workers${hint}$`, "m"));
    const uniform = ["cluster", "--local", "2", "--placement", "uniform", "--prompt", "Once", "-n", "2", "--json"];
    const uniformRun = await runHalo(uniform, { timeoutMs: 60_000 });
    const equal = parseJsonLine<Result>(uniform, uniformRun).cluster.placement;
    assert.deepEqual([equal.choice, equal.groupsPerDevice, equal.replanned, equal.liveReplans], ["uniform", [25, 25], undefined, []]);
    assert.match(uniformRun.stderr, /^halo: placement uniform: 25 groups on the coordinator, 25 on workers$/m);
    // --shares alone is a fixed split: no scheduler, no move at join.
    const shares = ["cluster", "--local", "2", "--shares", "3,1", "--prompt", "Once", "-n", "2", "--json"];
    const sharesRun = await runHalo(shares, { timeoutMs: 60_000 });
    const fixed = parseJsonLine<Result>(shares, sharesRun).cluster.placement;
    assert.deepEqual([fixed.choice, fixed.groupsPerDevice, fixed.replanned, fixed.liveReplans], ["uniform", [40, 10], undefined, []]);
    assert.match(sharesRun.stderr, /^halo: placement uniform, --shares 3,1: 40 groups on the coordinator, 10 on workers$/m);
  });

  test("--shares with a scheduler placement and an unknown choice are usage errors", async () => {
    const withShares = ["cluster", "--local", "2", "--placement", "halo", "--shares", "1,2", "-n", "1"];
    assertErrorLine(withShares, await runHalo(withShares), { command: "cluster", exitCode: 2, code: "HALO_ERR_USAGE", message: "--shares sets the split itself; it cannot be combined with --placement halo" });
    const proportional = ["cluster", "--local", "2", "--shares", "1,2", "--placement", "proportional", "-n", "1"];
    assertErrorLine(proportional, await runHalo(proportional), { command: "cluster", exitCode: 2, code: "HALO_ERR_USAGE", message: "--shares sets the split itself; it cannot be combined with --placement proportional" });
    const unknown = ["cluster", "--local", "2", "--placement", "fastest", "-n", "1"];
    assertErrorLine(unknown, await runHalo(unknown), { command: "cluster", exitCode: 2, code: "HALO_ERR_USAGE", message: "--placement must be one of uniform, proportional, halo, got 'fastest'" });
  });
});
