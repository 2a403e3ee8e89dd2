export { GroupWorker } from "./groupWorker.js";
export { InProcessSynchronizer } from "./inProcessSynchronizer.js";
export type { DroppedContribution, InProcessOptions } from "./inProcessSynchronizer.js";
export { modelSha256 } from "./modelIdentity.js";
