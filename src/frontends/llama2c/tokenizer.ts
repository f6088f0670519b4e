/**
 * The llama2.c tokenizer (`tokenizer.bin`, `tok512.bin`, …): a byte-level reader for the `.bin` format and an
 * encoder/decoder that reproduces llama2.c `run.c`'s `encode` and `decode` token for token.
 *
 * File layout (little-endian): `int32 max_token_length`, then for each of `vocabSize` entries
 * `float32 score, int32 len, len bytes` (the UTF-8 piece). The file does not store the entry count: the caller passes
 * the model's vocab size, and a file whose entries do not end exactly at the end of the file is rejected.
 * @module
 */

import { InputError, ModelFormatError } from '../../errors.js';

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

/** Bytes → a "binary string" (one char per byte, codes 0..255): concatenating two keys concatenates their bytes. */
function bytesToKey(bytes: Uint8Array, start = 0, end = bytes.length): string {
  let s = '';
  const CHUNK = 4096;
  for (let i = start; i < end; i += CHUNK) {
    s += String.fromCharCode(...bytes.subarray(i, Math.min(end, i + CHUNK)));
  }
  return s;
}

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

/** A max-heap of candidate merges: highest score first, ties broken by leftmost position (as run.c's scan). */
class MergeHeap {
  private readonly score: number[] = [];
  private readonly left: number[] = [];
  private readonly right: number[] = [];
  private readonly id: number[] = [];
  private readonly vLeft: number[] = [];
  private readonly vRight: number[] = [];
  get size(): number {
    return this.score.length;
  }
  private before(a: number, b: number): boolean {
    const sa = this.score[a];
    const sb = this.score[b];
    return sa > sb || (sa === sb && this.left[a] < this.left[b]);
  }
  private swap(a: number, b: number): void {
    for (const arr of [this.score, this.left, this.right, this.id, this.vLeft, this.vRight]) {
      const t = arr[a];
      arr[a] = arr[b];
      arr[b] = t;
    }
  }
  push(score: number, left: number, right: number, id: number, vLeft: number, vRight: number): void {
    let i = this.score.length;
    this.score.push(score);
    this.left.push(left);
    this.right.push(right);
    this.id.push(id);
    this.vLeft.push(vLeft);
    this.vRight.push(vRight);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  /** Removes the top entry and returns it as [left, right, id, vLeft, vRight]. */
  pop(): [number, number, number, number, number] {
    const top: [number, number, number, number, number] = [this.left[0], this.right[0], this.id[0], this.vLeft[0], this.vRight[0]];
    const last = this.score.length - 1;
    if (last > 0) this.swap(0, last);
    for (const arr of [this.score, this.left, this.right, this.id, this.vLeft, this.vRight]) arr.pop();
    const n = this.score.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.before(l, m)) m = l;
      if (r < n && this.before(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
    return top;
  }
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
  private readonly keys: string[];
  private readonly scores: Float32Array;
  private readonly lookup: Map<string, number>;
  private readonly rawBytes: Int16Array;
  private readonly dummyPrefix: number[];
  private readonly decoder = new TextDecoder('utf-8');

  private constructor(maxTokenLength: number, pieces: Uint8Array[], scores: Float32Array) {
    this.vocabSize = pieces.length;
    this.maxTokenLength = maxTokenLength;
    this.pieces = pieces;
    this.scores = scores;
    this.keys = pieces.map((p) => bytesToKey(p));
    this.lookup = new Map();
    for (let i = 0; i < this.keys.length; i++) {
      if (!this.lookup.has(this.keys[i])) this.lookup.set(this.keys[i], i);
    }
    this.rawBytes = new Int16Array(pieces.length);
    for (let i = 0; i < pieces.length; i++) this.rawBytes[i] = rawByteOf(pieces[i]);
    let byteFallback = pieces.length >= 259;
    for (let b = 0; byteFallback && b < 256; b++) {
      byteFallback = this.keys[b + 3] === `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
    }
    this.hasByteFallback = byteFallback;
    const space = this.lookup.get(' ');
    this.dummyPrefix = space !== undefined ? [space] : this.fallback(new Uint8Array([0x20]), 0, 1);
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
   * Reads and parses a llama2.c tokenizer file.
   * @param path - Path of the `.bin` file.
   * @param vocabSize - The model's vocab size.
   * @throws `ModelFormatError` as {@link Llama2cTokenizer.fromBytes}.
   */
  static async fromFile(path: string, vocabSize: number): Promise<Llama2cTokenizer> {
    const { readFile } = await import('node:fs/promises');
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
    const tokens: number[] = [];
    if (bos) tokens.push(BOS_ID);
    const bytes = utf8Encoder.encode(text);
    if (bytes.length > 0) tokens.push(...this.dummyPrefix);
    // One lookup per UTF-8 code point (run.c groups a lead byte with up to 3 continuation bytes).
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      if ((bytes[i] & 0xc0) !== 0x80) start = i;
      const len = i - start + 1;
      const next = i + 1 < bytes.length ? bytes[i + 1] : 0;
      if ((next & 0xc0) === 0x80 && len < 4) continue;
      const id = this.lookup.get(bytesToKey(bytes, start, i + 1));
      if (id !== undefined) tokens.push(id);
      else tokens.push(...this.fallback(bytes, start, i + 1));
      start = i + 1;
    }
    const merged = this.merge(tokens);
    if (eos) merged.push(EOS_ID);
    return merged;
  }

  /** Ids for a code point that is not in the vocab: its bytes + 3 with byte fallback, else one `<unk>` (id 0). */
  private fallback(bytes: Uint8Array, start: number, end: number): number[] {
    if (!this.hasByteFallback) return [0];
    const out: number[] = [];
    for (let i = start; i < end; i++) out.push(bytes[i] + 3);
    return out;
  }

  /**
   * run.c's merge loop: while some adjacent pair concatenates to a vocab piece, merge the pair whose piece has the
   * highest score (the leftmost such pair on ties). Done with a linked list and a lazily-invalidated heap, which picks
   * the same pair as run.c's quadratic scan at every step, in O(n log n).
   */
  private merge(input: number[]): number[] {
    const n = input.length;
    if (n < 2) return input.slice();
    const tok = Int32Array.from(input);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const version = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MergeHeap();
    const consider = (i: number): void => {
      if (i < 0) return;
      const j = next[i];
      if (j < 0) return;
      const id = this.lookup.get(this.keys[tok[i]] + this.keys[tok[j]]);
      if (id === undefined) return;
      const score = this.scores[id];
      if (!(score > MIN_MERGE_SCORE)) return;
      heap.push(score, i, j, id, version[i], version[j]);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.size > 0) {
      const [i, j, id, vi, vj] = heap.pop();
      if (next[i] !== j || version[i] !== vi || version[j] !== vj) continue; // stale
      tok[i] = id;
      version[i]++;
      const k = next[j];
      next[i] = k;
      if (k >= 0) prev[k] = i;
      next[j] = -1;
      version[j]++;
      consider(prev[i]);
      consider(i);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(tok[i]);
    return out;
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
    const all = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return this.decoder.decode(all);
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new InputError(`token id ${id} is out of range for a vocab of ${this.vocabSize}`);
    }
  }
}
