/**
 * Differential checks of graph rewrites: random host inputs for a graph, and "the graph before and after a pass give
 * the same outputs on the CPU interpreter".
 * @module
 */
import { expect } from 'vitest';
import { isStaticShape } from '../../src/ir/dim.js';
import type { DType } from '../../src/ir/dtype.js';
import type { Graph } from '../../src/ir/graph.js';
import { runGraph } from '../../src/runtime/cpu/interpreter.js';
import { Tensor } from '../../src/runtime/cpu/tensor.js';
import { Rng } from '../../src/util/random.js';
import { compareTensors } from './random-graph.js';

/** Draws one element of an input of type `dtype`. */
export type DrawValue = (dtype: DType, rng: Rng) => number;

/** Floats uniform in [-2, 2); integers from 0 to 3; bools 0 or 1 (one `rng` draw per element either way). */
export const mixedValues: DrawValue = (dtype, rng) => {
  if (dtype === 'f32' || dtype === 'f16') return rng.next() * 4 - 2;
  const v = rng.int(4);
  return dtype === 'bool' ? v & 1 : v;
};

/** Random host tensors for a graph's inputs (static shapes only), element by element from `draw`. */
export function randomInputs(g: Graph, seed = 7, draw: DrawValue = mixedValues): Record<string, Tensor> {
  const rng = new Rng(seed);
  const out: Record<string, Tensor> = {};
  for (const i of g.inputs) {
    if (!isStaticShape(i.shape)) throw new Error('randomInputs: static shapes only');
    const n = i.shape.reduce((a, b) => a * b, 1);
    out[String(i.attrs.name)] = Tensor.from(i.dtype, i.shape, Array.from({ length: n }, () => draw(i.dtype, rng)));
  }
  return out;
}

/**
 * Runs both graphs on the CPU interpreter with the same inputs (random by default) and expects every output of
 * `before` to match `after`'s within `tol` (exact by default).
 */
export function expectSameOutputs(before: Graph, after: Graph, tol: { rtol?: number; atol?: number } = { rtol: 0, atol: 0 }, inputs: Record<string, Tensor> = randomInputs(before)): void {
  const a = runGraph(before, inputs);
  const b = runGraph(after, inputs);
  for (const o of before.outputs) expect(compareTensors(b[o.name], a[o.name], tol), `output '${o.name}'`).toBeNull();
}
