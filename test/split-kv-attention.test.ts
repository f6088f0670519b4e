// Split-KV decode attention (flash-decoding) over a ragged batch of sequences in a paged KV cache, run on the WebGPU
// device (lavapipe in CI): the partial kernel then the merge equal the CPU reference attention of each row over its
// own sequence, for ragged batches, lengths that are not multiples of the split, tile or block size, empty splits
// (rows shorter than the splits cover), contexts longer than the splits cover (the last split takes the rest), GQA,
// f32 and f16. Plus the schedule rule, the engine forced to use it (stories260K golden ids), and a bad scratch size
// in a saved manifest.
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generatePagedAttentionKernel, generateSplitKvMergeKernel, type AttentionDType, type SplitKvAttentionVariant } from '../src/codegen/attention.js';
import { chooseSplitKv, splitKvVariant, SPLIT_KV_MIN_CONTEXT } from '../src/codegen/schedule/attention.js';
import { attention } from '../src/runtime/cpu/kernels.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, gpuHas, type TestGPU } from './helpers/webgpu.js';
import { runNamed, runOutput } from './support/run-kernel.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('split-KV attention engine golden test');

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(async () => {
  await gpu?.destroy();
});

interface SplitCase {
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  blockSize: number;
  /** Each sequence's length, and the positions of its rows in this step (each row sees positions 0 ..= its own). */
  seqs: { len: number; rows: number[] }[];
  variant: SplitKvAttentionVariant;
  dtype?: AttentionDType;
  seed: number;
}

/** Max of |ref - got| / max(1, |ref|); NaN anywhere is Infinity. */
function maxErr(ref: ArrayLike<number>, got: ArrayLike<number>): number {
  let e = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(ref[i] - got[i]) / Math.max(1, Math.abs(ref[i]));
    e = Number.isNaN(d) ? Infinity : Math.max(e, d);
  }
  return e;
}

async function runSplit(c: SplitCase): Promise<{ err: number; variant: string; splits: number }> {
  const dt = c.dtype ?? 'f32';
  const Dv = c.Dv ?? c.D;
  const rng = new Rng(c.seed);
  const bs = c.blockSize;
  const stride = Math.max(...c.seqs.map((s) => Math.ceil(s.len / bs)));
  const used = c.seqs.reduce((a, s) => a + Math.ceil(s.len / bs), 0);
  const numBlocks = used + 3;
  const ids = Array.from({ length: numBlocks }, (_v, i) => i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  // block tables [B, stride] (unused entries point at a spare block), pools with garbage outside the sequences
  const table = new Uint32Array(c.seqs.length * stride).fill(ids[numBlocks - 1]);
  let next = 0;
  c.seqs.forEach((s, b) => {
    for (let i = 0; i < Math.ceil(s.len / bs); i++) table[b * stride + i] = ids[next++];
  });
  const kPool = Tensor.from(dt, [numBlocks * bs * c.Hkv * c.D], rng.normals(numBlocks * bs * c.Hkv * c.D, 100));
  const vPool = Tensor.from(dt, [numBlocks * bs * c.Hkv * Dv], rng.normals(numBlocks * bs * c.Hkv * Dv, 100));
  const ks = c.seqs.map((s) => Tensor.from(dt, [1, s.len, c.Hkv, c.D], rng.normals(s.len * c.Hkv * c.D, 1)));
  const vs = c.seqs.map((s) => Tensor.from(dt, [1, s.len, c.Hkv, Dv], rng.normals(s.len * c.Hkv * Dv, 1)));
  c.seqs.forEach((s, b) => {
    for (let p = 0; p < s.len; p++) {
      const slot = table[b * stride + Math.floor(p / bs)] * bs + (p % bs);
      (kPool.data as Float32Array).set((ks[b].data as Float32Array).subarray(p * c.Hkv * c.D, (p + 1) * c.Hkv * c.D), slot * c.Hkv * c.D);
      (vPool.data as Float32Array).set((vs[b].data as Float32Array).subarray(p * c.Hkv * Dv, (p + 1) * c.Hkv * Dv), slot * c.Hkv * Dv);
    }
  });
  const rows = c.seqs.flatMap((s, b) => s.rows.map((p) => ({ b, p })));
  const S = rows.length;
  const q = Tensor.from(dt, [S, c.Hq, c.D], rng.normals(S * c.Hq * c.D, 1));
  const positions = Int32Array.from(rows.map((r) => r.p));
  const rowSeq = Int32Array.from(rows.map((r) => r.b));
  const scale = Math.fround(1 / Math.sqrt(c.D));
  const partial = generatePagedAttentionKernel({ numHeads: c.Hq, numKvHeads: c.Hkv, headDim: c.D, valueDim: Dv, dtype: dt, causal: true, blockSize: bs, ragged: true, variant: c.variant, staticLoops: false });
  const splits = partial.grid[2] as number;
  const merge = generateSplitKvMergeKernel({ numHeads: c.Hq, valueDim: Dv, splits, dtype: dt });
  const dims = { seq: S, table_stride: stride };
  // partials start as NaN: every (row, head, split) state must be written, empty splits included
  const r = await runNamed(gpu!.device, partial, { q, k_pool: kPool, v_pool: vPool, block_table: table, positions, row_seq: rowSeq, partials: { nan: S * c.Hq * splits * (Dv + 2) * 4 } }, dims, ['partials']);
  const got = await runOutput(gpu!.device, merge, { partials: new Float32Array(r.partials) }, { dtype: dt, shape: [S, c.Hq, Dv], fill: 'nan' }, dims);
  // the reference: each row attends to positions 0 ..= p of its own sequence
  const ref = new Float64Array(S * c.Hq * Dv);
  rows.forEach(({ b, p }, i) => {
    const qi = new Tensor(dt, [1, 1, c.Hq, c.D], (q.data as Float32Array).slice(i * c.Hq * c.D, (i + 1) * c.Hq * c.D));
    const k = new Tensor(dt, [1, p + 1, c.Hkv, c.D], (ks[b].data as Float32Array).slice(0, (p + 1) * c.Hkv * c.D));
    const v = new Tensor(dt, [1, p + 1, c.Hkv, Dv], (vs[b].data as Float32Array).slice(0, (p + 1) * c.Hkv * Dv));
    ref.set(attention(qi, k, v, undefined, false, scale).numbers, i * c.Hq * Dv);
  });
  return { err: maxErr(ref, got.numbers), variant: partial.variant, splits };
}

describe('split-KV attention kernels against the CPU reference', () => {
  it('ragged batches, GQA, empty splits, lengths off the split/tile/block grid, contexts past the splits (f32)', async (ctx) => {
    if (!gpu) return ctx.skip();
    const cases: SplitCase[] = [
      // GQA 4; splits of 32 keys, 4 splits: rows of 1 and 33 keys leave splits empty, 200 keys overflow into the last
      // split, 64 is a multiple of the split, 100 is not a multiple of the tile or the block
      { Hq: 8, Hkv: 2, D: 16, blockSize: 16, variant: { kind: 'split-kv', splitKeys: 32, splits: 4, rowLanes: 4 }, seed: 1, seqs: [{ len: 33, rows: [0, 31, 32] }, { len: 200, rows: [199] }, { len: 64, rows: [63] }, { len: 100, rows: [97, 98, 99] }] },
      // MQA, ragged head dims, block 7, key tile 12: a split of 50 keys rounds up to 60
      { Hq: 8, Hkv: 1, D: 40, Dv: 24, blockSize: 7, variant: { kind: 'split-kv', splitKeys: 50, splits: 3, rowLanes: 8, keyTile: 12 }, seed: 2, seqs: [{ len: 181, rows: [180] }, { len: 5, rows: [2, 4] }, { len: 121, rows: [59, 60, 119, 120] }] },
      // no GQA, 32 lanes per head, one split (the single-pass arithmetic through the merge)
      { Hq: 4, Hkv: 4, D: 64, blockSize: 16, variant: { kind: 'split-kv', splitKeys: 32, splits: 1 }, seed: 3, seqs: [{ len: 77, rows: [76] }, { len: 20, rows: [19] }] },
    ];
    for (const c of cases) {
      const r = await runSplit(c);
      expect(r.variant).toMatch(/^paged-ragged-split-kv-/);
      expect(r.err, JSON.stringify(c)).toBeLessThan(2e-5);
    }
  }, 120_000);

  it('f16 activations and pools (f32 math)', async (ctx) => {
    if (!gpu || !gpuHas(gpu, 'shader-f16')) return ctx.skip();
    const r = await runSplit({ Hq: 4, Hkv: 2, D: 32, blockSize: 16, dtype: 'f16', variant: { kind: 'split-kv', splitKeys: 16, splits: 5, rowLanes: 8 }, seed: 4, seqs: [{ len: 90, rows: [89] }, { len: 9, rows: [8] }] });
    expect(r.err).toBeLessThan(3e-3);
  }, 120_000);
});

describe('split-KV schedule rule (no device)', () => {
  it('splits on GPUs for long contexts when rows x heads leave the device idle; never on software rasterizers', () => {
    const long = SPLIT_KV_MIN_CONTEXT * 2;
    expect(chooseSplitKv({ software: false, rows: 1, workgroupsPerRow: 8, maxKvLen: long })).toBe(true);
    expect(chooseSplitKv({ software: false, rows: 16, workgroupsPerRow: 8, maxKvLen: long })).toBe(true);
    expect(chooseSplitKv({ software: false, rows: 1, workgroupsPerRow: 8, maxKvLen: 512 })).toBe(false);
    expect(chooseSplitKv({ software: false, rows: 64, workgroupsPerRow: 32, maxKvLen: long })).toBe(false);
    expect(chooseSplitKv({ software: true, rows: 1, workgroupsPerRow: 8, maxKvLen: 65536 })).toBe(false);
    expect(chooseSplitKv({ software: false, rows: 1, workgroupsPerRow: 8 })).toBe(false);
    // a fixed split size, whatever the batch: the split count covers the context
    expect(splitKvVariant(4096)).toEqual({ kind: 'split-kv', splitKeys: 256, splits: 16 });
    expect(splitKvVariant(100).splits).toBe(1);
  });

  it('the partial kernel writes per-split states and takes only ragged paged batches', () => {
    const spec = { numHeads: 8, numKvHeads: 2, headDim: 16, dtype: 'f32' as const, causal: true, blockSize: 16 };
    const k = generatePagedAttentionKernel({ ...spec, ragged: true, variant: { kind: 'split-kv', splits: 6 } });
    expect(k.grid[2]).toBe(6);
    expect(k.bindings.at(-1)?.name).toBe('partials');
    expect(k.wgsl).toContain('const SPLITS: u32 = 6u;');
    expect(() => generatePagedAttentionKernel({ ...spec, variant: { kind: 'split-kv' } })).toThrow(/ragged/);
    expect(() => generatePagedAttentionKernel({ ...spec, ragged: true, variant: { kind: 'split-kv', splits: 0 } })).toThrow(/splits/);
  });
});

describe.skipIf(!hasShared)('an engine forced to split-KV attention', () => {
  it('stories260K reproduces every golden sequence (f32, temperature 0)', async (ctx) => {
    if (!gpu) return ctx.skip();
    const { compile } = await import('../src/compile.js');
    const { loadModel } = await import('../src/frontends/load.js');
    const model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    // splits of 32 keys: the goldens' contexts span several splits, and leave the later splits empty
    const engine = await compile(model, { device: gpu.info, batchInvariant: true, variants: { attention: { kind: 'split-kv', splitKeys: 32, splits: 8, rowLanes: 4 } } });
    expect(engine.manifest.kernels.some((k) => k.variant.startsWith('paged-ragged-split-kv-s8x32'))).toBe(true);
    expect(engine.manifest.kernels.some((k) => k.variant.startsWith('split-kv-merge'))).toBe(true);
    expect(engine.manifest.scratch?.length).toBe(1);
    const session = await engine.createSession({ device: gpu });
    try {
      const dir = sharedPath('golden/stories260K');
      for (const f of readdirSync(dir).filter((x) => x.endsWith('.json'))) {
        const gold = JSON.parse(readFileSync(`${dir}/${f}`, 'utf8'));
        session.reset();
        const r = await session.generate(gold.prompt_ids, { steps: gold.steps, temperature: 0, topp: 0.9, seed: 1 });
        expect(r.generated, f).toEqual(gold.generated_ids);
      }
    } finally {
      await session.destroy();
    }
  }, 600_000);
});
