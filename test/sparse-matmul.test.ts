// The sparse matmul kernel families on WebGPU (lavapipe in CI): matmuls over N:M-sparse and block-sparse weights
// stored [N, K] run kernels that read only the kept values (bound to the weight's payload parts, no dense copy in the
// engine), and match the CPU reference (which decodes the same weights) for every epilogue the dense family fuses.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile, compileGraph } from '../src/compile.js';
import type { LoadedModel } from '../src/frontends/load.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig, type LlamaWeights } from '../src/models/llama.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { InputError, UnsupportedOpError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import type { Target } from '../src/ir/target.js';
import { createTarget } from '../src/codegen/target.js';
import { decodeWeight, packBits, WeightStore, type WeightEntry } from '../src/ir/weights.js';
import { nmIndexBits, pruneNM, toBlockSparse } from '../src/ir/sparsify.js';
import { generateBlockSparseGemvKernel } from '../src/codegen/matmul/block-sparse-gemv.js';
import { generateSparseNMGemvKernel } from '../src/codegen/matmul/sparse-nm-gemv.js';
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

/** What follows the matmul: nothing, `+ bias`, `+ residual` (an input of the output's shape), or the SwiGLU gate. */
type Epilogue = 'none' | 'bias' | 'residual' | 'gate';
const EPILOGUES: readonly Epilogue[] = ['none', 'bias', 'residual', 'gate'];

/**
 * `y = x · Wᵀ` then the epilogue, W made by `encode` from dense normals of shape [N, K] (for the gate, W is one
 * [N, K] weight whose halves are the gate and up projections: y = silu(h[:, :N/2]) * h[:, N/2:]).
 */
function graphOf(encode: (name: string, shape: number[], values: Float32Array) => WeightEntry, N: number, K: number, epilogue: Epilogue, rows: number | 'seq', seed: number): Graph {
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', [rows, K]);
  let y = b.linear(x, b.weight(encode('w', [N, K], new Rng(seed).normals(N * K, 0.5))));
  if (epilogue === 'bias') y = b.add(y, b.weight('bias', [N], new Rng(seed + 1).normals(N, 0.5)));
  if (epilogue === 'residual') y = b.add(y, b.input('r', 'f32', [rows, N]));
  if (epilogue === 'gate') y = b.mul(b.silu(b.slice(y, { axes: [1], starts: [0], ends: [N / 2] })), b.slice(y, { axes: [1], starts: [N / 2], ends: [N] }));
  return b.build({ y });
}

const tensorOf = (rows: number, cols: number, seed: number): Tensor => Tensor.from('f32', [rows, cols], new Rng(seed).normals(rows * cols, 1));

/** Inputs for `rows` rows: x, and the residual when the graph has one. */
function inputsOf(g: Graph, rows: number, K: number, N: number, seed: number): Record<string, Tensor> {
  const inputs: Record<string, Tensor> = { x: tensorOf(rows, K, seed) };
  if (g.inputs.some((i) => i.attrs.name === 'r')) inputs.r = tensorOf(rows, N, seed + 1);
  return inputs;
}

/**
 * Compiles `g` for `bindings`, runs it on `rows` of each count and compares with the CPU reference; checks that one
 * dispatch of `family` computed it reading the weight's `parts` only. Returns the engine manifest.
 */
async function checkAgainstReference(g: Graph, bindings: Record<string, number>, rowCounts: readonly number[], family: string, parts: string[], what: string, target?: Target) {
  const [N, K] = g.weights.all().find((e) => e.name === 'w')!.shape;
  const engine = await compileGraph(g, bindings, target ? { target } : { device: gpu!.info });
  const session = await engine.createSession({ device: gpu! });
  try {
    for (const rows of rowCounts) {
      const inputs = inputsOf(g, rows, K, N, 100 + rows);
      const want = runGraph(g, inputs).y;
      const got = (await session.run(inputs)).y;
      expectClose(got.data as Float32Array, want.data as Float32Array, `${what}, M = ${rows}`);
    }
  } finally {
    await session.destroy();
  }
  const m = engine.manifest;
  expect(m.kernels.map((k) => k.family), what).toEqual([family]);
  // the bias, residual or gate is the kernel's epilogue: one dispatch
  expect(m.plans[0].dispatches, what).toHaveLength(1);
  expect(m.weights.find((x) => x.name === 'w')!.parts.map((p) => p.role).sort(), what).toEqual([...parts].sort());
  return m;
}

/** Runs `g` at M = 1 (the decode kernel) and, with a symbolic seq, at M = 3 and 17 (the multi-row kernel). */
async function checkAllM(encode: (name: string, shape: number[], values: Float32Array) => WeightEntry, N: number, K: number, epilogue: Epilogue, family: string, parts: string[], what: string): Promise<void> {
  const seed = N * 1000 + K;
  await checkAgainstReference(graphOf(encode, N, K, epilogue, 1, seed), {}, [1], family, parts, what);
  await checkAgainstReference(graphOf(encode, N, K, epilogue, 'seq', seed), { seq: 17 }, [3, 17], family, parts, what);
}

describe('pruneNM and toBlockSparse', () => {
  it('pruneNM keeps the n largest magnitudes of every group of m, positions packed 2, 4 or 8 bits', () => {
    const values = Float32Array.from([0.1, -3, 2, 0.5, /**/ 1, 1, -1, 0, /**/ 0, 0, 0, 0.2]);
    const e = pruneNM('w', [3, 4], values, { n: 2, m: 4 });
    expect(e.encoding).toEqual({ kind: 'sparse-nm', n: 2, m: 4, indexBits: 2 });
    expect(Array.from(decodeWeight(e))).toEqual([0, -3, 2, 0, /**/ 1, 1, 0, 0, /**/ 0, 0, 0, Math.fround(0.2)]);
    expect(e.data.indices.byteLength).toBe(2); // 6 positions x 2 bits
    expect([3, 4, 5, 16, 17, 256].map(nmIndexBits)).toEqual([2, 2, 4, 4, 8, 8]);
    // 4:8 over a 3-D weight: every group keeps its 4 largest
    const big = new Rng(3).normals(2 * 3 * 16, 1);
    const d = decodeWeight(pruneNM('w3', [2, 3, 16], big, { n: 4, m: 8 }));
    for (let g = 0; g < big.length / 8; g++) {
      const group = Array.from(big.subarray(g * 8, g * 8 + 8));
      const kept = group.filter((_, i) => d[g * 8 + i] !== 0);
      expect(kept).toHaveLength(4);
      expect(Math.min(...kept.map(Math.abs))).toBeGreaterThanOrEqual(Math.max(...group.filter((_, i) => d[g * 8 + i] === 0).map(Math.abs)));
    }
  });

  it('toBlockSparse keeps the blocks of largest norm, never all-zero ones', () => {
    // 4x4 blocks of 2x2: block (r, c) filled with r * 4 + c (block 0 is zero)
    const v = new Float32Array(64).map((_, i) => Math.floor(Math.floor(i / 8) / 2) * 4 + Math.floor((i % 8) / 2));
    const half = toBlockSparse('w', [8, 8], v, { blockRows: 2, blockCols: 2, density: 0.5 });
    expect(Array.from(half.data.rowPtr)).toEqual([0, 0, 0, 4, 8]);
    const want = v.map((x) => (x >= 8 ? x : 0));
    expect(Array.from(decodeWeight(half))).toEqual(Array.from(want));
    const all = toBlockSparse('w', [8, 8], v, { blockRows: 2, blockCols: 2, density: 1 });
    expect(all.data.colIdx).toHaveLength(15); // the zero block is not stored
    expect(Array.from(decodeWeight(all))).toEqual(Array.from(v));
    const none = toBlockSparse('w', [8, 8], v, { blockRows: 2, blockCols: 2, density: 0 });
    expect(Array.from(none.data.rowPtr)).toEqual([0, 0, 0, 0, 0]);
    expect(decodeWeight(none).every((x) => x === 0)).toBe(true);
  });

  it('impossible configurations are typed errors naming the weight', () => {
    const v = new Float32Array(64);
    expect(() => pruneNM('wq', [4, 6], v, { n: 2, m: 4 })).toThrow(/wq.*divisible by 4/);
    expect(() => pruneNM('wq', [4, 6], v, { n: 2, m: 4 })).toThrow(InputError);
    expect(() => pruneNM('wq', [4, 8], v, { n: 5, m: 4 })).toThrow(InputError);
    expect(() => pruneNM('wq', [4, 8], v, { n: 0, m: 4 })).toThrow(InputError);
    expect(() => toBlockSparse('wb', [8, 8], v, { blockRows: 3, blockCols: 4, density: 1 })).toThrow(/wb.*3x4 blocks do not tile/);
    expect(() => toBlockSparse('wb', [8, 8], v, { blockRows: 4, blockCols: 4, density: 1.5 })).toThrow(InputError);
    expect(() => toBlockSparse('wb', [64], v, { blockRows: 4, blockCols: 4, density: 1 })).toThrow(/wb.*2-D/);
    expect(() => WeightStore.entry('wi', 'f32', [4, 8], { values: new Float32Array(8), indices: new Uint8Array(4) }, { kind: 'sparse-nm', n: 1, m: 8, indexBits: 2 })).toThrow(/wi.*2-bit positions/);
    const blockEntry = (rowPtr: number[], colIdx: number[]) =>
      WeightStore.entry('wc', 'f32', [8, 8], { rowPtr: Int32Array.from(rowPtr), colIdx: Int32Array.from(colIdx), blocks: new Float32Array(64) }, { kind: 'sparse-block', blockRows: 4, blockCols: 4 });
    expect(() => blockEntry([0, 1, 2], [0, 2])).toThrow(/wc.*column 2 is out of range/);
    expect(() => blockEntry([0, 2, 1], [0, 1])).toThrow(/wc.*must not decrease/);
    expect(() => blockEntry([0, 1, 2], [1, 0])).not.toThrow();
    // the generators refuse what they do not compute
    const spec = { M: 1, N: 16, K: 32, transB: true };
    expect(() => generateSparseNMGemvKernel({ ...spec, K: 30, weight: { n: 2, m: 4, indexBits: 2 } }, { kind: 'sparse-nm-gemv' })).toThrow(InputError);
    expect(() => generateSparseNMGemvKernel({ ...spec, transB: false, weight: { n: 2, m: 4, indexBits: 2 } }, { kind: 'sparse-nm-gemv' })).toThrow(InputError);
    expect(() => generateBlockSparseGemvKernel({ ...spec, weight: { blockRows: 6, blockCols: 8 } }, { kind: 'block-sparse-gemv' })).toThrow(/do not tile/);
    expect(() => generateBlockSparseGemvKernel({ ...spec, weight: { blockRows: 8, blockCols: 8 } }, { kind: 'block-sparse-gemv', colsPerGroup: 3 })).toThrow(/colsPerGroup/);
  });
});

describe('sparse-nm-matmul on WebGPU against the CPU reference', () => {
  const NM_PARTS = ['values', 'indices'];
  const patterns: [number, number][] = [[2, 4], [1, 4], [4, 8]];
  for (const [n, m] of patterns)
    for (const epilogue of EPILOGUES) {
      // ragged: N not a multiple of a workgroup's 32 columns, K's steps not a multiple of the 8 lanes; 20 groups per
      // row: rows of whole vec4s of kept values (a step of 4/n groups); 15 or 9: a step of one group (but for 4:8)
      const [N, K] = epilogue === 'gate' ? [38, 9 * m] : [37, (epilogue === 'residual' ? 15 : 20) * m];
      const what = `${n}:${m}, [N, K] = [${N}, ${K}], ${epilogue}`;
      it(`${what}: M = 1, 3, 17`, async (ctx) => {
        if (!gpu) return ctx.skip();
        await checkAllM((name, shape, v) => pruneNM(name, shape, v, { n, m }), N, K, epilogue, 'sparse-nm-matmul', NM_PARTS, what);
      }, LONG);
    }

  it('groups of 3 (A gathered at the positions), 3:4 (positions straddling words) and byte positions (no indexBits)', async (ctx) => {
    if (!gpu) return ctx.skip();
    await checkAllM((name, shape, v) => pruneNM(name, shape, v, { n: 2, m: 3 }), 21, 45, 'bias', 'sparse-nm-matmul', NM_PARTS, '2:3');
    await checkAllM((name, shape, v) => pruneNM(name, shape, v, { n: 3, m: 4 }), 21, 44, 'none', 'sparse-nm-matmul', NM_PARTS, '3:4');
    const bytes = (name: string, shape: number[], v: Float32Array): WeightEntry => {
      const e = pruneNM(name, shape, v, { n: 2, m: 4 });
      const positions = Array.from({ length: e.data.values.length }, (_, k) => (e.data.indices[(k * 2) >> 3] >> ((k * 2) & 7)) & 3);
      return WeightStore.entry(name, 'f32', shape, { values: e.data.values, indices: packBits(positions, 8) }, { kind: 'sparse-nm', n: 2, m: 4 });
    };
    await checkAllM(bytes, 21, 40, 'residual', 'sparse-nm-matmul', NM_PARTS, '2:4, byte positions');
  }, LONG);
});

describe('block-sparse-matmul on WebGPU against the CPU reference', () => {
  const BLOCK_PARTS = ['rowPtr', 'colIdx', 'blocks'];
  const densities = [1, 0.5, 0.1, 0];
  let turn = 0;
  for (const size of [8, 16, 32])
    for (const density of densities) {
      const epilogue = EPILOGUES[turn++ % EPILOGUES.length];
      // ragged: N and K not multiples of a workgroup's 32 columns (nor of 4 blocks)
      const [N, K] = [3 * size, 5 * size];
      const what = `${size}x${size} blocks, density ${density}, [N, K] = [${N}, ${K}], ${epilogue}`;
      it(`${what}: M = 1, 3, 17`, async (ctx) => {
        if (!gpu) return ctx.skip();
        await checkAllM((name, shape, v) => toBlockSparse(name, shape, v, { blockRows: size, blockCols: size, density }), N, K, epilogue, 'block-sparse-matmul', BLOCK_PARTS, what);
      }, LONG);
    }

  it('an empty block row between full ones, rectangular blocks, blocks of 6 columns (scalar chunks), a gate across block rows', async (ctx) => {
    if (!gpu) return ctx.skip();
    const emptyRow = (name: string, shape: number[], v: Float32Array): WeightEntry => {
      const z = v.slice();
      z.fill(0, 16 * shape[1], 32 * shape[1]); // block row 1 of 3 is all zero
      const e = toBlockSparse(name, shape, z, { blockRows: 16, blockCols: 8, density: 1 });
      expect(Array.from(e.data.rowPtr)).toEqual([0, 5, 5, 10]);
      return e;
    };
    await checkAllM(emptyRow, 48, 40, 'bias', 'block-sparse-matmul', BLOCK_PARTS, 'empty middle block row');
    await checkAllM((name, shape, v) => toBlockSparse(name, shape, v, { blockRows: 8, blockCols: 6, density: 0.5 }), 40, 42, 'residual', 'block-sparse-matmul', BLOCK_PARTS, '8x6 blocks');
    // the gate's halves are 20 columns each: the up half starts inside a block row of 8
    await checkAllM((name, shape, v) => toBlockSparse(name, shape, v, { blockRows: 8, blockCols: 16, density: 0.5 }), 40, 64, 'gate', 'block-sparse-matmul', BLOCK_PARTS, 'gate, 8x16 blocks');
  }, LONG);
});

describe('sparse kernels on other targets, and what they do not take', () => {
  it('every lane reduction matches: one lane, subgroupAdd (this device) and workgroup memory (GPU class)', async (ctx) => {
    if (!gpu) return ctx.skip();
    const t = createTarget(gpu.info);
    const targets: [string, Target][] = [
      ['no subgroups', { ...t, features: t.features.filter((f) => f !== 'subgroups') }],
      ['GPU class', { ...t, deviceClass: 'gpu' }],
      ['this device', t],
    ];
    const nm = (name: string, shape: number[], v: Float32Array) => pruneNM(name, shape, v, { n: 2, m: 4 });
    const bs = (name: string, shape: number[], v: Float32Array) => toBlockSparse(name, shape, v, { blockRows: 16, blockCols: 16, density: 0.5 });
    for (const [name, target] of targets) {
      const a = await checkAgainstReference(graphOf(nm, 37, 60, 'bias', 'seq', 5), { seq: 17 }, [1, 17], 'sparse-nm-matmul', ['values', 'indices'], `2:4, ${name}`, target);
      const b = await checkAgainstReference(graphOf(bs, 48, 80, 'gate', 'seq', 6), { seq: 17 }, [1, 17], 'block-sparse-matmul', ['rowPtr', 'colIdx', 'blocks'], `block, ${name}`, target);
      for (const m of [a, b]) {
        const variant = m.kernels[0].variant;
        if (name === 'no subgroups') expect(variant).toMatch(/-l1-.*-wg64$/);
        if (name === 'GPU class') expect(variant).toMatch(/-l32-.*-workgroup$/);
      }
    }
  }, LONG);

  it('a sparse weight no sparse kernel takes (stored [K, N]) fails at compile time naming the weight', async (ctx) => {
    if (!gpu) return ctx.skip();
    for (const w of [pruneNM('w_kn', [32, 16], new Rng(3).normals(32 * 16, 0.5), { n: 2, m: 4 }), toBlockSparse('w_kn', [32, 16], new Rng(3).normals(32 * 16, 0.5), { blockRows: 8, blockCols: 8, density: 0.5 })]) {
      const b = new GraphBuilder();
      const x = b.input('x', 'f32', [2, 32]);
      const g = b.build({ y: b.matmul(x, b.weight(w)) });
      const err = await compileGraph(g, {}, { device: gpu.info }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnsupportedOpError);
      expect(String((err as Error).message)).toMatch(new RegExp(`w_kn.*${w.encoding.kind}`));
    }
  }, LONG);
});

describe('a whole 2:4-pruned Llama on WebGPU', () => {
  it('every projection and the classifier pruned 2:4: decode and chunked prefill logits match the CPU reference on the same weights', async (ctx) => {
    if (!gpu) return ctx.skip();
    const c: LlamaConfig = { dim: 64, hiddenDim: 96, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 67, seqLen: 40, sharedClassifier: false };
    const dense = randomLlamaWeights(c, 23);
    const hd = c.dim / c.nHeads;
    const p24 = (name: string, shape: number[], v: Float32Array) => pruneNM(name, shape, v, { n: 2, m: 4 });
    const w: LlamaWeights = {
      ...dense,
      layers: dense.layers.map((L, i) => ({
        ...L,
        wq: p24(`layers.${i}.wq`, [c.dim, c.dim], L.wq as Float32Array),
        wk: p24(`layers.${i}.wk`, [c.nKvHeads * hd, c.dim], L.wk as Float32Array),
        wv: p24(`layers.${i}.wv`, [c.nKvHeads * hd, c.dim], L.wv as Float32Array),
        wo: p24(`layers.${i}.wo`, [c.dim, c.dim], L.wo as Float32Array),
        w1: p24(`layers.${i}.w1`, [c.hiddenDim, c.dim], L.w1 as Float32Array),
        w2: p24(`layers.${i}.w2`, [c.dim, c.hiddenDim], L.w2 as Float32Array),
        w3: p24(`layers.${i}.w3`, [c.hiddenDim, c.dim], L.w3 as Float32Array),
      })),
      wcls: p24('output', [c.vocabSize, c.dim], dense.wcls as Float32Array),
    };
    const model: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(c, w, o) };
    const engine = await compile(model, { device: gpu.info, prefillChunk: 8, kv: { blockSize: 4 } });
    const m = engine.manifest;
    expect(m.kernels.some((k) => k.family === 'sparse-nm-matmul')).toBe(true);
    expect(m.kernels.some((k) => k.family === 'matmul')).toBe(false); // every projection reads its kept values only
    const sparse = m.weights.filter((x) => x.encoding.kind === 'sparse-nm');
    expect(sparse).toHaveLength(2 * 7 + 1);
    for (const s of sparse) expect(s.parts.map((p) => p.role).sort(), s.name).toEqual(['indices', 'values']);
    const session = await engine.createSession({ device: gpu });
    const cpu = new CpuCausalLM(model.build({ lastTokenLogitsOnly: true }), c.seqLen);
    try {
      await expectDecodeMatchesCpu(session, cpu);
    } finally {
      await session.destroy();
    }
  }, LONG);
});
