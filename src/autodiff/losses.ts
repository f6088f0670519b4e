/**
 * Loss functions written with IR ops (so {@link gradientGraph} differentiates them like any other graph), and a helper
 * that adds a cross-entropy loss to a language model's graph.
 * @module
 */
import { InputError } from '../errors.js';
import { GraphBuilder } from '../ir/builder.js';
import { isFloat } from '../ir/dtype.js';
import { Graph } from '../ir/graph.js';
import { makeNode, type Node } from '../ir/node.js';

const b = new GraphBuilder();

/** `log(softmax(x))` along the last axis, as `x - max - log(Σ exp(x - max))`. */
export function logSoftmax(x: Node): Node {
  const shifted = b.sub(x, b.max(x, [-1], true));
  return b.sub(shifted, b.log(b.sum(b.exp(shifted), [-1], true)));
}

/**
 * Mean cross-entropy of `logits` `[..., V]` (float) against class ids `targets` `[...]` (i32): the mean over positions
 * of `-log softmax(logits)[target]`, a scalar. A target outside `[0, V)` selects no class and adds 0 (an ignored
 * position that still counts in the mean).
 */
export function crossEntropy(logits: Node, targets: Node): Node {
  const lead = logits.shape.slice(0, -1);
  if (!isFloat(logits.dtype) || logits.rank < 1) throw new InputError(`crossEntropy: logits must be a float tensor [..., classes], got ${logits.typeString()}`);
  if (targets.dtype !== 'i32' || targets.rank !== lead.length || targets.shape.some((d, i) => d !== lead[i]))
    throw new InputError(`crossEntropy: targets must be i32 of the logits' leading shape, got ${targets.typeString()} for logits ${logits.typeString()}`);
  const classes = logits.shape[logits.rank - 1];
  const oneHot = b.cast(b.equal(b.reshape(targets, [...lead, 1]), b.range(classes)), logits.dtype);
  const nll = b.neg(b.sum(b.mul(logSoftmax(logits), oneHot), [-1]));
  return nll.rank ? b.mean(nll, nll.shape.map((_d, i) => i)) : nll;
}

/** Options of {@link withCrossEntropyLoss}. */
export interface CrossEntropyLossOptions {
  /** The output holding the logits (default `logits`). */
  readonly logits?: string;
  /** Name of the new i32 input holding the target ids, shaped like the logits without the class axis (default `targets`). */
  readonly targets?: string;
  /** Name of the new scalar output (default `loss`). */
  readonly loss?: string;
}

/** `graph` with a targets input and a mean cross-entropy output over its logits (its other outputs kept). */
export function withCrossEntropyLoss(graph: Graph, opts: CrossEntropyLossOptions = {}): Graph {
  const logits = graph.output(opts.logits ?? 'logits');
  const targetsName = opts.targets ?? 'targets';
  if (graph.inputs.some((i) => i.attrs.name === targetsName)) throw new InputError(`withCrossEntropyLoss: the graph already has an input '${targetsName}'`);
  const targets = makeNode('input', [], { name: targetsName, dtype: 'i32', shape: logits.shape.slice(0, -1) });
  const loss = crossEntropy(logits, targets);
  return new Graph([...graph.inputs, targets], [...graph.outputs, { name: opts.loss ?? 'loss', node: loss }], graph.weights, graph.meta);
}
