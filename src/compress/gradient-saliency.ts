/**
 * The gradient statistics SNIP, GraSP and Fisher saliencies need, accumulated over calibration batches with
 * {@link ParameterGradients} (reverse-mode autodiff on the CPU reference backend):
 *
 * - `snip`: the mean gradient `g = mean_b ∂L_b/∂W`;
 * - `fisher`: the mean squared gradient `F = mean_b (∂L_b/∂W)²` (the diagonal empirical Fisher);
 * - `grasp`: the Hessian-gradient product `H g`, with `H` the Hessian of the mean loss over the same batches, by a
 *   **central finite difference of gradients** along `g` (one exact gradient pass per batch for `g`, then two more):
 *   `H g ≈ (∇L(W + ε g) − ∇L(W − ε g)) / 2ε`, where `ε = step · ‖W‖ / ‖g‖` (norms over every parameter together,
 *   `step` = 0.01 by default), so the weights move by 1% of their norm. The error is O(ε²) (exact for a quadratic
 *   loss) plus float32 rounding of the gradients divided by 2ε.
 * @module
 */
import { InputError } from '../errors.js';
import type { Batch, ParameterGradients } from './parameter-gradients.js';
import { fisherSaliency, graspSaliency, snipSaliency, type SaliencyMethod } from './saliency.js';

/** Options of {@link gradientSaliencies}. */
export interface GradientSaliencyOptions {
  /** GraSP: the finite-difference step as a fraction of the parameters' norm (default 0.01). */
  readonly graspStep?: number;
  /** Progress lines. */
  readonly onProgress?: (line: string) => void;
}

type Values = Record<string, Float64Array>;

function zeros(pg: ParameterGradients): Values {
  const out: Values = {};
  for (const name of pg.params) out[name] = new Float64Array(pg.initial[name].length);
  return out;
}

/** The mean gradient over `batches` at `values`, and optionally the mean squared gradient. */
function meanGradient(pg: ParameterGradients, batches: readonly Batch[], values: Readonly<Record<string, Float32Array>>, squares: boolean, label: string, progress: (l: string) => void): { mean: Values; meanSquare: Values; loss: number } {
  const mean = zeros(pg);
  const meanSquare = zeros(pg);
  let loss = 0;
  batches.forEach((b, i) => {
    const r = pg.evaluate(b, values);
    loss += r.loss / batches.length;
    for (const name of pg.params) {
      const g = r.grads[name];
      const m = mean[name];
      const s = meanSquare[name];
      for (let j = 0; j < g.length; j++) {
        m[j] += g[j] / batches.length;
        if (squares) s[j] += (g[j] * g[j]) / batches.length;
      }
    }
    progress(`${label}: batch ${i + 1}/${batches.length}, loss ${r.loss.toFixed(4)}`);
  });
  return { mean, meanSquare, loss };
}

/**
 * The Hessian of the mean loss over `batches` times the mean gradient, `H g`, by the central difference in the module
 * comment; returns `g` too.
 * @throws InputError when the gradient is zero (there is no direction to differentiate along) or `step` is not positive.
 */
export function hessianGradientProduct(pg: ParameterGradients, batches: readonly Batch[], opts: GradientSaliencyOptions = {}): { grad: Values; hessianGrad: Values } {
  const step = opts.graspStep ?? 0.01;
  if (!(step > 0)) throw new InputError(`grasp: the finite-difference step must be positive, got ${step}`);
  const progress = opts.onProgress ?? ((): void => {});
  const g = meanGradient(pg, batches, pg.initial, false, 'grasp: gradient', progress).mean;
  let [gg, ww] = [0, 0];
  for (const name of pg.params) {
    for (const v of g[name]) gg += v * v;
    for (const v of pg.initial[name]) ww += v * v;
  }
  if (!(gg > 0)) throw new InputError('grasp: the calibration loss has a zero gradient; there is no Hessian-gradient product to take');
  const eps = (step * Math.sqrt(ww)) / Math.sqrt(gg);
  const moved = (sign: number): Record<string, Float32Array> => {
    const out: Record<string, Float32Array> = {};
    for (const name of pg.params) out[name] = Float32Array.from(pg.initial[name], (v, i) => v + sign * eps * g[name][i]);
    return out;
  };
  const plus = meanGradient(pg, batches, moved(1), false, 'grasp: gradient at W + εg', progress).mean;
  const minus = meanGradient(pg, batches, moved(-1), false, 'grasp: gradient at W − εg', progress).mean;
  const hg = zeros(pg);
  for (const name of pg.params) for (let i = 0; i < hg[name].length; i++) hg[name][i] = (plus[name][i] - minus[name][i]) / (2 * eps);
  return { grad: g, hessianGrad: hg };
}

/**
 * SNIP, GraSP or Fisher scores (see `saliency.ts`) of every parameter of `pg` from the calibration `batches`, by
 * parameter name.
 * @throws InputError for no batches or a method that is not gradient-based.
 */
export function gradientSaliencies(pg: ParameterGradients, batches: readonly Batch[], method: SaliencyMethod, opts: GradientSaliencyOptions = {}): Record<string, Float64Array> {
  if (!batches.length) throw new InputError(`${method}: no calibration batches`);
  const progress = opts.onProgress ?? ((): void => {});
  const out: Record<string, Float64Array> = {};
  if (method === 'grasp') {
    const { hessianGrad } = hessianGradientProduct(pg, batches, opts);
    for (const name of pg.params) out[name] = graspSaliency(pg.initial[name], hessianGrad[name]);
    return out;
  }
  if (method !== 'snip' && method !== 'fisher') throw new InputError(`${method} is not a gradient-based saliency`);
  const { mean, meanSquare } = meanGradient(pg, batches, pg.initial, method === 'fisher', method, progress);
  for (const name of pg.params) out[name] = method === 'snip' ? snipSaliency(pg.initial[name], mean[name]) : fisherSaliency(pg.initial[name], meanSquare[name]);
  return out;
}
