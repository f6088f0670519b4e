// IR -> WGSL elementwise kernels, run on the WebGPU device (lavapipe in CI) and checked against the CPU reference.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Node } from '../src/ir/node.js';
import type { DType } from '../src/ir/dtype.js';
import { bindInputs, runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { generateElementwiseKernel } from '../src/codegen/elementwise.js';
import { runKernelOnce } from '../src/runtime/webgpu/one-shot.js';
import { evalGrid } from '../src/runtime/kernel-source.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, gpuHas } from './helpers/webgpu.js';

type Gpu = NonNullable<Awaited<ReturnType<typeof acquireTestDevice>>>;
let gpu: Gpu | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

/** Runs `root` as one generated kernel on the device and on the CPU; returns the max abs error and the kernel. */
async function check(b: GraphBuilder, root: Node, inputs: Record<string, Tensor>, opts: Parameters<typeof generateElementwiseKernel>[1] = {}) {
  const graph = b.build({ y: root });
  const ref = runGraph(graph, inputs).y;
  const k = generateElementwiseKernel(root, opts);
  // operands are graph inputs or weights: evaluate each on the CPU to get its tensor
  const operandValues = k.operands.map((o) => runGraph(b.build({ o }), inputs).o);
  const bindings = bindInputs(graph, inputs);
  const [got] = await runKernelOnce(gpu!.device, k, [...operandValues, { dtype: root.dtype, shape: ref.shape }], bindings);
  let maxErr = 0;
  for (let i = 0; i < ref.size; i++) {
    const r = ref.numbers[i];
    const g = got.numbers[i];
    const err = Math.abs(r - g) / Math.max(1, Math.abs(r));
    if (!(err <= maxErr) && !(Number.isNaN(r) && Number.isNaN(g))) maxErr = Number.isNaN(err) ? Infinity : Math.max(maxErr, err);
  }
  return { maxErr, kernel: k, ref, got };
}

function rand(dtype: DType, shape: number[], seed: number, lo = -2, hi = 2): Tensor {
  const r = new Rng(seed);
  const n = shape.reduce((a, c) => a * c, 1);
  const v = Array.from({ length: n }, () => (dtype === 'i32' ? r.int(21) - 10 : dtype === 'bool' ? r.int(2) : lo + (hi - lo) * r.next()));
  return Tensor.from(dtype, shape, v);
}

describe('elementwise WGSL kernels vs the CPU reference', () => {
  it('fuses silu(x * w + b) with broadcasting into one kernel (ragged size)', async (ctx) => {
    if (!gpu) return ctx.skip();
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 37, 29]);
    const w = b.input('w', 'f32', [29]);
    const bias = b.input('bias', 'f32', [37, 1]);
    const y = b.silu(b.add(b.mul(x, w), bias));
    const r = await check(b, y, { x: rand('f32', [3, 37, 29], 1), w: rand('f32', [29], 2), bias: rand('f32', [37, 1], 3) });
    expect(r.kernel.fused.map((n) => n.op)).toEqual(['mul', 'add', 'silu']);
    expect(r.kernel.operands).toHaveLength(3);
    expect(r.kernel.wgsl).toMatch(/tensorwright kernel: elementwise \(3 fused ops/);
    expect(r.maxErr).toBeLessThan(1e-5);
  });

  it('gelu (erf and tanh forms), tanh, erf, exp, log, rsqrt, pow, scalar constants', async (ctx) => {
    if (!gpu) return ctx.skip();
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [1000]);
    const pos = b.add(b.abs(x), 0.5);
    const y = b.add(
      b.add(b.gelu(x), b.gelu(x, 'tanh')),
      b.add(b.add(b.tanh(x), b.erf(x)), b.add(b.mul(b.log(pos), b.rsqrt(pos)), b.sub(b.pow(pos, 1.5), b.exp(b.neg(x))))),
    );
    const r = await check(b, y, { x: rand('f32', [1000], 4, -4, 4) });
    expect(r.kernel.operands).toHaveLength(1);
    expect(r.maxErr).toBeLessThan(2e-5);
  });

  it('comparisons, where and casts (bool and i32 storage)', async (ctx) => {
    if (!gpu) return ctx.skip();
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [5, 13]);
    const k = b.input('k', 'i32', [13]);
    const m = b.input('m', 'bool', [5, 1]);
    const cond = b.less(x, b.cast(k, 'f32'));
    const y = b.where(m, b.where(cond, x, b.mul(x, -3)), b.cast(b.maximum(b.cast(x, 'i32'), k), 'f32'));
    const r = await check(b, y, { x: rand('f32', [5, 13], 5, -12, 12), k: rand('i32', [13], 6), m: rand('bool', [5, 1], 7) });
    expect(r.maxErr).toBe(0);
    const bb = new GraphBuilder();
    const xx = bb.input('x', 'f32', [77]);
    const eq = bb.equal(bb.cast(bb.cast(xx, 'i32'), 'f32'), xx);
    const r2 = await check(bb, eq, { x: Tensor.from('f32', [77], Array.from({ length: 77 }, (_v, i) => (i % 3 ? i / 2 : i))) });
    expect(r2.maxErr).toBe(0);
  });

  it('f16 storage computes in f32 and rounds on store', async (ctx) => {
    if (!gpu) return ctx.skip();
    if (!gpuHas(gpu, 'shader-f16')) return ctx.skip();
    const b = new GraphBuilder();
    const x = b.input('x', 'f16', [333]);
    const y = b.mul(b.sigmoid(x), x);
    const r = await check(b, y, { x: rand('f16', [333], 8) });
    expect(r.kernel.wgsl.startsWith('enable f16;')).toBe(true);
    expect(r.maxErr).toBeLessThan(2e-3);
  });

  it('f32 -> f16 casts round to nearest even and overflow to ±inf per IEEE 754, inside a kernel and on store', async (ctx) => {
    if (!gpu) return ctx.skip();
    if (!gpuHas(gpu, 'shader-f16')) return ctx.skip();
    // the edges (max finite, the 65520 overflow tie, subnormals and their ties, signed zeros, inf, NaN) and a sweep of
    // f32 bit patterns across the whole f16 range, including exact ties between two f16 neighbours
    const edges = [65504, 65505, 65519, 65519.996, 65520, 65535, 65536, 1e6, 3.4e38, 2 ** -14, 2 ** -24, 2 ** -25, 1.5 * 2 ** -24, 2.5 * 2 ** -24, 2 ** -26, 1e-8, 0, -0, Infinity, -Infinity, NaN, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 2049, 2051];
    const bits = new Uint32Array(4096);
    const rng = new Rng(11);
    for (let i = 0; i < bits.length; i++) bits[i] = (0x33000000 + rng.int(0x477fffff - 0x33000000)) & (i % 3 ? 0xffffffff : 0xfffff000); // every 3rd: near a tie
    const sweep = Array.from(new Float32Array(bits.buffer));
    const vals = [...edges, ...edges.map((v) => -v), ...sweep, ...sweep.map((v) => -v)];
    const x = Tensor.from('f32', [vals.length], vals);
    const b = new GraphBuilder();
    const xi = b.input('x', 'f32', [vals.length]);
    const inner = b.cast(b.mul(b.cast(xi, 'f16'), 1), 'f32'); // the f16 value inside a fused kernel, stored as f32
    const r1 = await check(b, inner, { x });
    const b2 = new GraphBuilder();
    const stored = b2.cast(b2.input('x', 'f32', [vals.length]), 'f16'); // stored as f16
    const r2 = await check(b2, stored, { x });
    for (const r of [r1, r2]) {
      const bad: string[] = [];
      for (let i = 0; i < vals.length; i++) {
        const want = r.ref.data[i];
        const got = r.got.data[i];
        if (!Object.is(want, got)) bad.push(`${vals[i]} -> ${got}, IEEE ${want}`);
      }
      expect(bad.slice(0, 10)).toEqual([]);
    }
    expect(r1.ref.data[edges.indexOf(65520)]).toBe(Infinity);
    expect(r1.ref.data[edges.indexOf(65519)]).toBe(65504);
  });

  it('uses a 2-D grid when the workgroups exceed the per-dimension limit', async (ctx) => {
    if (!gpu) return ctx.skip();
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4099]);
    const y = b.relu(b.sub(x, 0.25));
    const r = await check(b, y, { x: rand('f32', [4099], 9) }, { maxWorkgroupsPerDimension: 7, workgroupSize: 64 });
    expect(evalGrid(r.kernel.grid[1], r.kernel.params, {})).toBeGreaterThan(1);
    expect(r.maxErr).toBe(0);
  });

  it('symbolic dims become params: one kernel serves every seq length', async (ctx) => {
    if (!gpu) return ctx.skip();
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', ['seq', 3, 5]);
    const w = b.input('w', 'f32', [3, 1]);
    const y = b.mul(b.gelu(x, 'tanh'), w);
    expect(generateElementwiseKernel(y).params.length).toBeGreaterThan(0);
    for (const seq of [1, 2, 17, 100]) {
      const r = await check(b, y, { x: rand('f32', [seq, 3, 5], seq), w: rand('f32', [3, 1], 11) });
      expect(r.maxErr).toBeLessThan(1e-5);
    }
  });

  it('random elementwise trees match the reference (property)', async (ctx) => {
    if (!gpu) return ctx.skip();
    const unary = ['neg', 'abs', 'exp', 'tanh', 'sigmoid', 'silu', 'relu', 'sin', 'cos', 'erf'] as const;
    const binary = ['add', 'sub', 'mul', 'maximum', 'minimum'] as const;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 1e9 }), async (seed) => {
        const r = new Rng(seed);
        const b = new GraphBuilder();
        const shapes = [[7, 11], [11], [7, 1], [1, 11], [1]];
        const inputs: Record<string, Tensor> = {};
        const leaves: Node[] = shapes.map((s, i) => {
          inputs[`i${i}`] = rand('f32', s, seed + i);
          return b.input(`i${i}`, 'f32', s);
        });
        let pool = [...leaves];
        for (let step = 0; step < 8; step++) {
          const a = pool[r.int(pool.length)];
          const next = r.next() < 0.4 ? b.unary(unary[r.int(unary.length)], a) : b.binary(binary[r.int(binary.length)], a, pool[r.int(pool.length)]);
          pool = [...pool, next];
        }
        // root: combine with the full-shape leaf so the output has the broadcast shape
        const root = b.add(pool[pool.length - 1], leaves[0]);
        const res = await check(b, root, inputs);
        expect(res.maxErr).toBeLessThan(1e-4);
      }),
      { numRuns: 25 },
    );
  });

  it('model-file names never reach WGSL unescaped', async (ctx) => {
    const b = new GraphBuilder();
    const evil = '*/ } fn main() { // \n @compute';
    const x = b.input(evil, 'f32', [4]);
    const w = b.weight(`${evil}\nweight`, [4], new Float32Array([1, 2, 3, 4]));
    const k = generateElementwiseKernel(b.add(x, w));
    for (const line of k.wgsl.split('\n')) if (line.includes('@compute')) expect(line.trim()).toBe('@compute @workgroup_size(WORKGROUP_SIZE)');
    expect(k.wgsl.split('\n').filter((l) => l.includes('fn main'))).toHaveLength(1);
    if (!gpu) return ctx.skip();
    const r = await check(b, b.add(x, w), { [evil]: rand('f32', [4], 10) });
    expect(r.maxErr).toBe(0);
  });
});
