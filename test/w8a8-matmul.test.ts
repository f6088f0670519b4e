// W8A8 matmuls (`matmul` with `actQuant`): the CPU reference's quantize -> integer dot -> rescale, and the WebGPU
// kernel (lavapipe in CI) against it, with dot4I8Packed and with the unpacked fallback, per-token and static scales,
// ragged K, M = 1 and M > 1, and the fused epilogues (bias + activation, residual, SwiGLU gate).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileGraph } from '../src/compile.js';
import { createTarget } from '../src/codegen/target.js';
import { generateW8A8GemvKernel, PACKED_DOT_FEATURE } from '../src/codegen/matmul/w8a8-gemv.js';
import { chooseW8A8Variant } from '../src/codegen/schedule/w8a8-matmul.js';
import { ShapeError, UnsupportedOpError } from '../src/errors.js';
import type { ActivationQuant } from '../src/ir/attrs.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { isOp } from '../src/ir/attrs.js';
import { runPasses } from '../src/passes/pipeline.js';
import { unfuse } from '../src/codegen/families/common.js';
import type { Graph } from '../src/ir/graph.js';
import type { Target } from '../src/ir/target.js';
import { decodeWeight, quantizeWeight } from '../src/ir/weights.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { roundHalfEven } from '../src/runtime/cpu/w8a8.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { expectClose } from './support/encoded-weights.js';

const LONG = 300_000;

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

const int8 = (name: string, N: number, K: number, seed: number) => quantizeWeight(name, [N, K], new Rng(seed).normals(N * K, 0.5), { bits: 8, groupSize: K });
const xOf = (rows: number, K: number, seed: number): Tensor => Tensor.from('f32', [rows, K], new Rng(seed).normals(rows * K, 1));

type Epilogue = 'none' | 'bias-silu' | 'residual' | 'gate';

/** `y = x · Wᵀ` as W8A8 with `q`, then the epilogue; x is `[rows, K]` (rows a number or the symbol seq). */
function graphOf(N: number, K: number, rows: number | 'seq', q: ActivationQuant, ep: Epilogue, seed: number): Graph {
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', [rows, K]);
  let y = b.matmul(x, b.weight(int8('w', N, K, seed)), { transB: true, actQuant: q });
  if (ep === 'bias-silu') y = b.silu(b.add(y, b.weight('bias', [N], new Rng(seed + 1).normals(N, 0.5))));
  if (ep === 'residual') y = b.add(y, b.input('r', 'f32', [rows, N]));
  if (ep === 'gate') y = b.mul(b.silu(b.slice(y, { axes: [1], starts: [0], ends: [N / 2] })), b.slice(y, { axes: [1], starts: [N / 2], ends: [N] }));
  return b.build({ y });
}

describe('W8A8 on the CPU reference', () => {
  it('rounds half to even, as WGSL does', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, -3]);
  });

  it('per token: activations on their own int8 grid multiply exactly as the dequantized weights do', () => {
    // each row is integers times a step, with one value at 127 steps: quantizing it loses nothing
    const [M, N, K] = [3, 5, 40];
    const w = int8('w', N, K, 1);
    const steps = [0.25, 0.5, 0.125];
    const rng = new Rng(2);
    const ints = Array.from({ length: M * K }, () => rng.int(255) - 127);
    const x = Float32Array.from(ints, (v, i) => (i % K === 0 ? 127 : v) * steps[Math.floor(i / K)]);
    const b = new GraphBuilder();
    const g = b.build({ y: b.matmul(b.input('x', 'f32', [M, K]), b.weight(w), { transB: true, actQuant: { scale: 'per-token' } }) });
    const got = runGraph(g, { x: Tensor.from('f32', [M, K], x) }).y.data as Float32Array;
    const wf = decodeWeight(w);
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let want = 0;
        for (let k = 0; k < K; k++) want += x[m * K + k] * wf[n * K + k];
        expect(got[m * N + n]).toBeCloseTo(want, 4);
      }
  });

  it('static scale: values past 127 steps clamp, and the result is the clamped integers times both scales', () => {
    const b = new GraphBuilder();
    const w = quantizeWeight('w', [1, 4], Float32Array.from([1, -1, 0.5, 0]), { bits: 8, groupSize: 4 }); // q = 127, -127, 64 (63.5 rounds up), 0
    const g = b.build({ y: b.matmul(b.input('x', 'f32', [1, 4]), b.weight(w), { transB: true, actQuant: { scale: 0.5 } }) });
    // x / 0.5 = 300 -> 127, 2.5 -> 2 (half to even), 3 -> 3, 7
    const y = runGraph(g, { x: Tensor.from('f32', [1, 4], [150, 1.25, 1.5, 3.5]) }).y.data[0];
    expect(y).toBeCloseTo((127 * 127 - 2 * 127 + 3 * 64) * 0.5 * (1 / 127), 5);
  });

  it('the optimizer keeps actQuant (a transposed B folded into transB, layouts, fusion): same values, same W8A8 count', () => {
    const b = new GraphBuilder();
    // B an input: rounded per output channel on the fly; its transpose folds into transB
    const y = b.silu(b.matmul(b.input('x', 'f32', [3, 40]), b.transpose(b.input('w', 'f32', [24, 40]), [1, 0]), { actQuant: { scale: 'per-token' } }));
    const g = b.build({ y });
    const opt = runPasses(g, 'O3').graph;
    const quantized = (h: Graph): number => h.nodes().map((n) => (n.op === 'fused' ? unfuse(n)[0] : n)).filter((n) => isOp(n, 'matmul') && n.attrs.actQuant).length;
    expect(quantized(opt)).toBe(1);
    expect(opt.nodes().some((n) => n.op === 'transpose')).toBe(false);
    const inputs = { x: xOf(3, 40, 5), w: Tensor.from('f32', [24, 40], new Rng(4).normals(960, 0.5)) };
    expectClose(runGraph(opt, inputs).y.data as Float32Array, runGraph(g, inputs).y.data as Float32Array, 'optimized W8A8');
  });

  it('refuses a bad activation scale, naming the attribute', () => {
    const b = new GraphBuilder();
    const [x, w] = [b.input('x', 'f32', [1, 4]), b.input('w', 'f32', [2, 4])];
    expect(() => b.matmul(x, w, { transB: true, actQuant: { scale: -1 } })).toThrow(ShapeError);
    expect(() => b.matmul(x, w, { transB: true, actQuant: { scale: -1 } })).toThrow(/actQuant/);
  });
});

describe('the w8a8-gemv kernel', () => {
  it('uses dot4I8Packed where the target has the language feature, the unpacked dot otherwise', () => {
    const t = createTarget('lavapipe');
    const spec = { M: 1, N: 8, K: 64, transB: true, actScale: 'per-token' as const };
    const packed = generateW8A8GemvKernel(spec, chooseW8A8Variant(spec, t));
    expect(packed.wgsl.startsWith(`requires ${PACKED_DOT_FEATURE};`)).toBe(true);
    expect(packed.wgsl).toContain('dot4I8Packed(');
    const fallback = generateW8A8GemvKernel(spec, chooseW8A8Variant(spec, { ...t, wgslLanguageFeatures: [] }));
    expect(fallback.wgsl).not.toMatch(/requires|dot4I8Packed\(|pack4xI8\(/);
    expect(fallback.variant).toMatch(/-unpacked-/);
  });
});

describe('W8A8 on WebGPU against the CPU reference', () => {
  async function check(g: Graph, bindings: Record<string, number>, runs: readonly Record<string, Tensor>[], what: string, target?: Target): Promise<string[]> {
    const engine = await compileGraph(g, bindings, target ? { target } : { device: gpu!.info });
    const session = await engine.createSession({ device: gpu! });
    try {
      for (const inputs of runs) expectClose((await session.run(inputs)).y.data as Float32Array, runGraph(g, inputs).y.data as Float32Array, `${what}, x ${inputs.x.shape.join('x')}`);
    } finally {
      await session.destroy();
    }
    const m = engine.manifest;
    expect(m.kernels.some((k) => k.family === 'matmul' || k.family === 'dequant-matmul'), what).toBe(false);
    // the epilogue is fused: one dispatch
    expect(m.plans[0].dispatches, what).toHaveLength(1);
    return m.kernels.filter((k) => k.family === 'w8a8-matmul').map((k) => k.variant);
  }

  const cases: { N: number; K: number; q: ActivationQuant; ep: Epilogue }[] = [
    { N: 54, K: 64, q: { scale: 'per-token' }, ep: 'none' },
    { N: 33, K: 67, q: { scale: 'per-token' }, ep: 'bias-silu' }, // K no multiple of 4: rows off word boundaries
    { N: 20, K: 30, q: { scale: 0.02 }, ep: 'residual' }, // static, some activations clamp
    { N: 40, K: 96, q: { scale: 'per-token' }, ep: 'gate' },
    { N: 300, K: 258, q: { scale: 0.03 }, ep: 'none' }, // more columns than one workgroup, K past a tile of words
  ];
  for (const c of cases) {
    const what = `[N, K] = [${c.N}, ${c.K}], ${c.q.scale === 'per-token' ? 'per token' : `static ${c.q.scale}`}, epilogue ${c.ep}`;
    it(`${what}: M = 1 and a symbolic seq (4, then 1), packed and unpacked dots`, async (ctx) => {
      if (!gpu) return ctx.skip();
      const t = createTarget(gpu.info);
      const inputsOf = (rows: number, seed: number): Record<string, Tensor> => ({ x: xOf(rows, c.K, seed), ...(c.ep === 'residual' ? { r: xOf(rows, c.N, seed + 50) } : {}) });
      const targets: [string, Target][] = [['unpacked (forced)', { ...t, wgslLanguageFeatures: [] }]];
      if (t.wgslLanguageFeatures?.includes(PACKED_DOT_FEATURE)) targets.push(['dot4I8Packed', t]);
      for (const [name, target] of targets) {
        const v1 = await check(graphOf(c.N, c.K, 1, c.q, c.ep, c.K), {}, [inputsOf(1, 1)], `${what}, ${name}, M = 1`, target);
        const vs = await check(graphOf(c.N, c.K, 'seq', c.q, c.ep, c.K), { seq: 4 }, [inputsOf(4, 2), inputsOf(1, 3)], `${what}, ${name}, seq`, target);
        for (const v of [...v1, ...vs]) expect(v, name).toMatch(name === 'dot4I8Packed' ? /-dot4-/ : /-unpacked-/);
      }
    }, LONG);
  }

  it('a W8A8 matmul over a weight not stored as int8 per channel is an UnsupportedOpError naming the node', async () => {
    const b = new GraphBuilder();
    const w = quantizeWeight('w4', [8, 32], new Rng(3).normals(256, 1), { bits: 4, groupSize: 32 });
    const g = b.build({ y: b.matmul(b.input('x', 'f32', [1, 32]), b.weight(w), { transB: true, actQuant: { scale: 'per-token' } }) });
    await expect(compileGraph(g, {}, { target: createTarget('lavapipe') })).rejects.toThrow(UnsupportedOpError);
    await expect(compileGraph(g, {}, { target: createTarget('lavapipe') })).rejects.toThrow(/int8 per output channel/);
  });
});
