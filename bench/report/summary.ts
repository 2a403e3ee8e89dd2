/**
 * bench:report's numbers from its cells: per (devices, loss, mode) statistics, the headline
 * ratios beside the paper's targets, the ablation (each mechanism's factor and its share of the
 * whole speedup), and the markdown tables.
 */
import { groupByCell, tpotStats, type TpotStats } from "../cluster/report.js";
import { MODE_LABELS, SPEED_MODES, type FidelityCell, type SpeedCell, type SpeedMode } from "./results.js";

/** The paper's claims (DESIGN.md, "Known"), printed beside what was measured. */
export const PAPER_TARGETS = { speedupAt5: 3.41, speedupAt0: 1.12, fidelityLossPercent: 1 } as const;

export interface SpeedStat extends TpotStats {
  devices: number;
  lossPercent: number;
  mode: SpeedMode | "single";
  nRuns: number;
  droppedPercent: number;
  criticalPercent: number;
  wireDrops: number;
  lostWorkers: number;
  groupsPerDevice: number[];
}

export interface FidelityStat {
  devices: number;
  lossPercent: number;
  mode: Exclude<SpeedMode, "strict">;
  perplexity: number;
  densePerplexity: number;
  /** Perplexity above the dense model's, in percent. */
  perplexityIncreasePercent: number;
  top1Agreement: number;
  droppedPercent: number;
  /** Contributions that had to cross the network; 0 when the placement kept every group on the coordinator. */
  expectedContributions: number;
}

export function speedStats(cells: readonly SpeedCell[]): SpeedStat[] {
  const stats = groupByCell(cells).map((group): SpeedStat => {
    const first = group[0]!;
    const tpot = group.flatMap((c) => c.tpotMs);
    const runMeans = group.map((c) => c.tpotMeanMs);
    // One device reports only its mean per run: no percentiles.
    const timing = tpot.length > 0 ? tpotStats(tpot, runMeans) : { ...tpotStats(runMeans, runMeans), tpotP50Ms: NaN, tpotP99Ms: NaN };
    const expected = group.reduce((sum, c) => sum + c.expectedContributions, 0);
    const share = (field: "droppedContributions" | "criticalContributions"): number => (expected === 0 ? 0 : (100 * group.reduce((sum, c) => sum + c[field], 0)) / expected);
    return {
      devices: first.devices, lossPercent: first.lossPercent, mode: first.mode, nRuns: group.length, ...timing,
      droppedPercent: share("droppedContributions"), criticalPercent: share("criticalContributions"),
      wireDrops: group.reduce((sum, c) => sum + c.wireDrops, 0), lostWorkers: group.reduce((sum, c) => sum + c.lostWorkers.length, 0), groupsPerDevice: group.at(-1)!.groupsPerDevice,
    };
  });
  const order = (s: SpeedStat): number => ["single", ...SPEED_MODES].indexOf(s.mode);
  return stats.sort((a, b) => a.devices - b.devices || a.lossPercent - b.lossPercent || order(a) - order(b));
}

/** Each eval cell's rows as the modes they stand for: uniform placement without and with critical sets, and halo placement with them. */
export function fidelityStats(cells: readonly FidelityCell[]): FidelityStat[] {
  const stats: FidelityStat[] = [];
  for (const cell of cells) {
    for (const row of cell.rows) {
      const mode = cell.placement === "halo" ? (row.critical === "predictor" ? "halo" : undefined) : row.critical === "none" ? "relaxed" : "predictor";
      if (mode === undefined) continue;
      stats.push({
        devices: cell.devices, lossPercent: cell.lossPercent, mode, perplexity: row.perplexity, densePerplexity: cell.densePerplexity,
        perplexityIncreasePercent: 100 * (row.perplexity / cell.densePerplexity - 1), top1Agreement: row.top1Agreement,
        droppedPercent: row.expectedContributions === 0 ? 0 : (100 * row.droppedContributions) / row.expectedContributions, expectedContributions: row.expectedContributions,
      });
    }
  }
  return stats.sort((a, b) => a.devices - b.devices || a.lossPercent - b.lossPercent || SPEED_MODES.indexOf(a.mode) - SPEED_MODES.indexOf(b.mode));
}

export interface ReportSummary {
  devices: number | undefined;
  lossPercent: number | undefined;
  fullHaloOverStrict: number | undefined;
  fullHaloOverStrictAt0: number | undefined;
  /** TPOT at the headline loss ÷ TPOT at 0%, per mode. */
  lossTolerance: Partial<Record<SpeedMode, number>>;
  /** Each mechanism's tok/s factor at the headline point, and its share of the log of the whole speedup. */
  ablation: Array<{ step: string; factor: number; sharePercent: number }>;
  fidelity: FidelityStat | undefined;
  lines: string[];
}

const x = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? "–" : `${v.toFixed(2)}x`);

/** The headline point: 8 devices and 5% loss as in the paper, else the most devices and the loss nearest 5%. */
function headline(stats: readonly SpeedStat[]): { devices: number | undefined; lossPercent: number | undefined } {
  const clustered = stats.filter((s) => s.devices > 1);
  const devices = clustered.some((s) => s.devices === 8) ? 8 : Math.max(...clustered.map((s) => s.devices));
  const losses = [...new Set(clustered.filter((s) => s.devices === devices && s.lossPercent > 0).map((s) => s.lossPercent))];
  if (!Number.isFinite(devices)) return { devices: undefined, lossPercent: undefined };
  const lossPercent = losses.sort((a, b) => Math.abs(a - 5) - Math.abs(b - 5) || b - a)[0];
  return { devices, lossPercent };
}

export function summarize(stats: readonly SpeedStat[], fidelity: readonly FidelityStat[], budgetNote: string, baselineNote: string): ReportSummary {
  const { devices, lossPercent } = headline(stats);
  const tpot = (mode: SpeedMode, loss: number | undefined): number | undefined => stats.find((s) => s.devices === devices && s.lossPercent === loss && s.mode === mode)?.tpotMeanMs;
  const over = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined || b === undefined ? undefined : a / b);
  const fullHaloOverStrict = over(tpot("strict", lossPercent), tpot("halo", lossPercent));
  const fullHaloOverStrictAt0 = over(tpot("strict", 0), tpot("halo", 0));
  const lossTolerance: Partial<Record<SpeedMode, number>> = {};
  for (const mode of SPEED_MODES) {
    const ratio = over(tpot(mode, lossPercent), tpot(mode, 0));
    if (ratio !== undefined) lossTolerance[mode] = ratio;
  }
  const steps: Array<[string, SpeedMode, SpeedMode]> = [["relaxed vs strict", "strict", "relaxed"], ["+ predictor", "relaxed", "predictor"], [`+ scheduler${budgetNote === "" ? "" : " and memory budget"}`, "predictor", "halo"]];
  const factors = steps.map(([step, from, to]) => ({ step, factor: over(tpot(from, lossPercent), tpot(to, lossPercent)) }));
  const total = Math.log(fullHaloOverStrict ?? NaN);
  const ablation = factors.filter((f): f is { step: string; factor: number } => f.factor !== undefined).map((f) => ({ ...f, sharePercent: (100 * Math.log(f.factor)) / total }));
  const fidelityDevices = fidelity.some((f) => f.devices === devices) ? devices : Math.max(...fidelity.map((f) => f.devices));
  const full = fidelity.find((f) => f.devices === fidelityDevices && f.lossPercent === lossPercent && f.mode === "halo");
  const at = devices === undefined ? "no cluster cells" : `${devices} devices, ${lossPercent ?? "?"}% loss`;
  const haloGroups = stats.find((s) => s.devices === devices && s.lossPercent === lossPercent && s.mode === "halo")?.groupsPerDevice ?? [];
  const fidelityNote = full === undefined ? "" : full.expectedContributions === 0 ? " (its placement kept every group on the coordinator: nothing crossed the network)"
    : `, ${full.droppedPercent.toFixed(2)}% of ${full.expectedContributions} contributions dropped`;
  const lines = [
    `headline (${at}): full halo ÷ strict TCP = ${x(fullHaloOverStrict)} tok/s   [paper: ≥ ${PAPER_TARGETS.speedupAt5}x at 5% loss, 8 Raspberry Pis]` +
      (haloGroups.length === 0 ? "" : `; full halo's placement: groups per device ${haloGroups.join("/")}, coordinator first`),
    `at 0% loss: full halo ÷ strict TCP = ${x(fullHaloOverStrictAt0)}   [summaries: ≈ ${PAPER_TARGETS.speedupAt0}x]`,
    `loss tolerance, TPOT(${lossPercent ?? "?"}%) ÷ TPOT(0%): ${SPEED_MODES.map((m) => `${MODE_LABELS[m]} ${x(lossTolerance[m])}`).join(", ")}   [paper: full halo "comparable to optimal conditions"]`,
    `ablation at ${at} (tok/s factor, share of the log speedup): ${ablation.map((a) => `${a.step} ${x(a.factor)} (${Number.isFinite(a.sharePercent) ? a.sharePercent.toFixed(0) : "–"}%)`).join("; ") || "–"}${budgetNote}`,
    full === undefined ? "fidelity: no cell at the headline point" :
      `fidelity (stories260K, ${full.devices} devices, ${full.lossPercent}% loss, full halo): perplexity ${full.perplexity.toFixed(3)} vs dense ${full.densePerplexity.toFixed(3)} = ${full.perplexityIncreasePercent >= 0 ? "+" : ""}${full.perplexityIncreasePercent.toFixed(2)}%, top-1 agreement ${(100 * full.top1Agreement).toFixed(1)}%${fidelityNote}   [paper: < ${PAPER_TARGETS.fidelityLossPercent}% worse at 5% loss]`,
    baselineNote,
  ];
  return { devices, lossPercent, fullHaloOverStrict, fullHaloOverStrictAt0, lossTolerance, ablation, fidelity: full, lines };
}

function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  return [`| ${header.join(" | ")} |`, `| ${header.map(() => "---").join(" | ")} |`, ...rows.map((row) => `| ${row.join(" | ")} |`)].join("\n");
}

const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(1) : "–");

export function renderTables(stats: readonly SpeedStat[], fidelity: readonly FidelityStat[], dropPolicies: FidelityCell | undefined, speedModel: string): string {
  const find = (devices: number, loss: number, mode: string): SpeedStat | undefined => stats.find((s) => s.devices === devices && s.lossPercent === loss && s.mode === mode);
  const speed = table(
    ["devices", "loss %", "mode", "TPOT mean ms", "p50 ms", "p99 ms", "tok/s", "× strict", "TPOT ÷ at 0%", "dropped %", "critical %", "wire drops", "lost workers", "groups per device"],
    stats.map((s) => {
      const strict = find(s.devices, s.lossPercent, "strict");
      const atZero = find(s.devices, 0, s.mode);
      return [
        String(s.devices), s.mode === "single" ? "–" : String(s.lossPercent), MODE_LABELS[s.mode], ms(s.tpotMeanMs), ms(s.tpotP50Ms), ms(s.tpotP99Ms),
        `${s.tokensPerSecond.toFixed(2)}${s.nRuns > 1 ? ` ± ${s.tokensPerSecondSd.toFixed(2)}` : ""}`,
        strict === undefined || s.mode === "strict" || s.mode === "single" ? "" : x(strict.tpotMeanMs / s.tpotMeanMs),
        atZero === undefined || s.mode === "single" ? "" : x(s.tpotMeanMs / atZero.tpotMeanMs),
        s.droppedPercent.toFixed(2), s.criticalPercent.toFixed(1), String(s.wireDrops), String(s.lostWorkers), s.groupsPerDevice.join("/"),
      ];
    }),
  );
  const modes = [...new Set(stats.filter((s) => s.devices > 1).map((s) => s.mode))];
  const deviceCounts = [...new Set(stats.map((s) => s.devices))].sort((a, b) => a - b);
  const losses = [...new Set(stats.filter((s) => s.devices > 1).map((s) => s.lossPercent))].sort((a, b) => a - b);
  const scaling = table(
    ["loss %", "mode", ...deviceCounts.map((n) => `tok/s, ${n} device${n === 1 ? "" : "s"}`)],
    losses.flatMap((loss) => modes.map((mode) => [String(loss), MODE_LABELS[mode], ...deviceCounts.map((n) => (n === 1 ? find(1, 0, "single") : find(n, loss, mode))?.tokensPerSecond.toFixed(2) ?? "–")])),
  );
  const fidelityTable = table(
    ["devices", "loss %", "mode", "perplexity", "vs dense", "top-1 agreement", "contributions dropped %"],
    fidelity.map((f) => [String(f.devices), String(f.lossPercent), MODE_LABELS[f.mode], f.perplexity.toFixed(4), `${f.perplexityIncreasePercent >= 0 ? "+" : ""}${f.perplexityIncreasePercent.toFixed(2)}%`, `${(100 * f.top1Agreement).toFixed(1)}%`, f.droppedPercent.toFixed(2)]),
  );
  const policies = dropPolicies === undefined ? "" : `\n\n### Which groups to drop (stories260K, every token's lowest-scored groups dropped; halo eval)\n\n` + table(
    ["dropped", "chosen by", "perplexity", "vs dense", "top-1 agreement"],
    dropPolicies.dropPolicies.map((p) => [`${p.dropPercent}%`, p.policy, p.perplexity.toFixed(4), `${(100 * (p.perplexity / dropPolicies.densePerplexity - 1)).toFixed(1)}%`, `${(100 * p.top1Agreement).toFixed(1)}%`]),
  );
  return `### Speed (${speedModel}, one network namespace per device)\n\n${speed}\n\n### Scaling with the device count\n\n${scaling}\n\n` +
    `### Fidelity (stories260K, the relaxed protocol at emulated loss; strict is exact by construction)\n\n${fidelityTable}${policies}\n`;
}
