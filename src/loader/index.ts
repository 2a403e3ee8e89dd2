export {
  SLICE_ROLES, checkSliceAlignment, compactShape, layerSlicePlans, localLayout, localRanges, normalizeDeviceGroups, sliceByteSpans,
} from "./sliceGeometry.js";
export type { ByteSpan, DeviceGroups, SliceRole, TensorSlicePlan } from "./sliceGeometry.js";
export { readDeviceSlice, readDeviceSliceAsync, readTensorSlice } from "./deviceSlice.js";
export type { DeviceSlice, SliceLayerWeights, SliceReadOptions, TensorByteReader } from "./deviceSlice.js";
export { SHARD_FORMAT_VERSION, SHARD_KEYS, loadShard, writeShard, writeShardFromModel, writeShardFromModelAsync } from "./shardFile.js";
export type { LoadShardOptions, LoadedShard, ShardIdentity } from "./shardFile.js";
export { defaultShardCacheDir, prepareShard, sha256OfFile, shardCachePath, shardKey, shardPartialPath } from "./shardStore.js";
export type { PrepareShardOptions, ShardDescriptor } from "./shardStore.js";
export { GroupStore } from "./groupStore.js";
export type { GroupStoreOptions, GroupStoreStats, LoaderIoStats } from "./groupStore.js";
export { planResidency } from "./residency.js";
export type { GroupImportance, PartResidency, ResidencyPlan } from "./residency.js";
export { RowSplitMatrix, rowSplitKernels } from "./rowSplitMatrix.js";
export type { RowPiece } from "./rowSplitMatrix.js";
export { DEFAULT_MAX_GAP_BYTES, planReads, rowRuns } from "./streamGeometry.js";
export type { PartGeometry, ReadOp, ReadRun, TensorSource } from "./streamGeometry.js";
export { modelStreamSource, shardStreamSource } from "./streamSources.js";
export type { StreamSource } from "./streamSources.js";
export { checkShard } from "./shardFile.js";
export type { CheckedShard } from "./shardFile.js";
