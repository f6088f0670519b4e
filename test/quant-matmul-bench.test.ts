// The quantized matmul benchmark (bench/quant-matmul.bench.ts) in its smallest configuration on WebGPU (lavapipe in
// CI): one row per format and M with the documented fields, the kernels the families pick, weight bytes as the
// encodings store them, and every kernel checked against the host reference before it is timed. Timings are not
// checked. The output check itself is tested on the host: it passes x · Wᵀ and rejects NaN and wrong elements.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkMatmulOutput, formatQuantMatmulBench, QUANT_BENCH_FORMATS, runQuantMatmulBench } from '../bench/quant-matmul.bench.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';

// lavapipe JIT-compiles each pipeline on its first dispatch
const LONG = 300_000;

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

/** x · Wᵀ in f64, rounded to f32. */
function reference(x: Float32Array, w: Float32Array, M: number, N: number, K: number): Float32Array {
  const out = new Float32Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      out[m * N + n] = s;
    }
  return out;
}

describe('checkMatmulOutput', () => {
  const [M, N, K] = [3, 40, 64];
  const x = new Rng(1).normals(M * K);
  const w = new Rng(2).normals(N * K, 0.05);
  it('passes the reference product', () => {
    expect(checkMatmulOutput('ref', reference(x, w, M, N, K), x, w, M, N, K)).toBeLessThan(1);
  });
  it('rejects an unwritten (NaN) element anywhere, and a wrong sampled element', () => {
    const nan = reference(x, w, M, N, K);
    nan[M * N - 3] = NaN;
    expect(() => checkMatmulOutput('nan', nan, x, w, M, N, K)).toThrow(/output \[2, 37\] is NaN/);
    const off = reference(x, w, M, N, K);
    off[N + 1] += 0.01;
    expect(() => checkMatmulOutput('off', off, x, w, M, N, K)).toThrow(/output \[1, 1\]/);
  });
});

describe('quant matmul bench on WebGPU', () => {
  it('smallest configuration: a checked row per format and M, f32 first', async (ctx) => {
    if (!gpu) return ctx.skip();
    const [N, K] = [64, 256];
    const rows = await runQuantMatmulBench(gpu.device, { shapes: [[N, K]], decodeMs: [1], prefillM: 8, maxTime: 0.05 });
    const formats = ['f32', ...QUANT_BENCH_FORMATS];
    expect(rows.map((r) => `${r.format} ${r.M}`)).toEqual(formats.flatMap((f) => [`${f} 1`, `${f} 8`]));
    const fields = ['case', 'impl', 'seconds', 'rme', 'samples', 'median', 'format', 'N', 'K', 'M', 'weightBytes', 'weightGbps', 'gflops', 'speedup', 'checkError', 'note'];
    for (const r of rows) {
      expect(Object.keys(r).sort(), r.case).toEqual([...fields].sort());
      expect(r.case).toBe(`${r.M === 1 ? 'gemv' : 'gemm'} M=${r.M} ${N}x${K} ${r.format}`);
      expect([r.N, r.K]).toEqual([N, K]);
      for (const v of [r.seconds, r.median, r.weightGbps, r.gflops!, r.speedup]) expect(v, r.case).toBeGreaterThan(0);
      expect(r.samples).toBeGreaterThanOrEqual(3);
      expect(r.checkError, r.case).toBeLessThan(1);
      const family = r.format === 'f32' ? 'matmul/' : r.format === 'w8a8' ? 'w8a8-matmul/' : /^int/.test(r.format) ? 'dequant-matmul/' : 'codebook-matmul/';
      expect(r.impl.startsWith(family), `${r.case}: ${r.impl}`).toBe(true);
      expect(r.weightGbps).toBeCloseTo(r.weightBytes / r.median / 1e9, 6);
    }
    for (const M of [1, 8]) {
      const f32 = rows.find((r) => r.format === 'f32' && r.M === M)!;
      expect(f32.speedup).toBe(1);
      for (const r of rows.filter((q) => q.M === M)) expect(r.speedup).toBeCloseTo(f32.median / r.median, 9);
    }
    // bytes as stored: values or packed integers / indices, then f32 scales, i32 zero points (groups of 32), tables
    const el = N * K;
    const bytes: Record<string, number> = {
      f32: el * 4,
      int8: el + (el / 32) * 8,
      'int4-g32': el / 2 + (el / 32) * 8,
      'int2-g32': el / 4 + (el / 32) * 8,
      nf4: el / 2 + (el / 64) * 4 + 16 * 4,
      codebook16: el / 2 + 16 * 4,
      codebook256: el + 256 * 4,
      w8a8: el + N * 4, // int8 per output channel: one f32 scale per row
    };
    for (const r of rows) expect(r.weightBytes, r.format).toBe(bytes[r.format]);
    const table = formatQuantMatmulBench(rows).split('\n');
    expect(table).toHaveLength(rows.length + 1);
    expect(table[0]).toMatch(/^case +median ms +±% +weight MiB +weight GB\/s +vs f32 +impl$/);
  }, LONG);
});
