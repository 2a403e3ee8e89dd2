/**
 * Which of a device's weight rows stay resident under a memory budget, and how large the staging
 * buffers for the rest are. Pure: sizes in, a plan out.
 *
 * The budget pays for three things: resident rows, staging slots (each holds one part's
 * streamed rows while it is read and computed; the streamed parts take them in turn, so with
 * attention and FFN streaming in every layer one slot is sized for attention, the other for FFN)
 * and one scratch buffer for covering reads. Every part streams at most a common cap C bytes: a
 * part larger than C keeps its first `size − C` bytes resident. We take the smallest C whose plan
 * fits with two slots (double buffering: part s+1 is read while part s computes), else with one
 * (reads then cannot overlap compute; still correct), else the budget is too small and the error
 * names the least that fits.
 *
 * Why a common cap rather than whole early layers resident: with a cap, every step reads about
 * the same share of its part, so each read has a whole step's compute to hide behind; pinning
 * whole layers would leave the other layers reading everything back to back. Within a part, the
 * shared column tensor (W_o or W_2) is pinned first, by output rows: every group of the part
 * needs it, and in the GGUF layout it is the expensive read (strided columns, see
 * streamGeometry.ts). Then groups are pinned by static importance, most important first (the
 * calibration's average contribution per group when given; without one, in group order), so
 * the groups evicted to the disk are always the least important ones.
 */
import type { GroupKind } from "../partition/index.js";
import { groupRecordBytes, type PartGeometry } from "./streamGeometry.js";

/** Static importance of each group of (layer, kind), indexed by *global* group; larger is more important. */
export type GroupImportance = (layerIndex: number, kind: GroupKind) => ArrayLike<number> | undefined;

/** What stays resident of one part. */
export interface PartResidency {
  /** Leading output rows of the shared column tensor kept resident. */
  readonly sharedRows: number;
  /** (nLocalGroups) true for a group whose records stay resident. */
  readonly residentGroups: readonly boolean[];
  readonly residentBytes: number;
  /** Bytes read from disk each time the part runs. */
  readonly streamedBytes: number;
  /** The staging slot it is read into; −1 when nothing of it streams. */
  readonly slot: number;
}

export interface ResidencyPlan {
  /** Same order as the parts given. */
  readonly parts: readonly PartResidency[];
  readonly residentBytes: number;
  /** (nSlots) size of each staging slot: the largest streamed part it takes. */
  readonly slotBytes: readonly number[];
  /** 1 means reads cannot overlap compute; 0 that nothing streams. */
  readonly nSlots: number;
  /** Σ slotBytes. */
  readonly stagingBytes: number;
  readonly scratchBytes: number;
  readonly streamedBytesPerToken: number;
  /** The whole share's bytes. */
  readonly shareBytes: number;
}

export interface ResidencyOptions {
  budgetBytes: number;
  importance?: GroupImportance;
  /**
   * "layer": the larger phase's reads start a layer ahead when the budget allows; "phase": every
   * read starts one phase ahead, which streams the fewest bytes (better when the disk, not
   * overlap, is the limit). Defaults to "phase" when the reads are strided (a column slice of the
   * model file), else "layer".
   */
  lookahead?: "layer" | "phase";
  /** Scratch for covering reads of strided column slices; reserved when any streams (capped at the largest part and an eighth of the budget). */
  scratchBytes: number;
}

/** One part's pinning order: shared rows (row by row), then whole groups by importance. */
interface PinOrder {
  readonly kind: GroupKind;
  readonly sizeBytes: number;
  readonly sharedBytes: number;
  readonly sharedRowBytes: number;
  /** Local groups, most important first. */
  readonly groups: readonly number[];
  /** (nGroups + 1) resident record bytes after pinning the first k groups of `groups`. */
  readonly prefix: readonly number[];
}

function pinOrder(part: PartGeometry, importance: GroupImportance | undefined): PinOrder {
  const records = groupRecordBytes(part);
  const scores = importance?.(part.layerIndex, part.kind);
  const score = (g: number): number => Number(scores?.[part.globalGroups[g]!] ?? 0);
  const groups = part.globalGroups.map((_, g) => g).sort((a, b) => score(b) - score(a) || a - b);
  const prefix = [0];
  for (const g of groups) prefix.push(prefix[prefix.length - 1]! + records[g]!);
  const shared = part.shared;
  return { kind: part.kind, sizeBytes: part.sizeBytes, sharedBytes: shared.nRows * shared.rowBytes, sharedRowBytes: shared.rowBytes, groups, prefix };
}

/** The least pinning of `order` that leaves at most `cap` bytes to stream. */
function pinToCap(order: PinOrder, cap: number): { sharedRows: number; nGroups: number; residentBytes: number } {
  const need = order.sizeBytes - cap;
  if (need <= 0) return { sharedRows: 0, nGroups: 0, residentBytes: 0 };
  if (need <= order.sharedBytes) {
    const sharedRows = Math.ceil(need / order.sharedRowBytes);
    return { sharedRows, nGroups: 0, residentBytes: sharedRows * order.sharedRowBytes };
  }
  const rest = need - order.sharedBytes;
  let k = order.prefix.findIndex((bytes) => bytes >= rest);
  if (k < 0) k = order.groups.length;
  return { sharedRows: order.sharedBytes / order.sharedRowBytes, nGroups: k, residentBytes: order.sharedBytes + order.prefix[k]! };
}

interface Evaluated {
  cap: number;
  nSlots: number;
  residentBytes: number;
  /** (nSlots) each slot's size: the largest streamed part it takes. */
  slotBytes: number[];
  /** (nParts) the slot each part is read into, −1 when it streams nothing. */
  slotOfPart: number[];
  cost: number;
}

/** How streamed parts share slots: one slot for all, or a ring of slots per kind. */
type SlotLayout = "one" | "phase" | "layer";

/**
 * The plan at cap `cap`. With "one", every streamed part uses the same slot (reads cannot overlap
 * compute). Otherwise each kind has its own ring of slots, used in turn, so a slot is sized for
 * one kind's parts only: with "phase" one slot per kind when both kinds stream (the next phase
 * is read while this one computes), with "layer" the kind with the larger streamed parts gets
 * two, so its reads start a whole layer ahead (behind the other kind's compute too). A kind
 * streaming alone gets two either way.
 */
function evaluate(orders: readonly PinOrder[], cap: number, layout: SlotLayout, scratchBytes: number): Evaluated {
  let residentBytes = 0;
  const streamed = orders.map((order) => {
    const pinned = pinToCap(order, cap).residentBytes;
    residentBytes += pinned;
    return order.sizeBytes - pinned;
  });
  const largest: Record<GroupKind, number> = { attention: 0, ffn: 0 };
  orders.forEach((order, p) => {
    largest[order.kind] = Math.max(largest[order.kind], streamed[p]!);
  });
  const both = largest.attention > 0 && largest.ffn > 0;
  const ring = (kind: GroupKind): number => {
    if (largest[kind] === 0) return 0;
    if (!both) return 2;
    return layout === "layer" && largest[kind] >= largest[kind === "ffn" ? "attention" : "ffn"] ? 2 : 1;
  };
  const rings: Record<GroupKind, number> = layout === "one" ? { attention: 1, ffn: 1 } : { attention: ring("attention"), ffn: ring("ffn") };
  const firstSlot: Record<GroupKind, number> = { attention: 0, ffn: layout === "one" ? 0 : rings.attention };
  const nSlots = layout === "one" ? (largest.attention + largest.ffn > 0 ? 1 : 0) : rings.attention + rings.ffn;
  const slotBytes = Array.from({ length: nSlots }, () => 0);
  const used: Record<GroupKind, number> = { attention: 0, ffn: 0 };
  const slotOfPart = orders.map((order, p) => {
    if (streamed[p] === 0) return -1;
    const slot = firstSlot[order.kind] + (used[order.kind]++ % rings[order.kind]);
    slotBytes[slot] = Math.max(slotBytes[slot]!, streamed[p]!);
    return slot;
  });
  // A ring larger than the parts it serves would never fill.
  const kept = slotBytes.map((bytes) => bytes > 0);
  const renumber = kept.map((_, i) => kept.slice(0, i).filter(Boolean).length);
  const cost = residentBytes + slotBytes.reduce((a, b) => a + b, 0) + (nSlots > 0 ? scratchBytes : 0);
  return { cap, nSlots: kept.filter(Boolean).length, residentBytes, slotBytes: slotBytes.filter((b) => b > 0), slotOfPart: slotOfPart.map((s) => (s < 0 ? s : renumber[s]!)), cost };
}

/** Every cap at which some part's pinning changes, plus a grid inside the shared rows' continuum. */
function candidateCaps(orders: readonly PinOrder[]): number[] {
  const caps = new Set<number>();
  let largest = 0;
  for (const order of orders) {
    largest = Math.max(largest, order.sizeBytes);
    caps.add(order.sizeBytes);
    for (const bytes of order.prefix) caps.add(Math.max(0, order.sizeBytes - order.sharedBytes - bytes));
  }
  const steps = 512;
  for (let i = 1; i < steps; i++) caps.add(Math.floor((largest * i) / steps));
  caps.delete(0);
  return [...caps].sort((a, b) => a - b);
}

/** Throws MemoryBudgetError (via `fail`) when even one slot cannot fit. */
export function planResidency(parts: readonly PartGeometry[], options: ResidencyOptions, fail: (minimumBytes: number, detail: string) => never): ResidencyPlan {
  const orders = parts.map((p) => pinOrder(p, options.importance));
  const shareBytes = orders.reduce((n, o) => n + o.sizeBytes, 0);
  const largestPart = Math.max(0, ...orders.map((o) => o.sizeBytes));
  const budget = options.budgetBytes;
  // Only a column slice of the model file (W_o, W_2 of some of the columns) reads in strided runs
  // that need scratch. Scratch competes with resident rows and slots for the budget: an eighth of
  // it still covers those runs in few reads without starving the slots of a small budget.
  const strided = parts.some((p) => p.shared.filePlan.axis === "columns" && p.shared.filePlan.nKept < p.shared.filePlan.nCols);
  const scratchBytes = strided ? Math.min(options.scratchBytes, largestPart, Math.floor(budget / 8)) : 0;
  let chosen: Evaluated | undefined;
  if (budget >= shareBytes) {
    chosen = evaluate(orders, 0, "one", 0);
  } else {
    const caps = candidateCaps(orders);
    // The smallest cap streams the least. Reading a layer ahead hides more of the reads than a
    // phase ahead (the bench: 92% against 60% hidden) for a few more bytes streamed, so it is
    // preferred while the budget allows; one slot (no overlap) is the last resort.
    // Where strided column reads cost several bytes read per byte streamed, streaming fewer bytes wins.
    const lookahead = options.lookahead ?? (strided ? "phase" : "layer");
    for (const layout of lookahead === "phase" ? (["phase", "one"] as const) : (["layer", "phase", "one"] as const)) {
      chosen ??= caps.map((cap) => evaluate(orders, cap, layout, scratchBytes)).find((e) => e.cost <= budget);
    }
    if (chosen === undefined) {
      const minimum = Math.min(shareBytes, ...caps.map((cap) => evaluate(orders, cap, "one", scratchBytes).cost));
      fail(minimum, `its share is ${shareBytes} bytes in ${parts.length} layer phases (the largest ${largestPart}), and each streamed phase needs a staging buffer beside the resident rows${scratchBytes > 0 ? ` and ${scratchBytes} bytes of read scratch` : ""}`);
    }
  }
  const partPlans = orders.map((order, p): PartResidency => {
    const pinned = pinToCap(order, chosen.cap);
    const residentGroups = order.groups.map(() => false);
    for (const g of order.groups.slice(0, pinned.nGroups)) residentGroups[g] = true;
    return { sharedRows: pinned.sharedRows, residentGroups, residentBytes: pinned.residentBytes, streamedBytes: order.sizeBytes - pinned.residentBytes, slot: chosen.slotOfPart[p]! };
  });
  return {
    parts: partPlans,
    residentBytes: chosen.residentBytes,
    slotBytes: chosen.slotBytes,
    nSlots: chosen.nSlots,
    stagingBytes: chosen.slotBytes.reduce((a, b) => a + b, 0),
    scratchBytes: chosen.nSlots > 0 ? scratchBytes : 0,
    streamedBytesPerToken: partPlans.reduce((n, p) => n + p.streamedBytes, 0),
    shareBytes,
  };
}
