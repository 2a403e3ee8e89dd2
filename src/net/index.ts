export * from "./q8Vector.js";
export * from "./datagram.js";
export * from "./controlFrames.js";
export * from "./controlMessages.js";
export * from "./controlConnection.js";
export * from "./linkEmulator.js";
export * from "./linkStats.js";
export * from "./lossyUdpSocket.js";
