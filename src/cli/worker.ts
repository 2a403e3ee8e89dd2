/** `halo worker`: serve a share of the model to a coordinator. */
import { modelSha256, WorkerNode } from "../cluster/index.js";
import { booleanFlag, integerFlag, parseFlags, stringFlag } from "./flags.js";
import type { CommandIo } from "./io.js";
import { KEY_FLAGS, LINK_FLAGS, LINK_FLAGS_HELP, readClusterKey, readLinkProfile, readSeed } from "./clusterFlags.js";
import { loadCommandModel } from "./engineSetup.js";
import { MODEL_FLAGS, MODEL_FLAGS_HELP, readModelFlags } from "./modelFlags.js";

export const WORKER_HELP = `usage: halo worker [--host H] [--port P] [--model F] [--threads N] [--cluster-key K]

Listens for a coordinator (halo run --workers, halo cluster) and computes its share of each
layer. Prints one JSON line {"event":"listening","host","tcpPort","udpPort"} when ready.
      --host H           bind address (default 127.0.0.1)
      --port P           TCP port, 0 = any free one (default 9998)
      --cluster-key K    shared secret, at least 16 bytes (or HALO_CLUSTER_KEY); required off loopback
${MODEL_FLAGS_HELP}
Link emulation of the datagrams this worker sends (for local testing):
${LINK_FLAGS_HELP}`;

export async function workerCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const flags = parseFlags(argv, { ...MODEL_FLAGS, ...KEY_FLAGS, ...LINK_FLAGS, host: { type: "string" }, port: { type: "string" } });
  if (booleanFlag(flags, "help")) {
    io.stdout(WORKER_HELP + "\n");
    return 0;
  }
  const host = stringFlag(flags, "host") ?? "127.0.0.1";
  const port = integerFlag(flags, "port", 0, 65535) ?? 9998;
  const clusterKey = readClusterKey(flags, [host]);
  const modelFlags = readModelFlags(flags);
  const { model, kernels } = await loadCommandModel(modelFlags);
  const worker = await WorkerNode.start({
    model,
    modelSha256: modelSha256(modelFlags.modelPath),
    kernels,
    clusterKey,
    host,
    port,
    contextLength: modelFlags.contextLength,
    linkProfile: readLinkProfile(flags),
    seed: readSeed(flags),
    log: (line) => io.stderr(line + "\n"),
  });
  io.stdout(JSON.stringify({ event: "listening", host, tcpPort: worker.tcpPort, udpPort: worker.udpPort }) + "\n");
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await worker.close();
  return 0;
}
