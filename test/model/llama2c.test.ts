/**
 * The llama2.c → GGUF converter (src/model/llama2c.ts) against the shipped ggml-org conversion
 * of the same weights: converting stories260K.bin + tok512.bin must reproduce every tensor of
 * stories260K.gguf byte for byte (except output.weight, which that file stores as a copy of
 * token_embd.weight while llama2.c ties them) and the same vocabulary arrays. Then malformed
 * checkpoints and tokenizers, each rejected with a coded error whose message names the problem
 * and without writing the output file.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { ConvertError, FileError, HaloError } from "../../src/base/errors.js";
import { readModelConfig } from "../../src/model/config.js";
import { openGguf, type GgufFile } from "../../src/model/ggufReader.js";
import { convertLlama2cToGguf, type ConvertResult } from "../../src/model/llama2c.js";
import { SHARED_MODELS, createTempDir, type TempDir } from "../helpers/modelFiles.js";

const HEADER_FIELDS = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"] as const;
/** stories260K.bin's header, in HEADER_FIELDS order. */
const STORIES_HEADER = [64, 172, 5, 8, 4, 512, 512];

let tmp: TempDir;
let result: ConvertResult;
let converted: GgufFile;
let shipped: GgufFile;
let storiesBin: Buffer;
let storiesTokenizer: Buffer;

before(async () => {
  tmp = createTempDir("halo-llama2c-test-");
  storiesBin = readFileSync(SHARED_MODELS.storiesBin);
  storiesTokenizer = readFileSync(SHARED_MODELS.storiesTokenizer);
  result = convertLlama2cToGguf(SHARED_MODELS.storiesBin, SHARED_MODELS.storiesTokenizer, tmp.file("stories260K.gguf"), "stories260K");
  converted = await openGguf(tmp.file("stories260K.gguf"));
  shipped = await openGguf(SHARED_MODELS.storiesGguf);
});
after(() => {
  converted?.close();
  shipped?.close();
  tmp.cleanup();
});

describe("stories260K.bin converts to the shipped stories260K.gguf", () => {
  test("the header is read as the model card states, and the result reports what was written", () => {
    assert.deepEqual(result.config, { dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512, sharedClassifier: true });
    assert.equal(result.nTensors, 47);
    assert.equal(result.bytesWritten, statSync(tmp.file("stories260K.gguf")).size);
    assert.equal(converted.tensors.length, result.nTensors);
  });

  test("the shipped output.weight is a copy of token_embd.weight (why the converter may omit it)", () => {
    const embedding = shipped.tensor("token_embd.weight")!;
    const output = shipped.tensor("output.weight")!;
    assert.deepEqual(output.shape, embedding.shape);
    assert.ok(Buffer.from(shipped.readTensorBytes(output)).equals(Buffer.from(shipped.readTensorBytes(embedding))));
  });

  test("the same tensor names, and every tensor byte-identical with the same type and shape", () => {
    const expectedNames = shipped.tensors.map((t) => t.name).filter((n) => n !== "output.weight").sort();
    assert.equal(expectedNames.length, 47);
    assert.deepEqual(converted.tensors.map((t) => t.name).sort(), expectedNames);
    for (const name of expectedNames) {
      const a = shipped.tensor(name)!;
      const b = converted.tensor(name)!;
      assert.equal(b.typeId, a.typeId, name);
      assert.deepEqual(b.shape, a.shape, name);
      const bytesA = Buffer.from(shipped.readTensorBytes(a));
      const bytesB = Buffer.from(converted.readTensorBytes(b));
      assert.equal(bytesB.length, a.byteLength, name);
      assert.ok(bytesB.equals(bytesA), `tensor '${name}' differs from the shipped file`);
    }
  });

  test("the tensor data are the checkpoint's floats in file order (the comparison above is not vacuous)", () => {
    // token_embd.weight is the first tensor after the 28-byte header: 512 × 64 floats.
    const embedding = Buffer.from(converted.readTensorBytes(converted.tensor("token_embd.weight")!));
    assert.ok(embedding.equals(storiesBin.subarray(28, 28 + 512 * 64 * 4)));
    assert.ok(embedding.some((b) => b !== 0));
  });

  test("tokens, scores and token types equal the shipped arrays", () => {
    for (const key of ["tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"]) {
      const expected = shipped.metadata.raw(key);
      assert.ok(Array.isArray(expected) && expected.length === 512, key);
      assert.deepEqual(converted.metadata.raw(key), expected, key);
      assert.deepEqual(converted.metadata.typeOf(key)?.elementType, shipped.metadata.typeOf(key)?.elementType, key);
    }
    for (const key of ["tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"]) {
      assert.equal(converted.metadata.raw(key), shipped.metadata.raw(key), key);
    }
  });

  test("the hyperparameters equal the shipped ones except name and context (llama.cpp's converter writes 2048)", () => {
    const a = readModelConfig(shipped.metadata);
    const b = readModelConfig(converted.metadata);
    assert.equal(b.name, "stories260K");
    assert.equal(a.contextLength, 2048);
    assert.equal(b.contextLength, 512);
    assert.deepEqual({ ...b, name: a.name, contextLength: a.contextLength }, a);
  });
});

describe("malformed checkpoints → ConvertError (HALO_ERR_CONVERT) naming the problem, no output written", () => {
  function withHeader(changes: Partial<Record<(typeof HEADER_FIELDS)[number], number>>): Buffer {
    const bytes = Buffer.from(storiesBin);
    for (const [field, value] of Object.entries(changes)) bytes.writeInt32LE(value, HEADER_FIELDS.indexOf(field as (typeof HEADER_FIELDS)[number]) * 4);
    return bytes;
  }
  let caseCounter = 0;
  function expectConvertError(model: Uint8Array, message: RegExp | string, tokenizer: Uint8Array = storiesTokenizer): void {
    const n = caseCounter++;
    const modelPath = tmp.file(`bad${n}.bin`);
    const tokenizerPath = tmp.file(`bad${n}.tok`);
    const out = tmp.file(`bad${n}.gguf`);
    writeFileSync(modelPath, model);
    writeFileSync(tokenizerPath, tokenizer);
    assert.throws(
      () => convertLlama2cToGguf(modelPath, tokenizerPath, out),
      (error: unknown) => {
        assert.ok(error instanceof ConvertError, `expected ConvertError, got ${String(error)}`);
        assert.equal(error.code, "HALO_ERR_CONVERT");
        if (typeof message === "string") assert.equal(error.message, message.replaceAll("$MODEL", modelPath));
        else assert.match(error.message, message);
        return true;
      },
    );
    assert.equal(existsSync(out), false, "no output file after a rejected conversion");
  }

  test("the header as read from stories260K.bin (control for the cases below)", () => {
    assert.deepEqual(HEADER_FIELDS.map((_, i) => storiesBin.readInt32LE(i * 4)), STORIES_HEADER);
  });

  test("truncated at 0, 27, 28, 1000, half and size-4 bytes", () => {
    for (const n of [0, 27]) expectConvertError(storiesBin.subarray(0, n), `a llama2.c checkpoint starts with a 28-byte header; the file has ${n} bytes`);
    for (const n of [28, 1000, storiesBin.length >> 1, storiesBin.length - 4]) {
      expectConvertError(storiesBin.subarray(0, n), `$MODEL: the header implies ${storiesBin.length} bytes, the file has ${n} (truncated, or not a llama2.c checkpoint)`);
    }
  });

  test("four bytes too many", () => {
    expectConvertError(Buffer.concat([storiesBin, Buffer.alloc(4)]), `$MODEL: the header implies ${storiesBin.length} bytes, the file has ${storiesBin.length + 4} (truncated, or not a llama2.c checkpoint)`);
  });

  for (const field of HEADER_FIELDS) {
    for (const value of [0, -8]) {
      if (field === "vocab_size" && value < 0) continue; // a negative vocab_size means an unshared classifier; tested below
      test(`header field ${field} = ${value}`, () => {
        expectConvertError(withHeader({ [field]: value }), new RegExp(`^header field ${field} = ${value} is out of range \\(1\\.\\.\\d+\\)$`));
      });
    }
  }

  test("absurd header fields are refused before any per-layer work: n_layers 2^20, dim 2^30, vocab_size -2^31", () => {
    expectConvertError(withHeader({ n_layers: 1 << 20 }), /^header field n_layers = 1048576 is out of range \(1\.\.1024\)$/);
    expectConvertError(withHeader({ dim: 1 << 30 }), /^header field dim = 1073741824 is out of range/);
    expectConvertError(withHeader({ vocab_size: -(2 ** 31) }), /^header field vocab_size = 2147483648 is out of range/);
  });

  test("a negative vocab_size means a separate classifier, which this file lacks", () => {
    const withClassifier = storiesBin.length + 512 * 64 * 4;
    expectConvertError(withHeader({ vocab_size: -512 }), `$MODEL: the header implies ${withClassifier} bytes, the file has ${storiesBin.length} (truncated, or not a llama2.c checkpoint)`);
  });

  test("n_heads not dividing dim, n_kv_heads not dividing n_heads, an odd head size", () => {
    expectConvertError(withHeader({ n_heads: 7 }), "n_heads 7 does not divide dim 64");
    expectConvertError(withHeader({ n_kv_heads: 3 }), "n_kv_heads 3 does not divide n_heads 8");
    expectConvertError(withHeader({ n_heads: 64, n_kv_heads: 4 }), "head size dim / n_heads = 1 must be even");
  });
});

describe("malformed tokenizers → ConvertError naming the token", () => {
  let caseCounter = 0;
  function expectTokenizerError(tokenizer: Uint8Array, message: string | RegExp): void {
    const n = caseCounter++;
    const tokenizerPath = tmp.file(`tok${n}.bin`);
    const out = tmp.file(`tok${n}.gguf`);
    writeFileSync(tokenizerPath, tokenizer);
    assert.throws(
      () => convertLlama2cToGguf(SHARED_MODELS.storiesBin, tokenizerPath, out),
      (error: unknown) => {
        assert.ok(error instanceof ConvertError, `expected ConvertError, got ${String(error)}`);
        if (typeof message === "string") assert.equal(error.message, message);
        else assert.match(error.message, message);
        return true;
      },
    );
    assert.equal(existsSync(out), false);
  }

  /** Byte offset of token `index`'s record in tok512.bin (after the 4-byte max_token_length). */
  function tokenOffset(index: number): number {
    let offset = 4;
    for (let i = 0; i < index; i++) offset += 8 + storiesTokenizer.readInt32LE(offset + 4);
    return offset;
  }

  test("the record walk used below covers tok512.bin exactly (control)", () => {
    assert.equal(tokenOffset(512), storiesTokenizer.length);
  });

  test("truncated: shorter than the header, before a record, inside a record's length, inside its bytes", () => {
    expectTokenizerError(storiesTokenizer.subarray(0, 3), "tokenizer file is shorter than its 4-byte header");
    expectTokenizerError(storiesTokenizer.subarray(0, 4), "tokenizer file ends at token 0 of 512");
    expectTokenizerError(storiesTokenizer.subarray(0, tokenOffset(300)), "tokenizer file ends at token 300 of 512");
    expectTokenizerError(storiesTokenizer.subarray(0, tokenOffset(300) + 6), "tokenizer file ends at token 300 of 512");
    const end = tokenOffset(511);
    const lastLength = storiesTokenizer.readInt32LE(end + 4);
    assert.ok(lastLength > 1);
    expectTokenizerError(storiesTokenizer.subarray(0, storiesTokenizer.length - 1), `token 511: length ${lastLength} exceeds the ${lastLength - 1} bytes left`);
  });

  test("a token length past the end of the file, and a negative one", () => {
    const bytes = Buffer.from(storiesTokenizer);
    const at = tokenOffset(10) + 4;
    const left = bytes.length - (at + 4);
    bytes.writeInt32LE(left + 1, at);
    expectTokenizerError(bytes, `token 10: length ${left + 1} exceeds the ${left} bytes left`);
    bytes.writeInt32LE(-1, at);
    expectTokenizerError(bytes, /^token 10: length -1 /);
    bytes.writeInt32LE(2 ** 31 - 1, at);
    expectTokenizerError(bytes, `token 10: length ${2 ** 31 - 1} exceeds the ${left} bytes left`);
  });
});

describe("missing files and a clobbering --out", () => {
  test("a missing checkpoint or tokenizer → FileError (HALO_ERR_FILE) naming the path", () => {
    const missing = tmp.file("nope.bin");
    for (const [model, tokenizer, verb] of [[missing, SHARED_MODELS.storiesTokenizer, "open"], [SHARED_MODELS.storiesBin, missing, "read"]] as const) {
      assert.throws(
        () => convertLlama2cToGguf(model, tokenizer, tmp.file("never.gguf")),
        (error: unknown) => error instanceof FileError && error.code === "HALO_ERR_FILE" && error.path === missing && error.message === `${missing}: cannot ${verb}: ENOENT`,
      );
    }
    assert.equal(existsSync(tmp.file("never.gguf")), false);
  });

  test("an output path that is the checkpoint or the tokenizer is refused, and the input is left intact", () => {
    const model = tmp.file("self.bin");
    const tokenizer = tmp.file("self.tok");
    writeFileSync(model, storiesBin);
    writeFileSync(tokenizer, storiesTokenizer);
    for (const out of [model, tokenizer]) {
      assert.throws(() => convertLlama2cToGguf(model, tokenizer, out), (error: unknown) => error instanceof HaloError && error.code === "HALO_ERR_USAGE" && /same file as an input/.test(error.message));
    }
    assert.ok(readFileSync(model).equals(storiesBin));
    assert.ok(readFileSync(tokenizer).equals(storiesTokenizer));
  });
});
