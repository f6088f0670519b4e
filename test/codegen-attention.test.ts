// Attention WGSL kernels (paged KV cache and contiguous K/V) and the KV-cache write kernel, run on the WebGPU device
// (lavapipe in CI) against the CPU reference `attention`. Shapes are sampled to keep lavapipe time low: GQA ratios
// 1, 2, 4, 8; ragged S, T and D; causal and not; past > 0 with shuffled block tables; block sizes 16 and others.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  generateAttentionKernel,
  generateKvCacheWriteKernel,
  generatePagedAttentionKernel,
  type AttentionDType,
  type AttentionVariant,
} from '../src/codegen/attention.js';
import type { KernelSource } from '../src/codegen/kernel.js';
import { headSliceWindow } from '../src/ir/head-window.js';
import { chooseAttentionVariant, decodeRowLanes } from '../src/codegen/schedule/attention.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { attention } from '../src/runtime/cpu/kernels.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { fromDeviceBytes } from '../src/runtime/webgpu/one-shot.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, gpuHas, type TestGPU } from './helpers/webgpu.js';
import { runNamed, runOutput, type BufferInit } from './support/run-kernel.js';

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(async () => {
  await gpu?.destroy();
});

const hasF16 = (): boolean => gpuHas(gpu!, 'shader-f16');

function randn(dtype: AttentionDType, shape: number[], rng: Rng, scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.from(dtype, shape, rng.normals(n, scale));
}

/** Max of |ref - got| / max(1, |ref|); NaN anywhere is Infinity. */
function maxErr(ref: Tensor, got: Tensor): number {
  let e = 0;
  for (let i = 0; i < ref.size; i++) {
    const d = Math.abs(ref.numbers[i] - got.numbers[i]) / Math.max(1, Math.abs(ref.numbers[i]));
    e = Number.isNaN(d) ? Infinity : Math.max(e, d);
  }
  return e;
}

const tol = (dt: AttentionDType): number => (dt === 'f32' ? 2e-5 : 3e-3);

/** A shuffled block table of `used` blocks out of a pool of `used + spare`. */
function shuffledTable(used: number, spare: number, rng: Rng): { table: Uint32Array; numBlocks: number } {
  const numBlocks = used + spare;
  const ids = Array.from({ length: numBlocks }, (_v, i) => i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  return { table: Uint32Array.from(ids.slice(0, used)), numBlocks };
}

interface PagedCase {
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  S: number;
  past: number;
  blockSize: number;
  causal: boolean;
  dtype?: AttentionDType;
  variant: AttentionVariant['kind'] | AttentionVariant;
  seed: number;
  /** Constant loop bounds (slow to compile on lavapipe; default false here). */
  staticLoops?: boolean;
  /** Pool storage type (default: dtype). */
  kvDType?: AttentionDType;
}

const kernelCache = new Map<string, KernelSource>();
function cached(key: unknown, make: () => KernelSource): KernelSource {
  const k = JSON.stringify(key);
  let ks = kernelCache.get(k);
  if (!ks) kernelCache.set(k, (ks = make()));
  return ks;
}

/**
 * Appends the S new tokens with the KV-write kernel to pools already holding `past` tokens (and garbage elsewhere),
 * checks the pools bit for bit, then runs paged attention and compares with the reference.
 */
async function runPaged(c: PagedCase): Promise<{ err: number; kernel: KernelSource }> {
  const dt = c.dtype ?? 'f32';
  const kvDt = c.kvDType ?? dt;
  const Dv = c.Dv ?? c.D;
  const rng = new Rng(c.seed);
  const T = c.past + c.S;
  const q = randn(dt, [1, c.S, c.Hq, c.D], rng);
  const k = randn(dt, [1, T, c.Hkv, c.D], rng);
  const v = randn(dt, [1, T, c.Hkv, Dv], rng);
  const { table, numBlocks } = shuffledTable(Math.max(1, Math.ceil(T / c.blockSize)), 3, rng);
  // pools: garbage everywhere, then the past tokens at their slots
  const kPool = randn(kvDt, [numBlocks * c.blockSize * c.Hkv * c.D], rng, 100);
  const vPool = randn(kvDt, [numBlocks * c.blockSize * c.Hkv * Dv], rng, 100);
  const slot = (p: number): number => table[Math.floor(p / c.blockSize)] * c.blockSize + (p % c.blockSize);
  const put = (pool: Tensor, src: Tensor, w: number, p: number): void => {
    (pool.data as Float32Array).set((src.data as Float32Array).subarray(p * c.Hkv * w, (p + 1) * c.Hkv * w), slot(p) * c.Hkv * w);
  };
  for (let p = 0; p < c.past; p++) {
    put(kPool, k, c.D, p);
    put(vPool, v, Dv, p);
  }
  const expectK = new Tensor(kvDt, kPool.shape, Float32Array.from(kPool.data as Float32Array));
  const expectV = new Tensor(kvDt, vPool.shape, Float32Array.from(vPool.data as Float32Array));
  for (let p = c.past; p < T; p++) {
    put(expectK, k, c.D, p);
    put(expectV, v, Dv, p);
  }
  const kNew = new Tensor(dt, [c.S, c.Hkv, c.D], (k.data as Float32Array).slice(c.past * c.Hkv * c.D));
  const vNew = new Tensor(dt, [c.S, c.Hkv, Dv], (v.data as Float32Array).slice(c.past * c.Hkv * Dv));
  const dims = { seq: c.S, past: c.past };
  const write = cached(['write', c.Hkv, c.D, Dv, c.blockSize, dt, kvDt], () =>
    generateKvCacheWriteKernel({ numKvHeads: c.Hkv, headDim: c.D, valueDim: Dv, blockSize: c.blockSize, dtype: kvDt, sourceDType: dt }),
  );
  const pools = await runNamed(gpu!.device, write, { k_new: kNew, v_new: vNew, block_table: table, k_pool: kPool, v_pool: vPool }, dims, ['k_pool', 'v_pool']);
  const gotK = fromDeviceBytes(kvDt, kPool.shape, pools.k_pool);
  const gotV = fromDeviceBytes(kvDt, vPool.shape, pools.v_pool);
  expect(Array.from(gotK.numbers)).toEqual(Array.from(expectK.numbers));
  expect(Array.from(gotV.numbers)).toEqual(Array.from(expectV.numbers));

  const staticLoops = c.staticLoops ?? false;
  const ks = cached(['paged', c.Hq, c.Hkv, c.D, Dv, c.blockSize, c.causal, dt, kvDt, c.variant, staticLoops], () =>
    generatePagedAttentionKernel({ numHeads: c.Hq, numKvHeads: c.Hkv, headDim: c.D, valueDim: Dv, dtype: dt, kvDType: kvDt, causal: c.causal, blockSize: c.blockSize, variant: c.variant, staticLoops }),
  );
  const got = await runOutput(gpu!.device, ks, { q, k_pool: new Uint32Array(pools.k_pool), v_pool: new Uint32Array(pools.v_pool), block_table: table }, { dtype: dt, shape: [1, c.S, c.Hq, Dv] }, dims);
  const ref = attention(q, k, v, undefined, c.causal, Math.fround(1 / Math.sqrt(c.D)));
  return { err: maxErr(ref, got), kernel: ks };
}

describe('paged attention through a shuffled block table (with the KV-cache write kernel)', () => {
  // kernel configs are shared by several (S, past) cases: compiling is what costs time on lavapipe
  it('decode: GQA ratios 1, 2, 4, 8; S 1..4; ragged D and Dv; past > 0; causal and not; block sizes 16, 5, 7', async (ctx) => {
    if (!gpu) return ctx.skip();
    const cases: PagedCase[] = [
      { Hq: 4, Hkv: 4, D: 64, S: 1, past: 37, blockSize: 16, causal: true, variant: 'decode', seed: 1 },
      { Hq: 4, Hkv: 4, D: 64, S: 3, past: 0, blockSize: 16, causal: true, variant: 'decode', seed: 2 },
      { Hq: 8, Hkv: 4, D: 80, S: 2, past: 21, blockSize: 5, causal: true, variant: 'decode', seed: 3 },
      { Hq: 8, Hkv: 2, D: 8, S: 4, past: 150, blockSize: 16, causal: false, variant: 'decode', seed: 4 },
      { Hq: 8, Hkv: 1, D: 40, Dv: 24, S: 1, past: 300, blockSize: 7, causal: true, variant: { kind: 'decode', rowLanes: 16, keyTile: 12 }, seed: 5 },
      { Hq: 8, Hkv: 1, D: 40, Dv: 24, S: 3, past: 5, blockSize: 7, causal: true, variant: { kind: 'decode', rowLanes: 16, keyTile: 12 }, seed: 6 },
      // the software-device lane counts (decodeRowLanes): fewer lanes than value dims, ragged dims, GQA 2 and 8
      { Hq: 8, Hkv: 4, D: 8, S: 1, past: 260, blockSize: 16, causal: true, variant: { kind: 'decode', rowLanes: 4 }, seed: 7 },
      { Hq: 2, Hkv: 2, D: 80, S: 3, past: 19, blockSize: 7, causal: true, variant: { kind: 'decode', rowLanes: 4 }, seed: 8 },
      { Hq: 8, Hkv: 1, D: 20, Dv: 12, S: 2, past: 45, blockSize: 5, causal: true, variant: { kind: 'decode', rowLanes: 8 }, seed: 9 },
      { Hq: 4, Hkv: 2, D: 64, S: 1, past: 77, blockSize: 16, causal: false, variant: { kind: 'decode', rowLanes: 16 }, seed: 10 },
    ];
    for (const c of cases) {
      const r = await runPaged(c);
      expect(r.kernel.variant).toMatch(/^paged-decode/);
      expect(r.err, JSON.stringify(c)).toBeLessThan(tol('f32'));
    }
  });

  it('the KV-cache write reads k and v as head windows of wider sources (a merged QKV projection) in place', async (ctx) => {
    if (!gpu) return ctx.skip();
    // merged projection of 5 q heads + 3 k heads + 3 v heads of 12 dims (ragged), 4 new tokens at past 9, block 4
    const [S, past, Hkv, D, blockSize, Htot] = [4, 9, 3, 12, 4, 11];
    const rng = new Rng(90);
    const qkv = randn('f32', [S, Htot, D], rng);
    const { table, numBlocks } = shuffledTable(Math.ceil((past + S) / blockSize), 2, rng);
    const kPool = randn('f32', [numBlocks * blockSize * Hkv * D], rng, 100);
    const vPool = randn('f32', [numBlocks * blockSize * Hkv * D], rng, 100);
    const expectK = Float32Array.from(kPool.data as Float32Array);
    const expectV = Float32Array.from(vPool.data as Float32Array);
    const src = qkv.data as Float32Array;
    for (let s = 0; s < S; s++) {
      const p = past + s;
      const slot = table[Math.floor(p / blockSize)] * blockSize + (p % blockSize);
      expectK.set(src.subarray((s * Htot + 5) * D, (s * Htot + 5 + Hkv) * D), slot * Hkv * D);
      expectV.set(src.subarray((s * Htot + 8) * D, (s * Htot + 8 + Hkv) * D), slot * Hkv * D);
    }
    const write = generateKvCacheWriteKernel({ numKvHeads: Hkv, headDim: D, blockSize, dtype: 'f32', keySource: { numHeads: Htot, firstHead: 5 }, valueSource: { numHeads: Htot, firstHead: 8 } });
    expect(write.variant).toContain('window');
    const pools = await runNamed(gpu!.device, write, { k_new: qkv, v_new: qkv, block_table: table, k_pool: kPool, v_pool: vPool }, { seq: S, past }, ['k_pool', 'v_pool']);
    expect(Array.from(fromDeviceBytes('f32', kPool.shape, pools.k_pool).numbers)).toEqual(Array.from(expectK));
    expect(Array.from(fromDeviceBytes('f32', vPool.shape, pools.v_pool).numbers)).toEqual(Array.from(expectV));
    expect(() => generateKvCacheWriteKernel({ numKvHeads: 3, headDim: 8, blockSize: 4, dtype: 'f32', valueSource: { numHeads: 4, firstHead: 2 } })).toThrow(/not inside a source of 4 heads/);
  });

  it('prefill-flash: ragged S across query tiles, past > 0, GQA, D up to 256, a custom tiling', async (ctx) => {
    if (!gpu) return ctx.skip();
    const flash8: AttentionVariant = { kind: 'prefill-flash', queryRows: 8, rowLanes: 4, keyTile: 12 };
    const cases: PagedCase[] = [
      { Hq: 4, Hkv: 2, D: 32, S: 40, past: 0, blockSize: 16, causal: true, variant: 'prefill-flash', seed: 11 },
      { Hq: 4, Hkv: 2, D: 32, S: 17, past: 45, blockSize: 16, causal: true, variant: 'prefill-flash', seed: 12 },
      { Hq: 4, Hkv: 2, D: 32, S: 1, past: 9, blockSize: 16, causal: true, variant: 'prefill-flash', seed: 13 },
      { Hq: 8, Hkv: 1, D: 80, S: 23, past: 3, blockSize: 7, causal: false, variant: flash8, seed: 14 },
      { Hq: 4, Hkv: 4, D: 256, S: 9, past: 30, blockSize: 16, causal: true, variant: 'prefill-flash', seed: 15 },
    ];
    for (const c of cases) {
      const r = await runPaged(c);
      expect(r.kernel.variant).toMatch(/^paged-prefill-flash/);
      expect(r.err, JSON.stringify(c)).toBeLessThan(tol('f32'));
    }
  });

  it('f16 activations (f32 math) in both variants, with f16 pools and with f32 pools', async (ctx) => {
    if (!gpu || !hasF16()) return ctx.skip();
    const cases: PagedCase[] = [
      { Hq: 8, Hkv: 2, D: 64, S: 2, past: 33, blockSize: 16, causal: true, dtype: 'f16', kvDType: 'f32', variant: 'decode', seed: 21 },
      { Hq: 4, Hkv: 1, D: 80, S: 19, past: 12, blockSize: 8, causal: true, dtype: 'f16', variant: 'prefill-flash', seed: 22 },
    ];
    for (const c of cases) {
      const r = await runPaged(c);
      expect(r.kernel.wgsl.startsWith('enable f16;')).toBe(true);
      expect(r.err, JSON.stringify(c)).toBeLessThan(tol('f16'));
    }
  });

  it('one compiled kernel serves every (seq, past): a decode loop over growing past across block boundaries', async (ctx) => {
    if (!gpu) return ctx.skip();
    const before = kernelCache.size;
    for (const past of [0, 15, 16, 17, 64]) {
      const r = await runPaged({ Hq: 4, Hkv: 4, D: 64, S: 1, past, blockSize: 16, causal: true, variant: 'decode', seed: 30 + past });
      expect(r.err).toBeLessThan(tol('f32'));
    }
    expect(kernelCache.size - before).toBe(0);
  });

  it('constant loop trip counts (the default, for GPU compilers; slow to compile on lavapipe, so one small kernel)', async (ctx) => {
    if (!gpu) return ctx.skip();
    for (const [S, past] of [
      [1, 20],
      [2, 3],
    ])
      expect((await runPaged({ Hq: 4, Hkv: 2, D: 8, S, past, blockSize: 4, causal: true, variant: 'decode', seed: 35 + S, staticLoops: true })).err).toBeLessThan(tol('f32'));
  });
});

describe('contiguous attention (no KV cache)', () => {
  async function runContiguous(o: {
    B: number;
    S: number;
    T: number;
    Hq: number;
    Hkv: number;
    D: number;
    causal: boolean;
    variant: AttentionVariant['kind'] | AttentionVariant;
    mask?: { dtype: 'bool' | 'f32'; shape: number[]; symbolic: (number | string)[]; values: number[] };
    seed: number;
  }): Promise<number> {
    const rng = new Rng(o.seed);
    const q = randn('f32', [o.B, o.S, o.Hq, o.D], rng);
    const k = randn('f32', [o.B, o.T, o.Hkv, o.D], rng);
    const v = randn('f32', [o.B, o.T, o.Hkv, o.D], rng);
    const mask = o.mask ? Tensor.from(o.mask.dtype, o.mask.shape, o.mask.values) : undefined;
    const ks = cached(['contig', o.Hq, o.Hkv, o.D, o.causal, JSON.stringify(o.variant), o.mask?.dtype, o.mask?.symbolic], () =>
      generateAttentionKernel({
        numHeads: o.Hq,
        numKvHeads: o.Hkv,
        headDim: o.D,
        dtype: 'f32',
        causal: o.causal,
        batch: 'batch',
        seq: 'seq',
        kvLen: 'kv',
        variant: o.variant,
        staticLoops: false,
        mask: o.mask ? { dtype: o.mask.dtype, shape: o.mask.symbolic } : undefined,
      }),
    );
    const inputs: Record<string, BufferInit> = { q, k, v };
    if (mask) inputs.mask = mask;
    const got = await runOutput(gpu!.device, ks, inputs, { dtype: 'f32', shape: [o.B, o.S, o.Hq, o.D] }, { batch: o.B, seq: o.S, kv: o.T });
    return maxErr(attention(q, k, v, mask, o.causal, Math.fround(1 / Math.sqrt(o.D))), got);
  }

  it('BERT-style: batch 2, padding bool mask [B, 1, 1, T] (a fully padded row gives zeros), both variants', async (ctx) => {
    if (!gpu) return ctx.skip();
    const B = 2;
    const S = 11;
    // batch 0: last 3 keys padded; batch 1: every key padded (rows see nothing -> zeros, as the reference)
    const values = [...Array.from({ length: S }, (_v, j) => (j < S - 3 ? 1 : 0)), ...Array<number>(S).fill(0)];
    for (const variant of ['decode', 'prefill-flash', { kind: 'decode', rowLanes: 4 }] as const) {
      const err = await runContiguous({ B, S, T: S, Hq: 4, Hkv: 4, D: 16, causal: false, variant, mask: { dtype: 'bool', shape: [B, 1, 1, S], symbolic: ['batch', 1, 1, 'kv'], values }, seed: 50 });
      expect(err, JSON.stringify(variant)).toBeLessThan(tol('f32'));
    }
  });

  it('additive f32 mask [1, 1, S, T] with -inf and finite entries, GQA, causal, T > S', async (ctx) => {
    if (!gpu) return ctx.skip();
    const S = 5;
    const T = 21;
    const rng = new Rng(60);
    const values = Array.from({ length: S * T }, () => (rng.next() < 0.2 ? -Infinity : rng.next() < 0.5 ? -2.5 : 0));
    const err = await runContiguous({ B: 1, S, T, Hq: 8, Hkv: 2, D: 24, causal: true, variant: 'prefill-flash', mask: { dtype: 'f32', shape: [1, 1, S, T], symbolic: [1, 1, 'seq', 'kv'], values }, seed: 61 });
    expect(err).toBeLessThan(tol('f32'));
  });

  it('causal self-attention without a mask, batch 3, MQA; causal with T < S hides the first S - T rows', async (ctx) => {
    if (!gpu) return ctx.skip();
    expect(await runContiguous({ B: 3, S: 19, T: 19, Hq: 4, Hkv: 1, D: 20, causal: true, variant: 'prefill-flash', seed: 70 })).toBeLessThan(tol('f32'));
    expect(await runContiguous({ B: 1, S: 6, T: 4, Hq: 4, Hkv: 1, D: 20, causal: true, variant: 'prefill-flash', seed: 71 })).toBeLessThan(tol('f32'));
  });
});

describe('attention codegen (no device)', () => {
  it('takes only static, step-1 slices of the head axis of a rank-4 tensor as head windows', () => {
    const b = new GraphBuilder();
    const qkv = b.input('qkv', 'f32', [1, 'seq', 16, 8]);
    expect(headSliceWindow(b.slice(qkv, { axes: [2], starts: [12], ends: [16] }))).toEqual({ numHeads: 16, firstHead: 12 });
    expect(headSliceWindow(b.slice(qkv, { axes: [2], starts: [0], ends: [16], steps: [2] }))).toBeUndefined();
    expect(headSliceWindow(b.slice(qkv, { axes: [3], starts: [0], ends: [4] }))).toBeUndefined();
    expect(headSliceWindow(b.slice(qkv, { axes: [1, 2], starts: [0, 0], ends: [1, 4] }))).toBeUndefined();
    expect(headSliceWindow(qkv)).toBeUndefined();
  });

  it('chooses decode for small known S and prefill-flash otherwise', () => {
    expect(chooseAttentionVariant(1)).toBe('decode');
    expect(chooseAttentionVariant('1')).toBe('decode');
    expect(chooseAttentionVariant('seq')).toBe('prefill-flash');
    expect(chooseAttentionVariant('seq', 2)).toBe('decode');
    expect(chooseAttentionVariant(512)).toBe('prefill-flash');
  });

  it('gives decode kernels 32 lanes per head on GPUs and about a quarter of the head dim on software devices', () => {
    expect(decodeRowLanes(128, 128, false)).toBe(32);
    expect(decodeRowLanes(8, 8, false)).toBe(32);
    expect(decodeRowLanes(8, 8, true)).toBe(4);
    expect(decodeRowLanes(64, 64, true)).toBe(16);
    expect(decodeRowLanes(40, 24, true)).toBe(16);
    expect(decodeRowLanes(80, 80, true)).toBe(32);
    expect(decodeRowLanes(256, 256, true)).toBe(32);
  });

  it('emits readable, self-describing WGSL and the KernelSource contract', () => {
    const k = generatePagedAttentionKernel({
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      dtype: 'f16',
      causal: true,
      blockSize: 16,
      variant: 'decode',
      nodes: ['%7 = attention(%4, %5, %6) {causal}\n// injected'],
    });
    expect(k.family).toBe('attention');
    expect(k.params).toEqual(['seq', 'past']);
    expect(k.bindings.map((b) => `${b.name}:${b.access}`)).toEqual(['q:read', 'k_pool:read', 'v_pool:read', 'block_table:read', 'out:read_write']);
    expect(k.grid).toEqual([8 * (4 / 4), 'seq', 1]);
    expect(k.wgsl).toMatch(/const GROUP_SIZE: u32 = 4u;/);
    expect(k.wgsl).toMatch(/const Q_ROWS: u32 = 4u; \/\/ query vectors/);
    // the nodes are the kernel's provenance, kept beside the WGSL, never in it (a kernel's text is its identity)
    expect(k.nodes).toEqual(['%7 = attention(%4, %5, %6) {causal}\n// injected']);
    expect(k.wgsl).not.toContain('injected');
    expect(k.wgsl).not.toContain('%7');
    expect(k.features).toEqual(['shader-f16']);
    expect(k.wgsl).toMatch(/^enable f16;\n/);
    const w = generateKvCacheWriteKernel({ numKvHeads: 8, headDim: 128, blockSize: 16, dtype: 'f16', seq: 'seq', past: 'past' });
    expect(w.bindings.filter((b) => b.access === 'read_write').map((b) => b.name)).toEqual(['k_pool', 'v_pool']);
    expect(w.grid).toEqual([16, 'seq', 1]);
  });

  it('staticLoops: false changes only the loop bounds', () => {
    const spec = { numHeads: 8, numKvHeads: 2, headDim: 80, dtype: 'f32', causal: true, blockSize: 16 } as const;
    for (const variant of ['decode', 'prefill-flash'] as const) {
      const a = generatePagedAttentionKernel({ ...spec, variant }).wgsl.split('\n');
      const b = generatePagedAttentionKernel({ ...spec, variant, staticLoops: false }).wgsl.split('\n');
      const hidden = b.filter((l) => !a.includes(l));
      expect(hidden.filter((l) => !/^ {2}(let n_\w+ = min\(|\/\/ loop bounds hidden)/.test(l)).every((l) => /for \(var \w+ = 0u; \w+ < n_\w+;/.test(l))).toBe(true);
      expect(hidden.length).toBeGreaterThan(5);
    }
  });

  it('rejects impossible head shapes and tunings', () => {
    expect(() => generatePagedAttentionKernel({ numHeads: 6, numKvHeads: 4, headDim: 64, dtype: 'f32', causal: true, blockSize: 16 })).toThrow(/multiple of KV heads/);
    expect(() => generatePagedAttentionKernel({ numHeads: 4, numKvHeads: 4, headDim: 512, dtype: 'f32', causal: true, blockSize: 16 })).toThrow(/head dim 512/);
    expect(() =>
      generatePagedAttentionKernel({ numHeads: 8, numKvHeads: 2, headDim: 64, dtype: 'f32', causal: true, blockSize: 16, variant: { kind: 'decode', headsPerWorkgroup: 3 } }),
    ).toThrow(/divide the group size/);
  });
});
