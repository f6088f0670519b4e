/**
 * Training on the CPU reference backend: a {@link Trainer} turns the chosen weights of a graph with a loss output into
 * inputs, builds the gradient graph once, and on each {@link Trainer.step} runs it and applies {@link Adam}.
 * @module
 */
import { InputError } from '../errors.js';
import type { DimBindings } from '../ir/dim.js';
import type { Graph } from '../ir/graph.js';
import { runGraph } from '../runtime/cpu/interpreter.js';
import type { Tensor } from '../runtime/cpu/tensor.js';
import { Adam, type AdamOptions } from './adam.js';
import { gradientGraph, gradientName } from './gradient.js';
import { weightsToInputs, withWeightValues } from './weights-as-inputs.js';

/** Options of a {@link Trainer}. */
export interface TrainerOptions {
  /** The output to minimize (a float tensor; a non-scalar one stands for its sum). */
  readonly loss: string;
  /** Weights to train, by name or id (default: every f32 weight of the graph). */
  readonly params?: readonly string[];
  /** Adam's hyper-parameters. */
  readonly adam?: AdamOptions;
}

/** Trains weights of a graph with Adam on the CPU reference backend. */
export class Trainer {
  /** The gradient graph that each step runs: the loss and `grad:<param>` outputs, the parameters as inputs. */
  readonly graph: Graph;
  /** The current parameter values, by name (updated in place by each step). */
  readonly params: Readonly<Record<string, Tensor>>;
  /** The optimizer. */
  readonly optimizer: Adam;
  private readonly source: Graph;
  private readonly loss: string;

  constructor(graph: Graph, opts: TrainerOptions) {
    const names = opts.params ?? graph.weights.all().filter((e) => e.dtype === 'f32').map((e) => e.name);
    if (!names.length) throw new InputError('Trainer: nothing to train (no f32 weights named)');
    const asInputs = weightsToInputs(graph, names);
    this.graph = gradientGraph(asInputs.graph, { wrt: names, loss: opts.loss });
    this.params = asInputs.values;
    this.optimizer = new Adam(opts.adam);
    this.source = graph;
    this.loss = opts.loss;
  }

  /**
   * One step on a batch: runs the gradient graph on `inputs` (the graph's own inputs) and the current parameters,
   * applies Adam, and returns the loss before the update (summed, for a non-scalar loss).
   */
  step(inputs: Readonly<Record<string, Tensor>>, opts: { bindings?: DimBindings } = {}): number {
    for (const k of Object.keys(inputs)) if (k in this.params) throw new InputError(`Trainer: input '${k}' is a trained parameter`);
    const out = runGraph(this.graph, { ...inputs, ...this.params }, { bindings: opts.bindings });
    const values: Record<string, Float32Array> = {};
    const grads: Record<string, ArrayLike<number>> = {};
    for (const [name, t] of Object.entries(this.params)) {
      values[name] = t.data as Float32Array;
      grads[name] = out[gradientName(name)].numbers;
    }
    this.optimizer.step(values, grads);
    let loss = 0;
    for (const v of out[this.loss].numbers) loss += v;
    return loss;
  }

  /** The original graph with the trained values as its (dense f32) weights. */
  trainedGraph(): Graph {
    return withWeightValues(this.source, this.params);
  }
}
