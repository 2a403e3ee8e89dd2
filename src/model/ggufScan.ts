/**
 * A bounded structural pass over a GGUF header. It checks every count and length against
 * the bytes left *before* anything is allocated from it, computes sizes in BigInt, and
 * records each key's type, value offset and each tensor's extent. It reads no value it does
 * not need; `decodeGgufValue` decodes one afterwards from the same bytes (see ggufReader.ts).
 */
import { GgufHeaderError, GgufTensorError } from "../base/index.js";
import { ggmlTypeLayout } from "../kernels/index.js";
import {
  GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_ALIGNMENT, GGUF_MAX_ARRAY_LENGTH, GGUF_MAX_DIMS,
  GGUF_MAX_KEY_BYTES, GGUF_MAX_STRING_BYTES, GGUF_MAX_TENSOR_NAME_BYTES, GGUF_SCALAR_BYTES,
  GGUF_SUPPORTED_VERSIONS, GGUF_VALUE_TYPE_NAMES, GgufValueType, alignUp,
} from "./ggufFormat.js";

export type GgufValue = number | bigint | string | boolean | GgufValue[];

export interface GgufKeyType {
  readonly type: number;
  /** For arrays: the element type and length. */
  readonly elementType?: number;
  readonly length?: number;
  /** Byte offset of the value in the file (for arrays, of the first element); set by the scan. */
  readonly valueOffset?: number;
}

export interface GgufTensorInfo {
  readonly name: string;
  readonly typeId: number;
  readonly typeName: string;
  /** ggml ne: ne[0] is the contiguous (row) dimension. */
  readonly shape: readonly number[];
  readonly nElements: number;
  /** Absolute file offset of the first byte. */
  readonly fileOffset: number;
  readonly byteLength: number;
}

export interface GgufLayout {
  readonly version: number;
  readonly nKv: number;
  readonly keyTypes: ReadonlyMap<string, GgufKeyType>;
  readonly alignment: number;
  readonly tensors: readonly GgufTensorInfo[];
  /** Absolute offset of the data section. */
  readonly dataOffset: number;
  readonly fileSize: number;
}

/** Keeps a leading U+FEFF instead of stripping it, so keys and names read back exactly. */
const utf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** Thrown when the scan needs bytes past the buffer it was given but the file has more. */
export class NeedMoreBytes extends Error {
  constructor(readonly needed: number) {
    super(`need ${needed} bytes`);
  }
}

/** A field description, built lazily when it is a function (only an error message needs it). */
type Label = string | (() => string);
function label(what: Label): string {
  return typeof what === "string" ? what : what();
}

class Cursor {
  offset = 0;
  private readonly view: DataView;
  constructor(private readonly bytes: Uint8Array, private readonly fileSize: number) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  /** Bytes of the file after the cursor. */
  get fileBytesLeft(): number {
    return this.fileSize - this.offset;
  }
  private need(n: number, what: Label): void {
    if (this.offset + n > this.fileSize) {
      throw new GgufHeaderError(`truncated: ${label(what)} at byte ${this.offset} needs ${n} bytes, file has ${this.fileSize}`);
    }
    if (this.offset + n > this.bytes.length) throw new NeedMoreBytes(this.offset + n);
  }
  u32(what: Label): number {
    this.need(4, what);
    const v = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return v;
  }
  u64(what: Label): bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.offset, true);
    this.offset += 8;
    return v;
  }
  skip(n: number, what: Label): void {
    this.need(n, what);
    this.offset += n;
  }
  string(what: string, maxBytes: number): string {
    const length = this.u64(`${what} length`);
    if (length > BigInt(maxBytes)) throw new GgufHeaderError(`${what}: length ${length} exceeds the limit of ${maxBytes} bytes`);
    if (length > BigInt(this.fileBytesLeft)) throw new GgufHeaderError(`${what}: length ${length} exceeds the ${this.fileBytesLeft} bytes left in the file`);
    const n = Number(length);
    this.need(n, what);
    const text = utf8.decode(this.bytes.subarray(this.offset, this.offset + n));
    this.offset += n;
    return text;
  }
  /** `what` is a function so a loop over a 10^6-element string array builds no label unless it fails. */
  skipString(what: () => string): void {
    const length = this.u64(() => `${what()} length`);
    if (length > BigInt(GGUF_MAX_STRING_BYTES)) throw new GgufHeaderError(`${what()}: string length ${length} exceeds the limit of ${GGUF_MAX_STRING_BYTES} bytes`);
    if (length > BigInt(this.fileBytesLeft)) throw new GgufHeaderError(`${what()}: string length ${length} exceeds the ${this.fileBytesLeft} bytes left in the file`);
    this.skip(Number(length), what);
  }
  scalarU32Or64(type: number, what: string): bigint {
    if (type === GgufValueType.UINT32) return BigInt(this.u32(what));
    if (type === GgufValueType.UINT64) return this.u64(what);
    throw new GgufHeaderError(`${what} must be uint32 or uint64, got ${GGUF_VALUE_TYPE_NAMES[type] ?? type}`);
  }
}

/** Scans the header in `bytes` (a prefix of a file of `fileSize` bytes). */
export function scanGgufHeader(bytes: Uint8Array, fileSize: number): GgufLayout {
  const cursor = new Cursor(bytes, fileSize);
  // A short file that does not even start with the magic is "not a GGUF file", not "truncated".
  if (fileSize >= 4 && bytes.length >= 4) {
    const magic = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
    if (magic !== GGUF_MAGIC) throw new GgufHeaderError(`bad magic 0x${magic.toString(16).padStart(8, "0")}: not a GGUF file`);
  }
  if (fileSize < 24) throw new GgufHeaderError(`truncated: a GGUF header needs at least 24 bytes, file has ${fileSize}`);
  cursor.u32("magic");
  const version = cursor.u32("version");
  if (!(GGUF_SUPPORTED_VERSIONS as readonly number[]).includes(version)) {
    const hint = (version & 0xffff) === 0 ? " (a big-endian file?)" : "";
    throw new GgufHeaderError(`unsupported GGUF version ${version}${hint}; halo reads versions ${GGUF_SUPPORTED_VERSIONS.join(" and ")}`);
  }
  const nTensorsRaw = cursor.u64("tensor count");
  const nKvRaw = cursor.u64("metadata key count");
  // The smallest key/value is a 1-byte key and a 1-byte value (8 + 1 + 4 + 1); the smallest
  // tensor record a 1-byte name and one dimension (8 + 1 + 4 + 8 + 4 + 8).
  const maxKv = Math.floor(cursor.fileBytesLeft / 14);
  const maxTensors = Math.floor(cursor.fileBytesLeft / 33);
  if (nKvRaw > BigInt(maxKv)) throw new GgufHeaderError(`metadata key count ${nKvRaw} cannot fit in the ${cursor.fileBytesLeft} bytes left`);
  if (nTensorsRaw > BigInt(maxTensors)) throw new GgufHeaderError(`tensor count ${nTensorsRaw} cannot fit in the ${cursor.fileBytesLeft} bytes left`);
  const nKv = Number(nKvRaw);
  const nTensors = Number(nTensorsRaw);

  const keyTypes = new Map<string, GgufKeyType>();
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  for (let i = 0; i < nKv; i++) {
    const key = cursor.string(`metadata key #${i}`, GGUF_MAX_KEY_BYTES);
    if (key.length === 0) throw new GgufHeaderError(`metadata key #${i} is empty`);
    if (keyTypes.has(key)) throw new GgufHeaderError(`duplicate metadata key '${key}'`);
    const type = cursor.u32(`type of '${key}'`);
    if (key === "general.alignment" && type !== GgufValueType.UINT32 && type !== GgufValueType.UINT64) {
      // Checked before the value is read: a string or array here would otherwise be skipped
      // and the default alignment used without a word.
      throw new GgufHeaderError(`general.alignment must be uint32 or uint64, got ${GGUF_VALUE_TYPE_NAMES[type] ?? `unknown type ${type}`}`);
    }
    if (type === GgufValueType.ARRAY) {
      const elementType = cursor.u32(`element type of '${key}'`);
      const lengthRaw = cursor.u64(`array length of '${key}'`);
      if (elementType === GgufValueType.ARRAY) throw new GgufHeaderError(`'${key}': arrays of arrays are not supported`);
      if (GGUF_VALUE_TYPE_NAMES[elementType] === undefined) throw new GgufHeaderError(`'${key}': unknown array element type ${elementType}`);
      if (lengthRaw > BigInt(GGUF_MAX_ARRAY_LENGTH)) throw new GgufHeaderError(`'${key}': array length ${lengthRaw} exceeds the limit of ${GGUF_MAX_ARRAY_LENGTH}`);
      const minElementBytes = GGUF_SCALAR_BYTES[elementType] ?? 8;
      if (lengthRaw * BigInt(minElementBytes) > BigInt(cursor.fileBytesLeft)) {
        throw new GgufHeaderError(`'${key}': ${lengthRaw} elements of ${GGUF_VALUE_TYPE_NAMES[elementType]} cannot fit in the ${cursor.fileBytesLeft} bytes left`);
      }
      const length = Number(lengthRaw);
      const valueOffset = cursor.offset;
      if (elementType === GgufValueType.STRING) {
        for (let j = 0; j < length; j++) cursor.skipString(() => `'${key}'[${j}]`);
      } else {
        cursor.skip(length * minElementBytes, `'${key}' elements`);
      }
      keyTypes.set(key, { type, elementType, length, valueOffset });
    } else if (type === GgufValueType.STRING) {
      const valueOffset = cursor.offset;
      cursor.skipString(() => `'${key}'`);
      keyTypes.set(key, { type, valueOffset });
    } else {
      const valueOffset = cursor.offset;
      const size = GGUF_SCALAR_BYTES[type];
      if (size === undefined) throw new GgufHeaderError(`'${key}': unknown value type ${type}`);
      if (key === "general.alignment") {
        const value = cursor.scalarU32Or64(type, "general.alignment");
        if (value === 0n || value > BigInt(GGUF_MAX_ALIGNMENT) || (value & (value - 1n)) !== 0n) {
          throw new GgufHeaderError(`general.alignment ${value} must be a power of two between 1 and ${GGUF_MAX_ALIGNMENT}`);
        }
        alignment = Number(value);
      } else {
        cursor.skip(size, `'${key}'`);
      }
      keyTypes.set(key, { type, valueOffset });
    }
  }

  const records: Array<{ name: string; typeId: number; typeName: string; shape: number[]; nElements: number; byteLength: number; relOffset: bigint }> = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = cursor.string(`tensor name #${i}`, GGUF_MAX_STRING_BYTES);
    if (Buffer.byteLength(name) > GGUF_MAX_TENSOR_NAME_BYTES) throw new GgufTensorError(`tensor name '${name.slice(0, 80)}' is ${Buffer.byteLength(name)} bytes; the limit is ${GGUF_MAX_TENSOR_NAME_BYTES}`, name);
    if (name.length === 0) throw new GgufTensorError(`tensor #${i} has an empty name`);
    if (names.has(name)) throw new GgufTensorError(`duplicate tensor name '${name}'`, name);
    names.add(name);
    const nDims = cursor.u32(`n_dims of '${name}'`);
    if (nDims < 1 || nDims > GGUF_MAX_DIMS) throw new GgufTensorError(`tensor '${name}': n_dims ${nDims} must be between 1 and ${GGUF_MAX_DIMS}`, name);
    const shape: number[] = [];
    let nElementsBig = 1n;
    for (let d = 0; d < nDims; d++) {
      const ne = cursor.u64(`ne[${d}] of '${name}'`);
      // ne is int64 in ggml: values with the top bit set are negative.
      if (ne === 0n || ne >= 1n << 63n) throw new GgufTensorError(`tensor '${name}': ne[${d}] = ${BigInt.asIntN(64, ne)} must be positive`, name);
      nElementsBig *= ne;
      if (nElementsBig > BigInt(Number.MAX_SAFE_INTEGER)) throw new GgufTensorError(`tensor '${name}': element count overflows (shape too large)`, name);
      shape.push(Number(ne));
    }
    const typeId = cursor.u32(`type of '${name}'`);
    const layout = ggmlTypeLayout(typeId);
    if (layout === undefined) throw new GgufTensorError(`tensor '${name}': unknown or removed ggml type id ${typeId}`, name);
    if (shape[0]! % layout.blockSize !== 0) throw new GgufTensorError(`tensor '${name}': ne[0] = ${shape[0]} is not a multiple of the ${layout.name} block size ${layout.blockSize}`, name);
    const byteLengthBig = (nElementsBig / BigInt(layout.blockSize)) * BigInt(layout.blockBytes);
    if (byteLengthBig > BigInt(fileSize)) throw new GgufTensorError(`tensor '${name}': ${byteLengthBig} bytes cannot fit in a ${fileSize}-byte file`, name);
    const relOffset = cursor.u64(`offset of '${name}'`);
    records.push({ name, typeId, typeName: layout.name, shape, nElements: Number(nElementsBig), byteLength: Number(byteLengthBig), relOffset });
  }

  const dataOffset = alignUp(cursor.offset, alignment);
  // Tensors must lie in record order, each at the aligned end of the one before: this one
  // rule rejects gaps, overlaps and misaligned offsets (as llama.cpp's gguf reader does).
  let expected = 0n;
  const tensors: GgufTensorInfo[] = [];
  for (const r of records) {
    if (r.relOffset !== expected) {
      const why =
        BigInt(dataOffset) + r.relOffset >= BigInt(fileSize) ? `points past the end of the ${fileSize}-byte file`
        : r.relOffset % BigInt(alignment) !== 0n ? `is not ${alignment}-aligned`
        : r.relOffset < expected ? "overlaps the previous tensor"
        : "leaves a gap after the previous tensor";
      throw new GgufTensorError(`tensor '${r.name}': data offset ${r.relOffset} ${why} (expected ${expected})`, r.name);
    }
    const end = BigInt(dataOffset) + r.relOffset + BigInt(r.byteLength);
    if (end > BigInt(fileSize)) {
      throw new GgufTensorError(`tensor '${r.name}': data ends at byte ${end}, past the end of the ${fileSize}-byte file`, r.name);
    }
    tensors.push({ name: r.name, typeId: r.typeId, typeName: r.typeName, shape: r.shape, nElements: r.nElements, fileOffset: dataOffset + Number(r.relOffset), byteLength: r.byteLength });
    expected = BigInt(alignUp(Number(r.relOffset) + r.byteLength, alignment));
  }
  return { version, nKv, keyTypes, alignment, tensors, dataOffset, fileSize };
}

/**
 * Decodes the value of `keyType` from the bytes `scanGgufHeader` accepted (`bytes` must hold the
 * value; the scan has checked every length in it). Integers of 64 bits become bigints, other
 * numbers numbers, BOOL a boolean (any non-zero byte is true), strings UTF-8 with invalid
 * sequences replaced and a leading U+FEFF kept.
 */
export function decodeGgufValue(bytes: Uint8Array, keyType: GgufKeyType): GgufValue {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = keyType.valueOffset ?? Number.NaN;
  if (!Number.isSafeInteger(at)) throw new GgufHeaderError("decodeGgufValue: the key has no value offset (not from scanGgufHeader?)");
  const one = (type: number): GgufValue => {
    const size = GGUF_SCALAR_BYTES[type] ?? 0;
    const p = at;
    at += size;
    switch (type) {
      case GgufValueType.UINT8: return view.getUint8(p);
      case GgufValueType.INT8: return view.getInt8(p);
      case GgufValueType.UINT16: return view.getUint16(p, true);
      case GgufValueType.INT16: return view.getInt16(p, true);
      case GgufValueType.UINT32: return view.getUint32(p, true);
      case GgufValueType.INT32: return view.getInt32(p, true);
      case GgufValueType.FLOAT32: return view.getFloat32(p, true);
      case GgufValueType.BOOL: return view.getUint8(p) !== 0;
      case GgufValueType.UINT64: return view.getBigUint64(p, true);
      case GgufValueType.INT64: return view.getBigInt64(p, true);
      case GgufValueType.FLOAT64: return view.getFloat64(p, true);
      case GgufValueType.STRING: {
        const n = Number(view.getBigUint64(p, true));
        if (p + 8 + n > bytes.length) throw new RangeError(`string at byte ${p} runs past the buffer`);
        at = p + 8 + n;
        return utf8.decode(bytes.subarray(p + 8, at));
      }
      default: throw new GgufHeaderError(`decodeGgufValue: cannot decode value type ${type}`);
    }
  };
  try {
    if (keyType.type !== GgufValueType.ARRAY) return one(keyType.type);
    const elementType = keyType.elementType ?? -1;
    const values: GgufValue[] = [];
    for (let i = 0; i < (keyType.length ?? 0); i++) values.push(one(elementType));
    return values;
  } catch (error) {
    if (error instanceof GgufHeaderError) throw error;
    throw new GgufHeaderError(`decodeGgufValue: value at byte ${keyType.valueOffset} lies outside the ${bytes.length} bytes given`, { cause: error });
  }
}
