/**
 * A small self-contained SVG line plot: lines with point markers, a legend, labelled axes and
 * optional horizontal reference lines (a target). Enough for halo eval's plot and the benchmark
 * report; hand-written so that reading a result needs no plotting library.
 */

export interface PlotSeries {
  label: string;
  /** (x, y) in data units; non-finite points are left out (a gap, not a zero). */
  points: ReadonlyArray<readonly [number, number]>;
  /** Defaults to the palette, in order. */
  colour?: string;
  dashed?: boolean;
}

export interface LinePlotOptions {
  title?: string;
  xLabel: string;
  yLabel: string;
  series: readonly PlotSeries[];
  /** Where x ticks go. Defaults to every x that occurs. */
  xTicks?: readonly number[];
  xFormat?: (x: number) => string;
  yFormat?: (y: number) => string;
  /** The y range. Defaults to the data's (and the references'), 5% padded; yMin defaults to 0 when all data are ≥ 0 and close to it. */
  yMin?: number;
  yMax?: number;
  /** Dotted horizontal lines, e.g. a paper's target. */
  references?: ReadonlyArray<{ y: number; label: string }>;
  /** A logarithmic x axis (device counts 1, 2, 4, 8). Defaults to false. */
  logX?: boolean;
  width?: number;
  height?: number;
}

/** Colour-blind-safe (Okabe–Ito). */
const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"];

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

const fmt = (v: number): string => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

export function linePlot(options: LinePlotOptions): string {
  const width = options.width ?? 640;
  const height = options.height ?? 400;
  const legendWidth = Math.min(220, 24 + 7 * Math.max(0, ...options.series.map((s) => s.label.length)));
  const margin = { left: 64, right: legendWidth + 10, top: options.title === undefined ? 20 : 36, bottom: 45 };
  const finite = options.series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
  const xs = finite.map(([x]) => x);
  const ys = [...finite.map(([, y]) => y), ...(options.references ?? []).map((r) => r.y)];
  const tx = (v: number): number => (options.logX === true ? Math.log2(Math.max(v, 1e-9)) : v);
  const xTicks = options.xTicks ?? [...new Set(xs)].sort((a, b) => a - b);
  const [x0, x1] = [Math.min(...xs.map(tx), ...xTicks.map(tx)), Math.max(...xs.map(tx), ...xTicks.map(tx))];
  const [dataMin, dataMax] = ys.length === 0 ? [0, 1] : [Math.min(...ys), Math.max(...ys)];
  const pad = (dataMax - dataMin || Math.abs(dataMax) || 1) * 0.05;
  const yMin = options.yMin ?? (dataMin >= 0 && dataMin < (dataMax - dataMin) * 0.5 ? 0 : dataMin - pad);
  const yMax = options.yMax ?? dataMax + pad;
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const x = (v: number): number => margin.left + (x1 === x0 ? plotW / 2 : ((tx(v) - x0) / (x1 - x0)) * plotW);
  const y = (v: number): number => height - margin.bottom - ((v - yMin) / (yMax - yMin || 1)) * plotH;
  const xFormat = options.xFormat ?? String;
  const yFormat = options.yFormat ?? fmt;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
  ];
  if (options.title !== undefined) out.push(`<text x="${margin.left + plotW / 2}" y="20" font-size="14" text-anchor="middle">${escapeXml(options.title)}</text>`);
  out.push(
    `<line x1="${margin.left}" y1="${height - margin.bottom}" x2="${width - margin.right}" y2="${height - margin.bottom}" stroke="black"/>`,
    `<line x1="${margin.left}" y1="${margin.top}" x2="${margin.left}" y2="${height - margin.bottom}" stroke="black"/>`,
  );
  for (const v of xTicks) out.push(`<text x="${x(v).toFixed(1)}" y="${height - margin.bottom + 18}" font-size="12" text-anchor="middle">${escapeXml(xFormat(v))}</text>`);
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    out.push(`<text x="${margin.left - 8}" y="${(y(v) + 4).toFixed(1)}" font-size="12" text-anchor="end">${escapeXml(yFormat(v))}</text>`,
      `<line x1="${margin.left}" y1="${y(v).toFixed(1)}" x2="${width - margin.right}" y2="${y(v).toFixed(1)}" stroke="#e0e0e0"/>`);
  }
  out.push(
    `<text x="${margin.left + plotW / 2}" y="${height - 8}" font-size="13" text-anchor="middle">${escapeXml(options.xLabel)}</text>`,
    `<text x="14" y="${margin.top + plotH / 2}" font-size="13" transform="rotate(-90 14 ${margin.top + plotH / 2})" text-anchor="middle">${escapeXml(options.yLabel)}</text>`,
  );
  for (const ref of options.references ?? []) {
    out.push(`<line x1="${margin.left}" y1="${y(ref.y).toFixed(1)}" x2="${width - margin.right}" y2="${y(ref.y).toFixed(1)}" stroke="#555" stroke-dasharray="2,3"/>`,
      `<text x="${width - margin.right - 4}" y="${(y(ref.y) - 4).toFixed(1)}" font-size="11" text-anchor="end" fill="#555">${escapeXml(ref.label)}</text>`);
  }
  options.series.forEach((series, i) => {
    const colour = series.colour ?? PALETTE[i % PALETTE.length]!;
    const points = series.points.filter(([px, py]) => Number.isFinite(px) && Number.isFinite(py)).sort((a, b) => a[0] - b[0]);
    const path = points.map(([px, py], j) => `${j === 0 ? "M" : "L"}${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(" ");
    if (points.length > 1) out.push(`<path d="${path}" fill="none" stroke="${colour}" stroke-width="2"${series.dashed === true ? ` stroke-dasharray="6,4"` : ""}/>`);
    for (const [px, py] of points) out.push(`<circle cx="${x(px).toFixed(1)}" cy="${y(py).toFixed(1)}" r="3" fill="${colour}"/>`);
    out.push(`<text x="${width - margin.right + 10}" y="${margin.top + 20 * i + 10}" fill="${colour}" font-size="13">${escapeXml(series.label)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
