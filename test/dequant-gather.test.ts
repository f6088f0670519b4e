// The dequant-gather kernel family on WebGPU (lavapipe in CI): embedding lookups in a quantized [V, D] table run a
// kernel that dequantizes each looked-up element in registers, bound to the weight's packed parts (no dense copy in
// the engine), and match the CPU reference (decodeWeight, then the lookup) for every format the weight store allows
// for a 2-D table; quantized GGUF models (stories260K Q8_0 and Q4_0, whose token embedding is quantized and tied to
// the classifier) generate the CPU reference's ids.
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile, compileGraph } from '../src/compile.js';
import { generateDequantEmbeddingKernel } from '../src/codegen/dequant-gather.js';
import type { DequantWeightFormat } from '../src/codegen/dequant.js';
import { loadModel } from '../src/frontends/load.js';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import { decodeWeight, floatToHalf, halfToFloat, packBits, WeightStore, type WeightArray, type WeightEntry } from '../src/ir/weights.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { generateTokens } from '../src/runtime/generate.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, gpuHas, type TestGPU } from './helpers/webgpu.js';
import { runOutput, type BufferInit } from './support/run-kernel.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('quantized GGUF generation on WebGPU');

// lavapipe JIT-compiles each pipeline on its first dispatch
const LONG = 600_000;

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

/** A `[V, D]` table in format `f` with random integers over the whole range, scales, zero points and offsets. */
function randomTable(name: string, V: number, D: number, f: DequantWeightFormat, seed: number): WeightEntry {
  const r = new Rng(seed);
  const n = V * D;
  const groups = n / f.groupSize;
  const span = 1 << f.bits;
  const lo = f.signed ? -(span >> 1) : 0;
  const q = Array.from({ length: n }, () => lo + Math.floor(r.next() * span));
  const data: Record<string, WeightArray> = { packed: packBits(q, f.bits), scales: Float32Array.from(r.normals(groups, 0.1)) };
  if (f.hasZeroPoint) data.zeroPoints = Int32Array.from({ length: groups }, () => lo + Math.floor(r.next() * span));
  if (f.hasMin) data.mins = Float32Array.from(r.normals(groups, 0.5));
  return WeightStore.entry(name, 'f32', [V, D], data, { kind: 'quantized', bits: f.bits, signed: f.signed, groupSize: f.groupSize, hasZeroPoint: f.hasZeroPoint, scaleDType: 'f32', hasMin: f.hasMin });
}

/** Rows `ids` of the decoded table; ids outside [-V, V) give zero rows (negative ids count from the end). */
function lookup(e: WeightEntry, ids: readonly number[]): Float32Array {
  const [V, D] = e.shape;
  const w = decodeWeight(e);
  const out = new Float32Array(ids.length * D);
  ids.forEach((id, t) => {
    const row = id < 0 ? id + V : id;
    if (row >= 0 && row < V) out.set(w.subarray(row * D, (row + 1) * D), t * D);
  });
  return out;
}

/** A payload part as 32-bit words for a storage binding (the packed bytes padded to a whole word). */
function words(a: WeightArray): BufferInit {
  if (!(a instanceof Uint8Array)) return a as Float32Array | Int32Array;
  const padded = new Uint8Array(Math.ceil(a.byteLength / 4) * 4);
  padded.set(a);
  return new Uint32Array(padded.buffer);
}

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, rel = 1e-6): void {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const tol = rel * (1 + Math.abs(want[i]));
    if (!(Math.abs(got[i] - want[i]) <= tol)) expect.fail(`${what}: element ${i}: got ${got[i]}, want ${want[i]}`);
  }
}

const fmtName = (f: DequantWeightFormat): string =>
  `${f.bits}-bit ${f.signed ? 'signed' : 'unsigned'}${f.hasZeroPoint ? ', zero points' : ''}${f.hasMin ? ', offsets' : ''}, group ${f.groupSize}`;

/** Runs the kernel for table `e` at `ids` and returns `out` (NaN-filled first, so unwritten elements fail). */
async function runLookup(e: WeightEntry, ids: Int32Array | Uint32Array, opts: { dtype?: 'f32' | 'f16'; outOfRange?: 'zero' | 'clamp' } = {}): Promise<Tensor> {
  const [V, D] = e.shape;
  const enc = e.encoding;
  if (enc.kind !== 'quantized') throw new Error('quantized tables only');
  const weight: DequantWeightFormat = { bits: enc.bits, signed: enc.signed, groupSize: enc.groupSize, hasZeroPoint: enc.hasZeroPoint, hasMin: !!enc.hasMin };
  const dtype = opts.dtype ?? 'f32';
  const k = generateDequantEmbeddingKernel({ vocab: V, dim: D, count: 'seq', dtype, indexDType: ids instanceof Uint32Array ? 'u32' : 'i32', outOfRange: opts.outOfRange, weight });
  const parts = Object.fromEntries(k.bindings.filter((b) => b.name in e.data).map((b) => [b.name, words(e.data[b.name])]));
  return runOutput(gpu!.device, k, { ...parts, ids }, { dtype, shape: [ids.length, D], fill: 'nan' }, { seq: ids.length });
}

describe('dequant-embedding kernel against the CPU reference', () => {
  // [V, D, group size]: word-aligned rows, rows and groups off word boundaries, per row, the whole table
  const shapes = (bits: number): [number, number, number][] => {
    const perWord = 32 / bits;
    return [
      [37, 64, 16],
      [37, 64, 32],
      [29, 64, 64], // per row
      [19, 128, 128],
      [23, 20, 4], // 20 elements per row: rows start mid-word for every bit width
      [23, 20, 5],
      [31, 13, 13], // odd row width, per row
      [17, 20, 17 * 20], // one group for the whole table
      [9, perWord + 3, 9 * (perWord + 3)],
    ];
  };
  for (const bits of [8, 4, 2] as const)
    for (const signed of [true, false])
      it(`${bits}-bit ${signed ? 'signed' : 'unsigned'}: zero points and offsets, group sizes 4 .. 128, per row and per tensor, ragged rows`, async (ctx) => {
        if (!gpu) return ctx.skip();
        let seed = bits * 1000 + (signed ? 1 : 0);
        for (const hasZeroPoint of [false, true])
          for (const hasMin of [false, true])
            for (const [V, D, groupSize] of shapes(bits)) {
              // every shape for the plain format; the zero-point and offset forms on a few
              if ((hasZeroPoint || hasMin) && ![16, 5, V * D].includes(groupSize)) continue;
              const f: DequantWeightFormat = { bits, signed, groupSize, hasZeroPoint, hasMin };
              const e = randomTable('emb', V, D, f, seed++);
              const ids = [0, V - 1, 3, 3, -1, -V, Math.floor(V / 2), 1];
              const got = await runLookup(e, Int32Array.from(ids));
              expectClose(got.numbers, lookup(e, ids), `${fmtName(f)}, [${V}, ${D}]`);
            }
      }, LONG);

  it('out-of-range ids behave as the dense embedding kernel: zero rows (i32 and u32 ids), or the nearest row (clamp)', async (ctx) => {
    if (!gpu) return ctx.skip();
    const [V, D] = [11, 20];
    const e = randomTable('emb', V, D, { bits: 4, signed: false, groupSize: 10, hasZeroPoint: true, hasMin: false }, 5);
    const bad = [V, -V - 1, 2, 1 << 30, -(1 << 30)];
    expectClose((await runLookup(e, Int32Array.from(bad))).numbers, lookup(e, bad), 'i32 ids, zero');
    const u = Uint32Array.of(V, 4, 0xffffffff);
    expectClose((await runLookup(e, u)).numbers, lookup(e, [V, 4, V]), 'u32 ids, zero');
    const clamped = await runLookup(e, Int32Array.of(V + 3, -V - 3, 6), { outOfRange: 'clamp' });
    expectClose(clamped.numbers, lookup(e, [V - 1, 0, 6]), 'i32 ids, clamp');
  }, LONG);

  it('f16 output: the f32 value rounded to f16', async (ctx) => {
    if (!gpu || !gpuHas(gpu, 'shader-f16')) return ctx.skip();
    for (const f of [
      { bits: 8, signed: true, groupSize: 32, hasZeroPoint: false, hasMin: false },
      { bits: 4, signed: false, groupSize: 5, hasZeroPoint: true, hasMin: true },
      { bits: 2, signed: true, groupSize: 20, hasZeroPoint: false, hasMin: true },
    ] as const) {
      const [V, D] = [13, f.groupSize === 32 ? 64 : 20];
      const e = randomTable('emb', V, D, f, 77 + f.bits);
      const ids = [12, 0, 5, -2];
      const got = await runLookup(e, Int32Array.from(ids), { dtype: 'f16' });
      expect(got.dtype).toBe('f16');
      // WGSL may round f32 → f16 either way: within one f16 ulp
      expectClose(got.numbers, lookup(e, ids).map((v) => halfToFloat(floatToHalf(v))), `f16, ${fmtName(f)}`, 2 ** -10);
    }
  }, LONG);
});

/** `y = gather(table, ids)`, optionally with `logits = y · tableᵀ` (a tied classifier over the same weight). */
function graphOf(e: WeightEntry, tied: boolean): Graph {
  const b = new GraphBuilder();
  const ids = b.input('ids', 'i32', ['seq']);
  const table = b.weight(e);
  const y = b.op('gather', [table, ids], { axis: 0 });
  return b.build(tied ? { y, logits: b.linear(y, table) } : { y });
}

describe('dequant-gather through compileGraph', () => {
  it('the family takes the lookup, the engine binds the packed parts only, and a tied classifier shares the weight', async (ctx) => {
    if (!gpu) return ctx.skip();
    const e = randomTable('token_embd', 45, 64, { bits: 4, signed: false, groupSize: 32, hasZeroPoint: true, hasMin: false }, 11);
    for (const tied of [false, true]) {
      const g = graphOf(e, tied);
      const engine = await compileGraph(g, { seq: 6 }, { device: gpu.info });
      const m = engine.manifest;
      const families = m.kernels.map((k) => k.family);
      expect(families).toContain('dequant-gather');
      expect(families.includes('gather')).toBe(false);
      if (tied) expect(families).toContain('dequant-matmul');
      const w = m.weights.filter((x) => x.name === 'token_embd');
      expect(w, 'one weight entry, shared by the lookup and the classifier').toHaveLength(1);
      expect(w[0].parts.map((p) => p.role).sort()).toEqual(['packed', 'scales', 'zeroPoints']);
      const session = await engine.createSession({ device: gpu });
      try {
        for (const ids of [[3, 44, 0, -1, 7, 7], [12]]) {
          const inputs = { ids: Tensor.from('i32', [ids.length], ids) };
          const got = await session.run(inputs);
          const want = runGraph(g, inputs);
          expectClose(got.y.numbers, want.y.numbers, `tied ${tied}, ${ids.length} ids`);
          if (tied) expectClose(got.logits.numbers, want.logits.numbers, `logits, ${ids.length} ids`, 1e-4);
        }
      } finally {
        await session.destroy();
      }
    }
  }, LONG);

  it('with f16 storage (precision f16) the table keeps its encoding and the lookup dequantizes to f16', async (ctx) => {
    if (!gpu || !gpuHas(gpu, 'shader-f16')) return ctx.skip();
    const e = randomTable('token_embd', 30, 40, { bits: 8, signed: true, groupSize: 40, hasZeroPoint: false, hasMin: true }, 12);
    const b = new GraphBuilder();
    const ids = b.input('ids', 'i32', ['seq']);
    const g = b.build({ y: b.mul(b.op('gather', [b.weight(e), ids], { axis: 0 }), b.weight('w', [40], new Rng(3).normals(40, 1))) });
    const engine = await compileGraph(g, { seq: 4 }, { device: gpu.info, precision: 'f16' });
    const m = engine.manifest;
    const k = m.kernels.find((x) => x.family === 'dequant-gather');
    expect(k?.wgsl).toMatch(/var<storage, read_write> out: array<f16>/);
    expect(m.weights.find((x) => x.name.startsWith('token_embd'))!.encoding.kind).toBe('quantized');
    const session = await engine.createSession({ device: gpu });
    try {
      const inputs = { ids: Tensor.from('i32', [4], [29, 0, 13, 13]) };
      expectClose((await session.run(inputs)).y.numbers, runGraph(g, inputs).y.numbers, 'f16 storage', 4e-3);
    } finally {
      await session.destroy();
    }
  }, LONG);
});

describe.skipIf(!hasShared)('stories260K GGUFs on WebGPU', () => {
  const prompt = [1, 403, 407, 261, 378]; // "Once upon a time"
  for (const quant of ['Q8_0', 'Q4_0'])
    it(`${quant}: greedy generation gives the CPU reference's ids; the token embedding stays quantized`, async (ctx) => {
      if (!gpu) return ctx.skip();
      const model = await loadModel(sharedPath(`models/gguf/stories260K-${quant}.gguf`));
      const engine = await compile(model, { device: gpu.info });
      const m = engine.manifest;
      expect(m.kernels.map((k) => k.family)).toEqual(expect.arrayContaining(['dequant-gather', 'dequant-matmul']));
      const emb = m.weights.find((w) => w.name === 'token_embd.weight')!;
      expect(emb.encoding.kind).toBe('quantized');
      expect(emb.parts.map((p) => p.role)).not.toContain('values');
      const session = await engine.createSession({ device: gpu });
      try {
        // run.c's step counting: 28 positions after a 5-token prompt sample 24 tokens
        const got = await session.generate(prompt, { steps: 28, temperature: 0, topp: 0.9, seed: 1 });
        const want = await generateTokens(new CpuCausalLM(model.build({ lastTokenLogitsOnly: true }), model.maxPositions), prompt, { steps: 28, temperature: 0, topp: 0.9, seed: 1, stopTokens: model.stopTokens });
        expect(want.generated).toHaveLength(24);
        expect(got.generated).toEqual(want.generated);
      } finally {
        await session.destroy();
      }
    }, LONG);

  it('F32: reproduces every golden sequence exactly, up to where run.c stops at BOS', async (ctx) => {
    if (!gpu) return ctx.skip();
    const model = await loadModel(sharedPath('models/gguf/stories260K-F32.gguf'));
    const engine = await compile(model, { device: gpu.info });
    const session = await engine.createSession({ device: gpu });
    try {
      for (const f of readdirSync(sharedPath('golden/stories260K')).filter((x) => x.endsWith('.json'))) {
        const gold = JSON.parse(readFileSync(sharedPath('golden/stories260K', f), 'utf8'));
        session.reset();
        const r = await session.generate(gold.prompt_ids, { steps: gold.steps, temperature: 0, topp: 0.9, seed: 1 });
        // run.c stops at BOS (1); the GGUF's stop token is EOS (2), so its sequence may go on past BOS
        const n = gold.generated_ids.length;
        expect(r.generated.slice(0, n), f).toEqual(gold.generated_ids);
        if (r.generated.length > n) expect(r.generated[n], f).toBe(1);
      }
    } finally {
      await session.destroy();
    }
  }, LONG);
});
