/**
 * From a cluster's devices to the scheduler's input, and back to what the coordinator runs:
 * group sizes from the model's own tensors, importance from the predictor's calibration averages
 * (uniform without one), transfer sizes from the wire format.
 */
import { rowBytes } from "../kernels/index.js";
import type { LoadedModel } from "../model/index.js";
import type { GroupLayout } from "../partition/index.js";
import type { GroupPredictor } from "../predictor/index.js";
import { scheduleForChoice, type DeviceProfile, type LayerImportance, type PlacementChoice, type Schedule, type ScheduleInput } from "../scheduler/index.js";
import { WIRE_FORMATS, type WireFormat } from "../net/index.js";
import type { ReplanContext } from "./liveReplan.js";

/** Bytes of one attention group and one FFN block of a layer: their rows of the input projections and columns of the output one. */
export function groupBytes(model: LoadedModel, layout: GroupLayout): { attention: number; ffn: number } {
  const layer = model.weights.layers[0]!;
  const { dim } = model.config;
  const queryRows = layout.queryHeadsPerGroup * layout.headDim;
  const attention = queryRows * rowBytes(layer.wq.type, dim) + layout.headDim * (rowBytes(layer.wk.type, dim) + rowBytes(layer.wv.type, dim)) + dim * rowBytes(layer.wo.type, queryRows);
  const ffn = layout.ffnBlockSize * (rowBytes(layer.ffnGate.type, dim) + rowBytes(layer.ffnUp.type, dim)) + dim * rowBytes(layer.ffnDown.type, layout.ffnBlockSize);
  return { attention, ffn };
}

/** Average importance per group from the predictor's calibration: exp of the mean log-norm. */
export function calibratedImportance(predictor: GroupPredictor): LayerImportance[] {
  return predictor.maps.attention.map((attention, l) => ({
    attention: Array.from(attention.mean, Math.exp),
    ffn: Array.from(predictor.maps.ffn[l]!.mean, Math.exp),
  }));
}

export function clusterScheduleInput(model: LoadedModel, layout: GroupLayout, devices: readonly DeviceProfile[], wire: WireFormat, predictor: GroupPredictor | undefined): ScheduleInput {
  const bytes = groupBytes(model, layout);
  const format = WIRE_FORMATS[wire];
  const vectorBytes = (model.config.dim / format.blockSize) * format.blockBytes;
  return {
    devices,
    layout,
    nLayers: model.config.nLayers,
    attentionGroupBytes: bytes.attention,
    ffnGroupBytes: bytes.ffn,
    ...(predictor === undefined ? {} : { importance: calibratedImportance(predictor) }),
    broadcastBytes: vectorBytes,
    partialSumBytes: vectorBytes,
  };
}

/**
 * The scheduler's input for a live re-plan: the groups the context pins stay put, and a frozen
 * worker (one that cannot load live) gets a budget of exactly what its pinned groups take, so
 * nothing new is placed on it.
 */
export function replanScheduleInput(input: ScheduleInput, context: ReplanContext): ScheduleInput {
  const pinnedBytes = new Array<number>(input.devices.length).fill(0);
  for (const layer of context.pinned) {
    for (const d of layer.attention) if (d >= 0) pinnedBytes[d]! += input.attentionGroupBytes;
    for (const d of layer.ffn) if (d >= 0) pinnedBytes[d]! += input.ffnGroupBytes;
  }
  const devices = input.devices.map((device, i) => (context.frozen.includes(i) ? { ...device, memoryBudgetBytes: pinnedBytes[i]! } : device));
  return { ...input, devices, pinned: context.pinned };
}

/** The schedule a --placement choice gives for these devices. */
export function scheduleCluster(choice: PlacementChoice, model: LoadedModel, layout: GroupLayout, devices: readonly DeviceProfile[], wire: WireFormat, predictor: GroupPredictor | undefined): Schedule {
  return scheduleForChoice(choice, clusterScheduleInput(model, layout, devices, wire, predictor));
}
