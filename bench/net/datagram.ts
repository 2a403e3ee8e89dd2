/**
 * Data-plane codec micro-benchmark: encode+MAC and verify+decode throughput of one datagram
 * (src/net/datagram.ts) for dim 2048 and 4096, the cost of dropping garbage (D9), and what one
 * token costs in datagrams, bytes and codec CPU for a star of 8 devices.
 *
 *   node dist/bench/net/datagram.js [--repeats 7] [--min-ms 300] [--json out.json]
 *
 * Timings are mean ± stddev of per-datagram time over `repeats` batches on one thread.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { SeededRandom } from "../../src/base/index.js";
import {
  DATAGRAM_MAX_BYTES,
  DatagramReceiver,
  encodeDatagram,
  encodeDatagramBlocks,
  planChunks,
  type DatagramHeader,
  type DatagramKind,
} from "../../src/net/index.js";
import { encodeQ8Range, q8ByteLength } from "../../src/net/q8Vector.js";

interface Timing {
  /** Mean microseconds per call. */
  readonly meanUs: number;
  readonly stddevUs: number;
}

/** Calibrates a batch to minMs / repeats, then times `repeats` batches; fn returns how many datagrams it handled. */
function measure(fn: () => number, minMs: number, repeats: number): Timing {
  for (let i = 0; i < 50; i++) fn();
  let batch = 1;
  for (;;) {
    const start = performance.now();
    for (let i = 0; i < batch; i++) fn();
    const elapsed = performance.now() - start;
    if (elapsed >= minMs / repeats || batch >= 1 << 22) break;
    batch *= elapsed > 0 ? Math.min(16, Math.max(2, Math.ceil(minMs / repeats / elapsed))) : 16;
  }
  const samples: number[] = [];
  for (let r = 0; r < repeats; r++) {
    let n = 0;
    const start = performance.now();
    for (let i = 0; i < batch; i++) n += fn();
    samples.push(((performance.now() - start) * 1000) / n);
  }
  const meanUs = samples.reduce((a, b) => a + b, 0) / samples.length;
  const variance = samples.reduce((a, b) => a + (b - meanUs) ** 2, 0) / Math.max(1, samples.length - 1);
  return { meanUs, stddevUs: Math.sqrt(variance) };
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n");
}

function gitCommit(): string {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  } catch {
    return "unknown"; // Safe: the commit only labels the results.
  }
}

const SESSION = 0x5eed;
const EPOCH = 1;
const random = new SeededRandom(1);
const KEY = Buffer.from(Array.from({ length: 32 }, () => random.nextInt(256)));

interface CodecTimings {
  readonly dim: number;
  readonly nChunks: number;
  readonly datagramBytes: number;
  /** Quantize + header + MAC, per datagram. */
  readonly encode: Timing;
  /** Header + copy of pre-quantized blocks + MAC, per datagram. */
  readonly encodeBlocks: Timing;
  /** Full accept path (MAC, checks, scale validation, decode), per datagram. */
  readonly accept: Timing;
  /** A garbage datagram of valid length and prefix, dropped at the MAC. */
  readonly rejectMac: Timing;
  /** A datagram dropped before the MAC (bad length). */
  readonly rejectLen: Timing;
}

function headerFor(kind: DatagramKind, chunkIndex: number, dim: number): DatagramHeader {
  const chunks = planChunks(dim);
  const chunk = chunks[chunkIndex]!;
  return { kind, sessionId: SESSION, epoch: EPOCH, senderIndex: 1, layer: 0, phase: 0, isDuplicateCopy: false, chunkIndex, nChunks: chunks.length, position: 0, offset: chunk.offset, nElements: chunk.nElements, sendTimeUs: 0 };
}

function benchCodec(dim: number, minMs: number, repeats: number): CodecTimings {
  const chunks = planChunks(dim);
  const x = Float32Array.from({ length: dim }, () => random.nextGaussian());
  const blocks = new Uint8Array(q8ByteLength(dim));
  encodeQ8Range(x, 0, dim, blocks, 0);
  const out = Buffer.alloc(DATAGRAM_MAX_BYTES);
  const headers = chunks.map((_, c) => headerFor("partial", c, dim));
  const datagrams = headers.map((h) => {
    const n = encodeDatagram(h, x, h.offset, KEY, out);
    return Buffer.from(out.subarray(0, n));
  });
  const blockBytes = (offset: number): number => (offset / 32) * 34;
  const encode = measure(() => {
    for (const h of headers) encodeDatagram(h, x, h.offset, KEY, out);
    return headers.length;
  }, minMs, repeats);
  const encodeBlocks = measure(() => {
    for (const h of headers) encodeDatagramBlocks(h, blocks, blockBytes(h.offset), KEY, out);
    return headers.length;
  }, minMs, repeats);
  const receiver = new DatagramReceiver({ kind: "partial", sessionId: SESSION, epoch: EPOCH, dim, nLayers: 1, nSenders: 2, keys: new Map([[1, KEY]]), mayContribute: () => true });
  const accept = measure(() => {
    receiver.reset(EPOCH, 0, 0, 0);
    for (const d of datagrams) if (!receiver.accept(d).ok) throw new Error("bench datagram rejected");
    return datagrams.length;
  }, minMs, repeats);
  const garbage = Buffer.from(datagrams[0]!);
  garbage[garbage.length - 1]! ^= 1;
  const rejectMac = measure(() => (receiver.accept(garbage).ok ? 0 : 1), minMs, repeats);
  const short = garbage.subarray(0, garbage.length - 1);
  const rejectLen = measure(() => (receiver.accept(short).ok ? 0 : 1), minMs, repeats);
  return { dim, nChunks: chunks.length, datagramBytes: datagrams[0]!.length, encode, encodeBlocks, accept, rejectMac, rejectLen };
}

interface TokenCost {
  readonly model: string;
  readonly dim: number;
  readonly nLayers: number;
  readonly nDevices: number;
  readonly inputCopies: number;
  readonly datagramsPerToken: number;
  readonly kBytesPerToken: number;
  /** The coordinator's codec CPU per token: quantize u once per phase, MAC it per worker, accept every partial. */
  readonly coordinatorMsPerToken: number;
  /** One worker's: accept its inputs, encode its partials, every phase. */
  readonly workerMsPerToken: number;
}

/** Every worker holds groups in every phase (the most datagrams); inputCopies 2 = inputs sent twice. */
function tokenCost(model: string, dim: number, nLayers: number, nDevices: number, inputCopies: number, t: CodecTimings): TokenCost {
  const nWorkers = nDevices - 1;
  const nPhases = nLayers * 2;
  const inputsPerPhase = nWorkers * t.nChunks * inputCopies;
  const partialsPerPhase = nWorkers * t.nChunks;
  const datagramsPerToken = nPhases * (inputsPerPhase + partialsPerPhase);
  const quantizeUs = t.encode.meanUs - t.encodeBlocks.meanUs; // per chunk, roughly
  const coordinatorUs = nPhases * (t.nChunks * Math.max(0, quantizeUs) + inputsPerPhase * t.encodeBlocks.meanUs + partialsPerPhase * t.accept.meanUs);
  const workerUs = nPhases * (t.nChunks * inputCopies * t.accept.meanUs + t.nChunks * t.encode.meanUs);
  return {
    model,
    dim,
    nLayers,
    nDevices,
    inputCopies,
    datagramsPerToken,
    kBytesPerToken: (datagramsPerToken * t.datagramBytes) / 1024,
    coordinatorMsPerToken: coordinatorUs / 1000,
    workerMsPerToken: workerUs / 1000,
  };
}

function main(): void {
  const { values } = parseArgs({ options: { repeats: { type: "string", default: "7" }, "min-ms": { type: "string", default: "300" }, json: { type: "string" } } });
  const repeats = Number(values.repeats);
  const minMs = Number(values["min-ms"]);
  const cpu = cpus()[0]?.model ?? "unknown";
  console.log(`halo datagram codec bench: commit ${gitCommit()}, ${cpu}, node ${process.version}, 1 thread, mean ± stddev over ${repeats} repeats`);
  const codec = [2048, 4096].map((dim) => benchCodec(dim, minMs, repeats));
  const fmt = (t: Timing): string => `${t.meanUs.toFixed(2)} ± ${t.stddevUs.toFixed(2)}`;
  const rate = (t: Timing): string => `${Math.round(1e6 / t.meanUs).toLocaleString("en-US")}`;
  const rows = codec.flatMap((t) =>
    (
      [
        ["encode (quantize + MAC)", t.encode],
        ["encode pre-quantized (MAC)", t.encodeBlocks],
        ["verify + decode (accept)", t.accept],
        ["drop: bad MAC", t.rejectMac],
        ["drop: bad length", t.rejectLen],
      ] as const
    ).map(([op, timing]) => [String(t.dim), `${t.nChunks} × ${t.datagramBytes} B`, op, fmt(timing), rate(timing)]),
  );
  console.log();
  console.log(table(["dim", "chunks × size", "operation", "µs / datagram", "datagrams / s"], rows));
  const t2048 = codec[0]!;
  const t4096 = codec[1]!;
  const costs = [
    tokenCost("TinyLlama-1.1B", 2048, 22, 8, 1, t2048),
    tokenCost("TinyLlama-1.1B", 2048, 22, 8, 2, t2048),
    tokenCost("Llama-2-7B", 4096, 32, 8, 1, t4096),
  ];
  console.log();
  console.log("Per token, 8 devices (coordinator + 7 workers), every worker in every phase; inputs ×2 = all inputs sent twice:");
  console.log(
    table(
      ["model", "dim", "layers", "inputs", "datagrams / token", "KiB / token", "coordinator codec ms / token", "worker codec ms / token"],
      costs.map((c) => [c.model, String(c.dim), String(c.nLayers), `×${c.inputCopies}`, String(c.datagramsPerToken), c.kBytesPerToken.toFixed(0), c.coordinatorMsPerToken.toFixed(2), c.workerMsPerToken.toFixed(2)]),
    ),
  );
  if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ commit: gitCommit(), cpu, node: process.version, nThreads: 1, repeats, codec, costs }, null, 2));
}

main();
