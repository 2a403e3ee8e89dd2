/**
 * Crafted GGUF byte buffers for the loader tests, including files that `writeGguf` refuses to
 * produce: raw u32/u64/string pushes, counts and lengths that disagree with the bytes, unknown
 * value and tensor types, bad alignments, short data sections.
 *
 * Three layers, lowest first:
 * - `GgufByteBuilder`: little-endian pushes (`u32`, `u64`, `string` with an optional *declared*
 *   length that differs from the real one) that also record where each count, length and type
 *   field landed (`fields`), so fuzzers can mutate them on purpose.
 * - `craftGguf(spec)`: a whole file from a `CraftSpec` (header overrides, KV entries, tensor
 *   records, data section); every field can be overridden to an invalid value.
 * - `handcraftedGguf(type)`: one file per category of llama.cpp's `tests/test-gguf.cpp`
 *   (`HANDCRAFTED_HEADER_BAD_MAGIC` … `HANDCRAFTED_DATA_CUSTOM_ALIGN`), under the same names,
 *   so coverage can be checked one to one.
 *   `validSmallGguf()` is a tiny valid llama-shaped model for property tests.
 *
 * Independent of the writer under test: the bytes are assembled here field by field.
 */
import { SeededRandom } from "../../src/base/random.js";
import { ggmlTypeLayout } from "../../src/kernels/index.js";
import { GGUF_MAGIC, GgufValueType } from "../../src/model/ggufFormat.js";
import type { GgufWriteValue } from "../../src/model/ggufWriter.js";

// ---------------------------------------------------------------------------------------------
// Layer 1: bytes and field locations

/** What a recorded field means; fuzzers pick interesting values per kind. */
export type GgufFieldKind =
  | "magic"
  | "version"
  | "n_tensors"
  | "n_kv"
  | "key_length"
  | "value_type"
  | "element_type"
  | "array_length"
  | "string_length"
  | "scalar"
  | "tensor_name_length"
  | "n_dims"
  | "ne"
  | "tensor_type"
  | "tensor_offset";

export interface GgufField {
  readonly kind: GgufFieldKind;
  /** Byte offset of the field in the file. */
  readonly offset: number;
  readonly byteLength: 4 | 8;
  /** Human-readable owner, e.g. `'general.name' length` or `ne[1] of 'blk.0.attn_q.weight'`. */
  readonly label: string;
}

interface FieldTag {
  readonly kind: GgufFieldKind;
  readonly label: string;
}

/** Appends little-endian values; never validates anything. */
export class GgufByteBuilder {
  private readonly parts: Uint8Array[] = [];
  private size = 0;
  readonly fields: GgufField[] = [];

  get length(): number {
    return this.size;
  }

  raw(bytes: Uint8Array | readonly number[]): this {
    const copy = Uint8Array.from(bytes);
    this.parts.push(copy);
    this.size += copy.length;
    return this;
  }
  u8(value: number): this {
    return this.raw([value & 0xff]);
  }
  /** Any integer; written modulo 2^32 (so -1 becomes 0xFFFFFFFF). */
  u32(value: number, tag?: FieldTag): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0, true);
    this.tag(tag, 4);
    return this.raw(b);
  }
  /** Any integer; written modulo 2^64 (so -1n becomes 2^64 - 1). */
  u64(value: bigint | number, tag?: FieldTag): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(value)), true);
    this.tag(tag, 8);
    return this.raw(b);
  }
  f32(value: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    return this.raw(b);
  }
  f64(value: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, value, true);
    return this.raw(b);
  }
  /**
   * A GGUF string: u64 length, then the bytes. `declaredLength` writes a length that differs
   * from the number of bytes that follow (a lie the reader must catch).
   */
  string(value: string | Uint8Array, options: { declaredLength?: bigint | number; tag?: FieldTag } = {}): this {
    const bytes = typeof value === "string" ? new TextEncoder().encode(value) : value;
    this.u64(options.declaredLength ?? bytes.length, options.tag);
    return this.raw(bytes);
  }
  zeros(n: number): this {
    return this.raw(new Uint8Array(n));
  }
  /** Pads with zeros to a multiple of `alignment`. */
  padTo(alignment: number): this {
    const rem = this.size % alignment;
    return rem === 0 ? this : this.zeros(alignment - rem);
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.size);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  private tag(tag: FieldTag | undefined, byteLength: 4 | 8): void {
    if (tag !== undefined) this.fields.push({ kind: tag.kind, offset: this.size, byteLength, label: tag.label });
  }
}

// ---------------------------------------------------------------------------------------------
// Layer 2: whole files from a spec

export type CraftScalar = number | bigint | boolean | string;

/** One metadata entry; `write` emits key, type and value (crafted entries may lie in any of them). */
export interface CraftKv {
  readonly key: string;
  write(b: GgufByteBuilder): void;
}

/** Writes one fixed-size or string value of a *valid* GGUF type. */
function writeScalar(b: GgufByteBuilder, type: number, value: CraftScalar, label: string): void {
  switch (type) {
    case GgufValueType.UINT8:
    case GgufValueType.INT8:
      b.u8(Number(value));
      return;
    case GgufValueType.UINT16:
    case GgufValueType.INT16: {
      const v = Number(value) & 0xffff;
      b.raw([v & 0xff, v >>> 8]);
      return;
    }
    case GgufValueType.UINT32:
    case GgufValueType.INT32:
      b.u32(Number(value), { kind: "scalar", label });
      return;
    case GgufValueType.FLOAT32:
      b.f32(Number(value));
      return;
    case GgufValueType.BOOL:
      b.u8(value === true || value === 1 ? 1 : value === false ? 0 : Number(value));
      return;
    case GgufValueType.STRING:
      b.string(String(value), { tag: { kind: "string_length", label: `${label} length` } });
      return;
    case GgufValueType.UINT64:
    case GgufValueType.INT64:
      b.u64(typeof value === "bigint" ? value : BigInt(Number(value)), { kind: "scalar", label });
      return;
    case GgufValueType.FLOAT64:
      b.f64(Number(value));
      return;
    default:
      throw new Error(`craftedGguf: writeScalar cannot write type ${type}; use kvRaw for invalid types`);
  }
}

function writeKey(b: GgufByteBuilder, key: string, declaredKeyLength?: bigint | number): void {
  const tag = { kind: "key_length" as const, label: `key '${key}' length` };
  b.string(key, declaredKeyLength === undefined ? { tag } : { declaredLength: declaredKeyLength, tag });
}

/** A scalar (or string) entry. `declaredKeyLength` lies about the key's length. */
export function kvScalar(key: string, type: number, value: CraftScalar, options: { declaredKeyLength?: bigint | number } = {}): CraftKv {
  return {
    key,
    write(b) {
      writeKey(b, key, options.declaredKeyLength);
      b.u32(type, { kind: "value_type", label: `type of '${key}'` });
      writeScalar(b, type, value, `'${key}'`);
    },
  };
}

/** A string entry whose declared length may differ from its bytes. */
export function kvString(key: string, value: string | Uint8Array, options: { declaredLength?: bigint | number } = {}): CraftKv {
  return {
    key,
    write(b) {
      writeKey(b, key);
      b.u32(GgufValueType.STRING, { kind: "value_type", label: `type of '${key}'` });
      const tag = { kind: "string_length" as const, label: `'${key}' length` };
      b.string(value, options.declaredLength === undefined ? { tag } : { declaredLength: options.declaredLength, tag });
    },
  };
}

/**
 * An array entry. `declaredLength` lies about the element count; `elementType` may be any u32
 * (elements of an unknown type are written as nothing).
 */
export function kvArray(key: string, elementType: number, values: readonly CraftScalar[], options: { declaredLength?: bigint | number } = {}): CraftKv {
  return {
    key,
    write(b) {
      writeKey(b, key);
      b.u32(GgufValueType.ARRAY, { kind: "value_type", label: `type of '${key}'` });
      b.u32(elementType, { kind: "element_type", label: `element type of '${key}'` });
      b.u64(options.declaredLength ?? values.length, { kind: "array_length", label: `length of '${key}'` });
      if (elementType > GgufValueType.FLOAT64 || elementType === GgufValueType.ARRAY) return;
      values.forEach((v, i) => writeScalar(b, elementType, v, `'${key}'[${i}]`));
    },
  };
}

/**
 * Arrays nested `depth` levels deep (depth 1 is a plain array of `innermostType`), one element
 * per level, the innermost holding `innermost`.
 */
export function kvNestedArray(key: string, depth: number, innermostType: number, innermost: readonly CraftScalar[]): CraftKv {
  return {
    key,
    write(b) {
      writeKey(b, key);
      b.u32(GgufValueType.ARRAY, { kind: "value_type", label: `type of '${key}'` });
      for (let level = depth; level > 1; level--) {
        b.u32(GgufValueType.ARRAY, { kind: "element_type", label: `element type of '${key}' level ${level}` });
        b.u64(1, { kind: "array_length", label: `length of '${key}' level ${level}` });
      }
      b.u32(innermostType, { kind: "element_type", label: `element type of '${key}'` });
      b.u64(innermost.length, { kind: "array_length", label: `length of '${key}'` });
      innermost.forEach((v, i) => writeScalar(b, innermostType, v, `'${key}'[${i}]`));
    },
  };
}

/** Key, then any u32 type id, then `valueBytes` verbatim (for unknown or mismatched types). */
export function kvRaw(key: string, typeId: number, valueBytes: Uint8Array | readonly number[], options: { declaredKeyLength?: bigint | number } = {}): CraftKv {
  return {
    key,
    write(b) {
      writeKey(b, key, options.declaredKeyLength);
      b.u32(typeId, { kind: "value_type", label: `type of '${key}'` });
      b.raw(valueBytes);
    },
  };
}

/** The entry the writer would emit for a `GgufWriteValue` (used to build valid files). */
export function kvFromWriteValue(key: string, v: GgufWriteValue): CraftKv {
  if (v.type === GgufValueType.ARRAY) return kvArray(key, v.elementType, Array.from(v.value as ArrayLike<CraftScalar>));
  return kvScalar(key, v.type, v.value);
}

export interface CraftTensor {
  readonly name: string | Uint8Array;
  readonly typeId: number;
  /** ggml ne, ne[0] contiguous; bigints for values outside the safe range, negatives allowed. */
  readonly ne: readonly (number | bigint)[];
  /** Written instead of `ne.length`. */
  readonly nDims?: number;
  /** Written instead of the computed relative offset. */
  readonly offset?: bigint | number;
  /** Tensor bytes; defaults to the byte pattern `(fileOffsetInDataSection + i) % 256`. */
  readonly data?: Uint8Array;
}

export interface CraftSpec {
  readonly magic?: number;
  readonly version?: number;
  /** Written instead of `tensors.length`. */
  readonly nTensors?: bigint | number;
  /** Written instead of `kvs.length`. */
  readonly nKv?: bigint | number;
  readonly kvs?: readonly CraftKv[];
  readonly tensors?: readonly CraftTensor[];
  /** Pads the header and each tensor to this (the file's real alignment). Defaults to 32. */
  readonly alignment?: number;
  /** Alignment used to compute tensor offsets, when it should disagree with `alignment`. */
  readonly offsetAlignment?: number;
  /**
   * - "full" (default): every tensor's bytes, each padded to `alignment` except the last.
   * - "none": the file ends after the tensor records (padded to `alignment` if any tensors).
   * - { dropBytes }: the full data section minus its last `dropBytes` bytes.
   */
  readonly data?: "full" | "none" | { readonly dropBytes: number };
  /** Stop after the four header fields (llama.cpp's HEADER_* files), padded to `alignment`. */
  readonly headerOnly?: boolean;
}

export interface CraftedGguf {
  readonly bytes: Uint8Array;
  readonly fields: readonly GgufField[];
  /** Relative offset of each tensor's data as written, in record order. */
  readonly tensorOffsets: readonly bigint[];
}

/** Bytes of a tensor, or undefined if its type or shape is invalid (then it gets no data). */
export function craftedTensorBytes(typeId: number, ne: readonly (number | bigint)[]): bigint | undefined {
  const layout = ggmlTypeLayout(typeId);
  if (layout === undefined || ne.length === 0) return undefined;
  let n = 1n;
  for (const d of ne) {
    const v = BigInt(d);
    if (v <= 0n) return undefined;
    n *= v;
  }
  if (BigInt(ne[0]!) % BigInt(layout.blockSize) !== 0n) return undefined;
  return (n / BigInt(layout.blockSize)) * BigInt(layout.blockBytes);
}

/** Largest tensor this helper will materialise data for; larger ones get none. */
const MAX_CRAFTED_TENSOR_BYTES = 1n << 24n;

function alignUpBig(value: bigint, alignment: number): bigint {
  const a = BigInt(alignment);
  return ((value + a - 1n) / a) * a;
}

export function craftGguf(spec: CraftSpec): CraftedGguf {
  const b = new GgufByteBuilder();
  const kvs = spec.kvs ?? [];
  const tensors = spec.tensors ?? [];
  const alignment = spec.alignment ?? 32;
  const offsetAlignment = spec.offsetAlignment ?? alignment;

  b.u32(spec.magic ?? GGUF_MAGIC, { kind: "magic", label: "magic" });
  b.u32(spec.version ?? 3, { kind: "version", label: "version" });
  b.u64(spec.nTensors ?? tensors.length, { kind: "n_tensors", label: "n_tensors" });
  b.u64(spec.nKv ?? kvs.length, { kind: "n_kv", label: "n_kv" });
  if (spec.headerOnly === true) {
    b.padTo(alignment);
    return { bytes: b.bytes(), fields: b.fields, tensorOffsets: [] };
  }
  for (const kv of kvs) kv.write(b);

  const sizes = tensors.map((t) => {
    const size = craftedTensorBytes(t.typeId, t.ne);
    return size === undefined || size > MAX_CRAFTED_TENSOR_BYTES ? 0n : size;
  });
  const offsets: bigint[] = [];
  let next = 0n;
  tensors.forEach((t, i) => {
    const name = typeof t.name === "string" ? t.name : `#${i}`;
    b.string(t.name, { tag: { kind: "tensor_name_length", label: `name length of '${name}'` } });
    b.u32(t.nDims ?? t.ne.length, { kind: "n_dims", label: `n_dims of '${name}'` });
    t.ne.forEach((d, j) => b.u64(d, { kind: "ne", label: `ne[${j}] of '${name}'` }));
    b.u32(t.typeId, { kind: "tensor_type", label: `type of '${name}'` });
    const offset = t.offset !== undefined ? BigInt(t.offset) : next;
    b.u64(offset, { kind: "tensor_offset", label: `offset of '${name}'` });
    offsets.push(offset);
    next = alignUpBig(next + sizes[i]!, offsetAlignment);
  });
  if (tensors.length > 0 || kvs.length > 0) b.padTo(alignment);
  if (spec.data === "none" || tensors.length === 0) return { bytes: b.bytes(), fields: b.fields, tensorOffsets: offsets };

  const data = new GgufByteBuilder();
  tensors.forEach((t, i) => {
    if (i > 0) data.padTo(alignment);
    const size = Number(sizes[i]!);
    if (t.data !== undefined) {
      data.raw(t.data);
    } else {
      const start = data.length;
      data.raw(Array.from({ length: size }, (_, j) => (start + j) % 256));
    }
  });
  let dataBytes = data.bytes();
  if (typeof spec.data === "object") dataBytes = dataBytes.subarray(0, Math.max(0, dataBytes.length - spec.data.dropBytes));
  b.raw(dataBytes);
  return { bytes: b.bytes(), fields: b.fields, tensorOffsets: offsets };
}

/** The default byte pattern of a tensor whose data starts `relOffset` bytes into the data section. */
export function patternBytes(relOffset: number, byteLength: number): Uint8Array {
  return Uint8Array.from({ length: byteLength }, (_, j) => (relOffset + j) % 256);
}

// ---------------------------------------------------------------------------------------------
// Layer 3a: the categories of llama.cpp tests/test-gguf.cpp (`enum handcrafted_file_type`)

/**
 * Every handcrafted file type of test-gguf.cpp, in its order, plus `HANDCRAFTED_KV_BAD_VALUE_SIZE`
 * (present in older versions, removed upstream because llama.cpp then allocated > 1 TB; halo rejects it
 * before allocating, so it stays).
 */
export const HANDCRAFTED_FILE_TYPES = [
  "HANDCRAFTED_HEADER_BAD_MAGIC",
  "HANDCRAFTED_HEADER_BAD_VERSION_0",
  "HANDCRAFTED_HEADER_BAD_VERSION_1",
  "HANDCRAFTED_HEADER_BAD_VERSION_FUTURE",
  "HANDCRAFTED_HEADER_BAD_N_TENSORS",
  "HANDCRAFTED_HEADER_BAD_N_KV",
  "HANDCRAFTED_HEADER_EMPTY",

  "HANDCRAFTED_KV_BAD_KEY_SIZE",
  "HANDCRAFTED_KV_EMPTY_KEY",
  "HANDCRAFTED_KV_BAD_TYPE",
  "HANDCRAFTED_KV_BAD_VALUE_SIZE",
  "HANDCRAFTED_KV_DUPLICATE_KEY",
  "HANDCRAFTED_KV_BAD_ALIGN",
  "HANDCRAFTED_KV_WRONG_TYPE_ALIGN",
  "HANDCRAFTED_KV_SUCCESS",

  "HANDCRAFTED_TENSORS_BAD_NAME_SIZE",
  "HANDCRAFTED_TENSORS_BAD_N_DIMS",
  "HANDCRAFTED_TENSORS_BAD_SHAPE",
  "HANDCRAFTED_TENSORS_ZERO_DIM",
  "HANDCRAFTED_TENSORS_NE_TOO_BIG",
  "HANDCRAFTED_TENSORS_NBYTES_TOO_BIG",
  "HANDCRAFTED_TENSORS_BAD_TYPE",
  "HANDCRAFTED_TENSORS_BAD_OFFSET",
  "HANDCRAFTED_TENSORS_DUPLICATE_NAME",
  "HANDCRAFTED_TENSORS_BAD_ALIGN",
  "HANDCRAFTED_TENSORS_INCONSISTENT_ALIGN",
  "HANDCRAFTED_TENSORS_SUCCESS",
  "HANDCRAFTED_TENSORS_CUSTOM_ALIGN",

  "HANDCRAFTED_DATA_NOT_ENOUGH_DATA",
  "HANDCRAFTED_DATA_BAD_ALIGN",
  "HANDCRAFTED_DATA_INCONSISTENT_ALIGN",
  "HANDCRAFTED_DATA_MEM_SIZE_OVERFLOW",
  "HANDCRAFTED_DATA_SUCCESS",
  "HANDCRAFTED_DATA_CUSTOM_ALIGN",
] as const;

export type HandcraftedFileType = (typeof HANDCRAFTED_FILE_TYPES)[number];

/** test-gguf.cpp's GGML_TYPE_COUNT and GGUF_TYPE_COUNT at the time of writing. */
export const GGML_TYPE_COUNT = 40;
export const GGUF_TYPE_COUNT = 13;
/** 4 * INT32_MAX, test-gguf.cpp's "big_dim" for NE_TOO_BIG. */
export const FOUR_INT32_MAX = 4n * 2147483647n;

/** One KV of each scalar type and one array of each element type (arrays of arrays excluded). */
export function sampleKvs(seed = 1): { kvs: CraftKv[]; expected: Map<string, { type: number; elementType?: number; value: CraftScalar | CraftScalar[] }> } {
  const rng = new SeededRandom(seed);
  const expected = new Map<string, { type: number; elementType?: number; value: CraftScalar | CraftScalar[] }>();
  const kvs: CraftKv[] = [];
  const valueOf = (type: number, i: number): CraftScalar => {
    const u = rng.nextUint32();
    switch (type) {
      case GgufValueType.UINT8: return u & 0xff;
      case GgufValueType.INT8: return ((u & 0xff) << 24) >> 24;
      case GgufValueType.UINT16: return u & 0xffff;
      case GgufValueType.INT16: return ((u & 0xffff) << 16) >> 16;
      case GgufValueType.UINT32: return u;
      case GgufValueType.INT32: return u | 0;
      case GgufValueType.FLOAT32: return Math.fround((u / 2 ** 32 - 0.5) * 1e3);
      case GgufValueType.BOOL: return (u & 1) === 1;
      case GgufValueType.STRING: return `s${i}-${u.toString(36)}-é世`.slice(0, 1 + (u % 12));
      case GgufValueType.UINT64: return (BigInt(u) << 32n) | BigInt(rng.nextUint32());
      case GgufValueType.INT64: return BigInt.asIntN(64, (BigInt(u) << 32n) | BigInt(rng.nextUint32()));
      case GgufValueType.FLOAT64: return (u / 2 ** 32 - 0.5) * 1e9;
      default: throw new Error(`no sample for type ${type}`);
    }
  };
  const scalarTypes = Object.values(GgufValueType).filter((t) => t !== GgufValueType.ARRAY);
  let i = 0;
  for (const type of scalarTypes) {
    const key = `my_key_${i++}`;
    const value = valueOf(type, i);
    kvs.push(kvScalar(key, type, value));
    expected.set(key, { type, value });
  }
  for (const elementType of scalarTypes) {
    const key = `my_key_${i++}`;
    const n = 1 + (rng.nextUint32() % 16);
    const values = Array.from({ length: n }, (_, j) => valueOf(elementType, j));
    kvs.push(kvArray(key, elementType, values));
    expected.set(key, { type: GgufValueType.ARRAY, elementType, value: values });
  }
  return { kvs, expected };
}

/** The tensors of the TENSORS_* and DATA_* files: several types, 1–4 dims, sizes not all aligned. */
export function sampleTensors(): CraftTensor[] {
  const configs: Array<[number, number[]]> = [
    [0, [8, 3]], // F32
    [1, [16, 2, 2]], // F16
    [2, [64, 2]], // Q4_0
    [8, [32, 1, 3]], // Q8_0
    [24, [5]], // I8: 5 bytes, so the next tensor needs padding
    [12, [256, 1, 1, 2]], // Q4_K
    [30, [3, 7]], // BF16
  ];
  return configs.map(([typeId, ne], i) => ({ name: `my_tensor_${i}`, typeId, ne }));
}

/**
 * The bytes of one handcrafted file type. As in test-gguf.cpp, HEADER_* files stop after the
 * header and KV_* files after the metadata. Unlike test-gguf.cpp, TENSORS_* files carry their
 * data section (`withData`, default true): halo checks every tensor's extent when the file is
 * opened (RELIABILITY G9), so without data every TENSORS_* file would fail for that reason
 * instead of the defect it is named after. DATA_* files always carry data.
 */
export function handcraftedGguf(type: HandcraftedFileType, options: { withData?: boolean } = {}): CraftedGguf {
  const { kvs } = sampleKvs();
  const tensors = sampleTensors();
  const withData = options.withData ?? true;
  const alignKv = (value: number, valueType: number = GgufValueType.UINT32): CraftKv => kvScalar("general.alignment", valueType, value);
  const data = withData ? "full" : "none";

  switch (type) {
    case "HANDCRAFTED_HEADER_BAD_MAGIC":
      return craftGguf({ magic: 0x47475546 /* "FUGG" */, headerOnly: true });
    case "HANDCRAFTED_HEADER_BAD_VERSION_0":
      return craftGguf({ version: 0, headerOnly: true });
    case "HANDCRAFTED_HEADER_BAD_VERSION_1":
      return craftGguf({ version: 1, headerOnly: true });
    case "HANDCRAFTED_HEADER_BAD_VERSION_FUTURE":
      return craftGguf({ version: 4, headerOnly: true });
    case "HANDCRAFTED_HEADER_BAD_N_TENSORS":
      return craftGguf({ nTensors: -1n, headerOnly: true });
    case "HANDCRAFTED_HEADER_BAD_N_KV":
      return craftGguf({ nKv: -1n, headerOnly: true });
    case "HANDCRAFTED_HEADER_EMPTY":
      return craftGguf({ headerOnly: true });

    case "HANDCRAFTED_KV_BAD_KEY_SIZE":
      return craftGguf({ kvs: [kvScalar("my_key_0", GgufValueType.UINT32, 1, { declaredKeyLength: -1n }), ...kvs.slice(1)] });
    case "HANDCRAFTED_KV_EMPTY_KEY":
      return craftGguf({ kvs: [kvScalar("", GgufValueType.UINT32, 1), ...kvs.slice(1)] });
    case "HANDCRAFTED_KV_BAD_TYPE":
      return craftGguf({ kvs: kvs.map((kv, i) => kvRaw(`my_key_${i}`, GGUF_TYPE_COUNT, [0])) });
    case "HANDCRAFTED_KV_BAD_VALUE_SIZE":
      return craftGguf({ kvs: [kvString("my_key_0", "abc", { declaredLength: 1n << 40n }), ...kvs.slice(1)] });
    case "HANDCRAFTED_KV_DUPLICATE_KEY":
      return craftGguf({ kvs: kvs.map((kv, i) => kvScalar(`my_key_${Math.floor(i / 2)}`, GgufValueType.UINT32, i)) });
    case "HANDCRAFTED_KV_BAD_ALIGN":
      return craftGguf({ kvs: [...kvs, alignKv(13)], alignment: 13 });
    case "HANDCRAFTED_KV_WRONG_TYPE_ALIGN":
      return craftGguf({ kvs: [...kvs, alignKv(1, GgufValueType.INT32)], alignment: 1 });
    case "HANDCRAFTED_KV_SUCCESS":
      return craftGguf({ kvs });

    case "HANDCRAFTED_TENSORS_BAD_NAME_SIZE":
      return craftGguf({
        kvs,
        tensors: tensors.map((t) => ({ ...t, name: `${String(t.name)}_with_a_very_long_name_which_is_longer_than_what_is_allowed_for_ggml_tensors` })),
        data,
      });
    case "HANDCRAFTED_TENSORS_BAD_N_DIMS":
      return craftGguf({ kvs, tensors: tensors.map((t) => ({ ...t, nDims: 5, ne: [...t.ne, 1, 1, 1, 1].slice(0, 5) })), data });
    case "HANDCRAFTED_TENSORS_BAD_SHAPE":
      return craftGguf({ kvs, tensors: tensors.map((t) => ({ ...t, ne: t.ne.map(() => -1n) })), data });
    case "HANDCRAFTED_TENSORS_ZERO_DIM":
      return craftGguf({ kvs, tensors: tensors.map((t) => ({ ...t, ne: [t.ne[0]!, 0] })), data });
    case "HANDCRAFTED_TENSORS_NE_TOO_BIG":
      return craftGguf({ kvs, tensors: tensors.map((t) => ({ ...t, ne: [FOUR_INT32_MAX, FOUR_INT32_MAX] })), data });
    case "HANDCRAFTED_TENSORS_NBYTES_TOO_BIG": {
      // I64, 8 bytes per element: 2^52 elements (a safe count) but 2^55 bytes, beyond both the
      // file and exact Number arithmetic. (test-gguf.cpp picks dims whose nbytes overflows
      // SIZE_MAX; halo computes in BigInt, so the product cannot overflow, only fail to fit.)
      const bigDim = 1n << 26n;
      return craftGguf({ kvs, tensors: tensors.map((t) => ({ ...t, typeId: 27, ne: [bigDim, bigDim] })), data });
    }
    case "HANDCRAFTED_TENSORS_BAD_TYPE":
      return craftGguf({ kvs, tensors: tensors.map((t) => ({ ...t, typeId: GGML_TYPE_COUNT })), data });
    case "HANDCRAFTED_TENSORS_BAD_OFFSET":
      return craftGguf({ kvs, tensors: tensors.map((t) => ({ ...t, offset: -1n })), data });
    case "HANDCRAFTED_TENSORS_DUPLICATE_NAME":
      return craftGguf({ kvs, tensors: tensors.map((t) => ({ ...t, name: "my_tensor" })), data });
    case "HANDCRAFTED_TENSORS_BAD_ALIGN":
    case "HANDCRAFTED_DATA_BAD_ALIGN":
      return craftGguf({ kvs: [...kvs, alignKv(13)], tensors, alignment: 13, data: type === "HANDCRAFTED_DATA_BAD_ALIGN" ? "full" : data });
    case "HANDCRAFTED_TENSORS_INCONSISTENT_ALIGN":
    case "HANDCRAFTED_DATA_INCONSISTENT_ALIGN":
      return craftGguf({ kvs, tensors, offsetAlignment: 1, data: type === "HANDCRAFTED_DATA_INCONSISTENT_ALIGN" ? "full" : data });
    case "HANDCRAFTED_TENSORS_SUCCESS":
      return craftGguf({ kvs, tensors, data });
    case "HANDCRAFTED_TENSORS_CUSTOM_ALIGN":
    case "HANDCRAFTED_DATA_CUSTOM_ALIGN":
      return craftGguf({ kvs: [...kvs, alignKv(1)], tensors, alignment: 1, data: type === "HANDCRAFTED_DATA_CUSTOM_ALIGN" ? "full" : data });

    case "HANDCRAFTED_DATA_NOT_ENOUGH_DATA":
      // One byte short of the last tensor's own bytes (not of trailing padding, which halo,
      // like llama-model-loader, does not require).
      return craftGguf({ kvs, tensors, data: { dropBytes: 1 } });
    case "HANDCRAFTED_DATA_MEM_SIZE_OVERFLOW":
      return craftGguf({
        kvs,
        tensors: [0, 1].map((i) => ({ name: `my_tensor_${i}`, typeId: 24 /* I8 */, ne: [0x7fffffffffffffc0n, 1n, 1n, 1n], data: new Uint8Array(16) })),
      });
    case "HANDCRAFTED_DATA_SUCCESS":
      return craftGguf({ kvs, tensors });
  }
  return type satisfies never;
}

// ---------------------------------------------------------------------------------------------
// Layer 3b: a tiny valid llama-shaped model

/** Content of `validSmallGguf()` as a writer spec (metadata in file order, tensors with bytes). */
export function smallLlamaContent(): {
  metadata: Array<readonly [string, GgufWriteValue]>;
  tensors: Array<{ name: string; typeId: number; shape: number[]; data: Uint8Array }>;
} {
  const rng = new SeededRandom(260);
  const tokens = ["<unk>", "<s>", "</s>", "▁a", "▁b", "ab", "é", "<0x0A>"];
  const metadata: Array<readonly [string, GgufWriteValue]> = [
    ["general.architecture", { type: GgufValueType.STRING, value: "llama" }],
    ["general.name", { type: GgufValueType.STRING, value: "halo-tiny" }],
    ["llama.context_length", { type: GgufValueType.UINT32, value: 64 }],
    ["llama.embedding_length", { type: GgufValueType.UINT32, value: 32 }],
    ["llama.feed_forward_length", { type: GgufValueType.UINT32, value: 64 }],
    ["llama.block_count", { type: GgufValueType.UINT32, value: 1 }],
    ["llama.attention.head_count", { type: GgufValueType.UINT32, value: 4 }],
    ["llama.attention.head_count_kv", { type: GgufValueType.UINT32, value: 2 }],
    ["llama.attention.layer_norm_rms_epsilon", { type: GgufValueType.FLOAT32, value: Math.fround(1e-5) }],
    ["tokenizer.ggml.model", { type: GgufValueType.STRING, value: "llama" }],
    ["tokenizer.ggml.tokens", { type: GgufValueType.ARRAY, elementType: GgufValueType.STRING, value: tokens }],
    ["tokenizer.ggml.scores", { type: GgufValueType.ARRAY, elementType: GgufValueType.FLOAT32, value: tokens.map((_, i) => -i) }],
    ["tokenizer.ggml.token_type", { type: GgufValueType.ARRAY, elementType: GgufValueType.INT32, value: [2, 3, 3, 1, 1, 1, 1, 6] }],
    ["tokenizer.ggml.bos_token_id", { type: GgufValueType.UINT32, value: 1 }],
    ["tokenizer.ggml.eos_token_id", { type: GgufValueType.UINT32, value: 2 }],
  ];
  const f32 = (n: number): Uint8Array => {
    const values = Float32Array.from({ length: n }, () => rng.nextFloat() - 0.5);
    return new Uint8Array(values.buffer);
  };
  const q8 = (nBlocks: number): Uint8Array => {
    // Q8_0 block: f16 scale (0x2000 ≈ 0.0078) then 32 int8 quants.
    const bytes = new Uint8Array(nBlocks * 34);
    for (let b = 0; b < nBlocks; b++) {
      bytes[b * 34] = 0x00;
      bytes[b * 34 + 1] = 0x20;
      for (let j = 0; j < 32; j++) bytes[b * 34 + 2 + j] = rng.nextUint32() & 0xff;
    }
    return bytes;
  };
  const tensors = [
    { name: "token_embd.weight", typeId: 8, shape: [32, 8], data: q8(8) },
    { name: "output_norm.weight", typeId: 0, shape: [32], data: f32(32) },
    { name: "blk.0.attn_norm.weight", typeId: 0, shape: [32], data: f32(32) },
    { name: "blk.0.attn_q.weight", typeId: 8, shape: [32, 32], data: q8(32) },
  ];
  return { metadata, tensors };
}

/** `validSmallGguf()` with the location of every count, length and type field. */
export function validSmallGgufCrafted(): CraftedGguf {
  const { metadata, tensors } = smallLlamaContent();
  return craftGguf({
    kvs: metadata.map(([key, v]) => kvFromWriteValue(key, v)),
    tensors: tensors.map((t) => ({ name: t.name, typeId: t.typeId, ne: t.shape, data: t.data })),
  });
}

/** The bytes of a tiny valid llama-shaped GGUF v3 (15 KV pairs incl. an 8-token vocab, 4 F32/Q8_0 tensors). */
export function validSmallGguf(): Uint8Array {
  return validSmallGgufCrafted().bytes;
}
