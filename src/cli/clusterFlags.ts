/** Flags shared by the cluster commands: the cluster key and the emulated link. */
import { UsageError } from "../base/index.js";
import type { LinkProfile } from "../net/index.js";
import { integerFlag, numberFlag, stringFlag, type FlagSpec, type ParsedFlags } from "./flags.js";

/** Used only when every node binds to loopback and no key is given: nothing else can reach them. */
export const LOOPBACK_DEV_KEY = "halo-loopback-development-key";

export const KEY_FLAGS = { "cluster-key": { type: "string" } } as const satisfies FlagSpec;

export const LINK_FLAGS = {
  loss: { type: "string" },
  delay: { type: "string" },
  jitter: { type: "string" },
  bandwidth: { type: "string" },
  seed: { type: "string" },
} as const satisfies FlagSpec;

export const LINK_FLAGS_HELP = `      --loss PCT         emulated packet loss on each worker link, both ways (default 0)
      --delay MS         emulated one-way delay (default 0)
      --jitter MS        emulated delay jitter, standard deviation (default 0)
      --bandwidth MBIT   emulated link bandwidth, 0 = unlimited (default 0)
      --seed S           seed of the emulated loss and of sampling`;

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

/** The cluster key: --cluster-key, else HALO_CLUSTER_KEY, else (loopback only) a development key. */
export function readClusterKey(flags: ParsedFlags, hosts: readonly string[]): Buffer {
  const key = stringFlag(flags, "cluster-key") ?? process.env["HALO_CLUSTER_KEY"];
  if (key === undefined || key === "") {
    if (hosts.every(isLoopback)) return Buffer.from(LOOPBACK_DEV_KEY);
    throw new UsageError("--cluster-key (or HALO_CLUSTER_KEY) is required when a node is not on loopback");
  }
  if (Buffer.byteLength(key) < 16) throw new UsageError("--cluster-key must be at least 16 bytes");
  return Buffer.from(key);
}

export function readLinkProfile(flags: ParsedFlags): LinkProfile {
  return {
    lossRatio: (numberFlag(flags, "loss", 0, 100) ?? 0) / 100,
    delayMs: numberFlag(flags, "delay", 0, 60_000) ?? 0,
    jitterMs: numberFlag(flags, "jitter", 0, 60_000) ?? 0,
    bandwidthMbit: numberFlag(flags, "bandwidth", 0, 1e6) ?? 0,
  };
}

export function readSeed(flags: ParsedFlags): number | undefined {
  return integerFlag(flags, "seed", 0, 2 ** 32 - 1);
}

/** host:port,host:port → addresses. */
export function parseWorkerList(value: string): Array<{ host: string; port: number }> {
  return value.split(",").map((item) => {
    const match = /^(.+):(\d{1,5})$/.exec(item.trim());
    const port = match === null ? NaN : Number(match[2]);
    if (match === null || !(port >= 1 && port <= 65535)) throw new UsageError(`--workers takes host:port,host:port,…; '${item}' is not host:port`);
    return { host: match[1]!.replace(/^\[(.*)\]$/, "$1"), port };
  });
}
