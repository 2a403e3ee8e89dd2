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
