export { DEFAULT_FFN_BLOCK_SIZE, GROUP_KINDS, allGroups, createGroupLayout, ffnNeuronRange, groupCount, normalizeRanges, rangesFromIndices } from "./groups.js";
export type { GroupKind, GroupLayout, GroupRange, GroupShape } from "./groups.js";
export { checkShares, devicesInPhase, groupsOfDevice, proportionalPlacement, proportionalSplit, validatePlacement } from "./placement.js";
export type { LayerPlacement, Placement } from "./placement.js";
