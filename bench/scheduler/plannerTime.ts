/**
 * How long the scheduler takes to plan every group of a Llama-2-7B-shape model (32 layers, 32 KV
 * heads, FFN 11008 in blocks of 32: 32 + 344 groups per layer, Q4_0 weights) on 8 devices, and
 * how its objective compares with the uniform and speed-proportional baselines under the same
 * model. Several clusters built from the Pi-class presets (src/cluster/devicePresets.ts) with
 * varied links, memory and importance. Prints a markdown table; the target is < 50 ms median.
 *
 * Run: `npx tsc -p . && node dist/bench/scheduler/plannerTime.js [--runs N]`, or import
 * benchPlannerTime from a bench:scheduler main.
 */
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { SeededRandom } from "../../src/base/index.js";
import { DEVICE_PRESETS, type DevicePresetName } from "../../src/cluster/index.js";
import { Q4_0_BLOCK_BYTES, Q4_0_BLOCK_SIZE, Q8_0_BLOCK_BYTES, Q8_0_BLOCK_SIZE } from "../../src/kernels/index.js";
import { createGroupLayout } from "../../src/partition/index.js";
import { PLACEMENT_CHOICES, scheduleForChoice, scheduleHalo, type DeviceProfile, type LayerImportance, type LinkSample, type Schedule, type ScheduleInput } from "../../src/scheduler/index.js";
import { describeRun } from "../report.js";

const DIM = 4096;
const N_LAYERS = 32;
const LAYOUT = createGroupLayout({ nHeads: 32, nKvHeads: 32, headDim: 128, hiddenDim: 11008 }, 32);
/** One KV-head bundle: its 128 rows of wq, wk, wv and 128 columns of wo. */
const ATTENTION_GROUP_BYTES = (4 * 128 * DIM * Q4_0_BLOCK_BYTES) / Q4_0_BLOCK_SIZE;
/** One FFN block: its 32 rows of ffn_gate and ffn_up and 32 columns of ffn_down. */
const FFN_GROUP_BYTES = (3 * 32 * DIM * Q4_0_BLOCK_BYTES) / Q4_0_BLOCK_SIZE;
/** The phase input and a partial sum travel as Q8_0. */
const PHASE_MESSAGE_BYTES = (DIM * Q8_0_BLOCK_BYTES) / Q8_0_BLOCK_SIZE;
const GiB = 2 ** 30;

interface DeviceSpec {
  preset: DevicePresetName;
  link: Partial<LinkSample>;
  memoryBudgetBytes?: number;
}

function profileOf(spec: DeviceSpec, index: number): DeviceProfile {
  const preset = DEVICE_PRESETS[spec.preset];
  // Decode is memory-bound: a group's time is its bytes over the device's weight streaming rate.
  const msPer = (bytes: number): number => (bytes / (preset.weightGBps * 1e9)) * 1000;
  const budget = spec.memoryBudgetBytes ?? preset.memoryBytes - GiB;
  const link: LinkSample = { rttMs: 2 * preset.link.delayMs, jitterMs: preset.link.jitterMs, lossRatio: 0, bandwidthMbit: preset.link.bandwidthMbit, ...spec.link };
  return {
    name: `${index === 0 ? "coordinator" : "worker"} ${index} (${spec.preset})`,
    compute: [{ tensorType: "Q4_0", threads: 4, attentionGroupMs: msPer(ATTENTION_GROUP_BYTES), ffnGroupMs: msPer(FFN_GROUP_BYTES) }],
    attentionGroupMs: msPer(ATTENTION_GROUP_BYTES),
    ffnGroupMs: msPer(FFN_GROUP_BYTES),
    freeMemoryBytes: budget,
    memoryBudgetBytes: budget,
    readBytesPerSecond: 0,
    link,
  };
}

/** Log-normal importance, with a few heavy groups per phase and later layers weighing more, like calibration output. */
function syntheticImportance(seed: number): LayerImportance[] {
  const random = new SeededRandom(seed);
  return Array.from({ length: N_LAYERS }, (_, l) => {
    const draw = (n: number): number[] => Array.from({ length: n }, () => (1 + l / N_LAYERS) * Math.exp(1.2 * random.nextGaussian()));
    return { attention: draw(LAYOUT.nAttentionGroups), ffn: draw(LAYOUT.nFfnGroups) };
  });
}

interface Scenario {
  name: string;
  devices: DeviceSpec[];
  importance: LayerImportance[] | undefined;
}

const wifi = (lossRatio: number, jitterMs = 1): Partial<LinkSample> => ({ rttMs: 4, jitterMs, lossRatio, bandwidthMbit: 100 });

export const SCENARIOS: readonly Scenario[] = [
  {
    name: "mixed Pi 4/5 + Jetson, Wi-Fi 0–5% loss, calibrated importance",
    devices: [
      { preset: "pi5", link: {} }, { preset: "pi5", link: wifi(0.01) }, { preset: "pi4", link: wifi(0) }, { preset: "pi4", link: wifi(0.02) },
      { preset: "pi4", link: wifi(0.05, 2) }, { preset: "pi4", link: wifi(0.01) }, { preset: "jetson-nano", link: {} }, { preset: "pi5", link: wifi(0.05, 3) },
    ],
    importance: syntheticImportance(7),
  },
  {
    name: "8× Pi 4, Wi-Fi 2% loss each, uniform importance",
    devices: Array.from({ length: 8 }, (_, i) => ({ preset: "pi4" as const, link: i === 0 ? {} : wifi(0.02) })),
    importance: undefined,
  },
  {
    name: "mixed, tight memory (Pi 4s with 350 MiB budgets), calibrated importance",
    devices: [
      { preset: "pi5", link: {} }, { preset: "pi5", link: wifi(0.01) }, { preset: "x86", link: {}, memoryBudgetBytes: 1.5 * GiB },
      ...Array.from({ length: 5 }, (_, i) => ({ preset: "pi4" as const, link: wifi(i * 0.01), memoryBudgetBytes: 350 * 2 ** 20 })),
    ],
    importance: syntheticImportance(11),
  },
];

export function scenarioInput(scenario: Scenario): ScheduleInput {
  return {
    devices: scenario.devices.map(profileOf),
    layout: LAYOUT,
    nLayers: N_LAYERS,
    attentionGroupBytes: ATTENTION_GROUP_BYTES,
    ffnGroupBytes: FFN_GROUP_BYTES,
    importance: scenario.importance,
    broadcastBytes: PHASE_MESSAGE_BYTES,
    partialSumBytes: PHASE_MESSAGE_BYTES,
  };
}

export interface PlannerTimeResult {
  readonly scenario: string;
  readonly nGroups: number;
  readonly runsMs: readonly number[];
  readonly medianMs: number;
  /** Per placement choice: its objective and whether it fits every memory budget. */
  readonly choices: Readonly<Record<(typeof PLACEMENT_CHOICES)[number], { schedule: Schedule; fits: boolean }>>;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Times scheduleHalo on each scenario (one warm-up, then `runs` timed calls) and evaluates the three choices. */
export function benchPlannerTime(options: { runs?: number } = {}): PlannerTimeResult[] {
  const runs = options.runs ?? 9;
  return SCENARIOS.map((scenario) => {
    const input = scenarioInput(scenario);
    scheduleHalo(input);
    const runsMs: number[] = [];
    for (let r = 0; r < runs; r++) {
      const started = performance.now();
      scheduleHalo(input);
      runsMs.push(performance.now() - started);
    }
    const evaluate = (choice: (typeof PLACEMENT_CHOICES)[number]): { schedule: Schedule; fits: boolean } => {
      const schedule = scheduleForChoice(choice, input);
      return { schedule, fits: schedule.devices.every((load) => load.usedBytes <= load.budgetBytes) };
    };
    const choices = { uniform: evaluate("uniform"), proportional: evaluate("proportional"), halo: evaluate("halo") };
    return { scenario: scenario.name, nGroups: N_LAYERS * (LAYOUT.nAttentionGroups + LAYOUT.nFfnGroups), runsMs, medianMs: median(runsMs), choices };
  });
}

export function renderPlannerTime(results: readonly PlannerTimeResult[]): string {
  const lines = [
    "| scenario | groups | plan ms (median) | min–max ms | placement | objective ms | makespan ms/token | importance lost (phases) | fits memory |",
    "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
  ];
  for (const r of results) {
    PLACEMENT_CHOICES.forEach((choice, i) => {
      const { schedule, fits } = r.choices[choice];
      const o = schedule.objective;
      const timing = i === 0 ? [r.scenario, String(r.nGroups), r.medianMs.toFixed(1), `${Math.min(...r.runsMs).toFixed(1)}–${Math.max(...r.runsMs).toFixed(1)}`] : ["", "", "", ""];
      lines.push(`| ${[...timing, choice, o.costMs.toFixed(1), o.makespanMs.toFixed(1), o.lostImportance.toFixed(4), fits ? "yes" : "no"].join(" | ")} |`);
    });
  }
  return lines.join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { runs: { type: "string" } } });
  const results = benchPlannerTime({ runs: values.runs === undefined ? undefined : Number(values.runs) });
  console.log(`# scheduler planning time: Llama-2-7B shape, 8 devices, λ = default\n${describeRun().line}\n`);
  console.log(renderPlannerTime(results));
}
