/**
 * The parts (layer phases) of a device's share and where their rows are: in the model file
 * (the device's rows and columns of the whole tensors) or in a shard (the compact tensors
 * themselves). Both are GGUF files, so a part is described the same way and read by the same code.
 */
import { rowBytes } from "../kernels/index.js";
import type { GgufFile, GgufTensorInfo, ModelConfig } from "../model/index.js";
import type { GroupKind, GroupLayout, GroupRange } from "../partition/index.js";
import { resolveSlicedTensor } from "./deviceSlice.js";
import type { CheckedShard } from "./shardFile.js";
import { compactShape, layerSlicePlans, normalizeDeviceGroups, type DeviceGroups, type SliceRole, type TensorSlicePlan } from "./sliceGeometry.js";
import type { PartGeometry, TensorSource } from "./streamGeometry.js";

/** Where a device's parts are read from. */
export interface StreamSource {
  readonly path: string;
  /** The size the file had when its header was read; checked again when it is opened for streaming. */
  readonly fileSize: number;
  readonly config: ModelConfig;
  readonly layout: GroupLayout;
  /** (nLayers) normalized. */
  readonly groups: readonly DeviceGroups[];
  /** Layer order, attention before FFN: the order a token runs them. Parts the device holds no group of are absent. */
  readonly parts: readonly PartGeometry[];
}

const PART_ROLES: Record<GroupKind, { shared: SliceRole; rows: readonly SliceRole[] }> = {
  attention: { shared: "wo", rows: ["wq", "wk", "wv"] },
  ffn: { shared: "ffnDown", rows: ["ffnGate", "ffnUp"] },
};

function rowsPerGroup(role: SliceRole, config: ModelConfig, layout: GroupLayout): number {
  switch (role) {
    case "wq": return layout.queryHeadsPerGroup * config.headDim;
    case "wk":
    case "wv": return config.headDim;
    case "ffnGate":
    case "ffnUp": return layout.ffnBlockSize;
    case "wo":
    case "ffnDown": return 0;
    default: return role satisfies never;
  }
}

function expand(ranges: readonly GroupRange[]): number[] {
  return ranges.flatMap((r) => Array.from({ length: r.end - r.start }, (_, i) => r.start + i));
}

type Located = (plan: TensorSlicePlan) => { info: GgufTensorInfo; filePlan: TensorSlicePlan; type: TensorSource["type"] };

function buildParts(config: ModelConfig, layout: GroupLayout, groups: readonly DeviceGroups[], locate: Located): PartGeometry[] {
  const parts: PartGeometry[] = [];
  groups.forEach((g, l) => {
    const plans = new Map(layerSlicePlans(config, layout, l, g).map((p) => [p.role, p]));
    for (const kind of ["attention", "ffn"] as const) {
      const globalGroups = expand(g[kind]);
      if (globalGroups.length === 0) continue;
      const source = (role: SliceRole): TensorSource => {
        const plan = plans.get(role)!;
        const { info, filePlan, type } = locate(plan);
        const { nRows, nCols } = compactShape(plan);
        return { role, name: plan.name, type, nRows, nCols, rowBytes: rowBytes(type, nCols), fileOffset: info.fileOffset, filePlan, fileRowBytes: rowBytes(type, filePlan.nCols), rowsPerGroup: rowsPerGroup(role, config, layout) };
      };
      const shared = source(PART_ROLES[kind].shared);
      const rowTensors = PART_ROLES[kind].rows.map(source);
      const sizeBytes = [shared, ...rowTensors].reduce((n, t) => n + t.nRows * t.rowBytes, 0);
      parts.push({ layerIndex: l, kind, globalGroups, shared, rowTensors, sizeBytes });
    }
  });
  return parts;
}

/** A device's parts in the model file (every tensor checked as readDeviceSlice checks it). */
export function modelStreamSource(file: GgufFile, config: ModelConfig, layout: GroupLayout, groups: readonly DeviceGroups[]): StreamSource {
  const normalized = normalizeDeviceGroups(groups, layout, config.nLayers);
  const parts = buildParts(config, layout, normalized, (plan) => {
    const { info, type } = resolveSlicedTensor(file, plan);
    return { info, filePlan: plan, type };
  });
  return { path: file.path, fileSize: file.fileSize, config, layout, groups: normalized, parts };
}

/** A device's parts in a checked shard: each compact tensor is a whole shard tensor, read by rows. */
export function shardStreamSource(file: GgufFile, shard: CheckedShard): StreamSource {
  const { config, layout, identity } = shard;
  const byName = new Map(shard.tensors.flat().map((t) => [t.plan.name, t]));
  const parts = buildParts(config, layout, identity.groups, (plan) => {
    const tensor = byName.get(plan.name)!;
    const { nRows, nCols } = compactShape(plan);
    const filePlan: TensorSlicePlan = { ...plan, axis: "rows", nRows, nCols, ranges: [{ start: 0, end: nRows }], nKept: nRows };
    return { info: tensor.info!, filePlan, type: tensor.type };
  });
  return { path: file.path, fileSize: file.fileSize, config, layout, groups: identity.groups, parts };
}
