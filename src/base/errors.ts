/**
 * halo's coded errors. Every error a library function throws is a HaloError with a stable
 * `code`; only `cli/` turns one into an exit status. docs/errors.md documents every code and
 * test/base/errors.test.ts checks the two against each other.
 */

export const ERROR_CODES = {
  HALO_ERR_GGUF_HEADER: "The GGUF header or metadata is malformed or truncated.",
  HALO_ERR_GGUF_TENSOR: "A GGUF tensor record is inconsistent with the file (offset, size, overlap, alignment, name).",
  HALO_ERR_GGUF_SHAPE: "A tensor's shape does not match what the model's hyperparameters require.",
  HALO_ERR_UNSUPPORTED_TYPE: "A tensor uses a ggml type halo cannot compute with.",
  HALO_ERR_MODEL_CONFIG: "A model hyperparameter is missing, zero, absurd or inconsistent.",
  HALO_ERR_TOKENIZER: "The tokenizer vocabulary in the model file is missing or malformed.",
  HALO_ERR_FILE: "A file could not be opened, read or written.",
  HALO_ERR_USAGE: "A command-line flag or API argument is missing or invalid.",
  HALO_ERR_CONTEXT: "The request does not fit in the model's context window.",
  HALO_ERR_CONVERT: "A checkpoint being converted is malformed.",
  HALO_ERR_NATIVE: "The native kernels failed inside the addon (out of memory, a thread could not start, an unexpected C++ exception).",
  HALO_ERR_FRAME: "A control-plane frame has an invalid length prefix (zero or over the cap), or a frame to send is over the cap.",
  HALO_ERR_FRAME_MAC: "An authenticated control-plane frame failed its MAC (replayed, reordered, forged or corrupted).",
  HALO_ERR_MESSAGE_INVALID: "A control message is not valid msgpack or does not match its schema.",
  HALO_ERR_MESSAGE_UNEXPECTED: "A valid control message arrived where the protocol does not allow it (before authentication, wrong direction, out of order).",
  HALO_ERR_AUTH: "The control-plane handshake failed: the peer's MAC does not match the cluster key.",
  HALO_ERR_PROTOCOL_VERSION: "The peer speaks a control protocol version this build does not.",
  HALO_ERR_DEADLINE: "A network deadline passed (handshake, idle read, receive, close).",
  HALO_ERR_PEER_LOST: "The peer sent nothing for the number of heartbeat intervals that means it is lost.",
  HALO_ERR_CONNECTION_CLOSED: "The control connection closed or failed at the socket level, or was used after closing.",
  HALO_ERR_PEER_REJECTED: "The peer refused the connection with an error message (its code and message are attached).",
  HALO_ERR_SLICE_ALIGNMENT: "A device's column slice of a quantized tensor does not start and end on quantization block boundaries.",
  HALO_ERR_SHARD_INVALID: "A shard file is malformed or does not hold what it claims or what was asked for.",
  HALO_ERR_SHARD_TRANSFER: "A shard transfer failed: wrong hash or size, a chunk out of order or past the end, a refusal, or the connection was lost.",
  HALO_ERR_TESTBED: "A network-namespace testbed command (ip, nft, tc) failed, its tool is missing, or its output could not be read.",
  HALO_ERR_PREDICTOR: "A predictor file is malformed, of another version, or was fitted for another model.",
  HALO_ERR_SCHEDULE: "The scheduler cannot place the model: its input is invalid, no device can compute a kind of group, or the memory budgets are too small.",
  HALO_ERR_MEMORY_BUDGET: "A worker's memory budget cannot hold its resident weights plus one staging buffer for its largest streamed layer phase.",
  HALO_ERR_FILE_CHANGED: "A weights file being streamed was truncated or modified after it was opened.",
  HALO_ERR_CHAT_TEMPLATE: "The model's chat template does not parse, or refused the conversation while rendering (its raise_exception).",
  HALO_ERR_REPLAN: "A live re-plan could not be prepared on a worker (it has no model file of its own, or loading its new groups failed); the placement stays as it was.",
  HALO_ERR_REQUEST: "An HTTP API request was refused: invalid, unauthorized, too large, of the wrong type, for an unknown model or route, or over the queue's capacity.",
} as const satisfies Record<`HALO_ERR_${string}`, string>;

export type HaloErrorCode = keyof typeof ERROR_CODES;

export class HaloError extends Error {
  readonly code: HaloErrorCode;

  constructor(code: HaloErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = "HaloError";
  }
}

/** Malformed GGUF container: bad magic, version, counts, strings, arrays, truncation. */
export class GgufHeaderError extends HaloError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("HALO_ERR_GGUF_HEADER", message, options);
    this.name = "GgufHeaderError";
  }
}

/** A tensor record that the data section cannot back. */
export class GgufTensorError extends HaloError {
  readonly tensorName: string | undefined;
  constructor(message: string, tensorName?: string) {
    super("HALO_ERR_GGUF_TENSOR", message);
    this.name = "GgufTensorError";
    this.tensorName = tensorName;
  }
}

/** A tensor whose shape differs from the one the hyperparameters imply (like llama.cpp's check_tensor_dims). */
export class GgufShapeError extends HaloError {
  readonly tensorName: string;
  readonly expectedShape: readonly number[];
  readonly actualShape: readonly number[];
  constructor(tensorName: string, expectedShape: readonly number[], actualShape: readonly number[]) {
    super(
      "HALO_ERR_GGUF_SHAPE",
      `tensor '${tensorName}' has shape [${actualShape.join(", ")}], expected [${expectedShape.join(", ")}]`,
    );
    this.name = "GgufShapeError";
    this.tensorName = tensorName;
    this.expectedShape = expectedShape;
    this.actualShape = actualShape;
  }
}

export class UnsupportedTypeError extends HaloError {
  constructor(message: string) {
    super("HALO_ERR_UNSUPPORTED_TYPE", message);
    this.name = "UnsupportedTypeError";
  }
}

export class ModelConfigError extends HaloError {
  readonly key: string;
  constructor(key: string, message: string) {
    super("HALO_ERR_MODEL_CONFIG", `${key}: ${message}`);
    this.name = "ModelConfigError";
    this.key = key;
  }
}

export class TokenizerError extends HaloError {
  constructor(message: string) {
    super("HALO_ERR_TOKENIZER", message);
    this.name = "TokenizerError";
  }
}

export class FileError extends HaloError {
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super("HALO_ERR_FILE", `${path}: ${message}`, options);
    this.name = "FileError";
    this.path = path;
  }
}

export class UsageError extends HaloError {
  constructor(message: string) {
    super("HALO_ERR_USAGE", message);
    this.name = "UsageError";
  }
}

export class ContextOverflowError extends HaloError {
  readonly nTokens: number;
  readonly contextLength: number;
  constructor(nTokens: number, contextLength: number) {
    super("HALO_ERR_CONTEXT", `${nTokens} tokens do not fit in the context of ${contextLength} tokens`);
    this.name = "ContextOverflowError";
    this.nTokens = nTokens;
    this.contextLength = contextLength;
  }
}

export class ConvertError extends HaloError {
  constructor(message: string) {
    super("HALO_ERR_CONVERT", message);
    this.name = "ConvertError";
  }
}

/** A failure inside the native addon that is not the caller's fault. */
export class NativeKernelError extends HaloError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("HALO_ERR_NATIVE", message, options);
    this.name = "NativeKernelError";
  }
}

/** A control-plane length prefix that is zero or over the cap; raised before anything of that size is allocated. */
export class FrameError extends HaloError {
  constructor(message: string) {
    super("HALO_ERR_FRAME", message);
    this.name = "FrameError";
  }
}

/** An authenticated control frame whose MAC does not verify at the expected sequence number. */
export class FrameMacError extends HaloError {
  readonly sequence: number;
  constructor(sequence: number) {
    super("HALO_ERR_FRAME_MAC", `control frame ${sequence} failed its MAC (replayed, reordered, forged or corrupted)`);
    this.name = "FrameMacError";
    this.sequence = sequence;
  }
}

/** A control message that is not msgpack halo accepts, or fails its schema; `field` names where. */
export class MessageInvalidError extends HaloError {
  readonly field: string;
  constructor(field: string, message: string) {
    super("HALO_ERR_MESSAGE_INVALID", `invalid control message: ${field}: ${message}`);
    this.name = "MessageInvalidError";
    this.field = field;
  }
}

/** A valid control message that the protocol does not allow here. */
export class UnexpectedMessageError extends HaloError {
  readonly expectedTypes: readonly string[];
  readonly actualType: string;
  constructor(where: string, expectedTypes: readonly string[], actualType: string) {
    super(
      "HALO_ERR_MESSAGE_UNEXPECTED",
      `${where}: expected ${expectedTypes.map((t) => `'${t}'`).join(" or ") || "nothing"}, got '${actualType}'`,
    );
    this.name = "UnexpectedMessageError";
    this.expectedTypes = expectedTypes;
    this.actualType = actualType;
  }
}

/** The handshake MAC did not match: the peers hold different cluster keys, or the response is a replay. */
export class AuthError extends HaloError {
  constructor(message: string) {
    super("HALO_ERR_AUTH", message);
    this.name = "AuthError";
  }
}

export class ProtocolVersionError extends HaloError {
  readonly expectedVersion: number;
  readonly actualVersion: number;
  constructor(expectedVersion: number, actualVersion: number) {
    super("HALO_ERR_PROTOCOL_VERSION", `peer speaks control protocol ${actualVersion}, expected ${expectedVersion}; run the same halo version on every node`);
    this.name = "ProtocolVersionError";
    this.expectedVersion = expectedVersion;
    this.actualVersion = actualVersion;
  }
}

/** A deadline passed; `what` names the wait and `limitMs` its length. */
export class DeadlineExceededError extends HaloError {
  readonly what: string;
  readonly limitMs: number;
  constructor(what: string, limitMs: number) {
    super("HALO_ERR_DEADLINE", `${what} did not complete within ${limitMs} ms`);
    this.name = "DeadlineExceededError";
    this.what = what;
    this.limitMs = limitMs;
  }
}

/** The peer went silent for `silentMs` (at least `missedHeartbeats` heartbeat intervals). */
export class PeerLostError extends HaloError {
  readonly silentMs: number;
  readonly missedHeartbeats: number;
  constructor(silentMs: number, missedHeartbeats: number, heartbeatIntervalMs: number) {
    super("HALO_ERR_PEER_LOST", `peer sent nothing for ${silentMs} ms (${missedHeartbeats} missed heartbeats at ${heartbeatIntervalMs} ms)`);
    this.name = "PeerLostError";
    this.silentMs = silentMs;
    this.missedHeartbeats = missedHeartbeats;
  }
}

export class ConnectionClosedError extends HaloError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("HALO_ERR_CONNECTION_CLOSED", message, options);
    this.name = "ConnectionClosedError";
  }
}

/** The peer sent `{type:"error"}`; its code and message are kept as they came (untrusted text). */
export class PeerRejectedError extends HaloError {
  readonly remoteCode: string;
  readonly remoteMessage: string;
  constructor(remoteCode: string, remoteMessage: string) {
    super("HALO_ERR_PEER_REJECTED", `peer refused the connection: ${remoteCode}: ${remoteMessage}`);
    this.name = "PeerRejectedError";
    this.remoteCode = remoteCode;
    this.remoteMessage = remoteMessage;
  }
}

/** Columns [columnStart, columnEnd) of a quantized tensor cannot be cut out of its blocks of `blockSize`. */
export class SliceAlignmentError extends HaloError {
  readonly tensorName: string;
  readonly blockSize: number;
  readonly columnStart: number;
  readonly columnEnd: number;
  constructor(tensorName: string, blockSize: number, columnStart: number, columnEnd: number, hint: string) {
    super(
      "HALO_ERR_SLICE_ALIGNMENT",
      `tensor '${tensorName}': columns [${columnStart}, ${columnEnd}) are not on its ${blockSize}-element quantization blocks; ${hint}`,
    );
    this.name = "SliceAlignmentError";
    this.tensorName = tensorName;
    this.blockSize = blockSize;
    this.columnStart = columnStart;
    this.columnEnd = columnEnd;
  }
}

/** A shard file that is not a well-formed halo shard, or not the one that was asked for. */
export class ShardInvalidError extends HaloError {
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super("HALO_ERR_SHARD_INVALID", `shard ${path}: ${message}`, options);
    this.name = "ShardInvalidError";
    this.path = path;
  }
}

/** Why a shard transfer failed. */
export type ShardTransferFailure =
  | "too-large"
  | "out-of-order"
  | "beyond-size"
  | "size-mismatch"
  | "hash-mismatch"
  | "unexpected-message"
  | "rejected"
  | "connection-lost"
  | "io";

/** A shard transfer that did not complete; nothing was left in the cache. */
export class ShardTransferError extends HaloError {
  readonly reason: ShardTransferFailure;
  readonly sha256: string;
  constructor(reason: ShardTransferFailure, sha256: string, message: string, options?: { cause?: unknown }) {
    super("HALO_ERR_SHARD_TRANSFER", `shard ${sha256.slice(0, 12)}: ${message}`, options);
    this.name = "ShardTransferError";
    this.reason = reason;
    this.sha256 = sha256;
  }
}

/** A testbed command that failed; `argv` is what ran (no shell) and `stderr` what it said. */
export class TestbedError extends HaloError {
  readonly argv: readonly string[];
  readonly stderr: string;
  constructor(argv: readonly string[], message: string, options?: { cause?: unknown; stderr?: string }) {
    super("HALO_ERR_TESTBED", `${argv.join(" ")}: ${message}`, options);
    this.name = "TestbedError";
    this.argv = argv;
    this.stderr = options?.stderr ?? "";
  }
}

/** A predictor file that cannot be used: malformed, another format version, or fitted for another model. */
export class PredictorFileError extends HaloError {
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super("HALO_ERR_PREDICTOR", `predictor ${path}: ${message}`, options);
    this.name = "PredictorFileError";
    this.path = path;
  }
}

/** Why the scheduler refused to plan. */
export type ScheduleFailure = "invalid-input" | "no-capable-device" | "insufficient-memory";

/** The scheduler's input cannot be planned; `reason` says which check failed, the message names the figure or the shortfall. */
export class ScheduleError extends HaloError {
  readonly reason: ScheduleFailure;
  constructor(reason: ScheduleFailure, message: string) {
    super("HALO_ERR_SCHEDULE", message);
    this.name = "ScheduleError";
    this.reason = reason;
  }
}

/** A memory budget below the least that can stream a device's groups; `minimumBytes` is that least. */
export class MemoryBudgetError extends HaloError {
  readonly budgetBytes: number;
  readonly minimumBytes: number;
  constructor(budgetBytes: number, minimumBytes: number, detail: string) {
    super("HALO_ERR_MEMORY_BUDGET", `a memory budget of ${formatMiB(budgetBytes)} cannot hold these groups: at least ${formatMiB(minimumBytes)} (${minimumBytes} bytes) is needed; ${detail}`);
    this.name = "MemoryBudgetError";
    this.budgetBytes = budgetBytes;
    this.minimumBytes = minimumBytes;
  }
}

/** A file whose bytes are read while running no longer is what was opened (a short read, another size or modification time). */
export class FileChangedError extends HaloError {
  readonly path: string;
  constructor(path: string, message: string) {
    super("HALO_ERR_FILE_CHANGED", `${path}: ${message}`);
    this.name = "FileChangedError";
    this.path = path;
  }
}

/** A worker could not prepare the groups of a live re-plan; it tells the coordinator and goes on computing its old ones. */
export class ReplanError extends HaloError {
  constructor(message: string) {
    super("HALO_ERR_REPLAN", message);
    this.name = "ReplanError";
  }
}

function formatMiB(bytes: number): string {
  return Number.isFinite(bytes) ? `${(bytes / 2 ** 20).toFixed(2)} MiB` : "unlimited";
}

/** A chat template that does not parse, or that refused the messages while rendering. */
export class ChatTemplateError extends HaloError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("HALO_ERR_CHAT_TEMPLATE", message, options);
    this.name = "ChatTemplateError";
  }
}

/** The OpenAI error `type` of a refused HTTP request. */
export type RequestErrorType = "invalid_request_error" | "authentication_error" | "rate_limit_error" | "server_error";

/**
 * An HTTP API request the server refuses, with what an OpenAI-shaped error body needs: the status,
 * the error type, the offending parameter (null when none) and a machine-readable code, plus any
 * headers the status calls for (Retry-After, Allow, WWW-Authenticate).
 */
export class RequestError extends HaloError {
  readonly status: number;
  readonly type: RequestErrorType;
  readonly param: string | null;
  readonly apiCode: string | null;
  readonly headers: Readonly<Record<string, string>>;
  constructor(status: number, message: string, details: { type?: RequestErrorType; param?: string | null; apiCode?: string | null; headers?: Record<string, string> } = {}) {
    super("HALO_ERR_REQUEST", message);
    this.name = "RequestError";
    this.status = status;
    this.type = details.type ?? "invalid_request_error";
    this.param = details.param ?? null;
    this.apiCode = details.apiCode ?? null;
    this.headers = details.headers ?? {};
  }
}

/** Describes an unknown thrown value for a one-line message. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
