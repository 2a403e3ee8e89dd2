/**
 * The native kernels addon (native/, built by node-gyp): its exact surface, the loader, and
 * `createNativeKernels`, which implements MatrixKernels on it. This is the only file that
 * touches the addon; everything else sees MatrixKernels.
 *
 * The addon validates every argument itself and throws an Error with a `code`; this file turns
 * those into HaloErrors that name the matrix. Kernels write into caller-owned arrays and
 * allocate nothing per call.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { ERROR_CODES, HaloError, type HaloErrorCode } from "../base/index.js";
import type { Matrix, MatrixKernels } from "./matrix.js";
import { GGML_TYPE_ID } from "./types.js";

/** The surface version this file is written against (kAddonVersion in native/src/binding.cc). */
export const NATIVE_ADDON_VERSION = 2;

/** Where the build puts the addon, relative to this file once compiled (dist/src/kernels/native.js). */
const ADDON_PATH = fileURLToPath(new URL("../../../native/build/Release/halo_kernels.node", import.meta.url));

/**
 * One kernel context: a persistent thread pool, a kernel set and a reused scratch (Q8_0
 * activations, attention scores).
 * Arguments mirror MatrixKernels with the matrix unpacked to (data, typeId, nRows, nCols, rowBytes).
 * Lengths, offsets and strides count Float32Array elements.
 */
export interface NativeKernelContext {
  /** Workers per call, the calling thread included (0 once closed). */
  readonly nThreads: number;
  /** The kernel set in use, one of NativeAddon.simd ("" once closed). */
  readonly simd: string;
  matvec(
    w: Uint8Array, typeId: number, nRows: number, nCols: number, rowBytes: number,
    x: Float32Array, xOffset: number, y: Float32Array, yOffset: number,
    rowStart: number, rowEnd: number, colStart: number, colEnd: number,
  ): void;
  matmul(
    w: Uint8Array, typeId: number, nRows: number, nCols: number, rowBytes: number, nTokens: number,
    x: Float32Array, xOffset: number, xStride: number, y: Float32Array, yOffset: number, yStride: number,
    rowStart: number, rowEnd: number, colStart: number, colEnd: number,
  ): void;
  getRow(w: Uint8Array, typeId: number, nRows: number, nCols: number, rowBytes: number, row: number, out: Float32Array): void;
  /** MatrixKernels.attend; the scores scratch is the context's own. */
  attend(
    nQueryHeads: number, headDim: number, q: Float32Array, qOffset: number, keys: Float32Array, values: Float32Array,
    valid: Uint8Array, nPositions: number, scale: number, out: Float32Array, outOffset: number,
  ): void;
  /** dst = Q8_0 blocks of x (x.length % 32 == 0), with the same code the quantized kernels use on activations. */
  quantizeRowQ8_0(x: Float32Array, dst: Uint8Array): void;
  /** Joins the worker threads now instead of at garbage collection. Idempotent; later calls throw. */
  close(): void;
}

export interface NativeAddon {
  readonly addonVersion: number;
  /** The architecture the addon was compiled for: "x86_64", "aarch64", … */
  readonly isa: string;
  /** Kernel sets this CPU can run, best first, always ending with "generic": e.g. ["avx2", "generic"]. */
  readonly simd: readonly string[];
  /** Block geometry per ggml type id, from the C structs (native/src/quants.h). */
  readonly typeLayouts: Readonly<Record<string, { readonly blockSize: number; readonly blockBytes: number }>>;
  /** `simd` "" picks the best kernel set. */
  readonly KernelContext: new (nThreads: number, simd: string) => NativeKernelContext;
  /**
   * An ArrayBuffer over a read-only (PROT_READ, MAP_PRIVATE) mapping of the whole file, unmapped
   * when the buffer is collected. Writing into it kills the process with SIGSEGV: view it read-only.
   */
  mmapFile(path: string): ArrayBuffer;
}

/** What `halo doctor` reports about the addon. */
export interface NativeAddonStatus {
  readonly loaded: boolean;
  /** Why it did not load, and how to fix it. */
  readonly reason?: string;
  readonly isa?: string;
  readonly simd?: string[];
  /** The .node file looked for. */
  readonly path: string;
}

type LoadResult = { readonly addon: NativeAddon | undefined; readonly status: NativeAddonStatus };

// Loading is idempotent per process (dlopen caches the library), so the outcome is memoised
// here rather than threaded through callers; nothing else in this module is mutable.
let loadResult: LoadResult | undefined;

function load(): LoadResult {
  const fix = "run `npx node-gyp rebuild --directory native` (needs python3, make and a C++ compiler)";
  if (!existsSync(ADDON_PATH)) {
    return { addon: undefined, status: { loaded: false, reason: `not built: ${ADDON_PATH} is missing; ${fix}`, path: ADDON_PATH } };
  }
  let addon: NativeAddon;
  try {
    addon = createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
  } catch (error) {
    // Safe to continue: the caller falls back to the TS kernels and doctor shows the reason.
    const message = error instanceof Error ? error.message : String(error);
    return { addon: undefined, status: { loaded: false, reason: `failed to load ${ADDON_PATH}: ${message}; ${fix}`, path: ADDON_PATH } };
  }
  if (addon.addonVersion !== NATIVE_ADDON_VERSION || typeof addon.KernelContext !== "function" || typeof addon.mmapFile !== "function") {
    const reason = `stale build: addon surface version ${String(addon.addonVersion)}, expected ${NATIVE_ADDON_VERSION}; ${fix}`;
    return { addon: undefined, status: { loaded: false, reason, path: ADDON_PATH } };
  }
  return { addon, status: { loaded: true, isa: addon.isa, simd: [...addon.simd], path: ADDON_PATH } };
}

/** The addon, or undefined (never throws) if it is missing, fails to load or is stale; see nativeAddonStatus(). */
export function loadNativeAddon(): NativeAddon | undefined {
  loadResult ??= load();
  return loadResult.addon;
}

export function nativeAddonStatus(): NativeAddonStatus {
  loadResult ??= load();
  return loadResult.status;
}

export interface NativeKernelsOptions {
  /** Threads per kernel call, the calling thread included: an integer in [1, 1024]. */
  readonly nThreads: number;
  /** Kernel set by name, one of nativeAddonStatus().simd (e.g. "generic" to test the scalar path). Defaults to the best the CPU runs. */
  readonly simd?: string;
}

export interface NativeMatrixKernels extends MatrixKernels {
  readonly nThreads: number;
  /** The kernel set in use. */
  readonly simd: string;
  /** Quantizes activations to Q8_0 exactly as the quantized kernels do (x.length % 32 == 0). */
  quantizeRowQ8_0(x: Float32Array, dst: Uint8Array): void;
  /** Stops the worker threads now rather than at garbage collection. Idempotent; kernel calls after it throw. */
  close(): void;
}

function isHaloErrorCode(code: unknown): code is HaloErrorCode {
  return typeof code === "string" && Object.hasOwn(ERROR_CODES, code);
}

/** Converts an addon error to a HaloError mentioning `what`; anything without a registered code is rethrown as is. */
function toHaloError(error: unknown, what: string): unknown {
  if (!(error instanceof Error)) return error;
  const code: unknown = (error as Error & { code?: unknown }).code;
  return isHaloErrorCode(code) ? new HaloError(code, `${what}: ${error.message}`, { cause: error }) : error;
}

/** Native MatrixKernels on `nThreads` threads. Throws HALO_ERR_FILE if the addon is unavailable. */
export function createNativeKernels(options: NativeKernelsOptions): NativeMatrixKernels {
  const addon = loadNativeAddon();
  if (addon === undefined) {
    throw new HaloError("HALO_ERR_FILE", `native kernels unavailable: ${nativeAddonStatus().reason ?? "unknown reason"}`);
  }
  let ctx: NativeKernelContext;
  try {
    ctx = new addon.KernelContext(options.nThreads, options.simd ?? "");
  } catch (error) {
    throw toHaloError(error, "createNativeKernels");
  }
  const simd = ctx.simd;
  return {
    name: `native-${simd}`,
    nThreads: ctx.nThreads,
    simd,
    matvec(w: Matrix, x, xOffset, y, yOffset, rowStart, rowEnd, colStart, colEnd) {
      try {
        ctx.matvec(w.data, GGML_TYPE_ID[w.type], w.nRows, w.nCols, w.rowBytes, x, xOffset, y, yOffset, rowStart, rowEnd, colStart, colEnd);
      } catch (error) {
        throw toHaloError(error, `matvec on '${w.name}'`);
      }
    },
    matmul(w: Matrix, nTokens, x, xOffset, xStride, y, yOffset, yStride, rowStart, rowEnd, colStart, colEnd) {
      try {
        ctx.matmul(w.data, GGML_TYPE_ID[w.type], w.nRows, w.nCols, w.rowBytes, nTokens, x, xOffset, xStride, y, yOffset, yStride, rowStart, rowEnd, colStart, colEnd);
      } catch (error) {
        throw toHaloError(error, `matmul on '${w.name}'`);
      }
    },
    getRow(w: Matrix, row: number, out: Float32Array) {
      try {
        ctx.getRow(w.data, GGML_TYPE_ID[w.type], w.nRows, w.nCols, w.rowBytes, row, out);
      } catch (error) {
        throw toHaloError(error, `getRow on '${w.name}'`);
      }
    },
    attend(nQueryHeads, headDim, q, qOffset, keys, values, valid, nPositions, scale, out, outOffset) {
      try {
        ctx.attend(nQueryHeads, headDim, q, qOffset, keys, values, valid, nPositions, scale, out, outOffset);
      } catch (error) {
        throw toHaloError(error, `attend over ${nPositions} positions of ${nQueryHeads} heads x ${headDim}`);
      }
    },
    quantizeRowQ8_0(x: Float32Array, dst: Uint8Array) {
      try {
        ctx.quantizeRowQ8_0(x, dst);
      } catch (error) {
        throw toHaloError(error, "quantizeRowQ8_0");
      }
    },
    close() {
      ctx.close();
    },
  };
}

/**
 * The whole file as a read-only mapped ArrayBuffer (no copy), unmapped when collected. Writing
 * through a view of it crashes the process. Throws HALO_ERR_FILE if the file cannot be mapped
 * or the addon is unavailable (callers may then fall back to reading the file).
 */
export function mmapFile(path: string): ArrayBuffer {
  const addon = loadNativeAddon();
  if (addon === undefined) {
    throw new HaloError("HALO_ERR_FILE", `${path}: cannot map without the native addon: ${nativeAddonStatus().reason ?? "unknown reason"}`);
  }
  try {
    return addon.mmapFile(path);
  } catch (error) {
    throw toHaloError(error, "mmapFile");
  }
}
