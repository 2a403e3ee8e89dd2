/**
 * How a worker gets the weights of the groups a plan gives it: from its own copy of the model
 * (only those rows and columns are read), or, without one, as a shard the coordinator sends over
 * the control connection (hash-verified, cached on disk). Either way the result is a GroupWorker
 * over compact tensors, reused while later plans give the same groups.
 */
import { HaloError, describeError } from "../base/index.js";
import type { MatrixKernels } from "../kernels/index.js";
import {
  GroupStore, checkShard, loadShard, modelStreamSource, prepareShard, readDeviceSliceAsync, rowSplitKernels, shardStreamSource,
  type DeviceGroups, type GroupStoreOptions, type StreamSource,
} from "../loader/index.js";
import { openGguf, type GgufFile, type ModelConfig, type OpenGgufOptions } from "../model/index.js";
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
  /**
   * Keep at most this many bytes of weights in memory and stream the rest from the model file
   * (or the received shard) while computing (loader/groupStore.ts). Undefined: all resident.
   */
  budget?: Omit<GroupStoreOptions, "now">;
  /**
   * Under a budget with a local model: stream from a shard of the groups cut once into the
   * shard cache ("shard", the default: compact rows, a few large reads per layer phase) or from
   * the model file itself ("model": no extra disk, but W_o/W_2 columns read in strided runs).
   */
  streamFrom?: "shard" | "model";
}

/** A worker's compute state for one set of groups of one model. */
export interface LoadedGroups {
  modelSha256: string;
  config: ModelConfig;
  ffnBlockSize: number;
  /** Canonical text of the groups, to tell whether a new plan needs new weights. */
  groupsKey: string;
  worker: GroupWorker;
  /** Bytes of weights held (under a budget: resident rows, staging slots and scratch). */
  sizeBytes: number;
  /** The model's layer types (from layer 0), which the worker's profile is measured in. */
  tensorTypes: LayerTensorTypes;
  fromShard: boolean;
  /** Under a memory budget: the store every compute acquires its layer phase from. */
  store?: GroupStore;
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
  const key = (groups: readonly DeviceGroups[]): string => `${modelSha256}/${message.ffnBlockSize}/${JSON.stringify(groups)}`;
  if (current !== undefined && nLayers !== undefined && current.modelSha256 === modelSha256 && current.groupsKey === key(planGroups(message, nLayers))) return current;
  const contextFor = (config: ModelConfig): number => source.contextLength ?? Math.min(config.contextLength, 4096);
  if (local !== undefined) {
    const groups = planGroups(message, local.config.nLayers);
    const layout = createGroupLayout(local.config, message.ffnBlockSize);
    if (source.budget !== undefined) {
      const stream = source.streamFrom === "model"
        ? await asPlanError(async () => modelStreamSource(local.file, local.config, layout, groups))
        : await openShardStream((await asPlanError(() => prepareShard({ file: local.file, config: local.config, layout, groups, sourceSha256: local.sha256, cacheDir: source.shardCacheDir }))).path, modelSha256, message);
      return { modelSha256, ffnBlockSize: message.ffnBlockSize, groupsKey: key(groups), fromShard: false, ...(await budgeted(stream, source, contextFor(local.config))) };
    }
    const slice = await asPlanError(() => readDeviceSliceAsync(local.file, local.config, layout, groups));
    return { modelSha256, config: local.config, ffnBlockSize: message.ffnBlockSize, groupsKey: key(groups), worker: GroupWorker.fromSlice(slice, source.kernels, contextFor(local.config), MAX_BATCH), sizeBytes: slice.sizeBytes, tensorTypes: tensorTypesOfLayer(slice.layers[0]!), fromShard: false };
  }
  connection.send({ type: "shard-request", sequence: message.sequence });
  const offer = await connection.receive({ deadlineMs: undefined });
  if (offer.type !== "shard-offer") throw new HaloError("HALO_ERR_MESSAGE_UNEXPECTED", `the coordinator answered shard-request with '${offer.type}'`);
  const received = await receiveShard(connection, offer, { cacheDir: source.shardCacheDir, onProgress: source.onShardProgress });
  if (source.budget !== undefined) {
    const stream = await openShardStream(received.path, modelSha256, message);
    return { modelSha256, ffnBlockSize: message.ffnBlockSize, groupsKey: key(stream.groups), fromShard: true, ...(await budgeted(stream, source, contextFor(stream.config))) };
  }
  const { slice } = await loadShard(received.path, { map: source.map, expect: { sourceSha256: modelSha256, ffnBlockSize: message.ffnBlockSize } });
  const groups = planGroups(message, slice.config.nLayers);
  const expected = await asPlanError(async () => createGroupLayout(slice.config, message.ffnBlockSize));
  if (JSON.stringify(slice.groups) !== JSON.stringify(groups) || slice.layout.ffnBlockSize !== expected.ffnBlockSize) {
    throw new HaloError("HALO_ERR_MESSAGE_INVALID", "the shard the coordinator sent holds other groups than its plan");
  }
  return { modelSha256, config: slice.config, ffnBlockSize: message.ffnBlockSize, groupsKey: key(groups), worker: GroupWorker.fromSlice(slice, source.kernels, contextFor(slice.config), MAX_BATCH), sizeBytes: slice.sizeBytes, tensorTypes: tensorTypesOfLayer(slice.layers[0]!), fromShard: true };
}

/** The store for `stream` under the budget, and a worker computing from it. */
async function budgeted(stream: StreamSource, source: SliceSource, contextLength: number): Promise<Pick<LoadedGroups, "config" | "worker" | "sizeBytes" | "store" | "tensorTypes">> {
  const store = await GroupStore.open(stream, source.budget!);
  const { residentBytes, stagingBytes, scratchBytes } = store.residency;
  const worker = GroupWorker.fromSlice(store.slice, rowSplitKernels(source.kernels), contextLength, MAX_BATCH);
  return { config: stream.config, worker, sizeBytes: residentBytes + stagingBytes + scratchBytes, store, tensorTypes: tensorTypesOfLayer(store.slice.layers[0]!) };
}

/** A received shard's header checked against the plan, without reading its weights. */
async function openShardStream(path: string, modelSha256: string, message: PlanMessage): Promise<StreamSource> {
  const file = await openGguf(path);
  try {
    const checked = checkShard(path, file, { expect: { sourceSha256: modelSha256, ffnBlockSize: message.ffnBlockSize } });
    const groups = planGroups(message, checked.config.nLayers);
    if (JSON.stringify(checked.identity.groups) !== JSON.stringify(groups)) throw new HaloError("HALO_ERR_MESSAGE_INVALID", "the shard the coordinator sent holds other groups than its plan");
    return shardStreamSource(file, checked);
  } finally {
    file.close();
  }
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
