/**
 * Live re-planning: the coordinator plans again while generating (a worker left or came back,
 * a link drifted; replanWatch.ts decides when) and moves groups without stopping the tokens.
 *
 * 1. Plan: the scheduler gets every device's profile (a lost worker's as unable to compute),
 *    with each attention group of a device still up pinned where it is (its KV cache lives
 *    there), and every group of a worker that cannot load live (it receives shards) pinned too.
 *    FFN blocks are stateless and move freely; a lost worker's attention groups move too, and
 *    start with an empty cache (the positions before stay masked, as for a rejoined worker).
 * 2. Prepare: each worker whose groups change loads them beside the current ones, from its own
 *    model file, while it goes on computing; it answers prepare-ok.
 * 3. Activate, at the next token boundary after all are ready: each sends activate-ok once it
 *    computes the new groups, carrying over the KV cache of the attention groups it keeps. Only
 *    then does the coordinator send the next token's inputs, so no input meets the old groups.
 *    A worker that does not answer in time is cut off (it rejoins with the new placement).
 */
import { HaloError, describeError, type Clock } from "../base/index.js";
import type { ControlMessage } from "../net/index.js";
import { validatePlacement, type GroupKind, type GroupLayout, type Placement } from "../partition/index.js";
import type { DeviceProfile } from "../scheduler/index.js";
import { ReplanWatch, describeTrigger, type ReplanPolicy, type ReplanTrigger, type WorkerSample } from "./replanWatch.js";
import { planGroupRanges, type WorkerLink } from "./workerLink.js";

/** (nLayers) per kind, the device a group must stay on, or -1 where the scheduler is free. */
export type PinnedGroups = Array<Record<GroupKind, number[]>>;

/** What the scheduler is told besides the profiles when it plans during generation. */
export interface ReplanContext {
  readonly current: Placement;
  readonly pinned: PinnedGroups;
  /** Workers whose groups cannot change (all pinned): the scheduler must not give them new ones either. */
  readonly frozen: readonly number[];
  readonly trigger: ReplanTrigger;
}

/** A plan the scheduler chose, with its cost and the current placement's under the same profiles when it knows them. */
export interface PlannedPlacement<S> {
  placement: Placement;
  schedule?: S;
  costMs?: number;
  currentCostMs?: number;
}

/** One live re-plan, as reported in stats. */
export interface LiveReplan {
  readonly trigger: string;
  /** The first token position computed with the new placement. */
  readonly position: number;
  readonly groupsMoved: number;
  /** Workers that loaded new groups. */
  readonly workersChanged: number;
  /** From the decision until every worker had its new groups loaded (tokens went on meanwhile). */
  readonly prepareMs: number;
  /** The stall at the token boundary: activate sent until every worker answered. */
  readonly activateMs: number;
  /** Cost of the new and the old placement under the profiles it was planned from, when known. */
  readonly costMs?: number;
  readonly previousCostMs?: number;
}

/** A re-plan needs this much gain (cost down by 5%) when it is only drift: moving groups is not free. */
export const MIN_DRIFT_GAIN = 0.05;
const PREPARE_TIMEOUT_MS = 300_000;

export interface ReplanHost<S> {
  readonly layout: GroupLayout;
  readonly nLayers: number;
  readonly links: readonly WorkerLink[];
  readonly clock: Clock;
  placement(): Placement;
  /** Every device's profile now, coordinator first. */
  profiles(): Array<DeviceProfile | null>;
  /**
   * Asks a worker to measure itself again (its compute under whatever slows it now); settles when
   * it answered, failed or timed out. Called on drift before planning: with the compute figures of
   * join, a slowed worker whose lateness dropped after a move would look fast again, and get its
   * groups back.
   */
  refreshProfile(device: number): Promise<void>;
  plan(profiles: ReadonlyArray<DeviceProfile | null>, context: ReplanContext): PlannedPlacement<S> | undefined;
  /** Switches the coordinator to the new placement (its own groups, who may contribute). */
  apply(placement: Placement, schedule: S | undefined): void;
  /** How long to wait for activate-ok before cutting a worker off. */
  activateTimeoutMs(): number;
  log(line: string): void;
}

interface Migration<S> {
  readonly sequence: number;
  readonly trigger: ReplanTrigger;
  readonly planned: PlannedPlacement<S>;
  readonly groupsMoved: number;
  /** The workers loading new groups. */
  readonly workers: readonly WorkerLink[];
  readonly startedMs: number;
  readyMs: number | undefined;
  state: "preparing" | "ready" | "failed";
}

export class LiveReplanner<S> {
  readonly history: LiveReplan[] = [];
  private readonly watch: ReplanWatch;
  private migration: Migration<S> | undefined;
  private sequence = 0;
  private tokens = 0;
  private requested = false;
  private closed = false;
  /** A re-plan is being decided (a drifting worker measuring itself first). */
  private planning = false;
  /** Replies awaited, by `${worker}:${type}:${sequence}`. */
  private readonly replies = new Map<string, (message: ControlMessage | undefined) => void>();

  constructor(private readonly host: ReplanHost<S>, policy: Partial<ReplanPolicy> = {}) {
    this.watch = new ReplanWatch(policy);
    this.watch.planned(this.samples(), 0);
  }

  /** Takes prepare-ok, activate-ok and a worker's HALO_ERR_REPLAN; false for any other message. */
  onMessage(link: WorkerLink, message: ControlMessage): boolean {
    if (message.type === "prepare-ok" || message.type === "activate-ok") {
      this.replies.get(`${link.index}:${message.type}:${message.sequence}`)?.(message);
      return true;
    }
    if (message.type === "error" && message.code === "HALO_ERR_REPLAN") {
      this.host.log(`halo coordinator: worker ${link.index}: ${message.message}`);
      for (const [key, resolve] of this.replies) if (key.startsWith(`${link.index}:prepare-ok:`)) resolve(message);
      return true;
    }
    return false;
  }

  /** Plans again at the next token boundary whatever the watch says (an operator's request, a test). */
  request(): void {
    this.requested = true;
  }

  /** The coordinator is closing: ends every wait (and its timer, which would keep the process alive) and starts no more re-plans. */
  close(): void {
    this.closed = true;
    for (const resolve of [...this.replies.values()]) resolve(undefined);
  }

  /** A worker's connection was lost: nothing more will come from it. */
  onLost(link: WorkerLink): void {
    for (const [key, resolve] of this.replies) if (key.startsWith(`${link.index}:`)) resolve(undefined);
  }

  /** After each token: activate a prepared placement, or see whether to plan again. */
  async afterToken(nextPosition: number): Promise<void> {
    this.tokens++;
    if (this.closed) return;
    const migration = this.migration;
    if (migration?.state === "ready") return this.activate(migration, nextPosition);
    if (migration?.state === "failed") {
      this.migration = undefined;
      this.watch.planned(this.samples(), this.tokens);
    }
    if (this.migration !== undefined || this.planning) return;
    const trigger = this.requested ? { kind: "request" as const } : this.watch.check(this.samples(), this.tokens);
    this.requested = false;
    if (trigger === undefined) return;
    if (trigger.kind !== "drift") {
      this.start(trigger);
      return;
    }
    // Tokens go on while the drifting worker measures itself.
    this.planning = true;
    void this.host.refreshProfile(trigger.device).finally(() => {
      this.planning = false;
      if (!this.closed) this.start(trigger);
    });
  }

  private samples(): WorkerSample[] {
    return this.host.links.map((link) => {
      const stats = link.stats.snapshot();
      return { active: link.state === "active", rttMs: stats.rttMsEwma, lossRatio: stats.lossRatio };
    });
  }

  private start(trigger: ReplanTrigger): void {
    const { host } = this;
    const current = host.placement();
    // Whatever comes of it, drift is measured afresh from here: a plan that changes nothing must not be asked for again every token.
    this.watch.planned(this.samples(), this.tokens);
    const frozen = host.links.filter((l) => l.state === "active" && l.receivesShards).map((l) => l.index);
    const isUp = (device: number): boolean => device === 0 || host.links[device - 1]!.state === "active";
    const pinned: PinnedGroups = current.layers.map((layer) => ({
      attention: layer.attention.map((d) => (isUp(d) ? d : -1)),
      ffn: layer.ffn.map((d) => (frozen.includes(d) ? d : -1)),
    }));
    const profiles = host.profiles().map((p, device) => (p === null || isUp(device) ? p : { ...p, attentionGroupMs: Infinity, ffnGroupMs: Infinity, memoryBudgetBytes: 0 }));
    let planned: PlannedPlacement<S> | undefined;
    try {
      planned = host.plan(profiles, { current, pinned, frozen, trigger });
      if (planned !== undefined) {
        validatePlacement(planned.placement, host.layout, host.nLayers);
        if (planned.placement.nDevices !== host.links.length + 1) throw new HaloError("HALO_ERR_USAGE", `the planned placement is for ${planned.placement.nDevices} devices; the cluster has ${host.links.length + 1}`);
      }
    } catch (error) {
      host.log(`halo coordinator: re-plan (${describeTrigger(trigger)}) failed: ${describeError(error)}`);
      return;
    }
    if (planned === undefined) return;
    const moved = groupsMoved(current, planned.placement);
    const { costMs, currentCostMs } = planned;
    const gainTooSmall = trigger.kind === "drift" && costMs !== undefined && currentCostMs !== undefined && !(costMs < currentCostMs * (1 - MIN_DRIFT_GAIN));
    if (moved === 0 || gainTooSmall) {
      host.log(`halo coordinator: ${describeTrigger(trigger)}; the placement stays (${moved === 0 ? "the plan moves nothing" : `${costMs!.toFixed(1)} ms against ${currentCostMs!.toFixed(1)} ms now`})`);
      return;
    }
    const sequence = ++this.sequence;
    const workers = host.links.filter((link) => link.state === "active" && !sameGroups(current, planned.placement, link.index));
    const migration: Migration<S> = { sequence, trigger, planned, groupsMoved: moved, workers, startedMs: host.clock.now(), readyMs: undefined, state: "preparing" };
    this.migration = migration;
    host.log(`halo coordinator: ${describeTrigger(trigger)}: re-planning moves ${moved} groups; ${workers.length} workers load theirs while generation goes on`);
    void Promise.all(workers.map((link) => this.prepare(link, sequence, planned.placement))).then((answers) => {
      const refused = answers.some((ok) => !ok);
      migration.state = refused ? "failed" : "ready";
      migration.readyMs = host.clock.now();
      if (refused) host.log(`halo coordinator: re-plan ${sequence} abandoned: a worker could not prepare its groups`);
    });
  }

  /** Sends prepare; true once prepare-ok came (or the worker was lost: it gets the new placement when it rejoins), false on a refusal or timeout. */
  private async prepare(link: WorkerLink, sequence: number, placement: Placement): Promise<boolean> {
    const answer = this.reply(link, "prepare-ok", sequence, PREPARE_TIMEOUT_MS);
    try {
      link.connection.send({ type: "prepare", sequence, groups: planGroupRanges(placement, link.index), ffnBlockSize: this.host.layout.ffnBlockSize });
    } catch {
      this.onLost(link);
    }
    const message = await answer;
    if (message === "timeout") return false;
    return message === undefined ? link.state !== "active" : message.type === "prepare-ok";
  }

  private async activate(migration: Migration<S>, position: number): Promise<void> {
    const { host } = this;
    this.migration = undefined;
    const current = host.placement();
    // A worker that joined again while the others prepared holds groups of the old placement it was not told to change.
    const unprepared = host.links.find((l) => l.state === "active" && !migration.workers.includes(l) && !sameGroups(current, migration.planned.placement, l.index));
    if (unprepared !== undefined) {
      host.log(`halo coordinator: re-plan ${migration.sequence} abandoned: worker ${unprepared.index} joined meanwhile`);
      this.watch.planned(this.samples(), this.tokens);
      return;
    }
    const started = host.clock.now();
    const timeoutMs = host.activateTimeoutMs();
    await Promise.all(migration.workers.filter((l) => l.state === "active").map(async (link) => {
      const answer = this.reply(link, "activate-ok", migration.sequence, timeoutMs);
      try {
        link.connection.send({ type: "activate", sequence: migration.sequence, position });
      } catch {
        this.onLost(link);
      }
      // Computing the old groups would corrupt the sums: a worker that did not switch is cut off and rejoins with the new placement.
      if ((await answer) === "timeout") {
        host.log(`halo coordinator: worker ${link.index} did not activate re-plan ${migration.sequence} within ${timeoutMs} ms; cutting it off`);
        link.connection.destroy();
      }
    }));
    host.apply(migration.planned.placement, migration.planned.schedule);
    const record: LiveReplan = {
      trigger: describeTrigger(migration.trigger), position, groupsMoved: migration.groupsMoved, workersChanged: migration.workers.length,
      prepareMs: migration.readyMs! - migration.startedMs, activateMs: host.clock.now() - started,
      ...(migration.planned.costMs === undefined ? {} : { costMs: migration.planned.costMs }),
      ...(migration.planned.currentCostMs === undefined ? {} : { previousCostMs: migration.planned.currentCostMs }),
    };
    this.history.push(record);
    host.log(`halo coordinator: re-plan ${migration.sequence} in effect from position ${position}: ${record.groupsMoved} groups moved, loaded in ${record.prepareMs.toFixed(0)} ms while generating, ${record.activateMs.toFixed(1)} ms stall to switch`);
    this.watch.planned(this.samples(), this.tokens);
  }

  private reply(link: WorkerLink, type: "prepare-ok" | "activate-ok", sequence: number, timeoutMs: number): Promise<ControlMessage | undefined | "timeout"> {
    const key = `${link.index}:${type}:${sequence}`;
    return new Promise((resolve) => {
      const timer = this.host.clock.setTimer(timeoutMs, () => finish("timeout"));
      const finish = (answer: ControlMessage | undefined | "timeout"): void => {
        timer.cancel();
        this.replies.delete(key);
        resolve(answer);
      };
      this.replies.set(key, finish);
    });
  }
}

export function groupsMoved(from: Placement, to: Placement): number {
  let moved = 0;
  from.layers.forEach((layer, l) => {
    for (const kind of ["attention", "ffn"] as const) layer[kind].forEach((device, g) => (moved += to.layers[l]![kind][g] === device ? 0 : 1));
  });
  return moved;
}

/** Whether `device` holds the same groups under both placements. */
function sameGroups(a: Placement, b: Placement, device: number): boolean {
  return a.layers.every((layer, l) => (["attention", "ffn"] as const).every((kind) => layer[kind].every((d, g) => (d === device) === (b.layers[l]![kind][g] === device))));
}
