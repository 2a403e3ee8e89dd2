/**
 * A placement: which device computes each neuron group of each layer. Plain data, validated,
 * sent to workers over the control plane. The scheduler (later) computes placements from
 * profiles and importance; here they are proportional to given device shares.
 */
import { HaloError } from "../base/index.js";
import { groupCount, rangesFromIndices, type GroupKind, type GroupLayout, type GroupRange } from "./groups.js";

export interface LayerPlacement {
  /** (nAttentionGroups) device index of each attention group */
  readonly attention: readonly number[];
  /** (nFfnGroups) device index of each FFN block */
  readonly ffn: readonly number[];
}

export interface Placement {
  readonly nDevices: number;
  /** (nLayers) */
  readonly layers: readonly LayerPlacement[];
}

/**
 * Splits `nGroups` into contiguous runs proportional to `shares` (largest remainder), so
 * each device's groups read as few, large ranges. Devices with share 0 get nothing.
 */
export function proportionalSplit(nGroups: number, shares: readonly number[]): number[] {
  const total = shares.reduce((a, b) => a + b, 0);
  const exact = shares.map((s) => (s / total) * nGroups);
  const counts = exact.map(Math.floor);
  let missing = nGroups - counts.reduce((a, b) => a + b, 0);
  const byRemainder = exact.map((e, i) => ({ i, r: e - Math.floor(e) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of byRemainder) {
    if (missing === 0) break;
    if (shares[i]! > 0) {
      counts[i]!++;
      missing--;
    }
  }
  const owner: number[] = [];
  counts.forEach((count, device) => {
    for (let k = 0; k < count; k++) owner.push(device);
  });
  return owner;
}

export function checkShares(shares: readonly number[]): void {
  if (shares.length === 0) throw new HaloError("HALO_ERR_USAGE", "a placement needs at least one device");
  if (shares.some((s) => !Number.isFinite(s) || s < 0)) throw new HaloError("HALO_ERR_USAGE", `device shares must be finite and ≥ 0, got [${shares.join(", ")}]`);
  if (!shares.some((s) => s > 0)) throw new HaloError("HALO_ERR_USAGE", "at least one device share must be positive");
}

/** The same proportional split for every layer. */
export function proportionalPlacement(layout: GroupLayout, nLayers: number, shares: readonly number[]): Placement {
  checkShares(shares);
  const layer: LayerPlacement = {
    attention: proportionalSplit(layout.nAttentionGroups, shares),
    ffn: proportionalSplit(layout.nFfnGroups, shares),
  };
  return { nDevices: shares.length, layers: Array.from({ length: nLayers }, () => layer) };
}

/** Throws unless every group of every layer has exactly one valid device. */
export function validatePlacement(placement: Placement, layout: GroupLayout, nLayers: number): void {
  const fail = (message: string): never => {
    throw new HaloError("HALO_ERR_USAGE", `invalid placement: ${message}`);
  };
  if (!Number.isInteger(placement.nDevices) || placement.nDevices < 1) fail(`nDevices ${placement.nDevices}`);
  if (placement.layers.length !== nLayers) fail(`${placement.layers.length} layers, the model has ${nLayers}`);
  placement.layers.forEach((layer, l) => {
    for (const kind of ["attention", "ffn"] as const) {
      const owners = layer[kind];
      if (owners.length !== groupCount(layout, kind)) fail(`layer ${l} ${kind}: ${owners.length} groups, expected ${groupCount(layout, kind)}`);
      owners.forEach((device, g) => {
        if (!Number.isInteger(device) || device < 0 || device >= placement.nDevices) fail(`layer ${l} ${kind} group ${g} on device ${device}`);
      });
    }
  });
}

/** The groups a device computes in a layer's phase, as merged ranges. */
export function groupsOfDevice(placement: Placement, layerIndex: number, kind: GroupKind, device: number): GroupRange[] {
  const owners = placement.layers[layerIndex]![kind];
  const mine: number[] = [];
  owners.forEach((owner, g) => {
    if (owner === device) mine.push(g);
  });
  return rangesFromIndices(mine, owners.length);
}

/** The devices that hold at least one group of a layer's phase, ascending. */
export function devicesInPhase(placement: Placement, layerIndex: number, kind: GroupKind): number[] {
  return [...new Set(placement.layers[layerIndex]![kind])].sort((a, b) => a - b);
}
