/** `halo doctor`: what this machine runs: Node, CPU, the native kernel build and its SIMD paths. */
import { availableParallelism, cpus, totalmem } from "node:os";
import { defaultThreadCount, nativeAddonStatus, parseKernelChoice } from "../kernels/index.js";
import { booleanFlag, parseFlags } from "./flags.js";
import type { CommandIo } from "./io.js";

export const DOCTOR_HELP = `usage: halo doctor [--json]

Prints the runtime, the CPU and the native kernels: whether the addon loaded (and why not),
the ISA it was built for, the SIMD kernel sets this CPU runs (best first) and the default
thread count. HALO_KERNELS=ts|native|auto selects the kernels (default auto).`;

export async function doctorCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { json: { type: "boolean" } });
  if (booleanFlag(flags, "help")) {
    io.stdout(DOCTOR_HELP + "\n");
    return 0;
  }
  const status = nativeAddonStatus();
  const report = {
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: cpus()[0]?.model ?? "unknown",
    cores: availableParallelism(),
    memoryBytes: totalmem(),
    kernelChoice: parseKernelChoice(process.env["HALO_KERNELS"]),
    defaultThreads: defaultThreadCount(),
    native: status,
  };
  if (booleanFlag(flags, "json")) {
    io.stdout(JSON.stringify(report) + "\n");
    return 0;
  }
  const native = status.loaded ? `loaded, built for ${status.isa}, SIMD ${status.simd?.join(" > ")}` : `not loaded: ${status.reason ?? "unknown"} (the TypeScript kernels are used)`;
  io.stdout(
    [
      `node       ${report.node} (${report.platform})`,
      `cpu        ${report.cpu}, ${report.cores} cores, ${(report.memoryBytes / 2 ** 30).toFixed(1)} GiB`,
      `kernels    ${report.kernelChoice} (HALO_KERNELS), ${report.defaultThreads} threads by default`,
      `native     ${native}`,
    ].join("\n") + "\n",
  );
  return 0;
}
