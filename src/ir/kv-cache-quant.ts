/**
 * The quantized KV cache (`kv.dtype: 'int8' | 'int4'`): what a cached key or value becomes, and how a paged pool
 * block is laid out. The CPU reference backend (the `kv_quantize` op), the WebGPU KV-cache write and paged attention
 * kernels (`src/codegen/attention.ts`) and the engine's pool sizes all follow this file.
 *
 * **Scheme: one scale per (token, head), fixed when the token is written.** Each cached vector — the D keys (or Dv
 * values) of one token and one KV head — is stored as signed integers `q` in `[-QMAX, QMAX]` (127 for int8, 7 for
 * int4) with a scale `s`, and read back as `q * s`:
 *
 * - `absmax = max |x_d|` over the vector;
 * - `s = bf16_round_up(f32(absmax * f32(1 / QMAX)))`: the f32 product (correctly rounded, so the same on every
 *   backend) rounded *up* to the 8 mantissa bits of a bfloat16 (its upper 16 bits; rounding up keeps
 *   `|x_d| / s <= QMAX`), stored in 16 bits;
 * - `q_d = clamp(round_half_even(f32(x_d / s)), -QMAX, QMAX)` (0 when `s = 0`); the value read is `f32(q_d * s)`.
 *
 * Why per token and head rather than one running scale per (block, head): a block's tokens arrive one decode step at
 * a time, and a shared scale that grows with a new token's absmax would have to rescale (rewrite, and round again)
 * every earlier entry of the block, making an entry's value depend on what was written after it and on how a batch
 * was split into steps. With a scale per (token, head), a block's scales are complete when its last token is
 * written, no entry is ever rewritten, every token's cached K/V is a function of that token alone (batch invariance,
 * prefix sharing and copy-on-write see the same bytes), and writers of different tokens never share a word. The cost
 * is 2 bytes of scale per (token, head): for head dim D, int8 stores D + 2 bytes where f16 stores 2D (D = 8: 62.5%;
 * D = 64: 51.6%; D = 128: 50.8%) and int4 D/2 + 2.
 *
 * Known limit: keys carry a large, nearly constant component in their slowest RoPE pairs, which sets each key
 * vector's scale and leaves few steps for the other channels (stories260K: int8 top-1 agreement 0.978 against f32,
 * with nearly all of the loss from the keys). `src/compress/key-offsets.ts` (`--kv-calib`) centers the cached keys and
 * values on calibrated means and balances the key channels, which attention does not see (0.991).
 *
 * **Pool layout.** A pool block (blockSize tokens, H heads, head dim D) is `BLOCK_WORDS` u32 words: first the data,
 * `[blockSize][H][ROW_WORDS]` with `ROW_WORDS = ceil(D / PER_WORD)` words per vector (PER_WORD = 4 int8 or 8 int4
 * values, element `d` in bits `BITS * (d % PER_WORD)` of word `d / PER_WORD`, two's complement), then the scales,
 * `[blockSize][SCALE_WORDS]` with `SCALE_WORDS = ceil(H / 2)` (head `h`'s bfloat16 bits in the low half of word
 * `h / 2` when `h` is even, the high half when odd). Block `b` starts at word `b * BLOCK_WORDS`, so a block is one
 * contiguous byte range: copy-on-write and swapping copy it whole, as for f32/f16 pools.
 * @module
 */
import { InputError } from '../errors.js';

/** Element types a KV cache can be stored in: floats, or integers with a scale per (token, head) (see the module). */
export type KvCacheDType = 'f32' | 'f16' | 'int8' | 'int4';

/** Every {@link KvCacheDType}. */
export const KV_CACHE_DTYPES: readonly KvCacheDType[] = ['f32', 'f16', 'int8', 'int4'];

/** The integer KV-cache types. */
export type QuantizedKvDType = 'int8' | 'int4';

/** Whether `dtype` is an integer KV-cache type (stored with scales). */
export function isQuantizedKv(dtype: string): dtype is QuantizedKvDType {
  return dtype === 'int8' || dtype === 'int4';
}

/** The integer format of a quantized KV cache. */
export interface KvQuantFormat {
  /** Bits per stored element. */
  readonly bits: 8 | 4;
  /** Largest stored magnitude: elements are in `[-qmax, qmax]`. */
  readonly qmax: number;
  /** Elements per u32 word. */
  readonly perWord: number;
}

/** The format of `dtype`. */
export function kvQuantFormat(dtype: QuantizedKvDType): KvQuantFormat {
  return dtype === 'int8' ? { bits: 8, qmax: 127, perWord: 4 } : { bits: 4, qmax: 7, perWord: 8 };
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** `x` rounded up (away from zero, for x >= 0) to a bfloat16, i.e. to its upper 16 bits. */
export function bf16RoundUp(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  u32[0] = (bits & 0xffff) === 0 ? bits : ((bits & 0xffff0000) + 0x10000) >>> 0;
  return f32[0];
}

/** The bfloat16 bits (upper 16 bits of the f32) of a scale made by {@link kvScale}. */
export function bf16Bits(x: number): number {
  f32[0] = x;
  return u32[0] >>> 16;
}

/** The scale of a vector whose largest magnitude is `absmax` (see the module): exactly representable as a bfloat16. */
export function kvScale(absmax: number, dtype: QuantizedKvDType): number {
  const { qmax } = kvQuantFormat(dtype);
  return bf16RoundUp(Math.fround(Math.fround(absmax) * Math.fround(1 / qmax)));
}

/** Round half to even (WGSL's `round`). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The stored integer of `x` under scale `s`. */
export function kvQuantize(x: number, s: number, dtype: QuantizedKvDType): number {
  if (s === 0) return 0;
  const { qmax } = kvQuantFormat(dtype);
  return Math.min(qmax, Math.max(-qmax, roundHalfEven(Math.fround(x / s))));
}

/**
 * Replaces each of the `count` vectors of `n` elements in `data` (at `offset`, consecutive) by what the KV cache reads
 * back: `q * s` with the vector's own scale. In place.
 */
export function fakeQuantizeKvRows(data: Float32Array, offset: number, count: number, n: number, dtype: QuantizedKvDType): void {
  for (let r = 0; r < count; r++) {
    const at = offset + r * n;
    let absmax = 0;
    for (let d = 0; d < n; d++) absmax = Math.max(absmax, Math.abs(data[at + d]));
    const s = kvScale(absmax, dtype);
    for (let d = 0; d < n; d++) data[at + d] = Math.fround(kvQuantize(data[at + d], s, dtype) * s);
  }
}

/** The shape of one paged pool block in words (quantized) or elements (floats). */
export interface KvPoolLayout {
  /** u32 words of one (token, head) vector's data (quantized only). */
  readonly rowWords: number;
  /** u32 words of one token's scales (quantized only): `ceil(heads / 2)`. */
  readonly scaleWords: number;
  /** u32 words of one block (quantized: data then scales). */
  readonly blockWords: number;
  /** Bytes of one block of one layer's K (or V) pool. */
  readonly blockBytes: number;
}

/** The layout of a pool block of `blockSize` tokens, `heads` KV heads and head dim `dim`, stored as `dtype`. */
export function kvPoolLayout(dtype: KvCacheDType, blockSize: number, heads: number, dim: number): KvPoolLayout {
  if (!isQuantizedKv(dtype)) {
    if (dtype !== 'f32' && dtype !== 'f16') throw new InputError(`KV-cache dtype must be one of ${KV_CACHE_DTYPES.join(', ')}, got ${JSON.stringify(dtype)}`);
    const blockBytes = blockSize * heads * dim * (dtype === 'f16' ? 2 : 4);
    return { rowWords: 0, scaleWords: 0, blockWords: Math.ceil(blockBytes / 4), blockBytes };
  }
  const rowWords = Math.ceil(dim / kvQuantFormat(dtype).perWord);
  const scaleWords = Math.ceil(heads / 2);
  const blockWords = blockSize * (heads * rowWords + scaleWords);
  return { rowWords, scaleWords, blockWords, blockBytes: blockWords * 4 };
}

/** One token's words in an integer pool block (see {@link packKvToken}). */
export interface PackedKvToken {
  /** The packed values, `[heads][rowWords]`. */
  readonly data: Uint32Array;
  /** The bfloat16 scales, two heads per word. */
  readonly scales: Uint32Array;
}

/**
 * The words one token occupies in a pool block, as the KV-cache write kernel stores them: `data`, its `heads`
 * vectors of `dim` values (`[heads][rowWords]`, at word `t * heads * rowWords` of the block for slot `t`), and
 * `scales` (`scaleWords` words, at word `blockSize * heads * rowWords + t * scaleWords`). Tests and host-side tools
 * use it.
 */
export function packKvToken(values: ArrayLike<number>, heads: number, dim: number, dtype: QuantizedKvDType): PackedKvToken {
  const L = kvPoolLayout(dtype, 1, heads, dim);
  const { bits, perWord } = kvQuantFormat(dtype);
  const mask = (1 << bits) - 1;
  const data = new Uint32Array(heads * L.rowWords);
  const scales = new Uint32Array(L.scaleWords);
  for (let h = 0; h < heads; h++) {
    const at = h * dim;
    let absmax = 0;
    for (let d = 0; d < dim; d++) absmax = Math.max(absmax, Math.abs(values[at + d]));
    const s = kvScale(absmax, dtype);
    for (let d = 0; d < dim; d++) {
      const w = h * L.rowWords + Math.floor(d / perWord);
      data[w] = (data[w] | ((kvQuantize(values[at + d], s, dtype) & mask) << (bits * (d % perWord)))) >>> 0;
    }
    scales[h >> 1] = (scales[h >> 1] | (bf16Bits(s) << (16 * (h & 1)))) >>> 0;
  }
  return { data, scales };
}

/** The geometry of a paged KV cache, as an engine manifest records it. */
export interface KvCacheGeometry {
  /** Decoder layers (each has a K and a V pool). */
  readonly layers: number;
  /** KV heads. */
  readonly numKvHeads: number;
  /** Head dim (keys and values). */
  readonly headDim: number;
  /** Tokens per block. */
  readonly blockSize: number;
  /** Storage type. */
  readonly dtype: KvCacheDType;
}

/** Bytes of the KV cache of one sequence of `positions` tokens: whole blocks, every layer, keys and values. */
export function kvCacheBytes(kv: KvCacheGeometry, positions: number): number {
  return 2 * kv.layers * Math.ceil(positions / kv.blockSize) * kvPoolLayout(kv.dtype, kv.blockSize, kv.numKvHeads, kv.headDim).blockBytes;
}
