/**
 * The `halo` CLI end to end: each case spawns `node dist/src/cli/main.js …` and asserts its exact
 * stdout, stderr and exit status. Generation is checked against golden-reference.json
 * (stories260K greedy, aidreams260K greedy after `halo convert`); every rejection is checked
 * against the CLI's error contract (one `halo <cmd>: error: … [HALO_ERR_*]` line, exit 2 for
 * usage errors and 1 otherwise, no stack trace), see test/helpers/cliRunner.ts.
 *
 * Needs the compiled CLI (`npx tsc -p .`) and the shared model files.
 */
import assert from "node:assert/strict";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { SeededRandom } from "../../src/base/random.js";
import { builtinModelPath } from "../../src/cli/builtinModel.js";
import { openGguf } from "../../src/model/ggufReader.js";
import { Tokenizer } from "../../src/model/tokenizer.js";
import { assertErrorLine, describeRun, parseJsonLine, runHalo, type ExpectedError } from "../helpers/cliRunner.js";
import {
  SHARED_MODELS, TINY_DIMS, TINY_VOCAB, createTempDir, f32Bytes, readGolden, tinyLlamaSpec, tinyLlamaTensorShapes, writeModelFile,
  type GoldenReference, type TempDir,
} from "../helpers/modelFiles.js";
import { projectRoot, sharedModelsDir } from "../helpers/paths.js";
import { modelSha256 } from "../../src/cluster/index.js";
import { readPredictor } from "../../src/predictor/index.js";

interface RunJson {
  text: string;
  tokens: number[];
  promptTokens: number[];
  stopReason: string;
  seed: number;
  kernels: string;
  timings: Record<string, number>;
}

interface PerplexityJson {
  window: number;
  nWindows: number;
  tokensScored: number;
  meanNll: number;
  perplexity: number;
  nTokens: number;
  seconds: number;
}

const BUILTIN_MODEL = path.join(projectRoot(), "models", "stories260K.gguf");
const NO_STACK = "    at ";

let tmp: TempDir;
let golden: GoldenReference;
let tokenizer: Tokenizer;

before(async () => {
  tmp = createTempDir("halo-cli-test-");
  golden = readGolden();
  const file = await openGguf(BUILTIN_MODEL);
  try {
    tokenizer = Tokenizer.fromGguf(file.metadata);
  } finally {
    file.close();
  }
});
after(() => tmp.cleanup());

/** The text the CLI streams for `ids` generated after `promptIds`. */
function textAfterPrompt(promptIds: readonly number[], ids: readonly number[]): string {
  return tokenizer.decode([...promptIds, ...ids]).slice(tokenizer.decode(promptIds).length);
}

describe("halo run: generation against golden-reference.json", () => {
  test("the golden tokens decode to the golden text (checks the decoding the next tests use)", () => {
    const g = golden.greedy_prompt;
    assert.deepEqual(tokenizer.encode(g.prompt, { addBos: true }), g.prompt_ids);
    assert.equal(tokenizer.decode([...g.prompt_ids, ...g.generated_ids]), g.text_including_prompt);
  });

  test("--temperature 0 -n 60 --json reproduces the golden greedy tokens, with the built-in model", async () => {
    const args = ["run", "--prompt", "Once upon a time", "--temperature", "0", "-n", "60", "--json"];
    const run = await runHalo(args);
    const result = parseJsonLine<RunJson>(args, run);
    assert.equal(run.stderr, "", describeRun(args, run));
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids);
    assert.deepEqual(result.promptTokens, golden.greedy_prompt.prompt_ids);
    assert.equal(result.text, golden.greedy_prompt.text_including_prompt.slice(golden.greedy_prompt.prompt.length));
    assert.equal(result.stopReason, "max_tokens");
    assert.deepEqual(Object.keys(result).sort(), ["kernels", "promptTokens", "seed", "stopReason", "text", "timings", "tokens"]);
    assert.equal(result.timings.generatedTokens, 60);
    assert.equal(result.timings.promptTokens, 5);
  });

  test("the default model is models/stories260K.gguf in the project", async () => {
    assert.equal(builtinModelPath(), BUILTIN_MODEL);
    assert.equal(statSync(BUILTIN_MODEL).size, statSync(SHARED_MODELS.storiesGguf).size);
    const args = ["run", "--model", BUILTIN_MODEL, "--prompt", "Once upon a time", "--temperature", "0", "-n", "60", "--json"];
    const result = parseJsonLine<RunJson>(args, await runHalo(args));
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids);
  });

  test("without --json stdout is exactly the generated text plus a newline, and the stats go to stderr", async () => {
    const args = ["run", "--prompt", "Once upon a time", "--temperature", "0", "-n", "20"];
    const run = await runHalo(args);
    assert.equal(run.code, 0, describeRun(args, run));
    const first20 = golden.greedy_prompt.generated_ids.slice(0, 20);
    const expected = textAfterPrompt(golden.greedy_prompt.prompt_ids, first20);
    assert.equal(expected, ", there was a little girl named Lily. She loved to play outsid");
    assert.equal(run.stdout, expected + "\n");
    assert.match(
      run.stderr,
      /^halo: prompt 5 tokens, \d+\.\d tok\/s \| decode 20 tokens, \d+\.\d tok\/s, \d+\.\d\d ms\/token \| stop: max_tokens \| kernels \S+\n$/,
      describeRun(args, run),
    );
    assert.ok(run.stderr.includes("decode 20 tokens") && run.stderr.includes("ms/token"));
  });

  test("--prompt \"\" generates from BOS: the golden greedy_from_bos tokens", async () => {
    const args = ["run", "--prompt", "", "--temperature", "0", "-n", "40", "--json"];
    const result = parseJsonLine<RunJson>(args, await runHalo(args));
    assert.deepEqual(result.promptTokens, [1]);
    assert.deepEqual(result.tokens, golden.greedy_from_bos.generated_ids.slice(0, 40));
  });
});

describe("halo run: seeds, --max-tokens 0, --ignore-eos", () => {
  const sampled = (seed: number | undefined): string[] => [
    "run", "--prompt", "Once upon a time", "--temperature", "1", "-n", "64", "--ignore-eos", "--json", ...(seed === undefined ? [] : ["--seed", String(seed)]),
  ];

  test("the same --seed at --temperature 1 gives the same tokens; another seed gives others", async () => {
    const [a, b, c] = await Promise.all([42, 42, 43].map(async (seed) => parseJsonLine<RunJson>(sampled(seed), await runHalo(sampled(seed)))));
    assert.equal(a!.tokens.length, 64);
    assert.equal(a!.seed, 42);
    assert.equal(c!.seed, 43);
    assert.deepEqual(b!.tokens, a!.tokens);
    assert.equal(b!.text, a!.text);
    // 64 tokens drawn at temperature 1 from a 512-token vocabulary: equal sequences would mean the seed is ignored.
    assert.notDeepEqual(c!.tokens, a!.tokens);
    assert.notDeepEqual(a!.tokens, golden.greedy_prompt.generated_ids.slice(0, 64), "temperature 1 must sample, not take the argmax");
  });

  test("without --seed the reported seed reproduces the run", async () => {
    const first = parseJsonLine<RunJson>(sampled(undefined), await runHalo(sampled(undefined)));
    assert.ok(Number.isInteger(first.seed) && first.seed >= 0 && first.seed < 2 ** 32, `seed ${first.seed}`);
    const again = parseJsonLine<RunJson>(sampled(first.seed), await runHalo(sampled(first.seed)));
    assert.deepEqual(again.tokens, first.tokens);
  });

  test("--max-tokens 0 generates nothing", async () => {
    const args = ["run", "--prompt", "Once upon a time", "--max-tokens", "0", "--json"];
    const result = parseJsonLine<RunJson>(args, await runHalo(args));
    assert.deepEqual(result.tokens, []);
    assert.equal(result.text, "");
    assert.equal(result.stopReason, "max_tokens");
    assert.deepEqual(result.promptTokens, golden.greedy_prompt.prompt_ids);
  });

  test("--ignore-eos keeps generating past EOS on a model that always predicts EOS", async () => {
    // Zero weights except: every embedding is all ones, output_norm is ones, and only the output
    // row of </s> (id 2) is ones. The residual stream stays all ones, so logits are 16 for </s> and 0 elsewhere.
    const eosId = TINY_VOCAB.indexOf("</s>");
    const tensors: Record<string, { data: Uint8Array }> = {};
    for (const [name, shape] of tinyLlamaTensorShapes(TINY_DIMS, TINY_VOCAB.length)) {
      const n = shape.reduce((a, b) => a * b, 1);
      const values = new Float32Array(n);
      if (name === "token_embd.weight" || name === "output_norm.weight") values.fill(1);
      if (name === "output.weight") values.fill(1, eosId * TINY_DIMS.dim, (eosId + 1) * TINY_DIMS.dim);
      tensors[name] = { data: f32Bytes(values) };
    }
    const model = writeModelFile(tmp, "always-eos.gguf", tinyLlamaSpec({ tensors }));
    const base = ["run", "--model", model, "--prompt", "a", "--temperature", "0", "-n", "5", "--json"];
    const stopped = parseJsonLine<RunJson>(base, await runHalo(base));
    assert.deepEqual(stopped.tokens, []);
    assert.equal(stopped.stopReason, "eos");
    const args = [...base, "--ignore-eos"];
    const continued = parseJsonLine<RunJson>(args, await runHalo(args));
    assert.deepEqual(continued.tokens, [eosId, eosId, eosId, eosId, eosId]);
    assert.equal(continued.stopReason, "max_tokens");
  });

  test("a prompt that fills the context yields one token (sampled from the last position), then context_full", async () => {
    const args = ["run", "--prompt", "Once upon a time", "--ctx-size", "5", "--temperature", "0", "-n", "10", "--json"];
    const result = parseJsonLine<RunJson>(args, await runHalo(args));
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids.slice(0, 1));
    assert.equal(result.stopReason, "context_full");
  });

  test("a prompt longer than --ctx-size is a context error", async () => {
    const args = ["run", "--prompt", "Once upon a time", "--ctx-size", "3"];
    assertErrorLine(args, await runHalo(args), { command: "run", exitCode: 1, code: "HALO_ERR_CONTEXT", message: "5 tokens do not fit in the context of 3 tokens", exact: true });
  });
});

describe("bad flags: exit 2, one stderr line naming the flag, no stack trace", { concurrency: 4 }, () => {
  const usage = (command: string, message: RegExp | string, exact = typeof message === "string"): ExpectedError => ({ command, exitCode: 2, code: "HALO_ERR_USAGE", message, exact });
  const cases: Array<{ args: string[]; flag: string; expected: ExpectedError }> = [
    { args: ["run", "--bogus"], flag: "--bogus", expected: usage("run", "unknown flag '--bogus'") },
    { args: ["run", "--max-tokens", "-1"], flag: "--max-tokens", expected: usage("run", "--max-tokens must be an integer from 0 to 16777216, got '-1'") },
    { args: ["run", "-n", "-1"], flag: "--max-tokens", expected: usage("run", "--max-tokens must be an integer from 0 to 16777216, got '-1'") },
    { args: ["run", "--max-tokens", "abc"], flag: "--max-tokens", expected: usage("run", "--max-tokens must be an integer from 0 to 16777216, got 'abc'") },
    { args: ["run", "--max-tokens", ""], flag: "--max-tokens", expected: usage("run", "--max-tokens must be an integer from 0 to 16777216, got ''") },
    { args: ["run", "--temperature", "NaN"], flag: "--temperature", expected: usage("run", "--temperature must be a number from 0 to 100, got 'NaN'") },
    { args: ["run", "--temperature", "-1"], flag: "--temperature", expected: usage("run", "--temperature must be a number from 0 to 100, got '-1'") },
    { args: ["run", "--temperature", "Infinity"], flag: "--temperature", expected: usage("run", "--temperature must be a number from 0 to 100, got 'Infinity'") },
    { args: ["run", "--top-p", "2"], flag: "--top-p", expected: usage("run", /^--top-p must be a number from \S+ to 1, got '2'$/) },
    { args: ["run", "--top-k", "1.5"], flag: "--top-k", expected: usage("run", /^--top-k must be an integer from 0 to \d+, got '1.5'$/) },
    { args: ["run", "--seed", "1.5"], flag: "--seed", expected: usage("run", "--seed must be an integer from 0 to 4294967295, got '1.5'") },
    { args: ["run", "--seed", "4294967296"], flag: "--seed", expected: usage("run", "--seed must be an integer from 0 to 4294967295, got '4294967296'") },
    { args: ["run", "--threads", "0"], flag: "--threads", expected: usage("run", "--threads must be an integer from 1 to 256, got '0'") },
    { args: ["run", "--ctx-size", "0"], flag: "--ctx-size", expected: usage("run", "--ctx-size must be an integer from 1 to 1048576, got '0'") },
    { args: ["run", "--prompt"], flag: "--prompt", expected: usage("run", /--prompt.*argument missing/) },
    { args: ["run", "--prompt", "-x"], flag: "--prompt", expected: usage("run", /ambiguous.*--prompt=-/) },
    { args: ["run", "--json=yes"], flag: "--json", expected: usage("run", /'--json' does not take an argument/) },
    { args: ["run", "stray"], flag: "stray", expected: usage("run", /'stray'/) },
    { args: ["perplexity", "--file", SHARED_MODELS.tinyStories, "--window", "1"], flag: "--window", expected: usage("perplexity", "--window must be an integer from 2 to 1048576, got '1'") },
    { args: ["perplexity", "--file", SHARED_MODELS.tinyStories, "--max-chars", "-5"], flag: "--max-chars", expected: usage("perplexity", /^--max-chars must be an integer from 0 to \d+, got '-5'$/) },
    { args: ["worker", "--memory-budget", "abc"], flag: "--memory-budget", expected: usage("worker", "--memory-budget must be a number from 0.01 to 1048576, got 'abc'") },
    { args: ["worker", "--memory-budget", "-5"], flag: "--memory-budget", expected: usage("worker", "--memory-budget must be a number from 0.01 to 1048576, got '-5'") },
    { args: ["worker", "--memory-budget", "0"], flag: "--memory-budget", expected: usage("worker", "--memory-budget must be a number from 0.01 to 1048576, got '0'") },
    { args: ["worker", "--memory-budget", "8", "--predictor", "p.gguf"], flag: "--predictor", expected: usage("worker", "--predictor needs --model (the predictor is checked against the model file)") },
    { args: ["worker", "--memory-budget", "8", "--stream-from", "disk"], flag: "--stream-from", expected: usage("worker", "--stream-from must be one of shard, model, got 'disk'") },
    { args: ["worker", "--slowdown-after", "30"], flag: "--slowdown-after", expected: usage("worker", "--slowdown-after takes SECONDS:FACTOR, seconds from 0 to 86400 and a factor from 1 to 1000, e.g. 30:4; got '30'") },
    { args: ["worker", "--slowdown-after", "30:0.5"], flag: "--slowdown-after", expected: usage("worker", "--slowdown-after takes SECONDS:FACTOR, seconds from 0 to 86400 and a factor from 1 to 1000, e.g. 30:4; got '30:0.5'") },
    { args: ["worker", "--slowdown-after", "90000:2"], flag: "--slowdown-after", expected: usage("worker", "--slowdown-after takes SECONDS:FACTOR, seconds from 0 to 86400 and a factor from 1 to 1000, e.g. 30:4; got '90000:2'") },
    { args: ["worker", "--stream-from", "model"], flag: "--stream-from", expected: usage("worker", "--stream-from needs --memory-budget and --model (without them nothing streams from disk)") },
    { args: ["inspect", "--bogus", BUILTIN_MODEL], flag: "--bogus", expected: usage("inspect", "unknown flag '--bogus'") },
    { args: ["inspect"], flag: "inspect", expected: usage("inspect", "inspect takes exactly one GGUF file") },
    { args: ["convert", "--from", "gpt2", "x.bin"], flag: "--from", expected: usage("convert", "--from must be one of llama2c, got 'gpt2'") },
    { args: ["convert", "x.bin", "--tokenizer", "t.bin", "--out", "o.gguf"], flag: "--from", expected: usage("convert", "--from is required (supported: llama2c)") },
    { args: ["convert", "--from", "llama2c", "x.bin", "--out", "o.gguf"], flag: "--tokenizer", expected: usage("convert", "--tokenizer is required") },
  ];
  for (const { args, flag, expected } of cases) {
    test(`halo ${args.map((a) => (a === "" ? '""' : a)).join(" ")}`, async () => {
      const run = await runHalo(args);
      const message = assertErrorLine(args, run, expected);
      assert.ok(message.includes(flag), `message '${message}' does not name ${flag}`);
    });
  }

  test("an unknown command: one error line, then the usage text", async () => {
    const [run, help] = await Promise.all([runHalo(["frob", "--x"]), runHalo(["--help"])]);
    assert.equal(run.code, 2, describeRun(["frob"], run));
    assert.equal(run.stdout, "");
    assert.ok(!run.stderr.includes(NO_STACK));
    assert.equal(run.stderr, "halo: error: unknown command 'frob'\n" + help.stdout);
    assert.match(help.stdout, /^usage: halo <command> \[flags\]\n/);
  });

  test("an inherited property name is not a command", async () => {
    const run = await runHalo(["constructor"]);
    assert.equal(run.code, 2, describeRun(["constructor"], run));
    assert.match(run.stderr, /^halo: error: unknown command 'constructor'\n/);
  });
});

describe("help and usage", { concurrency: 4 }, () => {
  for (const command of ["run", "inspect", "perplexity", "convert"]) {
    for (const flag of ["--help", "-h"]) {
      test(`halo ${command} ${flag} prints its usage and exits 0`, async () => {
        const run = await runHalo([command, flag]);
        assert.equal(run.code, 0, describeRun([command, flag], run));
        assert.equal(run.stderr, "");
        assert.match(run.stdout, new RegExp(`^usage: halo ${command} `));
        assert.ok(run.stdout.endsWith("\n"));
      });
    }
  }

  test("halo --help exits 0 and lists every command; halo with no arguments prints the same usage and exits 2", async () => {
    const [help, bare] = await Promise.all([runHalo(["--help"]), runHalo([])]);
    assert.equal(help.code, 0);
    assert.equal(help.stderr, "");
    for (const command of ["run", "inspect", "perplexity", "convert"]) assert.match(help.stdout, new RegExp(`^  ${command} +\\S`, "m"));
    assert.equal(bare.code, 2);
    assert.equal(bare.stdout, help.stdout);
    assert.equal(bare.stderr, "");
  });
});

describe("bad model files: exit 1, one line with a HALO_ERR code, no stack trace", { concurrency: 4 }, () => {
  const size = statSync(BUILTIN_MODEL).size;
  const header = (message: RegExp) => ({ code: "HALO_ERR_GGUF_HEADER" as const, message });
  const tensor = (message: RegExp) => ({ code: "HALO_ERR_GGUF_TENSOR" as const, message });
  const cases: Array<{ name: string; make: (p: string) => void; code: `HALO_ERR_${string}`; message: RegExp }> = [];
  const truncated = (n: number) => (p: string) => writeFileSync(p, readFileSync(BUILTIN_MODEL).subarray(0, n));
  cases.push({ name: "empty", make: truncated(0), ...header(/^truncated: a GGUF header needs at least 24 bytes, file has 0$/) });
  for (const n of [10, 23]) cases.push({ name: `truncated at ${n}`, make: truncated(n), ...header(new RegExp(`^truncated: a GGUF header needs at least 24 bytes, file has ${n}$`)) });
  cases.push({ name: "truncated at 24", make: truncated(24), ...header(/metadata key count 19 cannot fit in the 0 bytes left/) });
  cases.push({ name: "truncated at 1000", make: truncated(1000), ...header(/cannot fit|truncated/) });
  cases.push({ name: `truncated at half (${size >> 1})`, make: truncated(size >> 1), ...tensor(new RegExp(`past the end of the ${size >> 1}-byte file`)) });
  cases.push({ name: `truncated at size-1 (${size - 1})`, make: truncated(size - 1), ...tensor(new RegExp(`^tensor '[^']+': data ends at byte ${size}, past the end of the ${size - 1}-byte file$`)) });
  const random = new SeededRandom(7);
  const garbage = Uint8Array.from({ length: 5000 }, () => random.nextInt(256));
  cases.push({ name: "random bytes", make: (p) => writeFileSync(p, garbage), ...header(/^bad magic 0x[0-9a-f]{8}: not a GGUF file$/) });
  cases.push({
    name: "GGUF magic and version 3, then random bytes",
    make: (p) => writeFileSync(p, Buffer.concat([readFileSync(BUILTIN_MODEL).subarray(0, 8), garbage])),
    code: "HALO_ERR_GGUF_HEADER",
    message: /./,
  });
  cases.push({
    name: "the real header with its metadata bytes overwritten by random bytes",
    make: (p) => {
      const bytes = readFileSync(BUILTIN_MODEL);
      bytes.set(garbage.subarray(0, 2000), 24);
      writeFileSync(p, bytes);
    },
    code: "HALO_ERR_GGUF_HEADER",
    message: /./,
  });
  cases.push({ name: "a text file", make: (p) => writeFileSync(p, "This is not a model.\n".repeat(50)), ...header(/^bad magic 0x[0-9a-f]{8}: not a GGUF file$/) });
  cases.push({ name: "a directory", make: (p) => mkdirSync(p), code: "HALO_ERR_FILE", message: /: not a regular file$/ });

  for (const c of cases) {
    for (const command of ["run", "inspect"] as const) {
      test(`${command}: ${c.name} → ${c.code}`, async () => {
        const file = tmp.file(`bad-${command}-${c.name.replace(/\W+/g, "_")}.gguf`);
        c.make(file);
        const args = command === "run" ? ["run", "--model", file, "-n", "1"] : ["inspect", file];
        const message = assertErrorLine(args, await runHalo(args), { command, exitCode: 1, code: c.code, message: c.message });
        if (c.code === "HALO_ERR_FILE") assert.ok(message.startsWith(file), message);
      });
    }
  }

  test("a missing model file → HALO_ERR_FILE naming the path", async () => {
    const missing = tmp.file("does-not-exist.gguf");
    for (const args of [["run", "--model", missing], ["inspect", missing]]) {
      assertErrorLine(args, await runHalo(args), { command: args[0], exitCode: 1, code: "HALO_ERR_FILE", message: `${missing}: cannot open: ENOENT`, exact: true });
    }
  });

  test("a model file without read permission → HALO_ERR_FILE (skipped when running as root)", async (t) => {
    if (process.getuid?.() === 0) return t.skip("root reads any file");
    const locked = tmp.file("locked.gguf");
    copyFileSync(BUILTIN_MODEL, locked);
    chmodSync(locked, 0o000);
    const args = ["inspect", locked];
    assertErrorLine(args, await runHalo(args), { command: "inspect", exitCode: 1, code: "HALO_ERR_FILE", message: `${locked}: cannot open: EACCES`, exact: true });
  });

  test("a GGUF whose tensor has an unsupported type → HALO_ERR_UNSUPPORTED_TYPE from run, while inspect still lists it", async () => {
    const spec = tinyLlamaSpec({ dims: { hiddenDim: 256 }, tensors: { "blk.0.ffn_down.weight": { typeId: 14 } } });
    const model = writeModelFile(tmp, "q6k.gguf", spec);
    const args = ["run", "--model", model, "-n", "1"];
    assertErrorLine(args, await runHalo(args), { command: "run", exitCode: 1, code: "HALO_ERR_UNSUPPORTED_TYPE", message: /^tensor 'blk\.0\.ffn_down\.weight' has type Q6_K;/ });
    const inspect = await runHalo(["inspect", model]);
    assert.equal(inspect.code, 0, describeRun(["inspect", model], inspect));
    assert.match(inspect.stdout, /^ {2}blk\.0\.ffn_down\.weight +Q6_K +\[256, 16\] +3360 +\d+$/m);
  });
});

describe("halo inspect", () => {
  test("lists the metadata and the tensor table of stories260K.gguf", async () => {
    const args = ["inspect", BUILTIN_MODEL];
    const run = await runHalo(args);
    assert.equal(run.code, 0, describeRun(args, run));
    assert.equal(run.stderr, "");
    const lines = run.stdout.split("\n");
    assert.equal(lines[0], `${BUILTIN_MODEL}: GGUF v3, 1185376 bytes, alignment 32, 19 keys, 48 tensors`);
    assert.ok(lines.includes("  llama.block_count = 5"), run.stdout);
    assert.ok(lines.includes("  llama.embedding_length = 64"), run.stdout);
    assert.ok(lines.includes('  general.architecture = "llama"'), run.stdout);
    const row = lines.find((l) => l.trimStart().startsWith("blk.4.ffn_down.weight "));
    assert.ok(row !== undefined, run.stdout);
    assert.deepEqual(row.trim().split(/\s{2,}/), ["blk.4.ffn_down.weight", "F32", "[172, 64]", String(172 * 64 * 4), row.trim().split(/\s+/).at(-1)]);
    const tensorRows = lines.slice(lines.indexOf("tensors:") + 2).filter((l) => l.length > 0);
    assert.equal(tensorRows.length, 48);
  });

  test("--json parses and has all 48 tensors (token_embd, output_norm, output, 9 per block × 5 blocks)", async () => {
    const args = ["inspect", "--json", BUILTIN_MODEL];
    const result = parseJsonLine<{
      version: number; fileSize: number; alignment: number; config: { nLayers: number; dim: number; vocabSize: number };
      metadata: Record<string, string>; tensors: Array<{ name: string; type: string; shape: number[]; offset: number; bytes: number }>;
    }>(args, await runHalo(args));
    assert.equal(result.tensors.length, 48);
    assert.equal(result.tensors.length, 3 + 9 * result.config.nLayers);
    assert.equal(result.version, 3);
    assert.equal(result.fileSize, 1185376);
    assert.equal(result.config.nLayers, 5);
    assert.equal(result.config.dim, 64);
    assert.equal(result.config.vocabSize, 512);
    assert.equal(result.metadata["llama.block_count"], "5");
    assert.deepEqual(result.tensors.find((t) => t.name === "blk.4.ffn_down.weight"), {
      name: "blk.4.ffn_down.weight", type: "F32", shape: [172, 64], offset: result.tensors.find((t) => t.name === "blk.4.ffn_down.weight")!.offset, bytes: 44032,
    });
    assert.equal(new Set(result.tensors.map((t) => t.name)).size, 48);
    for (const t of result.tensors) {
      assert.equal(t.type, "F32", t.name);
      assert.equal(t.bytes, t.shape.reduce((a, b) => a * b, 4), t.name);
      assert.ok(t.offset % result.alignment === 0 && t.offset + t.bytes <= result.fileSize, t.name);
    }
  });
});

describe("halo perplexity", () => {
  test("--window 64 --max-chars 3000 --json scores whole windows of the TinyStories excerpt", async () => {
    const args = ["perplexity", "--file", SHARED_MODELS.tinyStories, "--window", "64", "--max-chars", "3000", "--json"];
    const result = parseJsonLine<PerplexityJson>(args, await runHalo(args, { timeoutMs: 60_000 }));
    const nTokens = tokenizer.encode(readFileSync(SHARED_MODELS.tinyStories, "utf8").slice(0, 3000), { addBos: false }).length;
    assert.equal(result.nTokens, nTokens);
    assert.equal(result.window, 64);
    assert.equal(result.nWindows, Math.floor(nTokens / 64));
    assert.equal(result.tokensScored, result.nWindows * 64);
    assert.ok(result.nWindows > 0 && result.tokensScored % 64 === 0);
    assert.ok(Number.isFinite(result.meanNll), String(result.meanNll));
    // Uniform guessing over 512 tokens scores ln 512 ≈ 6.24; stories260K on TinyStories is near 1.5-2.
    assert.ok(result.meanNll > 0.5 && result.meanNll < 3, `meanNll ${result.meanNll}`);
    assert.ok(Math.abs(result.perplexity - Math.exp(result.meanNll)) < 1e-9 * result.perplexity);
  });

  test("the text report agrees with --json", async () => {
    const base = ["perplexity", "--file", SHARED_MODELS.tinyStories, "--window", "32", "--max-chars", "400"];
    const [text, json] = await Promise.all([runHalo(base), runHalo([...base, "--json"])]);
    const r = parseJsonLine<PerplexityJson>([...base, "--json"], json);
    assert.equal(text.code, 0, describeRun(base, text));
    assert.equal(
      text.stdout,
      `tokens ${r.nTokens}, window 32, windows ${r.nWindows}, scored ${r.tokensScored}\nmean NLL ${r.meanNll.toFixed(6)}\nperplexity ${r.perplexity.toFixed(4)}\n`,
    );
    assert.match(text.stderr, /^halo: \d+ tok\/s, \d+\.\d s\n$/);
  });

  test("errors: missing --file (exit 2), a nonexistent file (exit 1), a window longer than the text (exit 2)", async () => {
    const missingFlag = ["perplexity", "--window", "64"];
    assertErrorLine(missingFlag, await runHalo(missingFlag), { command: "perplexity", exitCode: 2, code: "HALO_ERR_USAGE", message: "--file is required", exact: true });
    const nowhere = tmp.file("no-such-text.txt");
    const missingFile = ["perplexity", "--file", nowhere];
    assertErrorLine(missingFile, await runHalo(missingFile), { command: "perplexity", exitCode: 1, code: "HALO_ERR_FILE", message: `${nowhere}: cannot read: ENOENT`, exact: true });
    const nTokens = tokenizer.encode(readFileSync(SHARED_MODELS.tinyStories, "utf8").slice(0, 100), { addBos: false }).length;
    const short = ["perplexity", "--file", SHARED_MODELS.tinyStories, "--max-chars", "100", "--window", "64"];
    assertErrorLine(short, await runHalo(short), {
      command: "perplexity", exitCode: 2, code: "HALO_ERR_USAGE", message: `the text has ${nTokens} tokens, fewer than one window of 64`, exact: true,
    });
  });
});

describe("halo convert", () => {
  test("converts aidreams260K, and the result generates the golden 128 greedy tokens from BOS", async () => {
    const out = tmp.file("aidreams260K.gguf");
    const convertArgs = ["convert", "--from", "llama2c", SHARED_MODELS.aidreamsBin, "--tokenizer", SHARED_MODELS.aidreamsTokenizer, "--out", out];
    const converted = await runHalo(convertArgs);
    assert.equal(converted.code, 0, describeRun(convertArgs, converted));
    assert.equal(converted.stdout, "");
    assert.equal(converted.stderr, `halo: wrote 38 tensors, ${statSync(out).size} bytes (dim 64, 4 layers, 4 heads, 4 kv heads, vocab 512, context 128)\n`);

    const g = golden.aidreams260K_greedy_from_bos;
    assert.equal(g.generated_ids.length, 128);
    const args = ["run", "--model", out, "--prompt", "", "--temperature", "0", "-n", "128", "--json"];
    const result = parseJsonLine<RunJson>(args, await runHalo(args));
    assert.deepEqual(result.promptTokens, [1]);
    // llama2.c's run.c samples one token per position 0..seq_len-1, so a 128-token context yields 128 tokens after BOS.
    assert.deepEqual(result.tokens, g.generated_ids);
    assert.equal(result.text, g.text);
  });

  test("errors: a missing checkpoint (exit 1), a truncated one (exit 1), --out onto the input (exit 2, input untouched)", async () => {
    const missing = tmp.file("missing.bin");
    const a = ["convert", "--from", "llama2c", missing, "--tokenizer", SHARED_MODELS.storiesTokenizer, "--out", tmp.file("x.gguf")];
    assertErrorLine(a, await runHalo(a), { command: "convert", exitCode: 1, code: "HALO_ERR_FILE", message: `${missing}: cannot open: ENOENT`, exact: true });

    const cut = tmp.file("cut.bin");
    writeFileSync(cut, readFileSync(SHARED_MODELS.storiesBin).subarray(0, 5000));
    const b = ["convert", "--from", "llama2c", cut, "--tokenizer", SHARED_MODELS.storiesTokenizer, "--out", tmp.file("y.gguf")];
    assertErrorLine(b, await runHalo(b), { command: "convert", exitCode: 1, code: "HALO_ERR_CONVERT", message: `${cut}: the header implies 1056540 bytes, the file has 5000 (truncated, or not a llama2.c checkpoint)`, exact: true });

    const self = tmp.file("self.bin");
    copyFileSync(SHARED_MODELS.storiesBin, self);
    const c = ["convert", "--from", "llama2c", self, "--tokenizer", SHARED_MODELS.storiesTokenizer, "--out", self];
    assertErrorLine(c, await runHalo(c), { command: "convert", exitCode: 2, code: "HALO_ERR_USAGE", message: /same file as an input/ });
    assert.deepEqual(readFileSync(self), readFileSync(SHARED_MODELS.storiesBin));
  });
});

describe("halo doctor", () => {
  test("--json reports the native kernel build and the kernel choice from HALO_KERNELS", async () => {
    const args = ["doctor", "--json"];
    const report = parseJsonLine<{ native: { loaded: boolean; simd?: string[]; isa?: string }; kernelChoice: string; defaultThreads: number }>(args, await runHalo(args));
    assert.equal(report.native.loaded, true, "the addon is built by npm ci");
    assert.equal(report.native.simd?.at(-1), "generic");
    assert.equal(report.native.isa, process.arch === "x64" ? "x86_64" : "aarch64");
    assert.ok(report.defaultThreads >= 1);
    const forced = parseJsonLine<{ kernelChoice: string }>(args, await runHalo(args, { env: { HALO_KERNELS: "ts" } }));
    assert.equal(forced.kernelChoice, "ts");
  });

  test("a bad HALO_KERNELS value is a usage error naming the variable", async () => {
    const args = ["doctor"];
    const run = await runHalo(args, { env: { HALO_KERNELS: "gpu" } });
    assertErrorLine(args, run, { command: "doctor", exitCode: 2, code: "HALO_ERR_USAGE", message: "HALO_KERNELS must be one of auto, native, ts" });
  });
});

describe("halo calibrate", () => {
  test("fits a predictor file for the model; bad flags are usage errors", async () => {
    const out = path.join(tmp.path, "stories.halo");
    const corpus = path.join(sharedModelsDir(), "corpora", "tinystories_valid_excerpt.txt");
    const run = await runHalo(["calibrate", "--corpus", corpus, "--tokens", "1024", "--out", out]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /halo calibrate: 1024 tokens, 5 layers, [\d.]+ KiB written to /);
    const predictor = await readPredictor(out, modelSha256(BUILTIN_MODEL));
    assert.deepEqual([predictor.nLayers, predictor.inputDim, predictor.maps.attention[0]!.nOutputs], [5, 64, 4]);
    assertErrorLine(["calibrate", "--out", out], await runHalo(["calibrate", "--out", out]), { command: "calibrate", exitCode: 2, code: "HALO_ERR_USAGE", message: "--corpus is required" });
    // The predictor in use: it makes some contributions critical, at a measured cost.
    const clusterArgs = ["cluster", "--local", "3", "--placement", "uniform", "--predictor", out, "--loss", "5", "--seed", "2", "--prompt", "Once upon a time", "-n", "10", "--json"];
    const clusterRun = await runHalo(clusterArgs, { timeoutMs: 60_000 });
    const json = parseJsonLine<{ cluster: { totals: { criticalContributions: number; predictorMs: number; expectedContributions: number } } }>(clusterArgs, clusterRun);
    assert.ok(json.cluster.totals.criticalContributions > 0 && json.cluster.totals.criticalContributions < json.cluster.totals.expectedContributions, JSON.stringify(json.cluster.totals));
    assert.ok(json.cluster.totals.predictorMs > 0);
    assert.match(clusterRun.stderr, /halo: importance predicted per token from each phase's input \(.*stories\.halo\): the top 25% of groups make their devices critical/);
    // Static importance: the same file's calibration averages, no per-token prediction.
    const staticArgs = ["cluster", "--local", "3", "--placement", "uniform", "--predictor", out, "--importance", "static", "--critical-fraction", "0.5", "--seed", "2", "--prompt", "Once", "-n", "4", "--json"];
    const staticRun = await runHalo(staticArgs, { timeoutMs: 60_000 });
    const staticJson = parseJsonLine<{ cluster: { totals: { criticalContributions: number } } }>(staticArgs, staticRun);
    assert.ok(staticJson.cluster.totals.criticalContributions > 0);
    assert.match(staticRun.stderr, /halo: importance static calibration averages \(.*stories\.halo\): the top 50% of groups make their devices critical/);
    // Compute skipping on a single node: a share threshold skips some groups and says how many.
    const skipArgs = ["run", "--predictor", out, "--skip-below", "0.1", "--prompt", "Once upon a time", "--temperature", "0", "-n", "16", "--json"];
    const skipRun = await runHalo(skipArgs);
    const skipJson = parseJsonLine<{ tokens: number[]; skipping: { threshold: number; considered: number; skipped: number; skippedRatio: number; predictMs: number } }>(skipArgs, skipRun);
    // 16 forward passes (the prompt as one batch, then 15 decode steps), 5 layers, 4 attention and 6 FFN groups each.
    assert.equal(skipJson.skipping.considered, 16 * 5 * 10);
    assert.ok(skipJson.skipping.skipped > 0 && skipJson.skipping.skippedRatio < 0.5, JSON.stringify(skipJson.skipping));
    assert.match(skipRun.stderr, /groups under 10\.0% of their phase's predicted importance are skipped/);
    const noSkip = parseJsonLine<{ tokens: number[]; skipping: { skipped: number } }>(skipArgs, await runHalo(skipArgs.map((a) => (a === "0.1" ? "0" : a))));
    assert.equal(noSkip.skipping.skipped, 0);
    assert.deepEqual(noSkip.tokens, golden.greedy_prompt.generated_ids.slice(0, 16), "a zero threshold skips nothing and changes nothing");
    for (const [flagArgs, message] of [
      [["--skip-below", "0.1"], "--skip-below needs --predictor: skipping is decided by predicted importance"],
      [["--importance", "static"], "--importance static reads the predictor file: give --predictor"],
      [["--predictor", out, "--importance", "static", "--skip-below", "0.1"], "--skip-below needs per-token predictions, not --importance static"],
      [["--predictor", out, "--skip-below", "1"], "--skip-below must be a number from 0 to 0.999, got '1'"],
    ] as const) {
      const bad = ["run", ...flagArgs, "-n", "1"];
      assertErrorLine(bad, await runHalo(bad), { command: "run", exitCode: 2, code: "HALO_ERR_USAGE", message });
    }
    const foreign = path.join(tmp.path, "foreign.halo");
    writeFileSync(foreign, readFileSync(out));
    const wrongModel = path.join(tmp.path, "copy-of-stories.gguf");
    writeFileSync(wrongModel, Buffer.concat([readFileSync(BUILTIN_MODEL), Buffer.alloc(32)]));
    const mismatchArgs = ["run", "--model", wrongModel, "--workers", "127.0.0.1:1", "--predictor", foreign, "-n", "1"];
    const mismatch = await runHalo(mismatchArgs);
    assert.equal(mismatch.code, 1, mismatch.stderr);
    assert.match(mismatch.stderr, /\[HALO_ERR_PREDICTOR\]/);
    // halo eval: the four ways of choosing what to drop, with JSON and a plot.
    const jsonOut = path.join(tmp.path, "eval.json");
    const plotOut = path.join(tmp.path, "eval.svg");
    const evalRun = await runHalo(["eval", "--predictor", out, "--corpus", corpus, "--tokens", "256", "--window", "128", "--fractions", "20", "--json", jsonOut, "--plot", plotOut], { timeoutMs: 60_000 });
    assert.equal(evalRun.code, 0, evalRun.stderr);
    assert.match(evalRun.stdout, /\| 20% \| oracle \| [\d.]+ \|/);
    const report = JSON.parse(readFileSync(jsonOut, "utf8")) as { nTokens: number; points: Array<{ policy: string; dropPercent: number; perplexity: number; top1Agreement: number }>; recallAtQuarter: number };
    assert.equal(report.nTokens, 256);
    assert.deepEqual(report.points.map((p) => p.policy), ["dense", "predictor", "oracle", "static", "random"]);
    const byPolicy = Object.fromEntries(report.points.map((p) => [p.policy, p]));
    assert.ok(byPolicy["dense"]!.perplexity < byPolicy["oracle"]!.perplexity && byPolicy["oracle"]!.perplexity < byPolicy["random"]!.perplexity, JSON.stringify(report.points));
    assert.ok(report.recallAtQuarter > 0.3 && report.recallAtQuarter <= 1);
    assert.match(readFileSync(plotOut, "utf8"), /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[\s\S]*>random<\/text>[\s\S]*<\/svg>\n$/);
    const badFractions = ["eval", "--predictor", out, "--corpus", corpus, "--fractions", "20,120"];
    assertErrorLine(badFractions, await runHalo(badFractions), { command: "eval", exitCode: 2, code: "HALO_ERR_USAGE", message: "--fractions takes percentages between 0 and 100, got '20,120'" });
    const tooShort = path.join(tmp.path, "short.txt");
    writeFileSync(tooShort, "Once upon a time");
    const args = ["calibrate", "--corpus", tooShort, "--out", out];
    assertErrorLine(args, await runHalo(args), { command: "calibrate", exitCode: 2, code: "HALO_ERR_USAGE", message: "the corpus has 4 tokens, fewer than one window of 256" });
  });
});

describe("halo cluster --local", () => {
  test("strict mode on 3 local processes at 5% emulated loss reproduces the golden greedy tokens, paying retransmissions", async () => {
    const args = ["cluster", "--local", "3", "--placement", "uniform", "--sync", "strict", "--loss", "5", "--seed", "3", "--wire", "f32", "--prompt", "Once upon a time", "--temperature", "0", "-n", "20", "--json"];
    type Result = { tokens: number[]; cluster: { devices: number; mode: string; wire: string; lostWorkers: number[]; totals: { droppedContributions: number }; links: Array<{ emulatedRetransmissions: number }> } };
    const result = parseJsonLine<Result>(args, await runHalo(args, { timeoutMs: 90_000 }));
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids.slice(0, 20));
    assert.deepEqual([result.cluster.devices, result.cluster.mode, result.cluster.wire, result.cluster.lostWorkers, result.cluster.totals.droppedContributions], [3, "strict", "f32", [], 0]);
    assert.ok(result.cluster.links.reduce((n, l) => n + l.emulatedRetransmissions, 0) > 0, "5% loss on ~400 messages must charge some retransmissions");
  });

  test("relaxed mode at 10% emulated loss completes and reports per-token stats and dropped contributions", async () => {
    const args = ["cluster", "--local", "3", "--placement", "uniform", "--loss", "10", "--delay", "1", "--seed", "3", "--prompt", "Once upon a time", "--temperature", "0", "-n", "20", "--json"];
    const result = parseJsonLine<{ tokens: number[]; perToken: Array<{ dropped: number; expected: number; syncWaitMs: number }>; cluster: { totals: { droppedContributions: number; expectedContributions: number } } }>(args, await runHalo(args, { timeoutMs: 60_000 }));
    assert.equal(result.tokens.length, 20);
    assert.equal(result.perToken.length, 20);
    assert.ok(result.cluster.totals.droppedContributions > 0, "10% loss over 20 tokens must drop something");
    assert.ok(result.perToken.every((t) => t.expected === 20 && t.syncWaitMs >= 0));
    const links = (result as unknown as { cluster: { links: Array<{ worker: number; state: string; lossRatio: number; nDatagramsObserved: number }> } }).cluster.links;
    assert.deepEqual(links.map((l) => [l.worker, l.state]), [[1, "active"], [2, "active"]]);
    assert.ok(links.every((l) => l.nDatagramsObserved > 0 && l.lossRatio > 0 && l.lossRatio < 0.5), JSON.stringify(links));
  });

  test("uneven shares, a finer FFN block and the f32 wire on 4 processes reproduce the golden tokens", async () => {
    // strict: relaxed mode may rightly drop a late contribution when 4 processes share 2 cores.
    const args = ["cluster", "--local", "4", "--sync", "strict", "--shares", "3,1,1,0.5", "--ffn-block", "16", "--wire", "f32", "--prompt", "Once upon a time", "--temperature", "0", "-n", "20", "--json"];
    const result = parseJsonLine<{ tokens: number[]; cluster: { devices: number; totals: { droppedContributions: number } } }>(args, await runHalo(args, { timeoutMs: 60_000 }));
    assert.deepEqual(result.tokens, golden.greedy_prompt.generated_ids.slice(0, 20));
    assert.deepEqual([result.cluster.devices, result.cluster.totals.droppedContributions], [4, 0]);
  });

  test("bad --shares, --wire and --ffn-block values are usage errors", async () => {
    const cases = [
      [["cluster", "--local", "3", "--shares", "1,x,1"], "--shares takes positive numbers separated by commas, one per device; got '1,x,1'"],
      [["cluster", "--local", "3", "--shares", "1,1"], "2 shares for 3 devices (the coordinator and 2 workers)"],
      [["cluster", "--local", "2", "--wire", "q2_k"], "--wire must be one of q8_0, q4_0, f16, f32"],
      [["cluster", "--local", "2", "--ffn-block", "0"], "--ffn-block must be an integer from 1 to 65536"],
      [["cluster", "--local", "2", "--deadline-min", "300"], "--deadline-min (300 ms) must not exceed --deadline-max (250 ms)"],
    ] as const;
    for (const [args, message] of cases) assertErrorLine(args, await runHalo(args, { timeoutMs: 60_000 }), { command: "cluster", exitCode: 2, code: "HALO_ERR_USAGE", message });
  });

  test("--links gives each worker its own emulated link (here a clean one and a bursty lossy one)", async () => {
    const links = path.join(tmp.path, "links.json");
    writeFileSync(links, JSON.stringify([{ loss: 0 }, { loss: 20, lossBurst: 3, delay: 1 }]));
    // A generous deadline floor, so the clean link loses nothing to scheduling on a busy machine.
    const args = ["cluster", "--local", "3", "--placement", "uniform", "--links", links, "--seed", "4", "--deadline-min", "200", "--prompt", "Once upon a time", "--temperature", "0", "-n", "15", "--json"];
    const result = parseJsonLine<{ tokens: number[]; cluster: { links: Array<{ worker: number; lossRatio: number; nDatagramsObserved: number }> } }>(args, await runHalo(args, { timeoutMs: 60_000 }));
    assert.equal(result.tokens.length, 15);
    const [clean, lossy] = result.cluster.links;
    assert.equal(clean!.lossRatio, 0, JSON.stringify(result.cluster.links));
    assert.ok(lossy!.lossRatio > 0.05 && lossy!.nDatagramsObserved > 0, JSON.stringify(result.cluster.links));
  });

  test("a bad --links file is a usage error naming the problem", async () => {
    const file = (name: string, text: string): string => {
      const p = path.join(tmp.path, name);
      writeFileSync(p, text);
      return p;
    };
    const cases: Array<[string, string]> = [
      [file("not-json.json", "{"), "not JSON"],
      [file("count.json", "[{}]"), "describes 1 links; 2 workers need one each"],
      [file("key.json", '[{"los": 5}, {}]'), "[0]: Unrecognized key: \"los\""],
      [file("range.json", '[{"loss": 101}, {}]'), "[0].loss: Too big: expected number to be <=100"],
    ];
    for (const [links, message] of cases) {
      const args = ["cluster", "--local", "3", "--links", links];
      const run = await runHalo(args);
      assert.equal(run.code, 2, run.stderr);
      assert.ok(run.stderr.includes(message) && run.stderr.includes("[HALO_ERR_USAGE]"), run.stderr);
    }
  });

  test("--devices pi4,pi4,pi5,pi5 applies each preset's speed and link, and says so", async () => {
    const args = ["cluster", "--local", "4", "--placement", "uniform", "--devices", "pi4,pi4,pi5,pi5", "--loss", "2", "--prompt", "Once upon a time", "-n", "4"];
    const run = await runHalo(args, { timeoutMs: 60_000 });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /devices coordinator pi4 \(2\.9 GB\/s, compute ×2\.98\), worker 1 pi4 \(2\.9 GB\/s, compute ×2\.98\), worker 2 pi5 \(8\.6 GB\/s, compute ×1\.00\), worker 3 pi5/);
    assert.match(run.stderr, /4 devices \(pi4 ×2\.98, pi4 ×2\.98, pi5 ×1\.00, pi5 ×1\.00\), relaxed/);
    const json = parseJsonLine<{ cluster: { presets: Array<{ preset: string; slowdown: number }>; links: Array<{ rttMsEwma: number | null }> } }>(args, await runHalo([...args, "--json"], { timeoutMs: 60_000 }));
    assert.deepEqual(json.cluster.presets.map((d) => d.preset), ["pi4", "pi4", "pi5", "pi5"]);
    // The boards' Wi-Fi preset adds 2 ms each way: no worker answers faster than that round trip.
    assert.ok(json.cluster.links.every((l) => l.rttMsEwma !== null && l.rttMsEwma >= 4), JSON.stringify(json.cluster.links));
    for (const [bad, message] of [["pi4,pi9,pi5,pi5", "--devices: 'pi9' is not one of pi4, pi5, jetson-nano, x86"], ["pi4,pi5", "--devices lists 2 devices; --local 4 needs one per device, the coordinator first"]] as const) {
      const badArgs = ["cluster", "--local", "4", "--devices", bad];
      assertErrorLine(badArgs, await runHalo(badArgs), { command: "cluster", exitCode: 2, code: "HALO_ERR_USAGE", message });
    }
  });

  test("--local is required and bounded", async () => {
    for (const [args, message] of [[["cluster"], "--local N is required"], [["cluster", "--local", "0"], "--local must be an integer from 1 to 64"]] as const) {
      assertErrorLine(args, await runHalo(args), { command: "cluster", exitCode: 2, code: "HALO_ERR_USAGE", message });
    }
  });
});
