/**
 * The state file of a testbed that `halo testbed up` built and a later `status` or `down` reads:
 * the topology (enough to re-plan every command, teardown included) and what `up` printed per
 * device. One file per name; by default under /run, a tmpfs that is emptied at boot exactly when
 * the namespaces themselves disappear, so a state file never outlives its testbed by a reboot.
 */
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { FileError } from "../base/index.js";
import type { TestbedTopology } from "../testbed/index.js";
import { readTextFile } from "./textFile.js";

export const DEFAULT_TESTBED_STATE_DIR = "/run/halo";
const STATE_VERSION = 1;

export interface TestbedNodeState {
  namespace: string;
  address: string;
  /** The --spec name of the device, if it had one. */
  name?: string | undefined;
  /** What the wire cannot emulate, as flags for this device's halo process (--delay, --jitter, --slowdown, --memory-budget). */
  processFlags: string[];
}

export interface TestbedState {
  version: typeof STATE_VERSION;
  /** The --name the testbed was built under: the family of its namespaces. */
  family: string;
  topology: TestbedTopology;
  bridgeNamespace: string;
  /** (nNodes) the coordinator first. */
  nodes: TestbedNodeState[];
  createdAt: string;
}

const stateSchema = z.strictObject({
  version: z.literal(STATE_VERSION),
  family: z.string(),
  topology: z.strictObject({
    name: z.string(),
    links: z.array(z.strictObject({ lossPercent: z.number().optional(), bandwidthMbit: z.number().optional() })).min(1),
    subnet: z.string().optional(),
    queueLatencyMs: z.number().optional(),
  }),
  bridgeNamespace: z.string(),
  nodes: z.array(z.strictObject({ namespace: z.string(), address: z.string(), name: z.string().optional(), processFlags: z.array(z.string()) })),
  createdAt: z.string(),
});

export function testbedStatePath(stateDir: string, family: string): string {
  return join(stateDir, `testbed-${family}.json`);
}

/** The state at `path`, or undefined when there is none. */
export function readTestbedState(path: string): TestbedState | undefined {
  if (!existsSync(path)) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(readTextFile(path));
  } catch (error) {
    throw new FileError(path, `is not a testbed state file (not JSON); delete it and run halo testbed down, which also sweeps by name`, { cause: error });
  }
  const parsed = stateSchema.safeParse(value);
  if (!parsed.success) throw new FileError(path, `is not a testbed state file of version ${STATE_VERSION} (${parsed.error.issues[0]!.path.join(".")}: ${parsed.error.issues[0]!.message}); delete it and run halo testbed down, which also sweeps by name`);
  return parsed.data;
}

/** Written whole to a temporary name and renamed over, so a reader never sees half a file. */
export function writeTestbedState(path: string, stateDir: string, state: TestbedState): void {
  try {
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(`${path}.tmp`, JSON.stringify(state, null, 2) + "\n");
    renameSync(`${path}.tmp`, path);
  } catch (error) {
    throw new FileError(path, `cannot write the testbed state: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
}

export function removeTestbedState(path: string): void {
  rmSync(path, { force: true });
}
