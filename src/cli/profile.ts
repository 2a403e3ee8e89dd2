/** `halo profile`: what this device offers the scheduler, measured here and now. */
import { hostname } from "node:os";
import { kernelThreads, measureDeviceProfile, tensorTypesOfFile } from "../cluster/index.js";
import { PERFECT_LINK, type DeviceProfile } from "../scheduler/index.js";
import { builtinModelPath } from "./builtinModel.js";
import { commandKernels, openCommandModelFile } from "./engineSetup.js";
import { booleanFlag, integerFlag, parseFlags, stringFlag } from "./flags.js";
import type { CommandIo } from "./io.js";

export const PROFILE_HELP = `usage: halo profile [--model F] [--threads N] [--json]

Measures this device the way a worker does when it joins a cluster: the time of one decode
token through one attention group (a KV-head bundle) and one FFN group (32 neurons) of the
model's shape, in the model's own tensor types and in F32, Q8_0 and Q4_0 where the shape allows
them, on one thread and on --threads (each the median of 5 timed runs); free memory (the OS's,
or a cgroup limit when lower); and how fast the model file reads (its first 64 MiB).
  -m, --model F          GGUF model file (default: the built-in stories260K)
  -t, --threads N        compute threads (default: all cores)
      --json             print the scheduler's DeviceProfile record as one JSON object`;

export async function profileCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { model: { type: "string", short: "m" }, threads: { type: "string", short: "t" }, json: { type: "boolean" } });
  if (booleanFlag(flags, "help")) {
    io.stdout(PROFILE_HELP + "\n");
    return 0;
  }
  const modelPath = stringFlag(flags, "model") ?? builtinModelPath();
  const { kernels, map } = commandKernels(integerFlag(flags, "threads", 1, 256));
  const singleThread = kernelThreads(kernels) > 1 ? [commandKernels(1).kernels] : [];
  const { file, config } = await openCommandModelFile(modelPath, map);
  let profile: DeviceProfile;
  try {
    const measured = await measureDeviceProfile({ config, tensorTypes: tensorTypesOfFile(file), kernels: [kernels, ...singleThread], modelPath });
    profile = { name: hostname(), ...measured, link: PERFECT_LINK };
  } finally {
    file.close();
  }
  if (booleanFlag(flags, "json")) {
    io.stdout(JSON.stringify(profile) + "\n");
    return 0;
  }
  const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  const ms = (value: number): string => value.toPrecision(3).padStart(12);
  const headline = profile.compute[0]!;
  io.stdout(
    [
      `device     ${profile.name}, kernels ${kernels.name}`,
      `model      ${modelPath}: dim ${config.dim}, ${config.nHeads} heads / ${config.nKvHeads} KV heads, FFN ${config.hiddenDim}`,
      `memory     ${gib(profile.freeMemoryBytes)} free, budget ${gib(profile.memoryBudgetBytes)}`,
      `read       ${(profile.readBytesPerSecond / 1e6).toFixed(1)} MB/s, the model file`,
      `compute    ms per group for one decode token (* the scheduler's figure: ${headline.tensorType} on ${headline.threads} threads)`,
      `  type        threads   attention         ffn`,
      ...profile.compute.map((s, i) => `  ${(s.tensorType + (i === 0 ? " *" : "")).padEnd(12)}${String(s.threads).padStart(7)}${ms(s.attentionGroupMs)}${ms(s.ffnGroupMs)}`),
    ].join("\n") + "\n",
  );
  return 0;
}
