/**
 * SentencePiece BPE encoding over a scored piece vocabulary: the algorithm of llama2.c `run.c`'s `encode` and of
 * llama.cpp's `llm_tokenizer_spm`, shared by the llama2.c tokenizer and the tokenizer embedded in GGUF files.
 *
 * The text's UTF-8 bytes are split into code points and each is looked up as a piece; then, while some adjacent pair
 * concatenates to a piece, the pair whose piece has the highest score is merged (the leftmost such pair on ties). A
 * code point that is not a piece falls back to its byte pieces (`<0xHH>`), or to the unknown piece when the
 * vocabulary lacks one of its bytes. The two originals differ in when that happens, chosen with
 * {@link SentencePieceBpeOptions.fallback}: run.c replaces the code point with its byte pieces before merging;
 * llama.cpp keeps it as one symbol (which may still merge into a longer piece) and falls back only for what is left
 * after merging. For vocabularies that hold every character of every piece (as SentencePiece trains them) the two
 * agree.
 * @module
 */

/** The vocabulary and the variant of {@link SentencePieceBpe}. */
export interface SentencePieceBpeOptions {
  /** Each piece's bytes, by id. If two ids hold the same piece, lookups find the lower id. */
  readonly pieces: readonly Uint8Array[];
  /** Each piece's merge score, by id. */
  readonly scores: ArrayLike<number>;
  /** For each byte value 0..255, the id of its byte-fallback piece, or -1 when the vocabulary has none. */
  readonly byteIds: ArrayLike<number>;
  /** The id of a code point some of whose bytes have no byte piece. */
  readonly unknownId: number;
  /** `before-merge` (run.c) or `after-merge` (llama.cpp): when a code point that is not a piece falls back. */
  readonly fallback: 'before-merge' | 'after-merge';
  /** A merge happens only when the merged piece's score is above this (run.c: -1e10). Default: no bound. */
  readonly minMergeScore?: number;
}

/** Bytes → a "binary string" (one char per byte, codes 0..255): concatenating two keys concatenates their bytes. */
export function bytesToKey(bytes: Uint8Array, start = 0, end = bytes.length): string {
  let s = '';
  const CHUNK = 4096;
  for (let i = start; i < end; i += CHUNK) {
    s += String.fromCharCode(...bytes.subarray(i, Math.min(end, i + CHUNK)));
  }
  return s;
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

/** A SentencePiece BPE encoder over one vocabulary (see the module notes). */
export class SentencePieceBpe {
  private readonly keys: string[];
  private readonly scores: ArrayLike<number>;
  private readonly lookup = new Map<string, number>();
  private readonly byteIds: Int32Array;
  private readonly unknownId: number;
  private readonly fallbackBeforeMerge: boolean;
  private readonly minMergeScore: number | undefined;

  constructor(o: SentencePieceBpeOptions) {
    this.keys = o.pieces.map((p) => bytesToKey(p));
    this.scores = o.scores;
    for (let i = 0; i < this.keys.length; i++) {
      if (!this.lookup.has(this.keys[i])) this.lookup.set(this.keys[i], i);
    }
    this.byteIds = Int32Array.from({ length: 256 }, (_x, b) => o.byteIds[b] ?? -1);
    this.unknownId = o.unknownId;
    this.fallbackBeforeMerge = o.fallback === 'before-merge';
    this.minMergeScore = o.minMergeScore;
  }

  /** The id of a piece given as bytes, or `undefined` when it is not in the vocabulary. */
  idOf(bytes: Uint8Array): number | undefined {
    return this.lookup.get(bytesToKey(bytes));
  }

  /**
   * Token ids of UTF-8 bytes (the caller adds a dummy prefix and EOS).
   * @param bytes - The text.
   * @param leading - Ids placed before the text that take part in merging (run.c merges its BOS with the rest).
   */
  encode(bytes: Uint8Array, leading: readonly number[] = []): number[] {
    // symbols: a key (the bytes) and an id, -1 for a code point that is not a piece and falls back after merging
    const keys: string[] = leading.map((id) => this.keys[id]);
    const ids: number[] = [...leading];
    // one lookup per UTF-8 code point (run.c groups a lead byte with up to 3 continuation bytes)
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      if ((bytes[i] & 0xc0) !== 0x80) start = i;
      const len = i - start + 1;
      const next = i + 1 < bytes.length ? bytes[i + 1] : 0;
      if ((next & 0xc0) === 0x80 && len < 4) continue;
      const key = bytesToKey(bytes, start, i + 1);
      const id = this.lookup.get(key);
      if (id !== undefined) {
        keys.push(key);
        ids.push(id);
      } else if (this.fallbackBeforeMerge) {
        for (const f of this.fallback(key)) {
          keys.push(this.keys[f]);
          ids.push(f);
        }
      } else {
        keys.push(key);
        ids.push(-1);
      }
      start = i + 1;
    }
    this.merge(keys, ids);
    const out: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] >= 0) out.push(ids[i]);
      else out.push(...this.fallback(keys[i]));
    }
    return out;
  }

  /** Ids of a code point that is not a piece: its byte pieces, or one unknown id when a byte has none. */
  private fallback(key: string): number[] {
    const out: number[] = [];
    for (let i = 0; i < key.length; i++) {
      const id = this.byteIds[key.charCodeAt(i)];
      if (id < 0) return [this.unknownId];
      out.push(id);
    }
    return out;
  }

  /**
   * The merge loop, in place: while some adjacent pair concatenates to a piece, merge the pair whose piece has the
   * highest score (the leftmost such pair on ties). Done with a linked list and a lazily-invalidated heap, which picks
   * the same pair as run.c's quadratic scan at every step, in O(n log n); merged-away symbols are removed at the end.
   */
  private merge(keys: string[], ids: number[]): void {
    const n = keys.length;
    if (n < 2) return;
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
      const id = this.lookup.get(keys[i] + keys[j]);
      if (id === undefined) return;
      const score = this.scores[id];
      if (this.minMergeScore !== undefined && !(score > this.minMergeScore)) return;
      heap.push(score, i, j, id, version[i], version[j]);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.size > 0) {
      const [i, j, id, vi, vj] = heap.pop();
      if (next[i] !== j || version[i] !== vi || version[j] !== vj) continue; // stale
      keys[i] = this.keys[id];
      ids[i] = id;
      version[i]++;
      const k = next[j];
      next[i] = k;
      if (k >= 0) prev[k] = i;
      next[j] = -1;
      version[j]++;
      consider(prev[i]);
      consider(i);
    }
    let w = 0;
    for (let i = 0; i >= 0; i = next[i]) {
      keys[w] = keys[i];
      ids[w] = ids[i];
      w++;
    }
    keys.length = w;
    ids.length = w;
  }
}

/**
 * The pieces' bytes one after another (`total` is their summed length), for decoding a token sequence as one UTF-8
 * text: a character split across byte-fallback tokens decodes whole.
 * @internal
 */
export function concatBytes(parts: readonly Uint8Array[], total: number): Uint8Array {
  const all = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.length;
  }
  return all;
}
