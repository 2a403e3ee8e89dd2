/**
 * The LLaMA SentencePiece (SPM) tokenizer, built from the vocabulary a GGUF file embeds, with the
 * semantics of llama.cpp's `llm_tokenizer_spm`: optional dummy-prefix space, ' ' escaped as '▁',
 * one symbol per code point, highest-score-first pair merges (ties to the leftmost pair), then
 * byte fallback (`<0xNN>`) for symbols the vocabulary lacks.
 *
 * Policy: input text is never parsed for special tokens; "<s>" in a prompt is three characters
 * of text. Callers add BOS through `encode(text, { addBos })`.
 */
import { TextDecoder, TextEncoder } from "node:util";
import { HaloError, TokenizerError, UsageError } from "../base/index.js";
import { GGUF_VALUE_TYPE_NAMES, GgufValueType } from "./ggufFormat.js";
import type { GgufMetadata } from "./ggufReader.js";

const KEY = {
  model: "tokenizer.ggml.model",
  tokens: "tokenizer.ggml.tokens",
  scores: "tokenizer.ggml.scores",
  tokenTypes: "tokenizer.ggml.token_type",
  bosId: "tokenizer.ggml.bos_token_id",
  eosId: "tokenizer.ggml.eos_token_id",
  unknownId: "tokenizer.ggml.unknown_token_id",
  addBos: "tokenizer.ggml.add_bos_token",
  addSpacePrefix: "tokenizer.ggml.add_space_prefix",
} as const;

/** SentencePiece piece types as GGUF stores them (llama.cpp's LLAMA_TOKEN_TYPE_*). */
const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/** SentencePiece's visible space, U+2581 LOWER ONE EIGHTH BLOCK. */
const SPACE_MARK = "\u2581";
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export interface TokenizerOptions {
  /** Prepend the BOS id. Defaults to the vocabulary's `tokenizer.ggml.add_bos_token` (true for "llama"). */
  addBos?: boolean;
}

interface Vocabulary {
  pieces: readonly string[];
  /** (vocabSize) */
  scores: Float32Array;
  /** (vocabSize) */
  types: Int32Array;
  bosId: number;
  eosId: number;
  unknownId: number;
  addBos: boolean;
  addSpacePrefix: boolean;
}

export class Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly unknownId: number;
  readonly addBos: boolean;
  readonly addSpacePrefix: boolean;
  readonly #pieces: readonly string[];
  /** (vocabSize) */
  readonly #scores: Float32Array;
  /** (vocabSize) */
  readonly #types: Int32Array;
  readonly #idByPiece = new Map<string, number>();
  /** (256) the id of `<0xNN>` for each byte value, or the unknown id where the vocabulary lacks it */
  readonly #byteIds = new Int32Array(256);
  /** (vocabSize) the UTF-8 bytes each token contributes to decoded text */
  readonly #pieceBytes: Uint8Array[];
  readonly #utf8 = new TextEncoder();

  private constructor(vocab: Vocabulary) {
    this.vocabSize = vocab.pieces.length;
    this.bosId = vocab.bosId;
    this.eosId = vocab.eosId;
    this.unknownId = vocab.unknownId;
    this.addBos = vocab.addBos;
    this.addSpacePrefix = vocab.addSpacePrefix;
    this.#pieces = vocab.pieces;
    this.#scores = vocab.scores;
    this.#types = vocab.types;
    vocab.pieces.forEach((piece, id) => {
      // Duplicates keep the first id (decided policy; llama.cpp's token_to_id keeps the last).
      // The empty piece can never be looked up by a merge, so it stays out of the map.
      if (piece.length > 0 && !this.#idByPiece.has(piece)) this.#idByPiece.set(piece, id);
    });
    for (let byte = 0; byte < 256; byte++) {
      const hex = byte.toString(16).toUpperCase().padStart(2, "0");
      this.#byteIds[byte] = this.#idByPiece.get(`<0x${hex}>`) ?? vocab.unknownId;
    }
    this.#pieceBytes = vocab.pieces.map((piece, id) => this.#bytesForPiece(piece, vocab.types[id] ?? TokenType.NORMAL));
  }

  /** Builds the tokenizer from `tokenizer.ggml.*`; throws TokenizerError for a missing or malformed vocabulary. */
  static fromGguf(metadata: GgufMetadata): Tokenizer {
    return new Tokenizer(readVocabulary(metadata));
  }

  encode(text: string, options?: TokenizerOptions): number[] {
    const ids: number[] = [];
    if (options?.addBos ?? this.addBos) ids.push(this.bosId);
    if (text.length === 0) return ids;
    // A lone surrogate has no UTF-8 form; encode it as U+FFFD, as TextEncoder would.
    const wellFormed = text.replace(LONE_SURROGATE, "\uFFFD");
    const escaped = (this.addSpacePrefix ? " " + wellFormed : wellFormed).replaceAll(" ", SPACE_MARK);
    this.#encodeEscaped(escaped, ids);
    return ids;
  }

  /** The vocabulary string of `id` as stored (with '▁', and `<0xNN>` for byte tokens). */
  tokenPiece(id: number): string {
    this.#checkId(id);
    return this.#pieces[id] ?? "";
  }

  /** The bytes `id` contributes to decoded text after `previousId` (a copy the caller may keep). */
  decodeTokenBytes(id: number, previousId?: number): Uint8Array {
    return this.#bytesAfter(id, previousId).slice();
  }

  /** Decodes a whole id sequence; invalid UTF-8 (e.g. an unpaired byte token) becomes U+FFFD. */
  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let totalBytes = 0;
    ids.forEach((id, index) => {
      const bytes = this.#bytesAfter(id, index > 0 ? ids[index - 1] : undefined);
      parts.push(bytes);
      totalBytes += bytes.length;
    });
    const joined = new Uint8Array(totalBytes);
    let offset = 0;
    for (const part of parts) {
      joined.set(part, offset);
      offset += part.length;
    }
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(joined);
  }

  /**
   * A decoder for ids arriving one at a time. `push` returns only complete characters, holding
   * back the bytes of a character that byte tokens have not finished; `flush` ends the sequence,
   * returns what is held (an unfinished character as U+FFFD) and leaves the decoder ready for a
   * new sequence. The concatenated output always equals `decode(allIds)`. `precedingId` is the
   * token before the first one pushed (the prompt's last), which decides the BOS space rule.
   */
  createStreamDecoder(precedingId?: number): { push(id: number): string; flush(): string } {
    // The WHATWG streaming decoder buffers exactly the incomplete tail and reports invalid bytes
    // as soon as they are certain; ignoreBOM keeps a leading U+FEFF that the text really contained.
    const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
    let previousId: number | undefined = precedingId;
    return {
      push: (id: number): string => {
        const bytes = this.#bytesAfter(id, previousId);
        previousId = id;
        return utf8.decode(bytes, { stream: true });
      },
      flush: (): string => {
        previousId = undefined;
        return utf8.decode();
      },
    };
  }

  #checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new UsageError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
    }
  }

  /** Shared bytes (never handed out) that `id` contributes after `previousId`. */
  #bytesAfter(id: number, previousId: number | undefined): Uint8Array {
    this.#checkId(id);
    const bytes = this.#pieceBytes[id] ?? new Uint8Array(0);
    // SentencePiece's decoder drops the space that the dummy prefix put in front of the first
    // piece, and that piece is the one right after BOS (llama2.c run.c decode does the same).
    if (previousId === this.bosId && this.addSpacePrefix && this.#types[id] === TokenType.NORMAL && bytes[0] === 0x20) {
      return bytes.subarray(1);
    }
    return bytes;
  }

  #bytesForPiece(piece: string, type: number): Uint8Array {
    switch (type) {
      case TokenType.NORMAL:
        return this.#utf8.encode(piece.replaceAll(SPACE_MARK, " "));
      case TokenType.USER_DEFINED:
        return this.#utf8.encode(piece);
      case TokenType.BYTE:
        return Uint8Array.of(Number.parseInt(piece.slice(3, 5), 16));
      default:
        // Unknown, control and unused pieces (and types llama.cpp does not know) print nothing,
        // as llama.cpp's token_to_piece does with special = false.
        return new Uint8Array(0);
    }
  }

  /** SPM merge over `text` (already escaped), appending ids to `out`. Near-linear: each merge costs O(log n). */
  #encodeEscaped(text: string, out: number[]): void {
    // Symbols are code points, indexed by position and chained into a doubly linked list (-1 ends
    // it). A merge grows the left symbol and empties the right one, so a queued pair is stale
    // when its two lengths no longer add up to the length it was queued with.
    const capacity = text.length;
    /** (capacity) UTF-16 offset of each symbol in `text` */
    const start = new Int32Array(capacity);
    /** (capacity) UTF-16 code units each symbol covers; 0 once merged away */
    const length = new Int32Array(capacity);
    const prev = new Int32Array(capacity);
    const next = new Int32Array(capacity);
    let nSymbols = 0;
    for (let offset = 0; offset < text.length; nSymbols++) {
      const width = (text.codePointAt(offset) ?? 0) > 0xffff ? 2 : 1;
      start[nSymbols] = offset;
      length[nSymbols] = width;
      prev[nSymbols] = nSymbols - 1;
      offset += width;
      next[nSymbols] = offset < text.length ? nSymbols + 1 : -1;
    }
    // Each merge queues at most two pairs, and there are fewer merges than symbols.
    const queue = new BigramQueue(3 * nSymbols);
    const tryAddBigram = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const from = start[left]!;
      const pairLength = length[left]! + length[right]!;
      const id = this.#idByPiece.get(text.slice(from, from + pairLength));
      if (id !== undefined) queue.push(this.#scores[id]!, left, right, pairLength);
    };
    for (let symbol = 1; symbol < nSymbols; symbol++) tryAddBigram(symbol - 1, symbol);

    for (let entry = queue.pop(); entry >= 0; entry = queue.pop()) {
      const left = queue.left[entry]!;
      const right = queue.right[entry]!;
      const leftLength = length[left]!;
      const rightLength = length[right]!;
      if (leftLength === 0 || rightLength === 0 || leftLength + rightLength !== queue.pairLength[entry]) continue;
      length[left] = leftLength + rightLength;
      length[right] = 0;
      const after = next[right]!;
      next[left] = after;
      if (after >= 0) prev[after] = left;
      tryAddBigram(prev[left]!, left);
      tryAddBigram(left, after);
    }

    for (let symbol = 0; symbol >= 0; symbol = next[symbol]!) {
      const piece = text.slice(start[symbol], start[symbol]! + length[symbol]!);
      const id = this.#idByPiece.get(piece);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      // Every merged symbol is a vocabulary piece, so only single code points get here
      // (llama.cpp's rev_merge re-segmentation never triggers for SPM vocabularies).
      for (const byte of this.#utf8.encode(piece)) out.push(this.#byteIds[byte] ?? this.unknownId);
    }
  }
}

/**
 * Binary max-heap of candidate merges: highest score first, then leftmost (llama.cpp's
 * llm_bigram_spm order). Entries live in typed arrays rather than objects because a long
 * prompt queues hundreds of thousands of them, and object churn made encoding GC-bound.
 */
class BigramQueue {
  /** (capacity) */
  readonly score: Float32Array;
  /** (capacity) left symbol index; also the tie-breaker */
  readonly left: Int32Array;
  /** (capacity) */
  readonly right: Int32Array;
  /** (capacity) UTF-16 length of the pair when it was queued */
  readonly pairLength: Int32Array;
  /** (capacity) entry ids in heap order */
  readonly #heap: Int32Array;
  #nEntries = 0;
  #heapSize = 0;

  constructor(capacity: number) {
    this.score = new Float32Array(capacity);
    this.left = new Int32Array(capacity);
    this.right = new Int32Array(capacity);
    this.pairLength = new Int32Array(capacity);
    this.#heap = new Int32Array(capacity);
  }

  push(score: number, left: number, right: number, pairLength: number): void {
    const entry = this.#nEntries++;
    this.score[entry] = score;
    this.left[entry] = left;
    this.right[entry] = right;
    this.pairLength[entry] = pairLength;
    const heap = this.#heap;
    let child = this.#heapSize++;
    while (child > 0) {
      const parent = (child - 1) >> 1;
      if (!this.#before(entry, heap[parent]!)) break;
      heap[child] = heap[parent]!;
      child = parent;
    }
    heap[child] = entry;
  }

  /** The best entry id, or -1 when empty. */
  pop(): number {
    if (this.#heapSize === 0) return -1;
    const heap = this.#heap;
    const top = heap[0]!;
    const last = heap[--this.#heapSize]!;
    let parent = 0;
    for (;;) {
      let best = 2 * parent + 1;
      if (best >= this.#heapSize) break;
      if (best + 1 < this.#heapSize && this.#before(heap[best + 1]!, heap[best]!)) best++;
      if (!this.#before(heap[best]!, last)) break;
      heap[parent] = heap[best]!;
      parent = best;
    }
    heap[parent] = last;
    return top;
  }

  #before(a: number, b: number): boolean {
    const scoreA = this.score[a]!;
    const scoreB = this.score[b]!;
    return scoreA > scoreB || (scoreA === scoreB && this.left[a]! < this.left[b]!);
  }
}

function readVocabulary(metadata: GgufMetadata): Vocabulary {
  const model = readScalar(KEY.model, (key) => metadata.string(key));
  if (model === undefined) throw new TokenizerError(`${KEY.model} is missing; halo needs "llama" (a SentencePiece vocabulary)`);
  if (model !== "llama") throw new TokenizerError(`${KEY.model}: unsupported tokenizer model ${model} (halo supports only "llama", SentencePiece)`);

  const pieces = readArray(metadata, KEY.tokens, GgufValueType.STRING, (v): v is string => typeof v === "string");
  if (pieces === undefined) throw new TokenizerError(`${KEY.tokens} is missing: the file has no vocabulary`);
  if (pieces.length === 0) throw new TokenizerError(`${KEY.tokens} is empty`);
  const nTokens = pieces.length;
  const isNumber = (v: unknown): v is number => typeof v === "number";
  const isInteger = (v: unknown): v is number => Number.isInteger(v);
  // llama.cpp treats absent scores as 0 and absent types as normal pieces.
  const scores = readArray(metadata, KEY.scores, GgufValueType.FLOAT32, isNumber) ?? new Array<number>(nTokens).fill(0);
  const types = readArray(metadata, KEY.tokenTypes, GgufValueType.INT32, isInteger) ?? new Array<number>(nTokens).fill(TokenType.NORMAL);
  for (const [key, values] of [[KEY.scores, scores], [KEY.tokenTypes, types]] as const) {
    if (values.length !== nTokens) throw new TokenizerError(`${key} has length ${values.length}, but ${KEY.tokens} has ${nTokens} entries`);
  }
  types.forEach((type, id) => {
    if (type === TokenType.BYTE && !BYTE_PIECE.test(pieces[id] ?? "")) {
      throw new TokenizerError(`${KEY.tokens}[${id}] = ${JSON.stringify(pieces[id])} has ${KEY.tokenTypes} 6 (byte) but is not of the form <0xNN> with two hex digits`);
    }
  });

  const readId = (key: string, fallback: number): number => {
    const id = readScalar(key, (k) => metadata.integer(k)) ?? fallback;
    if (id < 0 || id >= nTokens) throw new TokenizerError(`${key} = ${id} is out of range: the vocabulary has ${nTokens} tokens`);
    return id;
  };
  // Defaults are llama.cpp's for SPM vocabularies: <unk> 0, <s> 1, </s> 2.
  return {
    pieces,
    scores: Float32Array.from(scores),
    types: Int32Array.from(types),
    unknownId: readId(KEY.unknownId, 0),
    bosId: readId(KEY.bosId, 1),
    eosId: readId(KEY.eosId, 2),
    addBos: readScalar(KEY.addBos, (key) => metadata.boolean(key)) ?? true,
    addSpacePrefix: readScalar(KEY.addSpacePrefix, (key) => metadata.boolean(key)) ?? true,
  };
}

/** An array-valued key whose declared element type is `elementType` and whose elements all pass `isElement`. */
function readArray<T>(metadata: GgufMetadata, key: string, elementType: number, isElement: (value: unknown) => value is T): T[] | undefined {
  const value = metadata.raw(key);
  if (value === undefined) return undefined;
  const declared = metadata.typeOf(key);
  const wanted = `an array of ${GGUF_VALUE_TYPE_NAMES[elementType]}`;
  if (!Array.isArray(value) || declared?.type !== GgufValueType.ARRAY || declared.elementType !== elementType) {
    const actual = declared?.type === GgufValueType.ARRAY ? `an array of ${GGUF_VALUE_TYPE_NAMES[declared.elementType ?? -1] ?? "unknown"}` : GGUF_VALUE_TYPE_NAMES[declared?.type ?? -1] ?? "unknown";
    throw new TokenizerError(`${key} must be ${wanted}, got ${actual}`);
  }
  const badIndex = value.findIndex((element) => !isElement(element));
  if (badIndex >= 0) throw new TokenizerError(`${key} must be ${wanted}, but element ${badIndex} is ${JSON.stringify(String(value[badIndex]))}`);
  return value as T[];
}

/** Reads a scalar through GgufMetadata, re-coding its type errors (which name the key) as vocabulary errors. */
function readScalar<T>(key: string, read: (key: string) => T): T {
  try {
    return read(key);
  } catch (error) {
    if (error instanceof HaloError) throw new TokenizerError(error.message);
    throw error;
  }
}
