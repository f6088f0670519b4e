/**
 * Dead-code elimination. A graph only holds the nodes reachable from its outputs, so dead ops vanish on their own as
 * soon as nothing refers to them; what is left to collect is weight-store entries no node references any more (the
 * weights that folding, CSE or layout passes replaced). This pass drops those, reports how many (and how many bytes),
 * and notes graph inputs that no output depends on. Inputs stay: they are the graph's calling signature.
 * @module
 */
import { isOp } from '../ir/attrs.js';
import type { Pass } from './pass.js';

/** The `dce` pass: drops unreferenced weights; keeps inputs and outputs. */
export const dcePass: Pass = {
  name: 'dce',
  description: 'drop weight-store entries that no node references (dead ops are already gone: graphs hold only reachable nodes)',
  run(graph, ctx) {
    const nodes = graph.nodes();
    const used = new Set<string>();
    for (const n of nodes) if (isOp(n, 'weight')) used.add(n.attrs.id);
    const live = new Set(nodes);
    const unusedInputs = graph.inputs.filter((i) => !live.has(i));
    if (unusedInputs.length)
      ctx.report.add({ pass: 'dce', kind: 'info', message: `inputs no output depends on (kept): ${unusedInputs.map((i) => i.attrs.name).join(', ')}` });
    const dead = graph.weights.all().filter((e) => !used.has(e.id));
    if (dead.length === 0) return graph;
    const bytes = dead.reduce((acc, e) => acc + Object.values(e.data).reduce((b, a) => b + a.byteLength, 0), 0);
    ctx.report.add({
      pass: 'dce',
      kind: 'removed',
      message: `dropped ${dead.length} unreferenced weight${dead.length === 1 ? '' : 's'} (${bytes} bytes)`,
      nodes: dead.map((e) => e.name),
    });
    return graph.withOutputs(graph.outputs, graph.weights.only(used));
  },
};
