// ONNX masks over dims known only at run time: Trilu (upper and lower, with k) over a dynamic [seq, seq], as a GPT-2
// exported with a dynamic sequence length builds its causal mask (ConstantOfShape of [seq, seq], then Trilu), and
// Range over a symbolic length (its position ids). The importer computes them with the IR `range` op; each model runs
// on the CPU backend for two values of seq and on WebGPU (lavapipe in CI), against a direct computation here.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runGraphOnWebGPU } from '../src/compile.js';
import { InputError } from '../src/errors.js';
import { importOnnx } from '../src/frontends/onnx/index.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { dimSub, sym } from '../src/ir/dim.js';
import { runPasses } from '../src/passes/pipeline.js';
import type { Graph } from '../src/ir/graph.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { modelBytes, node, T, tensor, valueInfo } from './support/onnx.js';

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

/** The Trilu cases: upper, k. */
const CASES: readonly [boolean, number][] = [
  [true, 0],
  [true, 1],
  [true, -2],
  [false, 0],
  [false, -1],
  [false, 3],
];

/** `x [batch, seq, seq]` through one Trilu per case (outputs y0, y1, …), k from an int64 initializer. */
function triluModel(): Graph {
  return importOnnx(
    modelBytes({
      opset: 17,
      inputs: [valueInfo('x', T.FLOAT, [2, 'seq', 'seq'])],
      outputs: CASES.map((_c, i) => valueInfo(`y${i}`, T.FLOAT, [2, 'seq', 'seq'])),
      initializers: CASES.map(([, k], i) => tensor(`k${i}`, T.INT64, [], [k])),
      nodes: CASES.map(([upper, ], i) => node('Trilu', ['x', `k${i}`], [`y${i}`], { upper: { i: upper ? 1 : 0 } })),
    }),
  ).graph;
}

/** Trilu computed directly: keep (…, i, j) when j - i >= k (upper) or <= k (lower). */
function trilu(x: Tensor, upper: boolean, k: number): number[] {
  const [b, n, m] = x.shape;
  const out: number[] = [];
  for (let p = 0; p < b; p++)
    for (let i = 0; i < n; i++)
      for (let j = 0; j < m; j++) out.push((upper ? j - i >= k : j - i <= k) ? x.numbers[(p * n + i) * m + j] : 0);
  return out;
}

/**
 * GPT-2's dynamic causal mask and position ids from `input_ids [1, seq]`: `s = Shape(ids)[1]`,
 * `mask = Trilu(ConstantOfShape([s, s], -10000), upper, k = 1)`, `pos = Range(0, s, 1)`.
 */
function gpt2MaskModel(): Graph {
  return importOnnx(
    modelBytes({
      opset: 17,
      inputs: [valueInfo('input_ids', T.INT64, [1, 'seq'])],
      outputs: [valueInfo('mask', T.FLOAT, ['seq', 'seq']), valueInfo('position_ids', T.INT64, ['seq'])],
      initializers: [tensor('one', T.INT64, [], [1]), tensor('zero', T.INT64, [], [0]), tensor('axes0', T.INT64, [1], [0])],
      nodes: [
        node('Shape', ['input_ids'], ['shape']),
        node('Gather', ['shape', 'one'], ['s'], { axis: { i: 0 } }),
        node('Unsqueeze', ['s', 'axes0'], ['s1']),
        node('Concat', ['s1', 's1'], ['ss'], { axis: { i: 0 } }),
        node('ConstantOfShape', ['ss'], ['full'], { value: { t: tensor('v', T.FLOAT, [1], [-10000]) } }),
        node('Trilu', ['full', 'one'], ['mask'], { upper: { i: 1 } }),
        node('Range', ['zero', 's', 'one'], ['position_ids']),
      ],
    }),
  ).graph;
}

describe('the IR range op', () => {
  it('is [0, …, n - 1] for a symbolic n, a typed error when n evaluates below 0, and folds when static', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', ['seq']);
    const g = b.build({ r: b.range('seq'), d: b.range(dimSub(sym('seq'), 2)), x: b.add(x, 1) });
    expect(Array.from(runGraph(g, { x: Tensor.zeros('f32', [4]) }).r.numbers)).toEqual([0, 1, 2, 3]);
    expect(() => runGraph(g, { x: Tensor.zeros('f32', [1]) })).toThrow(InputError);
    const folded = runPasses(new GraphBuilder().build({ r: new GraphBuilder().range(5) }), 'O1').graph;
    expect(folded.output('r').op).toBe('constant');
    expect(Array.from(runGraph(folded, {}).r.numbers)).toEqual([0, 1, 2, 3, 4]);
  });
});

describe('Trilu and Range over symbolic dims', () => {
  it('import with the range op (no table of a fixed size)', () => {
    expect(triluModel().nodes().some((n) => n.op === 'range')).toBe(true);
    const g = gpt2MaskModel();
    expect(g.nodes().filter((n) => n.op === 'range').map((n) => String(n.attrs.length))).toEqual(['seq']); // one range, shared
  });

  it('Trilu (upper and lower, k = -2 … 3) on the CPU backend for seq = 3 and 6', () => {
    const g = triluModel();
    for (const seq of [3, 6]) {
      const x = Tensor.from('f32', [2, seq, seq], new Rng(seq).normals(2 * seq * seq));
      const out = runGraph(g, { x });
      CASES.forEach(([upper, k], i) => expect(Array.from(out[`y${i}`].numbers), `seq=${seq} upper=${upper} k=${k}`).toEqual(trilu(x, upper, k)));
    }
  });

  it("GPT-2's dynamic causal mask and position ids on the CPU backend for seq = 1 and 5", () => {
    const g = gpt2MaskModel();
    for (const seq of [1, 5]) {
      const out = runGraph(g, { input_ids: Tensor.from('i32', [1, seq], Array.from({ length: seq }, (_v, i) => 100 + i)) });
      const mask = Array.from({ length: seq * seq }, (_v, e) => (e % seq > Math.floor(e / seq) ? -10000 : 0));
      expect(Array.from(out.mask.numbers)).toEqual(mask);
      expect(Array.from(out.position_ids.numbers)).toEqual(Array.from({ length: seq }, (_v, i) => i));
    }
  });

  it('both models on WebGPU for two values of seq', async (ctx) => {
    if (!gpu) return ctx.skip();
    const g = triluModel();
    const masks = gpt2MaskModel();
    for (const seq of [3, 6]) {
      const x = Tensor.from('f32', [2, seq, seq], new Rng(10 + seq).normals(2 * seq * seq));
      const out = await runGraphOnWebGPU(g, { x }, { device: gpu });
      CASES.forEach(([upper, k], i) => expect(Array.from(out[`y${i}`].numbers), `seq=${seq} upper=${upper} k=${k}`).toEqual(trilu(x, upper, k)));
      const m = await runGraphOnWebGPU(masks, { input_ids: Tensor.from('i32', [1, seq], Array.from({ length: seq }, () => 7)) }, { device: gpu });
      expect(Array.from(m.mask.numbers)).toEqual(Array.from({ length: seq * seq }, (_v, e) => (e % seq > Math.floor(e / seq) ? -10000 : 0)));
      expect(Array.from(m.position_ids.numbers)).toEqual(Array.from({ length: seq }, (_v, i) => i));
    }
  });
});
