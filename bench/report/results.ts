/**
 * bench:report's results file: every measured cell with the hash of the settings it was measured
 * under, rewritten after each cell so that an interrupted run resumes where it stopped (a cell
 * whose key and hash are already there is not measured again), and the progress line.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";

/** The four configurations of DESIGN.md's evaluation protocol, each adding one mechanism; `single` is one device without a network. */
export const SPEED_MODES = ["strict", "relaxed", "predictor", "halo"] as const;
export type SpeedMode = (typeof SPEED_MODES)[number];

export const MODE_LABELS = {
  strict: "strict TCP",
  relaxed: "relaxed, uniform",
  predictor: "relaxed + predictor",
  halo: "full halo",
  single: "one device",
} as const satisfies Record<SpeedMode | "single", string>;

export interface SpeedCell {
  key: string;
  configHash: string;
  devices: number;
  lossPercent: number;
  mode: SpeedMode | "single";
  repeat: number;
  /** Per decode step (the prefill's first token left out); empty for `single`, which reports its mean only. */
  tpotMs: number[];
  tpotMeanMs: number;
  droppedContributions: number;
  expectedContributions: number;
  criticalContributions: number;
  wireDrops: number;
  lostWorkers: number[];
  /** Groups held by each device, coordinator first (its placement). */
  groupsPerDevice: number[];
  wallMs: number;
  commit: string;
}

/** One `halo eval --cluster N --loss P --placement X` run: the relaxed protocol on stories260K against the dense model. */
export interface FidelityCell {
  key: string;
  configHash: string;
  devices: number;
  lossPercent: number;
  placement: "uniform" | "halo";
  densePerplexity: number;
  rows: Array<{ critical: "none" | "predictor"; perplexity: number; top1Agreement: number; droppedContributions: number; expectedContributions: number; criticalContributions: number }>;
  /** The eval's own drop table (predictor, oracle, static, random at fixed drop fractions). */
  dropPolicies: Array<{ policy: string; dropPercent: number; perplexity: number; top1Agreement: number }>;
  commit: string;
}

export interface ResultsFile {
  version: 1;
  run: Record<string, string | number>;
  config: unknown;
  configHash: { speed: string; fidelity: string };
  speed: SpeedCell[];
  fidelity: FidelityCell[];
  /** Written with the last cell; what the summary printed. */
  summary?: unknown;
}

export function configHash(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex").slice(0, 12);
}

export const speedKey = (devices: number, lossPercent: number, mode: string, repeat: number): string => `${devices}/${lossPercent}/${mode}/${repeat}`;
export const fidelityKey = (devices: number, lossPercent: number, placement: string): string => `${devices}/${lossPercent}/${placement}`;

/** The cells of an earlier run of any settings (only those with the current hash count as done), or an empty file. */
export function loadResults(path: string, fresh: Omit<ResultsFile, "speed" | "fidelity">): ResultsFile {
  if (!existsSync(path)) return { ...fresh, speed: [], fidelity: [] };
  const old = JSON.parse(readFileSync(path, "utf8")) as Partial<ResultsFile>;
  // Cells of other settings stay in the file, so switching back and forth loses nothing; only the current hash's are used.
  return { ...fresh, speed: old.speed ?? [], fidelity: old.fidelity ?? [] };
}

export function saveResults(path: string, results: ResultsFile): void {
  writeFileSync(`${path}.tmp`, JSON.stringify(results, null, 2) + "\n");
  renameSync(`${path}.tmp`, path);
}

/** Replaces the cell with the same key and hash, or adds it. */
export function putCell<T extends { key: string; configHash: string }>(cells: T[], cell: T): void {
  const at = cells.findIndex((c) => c.key === cell.key && c.configHash === cell.configHash);
  if (at >= 0) cells[at] = cell;
  else cells.push(cell);
}

export function hasCell(cells: ReadonlyArray<{ key: string; configHash: string }>, key: string, hash: string): boolean {
  return cells.some((c) => c.key === key && c.configHash === hash);
}

const duration = (ms: number): string => {
  const s = Math.round(ms / 1000);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
};

/** Cells of one kind cost alike; the kinds differ by an order of magnitude (a run of N processes against an eval in one). */
export type CellKind = "speed" | "fidelity";

/**
 * A progress bar with an ETA on stderr: redrawn in place on a terminal, one line per step
 * otherwise (a log or a test). The ETA is, per kind of cell, the mean time of the cells measured
 * so far times the cells left (the overall mean for a kind not measured yet); resumed cells cost
 * nothing and do not count.
 */
export class Progress {
  private readonly left: Record<CellKind, number>;
  private readonly measured: Record<CellKind, { n: number; ms: number }> = { speed: { n: 0, ms: 0 }, fidelity: { n: 0, ms: 0 } };
  private readonly total: number;
  private done = 0;
  private readonly started = performance.now();

  constructor(totals: Record<CellKind, number>, private readonly write: (text: string) => void, private readonly isTty: boolean) {
    this.left = { ...totals };
    this.total = totals.speed + totals.fidelity;
  }

  /** Marks a cell done; `ms` is undefined when it was resumed from the file. */
  step(kind: CellKind, label: string, ms: number | undefined): void {
    this.done++;
    this.left[kind]--;
    if (ms !== undefined) {
      this.measured[kind].n++;
      this.measured[kind].ms += ms;
    }
    const all = { n: this.measured.speed.n + this.measured.fidelity.n, ms: this.measured.speed.ms + this.measured.fidelity.ms };
    const meanOf = (k: CellKind): number => (this.measured[k].n > 0 ? this.measured[k].ms / this.measured[k].n : all.ms / all.n);
    const width = 24;
    const filled = Math.round((this.done / Math.max(1, this.total)) * width);
    const eta = all.n === 0 ? "?" : duration(meanOf("speed") * this.left.speed + meanOf("fidelity") * this.left.fidelity);
    const line = `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${this.done}/${this.total} ${label}${ms === undefined ? " (resumed)" : ""} | elapsed ${duration(performance.now() - this.started)}, ETA ${eta}`;
    this.write(this.isTty ? `\r\x1b[K${line}${this.done === this.total ? "\n" : ""}` : `${line}\n`);
  }
}
