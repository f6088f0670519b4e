/**
 * SparseGPT (Frantar & Alistarh, 2023): prunes a weight and reconstructs the kept weights so that the layer's output
 * on the calibration inputs changes as little as possible, with GPTQ's machinery (`gptq.ts`): the damped Hessian
 * `H = XᵀX + λ·mean(diag H)·I` of the layer's inputs, `U` the upper Cholesky factor of `H⁻¹`, and columns processed
 * left to right, each column's pruning error `e = W[:, i] / U[i][i]` (on the pruned entries) spread over the later
 * columns as `W[:, j] −= e · U[i][j]`.
 *
 * The mask is chosen as the columns are reached, from the **updated** weights, by SparseGPT's score `W² / U[j][j]²`:
 * - `unstructured`: at the start of each block of 128 columns, the block's `round((1 − S) · rows · width)` best
 *   weights (over all rows of the block) are kept;
 * - `N:M`: at the first column of each group of M, the N best of the group in each row are kept.
 * Block patterns are not SparseGPT's and are refused. Like GPTQ here, every Hessian comes from the f32 model.
 * @module
 */
import { InputError } from '../errors.js';
import { gptqPrepare } from './gptq.js';
import { upperCholeskyOfInverse } from './linalg.js';
import { patternSparsity, type PrunePattern } from './prune-mask.js';

/** The result of {@link sparseGptPrune}. */
export interface SparseGptResult {
  /** The pruned and reconstructed weight, row-major `[rows, cols]`. */
  readonly values: Float32Array;
  /** 1 where kept. */
  readonly mask: Uint8Array;
}

/** Options of {@link sparseGptPrune}. */
export interface SparseGptOptions {
  /** Columns per mask-selection block for unstructured sparsity (default 128). */
  readonly blockSize?: number;
  /** Dampening λ (default 0.01). */
  readonly dampening?: number;
}

/**
 * Prunes `weights` (`[rows, cols]`, rows = output channels) to `pattern` at `sparsity` with SparseGPT, given the
 * Hessian `hessian` (`cols × cols`) of the layer's inputs.
 * @throws InputError for a block pattern, a bad sparsity, M not dividing `cols`, or sizes that disagree.
 */
export function sparseGptPrune(name: string, weights: ArrayLike<number>, rows: number, cols: number, hessian: ArrayLike<number>, pattern: PrunePattern, sparsity: number | undefined, opts: SparseGptOptions = {}): SparseGptResult {
  if (pattern.kind === 'block') throw new InputError(`sparsegpt prunes unstructured or N:M patterns, not block${pattern.block}`);
  const s = patternSparsity(pattern, pattern.kind === 'nm' ? undefined : sparsity);
  if (pattern.kind === 'nm' && cols % pattern.m !== 0) throw new InputError(`--pattern ${pattern.n}:${pattern.m}: weight '${name}' has rows of ${cols} (K), not a multiple of M = ${pattern.m}`);
  if (weights.length !== rows * cols || hessian.length !== cols * cols) throw new InputError(`sparsegpt: weight '${name}' has ${weights.length} values and a Hessian of ${hessian.length}, expected ${rows}x${cols} and ${cols}x${cols}`);
  const { w, h } = gptqPrepare(weights, rows, cols, hessian, opts.dampening ?? 0.01);
  const u = upperCholeskyOfInverse(h, cols);
  const mask = new Uint8Array(rows * cols);
  const block = opts.blockSize ?? 128;
  const score = (r: number, j: number): number => (w[r * cols + j] / u[j * cols + j]) ** 2;
  const best = (items: number[], by: (i: number) => number, keep: number): number[] => items.sort((a, b) => by(b) - by(a) || a - b).slice(0, keep);
  for (let i = 0; i < cols; i++) {
    if (pattern.kind === 'unstructured' && i % block === 0) {
      const width = Math.min(block, cols - i);
      const cells = Array.from({ length: rows * width }, (_v, k) => k);
      for (const k of best(cells, (k) => score(Math.floor(k / width), i + (k % width)), Math.round((1 - s) * rows * width))) mask[Math.floor(k / width) * cols + i + (k % width)] = 1;
    }
    if (pattern.kind === 'nm' && i % pattern.m === 0)
      for (let r = 0; r < rows; r++) for (const j of best(Array.from({ length: pattern.m }, (_v, k) => i + k), (j) => score(r, j), pattern.n)) mask[r * cols + j] = 1;
    const d = u[i * cols + i];
    for (let r = 0; r < rows; r++) {
      if (mask[r * cols + i]) continue;
      const row = r * cols;
      const e = w[row + i] / d;
      w[row + i] = 0;
      if (e === 0) continue;
      for (let j = i + 1; j < cols; j++) w[row + j] -= e * u[i * cols + j];
    }
  }
  const values = new Float32Array(rows * cols);
  for (let k = 0; k < values.length; k++) values[k] = mask[k] ? w[k] : 0;
  return { values, mask };
}
