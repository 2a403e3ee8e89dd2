/**
 * Needs the shared model files. Checks the SPM tokenizer against llama.cpp's own test vectors,
 * the llama2.c encodings in golden-reference.json, the perplexity token count, streaming decode
 * and vocabulary validation.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import fc from "fast-check";
import { GgufValueType } from "../../src/model/ggufFormat.js";
import { GgufMetadata, openGguf, type GgufKeyType, type GgufValue } from "../../src/model/ggufReader.js";
import { Tokenizer } from "../../src/model/tokenizer.js";
import { sharedModelsDir } from "../helpers/paths.js";

const MODELS_DIR = sharedModelsDir();
const LLAMA_VOCAB_PATH = path.join(MODELS_DIR, "llama2-tokenizer", "ggml-vocab-llama-spm.gguf");
const STORIES_PATH = path.join(MODELS_DIR, "stories260K", "stories260K.gguf");

async function loadTokenizer(ggufPath: string): Promise<Tokenizer> {
  const file = await openGguf(ggufPath);
  try {
    return Tokenizer.fromGguf(file.metadata);
  } finally {
    file.close();
  }
}

const llama = await loadTokenizer(LLAMA_VOCAB_PATH);
const stories = await loadTokenizer(STORIES_PATH);

interface GoldenReference {
  tok512_encode: { cases: { text: string; ids: number[] }[] };
  perplexity_reference: { corpus: string; n_tokens: number };
}
const golden = JSON.parse(readFileSync(path.join(MODELS_DIR, "golden-reference.json"), "utf8")) as GoldenReference;

/** Decodes by pushing ids one at a time; returns every push output and the flush output. */
function streamDecode(tokenizer: Tokenizer, ids: readonly number[]): { pushed: string[]; flushed: string } {
  const decoder = tokenizer.createStreamDecoder();
  const pushed = ids.map((id) => decoder.push(id));
  return { pushed, flushed: decoder.flush() };
}

describe("llama.cpp test vectors (ggml-vocab-llama-spm)", () => {
  const inputs = readFileSync(`${LLAMA_VOCAB_PATH}.inp`, "utf8").split("\n__ggml_vocab_test__\n");
  // Every input, the last included, is terminated by the separator, so the split leaves one empty tail.
  assert.equal(inputs.pop(), "");
  const expected = readFileSync(`${LLAMA_VOCAB_PATH}.out`, "utf8").replace(/\n$/, "").split("\n")
    .map((line) => line.split(" ").filter((field) => field.length > 0).map(Number));

  test("all 46 vectors encode exactly (no BOS)", () => {
    assert.equal(inputs.length, 46);
    assert.equal(expected.length, 46);
    const mismatches = inputs.flatMap((input, index) => {
      const ids = llama.encode(input, { addBos: false });
      return JSON.stringify(ids) === JSON.stringify(expected[index]) ? [] : [{ index, input, ids, expected: expected[index] }];
    });
    assert.deepEqual(mismatches, []);
    assert.equal(inputs.length - mismatches.length, 46);
  });

  test("decode round-trips every vector: after BOS exactly, without BOS with the prefix space kept", () => {
    let checked = 0;
    for (const input of inputs) {
      const ids = llama.encode(input, { addBos: false });
      if (ids.includes(llama.unknownId)) continue;
      // The dummy-prefix space is dropped only from the piece right after BOS.
      assert.equal(llama.decode([llama.bosId, ...ids]), input);
      assert.equal(llama.decode(ids), input.length === 0 ? "" : ` ${input}`);
      checked++;
    }
    assert.equal(checked, 46);
    assert.equal(llama.decode(llama.encode("Hello world")), "Hello world");
  });

  test("special-token strings in the text stay plain text", () => {
    const ids = llama.encode("<s> hi </s>", { addBos: false });
    assert.ok(!ids.includes(llama.bosId) && !ids.includes(llama.eosId));
    assert.equal(llama.decode([llama.bosId, ...ids]), "<s> hi </s>");
  });
});

describe("stories260K vocabulary", () => {
  test("the 7 tok512_encode cases match llama2.c (BOS included) and round-trip", () => {
    const { cases } = golden.tok512_encode;
    assert.equal(cases.length, 7);
    assert.equal(stories.addBos, true);
    let matched = 0;
    for (const { text, ids } of cases) {
      assert.deepEqual(stories.encode(text), ids, JSON.stringify(text));
      assert.equal(stories.decode(ids), text);
      matched++;
    }
    assert.equal(matched, 7);
  });

  test("the perplexity corpus prefix is 47692 tokens without BOS", (t) => {
    const corpus = readFileSync(path.join(MODELS_DIR, golden.perplexity_reference.corpus), "utf8");
    // JS slice counts UTF-16 code units; with no astral characters in the prefix that is also code points.
    const text = corpus.slice(0, 100_000);
    assert.equal([...text].length, text.length);
    const startMs = performance.now();
    const ids = stories.encode(text, { addBos: false });
    t.diagnostic(`encoded ${text.length} characters into ${ids.length} tokens in ${(performance.now() - startMs).toFixed(1)} ms`);
    assert.equal(ids.length, golden.perplexity_reference.n_tokens);
    assert.equal(ids.length, 47692);
    assert.equal(stories.decode([stories.bosId, ...ids]), text);
  });

  test("empty text is [] or [BOS]", () => {
    assert.deepEqual(stories.encode("", { addBos: false }), []);
    assert.deepEqual(stories.encode(""), [stories.bosId]);
  });

  test("decodeTokenBytes: byte tokens, the space mark, control tokens, the space after BOS", () => {
    const bytesOf = (piece: string): number[] => [...Buffer.from(piece, "utf8")];
    const idOf = (piece: string): number => stories.encode(piece, { addBos: false }).at(-1) ?? -1;
    assert.equal(stories.tokenPiece(13), "<0x0A>");
    assert.deepEqual([...stories.decodeTokenBytes(13)], [0x0a]);
    assert.equal(stories.tokenPiece(403), "\u2581Once");
    assert.deepEqual([...stories.decodeTokenBytes(403)], bytesOf(" Once"));
    assert.deepEqual([...stories.decodeTokenBytes(403, stories.bosId)], bytesOf("Once"));
    assert.deepEqual([...stories.decodeTokenBytes(403, idOf("a"))], bytesOf(" Once"));
    for (const id of [stories.bosId, stories.eosId, stories.unknownId]) assert.equal(stories.decodeTokenBytes(id).length, 0);
    assert.equal(stories.decode([stories.bosId, 403, stories.eosId]), "Once");
    assert.throws(() => stories.tokenPiece(stories.vocabSize), { code: "HALO_ERR_USAGE" });
  });
});

describe("streaming decode", () => {
  test("the CJK / Latin-1 case never splits a character", () => {
    const ids = golden.tok512_encode.cases.find((c) => c.text === "ünïcödé 你好")?.ids ?? [];
    assert.ok(ids.length > 0);
    const { pushed, flushed } = streamDecode(stories, ids);
    assert.equal(pushed.join("") + flushed, "ünïcödé 你好");
    assert.equal(flushed, "");
    for (const chunk of pushed) assert.ok(!chunk.includes("\uFFFD"), JSON.stringify(pushed));
    // 你 arrives as three byte tokens: nothing until the last one.
    const first = pushed.indexOf("你");
    assert.deepEqual(pushed.slice(first - 2, first + 1), ["", "", "你"]);
  });

  test("an unfinished character is held back, then flushed as U+FFFD", () => {
    const c3 = 3 + 0xc3; // <0xC3>, the lead byte of é
    const decoder = stories.createStreamDecoder();
    assert.equal(decoder.push(c3), "");
    assert.equal(decoder.flush(), "\uFFFD");
    assert.equal(decoder.push(c3), "");
    assert.equal(decoder.push(3 + 0xa9), "é");
    assert.equal(decoder.flush(), "");
  });

  test("property: pushes + flush equal decode(ids), with no U+FFFD for valid text", () => {
    const validText = fc.oneof(fc.string({ unit: "binary", maxLength: 24 }), fc.string({ unit: "grapheme", maxLength: 12 }))
      .filter((text) => !text.includes("\uFFFD"));
    fc.assert(
      fc.property(validText, fc.boolean(), (text, addBos) => {
        const ids = stories.encode(text, { addBos });
        const { pushed, flushed } = streamDecode(stories, ids);
        assert.equal(pushed.join("") + flushed, stories.decode(ids));
        for (const chunk of pushed) assert.ok(!chunk.includes("\uFFFD"), JSON.stringify({ text, pushed }));
        if (addBos) assert.equal(stories.decode(ids), text);
      }),
      { seed: 20_251_126, numRuns: 500 },
    );
  });
});

describe("vocabulary validation", () => {
  type Entry = { value: GgufValue } & GgufKeyType;
  const strings = (values: GgufValue[]): Entry => ({ value: values, type: GgufValueType.ARRAY, elementType: GgufValueType.STRING, length: values.length });
  const floats = (values: number[]): Entry => ({ value: values, type: GgufValueType.ARRAY, elementType: GgufValueType.FLOAT32, length: values.length });
  const ints = (values: number[]): Entry => ({ value: values, type: GgufValueType.ARRAY, elementType: GgufValueType.INT32, length: values.length });
  const u32 = (value: number): Entry => ({ value, type: GgufValueType.UINT32 });
  const text = (value: string): Entry => ({ value, type: GgufValueType.STRING });

  const PIECES = ["<unk>", "<s>", "</s>", "<0x41>", "\u2581", "a", "\u2581a", "a"];
  const withPiece = (index: number, piece: string): string[] => PIECES.map((p, i) => (i === index ? piece : p));
  const valid: Record<string, Entry> = {
    "tokenizer.ggml.model": text("llama"),
    "tokenizer.ggml.tokens": strings(PIECES),
    "tokenizer.ggml.scores": floats([0, 0, 0, 0, -1, -2, -3, -4]),
    "tokenizer.ggml.token_type": ints([2, 3, 3, 6, 1, 1, 1, 1]),
    "tokenizer.ggml.bos_token_id": u32(1),
    "tokenizer.ggml.eos_token_id": u32(2),
    "tokenizer.ggml.unknown_token_id": u32(0),
  };
  function metadataWith(overrides: Record<string, Entry | undefined>): GgufMetadata {
    const values = new Map<string, GgufValue>();
    const types = new Map<string, GgufKeyType>();
    for (const [key, entry] of Object.entries({ ...valid, ...overrides })) {
      if (entry === undefined) continue;
      const { value, ...type } = entry;
      values.set(key, value);
      types.set(key, type);
    }
    return new GgufMetadata(values, types);
  }

  test("a small valid vocabulary: defaults, duplicates keep the first id, missing bytes fall back to <unk>", () => {
    const tokenizer = Tokenizer.fromGguf(metadataWith({}));
    assert.equal(tokenizer.addBos, true);
    assert.equal(tokenizer.addSpacePrefix, true);
    assert.deepEqual(tokenizer.encode("a"), [1, 6]);
    assert.deepEqual(tokenizer.encode("aA", { addBos: false }), [6, 3]);
    assert.deepEqual(tokenizer.encode("b", { addBos: false }), [4, 0]);
    const noPrefix = Tokenizer.fromGguf(metadataWith({ "tokenizer.ggml.add_space_prefix": { value: false, type: GgufValueType.BOOL } }));
    assert.deepEqual(noPrefix.encode("a", { addBos: false }), [5]);
  });

  const cases: { name: string; overrides: Record<string, Entry | undefined>; message: RegExp }[] = [
    { name: "missing tokens", overrides: { "tokenizer.ggml.tokens": undefined }, message: /tokenizer\.ggml\.tokens is missing/ },
    { name: "empty tokens", overrides: { "tokenizer.ggml.tokens": strings([]) }, message: /tokenizer\.ggml\.tokens is empty/ },
    { name: "tokens not strings", overrides: { "tokenizer.ggml.tokens": strings([...PIECES.slice(0, 7), 7]) }, message: /tokenizer\.ggml\.tokens must be an array of string, but element 7/ },
    { name: "tokens as int32 array", overrides: { "tokenizer.ggml.tokens": ints([1, 2, 3]) }, message: /tokenizer\.ggml\.tokens must be an array of string, got an array of int32/ },
    { name: "tokens as a string", overrides: { "tokenizer.ggml.tokens": text("a") }, message: /tokenizer\.ggml\.tokens must be an array of string, got string/ },
    { name: "scores not float32", overrides: { "tokenizer.ggml.scores": ints([0, 0, 0, 0, 0, 0, 0, 0]) }, message: /tokenizer\.ggml\.scores must be an array of float32/ },
    { name: "token_type not int32", overrides: { "tokenizer.ggml.token_type": floats([2, 3, 3, 6, 1, 1, 1, 1]) }, message: /tokenizer\.ggml\.token_type must be an array of int32/ },
    { name: "scores length", overrides: { "tokenizer.ggml.scores": floats([0, 0]) }, message: /tokenizer\.ggml\.scores has length 2, but tokenizer\.ggml\.tokens has 8/ },
    { name: "token_type length", overrides: { "tokenizer.ggml.token_type": ints([1]) }, message: /tokenizer\.ggml\.token_type has length 1, but tokenizer\.ggml\.tokens has 8/ },
    { name: "bos out of range", overrides: { "tokenizer.ggml.bos_token_id": u32(8) }, message: /tokenizer\.ggml\.bos_token_id = 8 is out of range/ },
    { name: "eos out of range", overrides: { "tokenizer.ggml.eos_token_id": u32(4294967295) }, message: /tokenizer\.ggml\.eos_token_id = 4294967295 is out of range/ },
    { name: "unknown out of range", overrides: { "tokenizer.ggml.unknown_token_id": u32(100) }, message: /tokenizer\.ggml\.unknown_token_id = 100 is out of range/ },
    { name: "bos not an integer", overrides: { "tokenizer.ggml.bos_token_id": text("1") }, message: /tokenizer\.ggml\.bos_token_id/ },
    { name: "byte token <0x-1>", overrides: { "tokenizer.ggml.tokens": strings(withPiece(3, "<0x-1>")) }, message: /tokenizer\.ggml\.tokens\[3\] = "<0x-1>" .*byte.*<0xNN>/ },
    { name: "byte token <0xZZ>", overrides: { "tokenizer.ggml.tokens": strings(withPiece(3, "<0xZZ>")) }, message: /tokenizer\.ggml\.tokens\[3\] = "<0xZZ>" .*byte.*<0xNN>/ },
    { name: "byte token <0x041>", overrides: { "tokenizer.ggml.tokens": strings(withPiece(3, "<0x041>")) }, message: /<0xNN>/ },
    { name: "model gpt2", overrides: { "tokenizer.ggml.model": text("gpt2") }, message: /unsupported tokenizer model gpt2/ },
    { name: "model missing", overrides: { "tokenizer.ggml.model": undefined }, message: /tokenizer\.ggml\.model is missing/ },
  ];
  for (const { name, overrides, message } of cases) {
    test(`rejects: ${name}`, () => {
      assert.throws(() => Tokenizer.fromGguf(metadataWith(overrides)), (error: unknown) => {
        assert.ok(error instanceof Error);
        assert.equal((error as Error & { code?: unknown }).code, "HALO_ERR_TOKENIZER");
        assert.match(error.message, message);
        return true;
      });
    });
  }
});
