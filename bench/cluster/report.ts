/** bench:cluster's statistics and tables: pooled per-token times per (devices, loss, mode), and the ratios that compare them. */
import { mean, stddev } from "../report.js";

export interface RunRecord {
  devices: number;
  lossPercent: number;
  mode: "relaxed" | "strict";
  repeat: number;
  /** Decode steps only (the first token, which includes prefill, is left out). */
  tpotMs: number[];
  droppedContributions: number;
  expectedContributions: number;
  lostWorkers: number[];
  /** Packets nft dropped on the wire during this run. */
  wireDrops: number;
  syncWaitMs: number;
  wallMs: number;
}

/** Per-token time statistics pooled over a cell's repeats. */
export interface TpotStats {
  tpotMeanMs: number;
  tpotP50Ms: number;
  tpotP99Ms: number;
  /** Decode tok/s = 1000 / mean TPOT, with its standard deviation across repeats. */
  tokensPerSecond: number;
  tokensPerSecondSd: number;
}

export interface CellSummary extends TpotStats {
  devices: number;
  lossPercent: number;
  mode: "relaxed" | "strict";
  nRuns: number;
  nTokens: number;
  droppedPercent: number;
  wireDrops: number;
  lostWorkers: number;
}

/** Records grouped by (devices, loss, mode), in first-seen order. */
export function groupByCell<T extends { devices: number; lossPercent: number; mode: string }>(records: readonly T[]): T[][] {
  const cells = new Map<string, T[]>();
  for (const record of records) {
    const key = `${record.devices}/${record.lossPercent}/${record.mode}`;
    cells.set(key, [...(cells.get(key) ?? []), record]);
  }
  return [...cells.values()];
}

/** Pooled statistics of every decode step's time (tpotMs) and of each repeat's mean (runMeanMs). */
export function tpotStats(tpotMs: readonly number[], runMeanMs: readonly number[]): TpotStats {
  const meanMs = mean(tpotMs);
  return {
    tpotMeanMs: meanMs, tpotP50Ms: percentile(tpotMs, 50), tpotP99Ms: percentile(tpotMs, 99),
    tokensPerSecond: 1000 / meanMs, tokensPerSecondSd: stddev(runMeanMs.map((ms) => 1000 / ms)),
  };
}

/** Nearest-rank percentile: the smallest value with at least p% of the values at or below it. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

export function summarize(runs: readonly RunRecord[]): CellSummary[] {
  return groupByCell(runs).map((group) => {
    const first = group[0]!;
    const tpot = group.flatMap((run) => run.tpotMs);
    const expected = group.reduce((sum, run) => sum + run.expectedContributions, 0);
    return {
      devices: first.devices,
      lossPercent: first.lossPercent,
      mode: first.mode,
      nRuns: group.length,
      nTokens: tpot.length,
      ...tpotStats(tpot, group.map((run) => mean(run.tpotMs))),
      droppedPercent: expected === 0 ? 0 : (100 * group.reduce((sum, run) => sum + run.droppedContributions, 0)) / expected,
      wireDrops: group.reduce((sum, run) => sum + run.wireDrops, 0),
      lostWorkers: group.reduce((sum, run) => sum + run.lostWorkers.length, 0),
    };
  });
}

function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  return [`| ${header.join(" | ")} |`, `| ${header.map(() => "---").join(" | ")} |`, ...rows.map((row) => `| ${row.join(" | ")} |`)].join("\n");
}

const ratio = (a: number | undefined, b: number | undefined): string => (a === undefined || b === undefined ? "–" : (a / b).toFixed(2));

export function renderReport(cells: readonly CellSummary[]): string {
  const find = (devices: number, lossPercent: number, mode: string): CellSummary | undefined => cells.find((c) => c.devices === devices && c.lossPercent === lossPercent && c.mode === mode);
  const main = table(
    ["devices", "loss %", "mode", "TPOT mean ms", "TPOT p50 ms", "TPOT p99 ms", "tok/s", "dropped contrib. %", "wire drops", "lost workers", "relaxed÷strict tok/s", "TPOT ÷ at 0%"],
    cells.map((c) => {
      const other = find(c.devices, c.lossPercent, c.mode === "relaxed" ? "strict" : "relaxed");
      const atZero = find(c.devices, 0, c.mode);
      return [
        String(c.devices), String(c.lossPercent), c.mode, c.tpotMeanMs.toFixed(1), c.tpotP50Ms.toFixed(1), c.tpotP99Ms.toFixed(1),
        `${c.tokensPerSecond.toFixed(2)}${c.nRuns > 1 ? ` ± ${c.tokensPerSecondSd.toFixed(2)}` : ""}`, c.droppedPercent.toFixed(2), String(c.wireDrops), String(c.lostWorkers),
        c.mode === "relaxed" ? ratio(c.tokensPerSecond, other?.tokensPerSecond) : "",
        ratio(c.tpotMeanMs, atZero?.tpotMeanMs),
      ];
    }),
  );
  const deviceCounts = [...new Set(cells.map((c) => c.devices))].sort((a, b) => a - b);
  if (deviceCounts.length < 2) return main;
  const [fewest, most] = [deviceCounts[0]!, deviceCounts.at(-1)!];
  const scaling = table(
    ["loss %", "mode", `tok/s ${fewest} devices`, `tok/s ${most} devices`, `${most} ÷ ${fewest}`],
    cells.filter((c) => c.devices === most).map((c) => {
      const base = find(fewest, c.lossPercent, c.mode);
      return [String(c.lossPercent), c.mode, base?.tokensPerSecond.toFixed(2) ?? "–", c.tokensPerSecond.toFixed(2), ratio(c.tokensPerSecond, base?.tokensPerSecond)];
    }),
  );
  return `${main}\n\n${scaling}`;
}
