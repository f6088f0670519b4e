// Split-KV decode attention (flash-decoding) over a ragged batch of sequences in a paged KV cache, run on the WebGPU
// device (lavapipe in CI): the partial kernel then the merge equal the CPU reference attention of each row over its
// own sequence, for ragged batches, lengths that are not multiples of the split, tile or block size, empty splits
// (rows shorter than the splits cover), contexts longer than the splits cover (the last split takes the rest), GQA,
// f32, f16, int8 and int4 pools. Plus the schedule rule, the engine forced to use it (stories260K golden ids), and a bad scratch size
// in a saved manifest.
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generatePagedAttentionKernel, generateSplitKvMergeKernel, type AttentionDType, type SplitKvAttentionVariant, type SubgroupDecodeAttentionVariant } from '../src/codegen/attention.js';
import { chooseSplitKv, splitKvVariant, SPLIT_KV_MIN_CONTEXT } from '../src/codegen/schedule/attention.js';
import { attention } from '../src/runtime/cpu/kernels.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { fakeQuantizeKvRows, isQuantizedKv, kvPoolLayout, packKvToken, type QuantizedKvDType } from '../src/ir/kv-cache-quant.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, gpuHas, type TestGPU } from './helpers/webgpu.js';
import { runNamed, runOutput } from './support/run-kernel.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';
import { compile, compileModel } from '../src/compile.js';
import { createTarget } from '../src/codegen/target.js';
import { variantKey } from '../src/codegen/schedule/tuning.js';
import { DeviceError, ModelFormatError } from '../src/errors.js';
import { loadModel, type LoadedModel } from '../src/frontends/load.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import type { EngineManifest } from '../src/runtime/engine-manifest.js';
import { checkEngineLimits, validateEngineManifest } from '../src/runtime/engine-manifest-schema.js';
import type { Engine, EngineSession } from '../src/runtime/engine.js';

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
  variant: SplitKvAttentionVariant | SubgroupDecodeAttentionVariant;
  dtype?: AttentionDType;
  /** Pool storage (default: dtype); integer pools hold what the KV-cache write stores (`packKvToken`). */
  kvDType?: AttentionDType | QuantizedKvDType;
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
  const kvDt = c.kvDType ?? dt;
  const ks = c.seqs.map((s) => Tensor.from(dt, [1, s.len, c.Hkv, c.D], rng.normals(s.len * c.Hkv * c.D, 1)));
  const vs = c.seqs.map((s) => Tensor.from(dt, [1, s.len, c.Hkv, Dv], rng.normals(s.len * c.Hkv * Dv, 1)));
  const slotOf = (b: number, p: number): number => table[b * stride + Math.floor(p / bs)] * bs + (p % bs);
  let kPool: Tensor | Uint32Array;
  let vPool: Tensor | Uint32Array;
  if (isQuantizedKv(kvDt)) {
    // integer pools: random words everywhere, then each token's packed values and scales at its slot; the reference
    // reads back what the pool holds (q * s per (token, head) vector)
    const pool = (dim: number, src: Tensor[]): Uint32Array => {
      const L = kvPoolLayout(kvDt, bs, c.Hkv, dim);
      const words = Uint32Array.from({ length: numBlocks * L.blockWords }, () => rng.int(2 ** 31) * 2 + rng.int(2));
      c.seqs.forEach((s, b) => {
        const x = src[b].data as Float32Array;
        for (let p = 0; p < s.len; p++) {
          const slot = slotOf(b, p);
          const base = Math.floor(slot / bs) * L.blockWords;
          const t = slot % bs;
          const tok = packKvToken(x.subarray(p * c.Hkv * dim, (p + 1) * c.Hkv * dim), c.Hkv, dim, kvDt);
          words.set(tok.data, base + t * c.Hkv * L.rowWords);
          words.set(tok.scales, base + bs * c.Hkv * L.rowWords + t * L.scaleWords);
        }
        fakeQuantizeKvRows(x, 0, s.len * c.Hkv, dim, kvDt);
      });
      return words;
    };
    kPool = pool(c.D, ks);
    vPool = pool(Dv, vs);
  } else {
    const kp = Tensor.from(kvDt, [numBlocks * bs * c.Hkv * c.D], rng.normals(numBlocks * bs * c.Hkv * c.D, 100));
    const vp = Tensor.from(kvDt, [numBlocks * bs * c.Hkv * Dv], rng.normals(numBlocks * bs * c.Hkv * Dv, 100));
    c.seqs.forEach((s, b) => {
      for (let p = 0; p < s.len; p++) {
        const slot = slotOf(b, p);
        (kp.data as Float32Array).set((ks[b].data as Float32Array).subarray(p * c.Hkv * c.D, (p + 1) * c.Hkv * c.D), slot * c.Hkv * c.D);
        (vp.data as Float32Array).set((vs[b].data as Float32Array).subarray(p * c.Hkv * Dv, (p + 1) * c.Hkv * Dv), slot * c.Hkv * Dv);
      }
    });
    kPool = kp;
    vPool = vp;
  }
  const rows = c.seqs.flatMap((s, b) => s.rows.map((p) => ({ b, p })));
  const S = rows.length;
  const q = Tensor.from(dt, [S, c.Hq, c.D], rng.normals(S * c.Hq * c.D, 1));
  const positions = Int32Array.from(rows.map((r) => r.p));
  const rowSeq = Int32Array.from(rows.map((r) => r.b));
  const scale = Math.fround(1 / Math.sqrt(c.D));
  const partial = generatePagedAttentionKernel({ numHeads: c.Hq, numKvHeads: c.Hkv, headDim: c.D, valueDim: Dv, dtype: dt, kvDType: kvDt, causal: true, blockSize: bs, ragged: true, variant: c.variant, staticLoops: false });
  const dims = { seq: S, table_stride: stride };
  const split = c.variant.kind === 'split-kv';
  const splits = split ? (partial.grid[2] as number) : 1;
  let got: Tensor;
  if (split) {
    const merge = generateSplitKvMergeKernel({ numHeads: c.Hq, valueDim: Dv, splits, dtype: dt });
    // partials start as NaN: every (row, head, split) state must be written, empty splits included
    const r = await runNamed(gpu!.device, partial, { q, k_pool: kPool, v_pool: vPool, block_table: table, positions, row_seq: rowSeq, partials: { nan: S * c.Hq * splits * (Dv + 2) * 4 } }, dims, ['partials']);
    got = await runOutput(gpu!.device, merge, { partials: new Float32Array(r.partials) }, { dtype: dt, shape: [S, c.Hq, Dv], fill: 'nan' }, dims);
  } else got = await runOutput(gpu!.device, partial, { q, k_pool: kPool, v_pool: vPool, block_table: table, positions, row_seq: rowSeq }, { dtype: dt, shape: [S, c.Hq, Dv], fill: 'nan' }, dims);
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

  it('decode-subgroup (lanes take keys in turn, subgroup merge): ragged batches, GQA 1/2/4, lengths off the lane and block grid, f16', async (ctx) => {
    if (!gpu || !gpuHas(gpu, 'subgroups')) return ctx.skip();
    const size = gpu.info.subgroupSize;
    // the kernel needs one fixed subgroup size (lavapipe: 8); a device with a range cannot run it
    if (!size || size.min !== size.max) return ctx.skip();
    const sg = { kind: 'decode-subgroup', subgroupSize: size.min } as const;
    const cases: SplitCase[] = [
      { Hq: 8, Hkv: 2, D: 16, blockSize: 16, variant: sg, seed: 11, seqs: [{ len: 33, rows: [0, 31, 32] }, { len: 200, rows: [199] }, { len: 3, rows: [1, 2] }, { len: 100, rows: [97, 98, 99] }] },
      { Hq: 8, Hkv: 8, D: 64, blockSize: 7, variant: sg, seed: 12, seqs: [{ len: 181, rows: [180] }, { len: 5, rows: [0, 4] }, { len: 121, rows: [59, 60, 119, 120] }] },
      { Hq: 4, Hkv: 1, D: 40, Dv: 24, blockSize: 5, variant: sg, seed: 13, seqs: [{ len: 77, rows: [76] }, { len: 20, rows: [19] }] },
      { Hq: 4, Hkv: 2, D: 32, blockSize: 16, dtype: 'f16', variant: sg, seed: 14, seqs: [{ len: 90, rows: [89] }, { len: 9, rows: [8] }] },
    ];
    for (const c of cases) {
      const r = await runSplit(c);
      expect(r.variant).toMatch(/^paged-ragged-decode-subgroup-sg/);
      expect(r.err, JSON.stringify(c)).toBeLessThan(c.dtype === 'f16' ? 1e-2 : 1e-4);
    }
  });

  it('f16 activations and pools (f32 math)', async (ctx) => {
    if (!gpu || !gpuHas(gpu, 'shader-f16')) return ctx.skip();
    const r = await runSplit({ Hq: 4, Hkv: 2, D: 32, blockSize: 16, dtype: 'f16', variant: { kind: 'split-kv', splitKeys: 16, splits: 5, rowLanes: 8 }, seed: 4, seqs: [{ len: 90, rows: [89] }, { len: 9, rows: [8] }] });
    expect(r.err).toBeLessThan(3e-3);
  }, 120_000);

  it('int8 and int4 pools (dequantized on load, as the single-pass kernel reads them)', async (ctx) => {
    if (!gpu) return ctx.skip();
    for (const kvDType of ['int8', 'int4'] as const) {
      const r = await runSplit({ Hq: 6, Hkv: 3, D: 24, Dv: 20, blockSize: 8, kvDType, variant: { kind: 'split-kv', splitKeys: 16, splits: 4, rowLanes: 8 }, seed: 5, seqs: [{ len: 75, rows: [74] }, { len: 10, rows: [3, 9] }, { len: 48, rows: [47] }] });
      expect(r.err, kvDType).toBeLessThan(2e-5);
    }
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

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const GREEDY = { temperature: 0, topp: 1, coin: 0 } as const;
/** The bits of a row of logits, for exact comparisons. */
const bits = (a: Float32Array): number[] => Array.from(new Uint32Array(Float32Array.from(a).buffer));

describe.skipIf(!hasShared)('a batch-invariant engine forced to split-KV attention (stories260K)', () => {
  let engine: Engine;
  let session: EngineSession;
  beforeAll(async () => {
    if (!gpu) return;
    const model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    // splits of 32 keys: the goldens' contexts (up to 256 keys) span several splits and leave the later ones empty
    engine = await compile(model, { device: gpu.info, precision: 'f32', batchInvariant: true, variants: { attention: { kind: 'split-kv', splitKeys: 32, splits: 8, rowLanes: 4 } } });
    session = await engine.createSession({ device: gpu, kvBlocks: 64 });
  }, 300_000);
  afterAll(async () => session?.destroy());

  it('uses the split kernels and one scratch buffer sized for the largest plan', (ctx) => {
    if (!gpu) return ctx.skip();
    const m = engine.manifest;
    expect(m.kernels.some((k) => k.variant.startsWith('paged-ragged-split-kv-s8x32'))).toBe(true);
    expect(m.kernels.some((k) => k.variant.startsWith('split-kv-merge-s8'))).toBe(true);
    expect(m.kernels.some((k) => k.variant.startsWith('paged-ragged-decode'))).toBe(false);
    // [rows, Hq = 8, splits = 8, Dv + 2 = 10] f32 for the prefill plan's 128 rows
    expect(m.scratch).toEqual([128 * 8 * 8 * 10 * 4]);
  });

  it('reproduces every golden sequence exactly (f32, temperature 0)', async (ctx) => {
    if (!gpu) return ctx.skip();
    const dir = sharedPath('golden/stories260K');
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.json'))) {
      const gold = JSON.parse(readFileSync(`${dir}/${f}`, 'utf8'));
      const a = session.createSequence();
      const got: number[] = [];
      let [[t]] = await session.stepBatch([{ seq: a, tokens: gold.prompt_ids, sampling: GREEDY }]);
      while (got.length < gold.generated_ids.length) {
        got.push(t);
        if (got.length === gold.generated_ids.length) break;
        [[t]] = await session.stepBatch([{ seq: a, tokens: [t], sampling: GREEDY }]);
      }
      session.releaseSequence(a);
      expect(got, f).toEqual(gold.generated_ids);
    }
  }, 600_000);

  it("a sequence's logits in a batch (other sequences' prefill and decode rows around it) bit-equal its logits alone", async (ctx) => {
    if (!gpu) return ctx.skip();
    const prompt = [1, 365, 120, 2, 77, 401];
    const other = [1, 15, 99, 240, 8, 31, 300, 12, 5];
    const a = session.createSequence();
    const alone: number[][] = [];
    await session.stepBatch([{ seq: a, tokens: prompt, sampling: GREEDY }]);
    alone.push(bits((await session.lastBatchLogits())[0][0]));
    for (const t of [7, 42, 9]) {
      await session.stepBatch([{ seq: a, tokens: [t], sampling: GREEDY }]);
      alone.push(bits((await session.lastBatchLogits())[0][0]));
    }
    session.releaseSequence(a);
    const b = session.createSequence();
    const c = session.createSequence();
    await session.stepBatch([{ seq: b, tokens: other.concat(other, other, other), sampling: GREEDY }]);
    const a2 = session.createSequence();
    const together: number[][] = [];
    await session.stepBatch([{ seq: b, tokens: [3], sampling: GREEDY }, { seq: a2, tokens: prompt, sampling: GREEDY }, { seq: c, tokens: other.slice(0, 4) }]);
    together.push(bits((await session.lastBatchLogits())[1][0]));
    for (const t of [7, 42, 9]) {
      await session.stepBatch([{ seq: c, tokens: [5, 6], sampling: GREEDY }, { seq: a2, tokens: [t], sampling: GREEDY }, { seq: b, tokens: [4], sampling: GREEDY }]);
      together.push(bits((await session.lastBatchLogits())[1][0]));
    }
    for (const s of [a2, b, c]) session.releaseSequence(s);
    together.forEach((t, i) => expect(t, `step ${i}`).toEqual(alone[i]));
  }, 300_000);
});

describe('split-KV attention in compiled engines (no device)', () => {
  const tiny = (seqLen: number): LoadedModel => {
    const c: LlamaConfig = { dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 40, seqLen, sharedClassifier: false };
    const w = randomLlamaWeights(c, 3);
    return { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: seqLen, bosId: 1, stopTokens: [2], build: (o) => buildLlama(c, w, o) };
  };
  const attentionKernels = (m: EngineManifest): string[] => m.kernels.filter((k) => k.family === 'attention').map((k) => k.variant.replace(/-h\d.*$/, ''));

  it('the schedule rule splits on a discrete GPU at long contexts, not on lavapipe or short contexts; --tune can time both', () => {
    const long = tiny(2048);
    const gpuM = compileModel(long, { target: createTarget('discrete'), prefillChunk: 8 }).manifest;
    expect(attentionKernels(gpuM)).toEqual(expect.arrayContaining(['paged-ragged-split-kv-s8x256', 'split-kv-merge-s8-wg64']));
    const split = gpuM.kernels.find((k) => k.variant.startsWith('paged-ragged-split-kv'))!;
    expect(split.schedule).toMatchObject({ source: 'heuristic', candidate: 0 });
    expect(gpuM.scratch?.length).toBe(1);
    expect(attentionKernels(compileModel(tiny(512), { target: createTarget('discrete'), prefillChunk: 8 }).manifest).some((v) => v.includes('split'))).toBe(false);
    const soft = compileModel(long, { target: createTarget('lavapipe'), prefillChunk: 8 }).manifest;
    expect(attentionKernels(soft).some((v) => v.includes('split'))).toBe(false);
    expect(soft.scratch).toBeUndefined();
    // on lavapipe the candidates are the rule's decode-subgroup, the tiled decode (round 1) and split-KV (round 2)
    const tiledRound = compileModel(long, { target: createTarget('lavapipe'), prefillChunk: 8, tuning: { explore: 1 } }).manifest;
    expect(tiledRound.kernels.find((k) => k.variant.startsWith('paged-ragged-decode-h'))!.schedule).toMatchObject({ source: 'explore', candidate: 1, candidates: 3 });
    const explore = compileModel(long, { target: createTarget('lavapipe'), prefillChunk: 8, tuning: { explore: 2 } }).manifest;
    const tried = explore.kernels.find((k) => k.variant.startsWith('paged-ragged-split-kv'))!;
    expect(tried.schedule).toMatchObject({ source: 'explore', candidate: 2, candidates: 3 });
    // batch-invariant engines choose every plan's kernels for one row count: one signature for the tuner to time
    const inv = compileModel(long, { target: createTarget('discrete'), prefillChunk: 8, batchInvariant: true }).manifest;
    const sigs = new Set(inv.kernels.filter((k) => k.variant.startsWith('paged-ragged-split-kv')).map((k) => k.schedule!.signature));
    expect(sigs.size).toBe(1);
    const table = new Map([...sigs].map((sig) => [sig, variantKey({ kind: 'decode', rowLanes: 32 })]));
    const tuned = compileModel(long, { target: createTarget('discrete'), prefillChunk: 8, batchInvariant: true, tuning: { table } }).manifest;
    expect(attentionKernels(tuned).some((v) => v.includes('split'))).toBe(false);
  });

  it('a saved manifest with a bad scratch size or reference is a typed error naming the field; limits name the buffer', () => {
    const c = compileModel(tiny(64), { target: createTarget('discrete'), prefillChunk: 8, variants: { attention: { kind: 'split-kv', splitKeys: 16, splits: 4 } } });
    const m = c.manifest;
    // [8 rows, 4 heads, 4 splits, 8 + 2] f32
    expect(m.scratch).toEqual([8 * 4 * 4 * 10 * 4]);
    expect(() => validateEngineManifest(JSON.parse(JSON.stringify(m)), c.weights.byteLength)).not.toThrow();
    const fieldOf = (edit: (x: Json) => void): string => {
      const x = JSON.parse(JSON.stringify(m)) as Json;
      edit(x);
      try {
        validateEngineManifest(x, c.weights.byteLength, 'engine.json');
        return 'passed';
      } catch (e) {
        expect(e).toBeInstanceOf(ModelFormatError);
        return (e as ModelFormatError).field;
      }
    };
    const at = m.plans[0].dispatches.findIndex((d) => d.bindings.some((b) => b.kind === 'scratch'));
    const j = m.plans[0].dispatches[at].bindings.findIndex((b) => b.kind === 'scratch');
    expect(fieldOf((x) => (x.scratch[0] = 2 ** 50))).toBe('scratch[0]');
    expect(fieldOf((x) => (x.scratch[0] = -1))).toBe('scratch[0]');
    expect(fieldOf((x) => (x.scratch[0] = '1024'))).toBe('scratch[0]');
    expect(fieldOf((x) => (x.scratch = new Array(1000).fill(16)))).toBe('scratch');
    expect(fieldOf((x) => (x.plans[0].dispatches[at].bindings[j].size = m.scratch![0] + 4))).toBe(`plans[0].dispatches[${at}].bindings[${j}].size`);
    expect(fieldOf((x) => (x.plans[0].dispatches[at].bindings[j].index = 1))).toBe(`plans[0].dispatches[${at}].bindings[${j}].index`);
    expect(fieldOf((x) => delete x.scratch)).toBe(`plans[0].dispatches[${at}].bindings[${j}]`);
    // (activation slots are checked first: leave them out to reach the scratch buffer)
    expect(() => checkEngineLimits({ ...m, slots: [] }, { maxStorageBufferBindingSize: 1024 })).toThrow(DeviceError);
    expect(() => checkEngineLimits({ ...m, slots: [] }, { maxStorageBufferBindingSize: 1024 })).toThrow(/scratch buffer 0 needs 5120 bytes/);
  });
});
