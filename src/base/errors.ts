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

/** Describes an unknown thrown value for a one-line message. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
