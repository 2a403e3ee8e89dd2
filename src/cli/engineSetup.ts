/** How commands build kernels and load a model: native kernels and a mapped file when the addon loaded. */
import { createKernels, loadNativeAddon, mmapFile, parseKernelChoice, type MatrixKernels } from "../kernels/index.js";
import { loadModel, type LoadedModel } from "../model/index.js";
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
