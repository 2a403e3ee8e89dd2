/** bench:report's SVG plots, drawn with the CLI's line-plot helper (src/cli/linePlot.ts). */
import { linePlot, type PlotSeries } from "../../src/cli/linePlot.js";
import { MODE_LABELS, SPEED_MODES, type SpeedMode } from "./results.js";
import { PAPER_TARGETS, type FidelityStat, type ReportSummary, type SpeedStat } from "./summary.js";

const percent = (v: number): string => `${v}%`;
/** One colour per mode in every plot, whichever modes a plot leaves out. */
const MODE_COLOURS = { strict: "#d55e00", relaxed: "#0072b2", predictor: "#cc79a7", halo: "#009e73" } as const satisfies Record<SpeedMode, string>;

/** File name → SVG text. */
export function renderPlots(stats: readonly SpeedStat[], fidelity: readonly FidelityStat[], summary: ReportSummary): Record<string, string> {
  const devices = summary.devices;
  if (devices === undefined) return {};
  const at = (mode: SpeedMode): SpeedStat[] => stats.filter((s) => s.devices === devices && s.mode === mode);
  const modes = SPEED_MODES.filter((mode) => at(mode).length > 0);
  const strictTpot = (loss: number): number => at("strict").find((s) => s.lossPercent === loss)?.tpotMeanMs ?? NaN;
  const plots: Record<string, string> = {
    "tpot-vs-loss.svg": linePlot({
      title: `Time per output token, ${devices} devices`, xLabel: "packet loss on every worker link", yLabel: "TPOT, ms (mean)", xFormat: percent,
      series: modes.map((mode) => ({ label: MODE_LABELS[mode], colour: MODE_COLOURS[mode], points: at(mode).map((s) => [s.lossPercent, s.tpotMeanMs] as const) })),
    }),
    "speedup-vs-loss.svg": linePlot({
      title: `Speedup over strict TCP, ${devices} devices`, xLabel: "packet loss on every worker link", yLabel: "tok/s ÷ strict TCP's", xFormat: percent,
      yFormat: (v) => `${v.toFixed(2)}x`, yMin: 0,
      references: [{ y: PAPER_TARGETS.speedupAt5, label: `paper: ${PAPER_TARGETS.speedupAt5}x at 5% loss` }, { y: 1, label: "strict TCP" }],
      series: modes.filter((m) => m !== "strict").map((mode) => ({ label: MODE_LABELS[mode], colour: MODE_COLOURS[mode], points: at(mode).map((s) => [s.lossPercent, strictTpot(s.lossPercent) / s.tpotMeanMs] as const) })),
    }),
  };
  const fidelityDevices = summary.fidelity?.devices ?? Math.max(...fidelity.map((f) => f.devices));
  const fidelityModes = (["relaxed", "predictor", "halo"] as const).filter((mode) => fidelity.some((f) => f.mode === mode && f.devices === fidelityDevices));
  const fidelitySeries = (value: (f: FidelityStat) => number): PlotSeries[] =>
    fidelityModes.map((mode) => ({ label: MODE_LABELS[mode], colour: MODE_COLOURS[mode], points: fidelity.filter((f) => f.mode === mode && f.devices === fidelityDevices).map((f) => [f.lossPercent, value(f)] as const) }));
  if (fidelityModes.length > 0) {
    plots["perplexity-vs-loss.svg"] = linePlot({
      title: `Perplexity above the dense model, stories260K, ${fidelityDevices} devices`, xLabel: "packet loss on every worker link", yLabel: "perplexity vs dense, %", xFormat: percent,
      yFormat: (v) => `${v.toFixed(1)}%`, references: [{ y: PAPER_TARGETS.fidelityLossPercent, label: `paper: < ${PAPER_TARGETS.fidelityLossPercent}% at 5% loss` }],
      series: fidelitySeries((f) => f.perplexityIncreasePercent),
    });
    plots["agreement-vs-loss.svg"] = linePlot({
      title: `Greedy top-1 agreement with the dense model, stories260K, ${fidelityDevices} devices`, xLabel: "packet loss on every worker link", yLabel: "top-1 agreement, %", xFormat: percent,
      yFormat: (v) => `${v.toFixed(1)}%`, yMax: 100.5,
      series: fidelitySeries((f) => 100 * f.top1Agreement),
    });
  }
  const deviceCounts = [...new Set(stats.map((s) => s.devices))].sort((a, b) => a - b);
  if (deviceCounts.length > 1 || deviceCounts[0] !== 1) {
    const loss = summary.lossPercent ?? 0;
    const single = stats.find((s) => s.mode === "single");
    plots["scaling-vs-devices.svg"] = linePlot({
      title: `Scaling at ${loss}% loss${single === undefined ? "" : " (1 device: no network)"}`, xLabel: "devices", yLabel: "tok/s", logX: true, yMin: 0,
      series: modes.map((mode) => ({
        label: MODE_LABELS[mode], colour: MODE_COLOURS[mode],
        points: [...(single === undefined ? [] : [[1, single.tokensPerSecond] as const]), ...stats.filter((s) => s.mode === mode && s.lossPercent === loss).map((s) => [s.devices, s.tokensPerSecond] as const)],
      })),
    });
  }
  return plots;
}
