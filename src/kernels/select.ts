/**
 * Picks the matrix kernels: the native addon when it loaded, otherwise the pure-TS reference.
 * "ts" forces the reference (HALO_KERNELS=ts at the CLI); "native" fails loudly without the addon.
 */
import { availableParallelism } from "node:os";
import { HaloError } from "../base/index.js";
import type { MatrixKernels } from "./matrix.js";
import { createNativeKernels, loadNativeAddon, nativeAddonStatus } from "./native.js";
import { createReferenceKernels } from "./reference/kernels.js";

export const KERNEL_CHOICES = ["auto", "native", "ts"] as const;
export type KernelChoice = (typeof KERNEL_CHOICES)[number];

export interface KernelSelection {
  /** Defaults to "auto". */
  choice?: KernelChoice;
  /** Threads per kernel call. Defaults to the machine's available parallelism. */
  nThreads?: number;
}

export function defaultThreadCount(): number {
  return availableParallelism();
}

export function parseKernelChoice(value: string | undefined): KernelChoice {
  if (value === undefined || value === "") return "auto";
  if ((KERNEL_CHOICES as readonly string[]).includes(value)) return value as KernelChoice;
  throw new HaloError("HALO_ERR_USAGE", `HALO_KERNELS must be one of ${KERNEL_CHOICES.join(", ")}, got '${value}'`);
}

export function createKernels(selection: KernelSelection = {}): MatrixKernels {
  const choice = selection.choice ?? "auto";
  const nThreads = selection.nThreads ?? defaultThreadCount();
  switch (choice) {
    case "ts":
      return createReferenceKernels();
    case "native":
      return createNativeKernels({ nThreads });
    case "auto":
      return loadNativeAddon() === undefined ? createReferenceKernels() : createNativeKernels({ nThreads });
    default:
      return choice satisfies never;
  }
}

export { nativeAddonStatus };
