/** A worker session driven by hand from the coordinator's side, for tests of the worker's protocol. */
import assert from "node:assert/strict";
import net from "node:net";
import type { ControlMessage } from "../../src/net/index.js";
import { RawPeer } from "../net/controlHelpers.js";

export interface RawSession {
  peer: RawPeer;
  /** The next message that is not a heartbeat. */
  next(): Promise<ControlMessage>;
  /** Destroys the socket and waits for it to close. */
  close(): Promise<void>;
}

/** Connects to the worker at `port`, authenticates and joins as node 1 of session 1. */
export async function joinAsRawCoordinator(port: number, clusterKey: Uint8Array, modelSha256: string): Promise<RawSession> {
  const socket = net.connect(port, "127.0.0.1");
  const peer = new RawPeer(socket);
  const close = async (): Promise<void> => {
    socket.destroy();
    await peer.closedPromise;
  };
  await peer.handshakeAsCoordinator(clusterKey);
  const next = async (): Promise<ControlMessage> => {
    for (;;) {
      const message = await peer.nextMessage();
      if (message.type !== "heartbeat") return message;
    }
  };
  peer.sendSealed({ type: "join", sessionId: 1, epoch: 1, nodeIndex: 1, modelSha256, modelName: "stories", coordinatorUdpPort: 0 });
  assert.equal((await next()).type, "join-ok");
  return { peer, next, close };
}
