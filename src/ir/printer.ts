/**
 * The readable text form of the IR: one line per node, `%N = op(%a, %b) {attrs} : dtype[shape]`, numbered in
 * topological order. Used by `inspect`, `--print-ir-after`, and error messages.
 * @module
 */
import { SymDim, shapeToString } from './dim.js';
import type { Graph } from './graph.js';
import { topoOrder } from './graph.js';
import { isOp } from './attrs.js';
import type { AttrValue, Node } from './node.js';

function attrText(v: AttrValue): string {
  if (v instanceof SymDim) return v.text;
  if (Array.isArray(v)) {
    const items = v.length > 8 ? [...v.slice(0, 8).map(attrText), `…(${v.length})`] : v.map(attrText);
    return `[${items.join(',')}]`;
  }
  if (v !== null && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${k}=${attrText(x)}`).join(', ')}}`;
  if (typeof v === 'string') return JSON.stringify(v);
  return String(v);
}

/** Attributes shown on a node's line (leaf attributes that repeat the type are left out). */
function shownAttrs(n: Node): [string, AttrValue][] {
  const skip = n.op === 'input' || n.op === 'weight' || n.op === 'constant' ? new Set(['name', 'dtype', 'shape', 'id', 'values']) : new Set<string>();
  return Object.entries(n.attrs).filter(([k]) => !skip.has(k));
}

/** A node's line, with operands named by `name` (default `%id`). */
export function printNode(n: Node, name: (x: Node) => string = (x) => `%${x.id}`): string {
  let head: string;
  if (isOp(n, 'input')) head = `input ${JSON.stringify(n.attrs.name)}`;
  else if (isOp(n, 'weight')) head = `weight @${JSON.stringify(n.attrs.name)}`;
  else if (isOp(n, 'constant')) {
    const vals = n.attrs.values;
    head = `constant ${vals.length === 1 ? String(vals[0]) : `[${vals.slice(0, 6).join(', ')}${vals.length > 6 ? ', …' : ''}]`}`;
  } else head = `${n.op}(${n.inputs.map(name).join(', ')})`;
  const attrs = shownAttrs(n);
  const attrStr = attrs.length ? ` {${attrs.map(([k, v]) => `${k}=${attrText(v)}`).join(', ')}}` : '';
  return `${name(n)} = ${head}${attrStr} : ${n.dtype}${shapeToString(n.shape)}`;
}

/**
 * Local names for the nodes of a graph: `%0`, `%1`, … in topological order.
 * @internal
 */
export function localNames(nodes: readonly Node[]): (x: Node) => string {
  const idx = new Map<Node, number>();
  nodes.forEach((n, i) => idx.set(n, i));
  return (x) => (idx.has(x) ? `%${idx.get(x)}` : `%?${x.id}`);
}

/** The whole graph as text. */
export function printGraph(g: Graph, title = 'graph'): string {
  const nodes = g.nodes();
  const name = localNames(nodes);
  const sig = g.inputs.map((i) => `${i.attrs.name}: ${i.dtype}${shapeToString(i.shape)}`).join(', ');
  const lines = [`${title}(${sig}) {`];
  for (const n of nodes) lines.push(`  ${printNode(n, name)}`);
  lines.push(`  return ${g.outputs.map((o) => `${o.name}=${name(o.node)}`).join(', ')}`);
  lines.push('}');
  return lines.join('\n');
}

/**
 * A node and its operands up to `depth` levels, as text (for error messages).
 * @internal
 */
export function printNodeContext(n: Node, depth = 1): string {
  const roots = [n];
  const nodes = topoOrder(roots).filter((x) => distance(n, x) <= depth);
  const name = localNames(nodes);
  return nodes.map((x) => `  ${printNode(x, name)}`).join('\n');
}

function distance(from: Node, to: Node): number {
  let frontier = [from];
  for (let d = 0; frontier.length; d++) {
    if (frontier.includes(to)) return d;
    frontier = frontier.flatMap((x) => x.inputs as Node[]);
    if (d > 8) break;
  }
  return Infinity;
}
