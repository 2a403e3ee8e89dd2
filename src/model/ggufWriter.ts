/**
 * Writes GGUF v3 files: metadata with explicit value types, then tensor records, then the
 * aligned data section. Used by `halo convert`, `halo synth` and the tests that craft files.
 * Tensors are streamed to disk one at a time, so a model larger than memory can be written.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { FileError, UsageError, describeError } from "../base/index.js";
import { ggmlTypeLayout } from "../kernels/index.js";
import {
  GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_ALIGNMENT, GGUF_MAX_DIMS, GGUF_MAX_TENSOR_NAME_BYTES, GGUF_SCALAR_BYTES,
  GgufValueType, alignUp, type GgufValueTypeId,
} from "./ggufFormat.js";

export type GgufWriteValue =
  | { type: Exclude<GgufValueTypeId, typeof GgufValueType.ARRAY | typeof GgufValueType.STRING>; value: number | bigint | boolean }
  | { type: typeof GgufValueType.STRING; value: string }
  | { type: typeof GgufValueType.ARRAY; elementType: GgufValueTypeId; value: ReadonlyArray<number | bigint | boolean | string> | Float32Array | Int32Array };

export interface GgufWriteTensor {
  readonly name: string;
  readonly typeId: number;
  /** ggml ne (ne[0] contiguous). */
  readonly shape: readonly number[];
  /** The tensor's bytes, or a function producing them when it is written (streaming). */
  readonly data: Uint8Array | (() => Uint8Array);
}

export interface GgufWriteSpec {
  readonly metadata: ReadonlyArray<readonly [string, GgufWriteValue]>;
  readonly tensors: readonly GgufWriteTensor[];
  /**
   * Data alignment in bytes: a power of two up to 1 MiB. Defaults to general.alignment when the
   * metadata sets it (as uint32 or uint64), else 32. When it is set here, differs from 32 and
   * the metadata has no general.alignment, a uint32 general.alignment is appended to the
   * metadata so that readers see it; a general.alignment that disagrees with it is an error.
   */
  readonly alignment?: number;
}

class ByteSink {
  private chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.push(b);
  }
  u64(v: bigint | number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  string(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    this.push(bytes);
  }
  scalar(type: number, v: number | bigint | boolean | string): void {
    const size = GGUF_SCALAR_BYTES[type];
    if (type === GgufValueType.STRING) return this.string(String(v));
    if (size === undefined) throw new UsageError(`cannot write GGUF value type ${type} as a scalar`);
    const b = Buffer.alloc(size);
    switch (type) {
      case GgufValueType.UINT8: b.writeUInt8(Number(v)); break;
      case GgufValueType.INT8: b.writeInt8(Number(v)); break;
      case GgufValueType.UINT16: b.writeUInt16LE(Number(v)); break;
      case GgufValueType.INT16: b.writeInt16LE(Number(v)); break;
      case GgufValueType.UINT32: b.writeUInt32LE(Number(v)); break;
      case GgufValueType.INT32: b.writeInt32LE(Number(v)); break;
      case GgufValueType.FLOAT32: b.writeFloatLE(Number(v)); break;
      case GgufValueType.BOOL: b.writeUInt8(v ? 1 : 0); break;
      case GgufValueType.UINT64: b.writeBigUInt64LE(BigInt(v)); break;
      case GgufValueType.INT64: b.writeBigInt64LE(BigInt(v)); break;
      case GgufValueType.FLOAT64: b.writeDoubleLE(Number(v)); break;
    }
    this.push(b);
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** Bytes of a tensor of `typeId` and `shape`. */
export function tensorByteLength(typeId: number, shape: readonly number[]): number {
  const layout = ggmlTypeLayout(typeId);
  if (layout === undefined) throw new UsageError(`unknown ggml type id ${typeId}`);
  if (shape.length < 1 || shape.length > GGUF_MAX_DIMS || !shape.every((ne) => Number.isSafeInteger(ne) && ne > 0)) {
    throw new UsageError(`tensor shape [${shape.join(", ")}] must have 1 to ${GGUF_MAX_DIMS} positive integer dimensions`);
  }
  if (shape[0]! % layout.blockSize !== 0) throw new UsageError(`ne[0] = ${shape[0]} is not a multiple of the ${layout.name} block size ${layout.blockSize}`);
  const n = shape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(n)) throw new UsageError(`tensor shape [${shape.join(", ")}] has too many elements`);
  return (n / layout.blockSize) * layout.blockBytes;
}

/** The header bytes (magic through tensor records, unpadded) for a spec. */
export function encodeGgufHeader(spec: GgufWriteSpec): { header: Buffer; alignment: number; offsets: number[] } {
  const metadataAlignment = alignmentFromMetadata(spec);
  if (spec.alignment !== undefined && metadataAlignment !== undefined && spec.alignment !== metadataAlignment) {
    throw new UsageError(`alignment ${spec.alignment} disagrees with general.alignment ${metadataAlignment} in the metadata`);
  }
  const alignment = spec.alignment ?? metadataAlignment ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment < 1 || alignment > GGUF_MAX_ALIGNMENT || (alignment & (alignment - 1)) !== 0) {
    throw new UsageError(`alignment ${alignment} must be a power of two between 1 and ${GGUF_MAX_ALIGNMENT}`);
  }
  // Without the key a reader would assume 32 and look for the data in the wrong place.
  const metadata = metadataAlignment === undefined && alignment !== GGUF_DEFAULT_ALIGNMENT
    ? [...spec.metadata, ["general.alignment", { type: GgufValueType.UINT32, value: alignment }] as const]
    : spec.metadata;
  checkNames(metadata, spec.tensors);
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(3);
  sink.u64(spec.tensors.length);
  sink.u64(metadata.length);
  for (const [key, v] of metadata) {
    sink.string(key);
    sink.u32(v.type);
    try {
      if (v.type === GgufValueType.ARRAY) {
        if (v.elementType === GgufValueType.ARRAY) throw new UsageError("arrays of arrays cannot be written");
        sink.u32(v.elementType);
        sink.u64(v.value.length);
        for (const element of v.value) sink.scalar(v.elementType, element);
      } else {
        sink.scalar(v.type, v.value);
      }
    } catch (error) {
      // Buffer throws RangeError for out-of-range values; name the key instead.
      throw new UsageError(`metadata '${key}': ${describeError(error)}`);
    }
  }
  const offsets: number[] = [];
  let offset = 0;
  for (const t of spec.tensors) {
    const byteLength = tensorByteLength(t.typeId, t.shape);
    sink.string(t.name);
    sink.u32(t.shape.length);
    for (const ne of t.shape) sink.u64(ne);
    sink.u32(t.typeId);
    sink.u64(offset);
    offsets.push(offset);
    offset = alignUp(offset + byteLength, alignment);
  }
  return { header: sink.bytes(), alignment, offsets };
}

function alignmentFromMetadata(spec: GgufWriteSpec): number | undefined {
  const entry = spec.metadata.find(([k]) => k === "general.alignment");
  if (entry === undefined) return undefined;
  const v = entry[1];
  if (v.type !== GgufValueType.UINT32 && v.type !== GgufValueType.UINT64) throw new UsageError("general.alignment must be uint32 or uint64");
  return Number(v.value);
}

/** Refuses what every reader rejects: empty or duplicate keys, and bad or duplicate tensor names. */
function checkNames(metadata: GgufWriteSpec["metadata"], tensors: readonly GgufWriteTensor[]): void {
  const keys = new Set<string>();
  for (const [key] of metadata) {
    if (key.length === 0) throw new UsageError("metadata keys must not be empty");
    if (keys.has(key)) throw new UsageError(`duplicate metadata key '${key}'`);
    keys.add(key);
  }
  const names = new Set<string>();
  for (const t of tensors) {
    const bytes = Buffer.byteLength(t.name);
    if (bytes === 0 || bytes > GGUF_MAX_TENSOR_NAME_BYTES) throw new UsageError(`tensor name '${t.name}' is ${bytes} bytes; it must be 1 to ${GGUF_MAX_TENSOR_NAME_BYTES}`);
    if (names.has(t.name)) throw new UsageError(`duplicate tensor name '${t.name}'`);
    names.add(t.name);
  }
}

/** Writes a GGUF file; returns its size in bytes. */
export function writeGguf(path: string, spec: GgufWriteSpec): number {
  const { header, alignment } = encodeGgufHeader(spec);
  let fd: number;
  try {
    fd = openSync(path, "w");
  } catch (error) {
    throw new FileError(path, `cannot create: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
  try {
    let position = 0;
    const write = (bytes: Uint8Array): void => {
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
      position += bytes.length;
    };
    const pad = (): void => {
      const padded = alignUp(position, alignment);
      if (padded > position) write(new Uint8Array(padded - position));
    };
    write(header);
    pad();
    for (const t of spec.tensors) {
      const data = typeof t.data === "function" ? t.data() : t.data;
      const expected = tensorByteLength(t.typeId, t.shape);
      if (data.length !== expected) throw new UsageError(`tensor '${t.name}': ${data.length} bytes given, its type and shape need ${expected}`);
      write(data);
      pad();
    }
    return position;
  } finally {
    closeSync(fd);
  }
}
