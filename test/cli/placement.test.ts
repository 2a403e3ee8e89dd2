/**
 * `--placement halo` end to end: after every worker joined and sent its profile, the scheduler
 * moves groups off a device emulated four times slower, the workers load their new groups before
 * the first token, and an exact (f32, loss-free) run still gives the golden tokens. `--explain`
 * prints the decisions; `--shares` with a scheduler placement is a usage error.
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
    const args = ["cluster", "--spec", spec, "--placement", "halo", "--explain", "--wire", "f32", "--deadline-min", "1000", "--deadline-max", "2000", "--prompt", "Once upon a time", "--temperature", "0", "-n", "12", "--json"];
    type Result = { tokens: number[]; cluster: { placement: { choice: string; groupsPerDevice: number[]; replanned?: { groupsMoved: number; migrationMs: number } } } };
    const run = await runHalo(args, { timeoutMs: 90_000 });
    const result = parseJsonLine<Result>(args, run);
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids.slice(0, 12));
    const { placement } = result.cluster;
    assert.equal(placement.choice, "halo");
    // stories260K: 5 layers × (4 attention + 6 FFN groups).
    assert.equal(placement.groupsPerDevice.reduce((a, b) => a + b, 0), 50);
    assert.ok(placement.groupsPerDevice[2]! < placement.groupsPerDevice[1]!, `slow worker ${placement.groupsPerDevice[2]} groups, fast ${placement.groupsPerDevice[1]}`);
    assert.ok(placement.replanned !== undefined && placement.replanned.groupsMoved > 0 && placement.replanned.migrationMs >= 0, JSON.stringify(placement.replanned));
    assert.match(run.stderr, /halo: placement halo: \d+ groups moved after profiling, the workers loaded them in \d+ ms/);
    assert.match(run.stderr, /Local search \(per phase: rearrange importance onto the least-missing devices, then the best single move; repeated\) from each start:/);
  });

  test("the default stays the equal split; --shares with a scheduler placement and an unknown choice are usage errors", async () => {
    const args = ["cluster", "--local", "2", "--prompt", "Once", "-n", "2", "--json"];
    const result = parseJsonLine<{ cluster: { placement: { choice: string; groupsPerDevice: number[]; replanned?: unknown } } }>(args, await runHalo(args, { timeoutMs: 60_000 }));
    assert.deepEqual([result.cluster.placement.choice, result.cluster.placement.groupsPerDevice, result.cluster.placement.replanned], ["uniform", [25, 25], undefined]);
    const withShares = ["cluster", "--local", "2", "--placement", "halo", "--shares", "1,2", "-n", "1"];
    assertErrorLine(withShares, await runHalo(withShares), { command: "cluster", exitCode: 2, code: "HALO_ERR_USAGE", message: "--shares sets the split itself; it cannot be combined with --placement halo" });
    const unknown = ["cluster", "--local", "2", "--placement", "fastest", "-n", "1"];
    assertErrorLine(unknown, await runHalo(unknown), { command: "cluster", exitCode: 2, code: "HALO_ERR_USAGE", message: "--placement must be one of uniform, proportional, halo, got 'fastest'" });
  });
});
