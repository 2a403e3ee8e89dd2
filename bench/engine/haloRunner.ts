/**
 * One halo measurement in its own process (so peak RSS is this engine's alone): prefill a
 * seeded random prompt as a batch, then decode greedily. Prints one JSON line.
 * argv: model path, threads, prompt tokens, decode tokens.
 */
import { argmax, Engine } from "../../src/engine/index.js";
import { createKernels, loadNativeAddon, mmapFile } from "../../src/kernels/index.js";
import { loadModel } from "../../src/model/index.js";
import { SeededRandom } from "../../src/base/index.js";

const [modelPath, threadsArg, promptArg, decodeArg] = process.argv.slice(2);
const nThreads = Number(threadsArg);
const nPrompt = Number(promptArg);
const nDecode = Number(decodeArg);
const model = await loadModel(modelPath!, loadNativeAddon() === undefined ? {} : { map: mmapFile });
const kernels = createKernels({ nThreads });
const engine = new Engine(model.config, model.weights, { kernels, contextLength: nPrompt + nDecode + 1, maxBatch: nPrompt });
const random = new SeededRandom(7);
const prompt = [model.tokenizer.bosId, ...Array.from({ length: nPrompt - 1 }, () => 3 + random.nextInt(model.config.vocabSize - 3))];

// A short warm-up touches every weight page once, as a first real request would.
await engine.evaluate(prompt.slice(0, 8), 0, "last");
const t0 = performance.now();
let logits = (await engine.evaluate(prompt, 0, "last"))!;
const prefillMs = performance.now() - t0;
const t1 = performance.now();
const tokens: number[] = [];
for (let i = 0; i < nDecode; i++) {
  const token = argmax(logits);
  tokens.push(token);
  logits = await engine.step(token, nPrompt + i);
}
const decodeMs = performance.now() - t1;
console.log(JSON.stringify({ engine: "halo", kernels: kernels.name, prefillTokS: nPrompt / (prefillMs / 1000), decodeTokS: nDecode / (decodeMs / 1000), maxRssBytes: process.resourceUsage().maxRSS * 1024, tokens }));
