/**
 * A device slice on disk: a small GGUF holding the compact layer tensors under their usual
 * names, the model's hyperparameters (llama.* keys, so readModelConfig reads them), and
 * `halo.shard.*` keys saying which model and groups it was cut from. The bytes depend only on
 * (model, groups, FFN block size), so the same slice always hashes the same: that is what
 * lets a worker's cache recognise it. Tensors of a kind the device holds nothing of are left
 * out (GGUF has no empty tensors).
 *
 * Loading maps the file (when a map function is given) and checks every claim before use: a
 * crafted or truncated shard is a ShardInvalidError, never a crash or a wrong answer.
 */
import { open, type FileHandle } from "node:fs/promises";
import { FileError, HaloError, ShardInvalidError, describeError } from "../base/index.js";
import { GGML_TYPE_ID, computableType, createMatrix, type GgmlType, type Matrix } from "../kernels/index.js";
import {
  GgufValueType, encodeGgufHeader, openGguf, readModelConfig, writeGguf,
  type GgufFile, type GgufTensorInfo, type GgufWriteSpec, type GgufWriteTensor, type GgufWriteValue, type ModelConfig, type OpenGgufOptions,
} from "../model/index.js";
import { createGroupLayout, normalizeRanges, type GroupLayout, type GroupRange } from "../partition/index.js";
import { assembleSlice, emptySliceMatrix, layerFromMatrices, readTensorSlice, resolveSlicedTensor, type DeviceSlice, type SliceReadOptions } from "./deviceSlice.js";
import { compactShape, layerSlicePlans, normalizeDeviceGroups, type DeviceGroups, type TensorSlicePlan } from "./sliceGeometry.js";

/** Bumped whenever the shard layout or its keys change meaning. */
export const SHARD_FORMAT_VERSION = 1;

export const SHARD_KEYS = {
  version: "halo.shard.version",
  /** SHA-256 (lowercase hex) of the model file the slice was cut from. */
  sourceSha256: "halo.shard.source_sha256",
  ffnBlockSize: "halo.shard.ffn_block_size",
  /** uint32 triples (layer, start, end), one per normalized range. */
  attentionGroups: "halo.shard.attention_groups",
  ffnGroups: "halo.shard.ffn_groups",
} as const;

/** What a shard claims to hold. */
export interface ShardIdentity {
  readonly sourceSha256: string;
  readonly ffnBlockSize: number;
  /** (nLayers) normalized global ranges. */
  readonly groups: readonly DeviceGroups[];
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

function u32(value: number): GgufWriteValue {
  return { type: GgufValueType.UINT32, value };
}
function f32(value: number): GgufWriteValue {
  return { type: GgufValueType.FLOAT32, value };
}

function rangeTriples(groups: readonly DeviceGroups[], kind: keyof DeviceGroups): number[] {
  return groups.flatMap((layer, l) => layer[kind].flatMap((r) => [l, r.start, r.end]));
}

/** The hyperparameters readModelConfig needs, written explicitly (the tokenizer is not copied, so vocab_size must be). */
function configMetadata(config: ModelConfig): Array<readonly [string, GgufWriteValue]> {
  const arch = config.architecture;
  return [
    ["general.architecture", { type: GgufValueType.STRING, value: arch }],
    ["general.name", { type: GgufValueType.STRING, value: config.name }],
    [`${arch}.context_length`, u32(config.contextLength)],
    [`${arch}.embedding_length`, u32(config.dim)],
    [`${arch}.feed_forward_length`, u32(config.hiddenDim)],
    [`${arch}.block_count`, u32(config.nLayers)],
    [`${arch}.attention.head_count`, u32(config.nHeads)],
    [`${arch}.attention.head_count_kv`, u32(config.nKvHeads)],
    [`${arch}.rope.dimension_count`, u32(config.ropeDim)],
    [`${arch}.rope.freq_base`, f32(config.ropeFreqBase)],
    [`${arch}.attention.layer_norm_rms_epsilon`, f32(config.rmsNormEps)],
    [`${arch}.vocab_size`, u32(config.vocabSize)],
  ];
}

/**
 * The GGUF spec of a shard. `tensor(plan)` supplies each non-empty compact tensor when it is
 * written, so a coordinator streams one tensor at a time; `typeOf(plan)` its type, without
 * reading it (the header is written first).
 */
function shardSpec(
  config: ModelConfig,
  layout: GroupLayout,
  groups: readonly DeviceGroups[],
  sourceSha256: string,
  source: { typeOf: (plan: TensorSlicePlan) => GgmlType; tensor: (plan: TensorSlicePlan) => Matrix },
): GgufWriteSpec {
  if (!SHA256_HEX.test(sourceSha256)) throw new HaloError("HALO_ERR_USAGE", `source sha256 must be 64 lowercase hex digits, got '${sourceSha256}'`);
  const metadata: Array<readonly [string, GgufWriteValue]> = [
    ...configMetadata(config),
    [SHARD_KEYS.version, u32(SHARD_FORMAT_VERSION)],
    [SHARD_KEYS.sourceSha256, { type: GgufValueType.STRING, value: sourceSha256 }],
    [SHARD_KEYS.ffnBlockSize, u32(layout.ffnBlockSize)],
    [SHARD_KEYS.attentionGroups, { type: GgufValueType.ARRAY, elementType: GgufValueType.UINT32, value: rangeTriples(groups, "attention") }],
    [SHARD_KEYS.ffnGroups, { type: GgufValueType.ARRAY, elementType: GgufValueType.UINT32, value: rangeTriples(groups, "ffn") }],
  ];
  const tensors: GgufWriteTensor[] = [];
  groups.forEach((g, l) => {
    for (const plan of layerSlicePlans(config, layout, l, g)) {
      if (plan.nKept === 0) continue;
      const { nRows, nCols } = compactShape(plan);
      tensors.push({ name: plan.name, typeId: GGML_TYPE_ID[source.typeOf(plan)], shape: [nCols, nRows], data: () => source.tensor(plan).data });
    }
  });
  return { metadata, tensors };
}

/** Writes a slice held in memory as a shard; returns the file size. */
export function writeShard(path: string, slice: DeviceSlice, sourceSha256: string): number {
  const matrix = (plan: TensorSlicePlan): Matrix => slice.layers[plan.layerIndex]![plan.role];
  return writeGguf(path, shardSpec(slice.config, slice.layout, slice.groups, sourceSha256, { typeOf: (plan) => matrix(plan).type, tensor: matrix }));
}

/**
 * Writes the shard of `groups` straight from the model file, one tensor in memory at a time
 * (the coordinator's path: it never holds a worker's whole slice). Returns the file size.
 */
export function writeShardFromModel(path: string, file: GgufFile, config: ModelConfig, layout: GroupLayout, groups: readonly DeviceGroups[], sourceSha256: string, options: SliceReadOptions = {}): number {
  const normalized = normalizeDeviceGroups(groups, layout, config.nLayers);
  const source = { typeOf: (plan: TensorSlicePlan) => resolveSlicedTensor(file, plan).type, tensor: (plan: TensorSlicePlan) => readTensorSlice(file, plan, options) };
  return writeGguf(path, shardSpec(config, layout, normalized, sourceSha256, source));
}

/**
 * writeShardFromModel, yielding to the event loop after every tensor (the coordinator cuts
 * shards while its control connections must keep their heartbeats). The same bytes.
 */
export async function writeShardFromModelAsync(path: string, file: GgufFile, config: ModelConfig, layout: GroupLayout, groups: readonly DeviceGroups[], sourceSha256: string, options: SliceReadOptions = {}): Promise<number> {
  const normalized = normalizeDeviceGroups(groups, layout, config.nLayers);
  const source = { typeOf: (plan: TensorSlicePlan) => resolveSlicedTensor(file, plan).type, tensor: (plan: TensorSlicePlan) => readTensorSlice(file, plan, options) };
  const spec = shardSpec(config, layout, normalized, sourceSha256, source);
  const { header, alignment } = encodeGgufHeader(spec);
  let handle: FileHandle;
  try {
    handle = await open(path, "w");
  } catch (error) {
    throw new FileError(path, `cannot create: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
  try {
    let position = 0;
    const write = async (bytes: Uint8Array): Promise<void> => {
      for (let done = 0; done < bytes.length; ) done += (await handle.write(bytes, done, bytes.length - done, position + done)).bytesWritten;
      position += bytes.length;
    };
    const pad = (): Promise<void> => write(new Uint8Array((alignment - (position % alignment)) % alignment));
    await write(header);
    await pad();
    for (const tensor of spec.tensors) {
      await write(typeof tensor.data === "function" ? tensor.data() : tensor.data);
      await pad();
    }
    return position;
  } finally {
    await handle.close();
  }
}

export interface LoadShardOptions extends OpenGgufOptions {
  /** Claims the shard must match (the plan's groups, the session's model): a mismatch is a ShardInvalidError. */
  expect?: Partial<ShardIdentity> & { config?: ModelConfig };
}

export interface LoadedShard {
  readonly slice: DeviceSlice;
  readonly identity: ShardIdentity;
}

/** Loads and validates a shard. Throws ShardInvalidError (its cause the underlying error) for anything wrong. */
export async function loadShard(path: string, options: LoadShardOptions = {}): Promise<LoadedShard> {
  let file: GgufFile;
  try {
    file = await openGguf(path, options.map === undefined ? {} : { map: options.map });
  } catch (error) {
    throw new ShardInvalidError(path, describeError(error), { cause: error });
  }
  try {
    return readShard(path, file, options);
  } catch (error) {
    if (error instanceof ShardInvalidError) throw error;
    throw new ShardInvalidError(path, describeError(error), { cause: error });
  } finally {
    // Mapped tensors stay valid after the descriptor closes; unmapped ones were copied.
    file.close();
  }
}

/** A shard's claims and tensor records, checked; no weight byte is read. */
export interface CheckedShard {
  readonly config: ModelConfig;
  readonly layout: GroupLayout;
  readonly identity: ShardIdentity;
  /** (nLayers) per layer, SLICE_ROLES order: each compact tensor's plan and, when it holds any rows, its record in the file. */
  readonly tensors: ReadonlyArray<ReadonlyArray<{ plan: TensorSlicePlan; info: GgufTensorInfo | undefined; type: GgmlType }>>;
}

/**
 * Checks everything a shard claims (version, model, groups, block size, hyperparameters, each
 * tensor's shape and type, no tensor too many) against its header alone. Throws ShardInvalidError.
 */
export function checkShard(path: string, file: GgufFile, options: LoadShardOptions = {}): CheckedShard {
  const fail = (message: string): never => {
    throw new ShardInvalidError(path, message);
  };
  const meta = file.metadata;
  const version = meta.integer(SHARD_KEYS.version);
  if (version !== SHARD_FORMAT_VERSION) fail(`${SHARD_KEYS.version} is ${version ?? "missing"}, this build reads ${SHARD_FORMAT_VERSION}`);
  const sourceSha256 = meta.string(SHARD_KEYS.sourceSha256) ?? "";
  if (!SHA256_HEX.test(sourceSha256)) fail(`${SHARD_KEYS.sourceSha256} must be 64 lowercase hex digits`);
  const config = readModelConfig(meta);
  const ffnBlockSize = meta.integer(SHARD_KEYS.ffnBlockSize);
  if (ffnBlockSize === undefined || ffnBlockSize < 1 || ffnBlockSize > config.hiddenDim) fail(`${SHARD_KEYS.ffnBlockSize} is ${ffnBlockSize ?? "missing"}, expected 1..${config.hiddenDim}`);
  const layout = createGroupLayout(config, ffnBlockSize);
  const attention = readGroupTriples(path, file, SHARD_KEYS.attentionGroups, config.nLayers, layout.nAttentionGroups);
  const ffn = readGroupTriples(path, file, SHARD_KEYS.ffnGroups, config.nLayers, layout.nFfnGroups);
  const groups: DeviceGroups[] = attention.map((a, l) => ({ attention: a, ffn: ffn[l]! }));
  const identity: ShardIdentity = { sourceSha256, ffnBlockSize: layout.ffnBlockSize, groups };
  checkExpectations(path, identity, config, options.expect);
  const expectedNames = new Set<string>();
  const tensors = groups.map((g, l) => layerSlicePlans(config, layout, l, g).map((plan) => {
    if (plan.nKept === 0) return { plan, info: undefined, type: "F32" as GgmlType };
    expectedNames.add(plan.name);
    return { plan, ...shardTensorInfo(path, file, plan) };
  }));
  const extra = file.tensors.find((t) => !expectedNames.has(t.name));
  if (extra !== undefined) fail(`unexpected tensor '${extra.name}' for the groups it claims`);
  return { config, layout, identity, tensors };
}

function readShard(path: string, file: GgufFile, options: LoadShardOptions): LoadedShard {
  const { config, layout, identity, tensors } = checkShard(path, file, options);
  const layers = tensors.map((layer) => layerFromMatrices(layer.map(({ plan, info, type }) => {
    if (info === undefined) return emptySliceMatrix(plan);
    const { nRows, nCols } = compactShape(plan);
    return createMatrix(plan.name, type, nRows, nCols, file.tensorBytes(info));
  })));
  return { slice: assembleSlice(config, layout, identity.groups, layers), identity };
}

/** Per-layer ranges from a triples array, which must be in canonical form: layer order, each layer's ranges normalized. */
function readGroupTriples(path: string, file: GgufFile, key: string, nLayers: number, nGroups: number): GroupRange[][] {
  const values = file.metadata.array(key, GgufValueType.UINT32)?.map(Number);
  if (values === undefined) throw new ShardInvalidError(path, `${key} is missing`);
  if (values.length % 3 !== 0) throw new ShardInvalidError(path, `${key} has ${values.length} values, not (layer, start, end) triples`);
  const layers: GroupRange[][] = Array.from({ length: nLayers }, () => []);
  let previousLayer = 0;
  for (let i = 0; i < values.length; i += 3) {
    const layer = values[i]!;
    if (layer < previousLayer || layer >= nLayers) throw new ShardInvalidError(path, `${key} names layer ${layer} out of order or past the model's ${nLayers}`);
    previousLayer = layer;
    layers[layer]!.push({ start: values[i + 1]!, end: values[i + 2]! });
  }
  return layers.map((ranges, l) => {
    let normalized: GroupRange[];
    try {
      normalized = normalizeRanges(ranges, nGroups);
    } catch (error) {
      throw new ShardInvalidError(path, `${key} layer ${l}: ${describeError(error)}`, { cause: error });
    }
    if (normalized.length !== ranges.length || normalized.some((r, i) => r.start !== ranges[i]!.start || r.end !== ranges[i]!.end)) {
      throw new ShardInvalidError(path, `${key} layer ${l}: ranges are not sorted, disjoint, non-empty and merged`);
    }
    return normalized;
  });
}

function sameGroups(a: readonly DeviceGroups[], b: readonly DeviceGroups[]): boolean {
  const key = (groups: readonly DeviceGroups[]): string => JSON.stringify(groups.map((g) => [g.attention.map((r) => [r.start, r.end]), g.ffn.map((r) => [r.start, r.end])]));
  return key(a) === key(b);
}

const CONFIG_FIELDS = ["architecture", "dim", "hiddenDim", "nLayers", "nHeads", "nKvHeads", "headDim", "vocabSize", "contextLength", "rmsNormEps", "ropeFreqBase", "ropeDim", "ropeStyle"] as const;

function checkExpectations(path: string, identity: ShardIdentity, config: ModelConfig, expect: LoadShardOptions["expect"]): void {
  if (expect === undefined) return;
  const fail = (message: string): never => {
    throw new ShardInvalidError(path, message);
  };
  if (expect.sourceSha256 !== undefined && expect.sourceSha256 !== identity.sourceSha256) fail(`cut from model ${identity.sourceSha256}, expected ${expect.sourceSha256}`);
  if (expect.ffnBlockSize !== undefined && expect.ffnBlockSize !== identity.ffnBlockSize) fail(`FFN block size ${identity.ffnBlockSize}, expected ${expect.ffnBlockSize}`);
  if (expect.config !== undefined) {
    const expected = expect.config;
    const field = CONFIG_FIELDS.find((f) => expected[f] !== config[f]);
    if (field !== undefined) fail(`hyperparameter ${field} is ${config[field]}, expected ${expected[field]}`);
  }
  if (expect.groups !== undefined) {
    let wanted: DeviceGroups[];
    try {
      wanted = normalizeDeviceGroups(expect.groups, createGroupLayout(config, identity.ffnBlockSize), config.nLayers);
    } catch (error) {
      throw new ShardInvalidError(path, `the expected groups do not fit the shard's model: ${describeError(error)}`, { cause: error });
    }
    if (!sameGroups(wanted, identity.groups)) fail("holds other groups than the plan gives this device");
  }
}

function shardTensorInfo(path: string, file: GgufFile, plan: TensorSlicePlan): { info: GgufTensorInfo; type: GgmlType } {
  const info = file.tensor(plan.name);
  if (info === undefined) throw new ShardInvalidError(path, `tensor '${plan.name}' is missing`);
  const { nRows, nCols } = compactShape(plan);
  if (info.shape.length !== 2 || info.shape[0] !== nCols || info.shape[1] !== nRows) {
    throw new ShardInvalidError(path, `tensor '${plan.name}' has shape [${info.shape.join(", ")}], its groups need [${nCols}, ${nRows}]`);
  }
  const type = computableType(info.typeId);
  if (type === undefined) throw new ShardInvalidError(path, `tensor '${plan.name}' has type ${info.typeName}, which halo cannot compute with`);
  return { info, type };
}
