/**
 * The Adam optimizer (Kingma & Ba, with bias correction), and AdamW's decoupled weight decay as an option, updating
 * float32 parameters in place from their gradients.
 * @module
 */
import { InputError } from '../errors.js';

/** Hyper-parameters of {@link Adam}. */
export interface AdamOptions {
  /** Learning rate (default 1e-3). */
  readonly lr?: number;
  /** Decay of the first-moment estimate (default 0.9). */
  readonly beta1?: number;
  /** Decay of the second-moment estimate (default 0.999). */
  readonly beta2?: number;
  /** Added to the root of the second moment (default 1e-8). */
  readonly eps?: number;
  /** Decoupled weight decay (AdamW): each step multiplies a parameter by `1 - lr·weightDecay` (default 0). */
  readonly weightDecay?: number;
}

/** Adam state for a set of named parameters; {@link Adam.step} updates them in place. */
export class Adam {
  /** Learning rate; may be changed between steps (schedules). */
  lr: number;
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly eps: number;
  private readonly weightDecay: number;
  private readonly moments = new Map<string, { m: Float64Array; v: Float64Array }>();
  private t = 0;

  constructor(opts: AdamOptions = {}) {
    this.lr = opts.lr ?? 1e-3;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
    const check = (name: string, v: number, ok: boolean): void => {
      if (!Number.isFinite(v) || !ok) throw new InputError(`Adam: ${name} = ${v} is out of range`);
    };
    check('lr', this.lr, this.lr > 0);
    check('beta1', this.beta1, this.beta1 >= 0 && this.beta1 < 1);
    check('beta2', this.beta2, this.beta2 >= 0 && this.beta2 < 1);
    check('eps', this.eps, this.eps > 0);
    check('weightDecay', this.weightDecay, this.weightDecay >= 0);
  }

  /** Steps taken so far. */
  get steps(): number {
    return this.t;
  }

  /**
   * One update of every parameter in `params` from its gradient in `grads` (same names and lengths). A parameter
   * seen for the first time starts with zero moments.
   */
  step(params: Readonly<Record<string, Float32Array>>, grads: Readonly<Record<string, ArrayLike<number>>>): void {
    for (const [name, p] of Object.entries(params)) {
      const g = grads[name];
      if (!g || g.length !== p.length) throw new InputError(`Adam: parameter '${name}' has ${p.length} values, its gradient ${g ? g.length : 'is missing'}`);
    }
    this.t++;
    const c1 = 1 - this.beta1 ** this.t;
    const c2 = 1 - this.beta2 ** this.t;
    for (const [name, p] of Object.entries(params)) {
      const g = grads[name];
      let st = this.moments.get(name);
      if (!st) this.moments.set(name, (st = { m: new Float64Array(p.length), v: new Float64Array(p.length) }));
      const { m, v } = st;
      const decay = 1 - this.lr * this.weightDecay;
      for (let i = 0; i < p.length; i++) {
        m[i] = this.beta1 * m[i] + (1 - this.beta1) * g[i];
        v[i] = this.beta2 * v[i] + (1 - this.beta2) * g[i] * g[i];
        p[i] = p[i] * decay - (this.lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + this.eps);
      }
    }
  }
}
