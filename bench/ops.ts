/**
 * Kernel micro-benchmark: the op case table (test/ops/cases.ts) in perf mode. Prints weight
 * bandwidth (GB/s of weight bytes read per call) for matvec on 2048x2048 and 5632x2048 weights
 * per type, for the TS reference and the native kernels at 1 and 2 threads, then prefill:
 * one matmul of N tokens against N matvecs, then attention: one token of a TinyLlama-shape KV
 * group over a growing cache. Timings are mean ± stddev over repeats.
 *
 *   node dist/bench/ops.js [--json out.json] [--repeats 7] [--min-ms 400] [--no-reference]
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { createReferenceKernels } from "../src/kernels/reference/kernels.js";
import type { MatrixKernels } from "../src/kernels/matrix.js";
import { createNativeKernels, nativeAddonStatus } from "../src/kernels/native.js";
import { attendPerfCases, describeCase, makeOpData, perfCases, prefillPerfCases, runOp, weightBytes, type OpCase, type OpData } from "../test/ops/cases.js";

const PREFILL_TOKENS = 16;
const THREADS = [1, 2] as const;

interface Timing {
  /** Mean milliseconds per call. */
  readonly meanMs: number;
  readonly stddevMs: number;
}

interface BenchRecord {
  readonly case: string;
  readonly kernels: string;
  readonly nThreads: number;
  readonly weightBytes: number;
  readonly meanMs: number;
  readonly stddevMs: number;
  readonly gbPerS: number;
}

/** Times fn: calibrates a batch to minMs / repeats, then averages per-call time over `repeats` batches. */
function measure(fn: () => void, minMs: number, repeats: number): Timing {
  fn();
  fn();
  let batch = 1;
  for (;;) {
    const start = performance.now();
    for (let i = 0; i < batch; i++) fn();
    const elapsed = performance.now() - start;
    if (elapsed >= minMs / repeats || batch >= 1 << 20) break;
    batch *= elapsed > 0 ? Math.min(16, Math.max(2, Math.ceil(minMs / repeats / elapsed))) : 16;
  }
  const samples: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const start = performance.now();
    for (let i = 0; i < batch; i++) fn();
    samples.push((performance.now() - start) / batch);
  }
  const meanMs = samples.reduce((a, b) => a + b, 0) / samples.length;
  const variance = samples.reduce((a, b) => a + (b - meanMs) ** 2, 0) / Math.max(1, samples.length - 1);
  return { meanMs, stddevMs: Math.sqrt(variance) };
}

function gbPerS(bytes: number, t: Timing): number {
  return bytes / (t.meanMs * 1e6);
}

function formatRate(bytes: number, t: Timing): string {
  const rate = gbPerS(bytes, t);
  const spread = (rate * t.stddevMs) / t.meanMs;
  return `${rate.toFixed(2)} ± ${spread.toFixed(2)}`;
}

function gitCommit(): string {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  } catch {
    return "unknown"; // Safe: the commit only labels the results.
  }
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n");
}

function main(): void {
  const { values } = parseArgs({
    options: {
      json: { type: "string" },
      repeats: { type: "string", default: "7" },
      "min-ms": { type: "string", default: "400" },
      "no-reference": { type: "boolean", default: false },
    },
  });
  const repeats = Number(values.repeats);
  const minMs = Number(values["min-ms"]);
  const status = nativeAddonStatus();
  if (!status.loaded) throw new Error(`native addon not loaded: ${status.reason ?? ""}`);
  const reference = createReferenceKernels();
  const natives = THREADS.map((nThreads) => createNativeKernels({ nThreads }));
  const records: BenchRecord[] = [];
  const time = (kernels: MatrixKernels, nThreads: number, c: OpCase, d: OpData, bytes: number, label = describeCase(c)): Timing => {
    const y = new Float32Array(d.yLength);
    const t = measure(() => runOp(kernels, c, d, y), minMs, repeats);
    records.push({ case: label, kernels: kernels.name, nThreads, weightBytes: bytes, ...t, gbPerS: gbPerS(bytes, t) });
    return t;
  };

  console.log(`halo bench/ops  commit ${gitCommit()}  cpu ${cpus()[0]?.model ?? "unknown"} (${cpus().length} cores)  isa ${status.isa ?? "?"}  kernel sets ${(status.simd ?? []).join(", ")}`);
  console.log(`matvec weight bandwidth, GB/s (mean ± stddev over ${repeats} repeats)\n`);
  const rows: string[][] = [];
  for (const c of perfCases()) {
    const d = makeOpData(c, 1);
    const bytes = weightBytes(c);
    const ref = values["no-reference"] ? undefined : time(reference, 1, c, d, bytes);
    const [one, two] = natives.map((k) => time(k, k.nThreads, c, d, bytes));
    rows.push([
      c.type,
      `${c.shape.nRows}x${c.shape.nCols}`,
      (bytes / 2 ** 20).toFixed(1),
      ref === undefined ? "-" : formatRate(bytes, ref),
      formatRate(bytes, one!),
      formatRate(bytes, two!),
      ref === undefined ? "-" : `${(ref.meanMs / two!.meanMs).toFixed(0)}x`,
    ]);
  }
  console.log(table(["type", "shape", "weights MiB", "reference 1T", `${natives[0]!.name} 1T`, `${natives[1]!.name} 2T`, "2T vs ref"], rows));

  console.log(`\nprefill: one matmul of ${PREFILL_TOKENS} tokens vs ${PREFILL_TOKENS} matvecs, 2 threads, ms per ${PREFILL_TOKENS} tokens\n`);
  const prefillRows: string[][] = [];
  const k2 = natives[1]!;
  for (const c of prefillPerfCases(PREFILL_TOKENS)) {
    const d = makeOpData(c, 2);
    const s = c.shape;
    const bytes = weightBytes(c);
    const batched = time(k2, k2.nThreads, c, d, bytes);
    const y = new Float32Array(d.yLength);
    const looped = measure(() => {
      for (let t = 0; t < s.nTokens; t++) {
        k2.matvec(d.matrix, d.x, d.xOffset + t * d.xStride, y, d.yOffset + t * d.yStride, s.rowStart, s.rowEnd, s.colStart, s.colEnd);
      }
    }, minMs, repeats);
    records.push({ case: `${s.nTokens} x matvec ${c.type} ${s.nRows}x${s.nCols}`, kernels: k2.name, nThreads: 2, weightBytes: bytes * s.nTokens, ...looped, gbPerS: gbPerS(bytes * s.nTokens, looped) });
    prefillRows.push([
      c.type,
      `${s.nRows}x${s.nCols}`,
      `${batched.meanMs.toFixed(2)} ± ${batched.stddevMs.toFixed(2)}`,
      `${looped.meanMs.toFixed(2)} ± ${looped.stddevMs.toFixed(2)}`,
      `${(looped.meanMs / batched.meanMs).toFixed(2)}x`,
    ]);
  }
  console.log(table(["type", "shape", `matmul x${PREFILL_TOKENS}`, `${PREFILL_TOKENS} x matvec`, "speedup"], prefillRows));

  console.log("\nattention: one token, 8 query heads of 64 sharing a KV head, µs per call (mean ± stddev)\n");
  const attendRows: string[][] = [];
  const us = (t: Timing): string => `${(t.meanMs * 1000).toFixed(1)} ± ${(t.stddevMs * 1000).toFixed(1)}`;
  for (const c of attendPerfCases()) {
    const d = makeOpData(c, 3);
    const bytes = weightBytes(c);
    const ref = values["no-reference"] ? undefined : time(reference, 1, c, d, bytes);
    const [one, two] = natives.map((k) => time(k, k.nThreads, c, d, bytes));
    attendRows.push([
      String(c.shape.nPositions),
      ref === undefined ? "-" : us(ref),
      us(one!),
      us(two!),
      `${(one!.meanMs / two!.meanMs).toFixed(2)}x`,
      ref === undefined ? "-" : `${(ref.meanMs / one!.meanMs).toFixed(0)}x`,
    ]);
  }
  console.log(table(["positions", "reference 1T", `${natives[0]!.name} 1T`, `${natives[1]!.name} 2T`, "2T vs 1T", "1T vs ref"], attendRows));

  for (const k of natives) k.close();
  if (values.json !== undefined) {
    const result = { commit: gitCommit(), cpu: cpus()[0]?.model ?? "unknown", nCores: cpus().length, isa: status.isa, simd: status.simd, repeats, records };
    writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
    console.log(`\nwrote ${values.json}`);
  }
}

main();
