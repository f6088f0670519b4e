/**
 * GPTQ (Frantar et al., 2022): rounds a weight onto a grid column by column, spreading each column's rounding error
 * over the columns not yet rounded so that the layer's output on the calibration inputs changes as little as possible.
 *
 * With `W` the `[N, K]` weight and `H = XᵀX` the `K × K` Hessian of the layer's calibration inputs:
 * 1. dampen: `H += λ · mean(diag H) · I` (λ = 0.01), after giving dead inputs (`H[i][i]` = 0) a unit diagonal and a zero
 *    weight column, as the paper's code does;
 * 2. `U` = the upper Cholesky factor of `H⁻¹`;
 * 3. for each column `i` in turn: `q = round(W[:, i])` onto its group's grid, `e = (W[:, i] − q) / U[i][i]`, and
 *    `W[:, j] −= e · U[i][j]` for the later columns `j`;
 * 4. **lazy batches**: the updates of step 3 are applied at once inside a block of 128 columns, and to the columns
 *    after the block only when the block is done, as one rank-128 update.
 *
 * **Groups**: without act-order, a group's grid (min-max) is taken from the updated weights when its first column is
 * reached (blocks are a multiple of the group size, so a group never spans two blocks). **Act-order** rounds the
 * columns in order of decreasing `H[i][i]`; the grids are then fixed beforehand from the original weights in storage
 * order ("static groups"), since the encoding keeps groups of consecutive columns.
 * @module
 */
import { InputError } from '../errors.js';
import { checkGridSpec, dequantizeOnGrid, minMaxGrid, quantizeOnGrid, type GridSpec, type GridWeight, type GroupGrid } from './grid.js';
import { upperCholeskyOfInverse } from './linalg.js';

/** Options of {@link gptqQuantize}. */
export interface GptqOptions {
  /** Columns per lazy batch (default 128; rounded up to a multiple of the group size). */
  readonly blockSize?: number;
  /** Dampening λ: `λ · mean(diag H)` is added to the diagonal (default 0.01). */
  readonly dampening?: number;
  /** Round the columns in order of decreasing Hessian diagonal (default false). */
  readonly actOrder?: boolean;
}

/**
 * The damped Hessian GPTQ works with, and the weights with dead input columns zeroed (both copies).
 * @internal
 */
export function gptqPrepare(weights: ArrayLike<number>, rows: number, cols: number, hessian: ArrayLike<number>, dampening: number): { w: Float64Array; h: Float64Array } {
  const w = Float64Array.from(weights);
  const h = Float64Array.from(hessian);
  let mean = 0;
  for (let i = 0; i < cols; i++) {
    if (h[i * cols + i] === 0) {
      h[i * cols + i] = 1;
      for (let r = 0; r < rows; r++) w[r * cols + i] = 0;
    }
    mean += h[i * cols + i];
  }
  const damp = (dampening * mean) / cols;
  for (let i = 0; i < cols; i++) h[i * cols + i] += damp;
  return { w, h };
}

/**
 * GPTQ-rounds `weights` (row-major `[rows, cols]`, rows = output channels) onto `spec`'s grid given the Hessian
 * `hessian` (`cols × cols`, row-major) of the layer's inputs.
 * @throws InputError when the sizes disagree or the damped Hessian is not positive definite.
 */
export function gptqQuantize(weights: ArrayLike<number>, rows: number, cols: number, hessian: ArrayLike<number>, spec: GridSpec, opts: GptqOptions = {}): GridWeight {
  checkGridSpec(spec);
  const g = spec.groupSize;
  if (cols % g !== 0) throw new InputError(`rows of ${cols} are no multiple of group ${g}`);
  if (weights.length !== rows * cols) throw new InputError(`weight has ${weights.length} values, expected ${rows}x${cols}`);
  if (hessian.length !== cols * cols) throw new InputError(`Hessian has ${hessian.length} values, expected ${cols}x${cols}`);
  const block = Math.ceil((opts.blockSize ?? 128) / g) * g;
  const { w: w0, h: h0 } = gptqPrepare(weights, rows, cols, hessian, opts.dampening ?? 0.01);
  const groups = cols / g;

  // column order: storage order, or decreasing diagonal (stable, so ties keep storage order)
  const perm = Array.from({ length: cols }, (_v, i) => i);
  if (opts.actOrder) perm.sort((a, b) => h0[b * cols + b] - h0[a * cols + a] || a - b);
  const w = new Float64Array(rows * cols);
  const h = new Float64Array(cols * cols);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) w[r * cols + j] = w0[r * cols + perm[j]];
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) h[i * cols + j] = h0[perm[i] * cols + perm[j]];
  const u = upperCholeskyOfInverse(h, cols);

  // grids[r * groups + storage group]; static (act-order) grids come from the original weights
  const grids: GroupGrid[] = new Array(rows * groups);
  if (opts.actOrder) for (let r = 0; r < rows; r++) for (let s = 0; s < groups; s++) grids[r * groups + s] = minMaxGrid(spec, w0, r * cols + s * g);
  const q = new Int32Array(rows * cols);

  for (let i1 = 0; i1 < cols; i1 += block) {
    const i2 = Math.min(i1 + block, cols);
    const width = i2 - i1;
    const err = new Float64Array(rows * width);
    for (let i = i1; i < i2; i++) {
      if (!opts.actOrder && i % g === 0) for (let r = 0; r < rows; r++) grids[r * groups + i / g] = minMaxGrid(spec, w, r * cols + i);
      const d = u[i * cols + i];
      const group = Math.floor(perm[i] / g);
      for (let r = 0; r < rows; r++) {
        const grid = grids[r * groups + group];
        const x = w[r * cols + i];
        const qi = quantizeOnGrid(grid, x);
        q[r * cols + perm[i]] = qi;
        const e = (x - dequantizeOnGrid(grid, qi)) / d;
        err[r * width + (i - i1)] = e;
        const row = r * cols;
        for (let j = i + 1; j < i2; j++) w[row + j] -= e * u[i * cols + j];
      }
    }
    // the deferred update of the columns after the block
    if (i2 < cols)
      for (let r = 0; r < rows; r++) {
        const row = r * cols;
        for (let k = 0; k < width; k++) {
          const e = err[r * width + k];
          if (e === 0) continue;
          const urow = (i1 + k) * cols;
          for (let j = i2; j < cols; j++) w[row + j] -= e * u[urow + j];
        }
      }
  }
  return { rows, cols, spec, q, grids };
}
