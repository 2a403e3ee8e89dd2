/**
 * One kernel self-test driver (native/src/selftest.c), three targets: it is compiled for x86-64
 * (the AVX2 set and the portable scalar build) and run natively, and cross-compiled for AArch64
 * (NEON, NEON with the dot-product extension, and the scalar build) as a static binary run under
 * qemu-user with the cores of a Raspberry Pi 4 (Cortex-A72: no dot product) and a Pi 5
 * (Cortex-A76). Every kernel set the emulated CPU offers is checked against the generic C set
 * on fixed seeded inputs, with the tolerances the x86 tests use.
 *
 * The flags are the addon's (native/binding.gyp): the baseline code for the target's plain ISA,
 * the dot-product file alone with -march=armv8.2-a+dotprod, so nothing else picks up ARMv8.2
 * instructions and older cores still run the baseline.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
/** native/ of the project (this file runs from dist/scripts/). */
export const NATIVE_DIR = join(here, "..", "..", "native");

const COMMON_FLAGS = ["-O2", "-std=gnu11", "-ffp-contract=off", "-pthread", "-Wall", "-Wextra"];
const SHARED_SOURCES = ["selftest.c", "halo_api.c", "attention.c", "threadpool.c", "cpu_features.c", "kernels_generic.c"];

export interface SelftestTarget {
  readonly name: string;
  readonly arch: "x86_64" | "aarch64";
  /** Built with -DHALO_PORTABLE_SCALAR: the generic set only. */
  readonly scalar: boolean;
  /** qemu -cpu models to run under (AArch64), each with the kernel sets it must offer. Empty: run natively. */
  readonly cpus: ReadonlyArray<{ cpu: string; expectedSets: readonly string[] }>;
}

export const SELFTEST_TARGETS: readonly SelftestTarget[] = [
  { name: "x86-64 (AVX2 when the CPU has it)", arch: "x86_64", scalar: false, cpus: [] },
  { name: "x86-64 portable scalar", arch: "x86_64", scalar: true, cpus: [] },
  {
    name: "aarch64 (NEON, NEON + dot product)", arch: "aarch64", scalar: false, cpus: [
      { cpu: "cortex-a72", expectedSets: ["neon", "generic"] }, // Raspberry Pi 4
      { cpu: "cortex-a76", expectedSets: ["neon-dotprod", "neon", "generic"] }, // Raspberry Pi 5
    ],
  },
  { name: "aarch64 portable scalar", arch: "aarch64", scalar: true, cpus: [{ cpu: "cortex-a72", expectedSets: ["generic"] }] },
];

export const CROSS_TOOLS = { cc: "aarch64-linux-gnu-gcc", qemu: "qemu-aarch64-static" } as const;

/** Whether `tool` runs here. */
export function hasTool(tool: string): boolean {
  return spawnSync(tool, ["--version"], { stdio: "ignore" }).status === 0;
}

export interface SelftestRun {
  readonly cpu: string;
  /** The kernel sets the driver found, as it printed them. */
  readonly sets: string[];
  readonly passed: number;
  readonly failed: number;
  readonly exitCode: number | null;
  readonly output: string;
}

/** The kernel sets x86 native runs must find on this machine. */
export function expectedNativeSets(scalar: boolean): string[] {
  if (scalar) return ["generic"];
  const flags = readFileSync("/proc/cpuinfo", "utf8").match(/^flags\s*:(.*)$/m)?.[1]?.split(/\s+/) ?? [];
  return ["avx2", "fma", "f16c"].every((f) => flags.includes(f)) ? ["avx2", "generic"] : ["generic"];
}

/** Compiles the driver for `target` into a fresh temporary directory and returns the binary's path. */
export function buildSelftest(target: SelftestTarget, options: { wrongReference?: boolean } = {}): string {
  const out = mkdtempSync(join(tmpdir(), `halo-selftest-${target.arch}-`));
  const src = (file: string): string => join(NATIVE_DIR, "src", file);
  const defines = [...(target.scalar ? ["-DHALO_PORTABLE_SCALAR"] : []), ...(options.wrongReference === true ? ["-DHALO_SELFTEST_WRONG_REFERENCE"] : [])];
  const sources = SHARED_SOURCES.map(src);
  const binary = join(out, "halo-selftest");
  if (target.arch === "x86_64") {
    if (!target.scalar) {
      const avx2 = join(out, "kernels_avx2.o");
      execFileSync("gcc", [...COMMON_FLAGS, "-mavx2", "-mfma", "-mf16c", "-c", src("x86/kernels_avx2.c"), "-o", avx2]);
      sources.push(avx2);
    }
    execFileSync("gcc", [...COMMON_FLAGS, ...defines, "-o", binary, ...sources, "-lm"]);
    return binary;
  }
  if (!target.scalar) {
    const dotprod = join(out, "kernels_neon_dotprod.o");
    execFileSync(CROSS_TOOLS.cc, [...COMMON_FLAGS, "-march=armv8.2-a+dotprod", "-c", src("arm/kernels_neon_dotprod.c"), "-o", dotprod]);
    sources.push(src("arm/kernels_neon.c"), dotprod);
  }
  execFileSync(CROSS_TOOLS.cc, [...COMMON_FLAGS, ...defines, "-march=armv8-a", "-static", "-o", binary, ...sources, "-lm"]);
  return binary;
}

/** Runs a built driver (under qemu with `cpu` for AArch64) and parses its report. */
export function runSelftest(target: SelftestTarget, binary: string, cpu: string | undefined): SelftestRun {
  const [command, args] = target.arch === "aarch64" ? [CROSS_TOOLS.qemu, ["-cpu", cpu ?? "max", binary]] : [binary, []];
  const result = spawnSync(command, args, { encoding: "utf8", timeout: 300_000 });
  const output = `${result.stdout ?? ""}${result.stderr ?? ""}`;
  const sets = output.match(/kernel sets:(.*)$/m)?.[1]?.trim().split(/\s+/) ?? [];
  const summary = output.match(/^(\d+) passed, (\d+) failed$/m);
  return { cpu: cpu ?? "native", sets, passed: Number(summary?.[1] ?? 0), failed: Number(summary?.[2] ?? -1), exitCode: result.status, output };
}
