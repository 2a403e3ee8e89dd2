/** `halo worker`: serve a share of the model to a coordinator. */
import { UsageError } from "../base/index.js";
import { formatProgressBar, kernelThreads, modelSha256, WorkerNode } from "../cluster/index.js";
import { readPredictor } from "../predictor/index.js";
import { booleanFlag, choiceFlag, integerFlag, numberFlag, parseFlags, stringFlag, type ParsedFlags } from "./flags.js";
import type { CommandIo } from "./io.js";
import { KEY_FLAGS, LINK_FLAGS, LINK_FLAGS_HELP, readClusterKey, readLinkProfile, readSeed } from "./clusterFlags.js";
import { commandKernels, openCommandModelFile } from "./engineSetup.js";

export const WORKER_HELP = `usage: halo worker [--host H] [--port P] [--model F] [--memory-budget MB] [--threads N] [--cluster-key K]

Listens for a coordinator (halo run --workers, halo cluster) and computes its share of each
layer. Prints one JSON line {"event":"listening","host","tcpPort","udpPort"} when ready.
Once its first plan's weights are loaded it measures itself (see halo profile: on one thread and
on --threads, times × --slowdown) and sends that to the coordinator, and again when asked.
With --model, reads only its groups' rows and columns from that file (the coordinator must run
the same file); without it, receives them from the coordinator, hash-checked and cached.
      --host H           bind address (default 127.0.0.1)
      --port P           TCP port, 0 = any free one (default 9998)
      --udp-port P       data-plane UDP port (default: the TCP port's number; 0 = any free one)
  -m, --model F          this device's copy of the model (GGUF)
      --shard-cache DIR  where received weights are kept (default ~/.cache/halo/shards)
      --memory-budget MB keep at most MB MiB of weights in memory; the rest of its groups are read
                         from disk ahead of the layer phases that need them while computing
                         (default: all resident). Too small a budget fails the plan with
                         HALO_ERR_MEMORY_BUDGET naming the least that works.
      --stream-from S    with --memory-budget and --model: shard (default: cut this worker's rows
                         once into the shard cache and read them from there, a few large reads
                         per layer phase) or model (read the model file: no extra disk, but the
                         attn_output/ffn_down columns come in strided runs)
      --predictor F      with --model (halo calibrate --out F): under --memory-budget, keep the groups
                         the calibration found most important on average resident; when the
                         coordinator runs --skip-below, predict per token which groups to skip
  -t, --threads N        compute threads (default: all cores)
      --ctx-size N       KV cache length (default: the model's, at most 4096)
      --cluster-key K    shared secret, at least 16 bytes (or HALO_CLUSTER_KEY); required off loopback
      --slowdown X       emulate a device X times slower: hold each result (X−1) × its compute time
                         (halo cluster --devices sets it; default 1)
      --slowdown-after S:X  emulate a device that becomes X times slower S seconds after it first
                         computes (thermal throttling, a competing job): a drift to re-plan for
Link emulation of the datagrams this worker sends (for local testing):
${LINK_FLAGS_HELP}`;

/** The range of --memory-budget in MiB (also of memoryMB in halo cluster --spec, which becomes it). */
export const MEMORY_BUDGET_MIB = { min: 0.01, max: 2 ** 20 } as const;

export async function workerCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, {
    ...KEY_FLAGS, ...LINK_FLAGS,
    model: { type: "string", short: "m" }, threads: { type: "string", short: "t" }, "ctx-size": { type: "string" },
    host: { type: "string" }, port: { type: "string" }, "udp-port": { type: "string" }, "shard-cache": { type: "string" }, slowdown: { type: "string" }, "slowdown-after": { type: "string" },
    "memory-budget": { type: "string" }, predictor: { type: "string" }, "stream-from": { type: "string" },
  });
  if (booleanFlag(flags, "help")) {
    io.stdout(WORKER_HELP + "\n");
    return 0;
  }
  const host = stringFlag(flags, "host") ?? "127.0.0.1";
  const port = integerFlag(flags, "port", 0, 65535) ?? 9998;
  const clusterKey = readClusterKey(flags, [host]);
  const modelPath = stringFlag(flags, "model");
  const budgetMiB = numberFlag(flags, "memory-budget", MEMORY_BUDGET_MIB.min, MEMORY_BUDGET_MIB.max);
  const predictorPath = stringFlag(flags, "predictor");
  const streamFrom = choiceFlag(flags, "stream-from", ["shard", "model"] as const);
  if (streamFrom !== undefined && (budgetMiB === undefined || modelPath === undefined)) throw new UsageError("--stream-from needs --memory-budget and --model (without them nothing streams from disk)");
  if (predictorPath !== undefined && modelPath === undefined) throw new UsageError("--predictor needs --model (the predictor is checked against the model file)");
  const { kernels, map } = commandKernels(integerFlag(flags, "threads", 1, 256));
  // Its profile also times one thread, so the scheduler sees what the extra threads buy.
  const profileKernels = kernelThreads(kernels) > 1 ? [commandKernels(1).kernels] : [];
  // Under a budget the weights are read with positioned reads only; a whole-file mapping would let the page cache decide instead.
  const local = modelPath === undefined ? undefined : { ...(await openCommandModelFile(modelPath, budgetMiB === undefined ? map : undefined)), sha256: modelSha256(modelPath) };
  const predictor = predictorPath === undefined ? undefined : await readPredictor(predictorPath, local!.sha256);
  let lastBar = "";
  const worker = await WorkerNode.start({
    model: local,
    kernels,
    profileKernels,
    map,
    clusterKey,
    host,
    port,
    udpPort: integerFlag(flags, "udp-port", 0, 65535) ?? port,
    contextLength: integerFlag(flags, "ctx-size", 1, 1 << 20),
    shardCacheDir: stringFlag(flags, "shard-cache"),
    linkProfile: readLinkProfile(flags),
    slowdown: numberFlag(flags, "slowdown", 1, 1000),
    slowdownAfter: readSlowdownAfter(flags),
    memoryBudgetBytes: budgetMiB === undefined ? undefined : Math.floor(budgetMiB * 2 ** 20),
    streamFrom,
    predictor,
    seed: readSeed(flags),
    log: (line) => io.stderr(line + "\n"),
    onShardProgress: (done, total) => {
      const bar = formatProgressBar(done, total, 30);
      if (bar === lastBar) return;
      lastBar = bar;
      io.stderr(`\rhalo worker: receiving weights ${bar}${done === total ? "\n" : ""}`);
    },
  });
  io.stdout(JSON.stringify({ event: "listening", host, tcpPort: worker.tcpPort, udpPort: worker.udpPort }) + "\n");
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await worker.close();
  local?.file.close();
  return 0;
}

/** --slowdown-after S:X → after S seconds (0..86400) of computing, X (1..1000) times slower. */
export function readSlowdownAfter(flags: ParsedFlags): { afterMs: number; slowdown: number } | undefined {
  const value = stringFlag(flags, "slowdown-after");
  if (value === undefined) return undefined;
  const match = /^(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)$/.exec(value.trim());
  const seconds = Number(match?.[1]);
  const slowdown = Number(match?.[2]);
  if (match === null || !(seconds <= 86_400) || !(slowdown >= 1 && slowdown <= 1000)) throw new UsageError(`--slowdown-after takes SECONDS:FACTOR, seconds from 0 to 86400 and a factor from 1 to 1000, e.g. 30:4; got '${value}'`);
  return { afterMs: seconds * 1000, slowdown };
}
