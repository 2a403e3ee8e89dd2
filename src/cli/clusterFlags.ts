/** Flags shared by the cluster commands: the cluster key and the emulated link. */
import { z } from "zod";
import { UsageError } from "../base/index.js";
import { isLoopbackHost } from "../cluster/index.js";
import { gilbertElliottForBursts, validateLinkProfile, type LinkProfile } from "../net/index.js";
import { integerFlag, numberFlag, stringFlag, type FlagSpec, type ParsedFlags } from "./flags.js";
import { readJsonFile } from "./textFile.js";

/** Used only when every node binds to loopback and no key is given: nothing else can reach them. */
export const LOOPBACK_DEV_KEY = "halo-loopback-development-key";

export const KEY_FLAGS = { "cluster-key": { type: "string" } } as const satisfies FlagSpec;

export const LINK_FLAGS = {
  loss: { type: "string" },
  "loss-burst": { type: "string" },
  delay: { type: "string" },
  jitter: { type: "string" },
  bandwidth: { type: "string" },
  seed: { type: "string" },
} as const satisfies FlagSpec;

export const LINK_FLAGS_HELP = `      --loss PCT         emulated packet loss on each worker link, both ways (default 0)
      --loss-burst N     mean length of loss bursts (Gilbert-Elliott), in datagrams (default 1: independent)
      --delay MS         emulated one-way delay (default 0)
      --jitter MS        emulated delay jitter, standard deviation (default 0)
      --bandwidth MBIT   emulated link bandwidth, 0 = unlimited (default 0)
      --seed S           seed of the emulated loss and of sampling`;

/** The cluster key: --cluster-key, else HALO_CLUSTER_KEY, else (loopback only) a development key. */
export function readClusterKey(flags: ParsedFlags, hosts: readonly string[]): Buffer {
  const key = stringFlag(flags, "cluster-key") ?? process.env["HALO_CLUSTER_KEY"];
  if (key === undefined || key === "") {
    if (hosts.every(isLoopbackHost)) return Buffer.from(LOOPBACK_DEV_KEY);
    throw new UsageError("--cluster-key (or HALO_CLUSTER_KEY) is required when a node is not on loopback");
  }
  if (Buffer.byteLength(key) < 16) throw new UsageError("--cluster-key must be at least 16 bytes");
  return Buffer.from(key);
}

/** One link as flags or a --links file give it; loss in percent. */
export interface LinkSpec {
  loss: number;
  lossBurst: number;
  delay: number;
  jitter: number;
  bandwidth: number;
}

/** A perfect link: what every link field defaults to. */
export const DEFAULT_LINK_SPEC: LinkSpec = { loss: 0, lossBurst: 1, delay: 0, jitter: 0, bandwidth: 0 };

export function readLinkSpec(flags: ParsedFlags): LinkSpec {
  return {
    loss: numberFlag(flags, "loss", 0, 100) ?? 0,
    lossBurst: numberFlag(flags, "loss-burst", 1, 1e6) ?? 1,
    delay: numberFlag(flags, "delay", 0, 60_000) ?? 0,
    jitter: numberFlag(flags, "jitter", 0, 60_000) ?? 0,
    bandwidth: numberFlag(flags, "bandwidth", 0, 1e6) ?? 0,
  };
}

/** The emulator's profile of a spec; a burst length above 1 makes the loss bursty with the same mean. */
export function linkProfileOf(spec: LinkSpec): LinkProfile {
  const lossRatio = spec.loss / 100;
  const base = { delayMs: spec.delay, jitterMs: spec.jitter, bandwidthMbit: spec.bandwidth };
  try {
    if (spec.lossBurst > 1 && lossRatio > 0) return validateLinkProfile({ ...base, lossRatio: 0, gilbertElliott: gilbertElliottForBursts(lossRatio, spec.lossBurst) });
    return validateLinkProfile({ ...base, lossRatio });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/** The flags that give a worker process this spec. */
export function linkSpecArgs(spec: LinkSpec): string[] {
  return ["--loss", String(spec.loss), "--loss-burst", String(spec.lossBurst), "--delay", String(spec.delay), "--jitter", String(spec.jitter), "--bandwidth", String(spec.bandwidth)];
}

export function readLinkProfile(flags: ParsedFlags): LinkProfile {
  return linkProfileOf(readLinkSpec(flags));
}

const linkFileEntry = z.strictObject({
  loss: z.number().min(0).max(100).optional(),
  lossBurst: z.number().min(1).max(1e6).optional(),
  delay: z.number().min(0).max(60_000).optional(),
  jitter: z.number().min(0).max(60_000).optional(),
  bandwidth: z.number().min(0).max(1e6).optional(),
});

/**
 * A --links file: a JSON array with one object per worker, `{loss, lossBurst, delay, jitter,
 * bandwidth}` (percent, datagrams, ms, ms, Mbit/s); fields left out take the flags' values.
 */
export function readLinksFile(path: string, nWorkers: number, defaults: LinkSpec): LinkSpec[] {
  const value = readJsonFile(path, "--links");
  const parsed = z.array(linkFileEntry).safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UsageError(`--links ${path}: ${issue.path.length > 0 ? `[${issue.path.join("].")}${issue.path.length > 1 ? "" : "]"}: ` : ""}${issue.message}`);
  }
  if (parsed.data.length !== nWorkers) throw new UsageError(`--links ${path} describes ${parsed.data.length} links; ${nWorkers} workers need one each`);
  return parsed.data.map((entry) => {
    const spec = { ...defaults, ...entry };
    linkProfileOf(spec);
    return spec;
  });
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
