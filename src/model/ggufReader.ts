/**
 * Opens a GGUF file: a bounded structural scan (ggufScan.ts) validates the container and the
 * tensor index and records where each metadata value lies; the values are then decoded from
 * the same header bytes. Tensor bytes are read on demand with positioned reads, one tensor (or
 * row range) at a time, so the whole file is never copied into memory at once.
 *
 * @huggingface/gguf 0.4.6 used to decode the values. It is no longer called here, because it
 * silently truncates a string that crosses the end of its 2 MB read buffer, drops a leading
 * U+FEFF from strings, and returns the metadata as a plain object (key order changed for
 * integer-like keys; `__proto__`, `version`, `tensor_count` and `kv_count` keys collide).
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { FileError, GgufHeaderError, GgufTensorError, HaloError, describeError } from "../base/index.js";
import { GGUF_MAX_HEADER_BYTES, GGUF_VALUE_TYPE_NAMES, GgufValueType } from "./ggufFormat.js";
import { NeedMoreBytes, decodeGgufValue, scanGgufHeader, type GgufKeyType, type GgufLayout, type GgufTensorInfo, type GgufValue } from "./ggufScan.js";

export type { GgufValue } from "./ggufScan.js";

export class GgufMetadata {
  constructor(
    private readonly values: ReadonlyMap<string, GgufValue>,
    private readonly types: ReadonlyMap<string, GgufKeyType>,
  ) {}

  has(key: string): boolean {
    return this.values.has(key);
  }
  keys(): string[] {
    return [...this.values.keys()];
  }
  raw(key: string): GgufValue | undefined {
    return this.values.get(key);
  }
  typeOf(key: string): GgufKeyType | undefined {
    return this.types.get(key);
  }

  /** An integer value of any integer type, checked to be a safe integer. */
  integer(key: string): number | undefined {
    const value = this.values.get(key);
    if (value === undefined) return undefined;
    if (typeof value === "bigint") {
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) throw new GgufHeaderError(`metadata '${key}' = ${value} is out of range`);
      return Number(value);
    }
    if (typeof value === "number" && Number.isInteger(value) && this.isIntegerType(key)) return value;
    throw new GgufHeaderError(`metadata '${key}' must be an integer, got ${this.describeType(key)}`);
  }
  float(key: string): number | undefined {
    const value = this.values.get(key);
    if (value === undefined) return undefined;
    if (typeof value === "number") return value;
    throw new GgufHeaderError(`metadata '${key}' must be a number, got ${this.describeType(key)}`);
  }
  string(key: string): string | undefined {
    const value = this.values.get(key);
    if (value === undefined) return undefined;
    if (typeof value === "string") return value;
    throw new GgufHeaderError(`metadata '${key}' must be a string, got ${this.describeType(key)}`);
  }
  boolean(key: string): boolean | undefined {
    const value = this.values.get(key);
    if (value === undefined) return undefined;
    if (typeof value === "boolean") return value;
    throw new GgufHeaderError(`metadata '${key}' must be a bool, got ${this.describeType(key)}`);
  }
  /** An array whose elements are all of `elementType`. */
  array(key: string, elementType: number): GgufValue[] | undefined {
    const value = this.values.get(key);
    if (value === undefined) return undefined;
    const type = this.types.get(key);
    if (!Array.isArray(value) || type?.type !== GgufValueType.ARRAY || type.elementType !== elementType) {
      throw new GgufHeaderError(`metadata '${key}' must be an array of ${GGUF_VALUE_TYPE_NAMES[elementType]}, got ${this.describeType(key)}`);
    }
    return value;
  }

  private isIntegerType(key: string): boolean {
    const t = this.types.get(key)?.type;
    return t !== undefined && t !== GgufValueType.FLOAT32 && t !== GgufValueType.FLOAT64 && t !== GgufValueType.BOOL && t !== GgufValueType.STRING && t !== GgufValueType.ARRAY;
  }
  private describeType(key: string): string {
    const t = this.types.get(key);
    if (t === undefined) return "nothing";
    if (t.type === GgufValueType.ARRAY) return `array of ${GGUF_VALUE_TYPE_NAMES[t.elementType ?? -1] ?? "?"}`;
    return GGUF_VALUE_TYPE_NAMES[t.type] ?? `type ${t.type}`;
  }
}

export interface GgufFile {
  readonly path: string;
  readonly version: number;
  readonly fileSize: number;
  readonly alignment: number;
  readonly dataOffset: number;
  readonly metadata: GgufMetadata;
  /** In file order. */
  readonly tensors: readonly GgufTensorInfo[];
  tensor(name: string): GgufTensorInfo | undefined;
  /** Reads `length` bytes at `tensor` byte `start` (positioned read, bounds-checked). */
  readTensorBytes(tensor: GgufTensorInfo, start?: number, length?: number): Uint8Array;
  /**
   * The tensor's bytes for read-only use: a view into the mapped file when the file was opened
   * with `map` (no copy; writing through it crashes the process), else a fresh copy.
   */
  tensorBytes(tensor: GgufTensorInfo): Uint8Array;
  /** True when tensorBytes returns views of a mapping. */
  readonly mapped: boolean;
  close(): void;
}

export interface OpenGgufOptions {
  /**
   * Maps the whole file read-only (e.g. the native addon's mmapFile), so weights are used in
   * place with no second copy. Injected so that model/ does not depend on the addon.
   */
  map?: (path: string) => ArrayBuffer;
}

/** The scanned layout and the header bytes it was scanned from (they hold every metadata value). */
function readHeaderLayout(fd: number, fileSize: number): { layout: GgufLayout; bytes: Uint8Array } {
  let size = Math.min(fileSize, 1 << 20);
  for (;;) {
    const bytes = Buffer.allocUnsafe(size);
    const n = readFully(fd, bytes, 0);
    try {
      return { layout: scanGgufHeader(bytes.subarray(0, n), fileSize), bytes: bytes.subarray(0, n) };
    } catch (error) {
      if (!(error instanceof NeedMoreBytes)) throw error;
      // A short read means the file shrank after fstat; asking again would loop forever.
      if (n < size) throw new GgufHeaderError(`short read: ${n} of ${size} header bytes (file changed while being read?)`);
      if (size >= GGUF_MAX_HEADER_BYTES) throw new GgufHeaderError(`the header is larger than ${GGUF_MAX_HEADER_BYTES} bytes`);
      size = Math.min(fileSize, GGUF_MAX_HEADER_BYTES, Math.max(size * 2, error.needed));
    }
  }
}

function readFully(fd: number, target: Uint8Array, position: number): number {
  let done = 0;
  while (done < target.length) {
    const n = readSync(fd, target, done, target.length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** Opens and validates a GGUF file. Throws a HaloError (never another type) for a bad file. */
export async function openGguf(path: string, options: OpenGgufOptions = {}): Promise<GgufFile> {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (error) {
    throw new FileError(path, `cannot open: ${(error as NodeJS.ErrnoException).code ?? describeError(error)}`, { cause: error });
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new FileError(path, "not a regular file");
    const { layout, bytes } = readHeaderLayout(fd, stat.size);
    const values = new Map<string, GgufValue>();
    for (const [key, keyType] of layout.keyTypes) values.set(key, decodeGgufValue(bytes, keyType));
    const mapping = options.map?.(path);
    if (mapping !== undefined && mapping.byteLength !== layout.fileSize) throw new FileError(path, `mapped ${mapping.byteLength} bytes, the file has ${layout.fileSize} (changed while opening?)`);
    return createGgufFile(path, fd, layout, values, mapping);
  } catch (error) {
    closeSync(fd);
    if (error instanceof HaloError) throw error;
    throw new GgufHeaderError(`${path}: ${describeError(error)}`, { cause: error });
  }
}

function createGgufFile(path: string, fd: number, layout: GgufLayout, values: Map<string, GgufValue>, mapping: ArrayBuffer | undefined): GgufFile {
  const byName = new Map(layout.tensors.map((t) => [t.name, t]));
  let open = true;
  return {
    path,
    version: layout.version,
    fileSize: layout.fileSize,
    alignment: layout.alignment,
    dataOffset: layout.dataOffset,
    metadata: new GgufMetadata(values, layout.keyTypes),
    tensors: layout.tensors,
    tensor: (name) => byName.get(name),
    mapped: mapping !== undefined,
    tensorBytes(tensor) {
      if (mapping === undefined) return this.readTensorBytes(tensor);
      if (!open) throw new FileError(path, "read after close");
      return new Uint8Array(mapping, tensor.fileOffset, tensor.byteLength);
    },
    readTensorBytes(tensor, start = 0, length = tensor.byteLength - start) {
      if (!open) throw new FileError(path, "read after close");
      if (!(Number.isInteger(start) && Number.isInteger(length) && start >= 0 && length >= 0 && start + length <= tensor.byteLength)) {
        throw new GgufTensorError(`read of bytes [${start}, ${start + length}) outside tensor '${tensor.name}' (${tensor.byteLength} bytes)`, tensor.name);
      }
      const bytes = new Uint8Array(length);
      const n = readFully(fd, bytes, tensor.fileOffset + start);
      if (n !== length) throw new FileError(path, `short read of tensor '${tensor.name}': ${n} of ${length} bytes (file changed?)`);
      return bytes;
    },
    close() {
      if (open) {
        open = false;
        closeSync(fd);
      }
    },
  };
}

export type { GgufTensorInfo, GgufKeyType } from "./ggufScan.js";
