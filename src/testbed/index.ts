export {
  DEFAULT_TESTBED_SUBNET, LIST_NAMESPACES, PERSISTENT_OWNER_PID, TESTBED_FAMILY_PATTERN, parseDropCounters, parseNamespaceList, parseQdiscStats,
  parseTestbedNamespace, planDropCounterRead, planFamilyTeardown, planLeftoverTeardown, planLossUpdate, planQdiscRead, planTestbed, testbedName,
} from "./netns.js";
export type { Argv, LinkDropCounters, LinkQdiscStats, TestbedLink, TestbedNamespace, TestbedPlan, TestbedTopology } from "./netns.js";
export { NetnsTestbed, isProcessAlive, removeFamilyTestbeds, removeLeftoverTestbeds, runCommand, waitForJsonEvent } from "./netnsTestbed.js";
export type { CommandRunner, ExecResult, NetnsTestbedOptions } from "./netnsTestbed.js";
