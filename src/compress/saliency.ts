/**
 * Saliency scores for pruning: one score per weight, higher meaning more important (kept first by
 * {@link selectMasks}). Weights are stored `[N, K]` (rows = output channels), row-major.
 *
 * | method | score of `W[i][j]` | needs |
 * | --- | --- | --- |
 * | magnitude | `\|W\|` | the weights |
 * | Wanda (Sun et al., 2023) | `\|W[i][j]\| · ‖X[:, j]‖₂` | the L2 norm of input channel j over every calibration position |
 * | SNIP (Lee et al., 2019) | `\|W ⊙ g\|` | `g = ∂L/∂W`, the mean over calibration batches |
 * | GraSP (Wang et al., 2020) | `W ⊙ (H g)` | `H g`, the Hessian times the mean gradient ({@link gradientSaliencies}) |
 * | Fisher (OBD with the empirical Fisher) | `½ · F ⊙ W²`, `F = mean_b g_b²` | per-batch gradients |
 *
 * GraSP scores `S = −W ⊙ (H g)` and removes the weights of **largest** `S` (those whose removal hurts the gradient
 * flow least); as a keep-score that is `W ⊙ (H g)`, which is what is returned here. The Fisher score is the loss
 * increase that the diagonal empirical Fisher (the mean of squared per-batch gradients) predicts for setting the
 * weight to zero.
 * @module
 */
import { InputError } from '../errors.js';
import type { InputStatistics } from './capture.js';

/** A saliency method. */
export type SaliencyMethod = 'magnitude' | 'wanda' | 'snip' | 'grasp' | 'fisher';

/** The methods, for help texts. */
export const SALIENCY_METHODS: readonly SaliencyMethod[] = ['magnitude', 'wanda', 'snip', 'grasp', 'fisher'];

/** Whether a method needs gradients of the calibration loss. */
export function needsGradients(m: SaliencyMethod): boolean {
  return m === 'snip' || m === 'grasp' || m === 'fisher';
}

/** `|W|`. */
export function magnitudeSaliency(w: ArrayLike<number>): Float64Array {
  return Float64Array.from(w, Math.abs);
}

/** The L2 norm of each input channel over every calibration position: `sqrt(diag(XᵀX))`. */
export function inputChannelNorms(stats: InputStatistics): Float64Array {
  const k = stats.channels;
  return Float64Array.from({ length: k }, (_v, j) => Math.sqrt(Math.max(0, stats.hessian[j * k + j])));
}

/** Wanda: `|W[i][j]| · norms[j]` for `W` `[rows, cols]`. */
export function wandaSaliency(w: ArrayLike<number>, rows: number, cols: number, norms: ArrayLike<number>): Float64Array {
  if (w.length !== rows * cols || norms.length !== cols) throw new InputError(`wanda: ${w.length} weights and ${norms.length} input norms for [${rows}, ${cols}]`);
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = Math.abs(w[r * cols + c]) * norms[c];
  return out;
}

function sameLength(what: string, a: ArrayLike<number>, b: ArrayLike<number>): void {
  if (a.length !== b.length) throw new InputError(`${what}: ${a.length} weights, ${b.length} gradient values`);
}

/** SNIP: `|W ⊙ g|`. */
export function snipSaliency(w: ArrayLike<number>, grad: ArrayLike<number>): Float64Array {
  sameLength('snip', w, grad);
  return Float64Array.from({ length: w.length }, (_v, i) => Math.abs(w[i] * grad[i]));
}

/** GraSP's keep-score `W ⊙ (H g)` (see the module comment for the sign). */
export function graspSaliency(w: ArrayLike<number>, hessianGrad: ArrayLike<number>): Float64Array {
  sameLength('grasp', w, hessianGrad);
  return Float64Array.from({ length: w.length }, (_v, i) => w[i] * hessianGrad[i]);
}

/** Fisher: `½ · F ⊙ W²` with `F` the mean squared per-batch gradient. */
export function fisherSaliency(w: ArrayLike<number>, fisher: ArrayLike<number>): Float64Array {
  sameLength('fisher', w, fisher);
  return Float64Array.from({ length: w.length }, (_v, i) => 0.5 * fisher[i] * w[i] * w[i]);
}
