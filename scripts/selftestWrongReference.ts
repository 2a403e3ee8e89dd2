/**
 * `npm run selftest:wrong-reference`: shows that the kernel self-test fails when a kernel and
 * its reference disagree. The driver is built with -DHALO_SELFTEST_WRONG_REFERENCE (the generic
 * Q8_0 dot made 1% too large) and run on the AArch64 targets under qemu (and natively); every
 * run must fail, naming dot_q8_0. Kept out of `npm test`: it proves the test can fail.
 */
import { CROSS_TOOLS, SELFTEST_TARGETS, buildSelftest, hasTool, runSelftest } from "./kernelSelftest.js";

let allFailedAsExpected = true;
const crossAvailable = Object.values(CROSS_TOOLS).every(hasTool);
for (const target of SELFTEST_TARGETS) {
  if (target.arch === "aarch64" && !crossAvailable) {
    console.log(`${target.name}: skipped (${Object.values(CROSS_TOOLS).join(", ")} not installed)`);
    continue;
  }
  const binary = buildSelftest(target, { wrongReference: true });
  for (const cpu of target.cpus.length === 0 ? [undefined] : target.cpus.map((c) => c.cpu)) {
    const run = runSelftest(target, binary, cpu);
    const failures = run.output.split("\n").filter((line) => line.startsWith("FAIL"));
    const caught = run.exitCode !== 0 && run.failed > 0 && failures.every((line) => line.includes("dot_q8_0"));
    allFailedAsExpected &&= caught;
    console.log(`${target.name} on ${run.cpu}: sets ${run.sets.join(" ")}; ${run.passed} passed, ${run.failed} failed, exit ${run.exitCode} -> ${caught ? "caught" : "NOT CAUGHT"}`);
    for (const line of failures.slice(0, 3)) console.log(`  ${line}`);
  }
}
console.log(allFailedAsExpected ? "every build with the wrong reference failed, as it must" : "a build with the wrong reference passed: the self-test cannot catch a bad kernel");
process.exitCode = allFailedAsExpected ? 0 : 1;
