/**
 * ggml tensor types: one table with every type id a GGUF file may carry (so the loader can
 * size and validate any tensor), and one traits table for the types halo computes with.
 * Sizes come from the block structs in ggml-common.h; nothing else hard-codes 18 or 34.
 */
import { dequantizeRowQ4_0, dequantizeRowQ8_0, quantizeRowQ4_0, quantizeRowQ8_0 } from "./reference/quant.js";
import { dequantizeRowF16, dequantizeRowF32, quantizeRowF16, quantizeRowF32 } from "./reference/float.js";

/** Every ggml type id; ids 4, 5, 31–33 and 36–38 were removed from ggml and are invalid. */
export const GGML_TYPE_LAYOUTS = {
  0: { name: "F32", blockSize: 1, blockBytes: 4 },
  1: { name: "F16", blockSize: 1, blockBytes: 2 },
  2: { name: "Q4_0", blockSize: 32, blockBytes: 18 },
  3: { name: "Q4_1", blockSize: 32, blockBytes: 20 },
  6: { name: "Q5_0", blockSize: 32, blockBytes: 22 },
  7: { name: "Q5_1", blockSize: 32, blockBytes: 24 },
  8: { name: "Q8_0", blockSize: 32, blockBytes: 34 },
  9: { name: "Q8_1", blockSize: 32, blockBytes: 36 },
  10: { name: "Q2_K", blockSize: 256, blockBytes: 84 },
  11: { name: "Q3_K", blockSize: 256, blockBytes: 110 },
  12: { name: "Q4_K", blockSize: 256, blockBytes: 144 },
  13: { name: "Q5_K", blockSize: 256, blockBytes: 176 },
  14: { name: "Q6_K", blockSize: 256, blockBytes: 210 },
  15: { name: "Q8_K", blockSize: 256, blockBytes: 292 },
  16: { name: "IQ2_XXS", blockSize: 256, blockBytes: 66 },
  17: { name: "IQ2_XS", blockSize: 256, blockBytes: 74 },
  18: { name: "IQ3_XXS", blockSize: 256, blockBytes: 98 },
  19: { name: "IQ1_S", blockSize: 256, blockBytes: 50 },
  20: { name: "IQ4_NL", blockSize: 32, blockBytes: 18 },
  21: { name: "IQ3_S", blockSize: 256, blockBytes: 110 },
  22: { name: "IQ2_S", blockSize: 256, blockBytes: 82 },
  23: { name: "IQ4_XS", blockSize: 256, blockBytes: 136 },
  24: { name: "I8", blockSize: 1, blockBytes: 1 },
  25: { name: "I16", blockSize: 1, blockBytes: 2 },
  26: { name: "I32", blockSize: 1, blockBytes: 4 },
  27: { name: "I64", blockSize: 1, blockBytes: 8 },
  28: { name: "F64", blockSize: 1, blockBytes: 8 },
  29: { name: "IQ1_M", blockSize: 256, blockBytes: 56 },
  30: { name: "BF16", blockSize: 1, blockBytes: 2 },
  34: { name: "TQ1_0", blockSize: 256, blockBytes: 54 },
  35: { name: "TQ2_0", blockSize: 256, blockBytes: 66 },
  39: { name: "MXFP4", blockSize: 32, blockBytes: 17 },
} as const satisfies Record<number, { name: string; blockSize: number; blockBytes: number }>;

export type GgmlTypeLayout = (typeof GGML_TYPE_LAYOUTS)[keyof typeof GGML_TYPE_LAYOUTS];

/** The layout of a type id read from a file, or undefined for an unknown or removed id. */
export function ggmlTypeLayout(typeId: number): GgmlTypeLayout | undefined {
  if (!Object.hasOwn(GGML_TYPE_LAYOUTS, typeId)) return undefined;
  return GGML_TYPE_LAYOUTS[typeId as keyof typeof GGML_TYPE_LAYOUTS];
}

/** The tensor types halo computes with. */
export type GgmlType = "F32" | "F16" | "Q4_0" | "Q8_0";

export const GGML_TYPE_ID = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8 } as const satisfies Record<GgmlType, number>;

export interface QuantTraits {
  readonly typeId: number;
  /** Elements per block. */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly blockBytes: number;
  readonly isQuantized: boolean;
  /** The activation type a dot product against this weight type uses in the native kernels. */
  readonly dotType: GgmlType;
  /** out[0..n) = values of `n` elements starting at byte `byteOffset` of `src`; n % blockSize == 0. */
  readonly dequantizeRowRef: (src: Uint8Array, byteOffset: number, out: Float32Array, n: number) => void;
  /** Writes `x.length` elements (a multiple of blockSize) to `dst` at `byteOffset`. */
  readonly quantizeRowRef: (x: Float32Array, dst: Uint8Array, byteOffset: number) => void;
}

function traits(type: GgmlType, isQuantized: boolean, dotType: GgmlType, dequantizeRowRef: QuantTraits["dequantizeRowRef"], quantizeRowRef: QuantTraits["quantizeRowRef"]): QuantTraits {
  const id = GGML_TYPE_ID[type];
  const layout = GGML_TYPE_LAYOUTS[id];
  return { typeId: id, blockSize: layout.blockSize, blockBytes: layout.blockBytes, isQuantized, dotType, dequantizeRowRef, quantizeRowRef };
}

export const QUANT_TRAITS = {
  F32: traits("F32", false, "F32", dequantizeRowF32, quantizeRowF32),
  F16: traits("F16", false, "F32", dequantizeRowF16, quantizeRowF16),
  Q4_0: traits("Q4_0", true, "Q8_0", dequantizeRowQ4_0, quantizeRowQ4_0),
  Q8_0: traits("Q8_0", true, "Q8_0", dequantizeRowQ8_0, quantizeRowQ8_0),
} as const satisfies Record<GgmlType, QuantTraits>;

/** The computable type for a type id, or undefined. */
export function computableType(typeId: number): GgmlType | undefined {
  for (const type of Object.keys(GGML_TYPE_ID) as GgmlType[]) {
    if (GGML_TYPE_ID[type] === typeId) return type;
  }
  return undefined;
}

/** Bytes of a row of `nCols` elements of `type`; nCols must be a multiple of the block size. */
export function rowBytes(type: GgmlType, nCols: number): number {
  const t = QUANT_TRAITS[type];
  return (nCols / t.blockSize) * t.blockBytes;
}
