/**
 * Reverse-mode automatic differentiation as a graph-to-graph transformation: {@link gradientGraph} turns a graph with
 * a float loss output into a graph that computes the loss and its gradient with respect to chosen inputs and weights.
 * The result is an ordinary IR graph (made of the ops the forward graph uses, plus sums, casts and comparisons), so the
 * CPU reference interpreter runs it, and so could any backend that runs the forward graph.
 *
 * The engine walks the nodes between the requested leaves and the loss in reverse topological order, asks each node's
 * rule in {@link VJP_RULES} for its operands' cotangents, and sums the cotangents that reach a node. Only float
 * values on a path from a requested leaf to the loss are differentiated: comparisons, integer arithmetic, casts to
 * integers and `range` are piecewise constant, so no gradient flows through them.
 * @module
 */
import { InputError, ShapeError, UnsupportedOpError } from '../errors.js';
import { weightNode } from '../ir/builder.js';
import { shapeToString } from '../ir/dim.js';
import { isFloat } from '../ir/dtype.js';
import { Graph, type GraphOutput } from '../ir/graph.js';
import { makeNode, type Node } from '../ir/node.js';
import type { WeightEntry } from '../ir/weights.js';
import { VJP_RULES } from './vjp-rules.js';

/** Options of {@link gradientGraph}. */
export interface GradientOptions {
  /** Names of the graph inputs and weights (a weight by its name, or failing that its id) to differentiate with respect to. */
  readonly wrt: readonly string[];
  /** Name of the output to differentiate: a float tensor; a non-scalar loss stands for the sum of its elements. */
  readonly loss: string;
  /**
   * What a gradient with respect to an encoded (quantized, codebook or sparse) weight means. `'error'` (the default)
   * refuses: the decoded values are a step function of anything one could train. `'ste'` (straight-through
   * estimator, for quantization-aware training) gives the gradient with respect to the decoded values, which QAT
   * applies to the latent float weights.
   */
  readonly encodedWeights?: 'error' | 'ste';
  /** Also keep the graph's other outputs, after the loss and the gradients (default false). */
  readonly keepOutputs?: boolean;
}

/** Name of the output holding the gradient with respect to `name` in a {@link gradientGraph}: `grad:<name>`. */
export function gradientName(name: string): string {
  return `grad:${name}`;
}

/** Topological order (operands first) of what `root` reaches without looking below `stop` nodes. */
function orderAbove(root: Node, stop: ReadonlySet<Node>): Node[] {
  const out: Node[] = [];
  const seen = new Set<Node>([root]);
  const stack: [Node, number][] = [[root, 0]];
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [n, i] = top;
    if (i < n.inputs.length && !stop.has(n)) {
      top[1]++;
      const x = n.inputs[i];
      if (!seen.has(x)) {
        seen.add(x);
        stack.push([x, 0]);
      }
    } else {
      stack.pop();
      out.push(n);
    }
  }
  return out;
}

/**
 * Reverse pass from `root` (cotangent `seed`, of `root`'s shape and dtype) to `leaves`: the cotangent of each leaf, or
 * undefined where none reaches it. Leaves are opaque (the pass does not continue into their operands), so a rule may
 * call this on a decomposition of its op with the op's operands as leaves.
 * @internal
 */
export function backprop(root: Node, seed: Node, leaves: readonly Node[]): (Node | undefined)[] {
  const leafSet = new Set(leaves);
  const order = orderAbove(root, leafSet);
  // the float values on a path from a leaf to the root
  const onPath = new Set<Node>();
  for (const n of order) if (leafSet.has(n) || (isFloat(n.dtype) && !leafSet.has(n) && n.inputs.some((x) => onPath.has(x)))) onPath.add(n);
  const grads = new Map<Node, Node>();
  if (onPath.has(root)) grads.set(root, seed);
  for (let i = order.length - 1; i >= 0; i--) {
    const n = order[i];
    const g = grads.get(n);
    if (!g || leafSet.has(n)) continue;
    const rule = VJP_RULES[n.op];
    if (!rule) throw new UnsupportedOpError([n.op], `autodiff has no gradient rule for '${n.op}' (${n.typeString()})${n.op === 'fused' ? '; differentiate the graph before fusion' : ''}`);
    const needs = n.inputs.map((x) => onPath.has(x));
    const operandGrads = rule(n, g, { needs, backprop });
    n.inputs.forEach((x, j) => {
      const gx = operandGrads[j];
      if (!needs[j] || !gx) return;
      if (gx.dtype !== x.dtype || gx.rank !== x.rank || gx.shape.some((d, k) => d !== x.shape[k]))
        throw new ShapeError(n.op, `autodiff: the cotangent of operand ${j} is ${gx.typeString()}, the operand is ${x.typeString()}`);
      const prev = grads.get(x);
      grads.set(x, prev ? makeNode('add', [prev, gx]) : gx);
    });
  }
  return leaves.map((l) => grads.get(l));
}

/**
 * The weight a name refers to: the entry of that name, or failing that the entry of that id.
 * @internal
 */
export function findWeightEntry(graph: Graph, name: string): WeightEntry | undefined {
  const all = graph.weights.all();
  return all.find((e) => e.name === name) ?? all.find((e) => e.id === name);
}

/** The node a `wrt` name refers to: a graph input, or a weight by name or id. */
function resolveLeaf(graph: Graph, name: string, encodedWeights: 'error' | 'ste'): Node {
  const input = graph.inputs.find((i) => i.attrs.name === name);
  const entry = input ? undefined : findWeightEntry(graph, name);
  if (!input && !entry) throw new InputError(`gradient: '${name}' is neither an input nor a weight of the graph`);
  const node = input ?? weightNode(entry!);
  if (!isFloat(node.dtype)) throw new InputError(`gradient: '${name}' is ${node.typeString()}; only float values have gradients`);
  if (entry && entry.encoding.kind !== 'dense' && encodedWeights !== 'ste')
    throw new InputError(`gradient: weight '${name}' is ${entry.encoding.kind}-encoded; its decoded values are a step function, pass encodedWeights: 'ste' for the straight-through gradient`);
  return node;
}

/**
 * A graph computing the loss (output `loss`) and, for each name in `wrt`, its gradient (output
 * {@link gradientName}`(name)`, the shape and dtype of that input or weight). Inputs and weights are the original
 * graph's. A leaf the loss does not depend on gets a zero gradient.
 */
export function gradientGraph(graph: Graph, opts: GradientOptions): Graph {
  const lossNode = graph.output(opts.loss);
  if (!isFloat(lossNode.dtype)) throw new InputError(`gradient: loss '${opts.loss}' is ${lossNode.typeString()}, not a float tensor`);
  if (new Set(opts.wrt).size !== opts.wrt.length) throw new InputError(`gradient: wrt names a value twice (${opts.wrt.join(', ')})`);
  const leaves = opts.wrt.map((name) => resolveLeaf(graph, name, opts.encodedWeights ?? 'error'));
  const one = makeNode('constant', [], { dtype: lossNode.dtype, shape: [], values: [1] });
  const seed = lossNode.rank === 0 ? one : makeNode('expand', [one], { shape: [...lossNode.shape] });
  const grads = backprop(lossNode, seed, leaves);
  const outputs: GraphOutput[] = [{ name: opts.loss, node: lossNode }];
  leaves.forEach((leaf, i) => {
    const zero = (): Node => {
      const z = makeNode('constant', [], { dtype: leaf.dtype, shape: [], values: [0] });
      return leaf.rank === 0 ? z : makeNode('expand', [z], { shape: [...leaf.shape] });
    };
    const g = grads[i] ?? zero();
    if (g.rank !== leaf.rank || g.shape.some((d, k) => d !== leaf.shape[k])) throw new ShapeError('gradient', `gradient of '${opts.wrt[i]}' is ${shapeToString(g.shape)}, not ${shapeToString(leaf.shape)}`);
    outputs.push({ name: gradientName(opts.wrt[i]), node: g });
  });
  if (opts.keepOutputs) for (const o of graph.outputs) if (o.name !== opts.loss) outputs.push(o);
  return new Graph(graph.inputs, outputs, graph.weights, graph.meta);
}
