/**
 * How a worker gets the weights of the groups a plan gives it: from its own copy of the model
 * (only those rows and columns are read), or, without one, as a shard the coordinator sends over
 * the control connection (hash-verified, cached on disk). Either way the result is a GroupWorker
 * over compact tensors, reused while later plans give the same groups.
 */
import { HaloError, describeError } from "../base/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import { loadShard, readDeviceSliceAsync, type DeviceGroups } from "../loader/index.js";
import type { GgufFile, ModelConfig, OpenGgufOptions } from "../model/index.js";
import type { ControlConnection, PlanMessage } from "../net/index.js";
import { createGroupLayout, type GroupRange } from "../partition/index.js";
import { GroupWorker } from "./groupWorker.js";
import { tensorTypesOfLayer, type LayerTensorTypes } from "./syntheticGroup.js";
import { receiveShard, type ShardProgress } from "./shardTransfer.js";

/** The model file a worker holds, opened, with what it was checked to be. */
export interface LocalModel {
  file: GgufFile;
  config: ModelConfig;
  sha256: string;
}

export interface SliceSource {
  /** The worker's own copy, or undefined: then the coordinator sends shards. */
  local: LocalModel | undefined;
  /** Where received shards are kept. */
  shardCacheDir: string;
  /** Maps a shard file (the native mmap), or undefined to read it into memory. */
  map: OpenGgufOptions["map"];
  kernels: MatrixKernels;
  /** KV cache length; undefined: the model's context, capped at 4096. */
  contextLength: number | undefined;
  onShardProgress?: ShardProgress;
}

/** A worker's compute state for one set of groups of one model. */
export interface LoadedGroups {
  modelSha256: string;
  config: ModelConfig;
  ffnBlockSize: number;
  /** Canonical text of the groups, to tell whether a new plan needs new weights. */
  groupsKey: string;
  worker: GroupWorker;
  /** Bytes of weights held. */
  sizeBytes: number;
  /** The model's layer types (from layer 0), which the worker's profile is measured in. */
  tensorTypes: LayerTensorTypes;
  fromShard: boolean;
}

const MAX_BATCH = 512;

/** The plan's ranges as the loader's per-layer groups (a shared set repeated for every layer). */
export function planGroups(message: PlanMessage, nLayers: number): DeviceGroups[] {
  const toRanges = (ranges: ReadonlyArray<readonly [number, number]>): GroupRange[] => ranges.map(([start, end]) => ({ start, end }));
  const layers = Array.isArray(message.groups) ? message.groups : Array.from({ length: nLayers }, () => message.groups as Exclude<PlanMessage["groups"], unknown[]>);
  if (layers.length !== nLayers) throw new HaloError("HALO_ERR_MESSAGE_INVALID", `plan for ${layers.length} layers, the model has ${nLayers}`);
  return layers.map((layer) => ({ attention: toRanges(layer.attention), ffn: toRanges(layer.ffn) }));
}

/**
 * The groups of `message` ready to compute: `current` again when it already holds them, else
 * read from the local model or received as a shard (asking with shard-request on `connection`).
 */
export async function loadPlanGroups(message: PlanMessage, modelSha256: string, current: LoadedGroups | undefined, source: SliceSource, connection: ControlConnection): Promise<LoadedGroups> {
  const local = source.local;
  const nLayers = local?.config.nLayers ?? current?.config.nLayers;
  const key = (groups: DeviceGroups[]): string => `${modelSha256}/${message.ffnBlockSize}/${JSON.stringify(groups)}`;
  if (current !== undefined && nLayers !== undefined && current.modelSha256 === modelSha256 && current.groupsKey === key(planGroups(message, nLayers))) return current;
  const contextFor = (config: ModelConfig): number => source.contextLength ?? Math.min(config.contextLength, 4096);
  if (local !== undefined) {
    const groups = planGroups(message, local.config.nLayers);
    const layout = createGroupLayout(local.config, message.ffnBlockSize);
    const slice = await asPlanError(() => readDeviceSliceAsync(local.file, local.config, layout, groups));
    return { modelSha256, config: local.config, ffnBlockSize: message.ffnBlockSize, groupsKey: key(groups), worker: GroupWorker.fromSlice(slice, source.kernels, contextFor(local.config), MAX_BATCH), sizeBytes: slice.sizeBytes, tensorTypes: tensorTypesOfLayer(slice.layers[0]!), fromShard: false };
  }
  connection.send({ type: "shard-request", sequence: message.sequence });
  const offer = await connection.receive({ deadlineMs: undefined });
  if (offer.type !== "shard-offer") throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `the coordinator answered shard-request with '${offer.type}'`);
  const received = await receiveShard(connection, offer, { cacheDir: source.shardCacheDir, onProgress: source.onShardProgress });
  const { slice } = await loadShard(received.path, { map: source.map, expect: { sourceSha256: modelSha256, ffnBlockSize: message.ffnBlockSize } });
  const groups = planGroups(message, slice.config.nLayers);
  const expected = await asPlanError(async () => createGroupLayout(slice.config, message.ffnBlockSize));
  if (JSON.stringify(slice.groups) !== JSON.stringify(groups) || slice.layout.ffnBlockSize !== expected.ffnBlockSize) {
    throw new HaloError("HALO_ERR_MESSAGE_INVALID", "the shard the coordinator sent holds other groups than its plan");
  }
  return { modelSha256, config: slice.config, ffnBlockSize: message.ffnBlockSize, groupsKey: key(groups), worker: GroupWorker.fromSlice(slice, source.kernels, contextFor(slice.config), MAX_BATCH), sizeBytes: slice.sizeBytes, tensorTypes: tensorTypesOfLayer(slice.layers[0]!), fromShard: true };
}

/** A plan the loader cannot cut (ranges out of bounds, a misaligned block) is the coordinator's invalid message. */
async function asPlanError<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof HaloError && error.code !== "HALO_ERR_USAGE" && error.code !== "HALO_ERR_SLICE_ALIGNMENT") throw error;
    throw new HaloError("HALO_ERR_MESSAGE_INVALID", `the plan cannot be loaded: ${describeError(error)}`);
  }
}
