/**
 * Graph statistics for reports: op histograms and kernel-launch counts.
 * @module
 */
import type { Graph } from './graph.js';
import { isOp } from './attrs.js';
import type { Node } from './node.js';

/** Ops that launch no kernel: leaves, and reshapes (a reshape is a view of its operand's buffer). */
export const NON_LAUNCHING_OPS: ReadonlySet<string> = new Set(['input', 'weight', 'constant', 'reshape']);

/** Whether running `node` takes a kernel launch. */
export function launchesKernel(node: Node): boolean {
  return !NON_LAUNCHING_OPS.has(node.op);
}

/** Count of nodes per op, sorted by op name. */
export function opHistogram(g: Graph): Record<string, number> {
  const h: Record<string, number> = {};
  for (const n of g.nodes()) h[n.op] = (h[n.op] ?? 0) + 1;
  return Object.fromEntries(Object.entries(h).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** Kernel launches one forward step of the graph makes. */
export function countKernels(g: Graph): number {
  return g.nodes().filter(launchesKernel).length;
}

/** Weight totals of a graph. */
export interface WeightTotals {
  /** Elements of all referenced weights. */
  parameters: number;
  /** Bytes they are stored in (encoded payloads included). */
  bytes: number;
}

/** Parameters (elements) and stored bytes of the weights the graph references. */
export function weightTotals(g: Graph): WeightTotals {
  let parameters = 0;
  let bytes = 0;
  for (const n of g.nodes()) {
    if (!isOp(n, 'weight')) continue;
    const e = g.weights.get(n.attrs.id);
    parameters += e.shape.reduce((a, b) => a * b, 1);
    for (const arr of Object.values(e.data)) bytes += arr.byteLength;
  }
  return { parameters, bytes };
}
