/**
 * `npm run bench:engine`: halo against llama.cpp on synthetic TinyLlama-1.1B-shape Q4_0 and
 * Q8_0 files at 1 and 2 threads, measured in the same run: decode and prefill tok/s with their
 * ratio, weight bandwidth against a copy bandwidth measured here, and peak RSS against the
 * file size. Writes bench/results/<date>/engine.json. Env: HALO_BENCH_LAYERS (default 22),
 * HALO_BENCH_PROMPT (128), HALO_BENCH_DECODE (32), HALO_BENCH_REPEATS (2).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeSyntheticModel, type SynthTypeName } from "../../src/model/index.js";
import { describeRun, mean, stddev } from "../report.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const root = join(here, "..", "..", "..");
const cacheDir = join(root, "bench", ".cache");
const env = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);
const nLayers = env("HALO_BENCH_LAYERS", 22);
const nPrompt = env("HALO_BENCH_PROMPT", 128);
const nDecode = env("HALO_BENCH_DECODE", 32);
const repeats = env("HALO_BENCH_REPEATS", 2);

function ensureModel(type: SynthTypeName): string {
  mkdirSync(cacheDir, { recursive: true });
  const path = join(cacheDir, `tinyllama-1.1b-${nLayers}l-${type}.gguf`);
  if (!existsSync(path)) {
    process.stderr.write(`writing ${path}…\n`);
    writeSyntheticModel(path, { shape: "tinyllama-1.1b", type, seed: 1, nLayers });
  }
  return path;
}

/** Copy bandwidth of a 256 MiB buffer (bytes read + written per second), best of 5. */
function copyBandwidth(): number {
  const size = 256 * 2 ** 20;
  const a = Buffer.alloc(size, 1);
  const b = Buffer.alloc(size);
  let best = 0;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    a.copy(b);
    best = Math.max(best, (2 * size) / ((performance.now() - t0) / 1000));
  }
  return best;
}

interface Measurement {
  engine: string;
  kernels: string;
  prefillTokS: number;
  decodeTokS: number;
  maxRssBytes: number;
  tokens: number[];
}

function measure(runner: string, model: string, threads: number): Measurement {
  const out = execFileSync(process.execPath, [join(here, runner), model, String(threads), String(nPrompt), String(nDecode), "32000"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], timeout: 600_000 });
  return JSON.parse(out.trim().split("\n").at(-1)!) as Measurement;
}

const bandwidth = copyBandwidth();
const rows: Array<Record<string, string | number>> = [];
const results: unknown[] = [];
for (const type of ["q4_0", "q8_0"] as const) {
  const model = ensureModel(type);
  const fileBytes = statSync(model).size;
  for (const threads of [1, 2]) {
    const runs: Record<string, Measurement[]> = { halo: [], llama: [] };
    for (let r = 0; r < repeats; r++) {
      runs.halo!.push(measure("haloRunner.js", model, threads));
      runs.llama!.push(measure("llamaCppRunner.js", model, threads));
    }
    const stat = (list: Measurement[], key: "decodeTokS" | "prefillTokS"): { mean: number; sd: number } => ({ mean: mean(list.map((m) => m[key])), sd: stddev(list.map((m) => m[key])) });
    const hd = stat(runs.halo!, "decodeTokS");
    const ld = stat(runs.llama!, "decodeTokS");
    const hp = stat(runs.halo!, "prefillTokS");
    const lp = stat(runs.llama!, "prefillTokS");
    const haloRss = Math.max(...runs.halo!.map((m) => m.maxRssBytes));
    const agree = runs.halo![0]!.tokens.findIndex((t, i) => t !== runs.llama![0]!.tokens[i]);
    rows.push({
      model: `${type} ${(fileBytes / 2 ** 20).toFixed(0)} MiB`,
      threads,
      "halo decode tok/s": `${hd.mean.toFixed(2)} ± ${hd.sd.toFixed(2)}`,
      "llama.cpp decode tok/s": `${ld.mean.toFixed(2)} ± ${ld.sd.toFixed(2)}`,
      "decode ratio": (hd.mean / ld.mean).toFixed(2),
      "halo prefill tok/s": hp.mean.toFixed(1),
      "llama.cpp prefill tok/s": lp.mean.toFixed(1),
      "prefill ratio": (hp.mean / lp.mean).toFixed(2),
      "halo GB/s (% of copy bw)": `${((hd.mean * fileBytes) / 1e9).toFixed(2)} (${((100 * hd.mean * fileBytes) / bandwidth).toFixed(0)}%)`,
      "halo RSS / file": (haloRss / fileBytes).toFixed(2),
      "greedy agreement": agree === -1 ? `${nDecode}/${nDecode}` : `${agree}/${nDecode}`,
    });
    results.push({ type, threads, fileBytes, halo: runs.halo, llamaCpp: runs.llama });
  }
}
const header = Object.keys(rows[0]!);
const table = [`| ${header.join(" | ")} |`, `| ${header.map(() => "---").join(" | ")} |`, ...rows.map((r) => `| ${header.map((h) => String(r[h])).join(" | ")} |`)].join("\n");
const run = describeRun();
console.log(`\n${run.line}\ncopy bandwidth ${(bandwidth / 1e9).toFixed(1)} GB/s; prompt ${nPrompt} tokens, decode ${nDecode} tokens, ${nLayers} layers, ${repeats} repeats\n\n${table}\n`);
const outDir = join(root, "bench", "results", new Date().toISOString().slice(0, 10));
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, "engine.json"), JSON.stringify({ ...run.record, copyBandwidthBytesPerSecond: bandwidth, nPrompt, nDecode, nLayers, repeats, rows, results }, null, 2));
console.log(`wrote ${join(outDir, "engine.json")}`);

