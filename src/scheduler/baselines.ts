/**
 * The placements halo is compared with, both contiguous per device like distributed-llama's split:
 * - uniform: equal shares for every device able to hold the kind;
 * - proportional: shares in proportion to each device's speed for the kind.
 * They ignore memory and reliability by design; evaluatePlacement reports what that costs.
 * Pinned groups (ScheduleInput.pinned) are overwritten onto their devices after the split, so
 * a baseline is the placement a caller bound by the same pins would run, and the scheduler's
 * "never worse than the baselines" compares like with like. The free groups keep the split's
 * devices, so the shares are no longer exact where pins took groups.
 */
import { proportionalSplit, type LayerPlacement, type Placement } from "../partition/index.js";
import { CostModel, requireCapableDevices } from "./costModel.js";
import { requirePinsOnCapableDevices } from "./pinnedGroups.js";
import { validateScheduleInput, type ScheduleInput } from "./scheduleInput.js";

export type BaselineName = "uniform" | "proportional";

/** A baseline placement for a validated model, its pins applied (the scheduler also starts a local search from it). */
export function baselinePlacement(model: CostModel, name: BaselineName): Placement {
  requireCapableDevices(model);
  requirePinsOnCapableDevices(model);
  const [attention, ffn] = [0, 1].map((k) => {
    const shares = model.devices.map((d) => (d.excluded[k] !== undefined ? 0 : name === "uniform" ? 1 : 1 / d.groupMs[k]!));
    return proportionalSplit(model.nGroups[k]!, shares);
  });
  const layer: LayerPlacement = { attention: attention!, ffn: ffn! };
  return model.pins.apply({ nDevices: model.nDevices, layers: Array.from({ length: model.nLayers }, () => layer) });
}

/** Equal shares, whatever the speeds, for every device that can compute and hold a group of the kind; pinned groups on their pins. */
export function uniformPlacement(input: ScheduleInput): Placement {
  validateScheduleInput(input);
  return baselinePlacement(new CostModel(input), "uniform");
}

/** Shares in proportion to each device's speed (1 / ms per group) for each kind; devices that cannot hold a group get none; pinned groups on their pins. */
export function speedProportionalPlacement(input: ScheduleInput): Placement {
  validateScheduleInput(input);
  return baselinePlacement(new CostModel(input), "proportional");
}
