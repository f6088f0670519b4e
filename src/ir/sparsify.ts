/**
 * Sparsifying dense weights into the weight store's sparse encodings: magnitude pruning to N:M structured sparsity
 * ({@link pruneNM}) and to block-sparse CSR ({@link toBlockSparse}). Both are lossy by design (they drop the smallest
 * values); {@link decodeWeight} of the result is the pruned dense weight, the reference every sparse kernel matches.
 * An N:M weight's kept values may then be quantized ({@link quantizeNMValues}).
 * @module
 */
import { InputError } from '../errors.js';
import { nmKeptShape, nmKeptValues, packBits, quantizeWeight, WeightStore, type WeightEntry } from './weights.js';

/**
 * The narrowest position width the N:M encoding offers for groups of `m`: 2 bits up to 4, 4 bits up to 16, else 8.
 * @internal
 */
export function nmIndexBits(m: number): 2 | 4 | 8 {
  return m <= 4 ? 2 : m <= 16 ? 4 : 8;
}

/**
 * Prunes a dense f32 weight to N:M sparsity along its last axis: in every group of `m` consecutive elements the `n`
 * of largest magnitude are kept (ties go to the earlier position), stored in position order with positions packed
 * {@link nmIndexBits} bits each.
 * @throws {@link InputError} naming the weight when `m` does not divide the last dim, `n` is not in `1..m`, `m`
 * exceeds 256, or `values` is shorter than the shape.
 * @internal
 */
export function pruneNM(name: string, shape: readonly number[], values: Float32Array, opts: { n: number; m: number }): WeightEntry {
  const { n, m } = opts;
  const last = shape.length ? shape[shape.length - 1] : 1;
  if (!(Number.isInteger(m) && m >= 1 && m <= 256)) throw new InputError(`weight '${name}': N:M group length must be an integer in 1..256, got ${m}`);
  if (!(Number.isInteger(n) && n >= 1 && n <= m)) throw new InputError(`weight '${name}': N:M keeps 1..${m} values per group, got ${n}`);
  if (last % m !== 0) throw new InputError(`weight '${name}': ${n}:${m} sparsity needs the last dim (${last}) divisible by ${m}`);
  const count = shape.reduce((a, b) => a * b, 1);
  if (values.length < count) throw new InputError(`weight '${name}': ${values.length} values for shape [${shape}]`);
  const groups = count / m;
  const kept = new Float32Array(groups * n);
  const positions = new Uint8Array(groups * n);
  const order = Array.from({ length: m }, (_, i) => i);
  for (let g = 0; g < groups; g++) {
    const base = g * m;
    // the n largest |v| (stable: ties keep the earlier position), then back in position order
    const top = [...order].sort((a, b) => Math.abs(values[base + b]) - Math.abs(values[base + a]) || a - b).slice(0, n).sort((a, b) => a - b);
    top.forEach((p, j) => {
      kept[g * n + j] = values[base + p];
      positions[g * n + j] = p;
    });
  }
  const indexBits = nmIndexBits(m);
  return WeightStore.entry(name, 'f32', shape, { values: kept, indices: packBits(positions, indexBits) }, { kind: 'sparse-nm', n, m, indexBits });
}

/**
 * Quantizes the kept values of an N:M-sparse weight (f32 or already quantized: they are re-quantized from their
 * decoded values) with {@link quantizeWeight} over the compacted values matrix ({@link nmKeptShape}), keeping the
 * positions: the result is an N:M-sparse entry named `name` whose `quantizedValues` say how its values are stored.
 * `groupSize` counts compacted values, so it must divide the compacted row length (`last · n / m`) or cover them all.
 * @throws {@link InputError} naming the weight when `sparse` is not N:M-sparse or the group size does not fit.
 * @internal
 */
export function quantizeNMValues(name: string, sparse: WeightEntry, opts: { bits: 8 | 4 | 2; groupSize: number; hasZeroPoint?: boolean }): WeightEntry {
  const enc = sparse.encoding;
  if (enc.kind !== 'sparse-nm') throw new InputError(`weight '${sparse.name}' is ${enc.kind}-encoded, not N:M-sparse`);
  const q = quantizeWeight(name, nmKeptShape(sparse.shape, enc), nmKeptValues(sparse, enc), opts);
  if (q.encoding.kind !== 'quantized') throw new Error('quantizeWeight returned no quantized encoding');
  const { n, m, indexBits } = enc;
  return WeightStore.entry(name, sparse.dtype, sparse.shape, { ...q.data, indices: sparse.data.indices }, { kind: 'sparse-nm', n, m, ...(indexBits ? { indexBits } : {}), quantizedValues: q.encoding });
}

/**
 * Prunes a dense f32 `[rows, cols]` weight to block-sparse CSR with `blockRows × blockCols` blocks: of the blocks that
 * are not all zero, the `round(density · blocks)` of largest Frobenius norm are kept (ties go to the earlier block);
 * a block row may end up with no blocks. Blocks are stored row by row, in column order within a row.
 * @throws {@link InputError} naming the weight when the shape is not 2-D, the blocks do not tile it (no padding: a
 * kernel's output columns are the weight's rows), a block size is not a positive integer, or `density` is outside
 * `[0, 1]`.
 * @internal
 */
export function toBlockSparse(name: string, shape: readonly number[], values: Float32Array, opts: { blockRows: number; blockCols: number; density: number }): WeightEntry {
  const { blockRows: br, blockCols: bc, density } = opts;
  if (shape.length !== 2) throw new InputError(`weight '${name}': block-sparse weights are 2-D, got shape [${shape}]`);
  const [rows, cols] = shape;
  if (!(Number.isInteger(br) && br >= 1 && Number.isInteger(bc) && bc >= 1)) throw new InputError(`weight '${name}': block sizes must be positive integers, got ${br}x${bc}`);
  if (rows % br !== 0 || cols % bc !== 0) throw new InputError(`weight '${name}': ${br}x${bc} blocks do not tile its [${rows}, ${cols}] shape (no padding: pick block sizes dividing both dims)`);
  if (!(density >= 0 && density <= 1)) throw new InputError(`weight '${name}': block density must be in [0, 1], got ${density}`);
  if (values.length < rows * cols) throw new InputError(`weight '${name}': ${values.length} values for shape [${shape}]`);
  const R = rows / br;
  const C = cols / bc;
  const norms = new Float64Array(R * C);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) norms[Math.floor(i / br) * C + Math.floor(j / bc)] += values[i * cols + j] ** 2;
  const ranked = Array.from({ length: R * C }, (_, b) => b)
    .filter((b) => norms[b] > 0)
    .sort((a, b) => norms[b] - norms[a] || a - b);
  const keep = new Set(ranked.slice(0, Math.round(density * R * C)));
  const rowPtr = new Int32Array(R + 1);
  const colIdx: number[] = [];
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) if (keep.has(r * C + c)) colIdx.push(c);
    rowPtr[r + 1] = colIdx.length;
  }
  const blocks = new Float32Array(colIdx.length * br * bc);
  for (let r = 0; r < R; r++)
    for (let p = rowPtr[r]; p < rowPtr[r + 1]; p++)
      for (let i = 0; i < br; i++) for (let j = 0; j < bc; j++) blocks[(p * br + i) * bc + j] = values[(r * br + i) * cols + colIdx[p] * bc + j];
  return WeightStore.entry(name, 'f32', shape, { rowPtr, colIdx: Int32Array.from(colIdx), blocks }, { kind: 'sparse-block', blockRows: br, blockCols: bc });
}
