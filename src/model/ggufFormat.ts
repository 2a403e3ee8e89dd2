/** GGUF container constants shared by the reader and the writer. */

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_SUPPORTED_VERSIONS = [2, 3] as const;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** Largest `general.alignment` accepted; real files use 32. */
export const GGUF_MAX_ALIGNMENT = 1 << 20;
/** ggml's GGML_MAX_NAME includes the terminating NUL. */
export const GGUF_MAX_TENSOR_NAME_BYTES = 63;
export const GGUF_MAX_DIMS = 4;
export const GGUF_MAX_STRING_BYTES = 10_000_000;
export const GGUF_MAX_ARRAY_LENGTH = 1_000_000;
export const GGUF_MAX_KEY_BYTES = 65_535;
/** A header (metadata + tensor records) larger than this is refused rather than read. */
export const GGUF_MAX_HEADER_BYTES = 512 * 1024 * 1024;

export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

export type GgufValueTypeId = (typeof GgufValueType)[keyof typeof GgufValueType];

/** Bytes of one fixed-size value, or undefined for STRING and ARRAY. */
export const GGUF_SCALAR_BYTES: Record<number, number | undefined> = {
  0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8,
};

export const GGUF_VALUE_TYPE_NAMES: Record<number, string> = {
  0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32",
  7: "bool", 8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64",
};

export function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}
