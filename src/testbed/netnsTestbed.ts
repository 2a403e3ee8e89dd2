/**
 * Runs the plans of `netns.ts`: builds a testbed, runs processes in its nodes, changes loss on
 * the fly, reads the wire's counters, and always tears it down (after a failed setup too, on
 * process exit, and on SIGINT, SIGTERM or SIGHUP), unless it was made to outlive its process
 * (`persistent`, for `halo testbed up`). Commands run with execFile, never a shell. Needs root,
 * `ip` (iproute2), `nft` (nftables) and `tc`.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import { TestbedError, describeError } from "../base/index.js";
import {
  LIST_NAMESPACES, PERSISTENT_OWNER_PID, parseDropCounters, parseNamespaceList, parseQdiscStats, planDropCounterRead, planFamilyTeardown, planLeftoverTeardown,
  planLossUpdate, planQdiscRead, planTestbed, testbedName, type Argv, type LinkDropCounters, type LinkQdiscStats, type TestbedLink, type TestbedPlan,
  type TestbedTopology,
} from "./netns.js";

/** Runs one command and resolves with its stdout; rejects with a TestbedError. Injectable so the executor's order can be tested without root. */
export type CommandRunner = (argv: Argv) => Promise<string>;

const COMMAND_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 5_000;

export const runCommand: CommandRunner = (argv) =>
  new Promise((resolve, reject) => {
    execFile(argv[0], argv.slice(1), { timeout: COMMAND_TIMEOUT_MS, encoding: "utf8", maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error === null) {
        resolve(stdout);
        return;
      }
      const errno = (error as NodeJS.ErrnoException).code;
      const why = errno === "ENOENT" ? `'${argv[0]}' is not installed (apt-get install iproute2 nftables)`
        : error.killed ? `timed out after ${COMMAND_TIMEOUT_MS} ms`
        : `exited with status ${String(error.code)}: ${stderr.trim().slice(0, 500)}`;
      reject(new TestbedError(argv, why, { cause: error, stderr }));
    });
  });

export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Deletes `family`'s testbeds left by runs that died before tearing down; returns the namespaces removed. */
export async function removeLeftoverTestbeds(family: string, run: CommandRunner = runCommand): Promise<string[]> {
  const commands = planLeftoverTeardown(parseNamespaceList(await run(LIST_NAMESPACES)), family, isProcessAlive);
  for (const argv of commands) await run(argv);
  return commands.map((argv) => argv[3]!);
}

/**
 * `halo testbed down`'s fallback when its state file is gone: deletes `family`'s persistent
 * testbeds and dead owners' leftovers; returns the namespaces removed.
 */
export async function removeFamilyTestbeds(family: string, run: CommandRunner = runCommand): Promise<string[]> {
  const commands = planFamilyTeardown(parseNamespaceList(await run(LIST_NAMESPACES)), family, isProcessAlive);
  for (const argv of commands) await run(argv);
  return commands.map((argv) => argv[3]!);
}

/** The signals after which a testbed would otherwise be left behind: Node's default action ends the process without 'exit'. */
const TEARDOWN_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

export interface NetnsTestbedOptions {
  /** Groups this tool's testbeds; leftovers of the same family from dead processes are removed first. */
  family: string;
  /** One per node: node i's link to the bridge. */
  links: readonly TestbedLink[];
  subnet?: string;
  queueLatencyMs?: number;
  /** Defaults to execFile. */
  run?: CommandRunner;
  /**
   * Outlive this process (`halo testbed up`): named with PERSISTENT_OWNER_PID, so no leftover
   * sweep takes it, and not torn down on exit or signals; `NetnsTestbed.attach(…).close()`
   * removes it later. Defaults to false.
   */
  persistent?: boolean;
}

export interface ExecResult {
  /** Exit status, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export class NetnsTestbed {
  private readonly children = new Set<ChildProcess>();
  private closing: Promise<void> | undefined;
  private readonly teardownOnExit = (): void => this.teardownSync();
  private readonly teardownOnSignal = (signal: NodeJS.Signals): void => {
    this.teardownSync();
    // Handling a signal cancels its default action; re-raise it unless someone else handles it (and so decides).
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };

  private constructor(readonly topology: TestbedTopology, readonly plan: TestbedPlan, private readonly run: CommandRunner, ownsLifetime: boolean) {
    if (!ownsLifetime) return;
    // A crash between create() and close() still removes the namespaces (an 'exit' handler must be synchronous).
    process.once("exit", this.teardownOnExit);
    for (const signal of TEARDOWN_SIGNALS) process.once(signal, this.teardownOnSignal);
  }

  static async create(options: NetnsTestbedOptions): Promise<NetnsTestbed> {
    const run = options.run ?? runCommand;
    await removeLeftoverTestbeds(options.family, run);
    const persistent = options.persistent ?? false;
    const ownerPid = persistent ? PERSISTENT_OWNER_PID : process.pid;
    const topology: TestbedTopology = { name: testbedName(options.family, ownerPid, randomBytes(3).toString("hex")), links: options.links, subnet: options.subnet, queueLatencyMs: options.queueLatencyMs };
    const testbed = new NetnsTestbed(topology, planTestbed(topology), run, !persistent);
    try {
      for (const argv of testbed.plan.setup) await run(argv);
    } catch (error) {
      await testbed.close().catch(() => undefined); // the setup error is the one worth reporting
      throw error;
    }
    return testbed;
  }

  /**
   * A handle on a testbed that already exists (a persistent one, from `halo testbed up`'s state
   * file): read its counters, change its loss, or close() to delete it. Its lifetime stays its own.
   */
  static attach(topology: TestbedTopology, run: CommandRunner = runCommand): NetnsTestbed {
    return new NetnsTestbed(topology, planTestbed(topology), run, false);
  }

  /** Which of the testbed's namespaces exist: the bridge and every node's. */
  async presentNamespaces(): Promise<{ present: string[]; missing: string[] }> {
    const existing = new Set(parseNamespaceList(await this.run(LIST_NAMESPACES)));
    const all = [this.plan.bridgeNamespace, ...this.plan.nodeNamespaces];
    return { present: all.filter((ns) => existing.has(ns)), missing: all.filter((ns) => !existing.has(ns)) };
  }

  get nNodes(): number {
    return this.plan.nodeNamespaces.length;
  }

  /** Node i's IPv4 address. */
  address(nodeIndex: number): string {
    return this.plan.addresses[this.checkNode(nodeIndex)]!;
  }

  /** Starts `command` inside node i's namespace. The testbed kills it on close() if it is still running. */
  spawn(nodeIndex: number, command: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
    // `ip netns exec` execs the command after entering the namespace, so the child's pid is the command's own.
    const child = spawn("ip", ["netns", "exec", this.plan.nodeNamespaces[this.checkNode(nodeIndex)]!, command, ...args], options);
    this.children.add(child);
    child.once("exit", () => this.children.delete(child));
    return child;
  }

  /** Runs `command` inside node i's namespace to completion; rejects only when it cannot start or outlives `timeoutMs`. */
  exec(nodeIndex: number, command: string, args: readonly string[], options: { timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<ExecResult> {
    const child = this.spawn(nodeIndex, command, args, { env: options.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (text: string) => (stdout += text));
    child.stderr!.setEncoding("utf8").on("data", (text: string) => (stderr += text));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new TestbedError([command, ...args], `timed out after ${options.timeoutMs} ms in node ${nodeIndex}; stderr: ${stderr.slice(-2000)}`, { stderr }));
      }, options.timeoutMs);
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(new TestbedError([command, ...args], `could not start in node ${nodeIndex}: ${describeError(error)}`, { cause: error }));
      });
      child.once("close", (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr });
      });
    });
  }

  /** Sets every link's loss at once (one nft transaction); the drop counters keep counting. */
  async setLoss(lossPercents: readonly number[]): Promise<void> {
    await this.run(planLossUpdate(this.topology, lossPercents));
  }

  async dropCounters(): Promise<LinkDropCounters[]> {
    return parseDropCounters(this.topology, await this.run(planDropCounterRead(this.topology)));
  }

  async qdiscStats(): Promise<LinkQdiscStats[]> {
    return parseQdiscStats(this.topology, await this.run(planQdiscRead(this.topology)));
  }

  /** Stops the processes it started (SIGTERM, then SIGKILL after a grace period) and deletes the namespaces. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.stopAndTearDown();
    return this.closing;
  }

  private async stopAndTearDown(): Promise<void> {
    await Promise.all([...this.children].map((child) => stopChild(child)));
    const existing = new Set(parseNamespaceList(await this.run(LIST_NAMESPACES)));
    const failures: unknown[] = [];
    for (const argv of this.plan.teardown) {
      if (!existing.has(argv[3]!)) continue; // never created, as after a setup that failed early
      await this.run(argv).catch((error: unknown) => failures.push(error));
    }
    this.removeLifetimeHooks();
    if (failures.length > 0) throw failures[0];
  }

  private removeLifetimeHooks(): void {
    process.removeListener("exit", this.teardownOnExit);
    for (const signal of TEARDOWN_SIGNALS) process.removeListener(signal, this.teardownOnSignal);
  }

  private teardownSync(): void {
    this.removeLifetimeHooks();
    for (const child of this.children) child.kill("SIGKILL");
    for (const argv of this.plan.teardown) {
      try {
        execFileSync(argv[0], argv.slice(1), { stdio: "ignore", timeout: COMMAND_TIMEOUT_MS });
      } catch {
        // The process is exiting: a namespace that is already gone is the expected case, and there is no one left to tell.
      }
    }
  }

  private checkNode(nodeIndex: number): number {
    if (!(Number.isInteger(nodeIndex) && nodeIndex >= 0 && nodeIndex < this.nNodes)) throw new TestbedError(["node", String(nodeIndex)], `no such node; the testbed has ${this.nNodes}`);
    return nodeIndex;
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/**
 * Resolves with the first stdout line of `child` that is a JSON object whose `event` is
 * `eventName` (halo worker's `{"event":"listening",…}`); rejects if the child exits first or
 * `timeoutMs` passes.
 */
export function waitForJsonEvent(child: ChildProcess, eventName: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const argv = child.spawnargs;
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const finish = (settle: () => void): void => {
      clearTimeout(timer);
      child.removeListener("exit", onExit);
      lines.removeListener("line", onLine);
      settle();
    };
    const timer = setTimeout(() => finish(() => reject(new TestbedError(argv, `printed no '${eventName}' event within ${timeoutMs} ms`))), timeoutMs);
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      finish(() => reject(new TestbedError(argv, `exited (${signal ?? `status ${String(code)}`}) before its '${eventName}' event`)));
    const onLine = (line: string): void => {
      let event: unknown;
      try {
        event = JSON.parse(line) as unknown;
      } catch {
        return; // not an event line; the child may print other things first
      }
      if (typeof event === "object" && event !== null && (event as Record<string, unknown>)["event"] === eventName) finish(() => resolve(event as Record<string, unknown>));
    };
    child.once("exit", onExit);
    lines.on("line", onLine);
  });
}
