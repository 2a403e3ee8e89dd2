/** The SVG line plot shared by halo eval and bench:report. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { linePlot } from "../../src/cli/linePlot.js";

test("a line per series with a marker per finite point, escaped labels, references, and no non-numbers in the markup", () => {
  const svg = linePlot({
    title: "a <b> & c", xLabel: "loss", yLabel: "ms", xFormat: (v) => `${v}%`,
    references: [{ y: 3.41, label: "target" }],
    series: [
      { label: "one", points: [[0, 1], [5, 2], [10, NaN]] },
      { label: "two \"quoted\"", points: [[5, 4]], colour: "#123456", dashed: true },
    ],
  });
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="640" height="400"[\s\S]*<\/svg>\n$/);
  assert.ok(svg.includes(">a &lt;b&gt; &amp; c</text>") && svg.includes(">two &quot;quoted&quot;</text>"));
  assert.equal((svg.match(/<circle /g) ?? []).length, 3, "the NaN point is a gap, not a marker");
  assert.equal((svg.match(/<path /g) ?? []).length, 1, "a single point draws no line");
  assert.ok(svg.includes(">target</text>") && svg.includes('stroke-dasharray="2,3"'));
  for (const tick of ["0%", "5%"]) assert.ok(svg.includes(`>${tick}</text>`), tick);
  assert.ok(!svg.includes(">10%</text>"), "ticks come from the points drawn");
  assert.ok(!/NaN|Infinity|undefined/.test(svg));
});

test("a logarithmic x axis spaces 1, 2, 4, 8 evenly; a plot without data still renders", () => {
  const svg = linePlot({ xLabel: "devices", yLabel: "tok/s", logX: true, series: [{ label: "s", points: [[1, 1], [2, 2], [4, 3], [8, 4]] }] });
  const xs = [...svg.matchAll(/<circle cx="([\d.]+)"/g)].map((m) => Number(m[1]));
  assert.equal(xs.length, 4);
  const gaps = xs.slice(1).map((x, i) => x - xs[i]!);
  assert.ok(gaps.every((g) => Math.abs(g - gaps[0]!) < 0.2), JSON.stringify(xs));
  const empty = linePlot({ xLabel: "x", yLabel: "y", series: [] });
  assert.ok(!/NaN|Infinity/.test(empty), empty);
});
