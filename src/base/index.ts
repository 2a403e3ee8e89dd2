export * from "./errors.js";
export { SeededRandom } from "./random.js";
