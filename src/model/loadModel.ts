/** Opens a GGUF model file and builds everything inference needs from it. */
import { GgufShapeError } from "../base/index.js";
import { readModelConfig, type ModelConfig } from "./config.js";
import { openGguf, type GgufFile, type OpenGgufOptions } from "./ggufReader.js";
import { LLAMA_TENSOR_NAMES, loadLlamaWeights, type LlamaWeights } from "./llamaWeights.js";
import { Tokenizer } from "./tokenizer.js";

export interface LoadedModel {
  readonly path: string;
  readonly file: GgufFile;
  readonly config: ModelConfig;
  readonly weights: LlamaWeights;
  readonly tokenizer: Tokenizer;
}

/** `options.map` uses the weights in place from a mapping of the file (see OpenGgufOptions). */
export async function loadModel(path: string, options: OpenGgufOptions = {}): Promise<LoadedModel> {
  const file = await openGguf(path, options);
  try {
    const config = readModelConfig(file.metadata);
    const tokenizer = Tokenizer.fromGguf(file.metadata);
    const embedding = file.tensor(LLAMA_TENSOR_NAMES.tokenEmbedding);
    if (embedding !== undefined && embedding.shape[1] !== tokenizer.vocabSize) {
      throw new GgufShapeError(embedding.name, [config.dim, tokenizer.vocabSize], embedding.shape);
    }
    const weights = loadLlamaWeights(file, config);
    return { path, file, config, weights, tokenizer };
  } catch (error) {
    file.close();
    throw error;
  }
}
