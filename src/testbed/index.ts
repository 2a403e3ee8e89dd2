export {
  DEFAULT_TESTBED_SUBNET, LIST_NAMESPACES, parseDropCounters, parseNamespaceList, parseQdiscStats, planDropCounterRead, planLeftoverTeardown,
  planLossUpdate, planQdiscRead, planTestbed, testbedName,
} from "./netns.js";
export type { Argv, LinkDropCounters, LinkQdiscStats, TestbedLink, TestbedPlan, TestbedTopology } from "./netns.js";
export { NetnsTestbed, isProcessAlive, removeLeftoverTestbeds, runCommand, waitForJsonEvent } from "./netnsTestbed.js";
export type { CommandRunner, ExecResult, NetnsTestbedOptions } from "./netnsTestbed.js";
