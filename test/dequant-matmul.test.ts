// The dequant-matmul kernel family on WebGPU (lavapipe in CI): matmuls over quantized weights stored [N, K] run a
// kernel that dequantizes in registers, bound to the weight's packed parts (no dense copy in the engine), and match
// the CPU reference (which dequantizes the same weights).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile, compileGraph } from '../src/compile.js';
import type { LoadedModel } from '../src/frontends/load.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig, type LlamaWeights } from '../src/models/llama.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { UnsupportedOpError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import type { Target } from '../src/ir/target.js';
import { createTarget } from '../src/codegen/target.js';
import { decodeWeight, quantizeWeight, WeightStore } from '../src/ir/weights.js';
import { generateDequantGemvSweepKernel } from '../src/codegen/matmul/dequant-gemv-sweep.js';
import { dequantFormatOf } from '../src/codegen/dequant.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, gpuHas, type TestGPU } from './helpers/webgpu.js';
import { expectClose, expectDecodeMatchesCpu } from './support/encoded-weights.js';

// lavapipe JIT-compiles each pipeline on its first dispatch
const LONG = 300_000;

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

interface Case {
  bits: 8 | 4 | 2;
  groupSize: number;
  hasZeroPoint: boolean;
  N: number;
  K: number;
  epilogue: boolean;
}

/** `y = x · Wᵀ` (optionally `silu(y + bias)`) with W quantized; x is `[seq, K]` (symbolic seq) or `[M, K]`. */
function graphOf(c: Case, rows: number | 'seq', seed: number): Graph {
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', [rows, c.K]);
  const w = b.weight(quantizeWeight('w', [c.N, c.K], new Rng(seed).normals(c.N * c.K, 0.5), { bits: c.bits, groupSize: c.groupSize, hasZeroPoint: c.hasZeroPoint }));
  let y = b.linear(x, w);
  if (c.epilogue) y = b.silu(b.add(y, b.weight('bias', [c.N], new Rng(seed + 1).normals(c.N, 0.5))));
  return b.build({ y });
}

/** Compiles `g` for `bindings`, runs it on each input set, compares with the CPU reference; returns the engine manifest. */
async function checkAgainstReference(g: Graph, bindings: Record<string, number>, runs: readonly Record<string, Tensor>[], what: string, target?: Target) {
  const engine = await compileGraph(g, bindings, target ? { target } : { device: gpu!.info });
  const session = await engine.createSession({ device: gpu! });
  try {
    for (const inputs of runs) {
      const want = runGraph(g, inputs).y;
      const got = (await session.run(inputs)).y;
      expectClose(got.data as Float32Array, want.data as Float32Array, `${what}, x ${inputs.x.shape.join('x')}`);
    }
  } finally {
    await session.destroy();
  }
  const m = engine.manifest;
  // the matmul ran the dequantizing kernel, and the engine holds the packed weight only
  expect(m.kernels.map((k) => k.family), what).toContain('dequant-matmul');
  expect(m.kernels.some((k) => k.family === 'matmul'), what).toBe(false);
  // the bias and the activation are the kernel's epilogue: one dispatch
  expect(m.plans[0].dispatches, what).toHaveLength(1);
  const w = m.weights.find((x) => x.name === 'w')!;
  expect(w.encoding.kind, what).toBe('quantized');
  const enc = g.weights.all().find((e) => e.name === 'w')!.encoding;
  expect(w.parts.map((p) => p.role).sort(), what).toEqual(enc.kind === 'quantized' && enc.hasZeroPoint ? ['packed', 'scales', 'zeroPoints'] : ['packed', 'scales']);
  return m;
}

const xOf = (rows: number, K: number, seed: number): Tensor => Tensor.from('f32', [rows, K], new Rng(seed).normals(rows * K, 1));

describe('dequant-matmul on WebGPU against the CPU reference', () => {
  const cases: Case[] = [
    { bits: 8, groupSize: 64, hasZeroPoint: false, N: 54, K: 64, epilogue: false }, // per channel (group = K)
    { bits: 8, groupSize: 32, hasZeroPoint: true, N: 54, K: 96, epilogue: true },
    { bits: 4, groupSize: 32, hasZeroPoint: false, N: 54, K: 96, epilogue: true }, // ragged K (3 groups per row)
    { bits: 4, groupSize: 96, hasZeroPoint: true, N: 33, K: 96, epilogue: false },
    { bits: 4, groupSize: 10, hasZeroPoint: true, N: 7, K: 30, epilogue: true }, // rows and groups off word boundaries
    { bits: 2, groupSize: 32, hasZeroPoint: false, N: 20, K: 64, epilogue: false },
    { bits: 8, groupSize: 54 * 40, hasZeroPoint: false, N: 54, K: 40, epilogue: false }, // one group for the whole weight
  ];
  for (const c of cases) {
    const what = `${c.bits}-bit ${c.hasZeroPoint ? 'asymmetric' : 'symmetric'}, group ${c.groupSize}, [N, K] = [${c.N}, ${c.K}]${c.epilogue ? ', bias + silu' : ''}`;
    it(`${what}: M = 1, M = 5 and a symbolic seq (3 then 5)`, async (ctx) => {
      if (!gpu) return ctx.skip();
      const seed = c.bits * 100 + c.groupSize;
      await checkAgainstReference(graphOf(c, 1, seed), {}, [{ x: xOf(1, c.K, 1) }], `${what}, M = 1`);
      await checkAgainstReference(graphOf(c, 5, seed), {}, [{ x: xOf(5, c.K, 2) }], `${what}, M = 5`);
      await checkAgainstReference(graphOf(c, 'seq', seed), { seq: 5 }, [{ x: xOf(3, c.K, 3) }, { x: xOf(5, c.K, 4) }, { x: xOf(1, c.K, 5) }], `${what}, seq`);
    }, LONG);
  }

  it('every kernel and lane reduction matches: dequant-gemv with none or workgroup memory, dequant-gemv-sweep, dequant-gemm-subgroup', async (ctx) => {
    if (!gpu) return ctx.skip();
    const t = createTarget(gpu.info);
    // [target name, target, variant at M = 1, variant for a symbolic seq]
    const targets: [string, Target, RegExp, RegExp][] = [
      ['no subgroups', { ...t, features: t.features.filter((f) => f !== 'subgroups') }, /^dequant-gemv-.*-l1-c4-r1-wg64$/, /^dequant-gemv-.*-l1-c4-r4-wg64$/],
      ['GPU class', { ...t, deviceClass: 'gpu' }, /^dequant-gemv-.*-l32-c4-r1-wg\d+-workgroup$/, /^dequant-gemv-.*-l32-c4-r4-wg\d+-workgroup$/],
    ];
    if (t.features.includes('subgroups') && t.subgroupSize && t.subgroupSize.min === t.subgroupSize.max)
      targets.push(['this device', t, /^dequant-gemv-sweep-/, /^dequant-gemm-subgroup-.*-r2-/]);
    const c: Case = { bits: 4, groupSize: 32, hasZeroPoint: true, N: 54, K: 96, epilogue: true };
    for (const [name, target, decode, prefill] of targets) {
      const m1 = await checkAgainstReference(graphOf(c, 1, 7), {}, [{ x: xOf(1, c.K, 8) }], `${name}, M = 1`, target);
      expect(m1.kernels.find((k) => k.family === 'dequant-matmul')!.variant, name).toMatch(decode);
      const ms = await checkAgainstReference(graphOf(c, 'seq', 7), { seq: 20 }, [{ x: xOf(1, c.K, 8) }, { x: xOf(20, c.K, 9) }], `${name}, seq`, target);
      expect(ms.kernels.find((k) => k.family === 'dequant-matmul')!.variant, name).toMatch(prefill);
    }
  }, LONG);

  it('offsets (hasMin, as llama.cpp k-quants store them) and the SwiGLU gate over one [2H, K] quantized weight', async (ctx) => {
    if (!gpu) return ctx.skip();
    const [N, K, H] = [40, 64, 20];
    // 4-bit unsigned with a per-group offset: value = q * scale - min
    const base = quantizeWeight('w', [N, K], new Rng(31).normals(N * K, 0.5), { bits: 4, groupSize: 32, hasZeroPoint: true });
    const scales = base.data.scales as Float32Array;
    const mins = Float32Array.from(base.data.zeroPoints as Int32Array, (z, i) => z * scales[i] + 0.01 * i);
    const withMin = WeightStore.entry('w', 'f32', [N, K], { packed: base.data.packed, scales, mins }, { kind: 'quantized', bits: 4, signed: false, groupSize: 32, hasZeroPoint: false, scaleDType: 'f32', hasMin: true });
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', ['seq', K]);
    const y = b.linear(x, b.weight(withMin));
    const gated = b.mul(b.silu(b.slice(y, { axes: [1], starts: [0], ends: [H] })), b.slice(y, { axes: [1], starts: [H], ends: [N] }));
    const g = b.build({ y: gated });
    const engine = await compileGraph(g, { seq: 4 }, { device: gpu.info });
    const session = await engine.createSession({ device: gpu });
    try {
      for (const rows of [1, 4]) {
        const inputs = { x: xOf(rows, K, 40 + rows) };
        expectClose((await session.run(inputs)).y.data as Float32Array, runGraph(g, inputs).y.data as Float32Array, `gated, hasMin, M = ${rows}`);
      }
    } finally {
      await session.destroy();
    }
    const m = engine.manifest;
    expect(m.plans[0].dispatches).toHaveLength(1); // the gate is part of the kernel
    expect(m.kernels.map((k) => k.family)).toEqual(['dequant-matmul']);
    expect(m.kernels[0].wgsl).toMatch(/tw_sigmoid/);
    expect(m.weights.find((w) => w.name === 'w')!.parts.map((p) => p.role).sort()).toEqual(['mins', 'packed', 'scales']);
  }, LONG);

  it('dequant-gemv-sweep (decode on software rasterizers): every integer format, offsets, the gate, lane slices past the row end, a batch', async (ctx) => {
    if (!gpu) return ctx.skip();
    const t = createTarget(gpu.info);
    const sg = t.subgroupSize && t.subgroupSize.min === t.subgroupSize.max ? t.subgroupSize.min : undefined;
    if (!gpuHas(t, 'subgroups') || !gpuHas(t, 'one fixed subgroup size of at most 16', sg !== undefined && sg <= 16) || sg === undefined) return ctx.skip(); // the kernel assumes one fixed subgroup size
    const software: Target = { ...t, deviceClass: 'software-gpu' };
    // [bits, group, zero points, N, K]: units of 4, 2 and 1 words; rows whose units do not fill the last lane slice
    const shapes: [8 | 4 | 2, number, boolean, number, number][] = [
      [4, 32, true, 70, 96], // 3 units of 4 words per row: lanes 3..7 hold zeros
      [4, 32, false, 33, 256], // signed (symmetric)
      [8, 32, true, 41, 160], // 2 units per group
      [8, 64, false, 17, 64],
      [2, 32, true, 29, 96], // units of 2 words
      [2, 32, false, 18, 128],
      [4, 8, true, 12, 40], // units of 1 word
      [8, 24 * 16, true, 24, 16], // one group for the whole weight
    ];
    for (const [bits, groupSize, hasZeroPoint, N, K] of shapes) {
      const c: Case = { bits, groupSize, hasZeroPoint, N, K, epilogue: true };
      const what = `sweep ${bits}-bit group ${groupSize}${hasZeroPoint ? ' asymmetric' : ''} [${N}, ${K}]`;
      const m = await checkAgainstReference(graphOf(c, 1, bits + N), {}, [{ x: xOf(1, K, N) }], what, software);
      expect(m.kernels.find((k) => k.family === 'dequant-matmul')!.variant, what).toMatch(/^dequant-gemv-sweep-/);
    }
    // the SwiGLU gate and offsets, at M = 1 and, through the grid's rows, M = 3 and a batch of 2
    const [N, K, H] = [40, 64, 20];
    const base = quantizeWeight('w', [N, K], new Rng(32).normals(N * K, 0.5), { bits: 4, groupSize: 32, hasZeroPoint: true });
    const scales = base.data.scales as Float32Array;
    const mins = Float32Array.from(base.data.zeroPoints as Int32Array, (z, i) => z * scales[i] + 0.01 * i);
    const withMin = WeightStore.entry('w', 'f32', [N, K], { packed: base.data.packed, scales, mins }, { kind: 'quantized', bits: 4, signed: false, groupSize: 32, hasZeroPoint: false, scaleDType: 'f32', hasMin: true });
    for (const shape of [[1, K], [3, K], [2, 1, K]]) {
      const b = new GraphBuilder();
      const x = b.input('x', 'f32', shape);
      const y = b.linear(x, b.weight(withMin));
      const last = shape.length - 1;
      const g = b.build({ y: b.mul(b.silu(b.slice(y, { axes: [last], starts: [0], ends: [H] })), b.slice(y, { axes: [last], starts: [H], ends: [N] })) });
      const engine = await compileGraph(g, {}, { target: software });
      const session = await engine.createSession({ device: gpu });
      try {
        const inputs = { x: Tensor.from('f32', shape, new Rng(shape.length * 10 + shape[0]).normals(shape.reduce((a, v) => a * v, 1), 1)) };
        expectClose((await session.run(inputs)).y.data as Float32Array, runGraph(g, inputs).y.data as Float32Array, `sweep, gated with offsets, x ${shape.join('x')}`);
      } finally {
        await session.destroy();
      }
      expect(engine.manifest.plans[0].dispatches, shape.join('x')).toHaveLength(1);
      if (shape[0] === 1 && shape.length === 2) expect(engine.manifest.kernels.find((k) => k.family === 'dequant-matmul')!.variant).toMatch(/^dequant-gemv-sweep-/);
    }
  }, LONG);

  it('dequant-gemv-sweep run directly: M = 3 rows (one per workgroup row) and a batch of 2 sharing B', async (ctx) => {
    if (!gpu) return ctx.skip();
    const t = createTarget(gpu.info);
    const sg = t.subgroupSize && t.subgroupSize.min === t.subgroupSize.max ? t.subgroupSize.min : undefined;
    if (!gpuHas(t, 'subgroups') || !gpuHas(t, 'one fixed subgroup size', sg !== undefined) || sg === undefined) return ctx.skip();
    const device = gpu.device;
    const [N, K, M, B] = [37, 96, 3, 2];
    const q = quantizeWeight('w', [N, K], new Rng(5).normals(N * K, 0.5), { bits: 4, groupSize: 32, hasZeroPoint: true });
    const enc = q.encoding;
    if (enc.kind !== 'quantized') throw new Error('expected a quantized weight');
    const kernel = generateDequantGemvSweepKernel(
      { M, N, K, transB: true, batch: B, batchStrides: { a: M * K, b: 0, out: M * N }, weight: dequantFormatOf(enc) },
      { kind: 'dequant-gemv-sweep', subgroupSize: sg, colsPerWorkgroup: 8 },
    );
    const x = new Rng(6).normals(B * M * K, 1);
    const buffer = (data: ArrayBufferView, usage = GPUBufferUsage.STORAGE): GPUBuffer => {
      const buf = device.createBuffer({ size: Math.ceil(data.byteLength / 16) * 16, usage, mappedAtCreation: true });
      new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      buf.unmap();
      return buf;
    };
    const out = device.createBuffer({ size: B * M * N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const parts = { a: buffer(x), packed: buffer(q.data.packed), scales: buffer(q.data.scales), zeroPoints: buffer(q.data.zeroPoints), out } as Record<string, GPUBuffer>;
    expect(kernel.bindings.map((b) => b.name)).toEqual(['a', 'packed', 'scales', 'zeroPoints', 'out']);
    const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: kernel.wgsl }), entryPoint: 'main' } });
    const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: kernel.bindings.map((b, binding) => ({ binding, resource: { buffer: parts[b.name] } })) });
    const read = device.createBuffer({ size: out.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(...(kernel.grid as [number, number, number]));
    pass.end();
    encoder.copyBufferToBuffer(out, 0, read, 0, out.size);
    device.queue.submit([encoder.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const got = new Float32Array(read.getMappedRange().slice(0));
    read.unmap();
    const w = decodeWeight(q);
    const want = new Float32Array(B * M * N);
    for (let r = 0; r < B * M; r++) for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) want[r * N + n] += x[r * K + k] * w[n * K + k];
    expectClose(got, want, 'sweep, M = 3, batch 2');
    for (const b of Object.values(parts)) b.destroy();
    read.destroy();
  }, LONG);

  it('a quantized weight the family does not take (stored [K, N]) fails at compile time naming the weight', async (ctx) => {
    if (!gpu) return ctx.skip();
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 32]);
    const w = b.weight(quantizeWeight('w_kn', [32, 16], new Rng(3).normals(32 * 16, 0.5), { bits: 8, groupSize: 16 }));
    const g = b.build({ y: b.matmul(x, w) });
    const err = await compileGraph(g, {}, { device: gpu.info }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedOpError);
    expect(String((err as Error).message)).toMatch(/w_kn.*quantized/);
  }, LONG);
});

describe('a whole quantized Llama on WebGPU', () => {
  it('4-bit (group 32) and 8-bit (per channel, asymmetric) projections: decode and chunked prefill logits match the CPU reference on the same weights', async (ctx) => {
    if (!gpu) return ctx.skip();
    const c: LlamaConfig = { dim: 64, hiddenDim: 96, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 67, seqLen: 40, sharedClassifier: false };
    const dense = randomLlamaWeights(c, 21);
    const hd = c.dim / c.nHeads;
    const q4 = (name: string, shape: number[], v: Float32Array) => quantizeWeight(name, shape, v, { bits: 4, groupSize: 32 });
    const q8 = (name: string, shape: number[], v: Float32Array) => quantizeWeight(name, shape, v, { bits: 8, groupSize: shape[1], hasZeroPoint: true });
    const w: LlamaWeights = {
      ...dense,
      layers: dense.layers.map((L, i) => ({
        ...L,
        wq: q4(`layers.${i}.wq`, [c.dim, c.dim], L.wq as Float32Array),
        wk: q4(`layers.${i}.wk`, [c.nKvHeads * hd, c.dim], L.wk as Float32Array),
        wv: q8(`layers.${i}.wv`, [c.nKvHeads * hd, c.dim], L.wv as Float32Array),
        wo: q4(`layers.${i}.wo`, [c.dim, c.dim], L.wo as Float32Array),
        w1: q4(`layers.${i}.w1`, [c.hiddenDim, c.dim], L.w1 as Float32Array),
        w2: q4(`layers.${i}.w2`, [c.dim, c.hiddenDim], L.w2 as Float32Array),
        w3: q8(`layers.${i}.w3`, [c.hiddenDim, c.dim], L.w3 as Float32Array),
      })),
      wcls: q8('output', [c.vocabSize, c.dim], dense.wcls as Float32Array),
    };
    const model: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(c, w, o) };
    const engine = await compile(model, { device: gpu.info, prefillChunk: 8, kv: { blockSize: 4 } });
    const m = engine.manifest;
    expect(m.kernels.some((k) => k.family === 'dequant-matmul')).toBe(true);
    expect(m.kernels.some((k) => k.family === 'matmul')).toBe(false); // every projection reads its packed weight
    const quantized = m.weights.filter((x) => x.encoding.kind === 'quantized');
    expect(quantized).toHaveLength(2 * 7 + 1);
    for (const q of quantized) expect(q.parts.map((p) => p.role), q.name).not.toContain('values');
    const session = await engine.createSession({ device: gpu });
    const cpu = new CpuCausalLM(model.build({ lastTokenLogitsOnly: true }), c.seqLen);
    try {
      await expectDecodeMatchesCpu(session, cpu);
    } finally {
      await session.destroy();
    }
  }, LONG);
});
