/**
 * The same measurement with llama.cpp (node-llama-cpp's prebuilt binary) on the same file,
 * in its own process. argv: model path, threads, prompt tokens, decode tokens.
 */
import { LlamaLogLevel, getLlama } from "node-llama-cpp";
import { SeededRandom } from "../../src/base/index.js";

const [modelPath, threadsArg, promptArg, decodeArg] = process.argv.slice(2);
const nThreads = Number(threadsArg);
const nPrompt = Number(promptArg);
const nDecode = Number(decodeArg);
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: modelPath!, useMmap: true });
const context = await model.createContext({ contextSize: nPrompt + nDecode + 16, batchSize: nPrompt, threads: nThreads, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
const vocabSize = Number(process.argv[6] ?? 32000);
const random = new SeededRandom(7);
const prompt = [1, ...Array.from({ length: nPrompt - 1 }, () => 3 + random.nextInt(Number(vocabSize) - 3))];

const warmup = context.getSequence();
for await (const _ of warmup.evaluate(prompt.slice(0, 8) as never[], { temperature: 0 })) break;
await warmup.clearHistory();
warmup.dispose();

const sequence = context.getSequence();
const tokens: number[] = [];
const t0 = performance.now();
let t1 = 0;
for await (const token of sequence.evaluate(prompt as never[], { temperature: 0 })) {
  // The first token arrives after the prompt's batch evaluation.
  if (tokens.length === 0) t1 = performance.now();
  tokens.push(token as number);
  if (tokens.length > nDecode) break;
}
const t2 = performance.now();
console.log(JSON.stringify({ engine: "llama.cpp", kernels: "llama.cpp", prefillTokS: nPrompt / ((t1 - t0) / 1000), decodeTokS: nDecode / ((t2 - t1) / 1000), maxRssBytes: process.resourceUsage().maxRSS * 1024, tokens: tokens.slice(0, nDecode) }));
await context.dispose();
await model.dispose();
