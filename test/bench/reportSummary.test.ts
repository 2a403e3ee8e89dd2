/** bench:report's arithmetic: statistics per cell, the headline point, the ablation's factors and shares, resuming, and the plots. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { renderPlots } from "../../bench/report/plots.js";
import { Progress, hasCell, putCell, speedKey, type FidelityCell, type SpeedCell, type SpeedMode } from "../../bench/report/results.js";
import { fidelityStats, speedStats, summarize } from "../../bench/report/summary.js";

/** `tpotMs` empty: a one-device run, which reports only its mean (`meanMs`). */
function cell(devices: number, lossPercent: number, mode: SpeedMode | "single", tpotMs: number[], repeat = 0, meanMs = tpotMs.reduce((a, b) => a + b, 0) / tpotMs.length): SpeedCell {
  return {
    key: speedKey(devices, lossPercent, mode, repeat), configHash: "h", devices, lossPercent, mode, repeat, tpotMs, tpotMeanMs: meanMs,
    droppedContributions: 1, expectedContributions: 10, criticalContributions: 5, wireDrops: 0, lostWorkers: [], groupsPerDevice: [2, 2], wallMs: 1, commit: "c",
  };
}

/** At 5% loss each mechanism halves TPOT except the scheduler, which changes nothing: 4x in all, 50% + 50% + 0%. */
const cells = [
  cell(1, 0, "single", [], 0, 50),
  ...[2, 8].flatMap((n) => [
    cell(n, 0, "strict", [100, 100]), cell(n, 0, "relaxed", [90]), cell(n, 0, "predictor", [90]), cell(n, 0, "halo", [80]),
    cell(n, 5, "strict", [300, 500]), cell(n, 5, "relaxed", [200]), cell(n, 5, "predictor", [100]), cell(n, 5, "halo", [100]),
    cell(n, 10, "strict", [900]), cell(n, 10, "halo", [120]),
  ]),
];

const fidelityCell = (lossPercent: number, placement: "uniform" | "halo", perplexities: [number, number]): FidelityCell => ({
  key: `8/${lossPercent}/${placement}`, configHash: "f", devices: 8, lossPercent, placement, densePerplexity: 10, commit: "c", dropPolicies: [],
  rows: (["none", "predictor"] as const).map((critical, i) => ({ critical, perplexity: perplexities[i]!, top1Agreement: 0.9, droppedContributions: 1, expectedContributions: 4, criticalContributions: 0 })),
});

test("statistics pool the repeats' tokens; the headline is 8 devices at 5% loss; the ablation's factors multiply to the whole speedup", () => {
  const stats = speedStats([...cells, cell(8, 5, "strict", [400, 400], 1)]);
  const strict = stats.find((s) => s.devices === 8 && s.lossPercent === 5 && s.mode === "strict")!;
  assert.equal(strict.nRuns, 2);
  assert.equal(strict.tpotMeanMs, 400);
  assert.equal(strict.tpotP50Ms, 400);
  assert.equal(strict.tpotP99Ms, 500);
  assert.equal(strict.droppedPercent, 10);
  assert.equal(stats[0]!.mode, "single");
  assert.equal(stats[0]!.tokensPerSecond, 20);
  assert.ok(Number.isNaN(stats[0]!.tpotP50Ms), "one device reports its mean only");

  const fidelity = fidelityStats([fidelityCell(5, "uniform", [12, 11]), fidelityCell(5, "halo", [10.5, 10.05])]);
  assert.deepEqual(fidelity.map((f) => [f.mode, f.perplexity]), [["relaxed", 12], ["predictor", 11], ["halo", 10.05]], "halo placement's no-critical-set row stands for no mode");
  const summary = summarize(stats, fidelity, "", "distributed-llama baseline: skipped (no --baseline-dllama)");
  assert.equal(summary.devices, 8);
  assert.equal(summary.lossPercent, 5);
  assert.equal(summary.fullHaloOverStrict, 4);
  assert.equal(summary.fullHaloOverStrictAt0, 100 / 80);
  assert.equal(summary.lossTolerance.halo, 100 / 80);
  assert.deepEqual(summary.ablation.map((a) => [a.step, a.factor, Math.round(a.sharePercent)]), [["relaxed vs strict", 2, 50], ["+ predictor", 2, 50], ["+ scheduler", 1, 0]]);
  assert.ok(Math.abs(summary.fidelity!.perplexityIncreasePercent - 0.5) < 1e-9);
  assert.match(summary.lines[0]!, /^headline \(8 devices, 5% loss\): full halo ÷ strict TCP = 4\.00x tok\/s {3}\[paper: ≥ 3\.41x/);
  assert.match(summary.lines[4]!, /\+0\.50%, top-1 agreement 90\.0%, 25\.00% of 4 contributions dropped {3}\[paper: < 1% worse/);
  assert.match(summary.lines[0]!, /; full halo's placement: groups per device 2\/2, coordinator first$/);
  assert.equal(summary.lines.at(-1), "distributed-llama baseline: skipped (no --baseline-dllama)");

  const plots = renderPlots(stats, fidelity, summary);
  assert.deepEqual(Object.keys(plots).sort(), ["agreement-vs-loss.svg", "perplexity-vs-loss.svg", "scaling-vs-devices.svg", "speedup-vs-loss.svg", "tpot-vs-loss.svg"]);
  assert.ok(plots["speedup-vs-loss.svg"]!.includes("paper: 3.41x at 5% loss"));
});

test("without 5% the headline takes the loss nearest it (the larger on a tie), and a missing mode leaves its ratio out", () => {
  const stats = speedStats(cells.filter((c) => c.lossPercent !== 5));
  const summary = summarize(stats, [], "", "");
  assert.equal(summary.lossPercent, 10);
  assert.equal(summary.fullHaloOverStrict, 900 / 120);
  assert.deepEqual(summary.ablation, [], "relaxed and predictor were not measured at 10%");
  assert.match(summary.lines[4]!, /^fidelity: no cell at the headline point/);
});

test("a cell counts as done only under the same key and settings hash; measuring it again replaces it", () => {
  const list: SpeedCell[] = [];
  putCell(list, cell(2, 5, "halo", [10]));
  putCell(list, { ...cell(2, 5, "halo", [20]), configHash: "other" });
  putCell(list, cell(2, 5, "halo", [30]));
  assert.deepEqual(list.map((c) => [c.configHash, c.tpotMeanMs]), [["h", 30], ["other", 20]]);
  assert.ok(hasCell(list, "2/5/halo/0", "h"));
  assert.ok(!hasCell(list, "2/5/halo/1", "h"));
  assert.ok(!hasCell(list, "2/5/halo/0", "new"));
});

test("the ETA is each kind's mean time so far times its cells left; resumed cells are marked and cost nothing", () => {
  const lines: string[] = [];
  const progress = new Progress({ speed: 2, fidelity: 3 }, (text) => void lines.push(text), false);
  progress.step("speed", "a", undefined);
  assert.match(lines[0]!, /^\[#####\.{19}\] 1\/5 a \(resumed\) \| elapsed \d+s, ETA \?\n$/);
  progress.step("speed", "b", 4000);
  assert.match(lines[1]!, /2\/5 b \| elapsed \d+s, ETA 12s\n$/, "no fidelity cell measured yet: the overall mean, 4 s × 3");
  progress.step("fidelity", "c", 1000);
  assert.match(lines[2]!, /3\/5 c \| .*ETA 2s\n$/);
  progress.step("fidelity", "d", 1000);
  progress.step("fidelity", "e", 1000);
  assert.match(lines[4]!, /^\[#{24}\] 5\/5 e \| .*ETA 0s\n$/);
});
