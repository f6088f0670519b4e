/**
 * Output materialization: every graph output becomes an activation the engine computes into its own buffer. An
 * output that is an input, a weight, a constant or a reshape (a view of one of those or of another value) gets a
 * copy (`expand` to its own shape).
 * @module
 */
import { makeNode } from '../ir/node.js';
import type { Pass } from './pass.js';

/** Ops whose value is not a buffer of its own. */
const NOT_ACTIVATIONS = new Set(['input', 'weight', 'constant', 'reshape']);

/** The `materialize-outputs` pass. */
export const materializeOutputsPass: Pass = {
  name: 'materialize-outputs',
  description: 'give every graph output a buffer of its own (outputs that are inputs, weights, constants or views get a copy)',
  run(g, ctx) {
    let copies = 0;
    const outs = g.outputs.map((o) => {
      if (!NOT_ACTIVATIONS.has(o.node.op)) return o;
      copies++;
      return { name: o.name, node: makeNode('expand', [o.node], { shape: [...o.node.shape] }) };
    });
    if (copies === 0) return g;
    ctx.report.add({ pass: 'materialize-outputs', kind: 'info', message: `${copies} output${copies === 1 ? '' : 's'} copied into buffers of their own` });
    return g.withOutputs(outs);
  },
};
