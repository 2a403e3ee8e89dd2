export * from "./errors.js";
export { SeededRandom } from "./random.js";
export { FakeClock, systemClock } from "./clock.js";
export type { Clock, TimerHandle } from "./clock.js";
