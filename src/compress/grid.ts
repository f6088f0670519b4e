/**
 * The integer grids that the weight-compression methods (RTN, GPTQ, AWQ) round onto, and their encoding as
 * {@link QuantizedEncoding} weights laid out exactly as the GGUF importer produces them from Q8_0, Q4_0 and Q4_1
 * blocks, so that a compressed graph and the GGUF file written from it decode to the same values bit for bit.
 *
 * | bits | grid (per group of K) | value | stored as |
 * | --- | --- | --- | --- |
 * | 8 | symmetric, q ∈ [−128, 127] | `q · d` | Q8_0 |
 * | 4, 3, 2 | asymmetric, q ∈ [0, 2^bits − 1] | `f32(q · d) + m` | Q4_1 |
 * | 4, 3, 2 with `symmetric` | q ∈ [−2^(bits−1), 2^(bits−1) − 1] | `q · d` | Q4_0 (stored `q + 8`) |
 *
 * `d` and `m` are rounded to f16, as GGUF stores them, before anything is rounded onto the grid. **3-bit and 2-bit
 * grids are stored in 4-bit containers** (Q4_1 or Q4_0 blocks whose integers use only 8 or 4 of the 16 levels): the
 * quality figures are those of the 3-bit or 2-bit grid, the file size that of 4 bits. Groups of 64 or 128 are stored
 * as 32-element blocks that repeat their group's `d` and `m`, so every group size that is a multiple of 32 maps onto
 * GGUF exactly.
 * @module
 */
import { InputError } from '../errors.js';
import { floatToHalf, halfToFloat, packBits, WeightStore, type QuantizedEncoding, type WeightEntry } from '../ir/weights.js';

/** A grid: bits per value, elements of a row (along K) sharing `d` and `m`, and whether it is symmetric. */
export interface GridSpec {
  /** Bits of the grid (8, 4, 3 or 2); 3 and 2 are stored in 4-bit containers. */
  readonly bits: 8 | 4 | 3 | 2;
  /** Elements of a row sharing one scale: a multiple of {@link GGUF_BLOCK}. */
  readonly groupSize: number;
  /** Symmetric (no offset). 8-bit grids are always symmetric (Q8_0). */
  readonly symmetric: boolean;
}

/** Elements per GGUF Q8_0/Q4_0/Q4_1 block: the encoding's group size. */
export const GGUF_BLOCK = 32;

/** One group's grid: integers in `[qmin, qmax]`, value = `f32(q · scale) + offset` (f32 arithmetic). */
export interface GroupGrid {
  /** Smallest integer. */
  readonly qmin: number;
  /** Largest integer. */
  readonly qmax: number;
  /** The step `d` (an f16 value). */
  readonly scale: number;
  /** The offset `m` (an f16 value; 0 for symmetric grids). */
  readonly offset: number;
}

/** The value nearest to `v` that f16 can hold. */
export function toHalf(v: number): number {
  return halfToFloat(floatToHalf(v));
}

/** Checks a spec; throws {@link InputError} naming what is wrong. */
export function checkGridSpec(spec: GridSpec): void {
  if (![8, 4, 3, 2].includes(spec.bits)) throw new InputError(`bits must be 8, 4, 3 or 2, got ${spec.bits}`);
  if (!(Number.isInteger(spec.groupSize) && spec.groupSize > 0 && spec.groupSize % GGUF_BLOCK === 0))
    throw new InputError(`group size must be a positive multiple of ${GGUF_BLOCK} (GGUF blocks), got ${spec.groupSize}`);
}

/** Whether the spec's grid is symmetric (8 bits always are). */
export function isSymmetric(spec: GridSpec): boolean {
  return spec.bits === 8 || spec.symmetric;
}

/** The integer range of a spec's grid. */
export function gridRange(spec: GridSpec): [number, number] {
  if (isSymmetric(spec)) return [-(1 << (spec.bits - 1)), (1 << (spec.bits - 1)) - 1];
  return [0, (1 << spec.bits) - 1];
}

/**
 * The min-max grid of one group's values (`values[at + i·stride]`, i < count): asymmetric grids span [min, max]
 * (`m` = min, as llama.cpp's Q4_1), symmetric ones put the value of largest magnitude on the most negative level
 * (as llama.cpp's Q4_0; 8 bits: `d` = max|w| / 127, as Q8_0).
 */
export function minMaxGrid(spec: GridSpec, values: ArrayLike<number>, at = 0, count = spec.groupSize, stride = 1): GroupGrid {
  const [qmin, qmax] = gridRange(spec);
  let lo = Infinity;
  let hi = -Infinity;
  let ext = 0;
  for (let i = 0; i < count; i++) {
    const v = values[at + i * stride];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
    if (Math.abs(v) > Math.abs(ext)) ext = v;
  }
  if (!isSymmetric(spec)) return { qmin, qmax, scale: toHalf((hi - lo) / qmax), offset: toHalf(lo) };
  const scale = spec.bits === 8 ? toHalf(Math.abs(ext) / 127) : toHalf(ext / qmin);
  return { qmin, qmax, scale, offset: 0 };
}

/** The grid integer nearest to `w`. */
export function quantizeOnGrid(g: GroupGrid, w: number): number {
  if (g.scale === 0) return g.offset === 0 ? 0 : g.qmin;
  const q = Math.round((w - g.offset) / g.scale);
  return q < g.qmin ? g.qmin : q > g.qmax ? g.qmax : q;
}

/** The value of grid integer `q`, as the decoder computes it (f32 product, then the offset added in f32). */
export function dequantizeOnGrid(g: GroupGrid, q: number): number {
  return Math.fround(Math.fround(q * g.scale) + g.offset);
}

/** A weight on a grid: integers row-major `[rows, cols]` and one {@link GroupGrid} per row and group. */
export interface GridWeight {
  /** Rows (N, output channels). */
  readonly rows: number;
  /** Columns (K, the reduced axis). */
  readonly cols: number;
  /** The spec. */
  readonly spec: GridSpec;
  /** Integers, row-major. */
  readonly q: Int32Array;
  /** Grids, row-major `[rows, cols / groupSize]`. */
  readonly grids: readonly GroupGrid[];
}

/** The dequantized values of a grid weight (row-major f32, what the decoder of its encoding returns). */
export function dequantizeGridWeight(w: GridWeight): Float32Array {
  const out = new Float32Array(w.rows * w.cols);
  const groups = w.cols / w.spec.groupSize;
  for (let r = 0; r < w.rows; r++)
    for (let c = 0; c < w.cols; c++) {
      const i = r * w.cols + c;
      out[i] = dequantizeOnGrid(w.grids[r * groups + Math.floor(c / w.spec.groupSize)], w.q[i]);
    }
  return out;
}

/** Round to nearest onto min-max grids: the RTN baseline. `values` is row-major `[rows, cols]`. */
export function roundToNearest(values: ArrayLike<number>, rows: number, cols: number, spec: GridSpec): GridWeight {
  checkGridSpec(spec);
  if (cols % spec.groupSize !== 0) throw new InputError(`rows of ${cols} are no multiple of group ${spec.groupSize}`);
  const groups = cols / spec.groupSize;
  const q = new Int32Array(rows * cols);
  const grids: GroupGrid[] = [];
  for (let r = 0; r < rows; r++)
    for (let g = 0; g < groups; g++) {
      const at = r * cols + g * spec.groupSize;
      const grid = minMaxGrid(spec, values, at);
      grids.push(grid);
      for (let i = 0; i < spec.groupSize; i++) q[at + i] = quantizeOnGrid(grid, values[at + i]);
    }
  return { rows, cols, spec, q, grids };
}

/**
 * A grid weight as a {@link QuantizedEncoding} entry named `name` (shape `[rows, cols]`), in the layout the GGUF
 * importer gives Q8_0 (8 bits), Q4_0 (symmetric) and Q4_1 blocks: groups of {@link GGUF_BLOCK}, each repeating its
 * grid group's scale (and offset, stored negated as `mins`).
 */
export function encodeGridWeight(name: string, w: GridWeight): WeightEntry {
  const { rows, cols, spec } = w;
  const n = rows * cols;
  const blocks = n / GGUF_BLOCK;
  const perGroup = spec.groupSize / GGUF_BLOCK;
  const scales = new Float32Array(blocks);
  const offsets = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const g = w.grids[Math.floor(b / perGroup)];
    scales[b] = g.scale;
    offsets[b] = -g.offset;
  }
  const base = { kind: 'quantized', groupSize: GGUF_BLOCK, scaleDType: 'f32' } as const;
  if (spec.bits === 8) {
    const packed = new Uint8Array(n);
    for (let i = 0; i < n; i++) packed[i] = w.q[i] & 0xff;
    const enc: QuantizedEncoding = { ...base, bits: 8, signed: true, hasZeroPoint: false };
    return WeightStore.entry(name, 'f32', [rows, cols], { packed, scales }, enc);
  }
  if (isSymmetric(spec)) {
    const stored = Int32Array.from(w.q, (q) => q + 8);
    const enc: QuantizedEncoding = { ...base, bits: 4, signed: false, hasZeroPoint: true };
    return WeightStore.entry(name, 'f32', [rows, cols], { packed: packBits(stored, 4), scales, zeroPoints: new Int32Array(blocks).fill(8) }, enc);
  }
  const enc: QuantizedEncoding = { ...base, bits: 4, signed: false, hasZeroPoint: false, hasMin: true };
  return WeightStore.entry(name, 'f32', [rows, cols], { packed: packBits(w.q, 4), scales, mins: offsets }, enc);
}
