/** What every benchmark records beside its numbers: commit, CPU, threads, Node version. */
import { execSync } from "node:child_process";
import { availableParallelism, cpus } from "node:os";

export function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

export function stddev(values: readonly number[]): number {
  if (values.length < 2) return 0;
  const m = mean(values);
  return Math.sqrt(values.reduce((a, b) => a + (b - m) ** 2, 0) / (values.length - 1));
}

export function describeRun(): { line: string; record: Record<string, string | number> } {
  let commit = "unknown";
  try {
    commit = execSync("git rev-parse --short HEAD", { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    // Not a git checkout (an unpacked release): the record says "unknown".
  }
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const record = { commit, cpu, cores: availableParallelism(), node: process.version, date: new Date().toISOString() };
  return { line: `commit ${commit} | ${cpu} | ${record.cores} cores | node ${process.version}`, record };
}
