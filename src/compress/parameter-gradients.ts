/**
 * Gradients of a loss with respect to chosen weights, on the CPU reference backend, for gradient-based saliencies
 * and masked fine-tuning: the weights become graph inputs ({@link weightsToInputs}), the reverse-mode gradient graph
 * ({@link gradientGraph}) is built once, and each call runs it on one batch at given weight values, so saliencies can
 * evaluate gradients at perturbed weights (GraSP) and fine-tuning at updated ones.
 *
 * {@link nextTokenLossGraph} and {@link nextTokenBatches} give the loss of a causal LM: the mean next-token
 * cross-entropy of a token window, teacher-forced from position 0.
 * @module
 */
import { gradientGraph, gradientName } from '../autodiff/gradient.js';
import { withCrossEntropyLoss } from '../autodiff/losses.js';
import { weightsToInputs } from '../autodiff/weights-as-inputs.js';
import { InputError } from '../errors.js';
import type { Graph } from '../ir/graph.js';
import { runGraph } from '../runtime/cpu/interpreter.js';
import { Tensor } from '../runtime/cpu/tensor.js';
import { windowInputs } from './capture.js';

/** One batch: the loss graph's inputs (not the parameters). */
export type Batch = Readonly<Record<string, Tensor>>;

/** The loss and the gradient of every parameter on one batch. */
export interface BatchGradient {
  /** The loss (summed, for a non-scalar loss). */
  readonly loss: number;
  /** `∂loss/∂param`, by parameter name. */
  readonly grads: Readonly<Record<string, Float32Array>>;
}

/** Evaluates the gradient of a loss output with respect to named weights at any weight values. */
export class ParameterGradients {
  /** The gradient graph (the parameters are its inputs). */
  readonly graph: Graph;
  /** The parameters' values in the source graph, by name (fresh copies). */
  readonly initial: Readonly<Record<string, Float32Array>>;
  /** The parameter names, in the order given. */
  readonly params: readonly string[];
  private readonly loss: string;

  /** @throws InputError when a name is no f32 weight of `graph` or `loss` is no float output. */
  constructor(graph: Graph, opts: { loss: string; params: readonly string[] }) {
    if (!opts.params.length) throw new InputError('gradients: no parameters named');
    const asInputs = weightsToInputs(graph, opts.params);
    this.graph = gradientGraph(asInputs.graph, { wrt: opts.params, loss: opts.loss });
    const init: Record<string, Float32Array> = {};
    for (const [k, t] of Object.entries(asInputs.values)) init[k] = Float32Array.from(t.data as Float32Array);
    this.initial = init;
    this.params = [...opts.params];
    this.loss = opts.loss;
  }

  /** The loss and gradients on `batch` with the parameters at `values` (default: {@link ParameterGradients.initial}). */
  evaluate(batch: Batch, values: Readonly<Record<string, Float32Array>> = this.initial): BatchGradient {
    const feeds: Record<string, Tensor> = { ...batch };
    for (const name of this.params) {
      const v = values[name];
      if (!v || v.length !== this.initial[name].length) throw new InputError(`gradients: no values (or the wrong count) for parameter '${name}'`);
      if (name in batch) throw new InputError(`gradients: batch input '${name}' is a parameter`);
      feeds[name] = new Tensor('f32', this.graph.inputs.find((i) => i.attrs.name === name)!.shape as number[], v);
    }
    const out = runGraph(this.graph, feeds);
    const grads: Record<string, Float32Array> = {};
    for (const name of this.params) {
      const g = out[gradientName(name)].data;
      grads[name] = g instanceof Float32Array ? g : Float32Array.from(g as ArrayLike<number>);
    }
    let loss = 0;
    for (const v of out[this.loss].numbers) loss += v;
    return { loss, grads };
  }
}

/**
 * A causal LM graph (logits at every position, as `build({ lastTokenLogitsOnly: false })` makes it) with a `targets`
 * input and a `loss` output: the mean next-token cross-entropy.
 */
export function nextTokenLossGraph(graph: Graph): Graph {
  return withCrossEntropyLoss(graph, { logits: 'logits', targets: 'targets', loss: 'loss' });
}

/**
 * The batches of {@link nextTokenLossGraph} for token windows (each from position 0, BOS first): the window without
 * its last token as input, the window without its first as targets. Windows shorter than 2 tokens are dropped.
 */
export function nextTokenBatches(graph: Graph, windows: readonly (readonly number[])[]): Batch[] {
  return windows
    .filter((w) => w.length >= 2)
    .map((w) => ({ ...windowInputs(graph, w.slice(0, -1)), targets: Tensor.from('i32', [1, w.length - 1], w.slice(1)) }));
}
