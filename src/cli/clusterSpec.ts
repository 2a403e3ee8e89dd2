/**
 * What each device of `halo cluster --local` emulates: its speed, its memory budget, its link,
 * and a name. `--spec FILE` gives it device by device; `--devices` (presets) and `--links`
 * (per-worker links) are shorter forms of the same description, and all of them end as one
 * LocalDevice per device, coordinator first.
 *
 * Precedence for a worker's link, lowest first: the link flags' defaults, the preset's typical
 * link (unless --delay, --jitter or --bandwidth were given), the flags given, the device's own
 * fields. A preset's slowdown is its speed against the fastest preset listed; `slowdown` sets it
 * outright. A preset's memory is the device's budget in its profile (what the scheduler plans
 * with) unless `memoryMB` says otherwise. Only an explicit `memoryMB` also limits a worker's
 * process (its --memory-budget: it streams what does not fit); the coordinator holds the whole
 * model, so its `memoryMB` informs the scheduler alone.
 */
import { z } from "zod";
import { UsageError } from "../base/index.js";
import { DEVICE_PRESETS, DEVICE_PRESET_NAMES, slowdownFactors, type DevicePresetName } from "../cluster/index.js";
import { linkProfileOf, readLinksFile, type LinkSpec } from "./clusterFlags.js";
import { stringFlag, type ParsedFlags } from "./flags.js";
import { readJsonOrYamlFile } from "./textFile.js";
import { MEMORY_BUDGET_MIB } from "./worker.js";

export interface LocalDevice {
  name: string | undefined;
  preset: DevicePresetName | undefined;
  /** How many times slower than this machine its process computes (1: as fast). */
  slowdown: number;
  /** Bytes of weights it may keep, as its profile reports to the scheduler; undefined: its free memory. */
  memoryBudgetBytes: number | undefined;
  /** The spec's own memoryMB (MiB), which a worker's process takes as --memory-budget; undefined without one (a preset's memory is not a process limit). */
  memoryMB: number | undefined;
  /** Its worker link; undefined for the coordinator. */
  link: LinkSpec | undefined;
  /** A worker's --slowdown-after SECONDS:FACTOR: it becomes slower mid-run (a drift to re-plan for). */
  slowdownAfter?: string;
}

export const MAX_LOCAL_DEVICES = 64;

/** Each field of a spec entry: its schema and, for the error, what it must be. */
const FIELDS = {
  name: { schema: z.string().min(1).max(64), expects: "a string of 1 to 64 characters" },
  preset: { schema: z.enum(DEVICE_PRESET_NAMES), expects: `one of ${DEVICE_PRESET_NAMES.join(", ")}` },
  slowdown: { schema: z.number().min(1).max(1000), expects: "a number from 1 to 1000" },
  slowdownAfter: { schema: z.string().regex(/^\d+(\.\d+)?:\d+(\.\d+)?$/).max(32), expects: "\"SECONDS:FACTOR\", e.g. \"30:4\" (a worker's --slowdown-after)" },
  memoryMB: { schema: z.number().min(MEMORY_BUDGET_MIB.min).max(MEMORY_BUDGET_MIB.max), expects: `a number of MiB from ${MEMORY_BUDGET_MIB.min} to ${MEMORY_BUDGET_MIB.max} (a worker's --memory-budget)` },
  loss: { schema: z.number().min(0).max(100), expects: "a number from 0 to 100 (percent)" },
  lossBurst: { schema: z.number().min(1).max(1e6), expects: "a number from 1 to 1000000 (datagrams)" },
  delay: { schema: z.number().min(0).max(60_000), expects: "a number from 0 to 60000 (ms)" },
  jitter: { schema: z.number().min(0).max(60_000), expects: "a number from 0 to 60000 (ms)" },
  bandwidth: { schema: z.number().min(0).max(1e6), expects: "a number from 0 to 1000000 (Mbit/s, 0 = unlimited)" },
} as const;

type SpecField = keyof typeof FIELDS;
const LINK_FIELDS = ["loss", "lossBurst", "delay", "jitter", "bandwidth"] as const satisfies readonly (SpecField & keyof LinkSpec)[];

const deviceSchema = z.strictObject({
  name: FIELDS.name.schema.optional(),
  preset: FIELDS.preset.schema.optional(),
  slowdown: FIELDS.slowdown.schema.optional(),
  slowdownAfter: FIELDS.slowdownAfter.schema.optional(),
  memoryMB: FIELDS.memoryMB.schema.optional(),
  loss: FIELDS.loss.schema.optional(),
  lossBurst: FIELDS.lossBurst.schema.optional(),
  delay: FIELDS.delay.schema.optional(),
  jitter: FIELDS.jitter.schema.optional(),
  bandwidth: FIELDS.bandwidth.schema.optional(),
});
type DeviceEntry = z.infer<typeof deviceSchema>;

function role(index: number): string {
  return index === 0 ? "the coordinator" : `worker ${index}`;
}

/** The first schema issue as "device i (role): 'field' must be …, got …". */
function describeIssue(entries: unknown, issue: z.core.$ZodIssue): string {
  const [index, field] = issue.path;
  if (typeof index !== "number") return "must be a JSON array with one object per device, the coordinator first";
  const where = `device ${index} (${role(index)})`;
  if (issue.code === "unrecognized_keys") return `${where}: unknown field '${issue.keys[0]}'; the fields are ${Object.keys(FIELDS).join(", ")}`;
  if (typeof field !== "string" || !Object.hasOwn(FIELDS, field)) return `${where}: must be an object of ${Object.keys(FIELDS).join(", ")}`;
  const got = JSON.stringify((entries as Array<Record<string, unknown>>)[index]![field]) ?? "undefined";
  return `${where}: '${field}' must be ${FIELDS[field as SpecField].expects}, got ${got.length > 40 ? `${got.slice(0, 40)}…` : got}`;
}

/** The spec file's entries, checked: one object per device, coordinator first. */
function readSpecEntries(path: string): DeviceEntry[] {
  const value = readJsonOrYamlFile(path, "--spec");
  const parsed = z.array(deviceSchema).safeParse(value);
  if (!parsed.success) throw new UsageError(`--spec ${path}: ${describeIssue(value, parsed.error.issues[0]!)}`);
  const entries = parsed.data;
  if (entries.length === 0 || entries.length > MAX_LOCAL_DEVICES) throw new UsageError(`--spec ${path}: lists ${entries.length} devices; a local cluster has 1 to ${MAX_LOCAL_DEVICES}, the coordinator first`);
  const coordinatorLink = LINK_FIELDS.find((field) => entries[0]![field] !== undefined);
  if (coordinatorLink !== undefined) throw new UsageError(`--spec ${path}: device 0 (the coordinator): '${coordinatorLink}' is a link setting, and the coordinator has no link of its own; set it on the workers`);
  if (entries[0]!.slowdownAfter !== undefined) throw new UsageError(`--spec ${path}: device 0 (the coordinator): 'slowdownAfter' is a worker setting (halo worker --slowdown-after); the coordinator's speed stays as given`);
  entries.forEach((entry, i) => {
    const [seconds, factor] = (entry.slowdownAfter ?? "0:1").split(":").map(Number) as [number, number];
    if (seconds > 86_400 || factor < 1 || factor > 1000) throw new UsageError(`--spec ${path}: device ${i} (${role(i)}): 'slowdownAfter' takes seconds from 0 to 86400 and a factor from 1 to 1000, got "${entry.slowdownAfter}"`);
  });
  return entries;
}

/** A preset's usual link over `base`, unless the link flags were given. */
function presetLink(base: LinkSpec, preset: DevicePresetName | undefined, explicitLink: boolean): LinkSpec {
  if (preset === undefined || explicitLink) return base;
  const link = DEVICE_PRESETS[preset].link;
  return { ...base, delay: link.delayMs, jitter: link.jitterMs, bandwidth: link.bandwidthMbit };
}

/** Slowdowns of devices some of which have presets: those relative to the fastest preset listed, the rest 1. */
function presetSlowdowns(presets: ReadonlyArray<DevicePresetName | undefined>): number[] {
  const listed = presets.filter((p): p is DevicePresetName => p !== undefined);
  if (listed.length === 0) return presets.map(() => 1);
  const factors = slowdownFactors(listed);
  let next = 0;
  return presets.map((p) => (p === undefined ? 1 : factors[next++]!));
}

/**
 * The devices of a --spec file. `defaults` is the link the flags give; `explicitLink`: whether
 * --delay, --jitter or --bandwidth was given (then presets bring no link of their own).
 */
export function readClusterSpec(path: string, defaults: LinkSpec, explicitLink: boolean): LocalDevice[] {
  const entries = readSpecEntries(path);
  const slowdowns = presetSlowdowns(entries.map((e) => e.preset));
  return entries.map((entry, i) => {
    let link: LinkSpec | undefined;
    if (i > 0) {
      link = { ...presetLink(defaults, entry.preset, explicitLink) };
      for (const field of LINK_FIELDS) link[field] = entry[field] ?? link[field];
      try {
        linkProfileOf(link);
      } catch (error) {
        throw new UsageError(`--spec ${path}: device ${i} (${role(i)}): ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    const presetMemory = entry.preset === undefined ? undefined : DEVICE_PRESETS[entry.preset].memoryBytes;
    // Rounded down as halo worker --memory-budget rounds, so the profile and the process agree.
    const memoryBudgetBytes = entry.memoryMB === undefined ? presetMemory : Math.floor(entry.memoryMB * 2 ** 20);
    return { name: entry.name, preset: entry.preset, slowdown: entry.slowdown ?? slowdowns[i]!, memoryBudgetBytes, memoryMB: entry.memoryMB, link, ...(entry.slowdownAfter === undefined ? {} : { slowdownAfter: entry.slowdownAfter }) };
  });
}

/** --devices pi4,pi4,pi5 → one preset per device, the coordinator first. */
function readDevicePresets(flags: ParsedFlags, nDevices: number): DevicePresetName[] | undefined {
  const value = stringFlag(flags, "devices");
  if (value === undefined) return undefined;
  const names = value.split(",").map((name) => name.trim());
  for (const name of names) {
    if (!(DEVICE_PRESET_NAMES as readonly string[]).includes(name)) throw new UsageError(`--devices: '${name}' is not one of ${DEVICE_PRESET_NAMES.join(", ")}`);
  }
  if (names.length !== nDevices) throw new UsageError(`--devices lists ${names.length} devices; --local ${nDevices} needs one per device, the coordinator first`);
  return names as DevicePresetName[];
}

/** The devices that --devices and --links describe (neither given: all as fast as this machine, on the flags' link). */
export function localDevicesFromFlags(flags: ParsedFlags, nDevices: number, defaults: LinkSpec, explicitLink: boolean): LocalDevice[] {
  const presets = readDevicePresets(flags, nDevices);
  const linksPath = stringFlag(flags, "links");
  const links = linksPath === undefined ? undefined : readLinksFile(linksPath, nDevices - 1, defaults);
  const slowdowns = presets === undefined ? undefined : slowdownFactors(presets);
  return Array.from({ length: nDevices }, (_, i) => {
    const preset = presets?.[i];
    const link = i === 0 ? undefined : (links?.[i - 1] ?? presetLink(defaults, preset, explicitLink));
    return { name: undefined, preset, slowdown: slowdowns?.[i] ?? 1, memoryBudgetBytes: preset === undefined ? undefined : DEVICE_PRESETS[preset].memoryBytes, memoryMB: undefined, link };
  });
}

/** "coordinator pi4 (2.9 GB/s, compute ×2.98), worker 1 "kitchen" (compute ×1.50), …" */
export function describeLocalDevices(devices: readonly LocalDevice[]): string {
  return devices.map((d, i) => {
    const who = `${i === 0 ? "coordinator" : `worker ${i}`}${d.name === undefined ? "" : ` "${d.name}"`}`;
    const speed = d.preset === undefined ? "(" : `${d.preset} (${DEVICE_PRESETS[d.preset].weightGBps.toFixed(1)} GB/s, `;
    return `${who} ${speed}compute ×${d.slowdown.toFixed(2)})`;
  }).join(", ");
}
