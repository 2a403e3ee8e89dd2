export { RidgeAccumulator, applyLinearMap } from "./ridge.js";
export type { LinearMap } from "./ridge.js";
export { recallAtK, spearman, topK } from "./metrics.js";
export { PREDICTOR_FORMAT_VERSION, predictImportance, readPredictor, writePredictor } from "./predictorFile.js";
export type { GroupPredictor } from "./predictorFile.js";
