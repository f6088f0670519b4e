/**
 * Codebook (look-up table) quantizers: a dense f32 weight to a {@link CodebookEncoding} with one table for the whole
 * tensor and, optionally, one scale per group of elements along the last axis. The table's levels:
 *
 * | levels | index bits | table | scale per group | an element's index |
 * | --- | --- | --- | --- | --- |
 * | `nf4` | 4 | QLoRA's NormalFloat4 ({@link NF4_TABLE}) | absmax | nearest level to `w / scale` |
 * | `kmeans` | 4 or 8 | k-means (Lloyd, 1-D) over the values (divided by their scale when there are scales) | absmax, or none | nearest centroid |
 * | `ternary` | 2 | `{-1, 0, 1}` (and an unused 0) | mean \|w\| over the kept elements | `sign(w)` when \|w\| > 0.7·mean \|w\|, else 0 (TWN) |
 * | `binary` | 1 | `{-1, 1}` | mean \|w\| | `w >= 0 ? 1 : -1` |
 * | `log2` | 4 | `±2^-k`, k = 0 … 7 | absmax | nearest level to `w / scale` |
 *
 * k-means is deterministic: Lloyd's iterations run on the sorted values (each cluster is a contiguous range, its mean
 * a prefix-sum difference) until no centroid moves or 64 iterations have run, from the evenly spaced quantiles and
 * from evenly spaced levels over the range; the start with the lower squared error wins ({@link kmeansTable}). The `quantize-weights` pass applies these for `--quant nf4`,
 * `codebook16`, `codebook256`, `ternary`, `binary` and `log2`; {@link decodeWeight} is the reference decoder.
 * @module
 */
import { InputError } from '../errors.js';
import type { DType } from './dtype.js';
import { packBits, WeightStore, type CodebookEncoding, type WeightArray, type WeightEntry } from './weights.js';

/**
 * QLoRA's NormalFloat4 levels (bitsandbytes' `create_normal_map`), ascending: 16 values in [-1, 1] with an exact 0.
 * @internal
 */
export const NF4_TABLE: readonly number[] = Object.freeze([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023,
  1.0,
]);

/** How a codebook quantizer picks its table (see the module table). */
export type CodebookLevels = 'nf4' | 'kmeans' | 'ternary' | 'binary' | 'log2';

/**
 * Options of {@link quantizeCodebook}.
 * @internal
 */
export interface CodebookQuantOptions {
  /** The table's levels. */
  readonly levels: CodebookLevels;
  /** Bits per index: `kmeans` takes 4 (16 centroids) or 8 (256); the other levels have their own (4, 2, 1, 4). */
  readonly indexBits?: number;
  /**
   * Elements sharing one scale along the last axis (dividing it, or the element count). Absent: no scales, which
   * only `kmeans` allows (its centroids are then the values themselves).
   */
  readonly scaleGroupSize?: number;
  /** Logical dtype of the entry (default f32). */
  readonly dtype?: DType;
}

/** Index bits of each level set (k-means: as asked). */
const LEVEL_BITS: Readonly<Record<Exclude<CodebookLevels, 'kmeans'>, number>> = { nf4: 4, ternary: 2, binary: 1, log2: 4 };

/** The ternary table: indices 0, 1, 2 are -1, 0, 1; index 3 is unused. */
const TERNARY_TABLE: readonly number[] = [-1, 0, 1, 0];

/**
 * The log2 table, ascending: `-2^0 … -2^-7, 2^-7 … 2^0`.
 * @internal
 */
export const LOG2_TABLE: readonly number[] = Object.freeze([...Array.from({ length: 8 }, (_, k) => -(2 ** -k)), ...Array.from({ length: 8 }, (_, k) => 2 ** (k - 7))]);

/** Iteration cap of the k-means refinement. */
const KMEANS_MAX_ITERS = 64;

/**
 * Quantizes a dense f32 array to a {@link CodebookEncoding} with one table for the whole tensor (see the module
 * table for each level set).
 * @throws InputError for a scale group that divides neither the last dim nor the element count, for `kmeans` with
 * other than 4 or 8 index bits, or for fixed levels without scales.
 * @internal
 */
export function quantizeCodebook(name: string, shape: readonly number[], values: Float32Array, opts: CodebookQuantOptions): WeightEntry {
  const n = shape.reduce((a, b) => a * b, 1);
  const last = shape.length ? shape[shape.length - 1] : 1;
  const { levels, scaleGroupSize: sg } = opts;
  const bits = levels === 'kmeans' ? opts.indexBits ?? 4 : LEVEL_BITS[levels];
  if (levels === 'kmeans' && bits !== 4 && bits !== 8) throw new InputError(`weight '${name}': k-means codebooks have 4 or 8 index bits, not ${bits}`);
  if (levels !== 'kmeans' && opts.indexBits !== undefined && opts.indexBits !== bits) throw new InputError(`weight '${name}': ${levels} codebooks have ${bits} index bits`);
  if (sg === undefined && levels !== 'kmeans') throw new InputError(`weight '${name}': ${levels} codebooks need a scale group size`);
  if (sg !== undefined && !(Number.isInteger(sg) && sg > 0 && (last % sg === 0 || sg === n)))
    throw new InputError(`weight '${name}': scale group size ${sg} must divide the last dim ${last} or equal the element count ${n}`);
  const groups = sg === undefined ? 0 : n / sg;
  const scales = new Float32Array(groups);
  for (let g = 0; g < groups; g++) scales[g] = groupScale(levels, values.subarray(g * sg!, (g + 1) * sg!));
  // values relative to their scale (exactly the values when there are no scales)
  const x = sg === undefined ? values : Float32Array.from(values.subarray(0, n), (v, i) => v / scales[Math.floor(i / sg)]);
  const table = levels === 'kmeans' ? kmeansTable(x, 1 << bits) : levels === 'nf4' ? NF4_TABLE : levels === 'ternary' ? TERNARY_TABLE : levels === 'binary' ? [-1, 1] : LOG2_TABLE;
  const idx = new Uint8Array(n);
  if (levels === 'ternary') {
    const delta = Array.from({ length: groups }, (_, g) => ternaryThreshold(values.subarray(g * sg!, (g + 1) * sg!)));
    for (let i = 0; i < n; i++) idx[i] = Math.abs(values[i]) > delta[Math.floor(i / sg!)] ? (values[i] > 0 ? 2 : 0) : 1;
  }
  else if (levels === 'binary') for (let i = 0; i < n; i++) idx[i] = x[i] >= 0 ? 1 : 0;
  else {
    const order = sortedOrder(table);
    const sortedLevels = order.map((j) => table[j]);
    for (let i = 0; i < n; i++) idx[i] = order[nearestSorted(sortedLevels, x[i])];
  }
  const data: Record<string, WeightArray> = { indices: packBits(idx, bits), codebook: Float32Array.from(table) };
  if (sg !== undefined) data.scales = scales;
  const encoding: CodebookEncoding = { kind: 'codebook', indexBits: bits, groupSize: n, ...(sg !== undefined ? { scaleGroupSize: sg } : {}) };
  return WeightStore.entry(name, opts.dtype ?? 'f32', shape, data, encoding);
}

/** The scale of one group: absmax (nf4, log2, kmeans), mean |w| (binary), mean |w| over the kept elements (ternary); 1 for an all-zero group. */
function groupScale(levels: CodebookLevels, g: Float32Array): number {
  let absmax = 0;
  let absSum = 0;
  for (const v of g) {
    absmax = Math.max(absmax, Math.abs(v));
    absSum += Math.abs(v);
  }
  if (absmax === 0) return 1;
  if (levels === 'binary') return absSum / g.length;
  if (levels === 'ternary') {
    const delta = ternaryThreshold(g);
    let kept = 0;
    let keptSum = 0;
    for (const v of g)
      if (Math.abs(v) > delta) {
        kept++;
        keptSum += Math.abs(v);
      }
    return kept ? keptSum / kept : absmax;
  }
  return absmax;
}

/** TWN's threshold of a group: 0.7 · its mean |w|. */
function ternaryThreshold(g: Float32Array): number {
  let s = 0;
  for (const v of g) s += Math.abs(v);
  return (0.7 * s) / g.length;
}

/** Indices of `table` in ascending order of value (ties by index). */
function sortedOrder(table: readonly number[]): number[] {
  return table.map((_, j) => j).sort((a, b) => table[a] - table[b] || a - b);
}

/** Position of the value nearest `v` in ascending `levels` (the lower one on a tie). */
function nearestSorted(levels: readonly number[], v: number): number {
  let lo = 0;
  let hi = levels.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (levels[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && v - levels[lo - 1] <= levels[lo] - v ? lo - 1 : lo;
}

/**
 * `k` centroids of `values` (ascending): 1-D Lloyd iterations on the sorted values (prefix sums give each cluster's
 * mean), from two starts — the evenly spaced quantiles, and `k` evenly spaced levels over the range — keeping the
 * result with the lower squared error. Starting from the uniform levels, the result is never worse than uniform
 * quantization with as many levels. A cluster that empties keeps its centroid; with fewer distinct values than `k`,
 * centroids repeat.
 * @internal
 */
export function kmeansTable(values: Float32Array, k: number): number[] {
  const n = values.length;
  if (n === 0) return new Array<number>(k).fill(0);
  const sorted = Float64Array.from(values).sort();
  const prefix = new Float64Array(n + 1);
  const prefixSq = new Float64Array(n + 1);
  for (let i = 0; i < n; i++) {
    prefix[i + 1] = prefix[i] + sorted[i];
    prefixSq[i + 1] = prefixSq[i] + sorted[i] * sorted[i];
  }
  // the first sorted position whose value is above t
  const upper = (t: number): number => {
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid] <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  // cluster j of centroids c: the sorted range [ends[j-1], ends[j]) of values nearer c[j] than its neighbours
  const ranges = (c: readonly number[]): number[] => {
    const ends: number[] = [];
    let start = 0;
    for (let j = 0; j < k; j++) {
      start = j === k - 1 ? n : Math.max(start, upper((c[j] + c[j + 1]) / 2));
      ends.push(start);
    }
    return ends;
  };
  const lloyd = (init: number[]): { c: number[]; sse: number } => {
    let c = init;
    for (let it = 0; it < KMEANS_MAX_ITERS; it++) {
      const ends = ranges(c);
      const next = c.map((v, j) => {
        const s = j ? ends[j - 1] : 0;
        return ends[j] > s ? (prefix[ends[j]] - prefix[s]) / (ends[j] - s) : v;
      });
      const moved = next.some((v, j) => v !== c[j]);
      c = next;
      if (!moved) break;
    }
    const ends = ranges(c);
    let sse = 0;
    c.forEach((v, j) => {
      const s = j ? ends[j - 1] : 0;
      sse += prefixSq[ends[j]] - prefixSq[s] - 2 * v * (prefix[ends[j]] - prefix[s]) + v * v * (ends[j] - s);
    });
    return { c, sse };
  };
  const [lo, hi] = [sorted[0], sorted[n - 1]];
  const quantiles = lloyd(Array.from({ length: k }, (_, j) => sorted[Math.min(n - 1, Math.floor(((j + 0.5) * n) / k))]));
  const uniform = lloyd(Array.from({ length: k }, (_, j) => (k === 1 ? (lo + hi) / 2 : lo + ((hi - lo) * j) / (k - 1))));
  return (uniform.sse < quantiles.sse ? uniform : quantiles).c.map((v) => Math.fround(v));
}
