/**
 * The GGUF writer, checked through the reader: byte-exact round trips of every value type,
 * strings, arrays and F32/F16/Q4_0/Q8_0 tensors at several alignments, a fast-check property
 * over random specs, agreement with the independent encoder in test/helpers/craftedGguf.ts,
 * and a byte-for-byte rewrite of the real stories260K.gguf.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { HaloError } from "../../src/base/errors.js";
import { SeededRandom } from "../../src/base/random.js";
import { GgufValueType, type GgufValueTypeId } from "../../src/model/ggufFormat.js";
import { openGguf, type GgufFile, type GgufValue } from "../../src/model/ggufReader.js";
import { encodeGgufHeader, tensorByteLength, writeGguf, type GgufWriteSpec, type GgufWriteTensor, type GgufWriteValue } from "../../src/model/ggufWriter.js";
import { smallLlamaContent, validSmallGguf } from "../helpers/craftedGguf.js";
import { sharedModelsDir } from "../helpers/paths.js";

let tmpDir = "";
let fileCounter = 0;
before(() => {
  tmpDir = mkdtempSync(path.join(os.tmpdir(), "halo-gguf-writer-"));
});
after(() => {
  rmSync(tmpDir, { recursive: true, force: true });
});
const tmpPath = (): string => path.join(tmpDir, `w${fileCounter++}.gguf`);

const T = GgufValueType;
type ScalarTypeId = Exclude<GgufValueTypeId, typeof T.ARRAY>;
const SCALAR_TYPES = Object.values(T).filter((t): t is ScalarTypeId => t !== T.ARRAY);

/** What the reader returns for `v` written as `type`: 64-bit integers as bigints, FLOAT32 rounded. */
function expectedScalar(type: number, v: number | bigint | boolean | string): GgufValue {
  switch (type) {
    case T.UINT64:
    case T.INT64:
      return BigInt(v);
    case T.FLOAT32:
      return Math.fround(Number(v));
    case T.BOOL:
      return Boolean(v);
    case T.STRING:
      return String(v);
    default:
      return Number(v);
  }
}
function expectedValue(v: GgufWriteValue): GgufValue {
  if (v.type === T.ARRAY) return Array.from(v.value as ArrayLike<number | bigint | boolean | string>, (e) => expectedScalar(v.elementType, e));
  return expectedScalar(v.type, v.value);
}

/** Compares with Object.is on numbers, so NaN equals NaN and -0 differs from 0. */
function assertSameValue(actual: GgufValue | undefined, expected: GgufValue, context: string): void {
  if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual), `${context}: expected an array`);
    assert.equal(actual.length, expected.length, `${context}: length`);
    expected.forEach((e, i) => assertSameValue(actual[i], e, `${context}[${i}]`));
    return;
  }
  assert.ok(Object.is(actual, expected), `${context}: got ${String(actual)}, expected ${String(expected)}`);
}

/** Checks every key (in order, with its type and value) and every tensor (shape, type, bytes). */
function assertMatchesSpec(file: GgufFile, spec: GgufWriteSpec, metadata: GgufWriteSpec["metadata"] = spec.metadata): void {
  assert.deepEqual(file.metadata.keys(), metadata.map(([k]) => k));
  for (const [key, v] of metadata) {
    const type = file.metadata.typeOf(key);
    assert.equal(type?.type, v.type, `type of ${key}`);
    if (v.type === T.ARRAY) {
      assert.equal(type?.elementType, v.elementType, `element type of ${key}`);
      assert.equal(type?.length, v.value.length, `length of ${key}`);
    }
    assertSameValue(file.metadata.raw(key), expectedValue(v), key);
  }
  assert.equal(file.tensors.length, spec.tensors.length);
  spec.tensors.forEach((t, i) => {
    const info = file.tensors[i]!;
    assert.equal(info.name, t.name);
    assert.equal(info.typeId, t.typeId);
    assert.deepEqual(info.shape, t.shape);
    assert.equal(info.fileOffset % file.alignment, 0, `${t.name} aligned`);
    const data = typeof t.data === "function" ? t.data() : t.data;
    assert.deepEqual(file.readTensorBytes(info), data, `${t.name} bytes`);
  });
}

/** The spec that reproduces `file`: its metadata with the types it was stored with, its tensors. */
function specFromFile(file: GgufFile): GgufWriteSpec {
  const metadata = file.metadata.keys().map((key): readonly [string, GgufWriteValue] => {
    const type = file.metadata.typeOf(key)!;
    const value = file.metadata.raw(key)!;
    if (type.type === T.ARRAY) return [key, { type: T.ARRAY, elementType: type.elementType as GgufValueTypeId, value: value as Array<number | bigint | boolean | string> }];
    if (type.type === T.STRING) return [key, { type: T.STRING, value: value as string }];
    return [key, { type: type.type as ScalarTypeId & Exclude<GgufValueTypeId, typeof T.STRING>, value: value as number | bigint | boolean }];
  });
  const tensors = file.tensors.map((t) => ({ name: t.name, typeId: t.typeId, shape: t.shape, data: file.readTensorBytes(t) }));
  return { metadata, tensors };
}

/** Writes `spec`, checks the bytes against the encoder and the reader, and returns the bytes. */
async function roundTrip(spec: GgufWriteSpec): Promise<Uint8Array> {
  const p = tmpPath();
  const size = writeGguf(p, spec);
  const bytes = new Uint8Array(readFileSync(p));
  assert.equal(size, bytes.length, "writeGguf returns the file size");
  const { header, alignment, offsets } = encodeGgufHeader(spec);
  assert.deepEqual(bytes.subarray(0, header.length), new Uint8Array(header), "the file starts with encodeGgufHeader's bytes");
  const file = await openGguf(p);
  try {
    assert.equal(file.alignment, alignment);
    assert.equal(file.dataOffset % alignment, 0);
    assert.ok(bytes.subarray(header.length, file.dataOffset).every((b) => b === 0), "header padding is zeros");
    assert.deepEqual(file.tensors.map((t) => t.fileOffset - file.dataOffset), offsets);
    // When the writer appends general.alignment itself, it is the last key.
    const appended = spec.metadata.length === file.metadata.keys().length ? [] : [["general.alignment", { type: T.UINT32, value: alignment }] as const];
    assertMatchesSpec(file, spec, [...spec.metadata, ...appended]);
    // Writing what was read reproduces the file exactly.
    const again = tmpPath();
    writeGguf(again, specFromFile(file));
    assert.deepEqual(new Uint8Array(readFileSync(again)), bytes, "rewrite of what was read differs");
  } finally {
    file.close();
  }
  return bytes;
}

// -------------------------------------------------------------------------------------------
/** One key per scalar type at its extremes, strings, and one array per element type. */
function everyTypeMetadata(): Array<readonly [string, GgufWriteValue]> {
  return [
    ["u8.max", { type: T.UINT8, value: 255 }],
    ["u8.zero", { type: T.UINT8, value: 0 }],
    ["i8.min", { type: T.INT8, value: -128 }],
    ["i8.max", { type: T.INT8, value: 127 }],
    ["u16.max", { type: T.UINT16, value: 65535 }],
    ["i16.min", { type: T.INT16, value: -32768 }],
    ["u32.max", { type: T.UINT32, value: 0xffffffff }],
    ["i32.min", { type: T.INT32, value: -(2 ** 31) }],
    ["f32.pi", { type: T.FLOAT32, value: Math.PI }],
    ["f32.negzero", { type: T.FLOAT32, value: -0 }],
    ["f32.inf", { type: T.FLOAT32, value: -Infinity }],
    ["f32.nan", { type: T.FLOAT32, value: Number.NaN }],
    ["f32.denormal", { type: T.FLOAT32, value: 1e-45 }],
    ["bool.true", { type: T.BOOL, value: true }],
    ["bool.false", { type: T.BOOL, value: false }],
    ["str.ascii", { type: T.STRING, value: "hello" }],
    ["str.empty", { type: T.STRING, value: "" }],
    ["str.utf8", { type: T.STRING, value: "héllo wörld — 世界 🦙 \u0000 \n" }],
    ["str.bom", { type: T.STRING, value: "\uFEFFstarts with a BOM" }],
    ["u64.max", { type: T.UINT64, value: (1n << 64n) - 1n }],
    ["u64.number", { type: T.UINT64, value: 2 ** 53 - 1 }],
    ["i64.min", { type: T.INT64, value: -(1n << 63n) }],
    ["i64.neg", { type: T.INT64, value: -1 }],
    ["f64.pi", { type: T.FLOAT64, value: Math.PI }],
    ["f64.negzero", { type: T.FLOAT64, value: -0 }],
    ["f64.max", { type: T.FLOAT64, value: Number.MAX_VALUE }],
    ["f64.nan", { type: T.FLOAT64, value: Number.NaN }],
    ["arr.u8", { type: T.ARRAY, elementType: T.UINT8, value: [0, 1, 255] }],
    ["arr.i8", { type: T.ARRAY, elementType: T.INT8, value: [-128, 0, 127] }],
    ["arr.u16", { type: T.ARRAY, elementType: T.UINT16, value: [0, 65535] }],
    ["arr.i16", { type: T.ARRAY, elementType: T.INT16, value: [-32768, 32767] }],
    ["arr.u32", { type: T.ARRAY, elementType: T.UINT32, value: [0, 0xffffffff] }],
    ["arr.i32", { type: T.ARRAY, elementType: T.INT32, value: Int32Array.from([-(2 ** 31), -1, 0, 2 ** 31 - 1]) }],
    ["arr.f32", { type: T.ARRAY, elementType: T.FLOAT32, value: Float32Array.from([0.1, -0, Infinity, Number.NaN]) }],
    ["arr.f32.numbers", { type: T.ARRAY, elementType: T.FLOAT32, value: [0.1, 1e30, -2.5] }],
    ["arr.bool", { type: T.ARRAY, elementType: T.BOOL, value: [true, false, true] }],
    ["arr.str", { type: T.ARRAY, elementType: T.STRING, value: ["<unk>", "", "▁the", "\uFEFF", "日本語", "<0x0A>"] }],
    ["arr.u64", { type: T.ARRAY, elementType: T.UINT64, value: [0n, (1n << 64n) - 1n, 7] }],
    ["arr.i64", { type: T.ARRAY, elementType: T.INT64, value: [-(1n << 63n), (1n << 63n) - 1n, -1] }],
    ["arr.f64", { type: T.ARRAY, elementType: T.FLOAT64, value: [Math.E, -0, Number.MIN_VALUE] }],
    ["arr.empty", { type: T.ARRAY, elementType: T.UINT32, value: [] }],
    ["arr.empty.str", { type: T.ARRAY, elementType: T.STRING, value: [] }],
  ];
}

/** F32, F16, Q4_0 and Q8_0 tensors of 1–4 dims with sizes that need padding, random bytes. */
function everyTypeTensors(seed = 7): GgufWriteTensor[] {
  const rng = new SeededRandom(seed);
  const shapes: Array<[string, number, number[]]> = [
    ["f32.vec", 0, [3]], // 12 bytes: needs padding at every alignment > 4
    ["f32.mat", 0, [5, 7]],
    ["f16.vec", 1, [9]], // 18 bytes
    ["f16.4d", 1, [2, 3, 1, 2]],
    ["q4_0.mat", 2, [64, 3]], // 6 blocks of 18 bytes
    ["q8_0.row", 8, [32]], // one block of 34 bytes
    ["q8_0.3d", 8, [96, 2, 2]],
  ];
  return shapes.map(([name, typeId, shape]) => ({
    name,
    typeId,
    shape,
    data: Uint8Array.from({ length: tensorByteLength(typeId, shape) }, () => rng.nextUint32() & 0xff),
  }));
}

describe("writeGguf round trip: every value type, strings, arrays and tensors", () => {
  for (const alignment of [1, 32, 64]) {
    test(`alignment ${alignment} through general.alignment`, async () => {
      const metadata = [...everyTypeMetadata(), ["general.alignment", { type: T.UINT32, value: alignment }] as const];
      await roundTrip({ metadata, tensors: everyTypeTensors(alignment) });
    });
    test(`alignment ${alignment} through the spec's alignment option`, async () => {
      const bytes = await roundTrip({ metadata: everyTypeMetadata(), tensors: everyTypeTensors(alignment + 1), alignment });
      // A non-default alignment must reach readers, so the writer adds the key (and only then).
      const file = await openGguf(writeTemp(bytes));
      try {
        assert.equal(file.metadata.has("general.alignment"), alignment !== 32);
      } finally {
        file.close();
      }
    });
  }
  test("general.alignment as uint64", async () => {
    await roundTrip({ metadata: [["general.alignment", { type: T.UINT64, value: 128n }]], tensors: everyTypeTensors(3) });
  });
  test("streamed tensor data (a function) is written like a buffer", async () => {
    const tensors = everyTypeTensors(11);
    const streamed = tensors.map((t) => ({ ...t, data: () => t.data as Uint8Array }));
    const a = await roundTrip({ metadata: [], tensors });
    const b = await roundTrip({ metadata: [], tensors: streamed });
    assert.deepEqual(a, b);
  });
  test("no metadata and no tensors: a 24-byte header, padded to 32", async () => {
    const bytes = await roundTrip({ metadata: [], tensors: [] });
    assert.equal(bytes.length, 32);
  });
});

function writeTemp(bytes: Uint8Array): string {
  const p = tmpPath();
  writeFileSync(p, bytes);
  return p;
}

describe("agreement with the crafted-file encoder", () => {
  test("writeGguf(smallLlamaContent()) equals validSmallGguf() byte for byte", async () => {
    const content = smallLlamaContent();
    const bytes = await roundTrip({ metadata: content.metadata, tensors: content.tensors });
    assert.deepEqual(bytes, validSmallGguf());
  });
});

// -------------------------------------------------------------------------------------------
const u64Max = (1n << 64n) - 1n;
function scalarArb(type: number): fc.Arbitrary<number | bigint | boolean | string> {
  switch (type) {
    case T.UINT8: return fc.integer({ min: 0, max: 255 });
    case T.INT8: return fc.integer({ min: -128, max: 127 });
    case T.UINT16: return fc.integer({ min: 0, max: 65535 });
    case T.INT16: return fc.integer({ min: -32768, max: 32767 });
    case T.UINT32: return fc.integer({ min: 0, max: 0xffffffff });
    case T.INT32: return fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });
    case T.FLOAT32: return fc.float();
    case T.BOOL: return fc.boolean();
    case T.STRING: return fc.string({ unit: "binary", maxLength: 24 });
    case T.UINT64: return fc.oneof(fc.bigInt({ min: 0n, max: u64Max }), fc.maxSafeNat());
    case T.INT64: return fc.oneof(fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }), fc.maxSafeInteger());
    case T.FLOAT64: return fc.double();
    default: throw new Error(`no arbitrary for type ${type}`);
  }
}
const valueArb: fc.Arbitrary<GgufWriteValue> = fc.oneof(
  fc.constantFrom(...SCALAR_TYPES).chain((type) => scalarArb(type).map((value) => ({ type, value }) as GgufWriteValue)),
  fc.constantFrom(...SCALAR_TYPES).chain((elementType) =>
    fc.array(scalarArb(elementType), { maxLength: 12 }).map((value) => ({ type: T.ARRAY, elementType, value }) as GgufWriteValue)),
);
const BLOCK: Record<number, number> = { 0: 1, 1: 1, 2: 32, 8: 32 };
const tensorArb = (name: string): fc.Arbitrary<GgufWriteTensor> =>
  fc.record({
    typeId: fc.constantFrom(0, 1, 2, 8),
    rest: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 3 }),
    blocks: fc.integer({ min: 1, max: 4 }),
    seed: fc.integer(),
  }).map(({ typeId, rest, blocks, seed }) => {
    const shape = [blocks * BLOCK[typeId]!, ...rest];
    const rng = new SeededRandom(seed);
    return { name, typeId, shape, data: Uint8Array.from({ length: tensorByteLength(typeId, shape) }, () => rng.nextUint32() & 0xff) };
  });
const keyArb = fc.string({ unit: "binary", minLength: 1, maxLength: 20 }).filter((k) => k !== "general.alignment");
const nameArb = fc.string({ unit: "grapheme", minLength: 1, maxLength: 15 }).filter((n) => Buffer.byteLength(n) <= 63);
const specArb: fc.Arbitrary<GgufWriteSpec> = fc.record({
  metadata: fc.uniqueArray(fc.tuple(keyArb, valueArb), { maxLength: 8, selector: ([k]) => k }),
  names: fc.uniqueArray(nameArb, { maxLength: 5 }),
  alignment: fc.constantFrom(undefined, 1, 2, 8, 16, 32, 64, 256),
}).chain(({ metadata, names, alignment }) =>
  (names.length === 0 ? fc.constant([] as GgufWriteTensor[]) : fc.tuple(...names.map(tensorArb))).map((tensors) =>
    alignment === undefined ? { metadata, tensors } : { metadata, tensors, alignment }));

describe("writeGguf property", () => {
  test("random specs (seeded): read back exactly, and rewriting what was read reproduces the file", async () => {
    await fc.assert(fc.asyncProperty(specArb, async (spec) => {
      await roundTrip(spec);
    }), { seed: 0x57524954, numRuns: 300 });
  });
});

// -------------------------------------------------------------------------------------------
describe("writeGguf refuses specs every reader rejects", () => {
  const valid = (): { metadata: Array<readonly [string, GgufWriteValue]>; tensors: GgufWriteTensor[] } => ({
    metadata: [["a", { type: T.UINT32, value: 1 }]],
    tensors: [{ name: "t", typeId: 0, shape: [4], data: new Uint8Array(16) }],
  });
  const refuses = (spec: GgufWriteSpec, message: RegExp): void => {
    assert.throws(() => writeGguf(tmpPath(), spec), (e: unknown) => {
      assert.ok(e instanceof HaloError, String(e));
      assert.equal(e.code, "HALO_ERR_USAGE");
      assert.match(e.message, message);
      return true;
    });
  };
  test("duplicate or empty keys", () => {
    refuses({ ...valid(), metadata: [...valid().metadata, ["a", { type: T.UINT8, value: 2 }]] }, /duplicate metadata key 'a'/);
    refuses({ ...valid(), metadata: [["", { type: T.UINT8, value: 2 }]] }, /metadata keys must not be empty/);
  });
  test("duplicate, empty or 64-byte tensor names", () => {
    refuses({ ...valid(), tensors: [...valid().tensors, ...valid().tensors] }, /duplicate tensor name 't'/);
    refuses({ ...valid(), tensors: [{ ...valid().tensors[0]!, name: "" }] }, /tensor name '' is 0 bytes/);
    refuses({ ...valid(), tensors: [{ ...valid().tensors[0]!, name: "x".repeat(64) }] }, /is 64 bytes; it must be 1 to 63/);
  });
  test("bad shapes and types", () => {
    refuses({ ...valid(), tensors: [{ name: "q", typeId: 8, shape: [48], data: new Uint8Array(51) }] }, /ne\[0\] = 48 is not a multiple of the Q8_0 block size 32/);
    refuses({ ...valid(), tensors: [{ name: "q", typeId: 4, shape: [32], data: new Uint8Array(20) }] }, /unknown ggml type id 4/);
    refuses({ ...valid(), tensors: [{ name: "q", typeId: 0, shape: [1, 1, 1, 1, 1], data: new Uint8Array(4) }] }, /1 to 4 positive integer dimensions/);
    refuses({ ...valid(), tensors: [{ name: "q", typeId: 0, shape: [0], data: new Uint8Array(0) }] }, /positive integer dimensions/);
    refuses({ ...valid(), tensors: [{ name: "t", typeId: 0, shape: [4], data: new Uint8Array(15) }] }, /tensor 't': 15 bytes given, its type and shape need 16/);
  });
  test("bad alignments", () => {
    refuses({ ...valid(), alignment: 3 }, /alignment 3 must be a power of two between 1 and 1048576/);
    refuses({ ...valid(), alignment: 0 }, /alignment 0 must be a power of two/);
    refuses({ ...valid(), metadata: [["general.alignment", { type: T.UINT32, value: 64 }]], alignment: 32 }, /alignment 32 disagrees with general\.alignment 64/);
    refuses({ ...valid(), metadata: [["general.alignment", { type: T.INT32, value: 64 }]] }, /general\.alignment must be uint32 or uint64/);
  });
  test("values out of range for their type name the key", () => {
    refuses({ ...valid(), metadata: [["small", { type: T.UINT8, value: 256 }]] }, /metadata 'small': .*256/);
    refuses({ ...valid(), metadata: [["neg", { type: T.UINT64, value: -1n }]] }, /metadata 'neg':/);
    refuses({ ...valid(), metadata: [["nested", { type: T.ARRAY, elementType: T.ARRAY, value: [] }]] }, /metadata 'nested': arrays of arrays cannot be written/);
  });
});

// -------------------------------------------------------------------------------------------
describe("stories260K.gguf", () => {
  test("rewriting what openGguf read reproduces the file byte for byte", async () => {
    const original = path.join(sharedModelsDir(), "stories260K", "stories260K.gguf");
    const file = await openGguf(original);
    let spec: GgufWriteSpec;
    try {
      spec = specFromFile(file);
    } finally {
      file.close();
    }
    const p = tmpPath();
    const size = writeGguf(p, spec);
    const expected = readFileSync(original);
    assert.equal(size, expected.length);
    assert.ok(Buffer.compare(readFileSync(p), expected) === 0, "the rewritten file differs from the original");
  });
});
