/**
 * The control messages of docs/cluster.md, one strict zod schema each: every number has bounds,
 * every array and byte string a length cap, and unknown keys (including a msgpack `__proto__`,
 * which msgpackr renames to `__proto_`, and `constructor`) are rejected. `parseControlMessage`
 * throws a MessageInvalidError naming the field; `expectMessage` is the order check (C6) for the
 * state machines above.
 */
import { z } from "zod";
import { MessageInvalidError, UnexpectedMessageError } from "../base/index.js";
import { decodeBody, encodeBody, NONCE_BYTES } from "./controlFrames.js";
import { measuredProfileSchema } from "./measuredProfile.js";
import { WIRE_FORMAT_NAMES } from "./wireFormat.js";

/** The control protocol version sent in hello. */
export const CONTROL_PROTOCOL_VERSION = 1;

/** Bounds of the control messages. Byte strings sit inside a frame, itself capped at 16 MiB. */
export const CONTROL_LIMITS = {
  /** Largest `data` byte string of input/partial. */
  maxDataBytes: 16 << 20,
  /** Most layers a per-layer plan may list, and the bound on `layer`. */
  maxLayers: 1024,
  /** Most [start, end) ranges in one phase's list. */
  maxRangesPerPhase: 4096,
  /** Most ranges in a whole plan (all layers, both phases). */
  maxRangesPerPlan: 65536,
  /** Bound on group indices (exclusive end of any range). */
  maxGroupIndex: 1 << 20,
  /** Bound on ffnBlockSize. */
  maxFfnBlockSize: 1 << 16,
  /** Most tokens in one input/partial. */
  maxTokensPerMessage: 1 << 16,
  /** Longest text field (modelName, cpuModel). */
  maxNameChars: 256,
  /** Longest error message. */
  maxErrorMessageChars: 1024,
  /** Bound on nThreads in a device profile. */
  maxThreads: 4096,
  /** Largest `data` of one shard-chunk: far under the 16 MiB frame cap, so heartbeats never wait long behind one. */
  maxShardChunkBytes: 1 << 20,
  /** Largest shard a transfer may announce (1 TiB). */
  maxShardBytes: 2 ** 40,
} as const;

const U32_MAX = 0xffffffff;

const u32 = z.number().int().min(0).max(U32_MAX);
const port = z.number().int().min(0).max(65535);
/** A msgpack byte string (a Buffer view of the frame after decoding). */
const byteString = z.custom<Uint8Array>((value) => value instanceof Uint8Array, { message: "expected a byte string" });
const bytesOf = (nBytes: number) =>
  byteString.refine((bytes) => bytes.byteLength === nBytes, { message: `expected exactly ${nBytes} bytes` });
const phase = z.enum(["attention", "ffn"]);

const groupRange = z
  .tuple([z.number().int().min(0).max(CONTROL_LIMITS.maxGroupIndex), z.number().int().min(0).max(CONTROL_LIMITS.maxGroupIndex)])
  .refine(([start, end]) => start < end, { message: "a range [start, end) needs start < end" });
const phaseGroups = z.strictObject({
  attention: z.array(groupRange).max(CONTROL_LIMITS.maxRangesPerPhase),
  ffn: z.array(groupRange).max(CONTROL_LIMITS.maxRangesPerPhase),
});
const planGroups = z.union([phaseGroups, z.array(phaseGroups).min(1).max(CONTROL_LIMITS.maxLayers)]).refine(
  (groups) => {
    const layers = Array.isArray(groups) ? groups : [groups];
    let nRanges = 0;
    for (const layer of layers) nRanges += layer.attention.length + layer.ffn.length;
    return nRanges <= CONTROL_LIMITS.maxRangesPerPlan;
  },
  { message: `more than ${CONTROL_LIMITS.maxRangesPerPlan} ranges in one plan` },
);

/** The session's wire format decides the exact size; the decoder checks it. */
const vectorData = byteString.refine(
  (bytes) => bytes.byteLength > 0 && bytes.byteLength <= CONTROL_LIMITS.maxDataBytes,
  { message: `expected 1 to ${CONTROL_LIMITS.maxDataBytes} bytes` },
);

const tensorSlice = {
  /** Token position of the first token. */
  position: u32,
  nTokens: z.number().int().min(1).max(CONTROL_LIMITS.maxTokensPerMessage),
  layer: z.number().int().min(0).max(CONTROL_LIMITS.maxLayers - 1),
  phase,
  /** (nTokens, dim) in the session's wire format. */
  data: vectorData,
};

/** What a worker tells the coordinator about itself in join-ok, for the scheduler. */
export const deviceProfileSchema = z.strictObject({
  /** Compute threads the worker will use. */
  nThreads: z.number().int().min(1).max(CONTROL_LIMITS.maxThreads),
  /** Memory available for weights and KV cache. */
  memoryBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** The kernels in use (e.g. "native-avx2", "ts"). */
  kernels: z.string().min(1).max(64),
  /** CPU model name, as reported by the OS. */
  cpuModel: z.string().max(CONTROL_LIMITS.maxNameChars),
  /** Measured Q8_0 matrix-vector throughput. */
  matvecGflops: z.number().min(0).max(1e9),
});

export const helloMessageSchema = z.strictObject({
  type: z.literal("hello"),
  /** Control protocol version; the coordinator refuses any but CONTROL_PROTOCOL_VERSION. */
  protocol: z.number().int().min(1).max(65535),
  nonce: bytesOf(NONCE_BYTES),
});
export const authMessageSchema = z.strictObject({
  type: z.literal("auth"),
  nonce: bytesOf(NONCE_BYTES),
  mac: bytesOf(32),
});
export const authOkMessageSchema = z.strictObject({
  type: z.literal("auth-ok"),
  mac: bytesOf(32),
});
export const errorMessageSchema = z.strictObject({
  type: z.literal("error"),
  code: z.string().regex(/^HALO_ERR_[A-Z0-9_]{1,64}$/),
  message: z.string().max(CONTROL_LIMITS.maxErrorMessageChars),
});
export const joinMessageSchema = z.strictObject({
  type: z.literal("join"),
  sessionId: u32,
  epoch: u32,
  /** The worker's index; 0 is the coordinator. */
  nodeIndex: z.number().int().min(1).max(65535),
  /** SHA-256 of the model file, lowercase hex. */
  modelSha256: z.string().regex(/^[0-9a-f]{64}$/),
  modelName: z.string().max(CONTROL_LIMITS.maxNameChars),
  /** The coordinator's data-plane port; 0 when it has none (strict mode). */
  coordinatorUdpPort: port,
});
export const joinOkMessageSchema = z.strictObject({
  type: z.literal("join-ok"),
  /** The worker's data-plane port; 0 when it has none (strict mode). */
  udpPort: port,
  profile: deviceProfileSchema,
});
export const planMessageSchema = z.strictObject({
  type: z.literal("plan"),
  /** Plan sequence number; each plan is the previous one's + 1. */
  sequence: u32,
  epoch: u32,
  /** Half-open [start, end) group ranges this worker computes: one set for every layer, or one per layer. */
  groups: planGroups,
  ffnBlockSize: z.number().int().min(1).max(CONTROL_LIMITS.maxFfnBlockSize),
  /** The format of every vector of this session, both ways. */
  wire: z.enum(WIRE_FORMAT_NAMES),
  /** The token position the coordinator is at: 0 for a new session, later for a worker that rejoins mid-sequence. */
  position: u32,
  /** How many times each data-plane datagram is sent, both ways (redundancy against loss; NACKs work either way). */
  copies: z.number().int().min(1).max(4),
  /**
   * Compute skipping (--skip-below): a worker with a predictor for this model leaves out its groups
   * whose predicted share of the phase's importance is under this, as the coordinator does.
   */
  skipBelow: z.number().min(0).lt(1).optional(),
});
export const planOkMessageSchema = z.strictObject({
  type: z.literal("plan-ok"),
  sequence: u32,
  /** Measured after the plan's weights were loaded; absent from workers that predate profiles. */
  profile: measuredProfileSchema.optional(),
});
/**
 * Live re-planning, first half: load these groups beside the ones being computed (a worker with
 * its own model file reads them while it goes on computing), and answer prepare-ok once ready.
 */
export const prepareMessageSchema = z.strictObject({
  type: z.literal("prepare"),
  /** Echoed in prepare-ok and activate; increases with every re-plan of the session. */
  sequence: u32,
  groups: planGroups,
  ffnBlockSize: z.number().int().min(1).max(CONTROL_LIMITS.maxFfnBlockSize),
});
export const prepareOkMessageSchema = z.strictObject({
  type: z.literal("prepare-ok"),
  sequence: u32,
});
/**
 * Live re-planning, second half, at a token boundary: compute the prepared groups from `position`
 * on. The coordinator sends that position's inputs only after activate-ok.
 */
export const activateMessageSchema = z.strictObject({
  type: z.literal("activate"),
  sequence: u32,
  /** The first token position computed with the new groups. */
  position: u32,
});
export const activateOkMessageSchema = z.strictObject({
  type: z.literal("activate-ok"),
  sequence: u32,
});
/** The coordinator asks a planned worker to measure itself again. */
export const profileRequestMessageSchema = z.strictObject({
  type: z.literal("profile-request"),
  /** Echoed in the answer, so a late answer to an older request is told apart. */
  requestId: u32,
});
export const profileMessageSchema = z.strictObject({
  type: z.literal("profile"),
  requestId: u32,
  profile: measuredProfileSchema,
});
export const heartbeatMessageSchema = z.strictObject({
  type: z.literal("heartbeat"),
  /** The sender's monotonic clock when sent. */
  sentAtMs: z.number().min(0).max(Number.MAX_SAFE_INTEGER),
});
export const inputMessageSchema = z.strictObject({ type: z.literal("input"), ...tensorSlice });
export const partialMessageSchema = z.strictObject({ type: z.literal("partial"), ...tensorSlice });
export const resetMessageSchema = z.strictObject({ type: z.literal("reset") });

// Shard transfer (cluster/shardTransfer.ts): a worker without the model file asks for its slice.
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
const shardBytes = z.number().int().min(1).max(CONTROL_LIMITS.maxShardBytes);
export const shardRequestMessageSchema = z.strictObject({
  type: z.literal("shard-request"),
  /** The plan whose groups the worker has no weights for. */
  sequence: u32,
});
export const shardOfferMessageSchema = z.strictObject({
  type: z.literal("shard-offer"),
  /** SHA-256 of the shard file's bytes, lowercase hex: its name in the worker's cache. */
  sha256: sha256Hex,
  sizeBytes: shardBytes,
});
export const shardAcceptMessageSchema = z.strictObject({
  type: z.literal("shard-accept"),
  sha256: sha256Hex,
  /** True when the worker's cache already holds it: no chunks follow. */
  cached: z.boolean(),
});
export const shardChunkMessageSchema = z.strictObject({
  type: z.literal("shard-chunk"),
  sha256: sha256Hex,
  /** Byte offset of `data` in the shard; chunks arrive in order, so it equals the bytes sent before. */
  offset: z.number().int().min(0).max(CONTROL_LIMITS.maxShardBytes),
  data: byteString.refine(
    (bytes) => bytes.byteLength > 0 && bytes.byteLength <= CONTROL_LIMITS.maxShardChunkBytes,
    { message: `expected 1 to ${CONTROL_LIMITS.maxShardChunkBytes} bytes` },
  ),
});
export const shardEndMessageSchema = z.strictObject({
  type: z.literal("shard-end"),
  sha256: sha256Hex,
  /** Bytes sent in all; must equal the offer's size. */
  sizeBytes: shardBytes,
});
export const shardStoredMessageSchema = z.strictObject({
  type: z.literal("shard-stored"),
  sha256: sha256Hex,
});
export const stopMessageSchema = z.strictObject({ type: z.literal("stop") });

export const controlMessageSchema = z.discriminatedUnion("type", [
  helloMessageSchema,
  authMessageSchema,
  authOkMessageSchema,
  errorMessageSchema,
  joinMessageSchema,
  joinOkMessageSchema,
  planMessageSchema,
  planOkMessageSchema,
  heartbeatMessageSchema,
  inputMessageSchema,
  partialMessageSchema,
  resetMessageSchema,
  stopMessageSchema,
  shardRequestMessageSchema,
  shardOfferMessageSchema,
  shardAcceptMessageSchema,
  shardChunkMessageSchema,
  shardEndMessageSchema,
  shardStoredMessageSchema,
  profileRequestMessageSchema,
  profileMessageSchema,
  prepareMessageSchema,
  prepareOkMessageSchema,
  activateMessageSchema,
  activateOkMessageSchema,
]);

export type DeviceProfile = z.infer<typeof deviceProfileSchema>;
export type HelloMessage = z.infer<typeof helloMessageSchema>;
export type AuthMessage = z.infer<typeof authMessageSchema>;
export type AuthOkMessage = z.infer<typeof authOkMessageSchema>;
export type ErrorMessage = z.infer<typeof errorMessageSchema>;
export type JoinMessage = z.infer<typeof joinMessageSchema>;
export type JoinOkMessage = z.infer<typeof joinOkMessageSchema>;
export type PlanMessage = z.infer<typeof planMessageSchema>;
export type PlanOkMessage = z.infer<typeof planOkMessageSchema>;
export type HeartbeatMessage = z.infer<typeof heartbeatMessageSchema>;
export type InputMessage = z.infer<typeof inputMessageSchema>;
export type PartialMessage = z.infer<typeof partialMessageSchema>;
export type ResetMessage = z.infer<typeof resetMessageSchema>;
export type StopMessage = z.infer<typeof stopMessageSchema>;
export type ShardRequestMessage = z.infer<typeof shardRequestMessageSchema>;
export type ShardOfferMessage = z.infer<typeof shardOfferMessageSchema>;
export type ShardAcceptMessage = z.infer<typeof shardAcceptMessageSchema>;
export type ShardChunkMessage = z.infer<typeof shardChunkMessageSchema>;
export type ShardEndMessage = z.infer<typeof shardEndMessageSchema>;
export type ShardStoredMessage = z.infer<typeof shardStoredMessageSchema>;
export type ProfileRequestMessage = z.infer<typeof profileRequestMessageSchema>;
export type ProfileMessage = z.infer<typeof profileMessageSchema>;
export type PrepareMessage = z.infer<typeof prepareMessageSchema>;
export type PrepareOkMessage = z.infer<typeof prepareOkMessageSchema>;
export type ActivateMessage = z.infer<typeof activateMessageSchema>;
export type ActivateOkMessage = z.infer<typeof activateOkMessageSchema>;
export type ControlMessage = z.infer<typeof controlMessageSchema>;
export type ControlMessageType = ControlMessage["type"];
export type ControlMessageOf<T extends ControlMessageType> = Extract<ControlMessage, { type: T }>;
/** [start, end) */
export type GroupRangeTuple = [start: number, end: number];
export type PhaseGroups = z.infer<typeof phaseGroups>;

/** Every message type, in protocol order. */
export const CONTROL_MESSAGE_TYPES = [
  "hello", "auth", "auth-ok", "error", "join", "join-ok", "plan", "plan-ok", "heartbeat", "input", "partial", "reset", "stop",
  "shard-request", "shard-offer", "shard-accept", "shard-chunk", "shard-end", "shard-stored", "profile-request", "profile",
  "prepare", "prepare-ok", "activate", "activate-ok",
] as const satisfies readonly ControlMessageType[];

/** Types sent only inside the handshake, never after it. */
export const HANDSHAKE_MESSAGE_TYPES = ["hello", "auth", "auth-ok"] as const satisfies readonly ControlMessageType[];

/** Which role may send each post-handshake type (the handshake types are handled by the connection). */
export const MESSAGE_SENDERS = {
  hello: "worker",
  auth: "coordinator",
  "auth-ok": "worker",
  error: "both",
  join: "coordinator",
  "join-ok": "worker",
  plan: "coordinator",
  "plan-ok": "worker",
  heartbeat: "both",
  input: "coordinator",
  partial: "worker",
  reset: "coordinator",
  stop: "both",
  "shard-request": "worker",
  "shard-offer": "coordinator",
  "shard-accept": "worker",
  "shard-chunk": "coordinator",
  "shard-end": "coordinator",
  "shard-stored": "worker",
  "profile-request": "coordinator",
  profile: "worker",
  prepare: "coordinator",
  "prepare-ok": "worker",
  activate: "coordinator",
  "activate-ok": "worker",
} as const satisfies Record<ControlMessageType, "coordinator" | "worker" | "both">;

/** "type: bad value" for the first issue, following a union into the branch that got furthest. */
function describeIssue(issues: readonly z.core.$ZodIssue[]): { field: string; message: string } {
  let best: z.core.$ZodIssue | undefined;
  const visit = (list: readonly z.core.$ZodIssue[], prefix: readonly PropertyKey[]): void => {
    for (const issue of list) {
      const path = [...prefix, ...issue.path];
      if (issue.code === "invalid_union" && issue.errors.length > 0) {
        // The branch the sender most likely meant: its first issue lies deepest, and is not a wrong shape.
        const branches = issue.errors.map((branch) => branch.map((i) => ({ ...i, path: [...path, ...i.path] })));
        const score = (branch: readonly z.core.$ZodIssue[]): number =>
          branch[0] === undefined ? 0 : branch[0].path.length * 2 + (branch[0].code === "invalid_type" ? 0 : 1);
        branches.sort((a, b) => score(b) - score(a));
        visit(branches[0]!, []);
      } else if (!best) {
        best = { ...issue, path };
      }
      if (best) return;
    }
  };
  visit(issues, []);
  if (!best) return { field: "(message)", message: "rejected by the schema" };
  let field = best.path.map(String).join(".") || "(message)";
  let message = best.message;
  if (best.code === "unrecognized_keys") {
    const keys = best.keys.map((key) => `'${key}'`).join(", ");
    field = [...best.path.map(String), best.keys[0] ?? ""].filter((part) => part !== "").join(".");
    message = `unknown key${best.keys.length > 1 ? "s" : ""} ${keys}`;
  }
  return { field, message };
}

/** `value` as a ControlMessage, or a MessageInvalidError naming the bad field. */
export function parseControlMessage(value: unknown): ControlMessage {
  const result = controlMessageSchema.safeParse(value);
  if (result.success) return result.data;
  const { field, message } = describeIssue(result.error.issues);
  throw new MessageInvalidError(field, message);
}

/** The message in a decoded frame body (after its MAC, if any, verified). Throws MessageInvalidError only. */
export function decodeControlMessage(body: Uint8Array): ControlMessage {
  return parseControlMessage(decodeBody(body));
}

/** The msgpack body of a message, validated first (MessageInvalidError for a bad one). */
export function encodeControlMessage(message: ControlMessage): Buffer {
  return encodeBody(parseControlMessage(message));
}

/**
 * The order check (C6) for a state machine: returns when `message.type` is one of `expected`,
 * else throws an UnexpectedMessageError naming the state, what was expected and what came,
 * before the caller has changed anything.
 *
 * ```ts
 * expectMessage(message, ["join"], "worker awaiting join");       // a plan here throws
 * ```
 */
export function expectMessage<T extends ControlMessageType>(
  message: ControlMessage,
  expected: readonly T[],
  state: string,
): asserts message is ControlMessageOf<T> {
  if (!(expected as readonly ControlMessageType[]).includes(message.type)) throw new UnexpectedMessageError(state, expected, message.type);
}
