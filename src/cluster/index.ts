export { GroupWorker } from "./groupWorker.js";
export { InProcessSynchronizer } from "./inProcessSynchronizer.js";
export type { DroppedContribution, InProcessOptions } from "./inProcessSynchronizer.js";
export { modelSha256 } from "./modelIdentity.js";
export { ClusterCoordinator } from "./clusterCoordinator.js";
export type { ClusterOptions, DeadlineOptions, PhaseStats, SyncMode, WorkerAddress } from "./clusterCoordinator.js";
export { WorkerNode } from "./workerNode.js";
export type { WorkerNodeOptions } from "./workerNode.js";
