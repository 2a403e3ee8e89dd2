/** Hand-made and generated clusters for the scheduler's tests. */
import fc from "fast-check";
import { SeededRandom } from "../../src/base/index.js";
import { GROUP_KINDS, createGroupLayout, type GroupLayout, type Placement } from "../../src/partition/index.js";
import { PERFECT_LINK, type DeviceProfile, type LayerImportance, type LinkSample, type ScheduleInput } from "../../src/scheduler/index.js";

export interface DeviceFigures {
  name?: string;
  attentionGroupMs?: number;
  ffnGroupMs?: number;
  memoryBudgetBytes?: number;
  link?: Partial<LinkSample>;
}

/** A device profile with 1 ms groups, ample memory and a perfect link unless told otherwise. */
export function device(figures: DeviceFigures = {}, index = 0): DeviceProfile {
  const attentionGroupMs = figures.attentionGroupMs ?? 1;
  const ffnGroupMs = figures.ffnGroupMs ?? 1;
  return {
    name: figures.name ?? `device ${index}`,
    compute: [{ tensorType: "Q4_0", threads: 4, attentionGroupMs, ffnGroupMs }],
    attentionGroupMs,
    ffnGroupMs,
    freeMemoryBytes: figures.memoryBudgetBytes ?? 1e12,
    memoryBudgetBytes: figures.memoryBudgetBytes ?? 1e12,
    readBytesPerSecond: 1e9,
    link: { ...PERFECT_LINK, ...figures.link },
  };
}

/** A layout with nAttention KV-head groups and nFfn FFN blocks of 32 neurons. */
export function layoutOf(nAttention: number, nFfn: number): GroupLayout {
  return createGroupLayout({ nHeads: nAttention, nKvHeads: nAttention, headDim: 32, hiddenDim: nFfn * 32 });
}

export function clusterInput(devices: readonly DeviceFigures[], shape: { nAttention: number; nFfn: number; nLayers?: number }, extra: Partial<ScheduleInput> = {}): ScheduleInput {
  return {
    devices: devices.map((d, i) => device(d, i)),
    layout: layoutOf(shape.nAttention, shape.nFfn),
    nLayers: shape.nLayers ?? 1,
    attentionGroupBytes: 100,
    ffnGroupBytes: 10,
    broadcastBytes: 0,
    partialSumBytes: 0,
    ...extra,
  };
}

/** The same importance list for both kinds of every layer. */
export function sameImportance(nLayers: number, attention: readonly number[], ffn: readonly number[]): LayerImportance[] {
  return Array.from({ length: nLayers }, () => ({ attention, ffn }));
}

/** Group counts per device of one phase. */
export function countsOf(owners: readonly number[], nDevices: number): number[] {
  const counts = new Array<number>(nDevices).fill(0);
  for (const d of owners) counts[d]!++;
  return counts;
}

export const FC_SEED = 20260607;

const msArb = fc.double({ min: 0.05, max: 5, noNaN: true });
const linkArb = fc.record({
  rttMs: fc.double({ min: 0, max: 10, noNaN: true }),
  jitterMs: fc.double({ min: 0, max: 3, noNaN: true }),
  lossRatio: fc.double({ min: 0, max: 0.3, noNaN: true }),
  bandwidthMbit: fc.oneof(fc.constant(0), fc.double({ min: 1, max: 1000, noNaN: true })),
});

/** A random cluster: any speeds and links, memory from none to ample, importance uniform or not. */
export const clusterArb = fc
  .record({
    devices: fc.array(fc.record({ attentionGroupMs: msArb, ffnGroupMs: msArb, link: linkArb, memoryShare: fc.oneof(fc.constant(0), fc.double({ min: 0.2, max: 3, noNaN: true })) }), { minLength: 1, maxLength: 10 }),
    nAttention: fc.integer({ min: 1, max: 8 }),
    nFfn: fc.integer({ min: 1, max: 24 }),
    nLayers: fc.integer({ min: 1, max: 3 }),
    importanceSeed: fc.option(fc.array(fc.double({ min: 0, max: 10, noNaN: true }), { minLength: 1, maxLength: 16 }), { nil: undefined }),
    lambdaMs: fc.constantFrom(0, 10, 100, 1000),
  })
  .map((c) => {
    const attentionGroupBytes = 100;
    const ffnGroupBytes = 10;
    const modelBytes = c.nLayers * (c.nAttention * attentionGroupBytes + c.nFfn * ffnGroupBytes);
    // memoryShare 1 is twice an even split of the model; the coordinator holds at least half of it, so most clusters fit and some do not.
    const devices = c.devices.map((d, i) => ({
      attentionGroupMs: d.attentionGroupMs,
      ffnGroupMs: d.ffnGroupMs,
      link: d.link,
      memoryBudgetBytes: Math.round(Math.max(i === 0 ? modelBytes / 2 : 0, (2 * d.memoryShare * modelBytes) / c.devices.length)),
    }));
    const pick = (l: number, k: number, g: number): number => c.importanceSeed![(l * 7 + k * 3 + g) % c.importanceSeed!.length]!;
    const importance = c.importanceSeed === undefined ? undefined : Array.from({ length: c.nLayers }, (_, l) => ({
      attention: Array.from({ length: c.nAttention }, (_, g) => pick(l, 0, g)),
      ffn: Array.from({ length: c.nFfn }, (_, g) => pick(l, 1, g)),
    }));
    const input = clusterInput(devices, { nAttention: c.nAttention, nFfn: c.nFfn, nLayers: c.nLayers }, { importance, broadcastBytes: 1088, partialSumBytes: 1088 });
    return { input, lambdaMs: c.lambdaMs };
  });

export type Pins = NonNullable<ScheduleInput["pinned"]>;

/**
 * Pins for `input` that its budgets can hold: each group pinned with probability `ratio`, to its
 * device in `from` when given (a placement that fits, as a live re-plan pins), else to a random
 * device that may hold the kind and still has room for it. Never over a budget, never onto an
 * excluded device, so the planner may refuse the rest of the model but never the pins.
 */
export function randomPins(input: ScheduleInput, seed: number, ratio: number, from?: Placement): Pins {
  const random = new SeededRandom(seed);
  const freeBytes = input.devices.map((d) => d.memoryBudgetBytes);
  const bytesOf = [input.attentionGroupBytes, input.ffnGroupBytes];
  const mayHold = (d: number, k: number): boolean => {
    const profile = input.devices[d]!;
    const ms = k === 0 ? profile.attentionGroupMs : profile.ffnGroupMs;
    return ms > 0 && Number.isFinite(ms) && (d === 0 || profile.link.lossRatio < 1) && freeBytes[d]! >= bytesOf[k]!;
  };
  return Array.from({ length: input.nLayers }, (_, l) => {
    const [attention, ffn] = GROUP_KINDS.map((kind, k) =>
      Array.from({ length: kind === "attention" ? input.layout.nAttentionGroups : input.layout.nFfnGroups }, (_, g) => {
        if (random.nextFloat() >= ratio) return -1;
        const d = from === undefined ? random.nextInt(input.devices.length) : from.layers[l]![kind][g]!;
        if (!mayHold(d, k)) return -1;
        freeBytes[d]! -= bytesOf[k]!;
        return d;
      }),
    );
    return { attention: attention!, ffn: ffn! };
  });
}
