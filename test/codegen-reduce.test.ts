// Reduction kernels on the WebGPU device vs the CPU reference: every axes subset of ragged shapes, keepDims, symbolic dims.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/ir/builder.js';
import { bindInputs, runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { generateReduceKernel } from '../src/codegen/reduce.js';
import { runKernelOnce } from '../src/runtime/webgpu/one-shot.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

describe('reduce WGSL kernels vs the CPU reference', () => {
  it('sum / mean / max over every subset of axes of a ragged 3-D tensor', async (ctx) => {
    if (!gpu) return ctx.skip();
    const shape = [3, 7, 5];
    const r = new Rng(3);
    const x = Tensor.from('f32', shape, Array.from({ length: 105 }, () => r.next() * 4 - 2));
    for (const op of ['sum', 'mean', 'max'] as const)
      for (const axes of [[0], [1], [2], [0, 1], [1, 2], [0, 2], [0, 1, 2]])
        for (const keepDims of [false, true]) {
          const b = new GraphBuilder();
          const xi = b.input('x', 'f32', shape);
          const y = b.reduce(op, xi, axes, keepDims);
          const ref = runGraph(b.build({ y }), { x }).y;
          const k = generateReduceKernel(y);
          const [got] = await runKernelOnce(gpu!.device, k, [x, { dtype: 'f32', shape: ref.shape }]);
          for (let i = 0; i < ref.size; i++) expect(Math.abs(got.numbers[i] - ref.numbers[i])).toBeLessThan(1e-5 * Math.max(1, Math.abs(ref.numbers[i])));
        }
  });

  it('symbolic dims and integer sums', async (ctx) => {
    if (!gpu) return ctx.skip();
    const b = new GraphBuilder();
    const xi = b.input('x', 'i32', ['seq', 4]);
    const y = b.sum(xi, [0]);
    const k = generateReduceKernel(y);
    expect(k.params.length).toBeGreaterThan(0);
    for (const seq of [1, 9, 33]) {
      const x = Tensor.from('i32', [seq, 4], Array.from({ length: seq * 4 }, (_v, i) => (i % 7) - 3));
      const g = b.build({ y });
      const ref = runGraph(g, { x }).y;
      const [got] = await runKernelOnce(gpu!.device, k, [x, { dtype: 'i32', shape: ref.shape }], bindInputs(g, { x }));
      expect(got.toArray()).toEqual(ref.toArray());
    }
  });
});
