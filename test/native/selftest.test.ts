/**
 * The kernel self-test driver on every target (scripts/kernelSelftest.ts): x86-64 natively,
 * AArch64 under qemu-user with a Raspberry Pi 4 and a Pi 5 core. CI installs the cross compiler
 * and qemu and sets HALO_REQUIRE_CROSS=1, so a missing tool fails there instead of skipping.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { CROSS_TOOLS, SELFTEST_TARGETS, buildSelftest, expectedNativeSets, hasTool, runSelftest } from "../../scripts/kernelSelftest.js";

const crossMissing = Object.values(CROSS_TOOLS).filter((tool) => !hasTool(tool));
const requireCross = process.env["HALO_REQUIRE_CROSS"] === "1";

for (const target of SELFTEST_TARGETS) {
  const skip = target.arch === "aarch64" && crossMissing.length > 0 && !requireCross ? `${crossMissing.join(", ")} not installed (CI installs them)` : false;
  test(`kernel self-test, ${target.name}: every kernel set matches the generic reference`, { skip, timeout: 600_000 }, () => {
    if (target.arch === "aarch64") assert.deepEqual(crossMissing, [], "the AArch64 check needs a cross compiler and qemu-user");
    const binary = buildSelftest(target);
    const runs = target.cpus.length === 0 ? [{ cpu: undefined, expectedSets: expectedNativeSets(target.scalar) }] : target.cpus;
    for (const { cpu, expectedSets } of runs) {
      const run = runSelftest(target, binary, cpu);
      const context = `${target.name} on ${run.cpu}:\n${run.output.slice(-3000)}`;
      assert.deepEqual(run.sets, expectedSets, context);
      assert.equal(run.failed, 0, context);
      // Each set runs the same list of checks; fewer passes would mean a check silently skipped.
      assert.ok(run.passed >= 100 * expectedSets.length, context);
      assert.equal(run.exitCode, 0, context);
    }
  });
}
