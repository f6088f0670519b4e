/**
 * The weight store: large constant tensors live here, referenced from the graph by id, never inside nodes.
 *
 * Each entry has a logical dtype and shape (what the graph sees) and a {@link WeightEncoding} saying how its bytes are
 * stored: dense, packed low-bit integers with per-group scales and zero points, a codebook (LUT), N:M-sparse or
 * block-sparse. Kernels read the encoded bytes directly; the reference backend calls {@link decodeWeight}.
 * @module
 */
import type { DType } from './dtype.js';
import { InputError } from '../errors.js';

/** Dense storage: one element per value, in the entry's dtype. */
export type DenseEncoding = {
  /** Discriminant. */
  readonly kind: 'dense';
};

/**
 * Low-bit integer storage with scales (and optional zero points), grouped along the **last** axis: element `i`
 * (row-major) belongs to group `floor(i / groupSize)`, so `groupSize = lastDim` is per-channel (one scale per row of a
 * `[N, K]` weight) and `groupSize = numel` is per-tensor. Value = `(q - zeroPoint) * scale`, `q` being the stored
 * integer (two's complement when `signed`). Integers are packed little-endian within bytes (`bits` 8, 4 or 2).
 */
export type QuantizedEncoding = {
  /** Discriminant. */
  readonly kind: 'quantized';
  /** Bits per stored integer. */
  readonly bits: 8 | 4 | 2;
  /** Whether stored integers are two's complement. */
  readonly signed: boolean;
  /** Elements sharing one scale (and zero point); divides the last dim or equals the element count. */
  readonly groupSize: number;
  /** Whether a zero point is stored per group (otherwise it is 0). */
  readonly hasZeroPoint: boolean;
  /** Dtype the scales are kept in on the device. */
  readonly scaleDType: 'f32' | 'f16';
  /**
   * Whether a per-group offset is stored (payload `mins`, Float32Array) and subtracted after scaling:
   * value = `f32((q - zeroPoint) * scale) - min`. llama.cpp's k-quants (Q4_K, Q5_K) and Q4_1/Q5_1 need it, their
   * offsets being no integer multiple of the scale. Absent means false.
   */
  readonly hasMin?: boolean;
};

/**
 * Codebook (look-up table) storage: `indexBits`-bit indices into tables of `2^indexBits` values, optionally scaled.
 * Element `i` (row-major) reads table `floor(i / groupSize)` and, with `scaleGroupSize`, is multiplied by scale
 * `floor(i / scaleGroupSize)`: value = `codebook[table · 2^indexBits + index] * scales[group]` (f32 product).
 * A table may be shared by the whole tensor (`groupSize` = element count; NF4, k-means, ternary, binary and log2
 * weights from `--quant` are stored so), by blocks of whole rows, or by any divisor of the element count; scales are
 * grouped along the last axis as {@link QuantizedEncoding}'s are. Indices are packed little-endian within bytes, so
 * with 1, 2, 4 or 8 bits a little-endian `u32` word `w` holds indices `w·32/indexBits …` from the low bits up.
 */
export type CodebookEncoding = {
  /** Discriminant. */
  readonly kind: 'codebook';
  /** Bits per index (1..8). */
  readonly indexBits: number;
  /** Elements sharing one table (row-major groups, like {@link QuantizedEncoding.groupSize}); divides the element count. */
  readonly groupSize: number;
  /**
   * Elements sharing one scale (payload `scales`, Float32Array), dividing the last dim or equal to the element count.
   * Absent: the table values are the weight's values (no scales).
   */
  readonly scaleGroupSize?: number;
};

/**
 * N:M structured sparsity along the last axis: of every `m` consecutive elements, at most `n` are non-zero. The
 * payload keeps `n` values per group (group after group in row-major order) and, for each kept value, its position
 * within its group (`indices`), packed little-endian `indexBits` bits each. The kept values form a compacted matrix
 * of the weight's shape with the last dim `last · n / m` ({@link nmKeptShape}); they are stored as f32 (`values`),
 * or quantized ({@link NMSparseEncoding.quantizedValues}).
 */
export type NMSparseEncoding = {
  /** Discriminant. */
  readonly kind: 'sparse-nm';
  /** Kept elements per group. */
  readonly n: number;
  /** Group length. */
  readonly m: number;
  /**
   * Bits per stored position (2, 4 or 8; `2^indexBits >= m`). Absent means 8: one byte per position. Widths dividing
   * 32 keep every position inside one `u32` word, which is how the WebGPU kernel reads them.
   */
  readonly indexBits?: 2 | 4 | 8;
  /**
   * How the kept values are stored when quantized: a {@link QuantizedEncoding} of the compacted values matrix (its
   * groups run along the compacted rows, so `groupSize` divides `last · n / m`), payload `packed`, `scales` and,
   * as the encoding says, `zeroPoints` and `mins`, in place of `values`. Absent: `values` is f32.
   */
  readonly quantizedValues?: QuantizedEncoding;
};

/** Block-sparse storage of a 2-D weight in block-CSR form with `blockRows × blockCols` dense blocks. */
export type BlockSparseEncoding = {
  /** Discriminant. */
  readonly kind: 'sparse-block';
  /** Rows per block. */
  readonly blockRows: number;
  /** Columns per block. */
  readonly blockCols: number;
};

/** How a weight's bytes are stored. (The encodings are type aliases, not interfaces, so an encoding is an attribute value.) */
export type WeightEncoding = DenseEncoding | QuantizedEncoding | CodebookEncoding | NMSparseEncoding | BlockSparseEncoding;

/** Typed arrays a weight's payload may use. */
export type WeightArray = Float32Array | Uint16Array | Int32Array | Uint32Array | Uint8Array;

/** The payload buffers of an encoded weight, by role (`values`, `packed`, `scales`, `zeroPoints`, `indices`, …). */
export type WeightData = Readonly<Record<string, WeightArray>>;

/** One weight. */
export interface WeightEntry {
  /** Globally unique id; graph nodes refer to it. */
  readonly id: string;
  /** Name from the model (for messages and reports; never used in WGSL unescaped). */
  readonly name: string;
  /** Logical dtype. */
  readonly dtype: DType;
  /** Logical shape (weights are always statically shaped). */
  readonly shape: readonly number[];
  /** Storage encoding. */
  readonly encoding: WeightEncoding;
  /**
   * Payload. Dense: `values` (Float32Array for f32, Uint16Array of half bits for f16, Int32Array/Uint32Array,
   * Uint8Array for bool; for i64 an Int32Array of two words per element, low then high, as the GPU stores it). Quantized: `packed`, `scales` (Float32Array), optional `zeroPoints` (Int32Array), optional
   * `mins` (Float32Array, with `hasMin`).
   * Codebook: `indices` (packed), `codebook` (Float32Array), `scales` (Float32Array, with `scaleGroupSize`). N:M:
   * `values` (Float32Array), or with `quantizedValues` the quantized parts (`packed`, `scales`, …) of the kept
   * values, and `indices` (Uint8Array of positions in the group, packed `indexBits` bits each).
   * Block-sparse: `rowPtr`, `colIdx` (Int32Array), `blocks` (Float32Array).
   */
  readonly data: WeightData;
}

let nextWeightId = 0;

/**
 * A collection of weights. Stores are persistent: {@link WeightStore.with} returns a new store sharing the entries,
 * so a pass that adds constants leaves its input graph's store untouched.
 */
export class WeightStore {
  private readonly entries: Map<string, WeightEntry>;
  constructor(entries?: Iterable<WeightEntry>) {
    this.entries = new Map();
    if (entries) for (const e of entries) this.entries.set(e.id, e);
  }
  /** Creates a new entry with a fresh id (the store itself is not changed). */
  static entry(name: string, dtype: DType, shape: readonly number[], data: WeightData, encoding: WeightEncoding = { kind: 'dense' }): WeightEntry {
    const e: WeightEntry = { id: `w${nextWeightId++}`, name, dtype, shape: Object.freeze([...shape]), encoding, data };
    validateEntry(e);
    return Object.freeze(e);
  }
  /** Adds a dense f32 weight in place and returns its entry (for builders assembling a fresh store). */
  addF32(name: string, shape: readonly number[], values: Float32Array): WeightEntry {
    return this.add(WeightStore.entry(name, 'f32', shape, { values }));
  }
  /** Adds an entry in place (for builders assembling a fresh store). */
  add(entry: WeightEntry): WeightEntry {
    this.entries.set(entry.id, entry);
    return entry;
  }
  /** A new store with these entries added. */
  with(...added: WeightEntry[]): WeightStore {
    const s = new WeightStore(this.entries.values());
    for (const e of added) s.entries.set(e.id, e);
    return s;
  }
  /** A new store holding only the entries whose ids are listed. */
  only(ids: Iterable<string>): WeightStore {
    const s = new WeightStore();
    for (const id of ids) {
      const e = this.entries.get(id);
      if (e) s.entries.set(id, e);
    }
    return s;
  }
  /** Looks an entry up; throws {@link InputError} naming the id when absent. */
  get(id: string): WeightEntry {
    const e = this.entries.get(id);
    if (!e) throw new InputError(`weight ${id} is not in the weight store`);
    return e;
  }
  /** Whether the store holds this id. */
  has(id: string): boolean {
    return this.entries.has(id);
  }
  /** All entries. */
  all(): WeightEntry[] {
    return [...this.entries.values()];
  }
  /** Number of entries. */
  get size(): number {
    return this.entries.size;
  }
}

function count(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function need(e: WeightEntry, key: string, length: number): WeightArray {
  const a = e.data[key];
  if (!a) throw new InputError(`weight '${e.name}' (${e.encoding.kind}) has no '${key}' buffer`);
  if (a.length < length) throw new InputError(`weight '${e.name}': '${key}' has ${a.length} elements, needs ${length}`);
  return a;
}

/**
 * Checks that an entry's payload has the sizes its encoding and shape require.
 * @internal
 */
export function validateEntry(e: WeightEntry): void {
  if (!e.shape.every((d) => Number.isInteger(d) && d >= 0)) throw new InputError(`weight '${e.name}' has a bad shape [${e.shape}]`);
  const n = count(e.shape);
  const last = e.shape.length ? e.shape[e.shape.length - 1] : 1;
  const enc = e.encoding;
  switch (enc.kind) {
    case 'dense':
      need(e, 'values', e.dtype === 'i64' ? 2 * n : n);
      return;
    case 'quantized': {
      if (!(enc.groupSize > 0 && (last % enc.groupSize === 0 || enc.groupSize === n)))
        throw new InputError(`weight '${e.name}': group size ${enc.groupSize} must divide the last dim ${last} or equal ${n}`);
      const groups = n / enc.groupSize;
      need(e, 'packed', Math.ceil((n * enc.bits) / 8));
      need(e, 'scales', groups);
      if (enc.hasZeroPoint) need(e, 'zeroPoints', groups);
      if (enc.hasMin) need(e, 'mins', groups);
      return;
    }
    case 'codebook': {
      if (!(Number.isInteger(enc.indexBits) && enc.indexBits >= 1 && enc.indexBits <= 8)) throw new InputError(`weight '${e.name}': codebook index bits must be 1..8`);
      if (!(Number.isInteger(enc.groupSize) && enc.groupSize > 0 && n % enc.groupSize === 0)) throw new InputError(`weight '${e.name}': codebook group size must divide ${n}`);
      need(e, 'indices', Math.ceil((n * enc.indexBits) / 8));
      need(e, 'codebook', (n / enc.groupSize) * (1 << enc.indexBits));
      if (enc.scaleGroupSize !== undefined) {
        const sg = enc.scaleGroupSize;
        if (!(Number.isInteger(sg) && sg > 0 && (last % sg === 0 || sg === n)))
          throw new InputError(`weight '${e.name}': codebook scale group size ${sg} must divide the last dim ${last} or equal ${n}`);
        need(e, 'scales', n / sg);
      }
      return;
    }
    case 'sparse-nm': {
      if (!(enc.n > 0 && enc.n <= enc.m && last % enc.m === 0)) throw new InputError(`weight '${e.name}': ${enc.n}:${enc.m} sparsity needs the last dim (${last}) divisible by ${enc.m}`);
      const bits = enc.indexBits ?? 8;
      if (![2, 4, 8].includes(bits) || enc.m > 1 << bits) throw new InputError(`weight '${e.name}': ${bits}-bit positions cannot address groups of ${enc.m} (index bits are 2, 4 or 8)`);
      const kept = (n / enc.m) * enc.n;
      const q = enc.quantizedValues;
      if (q) {
        if (q.kind !== 'quantized' || ![8, 4, 2].includes(q.bits) || !Number.isInteger(q.groupSize))
          throw new InputError(`weight '${e.name}': the quantized values of an N:M-sparse weight need 8, 4 or 2 bits and an integer group size`);
        validateEntry(keptValuesOf(e, enc, q));
      } else need(e, 'values', kept);
      need(e, 'indices', Math.ceil((kept * bits) / 8));
      return;
    }
    case 'sparse-block': {
      if (e.shape.length !== 2 || e.shape[0] % enc.blockRows !== 0 || e.shape[1] % enc.blockCols !== 0)
        throw new InputError(`weight '${e.name}': block-sparse needs a 2-D shape divisible by ${enc.blockRows}x${enc.blockCols}`);
      const blockRowCount = e.shape[0] / enc.blockRows;
      const rowPtr = need(e, 'rowPtr', blockRowCount + 1);
      const nnz = rowPtr[blockRowCount];
      for (let r = 0; r < blockRowCount; r++)
        if (!(rowPtr[r] <= rowPtr[r + 1])) throw new InputError(`weight '${e.name}': block-sparse rowPtr must not decrease (block row ${r})`);
      if (rowPtr[0] !== 0) throw new InputError(`weight '${e.name}': block-sparse rowPtr must start at 0`);
      // kernels index the input with these: out-of-range columns would read another row's values
      const colIdx = need(e, 'colIdx', nnz);
      const blockCols = e.shape[1] / enc.blockCols;
      for (let p = 0; p < nnz; p++)
        if (!(colIdx[p] >= 0 && colIdx[p] < blockCols)) throw new InputError(`weight '${e.name}': block-sparse column ${colIdx[p]} is out of range (${blockCols} block columns)`);
      need(e, 'blocks', nnz * enc.blockRows * enc.blockCols);
      return;
    }
  }
}

/** The shape of an N:M-sparse weight's compacted kept values: `shape` with the last dim `last · n / m`. */
export function nmKeptShape(shape: readonly number[], enc: Pick<NMSparseEncoding, 'n' | 'm'>): number[] {
  const last = shape.length ? shape[shape.length - 1] : 1;
  return [...shape.slice(0, -1), (last / enc.m) * enc.n];
}

/** The quantized kept values of an N:M-sparse weight as a quantized entry of the compacted shape (same payload). */
function keptValuesOf(e: WeightEntry, enc: NMSparseEncoding, quantized: QuantizedEncoding): WeightEntry {
  return { ...e, shape: nmKeptShape(e.shape, enc), encoding: quantized };
}

/**
 * The kept values of an N:M-sparse weight, row-major over {@link nmKeptShape}, as f32 (dequantized when quantized).
 * @internal
 */
export function nmKeptValues(e: WeightEntry, enc: NMSparseEncoding): Float32Array {
  return enc.quantizedValues ? decodeWeight(keptValuesOf(e, enc, enc.quantizedValues)) : (e.data.values as Float32Array);
}

/**
 * Reads the `bits`-bit unsigned integer at element `i` of a little-endian packed byte array.
 * @internal
 */
export function unpackBits(packed: Uint8Array, i: number, bits: number): number {
  if (bits === 8) return packed[i];
  const bit = i * bits;
  const lo = bit >> 3;
  // a value may straddle two bytes (bit widths that do not divide 8)
  return ((packed[lo] | ((packed[lo + 1] ?? 0) << 8)) >> (bit & 7)) & ((1 << bits) - 1);
}

/**
 * Packs unsigned integers (each < 2^bits) little-endian into bytes.
 * @internal
 */
export function packBits(values: ArrayLike<number>, bits: number): Uint8Array {
  const out = new Uint8Array(Math.ceil((values.length * bits) / 8));
  const mask = (1 << bits) - 1;
  for (let i = 0; i < values.length; i++) {
    const bit = i * bits;
    const v = values[i] & mask;
    out[bit >> 3] |= (v << (bit & 7)) & 0xff;
    if ((bit & 7) + bits > 8) out[(bit >> 3) + 1] |= v >> (8 - (bit & 7));
  }
  return out;
}

/**
 * IEEE half bits to a number.
 * @internal
 */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/**
 * A number to IEEE half bits (round to nearest even).
 * @internal
 */
export function floatToHalf(v: number): number {
  const f32 = new Float32Array([v]);
  const x = new Uint32Array(f32.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

/** Expands a weight of any encoding to a dense Float32Array (integers and bools converted to numbers). */
export function decodeWeight(e: WeightEntry): Float32Array {
  const n = count(e.shape);
  const enc = e.encoding;
  switch (enc.kind) {
    case 'dense': {
      const v = e.data.values;
      if (v instanceof Float32Array) return v.length === n ? v : v.subarray(0, n);
      const out = new Float32Array(n);
      if (e.dtype === 'f16') for (let i = 0; i < n; i++) out[i] = halfToFloat(v[i]);
      else if (e.dtype === 'i64') for (let i = 0; i < n; i++) out[i] = (v[2 * i] >>> 0) + v[2 * i + 1] * 2 ** 32;
      else for (let i = 0; i < n; i++) out[i] = v[i];
      return out;
    }
    case 'quantized': {
      const packed = e.data.packed as Uint8Array;
      const scales = e.data.scales;
      const zps = e.data.zeroPoints;
      const mins = enc.hasMin ? e.data.mins : undefined;
      const out = new Float32Array(n);
      const signBit = 1 << (enc.bits - 1);
      for (let i = 0; i < n; i++) {
        let q = unpackBits(packed, i, enc.bits);
        if (enc.signed && q & signBit) q -= 1 << enc.bits;
        const g = Math.floor(i / enc.groupSize);
        const v = (q - (zps ? zps[g] : 0)) * scales[g];
        // with an offset: the product rounded to float32 first, as llama.cpp's reference dequantizers compute it
        out[i] = mins ? Math.fround(v) - mins[g] : v;
      }
      return out;
    }
    case 'codebook': {
      const idx = e.data.indices as Uint8Array;
      const book = e.data.codebook;
      const size = 1 << enc.indexBits;
      const scales = enc.scaleGroupSize !== undefined ? e.data.scales : undefined;
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const v = book[Math.floor(i / enc.groupSize) * size + unpackBits(idx, i, enc.indexBits)];
        // the product of two f32 values, rounded once to f32 (as a kernel computes it)
        out[i] = scales ? v * scales[Math.floor(i / enc.scaleGroupSize!)] : v;
      }
      return out;
    }
    case 'sparse-nm': {
      const values = nmKeptValues(e, enc);
      const idx = e.data.indices as Uint8Array;
      const bits = enc.indexBits ?? 8;
      const out = new Float32Array(n);
      const groups = n / enc.m;
      for (let g = 0; g < groups; g++)
        for (let j = 0; j < enc.n; j++) {
          const k = g * enc.n + j;
          out[g * enc.m + unpackBits(idx, k, bits)] += values[k];
        }
      return out;
    }
    case 'sparse-block': {
      const [rows, cols] = e.shape;
      const { blockRows: br, blockCols: bc } = enc;
      const rowPtr = e.data.rowPtr;
      const colIdx = e.data.colIdx;
      const blocks = e.data.blocks;
      const out = new Float32Array(rows * cols);
      for (let R = 0; R < rows / br; R++)
        for (let p = rowPtr[R]; p < rowPtr[R + 1]; p++) {
          const C = colIdx[p];
          for (let r = 0; r < br; r++)
            for (let c = 0; c < bc; c++) out[(R * br + r) * cols + C * bc + c] = blocks[(p * br + r) * bc + c];
        }
      return out;
    }
  }
}

/**
 * Quantizes a dense f32 array to a {@link QuantizedEncoding} (round to nearest; symmetric when `hasZeroPoint` is
 * false), with logical dtype `opts.dtype` (default f32). The `quantize-weights` pass and tests use it.
 * @internal
 */
export function quantizeWeight(name: string, shape: readonly number[], values: Float32Array, opts: { bits: 8 | 4 | 2; groupSize: number; hasZeroPoint?: boolean; dtype?: DType }): WeightEntry {
  const n = count(shape);
  const { bits, groupSize } = opts;
  const asym = opts.hasZeroPoint ?? false;
  const last = shape.length ? shape[shape.length - 1] : 1;
  if (!(Number.isInteger(groupSize) && groupSize > 0 && (last % groupSize === 0 || groupSize === n)))
    throw new InputError(`weight '${name}': group size ${groupSize} must divide the last dim ${last} or equal the element count ${n}`);
  const groups = n / groupSize;
  const scales = new Float32Array(groups);
  const zeroPoints = new Int32Array(groups);
  const q = new Int32Array(n);
  const qmax = asym ? (1 << bits) - 1 : (1 << (bits - 1)) - 1;
  const qmin = asym ? 0 : -(1 << (bits - 1));
  for (let g = 0; g < groups; g++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = g * groupSize; i < (g + 1) * groupSize; i++) {
      lo = Math.min(lo, values[i]);
      hi = Math.max(hi, values[i]);
    }
    let scale: number;
    let zp = 0;
    if (asym) {
      lo = Math.min(lo, 0);
      hi = Math.max(hi, 0);
      scale = (hi - lo) / qmax || 1;
      zp = Math.round(-lo / scale);
    } else scale = Math.max(Math.abs(lo), Math.abs(hi)) / qmax || 1;
    scales[g] = scale;
    zeroPoints[g] = zp;
    for (let i = g * groupSize; i < (g + 1) * groupSize; i++) q[i] = Math.min(qmax, Math.max(qmin, Math.round(values[i] / scale) + zp));
  }
  const data: Record<string, WeightArray> = { packed: packBits(q, bits), scales };
  if (asym) data.zeroPoints = zeroPoints;
  return WeightStore.entry(name, opts.dtype ?? 'f32', shape, data, { kind: 'quantized', bits, signed: !asym, groupSize, hasZeroPoint: asym, scaleDType: 'f32' });
}
