/**
 * A graph: named inputs, named outputs, and the weight store its `weight` nodes refer to. Graphs are values: passes
 * take one and return a new one.
 * @module
 */
import { InputError } from '../errors.js';
import { isOp, type NodeOf } from './attrs.js';
import type { Node } from './node.js';
import type { WeightStore } from './weights.js';

/** A named graph output. */
export interface GraphOutput {
  /** Output name. */
  readonly name: string;
  /** The node computing it. */
  readonly node: Node;
}

/** Free-form facts about where a graph came from (model family, config), carried through passes. */
export type GraphMeta = Readonly<Record<string, unknown>>;

/** An immutable computation graph. */
export class Graph {
  /** Graph inputs (`input` nodes), in calling order. */
  readonly inputs: readonly NodeOf<'input'>[];
  /** Graph outputs, in order. */
  readonly outputs: readonly GraphOutput[];
  /** The weights `weight` nodes refer to. */
  readonly weights: WeightStore;
  /** Provenance and model config. */
  readonly meta: GraphMeta;
  private topoCache: readonly Node[] | undefined;

  constructor(inputs: readonly Node[], outputs: readonly GraphOutput[], weights: WeightStore, meta: GraphMeta = {}) {
    const names = new Set<string>();
    for (const o of outputs) {
      if (names.has(o.name)) throw new InputError(`duplicate graph output name '${o.name}'`);
      names.add(o.name);
    }
    this.inputs = Object.freeze(
      inputs.map((i) => {
        if (!isOp(i, 'input')) throw new InputError(`graph input ${i.id} is a '${i.op}' node, not 'input'`);
        return i;
      }),
    );
    this.outputs = Object.freeze(outputs.map((o) => Object.freeze({ ...o })));
    this.weights = weights;
    this.meta = meta;
    Object.freeze(this.meta);
  }

  /** Output nodes in order. */
  get outputNodes(): Node[] {
    return this.outputs.map((o) => o.node);
  }

  /** Every node reachable from the outputs, operands before users (deterministic: depth-first, operand order). */
  nodes(): readonly Node[] {
    if (!this.topoCache) this.topoCache = Object.freeze(topoOrder(this.outputNodes));
    return this.topoCache;
  }

  /** The input node with this name; throws {@link InputError} when absent. */
  input(name: string): Node {
    const n = this.inputs.find((i) => i.attrs.name === name);
    if (!n) throw new InputError(`graph has no input '${name}' (inputs: ${this.inputs.map((i) => i.attrs.name).join(', ')})`);
    return n;
  }

  /** The output node with this name; throws {@link InputError} when absent. */
  output(name: string): Node {
    const o = this.outputs.find((x) => x.name === name);
    if (!o) throw new InputError(`graph has no output '${name}'`);
    return o.node;
  }

  /** Same inputs, weights and meta with new outputs (the usual result of a rewrite). */
  withOutputs(outputs: readonly GraphOutput[], weights: WeightStore = this.weights): Graph {
    return new Graph(this.inputs, outputs, weights, this.meta);
  }

  /** Number of nodes reachable from the outputs. */
  get size(): number {
    return this.nodes().length;
  }

  /** Map from each node to the nodes that use it (within this graph). */
  users(): Map<Node, Node[]> {
    const m = new Map<Node, Node[]>();
    for (const n of this.nodes()) for (const x of n.inputs) {
      let l = m.get(x);
      if (!l) m.set(x, (l = []));
      if (!l.includes(n)) l.push(n);
    }
    return m;
  }
}

/** Topological order (operands first) of everything reachable from `roots`; iterative, so deep graphs are fine. */
export function topoOrder(roots: readonly Node[]): Node[] {
  const out: Node[] = [];
  const state = new Map<Node, 1 | 2>();
  for (const root of roots) {
    if (state.has(root)) continue;
    const stack: [Node, number][] = [[root, 0]];
    state.set(root, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [n, i] = top;
      if (i < n.inputs.length) {
        top[1]++;
        const c = n.inputs[i];
        if (!state.has(c)) {
          state.set(c, 1);
          stack.push([c, 0]);
        }
      } else {
        stack.pop();
        state.set(n, 2);
        out.push(n);
      }
    }
  }
  return out;
}
