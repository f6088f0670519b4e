/**
 * Disjoint unions of random graph cases: k independent {@link GraphCase}s as one graph, so a differential test can
 * compile, upload and run k cases with one engine, one session and one submit.
 *
 * Case `i`'s inputs and outputs are renamed `c<i>_<name>`; its symbolic dims are renamed `<sym>_c<i>` (the cases bind
 * `batch`, `seq`, `past` to different values), except for the first symbolic case, which keeps `batch`, `seq` and
 * `past` so that the names the compiler plans for (`seq`) are still exercised. Weights keep their ids (globally
 * unique already). Nodes are rebuilt through the interning table, so equal constants of different cases are shared,
 * as they would be in one model.
 * @module
 */
import { dimAdd, dimMul, sym, SymDim, type Dim } from '../../src/ir/dim.js';
import { Graph, topoOrder } from '../../src/ir/graph.js';
import { makeNode, type AttrValue, type Attrs, type Node } from '../../src/ir/node.js';
import { WeightStore } from '../../src/ir/weights.js';
import type { Tensor } from '../../src/runtime/cpu/tensor.js';
import type { GraphCase } from './random-graph.js';

/** k cases as one graph. */
export interface MergedCases {
  /** The union graph. */
  graph: Graph;
  /** Its inputs (the cases' inputs under their new names). */
  inputs: Record<string, Tensor>;
  /** Values of every (renamed) symbolic dim. */
  bindings: Record<string, number>;
  /** For each case (in the order given): its output names in the union, by the case's own output name. */
  outputNames: Record<string, string>[];
}

/** `d` with its symbols renamed by `rename` (a symbol it does not map keeps its name). */
export function renameDim(d: Dim, rename: (s: string) => string): Dim {
  if (typeof d === 'number') return d;
  let out: Dim = 0;
  for (const [k, c] of d.terms) {
    let term: Dim = c;
    if (k) for (const s of k.split('*')) term = dimMul(term, sym(rename(s)));
    out = dimAdd(out, term);
  }
  return out;
}

function renameAttr(v: AttrValue, rename: (s: string) => string): AttrValue {
  if (v instanceof SymDim) return renameDim(v, rename);
  if (Array.isArray(v)) return v.map((x) => renameAttr(x, rename));
  if (v !== null && typeof v === 'object') {
    const o = v as { readonly [key: string]: AttrValue };
    return Object.fromEntries(Object.keys(o).map((k) => [k, renameAttr(o[k], rename)]));
  }
  return v;
}

/** Rebuilds `g`'s nodes with renamed inputs and symbols; returns the map from old nodes to new ones. */
function rebuild(g: Graph, inputName: (s: string) => string, rename: (s: string) => string): Map<Node, Node> {
  const map = new Map<Node, Node>();
  for (const n of topoOrder([...g.inputs, ...g.outputNodes])) {
    let attrs = renameAttr(n.attrs as AttrValue, rename) as Attrs;
    if (n.op === 'input') attrs = { ...attrs, name: inputName(String(n.attrs.name)) };
    map.set(n, makeNode(n.op, n.inputs.map((x) => map.get(x)!), attrs));
  }
  return map;
}

/** The disjoint union of `cases` (see the module comment for the names). */
export function mergeGraphCases(cases: readonly GraphCase[]): MergedCases {
  const inputs: Node[] = [];
  const outputs: { name: string; node: Node }[] = [];
  const tensors: Record<string, Tensor> = {};
  const bindings: Record<string, number> = {};
  const outputNames: Record<string, string>[] = [];
  const weights = new WeightStore();
  let keptSymbols = false;
  cases.forEach((c, i) => {
    const symbolic = Object.keys(c.bindings).length > 0;
    const keep = symbolic && !keptSymbols;
    if (keep) keptSymbols = true;
    const rename = keep ? (s: string) => s : (s: string) => `${s}_c${i}`;
    const prefix = (s: string) => `c${i}_${s}`;
    const map = rebuild(c.graph, prefix, rename);
    for (const x of c.graph.inputs) inputs.push(map.get(x)!);
    for (const [name, t] of Object.entries(c.inputs)) tensors[prefix(name)] = t;
    for (const [s, v] of Object.entries(c.bindings)) bindings[rename(s)] = v;
    const names: Record<string, string> = {};
    for (const o of c.graph.outputs) {
      names[o.name] = prefix(o.name);
      outputs.push({ name: prefix(o.name), node: map.get(o.node)! });
    }
    outputNames.push(names);
    for (const e of c.graph.weights.all()) weights.add(e);
  });
  return { graph: new Graph(inputs, outputs, weights), inputs: tensors, bindings, outputNames };
}
