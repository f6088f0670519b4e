// H2O's attention-mass kernel (src/codegen/attention-mass.ts) on the WebGPU device (lavapipe in CI) against the CPU
// reference `attentionKeyMass` the CPU executor feeds H2O with: ragged batches of several sequences of different
// lengths (prefill chunks and decode rows together), block sizes that do not divide the lengths, shuffled block
// tables, GQA ratios 1, 2 and 4, f32 and f16 storage; the kernel adds to what the buffer holds (the layers of a step).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAttentionMassKernel } from '../src/codegen/attention-mass.js';
import { attentionKeyMass } from '../src/runtime/cpu/kernels.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, gpuHas, type TestGPU } from './helpers/webgpu.js';
import { runNamed } from './support/run-kernel.js';

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(async () => {
  await gpu?.destroy();
});

interface MassCase {
  Hq: number;
  Hkv: number;
  D: number;
  blockSize: number;
  /** Per sequence of the batch: tokens already cached and new rows this step. */
  seqs: { past: number; rows: number }[];
  dtype: 'f32' | 'f16';
  seed: number;
}

/** f16-rounded copy of `x` when the storage is f16 (what the GPU reads). */
function stored(dtype: 'f32' | 'f16', shape: number[], x: Float32Array): Tensor {
  return Tensor.from(dtype, shape, Array.from(x));
}

/**
 * Runs the kernel on a random ragged batch and returns the worst |gpu − cpu| over every row and key, where cpu is
 * `attentionKeyMass` of the row's query over its sequence's keys `0 ..= position` plus the buffer's initial value,
 * and checks each sequence's rows summed equal `attentionKeyMass` of all its rows at once (the CPU executor's call).
 */
async function runCase(c: MassCase): Promise<number> {
  const rng = new Rng(c.seed);
  const { Hq, Hkv, D, blockSize: bs } = c;
  const lengths = c.seqs.map((s) => s.past + s.rows);
  const stride = Math.max(...lengths.map((n) => Math.ceil(n / bs))) + 1; // table_stride, wider than any sequence needs
  const S = c.seqs.reduce((a, s) => a + s.rows, 0);
  // pool: garbage everywhere, each sequence's keys at its shuffled blocks
  const used = lengths.reduce((a, n) => a + Math.ceil(n / bs), 0);
  const numBlocks = used + 3;
  const ids = Array.from({ length: numBlocks }, (_v, i) => i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  const pool = rng.normals(numBlocks * bs * Hkv * D, 50);
  const table = new Uint32Array(c.seqs.length * stride);
  const keys: Tensor[] = [];
  let next = 0;
  c.seqs.forEach((_s, b) => {
    const n = lengths[b];
    for (let i = 0; i < Math.ceil(n / bs); i++) table[b * stride + i] = ids[next++];
    const k = stored(c.dtype, [1, n, Hkv, D], rng.normals(n * Hkv * D, 2));
    for (let p = 0; p < n; p++) {
      const at = (table[b * stride + Math.floor(p / bs)] * bs + (p % bs)) * Hkv * D;
      pool.set((k.data as Float32Array).subarray(p * Hkv * D, (p + 1) * Hkv * D), at);
    }
    keys.push(k);
  });
  // rows interleaved as a scheduler lays them out: sequence by sequence
  const q = stored(c.dtype, [S, Hq, D], rng.normals(S * Hq * D, 2));
  const positions = new Int32Array(S);
  const rowSeq = new Int32Array(S);
  let r = 0;
  c.seqs.forEach((s, b) => {
    for (let i = 0; i < s.rows; i++, r++) {
      positions[r] = s.past + i;
      rowSeq[r] = b;
    }
  });
  const width = stride * bs;
  const before = new Float32Array(S * width).map(() => rng.int(4)); // what earlier layers added
  const kernel = generateAttentionMassKernel({ numHeads: Hq, numKvHeads: Hkv, headDim: D, dtype: c.dtype, kvDType: c.dtype, blockSize: bs });
  const got = await runNamed(
    gpu!.device,
    kernel,
    { q, k_pool: stored(c.dtype, [pool.length], pool), block_table: table, positions, row_seq: rowSeq, mass: Float32Array.from(before) },
    { seq: S, table_stride: stride },
    ['mass'],
  );
  const mass = new Float32Array(got.mass, 0, S * width);
  const scale = Math.fround(1 / Math.sqrt(D));
  const qRow = (row: number): Tensor => new Tensor(c.dtype, [1, 1, Hq, D], (q.data as Float32Array).slice(row * Hq * D, (row + 1) * Hq * D));
  let worst = 0;
  r = 0;
  c.seqs.forEach((s, b) => {
    const n = lengths[b];
    const sum = new Float64Array(n);
    for (let i = 0; i < s.rows; i++, r++) {
      const visible = positions[r] + 1;
      const k = new Tensor(c.dtype, [1, visible, Hkv, D], (keys[b].data as Float32Array).slice(0, visible * Hkv * D));
      const want = attentionKeyMass(qRow(r), k, undefined, true, scale);
      for (let j = 0; j < width; j++) {
        const w = before[r * width + j] + (j < visible ? want[j] : 0);
        worst = Math.max(worst, Math.abs(mass[r * width + j] - w));
        if (j < visible) sum[j] += mass[r * width + j] - before[r * width + j];
      }
    }
    // the CPU executor's call: all the sequence's new rows at once, bottom-right causal over its n keys
    const all = attentionKeyMass(new Tensor(c.dtype, [1, s.rows, Hq, D], (q.data as Float32Array).slice((r - s.rows) * Hq * D, r * Hq * D)), keys[b], undefined, true, scale);
    for (let j = 0; j < n; j++) worst = Math.max(worst, Math.abs(sum[j] - all[j]));
  });
  return worst;
}

describe('attention-mass kernel (H2O) against the CPU attentionKeyMass', () => {
  it('ragged batches of prefill chunks and decode rows, block sizes not dividing the lengths, GQA 1, 2, 4', async (ctx) => {
    if (!gpu) return ctx.skip();
    const cases: MassCase[] = [
      { Hq: 4, Hkv: 2, D: 8, blockSize: 5, seqs: [{ past: 5, rows: 3 }, { past: 10, rows: 1 }, { past: 0, rows: 2 }, { past: 70, rows: 1 }], dtype: 'f32', seed: 1 },
      { Hq: 8, Hkv: 2, D: 12, blockSize: 4, seqs: [{ past: 0, rows: 7 }, { past: 131, rows: 2 }], dtype: 'f32', seed: 2 },
      { Hq: 3, Hkv: 3, D: 5, blockSize: 16, seqs: [{ past: 17, rows: 1 }, { past: 2, rows: 4 }, { past: 40, rows: 1 }], dtype: 'f32', seed: 3 },
    ];
    for (const c of cases) {
      const worst = await runCase(c);
      process.stderr.write(`[attention mass] Hq ${c.Hq} Hkv ${c.Hkv} D ${c.D} block ${c.blockSize}: worst |gpu - cpu| ${worst.toExponential(2)}\n`);
      expect(worst, JSON.stringify(c)).toBeLessThan(2e-5 * c.Hq);
    }
  }, 120_000);

  it('f16 queries and K pool', async (ctx) => {
    if (!gpu || !gpuHas(gpu, 'shader-f16')) return ctx.skip();
    const worst = await runCase({ Hq: 4, Hkv: 1, D: 8, blockSize: 3, seqs: [{ past: 4, rows: 2 }, { past: 9, rows: 1 }], dtype: 'f16', seed: 4 });
    // inputs are f16 values; the math is f32 on both sides
    expect(worst).toBeLessThan(1e-4);
  }, 120_000);
});
