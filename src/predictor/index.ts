export { RidgeAccumulator, applyLinearMap, symmetricEigen } from "./ridge.js";
export type { LinearMap, LowRankFactors } from "./ridge.js";
export { recallAtK, spearman, topK } from "./metrics.js";
export { PREDICTOR_FORMAT_VERSION, predictImportance, predictorRank, readPredictor, writePredictor } from "./predictorFile.js";
export type { GroupPredictor } from "./predictorFile.js";
export { GroupSkipper, type SkipTotals } from "./groupSkipping.js";
export { ImportancePredictor } from "./importancePredictor.js";
