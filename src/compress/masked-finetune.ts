/**
 * Fine-tuning after pruning with the masks held fixed: Adam on the calibration loss, where each step's gradient of a
 * masked weight is multiplied by its mask before the update. A pruned weight starts at zero with a zero gradient, so
 * Adam's moments for it stay zero and so does the weight (it is also re-zeroed after each step, so that nothing can
 * creep in); the kept weights, and any unmasked parameter (norms, embeddings), train freely.
 * @module
 */
import { Adam, type AdamOptions } from '../autodiff/adam.js';
import { InputError } from '../errors.js';
import type { Batch, ParameterGradients } from './parameter-gradients.js';

/** Options of {@link maskedFinetune}. */
export interface MaskedFinetuneOptions {
  /** Steps (one batch each, cycling through the batches in order). */
  readonly steps: number;
  /** Adam's hyper-parameters (default lr 5e-4). */
  readonly adam?: AdamOptions;
  /** Progress lines. */
  readonly onProgress?: (line: string) => void;
  /** Report progress every this many steps (default 10). */
  readonly progressEvery?: number;
}

/** The result of {@link maskedFinetune}. */
export interface MaskedFinetuneResult {
  /** The trained values of every parameter, by name (masked ones zero where their mask is). */
  readonly values: Record<string, Float32Array>;
  /** The loss of each step, before its update. */
  readonly losses: readonly number[];
}

/**
 * Trains every parameter of `pg`, starting from `start` (by name; the pruned values), on `batches` for `opts.steps`
 * steps, keeping each weight of `masks` (1 = kept, by parameter name) at zero where its mask is 0.
 * @throws InputError for no batches, a negative step count, or a mask of the wrong length.
 */
export function maskedFinetune(pg: ParameterGradients, batches: readonly Batch[], start: Readonly<Record<string, Float32Array>>, masks: ReadonlyMap<string, Uint8Array>, opts: MaskedFinetuneOptions): MaskedFinetuneResult {
  if (!(Number.isInteger(opts.steps) && opts.steps >= 0)) throw new InputError(`--finetune must be a non-negative integer, got ${opts.steps}`);
  if (opts.steps > 0 && !batches.length) throw new InputError('finetune: no calibration batches');
  const values: Record<string, Float32Array> = {};
  for (const name of pg.params) values[name] = Float32Array.from(start[name] ?? pg.initial[name]);
  for (const [name, m] of masks) {
    if (!(name in values)) throw new InputError(`finetune: mask for '${name}', which is not a trained parameter`);
    if (m.length !== values[name].length) throw new InputError(`finetune: the mask of '${name}' has ${m.length} entries, the weight ${values[name].length}`);
    const v = values[name];
    for (let i = 0; i < v.length; i++) if (!m[i]) v[i] = 0;
  }
  const adam = new Adam({ lr: 5e-4, ...opts.adam });
  const every = opts.progressEvery ?? 10;
  const losses: number[] = [];
  for (let step = 0; step < opts.steps; step++) {
    const r = pg.evaluate(batches[step % batches.length], values);
    const grads: Record<string, Float32Array> = {};
    for (const name of pg.params) {
      const g = r.grads[name];
      const m = masks.get(name);
      grads[name] = m ? Float32Array.from(g, (x, i) => (m[i] ? x : 0)) : g;
    }
    adam.step(values, grads);
    for (const [name, m] of masks) {
      const v = values[name];
      for (let i = 0; i < v.length; i++) if (!m[i]) v[i] = 0;
    }
    losses.push(r.loss);
    if ((step + 1) % every === 0 || step + 1 === opts.steps) {
      const recent = losses.slice(-every);
      opts.onProgress?.(`finetune: step ${step + 1}/${opts.steps}, mean loss of the last ${recent.length} ${(recent.reduce((a, b) => a + b, 0) / recent.length).toFixed(4)}`);
    }
  }
  return { values, losses };
}
