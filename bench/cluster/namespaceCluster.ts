/**
 * A halo cluster on the namespace testbed, for benchmarks (bench:cluster, bench:report): every
 * worker is a `halo worker` process in its own node, the coordinator a `halo run --json` in node
 * 0, and loss is switched on the wire between runs, after the workers have loaded their weights
 * (DESIGN.md, "Testbed lessons"). The testbed removes itself on exit and on SIGINT/SIGTERM.
 */
import { execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NetnsTestbed, waitForJsonEvent } from "../../src/testbed/index.js";

export const PROJECT_ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..", "..");
export const HALO_MAIN = join(PROJECT_ROOT, "dist", "src", "cli", "main.js");
/** Synthetic models, predictors and shards: git-ignored, kept between runs. */
export const BENCH_CACHE_DIR = join(PROJECT_ROOT, "bench", ".cache");
export const BENCH_CLUSTER_KEY = "bench cluster key, 32 bytes long";
export const BENCH_PROMPT = "Once upon a time";
const WORKER_START_TIMEOUT_MS = 120_000;
const WORKER_LOG_TAIL_CHARS = 4000;

/** Runs the halo CLI on this machine and returns its stdout; its stderr goes to ours. */
export function haloSync(args: readonly string[]): string {
  return execFileSync(process.execPath, [HALO_MAIN, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 64 * 1024 * 1024 });
}

/** The synthetic model file, written once by `halo synth` into the cache. */
export function ensureSynthModel(shape: string, nLayers: number, type = "q4_0"): string {
  mkdirSync(BENCH_CACHE_DIR, { recursive: true });
  const path = join(BENCH_CACHE_DIR, `${shape}-${nLayers}l-${type}.gguf`);
  if (!existsSync(path)) {
    process.stderr.write(`writing ${path}…\n`);
    haloSync(["synth", "--shape", shape, "--type", type, "--layers", String(nLayers), "--seed", "1", "--out", path]);
  }
  return path;
}

/** The part of `halo run --json` the benchmarks read. */
export interface HaloRunJson {
  tokens: number[];
  timings: { msPerToken: number };
  cluster?: {
    devices: number;
    mode: string;
    lostWorkers: number[];
    totals: { droppedContributions: number; expectedContributions: number; criticalContributions?: number; syncWaitMs: number };
    placement?: { choice: string; groupsPerDevice: number[] };
  };
  perToken?: Array<{ ms: number; syncWaitMs: number; dropped: number; expected: number }>;
}

/** Decode steps only: the first token's time includes the prompt's prefill. */
export function decodeTpotMs(json: HaloRunJson): number[] {
  return (json.perToken ?? []).slice(1).map((t) => t.ms);
}

/** One set of workers, one per worker node, listening on `port`; a benchmark may keep several (fully resident, under a budget). */
export interface WorkerSet {
  port: number;
  /** Flags beyond --host and --port for node i's worker (i ≥ 1). */
  args: (nodeIndex: number) => string[];
}

export interface CoordinatorRun {
  json: HaloRunJson;
  /** Packets nft dropped on the wire during the run, every link and direction. */
  wireDrops: number;
  wallMs: number;
}

export class NamespaceCluster {
  private readonly logs = new Map<ChildProcess, string>();

  private constructor(readonly testbed: NetnsTestbed, private readonly workers: ChildProcess[]) {}

  /** Builds an `nDevices`-node testbed and starts every worker set in it; loss stays off. */
  static async start(options: { family: string; nDevices: number; workerSets: readonly WorkerSet[] }): Promise<NamespaceCluster> {
    const testbed = await NetnsTestbed.create({ family: options.family, links: Array.from({ length: options.nDevices }, () => ({})) });
    const cluster = new NamespaceCluster(testbed, []);
    try {
      for (const set of options.workerSets) {
        for (let node = 1; node < options.nDevices; node++) {
          const child = testbed.spawn(node, process.execPath, [HALO_MAIN, "worker", "--host", testbed.address(node), "--port", String(set.port), ...set.args(node)], { stdio: ["ignore", "pipe", "pipe"] });
          // Kept, not shown: worker logs would break a progress line, and matter only when something fails.
          child.stderr!.setEncoding("utf8").on("data", (text: string) => cluster.logs.set(child, ((cluster.logs.get(child) ?? "") + text).slice(-WORKER_LOG_TAIL_CHARS)));
          cluster.workers.push(child);
        }
      }
      await Promise.all(cluster.workers.map((child) => waitForJsonEvent(child, "listening", WORKER_START_TIMEOUT_MS)));
    } catch (error) {
      await testbed.close();
      throw new Error(`workers did not start: ${error instanceof Error ? error.message : String(error)}\n${cluster.workerLogs()}`, { cause: error });
    }
    return cluster;
  }

  get nDevices(): number {
    return this.testbed.nNodes;
  }

  /** host:port of every worker of the set on `port`, for --workers. */
  workerList(port: number): string {
    return Array.from({ length: this.nDevices - 1 }, (_, i) => `${this.testbed.address(i + 1)}:${port}`).join(",");
  }

  /** Loss on every worker's link, both ways; the coordinator's own link stays clean, so each message crosses one lossy hop. */
  async setWorkerLoss(lossPercent: number): Promise<void> {
    await this.testbed.setLoss([0, ...Array.from({ length: this.nDevices - 1 }, () => lossPercent)]);
  }

  /** `halo run <args> --json` in node 0, with the wire drops it saw. */
  async runCoordinator(args: readonly string[], timeoutMs: number): Promise<CoordinatorRun> {
    const dropsBefore = await this.testbed.dropCounters();
    const started = performance.now();
    const result = await this.testbed.exec(0, process.execPath, [HALO_MAIN, "run", ...args, "--json"], { timeoutMs });
    const wallMs = performance.now() - started;
    if (result.code !== 0) throw new Error(`halo run ${args.join(" ")} (${this.nDevices} devices) exited ${result.code ?? result.signal}: ${result.stderr.slice(-2000)}\n${this.workerLogs()}`);
    const dropsAfter = await this.testbed.dropCounters();
    const wireDrops = dropsAfter.reduce((sum, link, i) => sum + link.fromNodePackets + link.toNodePackets - dropsBefore[i]!.fromNodePackets - dropsBefore[i]!.toNodePackets, 0);
    return { json: JSON.parse(result.stdout) as HaloRunJson, wireDrops, wallMs };
  }

  /** The last few kB each worker printed, for an error message. */
  workerLogs(): string {
    return this.workers.map((child, i) => `--- worker process ${i + 1} ---\n${this.logs.get(child) ?? ""}`).join("\n");
  }

  close(): Promise<void> {
    return this.testbed.close();
  }
}
