/** How commands build kernels and load a model: native kernels and a mapped file when the addon loaded. */
import { createKernels, loadNativeAddon, mmapFile, parseKernelChoice, type MatrixKernels } from "../kernels/index.js";
import { loadModel, openGguf, readModelConfig, type GgufFile, type LoadedModel, type ModelConfig, type OpenGgufOptions } from "../model/index.js";
import type { ModelFlagValues } from "./modelFlags.js";

export interface CommandModel {
  model: LoadedModel;
  kernels: MatrixKernels;
}

/** Loads the model of `flags`; HALO_KERNELS=ts|native|auto picks the kernels (default auto). */
export async function loadCommandModel(flags: ModelFlagValues): Promise<CommandModel> {
  const choice = parseKernelChoice(process.env["HALO_KERNELS"]);
  const kernels = createKernels({ choice, nThreads: flags.threads });
  const useMap = choice !== "ts" && loadNativeAddon() !== undefined;
  const model = await loadModel(flags.modelPath, useMap ? { map: mmapFile } : {});
  return { model, kernels };
}

/** Kernels, and how to open model files (mapped when the native addon loaded and HALO_KERNELS allows it). */
export function commandKernels(threads: number | undefined): { kernels: MatrixKernels; map: OpenGgufOptions["map"] } {
  const choice = parseKernelChoice(process.env["HALO_KERNELS"]);
  const useMap = choice !== "ts" && loadNativeAddon() !== undefined;
  return { kernels: createKernels({ choice, nThreads: threads }), map: useMap ? mmapFile : undefined };
}

/** A model file opened for slicing: metadata and tensor table only, no weights read. */
export async function openCommandModelFile(path: string, map: OpenGgufOptions["map"]): Promise<{ file: GgufFile; config: ModelConfig }> {
  const file = await openGguf(path, map === undefined ? {} : { map });
  try {
    return { file, config: readModelConfig(file.metadata) };
  } catch (error) {
    file.close();
    throw error;
  }
}
