// Row-wise and layout WGSL kernels — rmsnorm/layernorm (with a fused epilogue), softmax, rope, embedding gather,
// transpose/slice/concat copies — and GPU sampling, run on the WebGPU device (lavapipe in CI) against the CPU reference
// kernels and the host sampler. One compiled kernel is reused for several dynamic sizes where it can be.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KernelSource } from '../src/codegen/kernel.js';
import { generateConcatKernel, generateEmbeddingKernel, generateSliceKernel, generateTransposeKernel } from '../src/codegen/gather.js';
import { generateNormKernel } from '../src/codegen/norm.js';
import { generateRopeKernel } from '../src/codegen/rope.js';
import { ropeSpecOf } from '../src/codegen/families/rope.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { buildFusedNode } from '../src/passes/fuse-elementwise.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { generateSamplingKernel } from '../src/codegen/sampling.js';
import { generateSoftmaxKernel } from '../src/codegen/softmax.js';
import { workgroupReduction } from '../src/codegen/workgroup.js';
import { createTarget } from '../src/codegen/target.js';
import { fixedSubgroupSize } from '../src/ir/target.js';
import type { DType } from '../src/ir/dtype.js';
import * as ref from '../src/runtime/cpu/kernels.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { SAMPLER_PARAM_NAMES, samplerParamValues } from '../src/runtime/sampler-params.js';
import { argmax, Sampler, sampleToken } from '../src/runtime/sampling.js';
import { Rng, XorShiftRng } from '../src/util/random.js';
import { acquireTestDevice, gpuHas, type TestGPU } from './helpers/webgpu.js';
import { acceptablePicks, referencePick, referenceTopK, samplingCases, type RefSettings } from './support/reference-sampler.js';
import { runNamed, runOutput, type BufferInit } from './support/run-kernel.js';

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(async () => {
  await gpu?.destroy();
});

const has = (f: string): boolean => gpuHas(gpu!, f);

function rand(dtype: DType, shape: number[], seed: number, scale = 1, offset = 0): Tensor {
  const r = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.from(dtype, shape, Array.from(r.normals(n, scale), (v) => v + offset));
}

/** Max of |ref - got| / max(1, |ref|); NaN only matches NaN. */
function maxErr(a: Tensor, b: Tensor): number {
  let e = 0;
  for (let i = 0; i < a.size; i++) {
    if (Number.isNaN(a.data[i]) && Number.isNaN(b.data[i])) continue;
    const d = Math.abs(a.numbers[i] - b.numbers[i]) / Math.max(1, Math.abs(a.numbers[i]));
    e = Number.isNaN(d) ? Infinity : Math.max(e, d);
  }
  return e;
}

/** Runs `k` with its read bindings from `inputs` (by name) and returns `out` (zero-filled first) as `dtype[shape]`. */
function run(k: KernelSource, inputs: Record<string, BufferInit>, dims: Record<string, number>, dtype: DType, shape: number[], outName = 'out'): Promise<Tensor> {
  return runOutput(gpu!.device, k, inputs, { dtype, shape, name: outName }, dims);
}

describe('rmsnorm and layernorm', () => {
  it('rmsnorm: one kernel for several row counts; cols below and above the workgroup size, ragged', async (ctx) => {
    if (!gpu) return ctx.skip();
    for (const cols of [7, 300]) {
      const k = generateNormKernel({ kind: 'rmsnorm', cols, rows: 'rows', dtype: 'f32', eps: 1e-5 });
      for (const rows of [1, 5]) {
        const x = rand('f32', [rows, cols], cols + rows);
        const w = rand('f32', [cols], 3, 0.5, 1);
        const got = await run(k, { x, weight: w }, { rows }, 'f32', [rows, cols]);
        expect(maxErr(ref.rmsnorm(x, w, 1e-5), got), `${rows}x${cols}`).toBeLessThan(1e-5);
      }
    }
  });

  it('layernorm with and without bias, rows far from zero mean (two-pass variance)', async (ctx) => {
    if (!gpu) return ctx.skip();
    for (const bias of [true, false]) {
      const cols = 129;
      const rows = 6;
      const k = generateNormKernel({ kind: 'layernorm', cols, rows: 'batch*seq', dtype: 'f32', eps: 1e-12, bias, workgroupSize: 128, staticLoops: bias });
      expect(k.params).toEqual(['batch*seq']);
      const x = rand('f32', [rows, cols], 7, 2, 1000);
      const w = rand('f32', [cols], 8, 0.5, 1);
      const b = rand('f32', [cols], 9);
      const got = await run(k, bias ? { x, weight: w, bias: b } : { x, weight: w }, { batch: 2, seq: 3 }, 'f32', [rows, cols]);
      // inputs around 1000 lose ~6e-5 absolute in f32 before normalizing: the reference is exact
      expect(maxErr(ref.layernorm(x, w, bias ? b : undefined, 1e-12), got)).toBeLessThan(5e-4);
    }
  });

  it('fuses an epilogue: rmsnorm(x) * scale[col] + residual[row, col]', async (ctx) => {
    if (!gpu) return ctx.skip();
    const rows = 3;
    const cols = 40;
    const k = generateNormKernel({
      kind: 'rmsnorm',
      cols,
      rows,
      dtype: 'f32',
      epilogue: {
        operands: [
          { name: 'scale', dtype: 'f32', broadcast: 'row' },
          { name: 'residual', dtype: 'f32', broadcast: 'full' },
        ],
        expr: (acc, load) => `${acc} * ${load(0)} + ${load(1)}`,
      },
    });
    expect(k.bindings.map((b) => b.name)).toEqual(['x', 'weight', 'scale', 'residual', 'out']);
    expect(k.params).toEqual([]);
    const x = rand('f32', [rows, cols], 10);
    const w = rand('f32', [cols], 11);
    const scale = rand('f32', [cols], 12);
    const res = rand('f32', [rows, cols], 13);
    const got = await run(k, { x, weight: w, scale, residual: res }, {}, 'f32', [rows, cols]);
    const n = ref.rmsnorm(x, w, 1e-5);
    const want = Tensor.from('f32', [rows, cols], Array.from(n.numbers, (v, i) => v * scale.numbers[i % cols] + res.numbers[i]));
    expect(maxErr(want, got)).toBeLessThan(1e-5);
  });

  it('f16 storage (f32 math)', async (ctx) => {
    if (!gpu || !has('shader-f16')) return ctx.skip();
    const k = generateNormKernel({ kind: 'rmsnorm', cols: 96, rows: 'rows', dtype: 'f16' });
    const x = rand('f16', [4, 96], 14);
    const w = rand('f16', [96], 15);
    const got = await run(k, { x, weight: w }, { rows: 4 }, 'f16', [4, 96]);
    expect(maxErr(ref.rmsnorm(x, w, 1e-5), got)).toBeLessThan(2e-3);
  });

  it('subgroup reductions (when the adapter has subgroups) give the same results', async (ctx) => {
    if (!gpu || !has('subgroups')) return ctx.skip();
    const k = generateNormKernel({ kind: 'layernorm', cols: 200, rows: 'rows', dtype: 'f32', subgroups: true, workgroupSize: 64 });
    expect(k.wgsl).toMatch(/enable subgroups;/);
    expect(k.variant).toBe('row-wg64-subgroup');
    const x = rand('f32', [3, 200], 16);
    const w = rand('f32', [200], 17);
    const b = rand('f32', [200], 18);
    const got = await run(k, { x, weight: w, bias: b }, { rows: 3 }, 'f32', [3, 200]);
    expect(maxErr(ref.layernorm(x, w, b, 1e-5), got)).toBeLessThan(1e-5);
    const s = generateSoftmaxKernel({ cols: 'cols', rows: 'rows', dtype: 'f32', subgroups: true, staticLoops: false });
    const sx = rand('f32', [2, 777], 19, 3);
    expect(maxErr(ref.softmax(sx, 1), await run(s, { x: sx }, { rows: 2, cols: 777 }, 'f32', [2, 777]))).toBeLessThan(1e-6);
  });

  it('one-subgroup workgroups (a device with one fixed subgroup size) reduce with no barrier and give the same results', async (ctx) => {
    if (!gpu) return ctx.skip();
    const t = createTarget(gpu.info);
    const sg = fixedSubgroupSize(t);
    if (!gpuHas(gpu, 'subgroups', t.features.includes('subgroups') && sg !== undefined)) return ctx.skip();
    for (const cols of [5, 300]) {
      const k = generateNormKernel({ kind: 'rmsnorm', cols, rows: 'rows', dtype: 'f32', subgroups: true, fixedSubgroupSize: sg, staticLoops: false });
      expect(k.variant).toBe(`row-wg${sg}-subgroup`);
      expect(k.wgsl).not.toMatch(/workgroupBarrier|var<workgroup>/);
      const x = rand('f32', [3, cols], 30 + cols);
      const w = rand('f32', [cols], 31);
      expect(maxErr(ref.rmsnorm(x, w, 1e-5), await run(k, { x, weight: w }, { rows: 3 }, 'f32', [3, cols])), `rmsnorm ${cols}`).toBeLessThan(1e-5);
      const l = generateNormKernel({ kind: 'layernorm', cols, rows: 'rows', dtype: 'f32', subgroups: true, fixedSubgroupSize: sg });
      const b = rand('f32', [cols], 32);
      expect(maxErr(ref.layernorm(x, w, b, 1e-5), await run(l, { x, weight: w, bias: b }, { rows: 3 }, 'f32', [3, cols])), `layernorm ${cols}`).toBeLessThan(1e-5);
    }
    const s = generateSoftmaxKernel({ cols: 'cols', rows: 'rows', dtype: 'f32', subgroups: true, fixedSubgroupSize: sg, staticLoops: false });
    expect(s.wgsl).not.toMatch(/workgroupBarrier/);
    const sx = rand('f32', [2, 777], 33, 3);
    expect(maxErr(ref.softmax(sx, 1), await run(s, { x: sx }, { rows: 2, cols: 777 }, 'f32', [2, 777]))).toBeLessThan(1e-6);
  });

  it('reduction helper rejects non-power-of-two workgroups', () => {
    expect(() => workgroupReduction({ workgroupSize: 96, subgroups: false })).toThrow(/power-of-two/);
  });
});

describe('softmax', () => {
  it('static and dynamic row lengths; -inf entries; a row of only -inf gives NaN like the reference', async (ctx) => {
    if (!gpu) return ctx.skip();
    const k = generateSoftmaxKernel({ cols: 257, rows: 'rows', dtype: 'f32' });
    const x = rand('f32', [3, 257], 20, 4);
    expect(maxErr(ref.softmax(x, 1), await run(k, { x }, { rows: 3 }, 'f32', [3, 257]))).toBeLessThan(1e-6);
    const dyn = generateSoftmaxKernel({ cols: 'kv', rows: 'rows', dtype: 'f32', workgroupSize: 64 });
    for (const [rows, cols] of [
      [4, 9],
      [2, 300],
    ]) {
      const v = rand('f32', [rows, cols], rows * cols, 2).data as Float32Array;
      for (let c = 0; c < cols; c += 3) v[c] = -Infinity; // masked entries in row 0
      if (rows > 2) v.fill(-Infinity, cols, 2 * cols); // row 1 fully masked
      const xx = new Tensor('f32', [rows, cols], v);
      const got = await run(dyn, { x: xx }, { rows, kv: cols }, 'f32', [rows, cols]);
      expect(maxErr(ref.softmax(xx, 1), got), `${rows}x${cols}`).toBeLessThan(1e-6);
      if (rows > 2) expect(Number.isNaN(got.data[cols])).toBe(true);
    }
  });

  it('f16 storage', async (ctx) => {
    if (!gpu || !has('shader-f16')) return ctx.skip();
    const k = generateSoftmaxKernel({ cols: 50, rows: 5, dtype: 'f16' });
    const x = rand('f16', [5, 50], 21, 3);
    expect(maxErr(ref.softmax(x, 1), await run(k, { x }, {}, 'f16', [5, 50]))).toBeLessThan(1e-3);
  });
});

describe('rope', () => {
  const positions = (values: number[]): Tensor => Tensor.from('i32', [values.length], values);

  it('interleaved (llama2.c) from a positions buffer, including large positions', async (ctx) => {
    if (!gpu) return ctx.skip();
    const k = generateRopeKernel({ numHeads: 3, headDim: 64, dtype: 'f32', theta: 10000, style: 'interleaved' });
    const pos = positions([0, 1, 7, 100, 2047, 4095, 12345]);
    const S = pos.size;
    const x = rand('f32', [1, S, 3, 64], 30);
    const got = await run(k, { x, positions: pos }, { seq: S }, 'f32', [1, S, 3, 64]);
    expect(maxErr(ref.rope(x, pos, 10000, 'interleaved', 64), got)).toBeLessThan(1e-5);
  });

  it('half (NeoX) with rotaryDim < D, positions past + s from params, dynamic S', async (ctx) => {
    if (!gpu) return ctx.skip();
    const k = generateRopeKernel({ numHeads: 2, headDim: 48, rotaryDim: 32, dtype: 'f32', theta: 500000, style: 'half', positions: { kind: 'offset', past: 'past' } });
    expect(k.bindings.map((b) => b.name)).toEqual(['x', 'out']);
    for (const [S, past] of [
      [5, 0],
      [2, 333],
    ]) {
      const x = rand('f32', [1, S, 2, 48], 31 + S);
      const got = await run(k, { x }, { seq: S, past }, 'f32', [1, S, 2, 48]);
      const pos = positions(Array.from({ length: S }, (_v, s) => past + s));
      expect(maxErr(ref.rope(x, pos, 500000, 'half', 32), got), `S=${S} past=${past}`).toBeLessThan(1e-5);
    }
  });

  it('a window of heads read in place from a wider source (q/k of a merged QKV), ragged head counts, both styles', async (ctx) => {
    if (!gpu) return ctx.skip();
    const pos = positions([4, 5, 6, 300, 7]);
    const S = pos.size;
    // source of 11 heads of 24: q = heads 0..5, k = heads 6..8 (a ragged GQA split), v = 9..10 untouched
    const src = rand('f32', [1, S, 11, 24], 36);
    for (const [first, H, style, rd] of [
      [0, 6, 'interleaved', 24],
      [6, 3, 'interleaved', 24],
      [6, 3, 'half', 16],
      [10, 1, 'half', 24],
    ] as const) {
      const k = generateRopeKernel({ numHeads: H, headDim: 24, rotaryDim: rd, dtype: 'f32', style, source: { numHeads: 11, firstHead: first } });
      expect(k.variant).toContain('window');
      const got = await run(k, { x: src, positions: pos }, { seq: S }, 'f32', [1, S, H, 24]);
      const window = ref.slice(src, [2], [first], [first + H], [1]);
      expect(maxErr(ref.rope(window, pos, 10000, style, rd), got), `heads ${first}..${first + H - 1} ${style}`).toBeLessThan(1e-5);
    }
    expect(() => generateRopeKernel({ numHeads: 4, headDim: 8, dtype: 'f32', source: { numHeads: 6, firstHead: 3 } })).toThrow(/not inside a source of 6 heads/);
  });

  it('batches (B=3, S=5, 5 heads): per-row [B, S] positions and [S] positions shared by the rows, both styles, dynamic B', async (ctx) => {
    if (!gpu) return ctx.skip();
    const B = 3;
    const S = 5;
    const perRow = Tensor.from('i32', [B, S], [0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 100, 2047, 3, 0, 12345]); // ragged prompts
    const shared = positions([2, 3, 5, 8, 13]);
    for (const [style, rd, D] of [['interleaved', 18, 18], ['half', 12, 18], ['half', 22, 22]] as const) {
      const x = rand('f32', [B, S, 5, D], 37 + rd);
      for (const [pos, perBatch] of [[perRow, true], [shared, false]] as const) {
        const k = generateRopeKernel({ numHeads: 5, headDim: D, rotaryDim: rd, dtype: 'f32', style, batch: 'batch', positions: { kind: 'buffer', perBatch } });
        const got = await run(k, { x, positions: pos }, { seq: S, batch: B }, 'f32', [B, S, 5, D]);
        expect(maxErr(ref.rope(x, pos, 10000, style, rd), got), `${style} rd=${rd} ${perBatch ? '[B, S]' : '[S]'} positions`).toBeLessThan(1e-5);
        // the same kernel with one batch row: the first row of the batch
        const row0 = ref.slice(x, [0], [0], [1], [1]);
        const got1 = await run(k, { x: row0, positions: pos }, { seq: S, batch: 1 }, 'f32', [1, S, 5, D]);
        expect(maxErr(ref.rope(row0, perBatch ? ref.slice(pos, [0], [0], [1], [1]) : pos, 10000, style, rd), got1)).toBeLessThan(1e-5);
      }
    }
  });

  it('batches through the rope family: [B, S] and [1, S] positions, a head window of a merged QKV', async (ctx) => {
    if (!gpu) return ctx.skip();
    const B = 3;
    const S = 5;
    const b = new GraphBuilder();
    const qkv = b.input('qkv', 'f32', [B, S, 7, 16]);
    const perRow = b.input('pos', 'i32', [B, S]);
    const shared = b.input('pos1', 'i32', [1, S]);
    const inputs = { qkv: rand('f32', [B, S, 7, 16], 38), pos: Tensor.from('i32', [B, S], [5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 40, 41, 42, 43, 44]), pos1: Tensor.from('i32', [1, S], [9, 8, 7, 6, 5]) };
    for (const [pos, style] of [[perRow, 'half'], [shared, 'interleaved']] as const) {
      const heads = b.sliceAxis(qkv, 2, 2, 5); // k = heads 2..4 of a merged QKV
      const rope = b.rope(heads, pos, { style, theta: 500000 });
      const want = runGraph(b.build({ y: rope }), inputs).y;
      const fused = buildFusedNode({ kind: 'rope', nodes: [heads, rope], root: rope })!;
      const { spec, x, pos: p } = ropeSpecOf(fused);
      expect(x).toBe(qkv);
      expect(p).toBe(pos);
      expect(spec.positions).toEqual(pos === perRow ? { kind: 'buffer', dtype: 'i32', perBatch: true } : { kind: 'buffer', dtype: 'i32' });
      const got = await run(generateRopeKernel(spec), { x: inputs.qkv, positions: pos === perRow ? inputs.pos : inputs.pos1 }, {}, 'f32', [B, S, 3, 16]);
      expect(maxErr(want, got), `${style}`).toBeLessThan(1e-5);
    }
  });

  it('fuses an elementwise epilogue: (rope(k) − μ[H, D]) · s[H, D] + c[D] · 0.5 on a head window, ragged H and D', async (ctx) => {
    if (!gpu) return ctx.skip();
    const [B, S, H, D] = [2, 3, 3, 10]; // H·D = 30: not a multiple of the workgroup
    const b = new GraphBuilder();
    const qkv = b.input('qkv', 'f32', [B, S, 5, D]);
    const pos = b.input('pos', 'i32', [B, S]);
    const mu = b.weight('mu', [1, 1, H, D], rand('f32', [H * D], 51).data as Float32Array);
    const sc = b.weight('sc', [H, D], rand('f32', [H * D], 52, 0.3, 1).data as Float32Array);
    const c = b.weight('c', [D], rand('f32', [D], 53).data as Float32Array);
    const heads = b.sliceAxis(qkv, 2, 1, 1 + H);
    const rope = b.rope(heads, pos, { style: 'half', theta: 10000 });
    const centered = b.sub(rope, mu);
    const scaled = b.mul(centered, sc);
    const y = b.add(scaled, b.mul(c, 0.5));
    const inputs = { qkv: rand('f32', [B, S, 5, D], 54), pos: Tensor.from('i32', [B, S], [0, 1, 2, 7, 8, 9]) };
    const want = runGraph(b.build({ y }), inputs).y;
    const half = y.inputs[1];
    const fused = buildFusedNode({ kind: 'rope', nodes: [heads, rope, centered, scaled, y], root: y })!;
    const { spec, x, epilogueOperands } = ropeSpecOf(fused);
    expect(x).toBe(qkv);
    expect(spec.epilogue?.operands.map((o) => o.broadcast)).toEqual(['head', 'head', 'dim']);
    expect(epilogueOperands).toEqual([mu, sc, half]);
    const k = generateRopeKernel(spec);
    const got = await run(k, { x: inputs.qkv, positions: inputs.pos, ep_0: runGraph(b.build({ mu }), inputs).mu, ep_1: runGraph(b.build({ sc }), inputs).sc, ep_2: runGraph(b.build({ half }), inputs).half }, {}, 'f32', [B, S, H, D]);
    expect(maxErr(want, got)).toBeLessThan(1e-5);
  });

  it('rejects an epilogue operand that does not map onto [B, S, H, D] per (head, dim)', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [1, 4, 2, 8]);
    const pos = b.input('pos', 'i32', [4]);
    const perToken = b.input('t', 'f32', [1, 4, 1, 1]);
    const rope = b.rope(x, pos);
    const y = b.mul(rope, perToken);
    const fused = buildFusedNode({ kind: 'rope', nodes: [rope, y], root: y })!;
    expect(() => ropeSpecOf(fused)).toThrow(/does not map onto the rope output/);
  });

  it('f16 storage with u32 positions', async (ctx) => {
    if (!gpu || !has('shader-f16')) return ctx.skip();
    const k = generateRopeKernel({ numHeads: 4, headDim: 16, dtype: 'f16', style: 'interleaved', positions: { kind: 'buffer', dtype: 'u32' } });
    const x = rand('f16', [1, 3, 4, 16], 35);
    const got = await run(k, { x, positions: Uint32Array.of(3, 9, 27) }, { seq: 3 }, 'f16', [1, 3, 4, 16]);
    expect(maxErr(ref.rope(x, positions([3, 9, 27]), 10000, 'interleaved', 16), got)).toBeLessThan(2e-3);
  });
});

describe('embedding gather and layout copies', () => {
  it('embedding rows at i32 ids (negative ids from the end); out-of-range ids give zeros or clamp', async (ctx) => {
    if (!gpu) return ctx.skip();
    const table = rand('f32', [50, 13], 40);
    const ids = Tensor.from('i32', [7], [0, 49, 3, -1, -50, 17, 17]);
    const zero = generateEmbeddingKernel({ vocab: 50, dim: 13, count: 'seq', dtype: 'f32' });
    const got = await run(zero, { table, ids }, { seq: 7 }, 'f32', [7, 13]);
    expect(Array.from(got.numbers)).toEqual(Array.from(ref.gather(table, ids, 0).numbers));
    const bad = Tensor.from('i32', [3], [50, -51, 2]);
    const gotZero = await run(zero, { table, ids: bad }, { seq: 3 }, 'f32', [3, 13]);
    expect(Array.from(gotZero.numbers.subarray(0, 26))).toEqual(new Array(26).fill(0));
    expect(Array.from(gotZero.numbers.subarray(26))).toEqual(Array.from(table.numbers.subarray(26, 39)));
    const clamp = generateEmbeddingKernel({ vocab: 50, dim: 13, count: 'seq', dtype: 'f32', outOfRange: 'clamp', indexDType: 'u32' });
    const gotClamp = await run(clamp, { table, ids: Uint32Array.of(70, 1) }, { seq: 2 }, 'f32', [2, 13]);
    expect(Array.from(gotClamp.numbers)).toEqual([...table.numbers.subarray(49 * 13, 50 * 13), ...table.numbers.subarray(13, 26)]);
  });

  it('f16 tables copy bit for bit', async (ctx) => {
    if (!gpu || !has('shader-f16')) return ctx.skip();
    const table = rand('f16', [9, 5], 41);
    const ids = Tensor.from('i32', [3], [8, 0, 4]);
    const k = generateEmbeddingKernel({ vocab: 9, dim: 5, count: 3, dtype: 'f16' });
    const got = await run(k, { table, ids }, {}, 'f16', [3, 5]);
    expect(Array.from(got.numbers)).toEqual(Array.from(ref.gather(table, ids, 0).numbers));
  });

  it('transpose: static rank 4 and a dynamic-dim rank 3 (i32)', async (ctx) => {
    if (!gpu) return ctx.skip();
    const x = rand('f32', [2, 3, 5, 7], 42);
    const k = generateTransposeKernel({ shape: [2, 3, 5, 7], perm: [0, 2, 1, 3], dtype: 'f32' });
    expect(Array.from((await run(k, { x }, {}, 'f32', [2, 5, 3, 7])).numbers)).toEqual(Array.from(ref.transpose(x, [0, 2, 1, 3]).numbers));
    const d = generateTransposeKernel({ shape: ['seq', 4, 6], perm: [2, 0, 1], dtype: 'i32' });
    for (const seq of [1, 5]) {
      const xi = Tensor.from('i32', [seq, 4, 6], Array.from({ length: seq * 24 }, (_v, i) => i * 7 - 50));
      const got = await run(d, { x: xi }, { seq }, 'i32', [6, seq, 4]);
      expect(Array.from(got.numbers)).toEqual(Array.from(ref.transpose(xi, [2, 0, 1]).numbers));
    }
  });

  it('slice: a dynamic start (the last `seq` rows after `past`) and a negative step', async (ctx) => {
    if (!gpu) return ctx.skip();
    const x = rand('f32', [4, 10, 6], 43);
    const k = generateSliceKernel({ shape: [4, 10, 6], starts: [1, 'past', 0], outShape: [2, 'seq', 6], dtype: 'f32' });
    const got = await run(k, { x }, { past: 3, seq: 5 }, 'f32', [2, 5, 6]);
    expect(Array.from(got.numbers)).toEqual(Array.from(ref.slice(x, [0, 1], [1, 3], [3, 8], [1, 1]).numbers));
    const r = generateSliceKernel({ shape: [10], starts: [9], steps: [-2], outShape: [5], dtype: 'f32' });
    const x1 = rand('f32', [10], 44);
    expect(Array.from((await run(r, { x: x1 }, {}, 'f32', [5])).numbers)).toEqual(Array.from(ref.slice(x1, [0], [9], [-1], [-2]).numbers));
  });

  it('concat: three static inputs, and a KV-style [past, H] + [seq, H] with a dynamic axis', async (ctx) => {
    if (!gpu) return ctx.skip();
    const a = rand('f32', [2, 3, 4], 45);
    const b = rand('f32', [2, 1, 4], 46);
    const c = rand('f32', [2, 5, 4], 47);
    const k = generateConcatKernel({ shapes: [a.shape, b.shape, c.shape], axis: 1, dtype: 'f32' });
    expect(Array.from((await run(k, { in_0: a, in_1: b, in_2: c }, {}, 'f32', [2, 9, 4])).numbers)).toEqual(Array.from(ref.concat([a, b, c], 1).numbers));
    const kv = generateConcatKernel({ shapes: [['past', 8], ['seq', 8]], axis: 0, dtype: 'f32' });
    for (const [past, seq] of [
      [0, 3],
      [37, 1],
    ]) {
      const p = rand('f32', [past, 8], 48 + past);
      const s = rand('f32', [seq, 8], 49 + seq);
      const got = await run(kv, { in_0: p.size ? p : { zeros: 4 }, in_1: s }, { past, seq }, 'f32', [past + seq, 8]);
      expect(Array.from(got.numbers), `past=${past}`).toEqual(Array.from(ref.concat([p, s], 0).numbers));
    }
  });
});

describe('GPU sampling matches the host sampler and the reference', () => {
  async function gpuToken(k: KernelSource, logits: Tensor, dims: Record<string, number>): Promise<number> {
    const V = logits.shape[logits.shape.length - 1];
    const bufs: Record<string, BufferInit> = { logits, token: { zeros: 4 } };
    if (k.bindings.some((b) => b.name === 'probs')) bufs.probs = { zeros: V * 4 };
    const r = await runNamed(gpu!.device, k, bufs, dims, ['token']);
    return new Uint32Array(r.token)[0];
  }

  /**
   * One sampler per vocabulary size, compiled once and run with every setting (settings are params): 64 lanes and
   * hidden trip counts (`staticLoops: false`), which lavapipe compiles ~10x faster, unless `defaults` asks for the
   * default tuning.
   */
  const samplers = new Map<string, KernelSource>();
  function sampler(V: number, defaults = false): KernelSource {
    const key = `${V}/${defaults}`;
    let k = samplers.get(key);
    if (!k) samplers.set(key, (k = generateSamplingKernel({ vocab: V, dtype: 'f32', mode: 'sample', ...(defaults ? {} : { workgroupSize: 64 as const, staticLoops: false }) })));
    return k;
  }
  const gpuPick = (logits: Float32Array, s: RefSettings, coin: number, defaults = false): Promise<number> =>
    gpuToken(sampler(logits.length, defaults), new Tensor('f32', [logits.length], logits), samplerParamValues({ ...s, coin }, logits.length));

  /**
   * Draws `n` tokens from one logits row on the GPU and with the host Sampler (same seed, so the same coins), and
   * checks every pick of both against the reference (test/support/reference-sampler.ts).
   */
  async function compare(o: RefSettings & { n: number; seed: number; logits: Float32Array; defaults?: boolean }): Promise<{ host: number[]; dev: number[] }> {
    const host = new Sampler({ temperature: o.temperature, topp: o.topp, topk: o.topk, seed: o.seed });
    const coins = new XorShiftRng(o.seed);
    const h: number[] = [];
    const d: number[] = [];
    for (let i = 0; i < o.n; i++) {
      const coin = coins.nextF32();
      h.push(host.sample(o.logits));
      d.push(await gpuPick(o.logits, o, coin, o.defaults));
      const ok = acceptablePicks(o.logits, o, coin);
      expect(ok.has(d[i]) && ok.has(h[i]), `coin ${coin}: GPU ${d[i]}, host ${h[i]}, reference ${[...ok]}`).toBe(true);
    }
    return { host: h, dev: d };
  }

  const gaussianLogits = (V: number, seed: number, scale: number, step = 0): Float32Array => {
    const v = new Rng(seed).normals(V, scale);
    if (step) for (let i = 0; i < V; i++) v[i] = Math.round(v[i] / step) * step;
    return v;
  };

  it('argmax: first index among equal maxima; f16 logits; a dynamic row of a [seq, V] buffer', async (ctx) => {
    if (!gpu) return ctx.skip();
    const V = 1000;
    const v = gaussianLogits(V, 60, 1);
    v[123] = 9;
    v[877] = 9;
    v[5] = 9;
    const k = generateSamplingKernel({ vocab: V, dtype: 'f32', mode: 'argmax' });
    expect(k.bindings.map((b) => b.name)).toEqual(['logits', 'token']);
    expect(await gpuToken(k, new Tensor('f32', [V], v), {})).toBe(5);
    if (has('shader-f16')) {
      const rows = Tensor.from('f16', [3, 300], gaussianLogits(900, 61, 2));
      const k16 = generateSamplingKernel({ vocab: 300, dtype: 'f16', mode: 'argmax', row: 'seq-1' });
      expect(k16.params).toEqual(['seq-1']);
      expect(await gpuToken(k16, rows, { seq: 3 })).toBe(argmax(rows.numbers.subarray(600)));
    }
  });

  it('the settings are params: one kernel, no settings in its WGSL', () => {
    const k = generateSamplingKernel({ vocab: 512, dtype: 'f32', mode: 'sample', row: 'seq-1' });
    expect(k.params).toEqual(['seq-1', ...['coin', 'temperature', 'topk', 'topp', 'toppCutoff'].map((n) => SAMPLER_PARAM_NAMES[n as keyof typeof SAMPLER_PARAM_NAMES])]);
    expect(k.wgsl).not.toMatch(/TEMPERATURE|TOP_P|TOP_K/);
  });

  it('temperature + multinomial (default tuning): same token as the host for the same coin', async (ctx) => {
    if (!gpu) return ctx.skip();
    const r = await compare({ temperature: 0.8, topp: 1, n: 24, seed: 62, logits: gaussianLogits(1000, 62, 2), defaults: true });
    expect(r.dev).toEqual(r.host);
  });

  it('temperature + top-p (run.c nucleus), then top-k + top-p on the same kernel: same token as the host', async (ctx) => {
    if (!gpu) return ctx.skip();
    const logits = gaussianLogits(1000, 63, 2.5);
    const r = await compare({ temperature: 1, topp: 0.9, n: 32, seed: 63, logits });
    expect(r.dev).toEqual(r.host);
    expect(new Set(r.dev).size).toBeGreaterThan(3);
    const k = await compare({ temperature: 0.7, topp: 0.8, topk: 40, n: 24, seed: 64, logits });
    expect(k.dev).toEqual(k.host);
  });

  it('top-k by value: logits [1,1,1,2,0,0] with top-k 2 keep {3, 0}; a coin sweep picks index 3 for some coins', async (ctx) => {
    if (!gpu) return ctx.skip();
    const logits = Float32Array.of(1, 1, 1, 2, 0, 0);
    expect(referenceTopK(logits, 2)).toEqual([3, 0]);
    for (const topp of [1, 0.9]) {
      const s = { temperature: 1, topp, topk: 2 };
      const picks: number[] = [];
      for (let j = 0; j < 32; j++) {
        const coin = j / 32;
        const dev = await gpuPick(logits, s, coin);
        expect(dev, `topp ${topp} coin ${coin}`).toBe(referencePick(logits, s, coin));
        expect(dev, `topp ${topp} coin ${coin}`).toBe(sampleToken(logits, s, coin));
        picks.push(dev);
      }
      expect([...new Set(picks)].sort(), `topp ${topp}`).toEqual([0, 3]);
      expect(picks.filter((x) => x === 3).length, `topp ${topp}`).toBeGreaterThan(16);
    }
    // a coin past the end of the cdf takes the last kept token, not V - 1
    expect(await gpuPick(Float32Array.of(0, 3, 0, 3, 0, 0), { temperature: 1, topp: 1, topk: 2 }, 1)).toBe(3);
  });

  it('random and tie-heavy rows, every setting on one kernel per V: GPU = host = reference for the same coin', async (ctx) => {
    if (!gpu) return ctx.skip();
    let draws = 0;
    let offExact = 0; // GPU picks that agree only through the boundary allowance (coin or top-p within 1e-5)
    for (const V of [6, 50, 300]) {
      for (const c of samplingCases(V, 20, 7 * V)) {
        const kept = new Set(referenceTopK(c.logits, c.settings.topk));
        const coins = new XorShiftRng(V + draws);
        for (let d = 0; d < 4; d++) {
          const coin = coins.nextF32();
          const dev = await gpuPick(c.logits, c.settings, coin);
          const host = sampleToken(c.logits, c.settings, coin);
          const ok = acceptablePicks(c.logits, c.settings, coin);
          expect(kept.has(dev), `${c.name}: GPU picked ${dev}, outside the top-k set`).toBe(true);
          expect(ok.has(dev), `${c.name} coin ${coin}: GPU ${dev}, reference ${[...ok]}`).toBe(true);
          // GPU and host differ only where the reference itself is within the allowance of a boundary
          if (ok.size === 1) expect(dev, `${c.name} coin ${coin}`).toBe(host);
          if (dev !== referencePick(c.logits, c.settings, coin)) offExact++;
          draws++;
        }
      }
    }
    expect(draws).toBe(3 * 20 * 4);
    expect(offExact).toBeLessThanOrEqual(1);
  });

  it('a 32k vocabulary with top-p', async (ctx) => {
    if (!gpu) return ctx.skip();
    const r = await compare({ temperature: 1, topp: 0.95, n: 6, seed: 67, logits: gaussianLogits(32000, 67, 3) });
    expect(r.dev).toEqual(r.host);
  });
});
