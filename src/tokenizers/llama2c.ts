/**
 * The llama2.c tokenizer (`tokenizer.bin`, `tok512.bin`, …): a byte-level reader for the `.bin` format and an
 * encoder/decoder that reproduces llama2.c `run.c`'s `encode` and `decode` token for token.
 *
 * File layout (little-endian): `int32 max_token_length`, then for each of `vocabSize` entries
 * `float32 score, int32 len, len bytes` (the UTF-8 piece). The file does not store the entry count: the caller passes
 * the model's vocab size, and a file whose entries do not end exactly at the end of the file is rejected.
 * @module
 */

import { InputError, ModelFormatError } from '../errors.js';
import { importNodeBuiltin } from '../util/node-builtin.js';
import { concatBytes, SentencePieceBpe } from './sentencepiece-bpe.js';

/** Options for {@link Llama2cTokenizer.encode}. */
export interface Llama2cEncodeOptions {
  /** Prepend the BOS token (id 1). Default `true`. */
  bos?: boolean;
  /** Append the EOS token (id 2). Default `false`. */
  eos?: boolean;
}

const BOS_ID = 1;
const EOS_ID = 2;
/** run.c starts its best-score search at -1e10: a merge whose score is not above this never happens. */
const MIN_MERGE_SCORE = -1e10;

const utf8Encoder = new TextEncoder();

/** If a piece looks like run.c's `sscanf(piece, "<0x%02hhX>", &b)` match, the byte; otherwise -1. */
function rawByteOf(piece: Uint8Array): number {
  // "<0x" then one or two hex digits (sscanf returns 1 once the conversion succeeds, whatever follows).
  if (piece.length < 4 || piece[0] !== 0x3c || piece[1] !== 0x30 || piece[2] !== 0x78) return -1;
  const h1 = hexValue(piece[3]);
  if (h1 < 0) return -1;
  const h2 = piece.length > 4 ? hexValue(piece[4]) : -1;
  return h2 < 0 ? h1 : h1 * 16 + h2;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/**
 * A llama2.c tokenizer: the vocabulary of a llama2.c `.bin` tokenizer file with run.c's BPE-merge encoder and its
 * decoder.
 *
 * Encoding follows run.c exactly (BOS, a dummy-prefix `" "` piece for non-empty text, one lookup per UTF-8 code
 * point with byte fallback `id = byte + 3`, then repeatedly merging the adjacent pair with the highest-scoring vocab
 * entry, leftmost on ties), with these documented differences where run.c would misbehave:
 * - a vocabulary without the 256 `<0xHH>` byte pieces at ids 3..258 (e.g. a small character-level vocab) maps each
 *   code point it lacks to id 0 (`<unk>`) instead of to `byte + 3` (which in run.c names an unrelated or
 *   out-of-range piece);
 * - a vocabulary without a `" "` piece uses the byte fallback for the dummy prefix (run.c would emit id -1);
 * - a NUL character is encoded like any other character (run.c's C strings would stop there);
 * - if two entries hold the same piece, lookups find the lower id (run.c's `bsearch` leaves this unspecified).
 */
export class Llama2cTokenizer {
  /** Id of the beginning-of-sequence token (`"\n<s>\n"`). */
  readonly bosId = BOS_ID;
  /** Id of the end-of-sequence token (`"\n</s>\n"`). */
  readonly eosId = EOS_ID;
  /** Number of entries in the vocabulary. */
  readonly vocabSize: number;
  /** The `max_token_length` header field: the longest piece, in bytes. */
  readonly maxTokenLength: number;
  /** Whether ids 3..258 are the byte-fallback pieces `<0x00>`..`<0xFF>` (true for Llama-2 style vocabs). */
  readonly hasByteFallback: boolean;

  private readonly pieces: Uint8Array[];
  private readonly scores: Float32Array;
  private readonly rawBytes: Int16Array;
  private readonly bpe: SentencePieceBpe;
  private readonly decoder = new TextDecoder('utf-8');

  private constructor(maxTokenLength: number, pieces: Uint8Array[], scores: Float32Array) {
    this.vocabSize = pieces.length;
    this.maxTokenLength = maxTokenLength;
    this.pieces = pieces;
    this.scores = scores;
    this.rawBytes = new Int16Array(pieces.length);
    for (let i = 0; i < pieces.length; i++) this.rawBytes[i] = rawByteOf(pieces[i]);
    let byteFallback = pieces.length >= 259;
    for (let b = 0; byteFallback && b < 256; b++) {
      byteFallback = this.decoder.decode(pieces[b + 3]) === `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
    }
    this.hasByteFallback = byteFallback;
    // run.c's merge loop, with run.c's byte fallback (before merging) and its -1e10 score floor
    this.bpe = new SentencePieceBpe({
      pieces,
      scores,
      byteIds: Array.from({ length: 256 }, (_x, b) => (byteFallback ? b + 3 : -1)),
      unknownId: 0,
      fallback: 'before-merge',
      minMergeScore: MIN_MERGE_SCORE,
    });
  }

  /**
   * Parses a llama2.c tokenizer file.
   * @param bytes - The whole file.
   * @param vocabSize - The model's vocab size (the file does not store it).
   * @param file - File name for error messages.
   * @throws `InputError` if `vocabSize` is not a positive integer.
   * @throws `ModelFormatError` if the file is truncated, has a negative or over-long piece length, or holds a
   *   different number of entries than `vocabSize`.
   */
  static fromBytes(bytes: Uint8Array, vocabSize: number, file?: string): Llama2cTokenizer {
    if (!Number.isSafeInteger(vocabSize) || vocabSize <= 0) {
      throw new InputError(`tokenizer vocab size must be a positive integer, got ${vocabSize}`);
    }
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = bytes.byteLength;
    if (n < 4) {
      throw new ModelFormatError('max_token_length', 0, `file is ${n} bytes, too short for the 4-byte header`, file);
    }
    const maxTokenLength = dv.getInt32(0, true);
    if (maxTokenLength < 0) {
      throw new ModelFormatError('max_token_length', 0, `negative max_token_length ${maxTokenLength}`, file);
    }
    // Cheap sanity bound before allocating per-entry arrays: each entry takes at least 8 bytes.
    const maxEntries = Math.floor((n - 4) / 8);
    if (vocabSize > maxEntries) {
      // Still walk the file to give the most precise error (truncation vs. too few entries).
      Llama2cTokenizer.walk(dv, maxTokenLength, vocabSize, file, null);
    }
    const pieces: Uint8Array[] = new Array(vocabSize);
    const scores = new Float32Array(vocabSize);
    Llama2cTokenizer.walk(dv, maxTokenLength, vocabSize, file, (i, score, start, len) => {
      scores[i] = score;
      pieces[i] = bytes.slice(start, start + len);
    });
    return new Llama2cTokenizer(maxTokenLength, pieces, scores);
  }

  /** Reads entries, validating each; throws on any inconsistency, including a count other than `vocabSize`. */
  private static walk(
    dv: DataView,
    maxTokenLength: number,
    vocabSize: number,
    file: string | undefined,
    onEntry: ((i: number, score: number, start: number, len: number) => void) | null,
  ): void {
    const n = dv.byteLength;
    let off = 4;
    for (let i = 0; i < vocabSize; i++) {
      if (off === n) {
        throw new ModelFormatError(
          `vocab[${i}]`,
          off,
          `the file ends after ${i} entries but the vocab size is ${vocabSize}: the tokenizer does not match the model's vocab size`,
          file,
        );
      }
      if (off + 4 > n) {
        throw new ModelFormatError(`vocab[${i}].score`, off, `file truncated: needs 4 bytes, ${n - off} left`, file);
      }
      const score = dv.getFloat32(off, true);
      if (off + 8 > n) {
        throw new ModelFormatError(`vocab[${i}].len`, off + 4, `file truncated: needs 4 bytes, ${n - off - 4} left`, file);
      }
      const len = dv.getInt32(off + 4, true);
      if (len < 0) {
        throw new ModelFormatError(`vocab[${i}].len`, off + 4, `negative piece length ${len}`, file);
      }
      if (len > maxTokenLength) {
        throw new ModelFormatError(
          `vocab[${i}].len`,
          off + 4,
          `piece length ${len} exceeds max_token_length ${maxTokenLength}`,
          file,
        );
      }
      if (off + 8 + len > n) {
        throw new ModelFormatError(
          `vocab[${i}].bytes`,
          off + 8,
          `file truncated: piece needs ${len} bytes, ${n - off - 8} left`,
          file,
        );
      }
      onEntry?.(i, score, off + 8, len);
      off += 8 + len;
    }
    if (off !== n) {
      // Count how many further well-formed entries there are, to say what vocab size the file looks like.
      let extra = 0;
      let o = off;
      while (o + 8 <= n) {
        const len = dv.getInt32(o + 4, true);
        if (len < 0 || len > maxTokenLength || o + 8 + len > n) break;
        o += 8 + len;
        extra++;
      }
      const holds = o === n ? `; the file holds ${vocabSize + extra} entries` : '';
      throw new ModelFormatError(
        `vocab[${vocabSize}]`,
        off,
        `${n - off} trailing bytes after ${vocabSize} entries: the vocab size ${vocabSize} does not match the tokenizer file${holds}`,
        file,
      );
    }
  }

  /**
   * The number of entries in a llama2.c tokenizer file (the file does not store it: this walks the entries to the
   * end), for loading one without knowing the model's vocab size.
   * @throws `ModelFormatError` when the entries do not end exactly at the end of the file.
   */
  static entryCount(bytes: Uint8Array, file?: string): number {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.byteLength < 4) throw new ModelFormatError('max_token_length', 0, `file is ${bytes.byteLength} bytes, too short for the 4-byte header`, file);
    const maxTokenLength = dv.getInt32(0, true);
    let off = 4;
    let n = 0;
    while (off + 8 <= bytes.byteLength) {
      const len = dv.getInt32(off + 4, true);
      if (len < 0 || len > maxTokenLength || off + 8 + len > bytes.byteLength) break;
      off += 8 + len;
      n++;
    }
    if (off !== bytes.byteLength || n === 0) Llama2cTokenizer.walk(dv, maxTokenLength, n + 1, file, null); // throws, naming the bad entry
    return n;
  }

  /**
   * Reads and parses a llama2.c tokenizer file.
   * @param path - Path of the `.bin` file.
   * @param vocabSize - The model's vocab size.
   * @throws `ModelFormatError` as {@link Llama2cTokenizer.fromBytes}.
   */
  static async fromFile(path: string, vocabSize: number): Promise<Llama2cTokenizer> {
    const { readFile } = await importNodeBuiltin<typeof import('node:fs/promises')>('fs/promises');
    const buf = await readFile(path);
    return Llama2cTokenizer.fromBytes(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), vocabSize, path);
  }

  /**
   * The stored piece of a token, decoded as UTF-8 (e.g. `" the"`, `"<0x0A>"`, `"\n<s>\n"`).
   * @throws `InputError` if `id` is out of range.
   */
  piece(id: number): string {
    this.checkId(id);
    return this.decoder.decode(this.pieces[id]);
  }

  /**
   * The merge score of a token's piece.
   * @throws `InputError` if `id` is out of range.
   */
  score(id: number): number {
    this.checkId(id);
    return this.scores[id];
  }

  /**
   * Encodes text as run.c's `encode` does (see the class notes for the few deliberate differences).
   * @param text - The text to encode; lone surrogates are encoded as U+FFFD.
   * @param opts - Whether to add BOS (default true) and EOS (default false).
   * @returns The token ids.
   */
  encode(text: string, opts?: Llama2cEncodeOptions): number[] {
    const bos = opts?.bos ?? true;
    const eos = opts?.eos ?? false;
    // run.c's dummy prefix: a " " piece before non-empty text, looked up (or falling back) like any code point
    const bytes = text.length > 0 ? utf8Encoder.encode(` ${text}`) : new Uint8Array(0);
    const merged = this.bpe.encode(bytes, bos ? [BOS_ID] : []);
    if (eos) merged.push(EOS_ID);
    return merged;
  }

  /**
   * The bytes run.c's `decode(prev, token)` prints for `token`: the piece, minus a leading space right after BOS,
   * or the raw byte for a `<0xHH>` piece.
   * @throws `InputError` if an id is out of range.
   */
  decodePieceBytes(prev: number, token: number): Uint8Array {
    this.checkId(token);
    let piece = this.pieces[token];
    if (prev === BOS_ID && piece.length > 0 && piece[0] === 0x20) piece = piece.subarray(1);
    const raw = piece === this.pieces[token] ? this.rawBytes[token] : rawByteOf(piece);
    return raw >= 0 ? new Uint8Array([raw]) : piece;
  }

  /**
   * run.c's `decode(prev, token)` as a string. A raw byte that is not a whole UTF-8 character on its own (part of a
   * multi-byte sequence) comes out as U+FFFD: use {@link Llama2cTokenizer.decode} on whole sequences, or
   * {@link Llama2cTokenizer.decodePieceBytes} with a streaming `TextDecoder`.
   * @throws `InputError` if an id is out of range.
   */
  decodePiece(prev: number, token: number): string {
    return this.decoder.decode(this.decodePieceBytes(prev, token));
  }

  /**
   * Decodes a token sequence to text as run.c prints it: each token decoded against its predecessor (the first
   * token's predecessor is taken to be BOS, so the dummy-prefix space is dropped), raw bytes collected and the whole
   * decoded as UTF-8 (invalid sequences become U+FFFD). BOS and EOS tokens produce no text.
   * @throws `InputError` if an id is out of range.
   */
  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    let prev = BOS_ID;
    for (const id of ids) {
      if (id === BOS_ID || id === EOS_ID) {
        this.checkId(id);
        prev = id;
        continue;
      }
      const b = this.decodePieceBytes(prev, id);
      parts.push(b);
      total += b.length;
      prev = id;
    }
    return this.decoder.decode(concatBytes(parts, total));
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new InputError(`token id ${id} is out of range for a vocab of ${this.vocabSize}`);
    }
  }
}
