export { RidgeAccumulator, applyLinearMap } from "./ridge.js";
export type { LinearMap } from "./ridge.js";
export { recallAtK, spearman, topK } from "./metrics.js";
