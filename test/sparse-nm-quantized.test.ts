// N:M sparsity with quantized kept values (--sparsity 2:4 --quant int4): the encoding (positions kept, the compacted
// values quantized by the same quantizer as dense weights) decodes on the CPU reference, hostile sizes are typed
// errors, and on WebGPU (lavapipe in CI) the sparse-nm kernel reading the packed values and positions in registers
// matches the CPU reference, which decodes the same encoded weight; a whole pruned and quantized Llama does too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile, compileGraph, compressionOf } from '../src/compile.js';
import type { LoadedModel } from '../src/frontends/load.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { InputError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import { decodeWeight, nmKeptShape, quantizeWeight, WeightStore, type WeightEntry } from '../src/ir/weights.js';
import { pruneNM, quantizeNMValues } from '../src/ir/sparsify.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { expectClose, expectDecodeMatchesCpu } from './support/encoded-weights.js';

// lavapipe JIT-compiles each pipeline on its first dispatch
const LONG = 300_000;

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

/** How the kept values are quantized. */
type ValueFormat = { bits: 8 | 4 | 2; groupSize: number; hasZeroPoint: boolean };

/** A dense [N, K] weight pruned n:m, its kept values quantized to `f`. */
function prunedQuantized(name: string, shape: number[], values: Float32Array, nm: { n: number; m: number }, f: ValueFormat): WeightEntry {
  return quantizeNMValues(name, pruneNM(name, shape, values, nm), f);
}

describe('the encoding', () => {
  it('keeps the positions, quantizes the compacted values with quantizeWeight, and decodes to the scattered dequantized values', () => {
    const dense = new Rng(1).normals(6 * 16, 1);
    const sparse = pruneNM('w', [6, 16], dense, { n: 2, m: 4 });
    const f: ValueFormat = { bits: 4, groupSize: 4, hasZeroPoint: true };
    const e = quantizeNMValues('w@int4', sparse, f);
    expect(nmKeptShape([6, 16], { n: 2, m: 4 })).toEqual([6, 8]);
    const values = quantizeWeight('v', [6, 8], sparse.data.values as Float32Array, f);
    expect(e.encoding).toEqual({ kind: 'sparse-nm', n: 2, m: 4, indexBits: 2, quantizedValues: values.encoding });
    expect(Object.keys(e.data).sort()).toEqual(['indices', 'packed', 'scales', 'zeroPoints']);
    expect(e.data.indices).toBe(sparse.data.indices);
    // decoded: the pruned weight's zeros where it has them, the dequantized values where it keeps them
    const kept = decodeWeight(values);
    const want = new Float32Array(6 * 16);
    const positions = decodeWeight(pruneNM('w', [6, 16], dense, { n: 2, m: 4 })).map((x) => (x !== 0 ? 1 : 0));
    let j = 0;
    for (let i = 0; i < want.length; i++) if (positions[i]) want[i] = kept[j++];
    expect(Array.from(decodeWeight(e))).toEqual(Array.from(want));
    // re-quantizing quantized values starts from their decoded values
    const again = quantizeNMValues('w@int8', e, { bits: 8, groupSize: 8, hasZeroPoint: false });
    expect(again.encoding).toMatchObject({ kind: 'sparse-nm', quantizedValues: { bits: 8, groupSize: 8, hasZeroPoint: false } });
    expect(again.data.values).toBeUndefined();
  });

  it('hostile sizes and formats are typed errors naming the weight', () => {
    const e = prunedQuantized('wq', [4, 16], new Rng(2).normals(64, 1), { n: 2, m: 4 }, { bits: 4, groupSize: 8, hasZeroPoint: true });
    const enc = e.encoding as Extract<WeightEntry['encoding'], { kind: 'sparse-nm' }>;
    const q = enc.quantizedValues!;
    const entry = (data: Record<string, unknown>, quantizedValues: unknown) =>
      WeightStore.entry('wq', 'f32', [4, 16], { ...e.data, ...data } as WeightEntry['data'], { ...enc, quantizedValues } as WeightEntry['encoding']);
    expect(() => entry({}, q)).not.toThrow();
    expect(() => entry({ packed: new Uint8Array(8) }, q)).toThrow(/wq.*'packed' has 8 elements, needs 16/);
    expect(() => entry({ scales: new Float32Array(2) }, q)).toThrow(/wq.*'scales'/);
    expect(() => entry({ zeroPoints: undefined }, q)).toThrow(/wq.*no 'zeroPoints'/);
    expect(() => entry({}, { ...q, groupSize: 3 })).toThrow(/wq.*group size 3 must divide the last dim 8/);
    expect(() => entry({}, { ...q, groupSize: 0.5 })).toThrow(InputError);
    expect(() => entry({}, { ...q, bits: 3 })).toThrow(/wq.*8, 4 or 2 bits/);
    expect(() => entry({}, { ...q, kind: 'codebook' })).toThrow(InputError);
    // the quantizer refuses a group that does not divide the compacted rows (8 kept values per row here)
    expect(() => quantizeNMValues('wq', pruneNM('wq', [4, 16], new Rng(2).normals(64, 1), { n: 2, m: 4 }), { bits: 4, groupSize: 16 })).toThrow(/wq.*group size 16/);
  });
});

/** What follows the matmul: nothing, `+ bias`, `+ residual`, or the SwiGLU gate (W's halves are gate and up). */
type Epilogue = 'none' | 'bias' | 'residual' | 'gate';

function graphOf(w: WeightEntry, epilogue: Epilogue, rows: number | 'seq', seed: number): Graph {
  const [N, K] = w.shape;
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', [rows, K]);
  let y = b.linear(x, b.weight(w));
  if (epilogue === 'bias') y = b.add(y, b.weight('bias', [N], new Rng(seed + 1).normals(N, 0.5)));
  if (epilogue === 'residual') y = b.add(y, b.input('r', 'f32', [rows, N]));
  if (epilogue === 'gate') y = b.mul(b.silu(b.slice(y, { axes: [1], starts: [0], ends: [N / 2] })), b.slice(y, { axes: [1], starts: [N / 2], ends: [N] }));
  return b.build({ y });
}

const tensorOf = (rows: number, cols: number, seed: number): Tensor => Tensor.from('f32', [rows, cols], new Rng(seed).normals(rows * cols, 1));

/** Compiles `g`, runs it at each of `rowCounts` against the CPU reference; one sparse-nm dispatch reading `parts` only. */
async function checkAgainstReference(g: Graph, bindings: Record<string, number>, rowCounts: readonly number[], parts: string[], what: string) {
  const w = g.weights.all().find((e) => e.name === 'w')!;
  const [N, K] = w.shape;
  const engine = await compileGraph(g, bindings, { device: gpu!.info });
  const session = await engine.createSession({ device: gpu! });
  try {
    for (const rows of rowCounts) {
      const inputs: Record<string, Tensor> = { x: tensorOf(rows, K, 100 + rows) };
      if (g.inputs.some((i) => i.attrs.name === 'r')) inputs.r = tensorOf(rows, N, 200 + rows);
      const want = runGraph(g, inputs).y;
      const got = (await session.run(inputs)).y;
      expectClose(got.data as Float32Array, want.data as Float32Array, `${what}, M = ${rows}`);
    }
  } finally {
    await session.destroy();
  }
  const m = engine.manifest;
  expect(m.kernels.map((k) => k.family), what).toEqual(['sparse-nm-matmul']);
  expect(m.plans[0].dispatches, what).toHaveLength(1); // the epilogue or gate is fused
  // no dense copy, no f32 values: the packed values, their group parameters and the positions
  const mw = m.weights.find((x) => x.name === 'w')!;
  expect(mw.encoding).toEqual(w.encoding);
  expect(mw.parts.map((p) => p.role).sort(), what).toEqual([...parts].sort());
  return m;
}

describe('sparse-nm-matmul over quantized values on WebGPU against the CPU reference', () => {
  const EPILOGUES: readonly Epilogue[] = ['none', 'bias', 'residual', 'gate'];
  let turn = 0;
  for (const [n, m] of [[2, 4], [4, 8]] as const)
    for (const bits of [8, 4] as const)
      for (const hasZeroPoint of [false, true]) {
        const epilogue = EPILOGUES[turn++ % EPILOGUES.length];
        // ragged: N not a multiple of a workgroup's 32 columns; K's steps not a multiple of the 8 lanes (10 or 9
        // groups of m per row: 20 or 18 kept values per row for 2:4, 40 or 36 for 4:8)
        const [N, K] = epilogue === 'gate' ? [38, 9 * m] : [37, 10 * m];
        const kept = (K / m) * n;
        // groups of whole steps (4 kept values: one packed quad and one scale per step), else per-value reads
        const groupSize = kept % 4 === 0 ? 4 : kept;
        const f: ValueFormat = { bits, groupSize, hasZeroPoint };
        const parts = ['packed', 'scales', ...(hasZeroPoint ? ['zeroPoints'] : []), 'indices'];
        const what = `${n}:${m}, int${bits}${hasZeroPoint ? ' zp' : ''} g${groupSize}, [N, K] = [${N}, ${K}], ${epilogue}`;
        it(`${what}: M = 1 and 5`, async (ctx) => {
          if (!gpu) return ctx.skip();
          const w = prunedQuantized('w', [N, K], new Rng(N * 1000 + K + bits).normals(N * K, 0.5), { n, m }, f);
          await checkAgainstReference(graphOf(w, epilogue, 1, 7), {}, [1], parts, what);
          await checkAgainstReference(graphOf(w, epilogue, 'seq', 7), { seq: 8 }, [5], parts, what);
        }, LONG);
      }

  it('per-value reads: groups of 2 (a step spans groups), kept rows of 18 values (no whole quads), 2-bit values', async (ctx) => {
    if (!gpu) return ctx.skip();
    const cases: [string, number, number, ValueFormat, Epilogue][] = [
      ['2:4 int4 g2', 37, 40, { bits: 4, groupSize: 2, hasZeroPoint: true }, 'bias'],
      ['2:4 int8 g6, 18 kept per row', 21, 36, { bits: 8, groupSize: 6, hasZeroPoint: false }, 'residual'],
      ['2:4 int2 g4', 38, 40, { bits: 2, groupSize: 4, hasZeroPoint: true }, 'gate'],
    ];
    for (const [what, N, K, f, epilogue] of cases) {
      const w = prunedQuantized('w', [N, K], new Rng(N + K).normals(N * K, 0.5), { n: 2, m: 4 }, f);
      const parts = ['packed', 'scales', ...(f.hasZeroPoint ? ['zeroPoints'] : []), 'indices'];
      await checkAgainstReference(graphOf(w, epilogue, 'seq', 9), { seq: 8 }, [1, 5], parts, what);
    }
  }, LONG);
});

describe('the decode sweep over quantized N:M values (software rasterizers: lavapipe)', () => {
  // [what, n, N, K, format, epilogue]: units of 1, 2 or 4 packed words, 1 or 2 position words; rows of 3 to 5 units
  // (fewer than the 8 lanes: idle lanes read clamped units against zero A values); gate halves of 19 columns
  const cases: [string, number, number, number, ValueFormat, Epilogue][] = [
    ['2:4 int4 g32 zp, 4-word units', 2, 37, 192, { bits: 4, groupSize: 32, hasZeroPoint: true }, 'bias'],
    ['2:4 int4 g16, 2-word units', 2, 38, 160, { bits: 4, groupSize: 16, hasZeroPoint: false }, 'gate'],
    ['2:4 int8 g16 zp', 2, 37, 96, { bits: 8, groupSize: 16, hasZeroPoint: true }, 'residual'],
    ['1:4 int4 g32', 1, 37, 256, { bits: 4, groupSize: 32, hasZeroPoint: false }, 'none'],
    ['2:4 int2 g32 zp', 2, 37, 128, { bits: 2, groupSize: 32, hasZeroPoint: true }, 'none'],
  ];
  it('M = 1 picks sparse-nm-gemv-sweep and matches the CPU reference; M = 5 runs sparse-nm-gemv', async (ctx) => {
    if (!gpu) return ctx.skip();
    for (const [what, n, N, K, f, epilogue] of cases) {
      const w = prunedQuantized('w', [N, K], new Rng(N + K + n).normals(N * K, 0.5), { n, m: 4 }, f);
      const parts = ['packed', 'scales', ...(f.hasZeroPoint ? ['zeroPoints'] : []), 'indices'];
      const decode = await checkAgainstReference(graphOf(w, epilogue, 1, 11), {}, [1], parts, what);
      expect(decode.kernels[0].variant, what).toMatch(/^sparse-nm-gemv-sweep-/);
      const prefill = await checkAgainstReference(graphOf(w, epilogue, 'seq', 11), { seq: 8 }, [5], parts, what);
      expect(prefill.kernels[0].variant, what).toMatch(/^sparse-nm-gemv-\d/);
    }
  }, LONG);
});

describe('a whole Llama compiled with { quant: int4, sparsity: 2:4 }', () => {
  it('every projection and the classifier become 2:4 weights with int4 values; logits match the CPU reference on the same passes', async (ctx) => {
    if (!gpu) return ctx.skip();
    // hiddenDim 128: w2's rows keep 64 values, a multiple of int4's group of 32 (as dim 64's 32 are)
    const c: LlamaConfig = { dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 67, seqLen: 40, sharedClassifier: false };
    const w = randomLlamaWeights(c, 29);
    const model: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(c, w, o) };
    const compression = { quant: 'int4', sparsity: '2:4' } as const;
    // kernels per plan (not batch-invariant), so that the decode plan gets the one-token kernels this test looks for
    const engine = await compile(model, { device: gpu.info, prefillChunk: 8, kv: { blockSize: 4 }, ...compression });
    const m = engine.manifest;
    expect(m.kernels.some((k) => k.family === 'sparse-nm-matmul')).toBe(true);
    expect(m.kernels.some((k) => k.family === 'matmul' || k.family === 'dequant-matmul')).toBe(false);
    expect(m.kernels.some((k) => k.variant.startsWith('sparse-nm-gemv-sweep-'))).toBe(true); // decode
    const sparse = m.weights.filter((x) => x.encoding.kind === 'sparse-nm');
    // per layer: q, k and v merged into one projection, gate and up into another, then wo and w2; and the classifier
    expect(sparse).toHaveLength(2 * 4 + 1);
    for (const s of sparse) {
      expect(s.encoding, s.name).toMatchObject({ n: 2, m: 4, quantizedValues: { bits: 4, groupSize: 32 } });
      expect(s.parts.map((p) => p.role).sort(), s.name).toEqual(['indices', 'packed', 'scales', 'zeroPoints']);
    }
    const reference = runPasses(model.build({ lastTokenLogitsOnly: true }), 'sparsify-weights,quantize-weights', { options: compressionOf(compression) }).graph;
    const cpu = new CpuCausalLM(reference, c.seqLen);
    const session = await engine.createSession({ device: gpu });
    try {
      await expectDecodeMatchesCpu(session, cpu);
    } finally {
      await session.destroy();
    }
  }, LONG);
});
