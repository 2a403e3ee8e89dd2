export { GGML_TYPE_ID, GGML_TYPE_LAYOUTS, QUANT_TRAITS, computableType, ggmlTypeLayout, rowBytes } from "./types.js";
export type { GgmlType, GgmlTypeLayout, QuantTraits } from "./types.js";
export { createMatrix, checkMatvecBounds } from "./matrix.js";
export type { Matrix, MatrixKernels } from "./matrix.js";
export { createReferenceKernels } from "./reference/kernels.js";
export { floatToHalf, halfToFloat, roundToHalf } from "./reference/float.js";
export { Q4_0_BLOCK_BYTES, Q4_0_BLOCK_SIZE, Q8_0_BLOCK_BYTES, Q8_0_BLOCK_SIZE } from "./reference/quant.js";
