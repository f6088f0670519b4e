// The quantized KV cache (issue #14 item 3): the int8/int4 semantics of src/ir/kv-cache-quant.ts, the WebGPU
// KV-cache write kernel (bit for bit against the host packing) and paged attention over integer pools (against the
// CPU reference attention over the same dequantized keys and values), through shuffled block tables with GQA/MQA,
// odd KV head counts, head dims that do not fill whole words and block sizes that are not powers of two.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKvCacheWriteKernel, generatePagedAttentionKernel } from '../src/codegen/attention.js';
import { bf16RoundUp, fakeQuantizeKvRows, kvCacheBytes, kvPoolLayout, kvQuantize, kvScale, packKvToken, roundHalfEven, type QuantizedKvDType } from '../src/ir/kv-cache-quant.js';
import { attention } from '../src/runtime/cpu/kernels.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { runNamed, runOutput } from './support/run-kernel.js';

describe('quantized KV semantics (host)', () => {
  it('rounds half to even, rounds scales up to a bfloat16 and keeps |x| / s within QMAX', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, -3]);
    expect(bf16RoundUp(1)).toBe(1);
    expect(bf16RoundUp(1 + 2 ** -20)).toBe(1 + 2 ** -7);
    const rng = new Rng(3);
    for (const dtype of ['int8', 'int4'] as const) {
      const qmax = dtype === 'int8' ? 127 : 7;
      for (let i = 0; i < 2000; i++) {
        const absmax = Math.fround(Math.exp(rng.normals(1, 4)[0]));
        const s = kvScale(absmax, dtype);
        expect(bf16RoundUp(s)).toBe(s);
        expect(s * qmax).toBeGreaterThanOrEqual(absmax * (1 - 2 ** -23));
        expect(s * qmax).toBeLessThanOrEqual(absmax * (1 + 2 ** -7));
        expect(Math.abs(kvQuantize(absmax, s, dtype))).toBeLessThanOrEqual(qmax);
        expect(kvQuantize(-absmax, s, dtype)).toBe(-kvQuantize(absmax, s, dtype));
      }
    }
    expect(kvScale(0, 'int8')).toBe(0);
    expect(kvQuantize(0, 0, 'int8')).toBe(0);
  });

  it('reads back within half a step of the vector scale; a zero vector stays zero', () => {
    const rng = new Rng(5);
    for (const dtype of ['int8', 'int4'] as const) {
      const x = Float32Array.from(rng.normals(64 * 20, 1));
      x.fill(0, 0, 20);
      const y = Float32Array.from(x);
      fakeQuantizeKvRows(y, 0, 64, 20, dtype);
      for (let r = 0; r < 64; r++) {
        const row = x.subarray(r * 20, r * 20 + 20);
        const s = kvScale(Math.max(...row.map(Math.abs)), dtype);
        for (let d = 0; d < 20; d++) expect(Math.abs(y[r * 20 + d] - row[d])).toBeLessThanOrEqual(s / 2 + 1e-7);
      }
      expect(Array.from(y.subarray(0, 20))).toEqual(new Array(20).fill(0));
    }
  });

  it('sizes pool blocks: int8 D + 2 bytes and int4 D/2 + 2 bytes per (token, head) where f16 takes 2D', () => {
    const f16 = kvPoolLayout('f16', 16, 4, 8).blockBytes;
    expect(f16).toBe(16 * 4 * 8 * 2);
    expect(kvPoolLayout('int8', 16, 4, 8).blockBytes / f16).toBe(10 / 16);
    expect(kvPoolLayout('int4', 16, 4, 8).blockBytes / f16).toBe(6 / 16);
    expect(kvPoolLayout('int8', 16, 8, 128).blockBytes / kvPoolLayout('f16', 16, 8, 128).blockBytes).toBeLessThanOrEqual(0.51);
    // odd head counts and dims that do not fill a word round up per token and per vector
    expect(kvPoolLayout('int4', 5, 3, 12)).toEqual({ rowWords: 2, scaleWords: 2, blockWords: 5 * (3 * 2 + 2), blockBytes: 4 * 5 * 8 });
    expect(kvCacheBytes({ layers: 5, numKvHeads: 4, headDim: 8, blockSize: 16, dtype: 'int8' }, 512)).toBe(2 * 5 * 32 * 16 * (4 * 8 + 8));
  });
});

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(async () => {
  await gpu?.destroy();
});

interface Case {
  dtype: QuantizedKvDType;
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  S: number;
  past: number;
  blockSize: number;
  seed: number;
  rowLanes?: number;
}

function shuffled(n: number, rng: Rng): number[] {
  const ids = Array.from({ length: n }, (_v, i) => i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  return ids;
}

/** Max of |ref - got| / max(1, |ref|). */
function maxErr(ref: Tensor, got: Tensor): number {
  let e = 0;
  for (let i = 0; i < ref.size; i++) e = Math.max(e, Math.abs(ref.numbers[i] - got.numbers[i]) / Math.max(1, Math.abs(ref.numbers[i])) || (Number.isNaN(got.numbers[i]) ? Infinity : 0));
  return e;
}

/**
 * Writes all T = past + S tokens with the KV-write kernel into pools of garbage words, checks every written word
 * against the host packing, then runs paged attention for the last S positions and compares it with the CPU
 * reference attention over the dequantized keys and values (what the `kv_quantize` op gives).
 */
async function runCase(c: Case): Promise<number> {
  const Dv = c.Dv ?? c.D;
  const rng = new Rng(c.seed);
  const T = c.past + c.S;
  const k = Float32Array.from(rng.normals(T * c.Hkv * c.D, 1.5));
  const v = Float32Array.from(rng.normals(T * c.Hkv * Dv, 0.7));
  // a few outliers, and one all-zero vector
  k[3] = 40;
  v[5] = -25;
  k.fill(0, c.Hkv * c.D, c.Hkv * c.D + c.D);
  const q = Tensor.from('f32', [1, c.S, c.Hq, c.D], rng.normals(c.S * c.Hq * c.D, 1));
  const blocks = Math.ceil(T / c.blockSize);
  const numBlocks = blocks + 3;
  const table = Uint32Array.from(shuffled(numBlocks, rng).slice(0, blocks));
  const LK = kvPoolLayout(c.dtype, c.blockSize, c.Hkv, c.D);
  const LV = kvPoolLayout(c.dtype, c.blockSize, c.Hkv, Dv);
  const garbage = (words: number): Uint32Array => Uint32Array.from({ length: words }, () => rng.int(0x7fffffff) * 2 + rng.int(2));
  const kPool = garbage(numBlocks * LK.blockWords);
  const vPool = garbage(numBlocks * LV.blockWords);
  const expectK = Uint32Array.from(kPool);
  const expectV = Uint32Array.from(vPool);
  const put = (pool: Uint32Array, L: typeof LK, src: Float32Array, dim: number, p: number): void => {
    const b = table[Math.floor(p / c.blockSize)];
    const t = p % c.blockSize;
    const { data, scales } = packKvToken(src.subarray(p * c.Hkv * dim, (p + 1) * c.Hkv * dim), c.Hkv, dim, c.dtype);
    pool.set(data, b * L.blockWords + t * c.Hkv * L.rowWords);
    pool.set(scales, b * L.blockWords + c.blockSize * c.Hkv * L.rowWords + t * L.scaleWords);
  };
  for (let p = 0; p < T; p++) {
    put(expectK, LK, k, c.D, p);
    put(expectV, LV, v, Dv, p);
  }
  const write = generateKvCacheWriteKernel({ numKvHeads: c.Hkv, headDim: c.D, valueDim: Dv, blockSize: c.blockSize, dtype: c.dtype });
  const kNew = new Tensor('f32', [T, c.Hkv, c.D], k);
  const vNew = new Tensor('f32', [T, c.Hkv, Dv], v);
  const pools = await runNamed(gpu!.device, write, { k_new: kNew, v_new: vNew, block_table: table, k_pool: kPool, v_pool: vPool }, { seq: T, past: 0 }, ['k_pool', 'v_pool']);
  expect(Array.from(new Uint32Array(pools.k_pool, 0, kPool.length)), `keys ${JSON.stringify(c)}`).toEqual(Array.from(expectK));
  expect(Array.from(new Uint32Array(pools.v_pool, 0, vPool.length)), `values ${JSON.stringify(c)}`).toEqual(Array.from(expectV));

  const attn = generatePagedAttentionKernel({
    numHeads: c.Hq,
    numKvHeads: c.Hkv,
    headDim: c.D,
    valueDim: Dv,
    dtype: 'f32',
    kvDType: c.dtype,
    causal: true,
    blockSize: c.blockSize,
    variant: { kind: 'decode', rowLanes: c.rowLanes ?? 8 },
    staticLoops: false,
  });
  const got = await runOutput(gpu!.device, attn, { q, k_pool: new Uint32Array(pools.k_pool), v_pool: new Uint32Array(pools.v_pool), block_table: table }, { dtype: 'f32', shape: [1, c.S, c.Hq, Dv], fill: 'nan' }, { seq: c.S, past: c.past });
  const kq = Float32Array.from(k);
  const vq = Float32Array.from(v);
  fakeQuantizeKvRows(kq, 0, T * c.Hkv, c.D, c.dtype);
  fakeQuantizeKvRows(vq, 0, T * c.Hkv, Dv, c.dtype);
  const ref = attention(q, new Tensor('f32', [1, T, c.Hkv, c.D], kq), new Tensor('f32', [1, T, c.Hkv, Dv], vq), undefined, true, Math.fround(1 / Math.sqrt(c.D)));
  return maxErr(ref, got);
}

describe('integer KV pools on WebGPU', () => {
  it('KV-cache write packs bit for bit as the host does; paged attention over the pools matches the CPU reference', async (ctx) => {
    if (!gpu) return ctx.skip();
    // lavapipe compiles two pipelines per case: four cases cover both types, GQA 2/3, MQA, odd Hkv, D != Dv, ragged
    // words (int8 D = 20, int4 D = 12), block sizes 16, 5, 7, 8, decode S = 1 and multi-token S
    const cases: Case[] = [
      { dtype: 'int8', Hq: 8, Hkv: 4, D: 8, S: 1, past: 37, blockSize: 16, seed: 1 },
      { dtype: 'int8', Hq: 6, Hkv: 3, D: 20, Dv: 12, S: 3, past: 18, blockSize: 5, seed: 2 },
      { dtype: 'int4', Hq: 6, Hkv: 3, D: 12, S: 4, past: 9, blockSize: 7, seed: 5 },
      { dtype: 'int4', Hq: 4, Hkv: 1, D: 40, Dv: 24, S: 1, past: 70, blockSize: 8, seed: 6 },
    ];
    for (const c of cases) expect(await runCase(c), JSON.stringify(c)).toBeLessThan(2e-5);
  }, 300_000);
});
