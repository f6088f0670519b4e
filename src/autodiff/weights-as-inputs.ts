/**
 * Weights turned into graph inputs, and back: training feeds its parameters as inputs each step (so one graph serves
 * every step while the values change), then writes the trained values back into a weight store.
 * @module
 */
import { InputError } from '../errors.js';
import { Graph } from '../ir/graph.js';
import { makeNode, withInputs, type Node } from '../ir/node.js';
import { decodeWeight, WeightStore, type WeightEntry } from '../ir/weights.js';
import { Tensor } from '../runtime/cpu/tensor.js';
import { findWeightEntry } from './gradient.js';

/** Result of {@link weightsToInputs}. */
export interface WeightsAsInputs {
  /** The graph with each named weight replaced by an input of the same name, dtype and shape (appended to the inputs). */
  readonly graph: Graph;
  /** The current (decoded) value of each of those weights, by name: what to feed the new inputs. */
  readonly values: Record<string, Tensor>;
}

/** Rebuilds everything the graph's outputs reach with `replace` applied to leaves. */
function substitute(graph: Graph, replace: ReadonlyMap<Node, Node>, extraInputs: readonly Node[], weights: WeightStore): Graph {
  const map = new Map<Node, Node>();
  for (const n of graph.nodes()) map.set(n, replace.get(n) ?? withInputs(n, n.inputs.map((x) => map.get(x)!)));
  return new Graph([...graph.inputs, ...extraInputs], graph.outputs.map((o) => ({ name: o.name, node: map.get(o.node)! })), weights, graph.meta);
}

/** The weight entry a name refers to (its name, or failing that its id). */
function findWeight(graph: Graph, name: string): WeightEntry {
  const e = findWeightEntry(graph, name);
  if (!e) throw new InputError(`weights-as-inputs: the graph has no weight '${name}'`);
  return e;
}

/**
 * The graph with the named weights (by name or id) read from new inputs of those names, and their current values
 * (encoded weights decoded: training an encoded weight this way is straight-through training of its decoded values).
 */
export function weightsToInputs(graph: Graph, names: readonly string[]): WeightsAsInputs {
  const replace = new Map<Node, Node>();
  const inputs: Node[] = [];
  const values: Record<string, Tensor> = {};
  const taken = new Set(graph.inputs.map((i) => i.attrs.name));
  for (const name of names) {
    const e = findWeight(graph, name);
    if (e.dtype !== 'f32') throw new InputError(`weights-as-inputs: weight '${name}' is ${e.dtype}; only f32 weights can become inputs`);
    if (taken.has(name)) throw new InputError(`weights-as-inputs: the graph already has an input named '${name}'`);
    taken.add(name);
    const w = makeNode('weight', [], { id: e.id, name: e.name, dtype: e.dtype, shape: [...e.shape] });
    const input = makeNode('input', [], { name, dtype: e.dtype, shape: [...e.shape] });
    replace.set(w, input);
    inputs.push(input);
    values[name] = new Tensor('f32', e.shape, Float32Array.from(decodeWeight(e)));
  }
  return { graph: substitute(graph, replace, inputs, graph.weights), values };
}

/**
 * `graph` with the named weights (by name or id) replaced by dense f32 weights holding `values` (same names and
 * shapes): how trained parameters go back into a model.
 */
export function withWeightValues(graph: Graph, values: Readonly<Record<string, Tensor>>): Graph {
  const replace = new Map<Node, Node>();
  const added: WeightEntry[] = [];
  for (const [name, t] of Object.entries(values)) {
    const e = findWeight(graph, name);
    if (t.dtype !== 'f32' || t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i]))
      throw new InputError(`withWeightValues: '${name}' is f32[${e.shape}], got ${t.dtype}[${t.shape}]`);
    const entry = WeightStore.entry(e.name, 'f32', e.shape, { values: Float32Array.from(t.data as Float32Array) });
    added.push(entry);
    replace.set(makeNode('weight', [], { id: e.id, name: e.name, dtype: e.dtype, shape: [...e.shape] }), makeNode('weight', [], { id: entry.id, name: entry.name, dtype: 'f32', shape: [...e.shape] }));
  }
  const kept = graph.weights.all().filter((e) => ![...replace.keys()].some((n) => n.attrs.id === e.id));
  return substitute(graph, replace, [], new WeightStore([...kept, ...added]));
}
