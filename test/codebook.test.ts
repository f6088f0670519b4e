// Codebook (look-up table) weights: the scheme names (`--quant nf4`, codebook16, codebook256, ternary, binary, log2),
// the quantizers behind them (NF4's table, deterministic k-means, the ternary/binary/log2 levels), the weight store's
// checks, and on WebGPU (lavapipe in CI) the codebook matmul and embedding kernels, which read the packed indices and
// the table (no dense copy in the engine) and match the CPU reference (decodeWeight, then the same graph on the CPU)
// for every scheme, M = 1, 5 and 33, ragged N and K and every epilogue; then a whole Llama under --quant nf4 and
// codebook16.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile, compileGraph } from '../src/compile.js';
import { createTarget } from '../src/codegen/target.js';
import { InputError } from '../src/errors.js';
import type { LoadedModel } from '../src/frontends/load.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { kmeansTable, LOG2_TABLE, NF4_TABLE, quantizeCodebook, type CodebookQuantOptions } from '../src/ir/codebook.js';
import type { Graph } from '../src/ir/graph.js';
import type { Target } from '../src/ir/target.js';
import { parseQuantScheme, QUANT_SCHEMES } from '../src/ir/quant-scheme.js';
import { decodeWeight, packBits, quantizeWeight, WeightStore, type CodebookEncoding, type WeightEntry } from '../src/ir/weights.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { cpuProfile } from '../src/ir/device-profile.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { expectClose, expectDecodeMatchesCpu } from './support/encoded-weights.js';

// lavapipe JIT-compiles each pipeline on its first dispatch
const LONG = 600_000;

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

const mse = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return s / a.length;
};

describe('codebook scheme names', () => {
  it('parse with their levels, index bits and scale groups (nf4, ternary, binary, log2: 64 by default; k-means: none)', () => {
    expect(parseQuantScheme('nf4')).toEqual({ kind: 'codebook', name: 'nf4', levels: 'nf4', indexBits: 4, groupSize: 64 });
    expect(parseQuantScheme('NF4-G32')).toEqual({ kind: 'codebook', name: 'nf4-g32', levels: 'nf4', indexBits: 4, groupSize: 32 });
    expect(parseQuantScheme('codebook16')).toEqual({ kind: 'codebook', name: 'codebook16', levels: 'kmeans', indexBits: 4 });
    expect(parseQuantScheme('codebook256-g128')).toEqual({ kind: 'codebook', name: 'codebook256-g128', levels: 'kmeans', indexBits: 8, groupSize: 128 });
    expect(parseQuantScheme('ternary')).toEqual({ kind: 'codebook', name: 'ternary', levels: 'ternary', indexBits: 2, groupSize: 64 });
    expect(parseQuantScheme('binary-ch')).toEqual({ kind: 'codebook', name: 'binary-ch', levels: 'binary', indexBits: 1, groupSize: 'channel' });
    expect(parseQuantScheme('log2-g16')).toEqual({ kind: 'codebook', name: 'log2-g16', levels: 'log2', indexBits: 4, groupSize: 16 });
    for (const s of QUANT_SCHEMES) expect(() => parseQuantScheme(s), s).not.toThrow();
    for (const s of ['nf4', 'codebook16', 'codebook256', 'ternary', 'binary', 'log2']) expect(QUANT_SCHEMES).toContain(s);
  });
  it('reject unknown names, bad groups and integer suffixes with a typed error naming the grammar', () => {
    for (const bad of ['nf8', 'codebook32', 'codebook', 'ternary-sym', 'nf4-g32-ch', 'nf4-g48', 'binary-g4', 'log3', 'int4-nf4'])
      expect(() => parseQuantScheme(bad), bad).toThrow(InputError);
    expect(() => parseQuantScheme('nf4-g48')).toThrow(/group size 48.*nf4.*codebook16/);
    expect(() => parseQuantScheme('nf5')).toThrow(/nf4\|codebook16\|codebook256\|ternary\|binary\|log2/);
  });
});

describe('codebook quantizers', () => {
  const values = new Rng(11).normals(48 * 64, 0.3);
  const q = (opts: CodebookQuantOptions, v = values, shape = [48, 64]): WeightEntry => quantizeCodebook('w', shape, v, opts);

  it("nf4: QLoRA's 16 NormalFloat levels exactly, absmax scales, each value the nearest level", () => {
    expect(NF4_TABLE).toEqual([
      -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
      0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ]);
    const e = q({ levels: 'nf4', scaleGroupSize: 32 });
    expect(e.encoding).toEqual({ kind: 'codebook', indexBits: 4, groupSize: 48 * 64, scaleGroupSize: 32 });
    expect([...(e.data.codebook as Float32Array)]).toEqual(NF4_TABLE.map((v) => Math.fround(v)));
    const scales = e.data.scales as Float32Array;
    const dec = decodeWeight(e);
    for (let g = 0; g < scales.length; g++) {
      const grp = values.subarray(g * 32, (g + 1) * 32);
      expect(scales[g]).toBe(Math.fround(Math.max(...grp.map(Math.abs))));
      for (let j = 0; j < 32; j++) {
        const x = grp[j] / scales[g];
        const best = Math.min(...NF4_TABLE.map((l) => Math.abs(l - x)));
        expect(Math.abs(dec[g * 32 + j] / scales[g] - x)).toBeLessThanOrEqual(best + 1e-6);
      }
    }
  });

  it('k-means: deterministic, ascending centroids, and a lower error than uniform levels of the same count', () => {
    for (const [bits, k] of [[4, 16], [8, 256]] as const) {
      const a = q({ levels: 'kmeans', indexBits: bits });
      const b = q({ levels: 'kmeans', indexBits: bits });
      expect(a.data.indices).toEqual(b.data.indices);
      expect(a.data.codebook).toEqual(b.data.codebook);
      const book = [...(a.data.codebook as Float32Array)];
      expect(book).toHaveLength(k);
      expect(book).toEqual([...book].sort((x, y) => x - y));
      expect(a.encoding).toEqual({ kind: 'codebook', indexBits: bits, groupSize: 48 * 64 });
      expect(a.data.scales).toBeUndefined();
      // uniform: the same number of levels over the tensor's range (one asymmetric group), round to nearest
      const uniform = bits === 4 ? decodeWeight(quantizeWeight('u', [48, 64], values, { bits: 4, groupSize: 48 * 64, hasZeroPoint: true })) : decodeWeight(quantizeWeight('u', [48, 64], values, { bits: 8, groupSize: 48 * 64, hasZeroPoint: true }));
      expect(mse(decodeWeight(a), values), `${k} centroids`).toBeLessThan(mse(uniform, values));
    }
    // with scales: k-means over the values divided by their group's absmax
    const s = q({ levels: 'kmeans', indexBits: 4, scaleGroupSize: 64 });
    expect((s.data.scales as Float32Array).length).toBe(48);
    expect(mse(decodeWeight(s), values)).toBeLessThan(mse(decodeWeight(quantizeWeight('u', [48, 64], values, { bits: 4, groupSize: 64, hasZeroPoint: true })), values) * 1.5);
    // fewer distinct values than centroids: every value is represented exactly
    expect(kmeansTable(Float32Array.from([1, 1, 2, 2, 3]), 4).slice(-3)).toEqual([1, 2, 3]);
  });

  it('ternary: {-1, 0, 1} times the group scale, zero below 0.7 mean |w|; binary: ±mean |w|; log2: ±2^-k times absmax', () => {
    const t = q({ levels: 'ternary', scaleGroupSize: 64 });
    expect([...(t.data.codebook as Float32Array)]).toEqual([-1, 0, 1, 0]);
    expect(t.encoding).toMatchObject({ indexBits: 2, scaleGroupSize: 64 });
    const bin = q({ levels: 'binary', scaleGroupSize: 64 });
    expect([...(bin.data.codebook as Float32Array)]).toEqual([-1, 1]);
    const l2 = q({ levels: 'log2', scaleGroupSize: 64 });
    expect([...(l2.data.codebook as Float32Array)]).toEqual(LOG2_TABLE.map((v) => Math.fround(v)));
    expect(LOG2_TABLE).toEqual([-1, -0.5, -0.25, -0.125, -0.0625, -0.03125, -0.015625, -0.0078125, 0.0078125, 0.015625, 0.03125, 0.0625, 0.125, 0.25, 0.5, 1]);
    const [dt, db, dl] = [decodeWeight(t), decodeWeight(bin), decodeWeight(l2)];
    for (let g = 0; g < 48; g++) {
      const grp = values.subarray(g * 64, (g + 1) * 64);
      const meanAbs = grp.reduce((a, v) => a + Math.abs(v), 0) / 64;
      const delta = 0.7 * meanAbs;
      const kept = grp.filter((v) => Math.abs(v) > delta);
      const alpha = Math.fround(kept.reduce((a, v) => a + Math.abs(v), 0) / kept.length);
      const absmax = Math.fround(Math.max(...grp.map(Math.abs)));
      for (let j = 0; j < 64; j++) {
        const v = grp[j];
        const i = g * 64 + j;
        expect(dt[i]).toBe(Math.abs(v) > delta ? Math.sign(v) * alpha : 0);
        expect(db[i]).toBe((v >= 0 ? 1 : -1) * Math.fround(meanAbs));
        const lvl = Math.abs(dl[i] / absmax);
        expect(Number.isInteger(Math.log2(lvl)) && lvl <= 1 && lvl >= 2 ** -7, `log2 level ${lvl}`).toBe(true);
        expect(Math.sign(dl[i])).toBe(v >= 0 ? 1 : -1);
      }
    }
    // nearer levels give lower errors: ternary below binary
    expect(mse(dt, values)).toBeLessThan(mse(db, values));
  });

  it('the weight store checks codebook entries strictly: index bits, table groups, scale groups and buffer sizes', () => {
    const idx = packBits(new Array(64).fill(1), 4);
    const book = new Float32Array(16);
    const entry = (enc: CodebookEncoding, data: Record<string, Uint8Array | Float32Array>) => () => WeightStore.entry('w', 'f32', [4, 16], data, enc);
    expect(entry({ kind: 'codebook', indexBits: 4, groupSize: 64, scaleGroupSize: 16 }, { indices: idx, codebook: book, scales: new Float32Array(4) })).not.toThrow();
    expect(entry({ kind: 'codebook', indexBits: 4, groupSize: 64, scaleGroupSize: 16 }, { indices: idx, codebook: book })).toThrow(/scales/);
    expect(entry({ kind: 'codebook', indexBits: 4, groupSize: 64, scaleGroupSize: 16 }, { indices: idx, codebook: book, scales: new Float32Array(3) })).toThrow(InputError);
    expect(entry({ kind: 'codebook', indexBits: 4, groupSize: 64, scaleGroupSize: 24 }, { indices: idx, codebook: book, scales: new Float32Array(4) })).toThrow(/scale group size 24/);
    expect(entry({ kind: 'codebook', indexBits: 4.5, groupSize: 64 }, { indices: idx, codebook: book })).toThrow(/index bits/);
    expect(entry({ kind: 'codebook', indexBits: 4, groupSize: 48 }, { indices: idx, codebook: book })).toThrow(/group size/);
    expect(() => quantizeCodebook('w', [4, 16], new Float32Array(64), { levels: 'nf4' })).toThrow(/scale group/);
    expect(() => quantizeCodebook('w', [4, 16], new Float32Array(64), { levels: 'kmeans', indexBits: 2 })).toThrow(/4 or 8/);
  });

  it('the quantize-weights pass stores every projection and the tied embedding as one codebook entry each', () => {
    const c: LlamaConfig = { dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 67, seqLen: 16, sharedClassifier: true };
    const graph = buildLlama(c, randomLlamaWeights(c, 5), { lastTokenLogitsOnly: false });
    for (const spec of ['nf4', 'codebook16', 'codebook256', 'ternary', 'binary-g32', 'log2']) {
      const r = runPasses(graph, 'quantize-weights', { options: { quant: parseQuantScheme(spec) } });
      const cb = r.graph.weights.all().filter((e) => r.graph.nodes().some((n) => n.op === 'weight' && n.attrs.id === e.id) && e.encoding.kind === 'codebook');
      expect(cb, spec).toHaveLength(2 * 7 + 1);
      for (const e of cb) expect(e.name, spec).toContain(`@${spec}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// kernels on WebGPU

type Epilogue = 'none' | 'bias-silu' | 'residual' | 'swiglu';

/** `y = x · Wᵀ` then the epilogue; x is `[rows, K]`; W is `[N, K]` (`[2N, K]` for the SwiGLU gate, whose halves multiply). */
function graphOf(w: WeightEntry, rows: number | 'seq', epilogue: Epilogue, seed: number): Graph {
  const b = new GraphBuilder();
  const [NW, K] = w.shape;
  const x = b.input('x', 'f32', [rows, K]);
  let y = b.linear(x, b.weight(w));
  if (epilogue === 'bias-silu') y = b.silu(b.add(y, b.weight('bias', [NW], new Rng(seed + 1).normals(NW, 0.5))));
  if (epilogue === 'residual') y = b.add(y, b.input('r', 'f32', [rows, NW]));
  if (epilogue === 'swiglu') {
    const H = NW / 2;
    y = b.mul(b.silu(b.slice(y, { axes: [1], starts: [0], ends: [H] })), b.slice(y, { axes: [1], starts: [H], ends: [NW] }));
  }
  return b.build({ y });
}

const tensorOf = (rows: number, cols: number, seed: number): Tensor => Tensor.from('f32', [rows, cols], new Rng(seed).normals(rows * cols, 1));

/** Compiles `g`, runs it for each row count, compares with the CPU reference; returns the engine manifest. */
async function checkAgainstReference(g: Graph, bindings: Record<string, number>, rowCounts: readonly number[], what: string) {
  const engine = await compileGraph(g, bindings, { device: gpu!.info });
  const session = await engine.createSession({ device: gpu! });
  const K = g.inputs.find((n) => n.attrs.name === 'x')!.shape[1] as number;
  const r = g.inputs.find((n) => n.attrs.name === 'r');
  try {
    for (const rows of rowCounts) {
      const inputs: Record<string, Tensor> = { x: tensorOf(rows, K, rows) };
      if (r) inputs.r = tensorOf(rows, r.shape[1] as number, rows + 100);
      expectClose((await session.run(inputs)).y.data as Float32Array, runGraph(g, inputs).y.data as Float32Array, `${what}, M = ${rows}`);
    }
  } finally {
    await session.destroy();
  }
  const m = engine.manifest;
  // one dispatch of the codebook kernel (the epilogue is part of it), bound to the packed parts only
  expect(m.kernels.map((k) => k.family), what).toEqual(['codebook-matmul']);
  expect(m.plans[0].dispatches, what).toHaveLength(1);
  const w = m.weights.find((x) => x.encoding.kind === 'codebook')!;
  expect(w.parts.map((p) => p.role).sort(), what).toEqual(w.encoding.kind === 'codebook' && w.encoding.scaleGroupSize !== undefined ? ['codebook', 'indices', 'scales'] : ['codebook', 'indices']);
  return m;
}

/** A codebook `[N, K]` weight with several tables (one per `rowsPerTable` rows) and random indices, scales on groups of `sg`. */
function multiTableWeight(N: number, K: number, rowsPerTable: number, bits: number, sg: number | undefined, seed: number): WeightEntry {
  const r = new Rng(seed);
  const size = 1 << bits;
  const tables = N / rowsPerTable;
  const data: Record<string, Uint8Array | Float32Array> = {
    indices: packBits(Array.from({ length: N * K }, () => Math.floor(r.next() * size)), bits),
    codebook: Float32Array.from(r.normals(tables * size, 0.5)),
  };
  if (sg !== undefined) data.scales = Float32Array.from(r.normals((N * K) / sg, 1));
  return WeightStore.entry('w', 'f32', [N, K], data, { kind: 'codebook', indexBits: bits, groupSize: rowsPerTable * K, ...(sg !== undefined ? { scaleGroupSize: sg } : {}) });
}

describe('codebook-matmul on WebGPU against the CPU reference', () => {
  interface Case {
    what: string;
    weight: (N: number, K: number) => WeightEntry;
    N: number;
    K: number;
    epilogue: Epilogue;
  }
  const quant = (opts: CodebookQuantOptions) => (N: number, K: number) => quantizeCodebook('w', [N, K], new Rng(N * 31 + K).normals(N * K, 0.5), opts);
  const cases: Case[] = [
    { what: 'nf4, groups of 32', weight: quant({ levels: 'nf4', scaleGroupSize: 32 }), N: 54, K: 96, epilogue: 'bias-silu' },
    { what: 'nf4, groups of 10 (element path)', weight: quant({ levels: 'nf4', scaleGroupSize: 10 }), N: 7, K: 30, epilogue: 'residual' },
    { what: 'codebook16 (k-means, no scales)', weight: quant({ levels: 'kmeans', indexBits: 4 }), N: 33, K: 40, epilogue: 'none' },
    { what: 'codebook256 (k-means, workgroup table)', weight: quant({ levels: 'kmeans', indexBits: 8 }), N: 37, K: 52, epilogue: 'bias-silu' },
    { what: 'codebook256, groups of 3, odd K', weight: quant({ levels: 'kmeans', indexBits: 8, scaleGroupSize: 3 }), N: 9, K: 21, epilogue: 'none' },
    { what: 'ternary, groups of 32', weight: quant({ levels: 'ternary', scaleGroupSize: 32 }), N: 20, K: 64, epilogue: 'swiglu' },
    { what: 'binary, groups of 32', weight: quant({ levels: 'binary', scaleGroupSize: 32 }), N: 29, K: 96, epilogue: 'residual' },
    { what: 'binary, groups of 16 (element path)', weight: quant({ levels: 'binary', scaleGroupSize: 16 }), N: 6, K: 48, epilogue: 'none' },
    { what: 'log2, per channel', weight: quant({ levels: 'log2', scaleGroupSize: 72 }), N: 40, K: 72, epilogue: 'swiglu' },
    { what: 'one table per 3 rows, 4-bit, groups of 8', weight: (N, K) => multiTableWeight(N, K, 3, 4, 8, 5), N: 15, K: 40, epilogue: 'bias-silu' },
    { what: 'one table per row, 2-bit, no scales', weight: (N, K) => multiTableWeight(N, K, 1, 2, undefined, 6), N: 11, K: 36, epilogue: 'none' },
  ];
  for (const c of cases) {
    const what = `${c.what}, [N, K] = [${c.N}, ${c.K}], ${c.epilogue}`;
    it(`${what}: M = 1, then a symbolic seq at 5 and 33`, async (ctx) => {
      if (!gpu) return ctx.skip();
      const w = c.weight(c.N, c.K);
      const m1 = await checkAgainstReference(graphOf(w, 1, c.epilogue, 1), {}, [1], what);
      expect(m1.kernels[0].variant, what).toMatch(/^codebook-gemv-.*-r1-/);
      const ms = await checkAgainstReference(graphOf(w, 'seq', c.epilogue, 1), { seq: 33 }, [5, 33, 1], what);
      // prefill: row blocks of 4, or the subgroup GEMM where B is read by whole words on a software rasterizer
      expect(ms.kernels[0].variant, what).toMatch(/^codebook-gemv-.*-r4-|^codebook-gemm-subgroup-/);
      expect(ms.kernels[0].wgsl).toMatch(/tensorwright kernel: codebook matmul/);
    }, LONG);
  }

  it('every kernel and lane reduction matches: codebook-gemv with none, subgroupAdd or workgroup memory, codebook-gemm-subgroup; private and workgroup tables', async (ctx) => {
    if (!gpu) return ctx.skip();
    const t = createTarget(gpu.info);
    // [target name, target, variant at M = 1, variant for a symbolic seq]
    const targets: [string, Target, RegExp, RegExp][] = [
      ['no subgroups', { ...t, features: t.features.filter((f) => f !== 'subgroups') }, /^codebook-gemv-.*-l1-c4-r1-wg64$/, /^codebook-gemv-.*-l1-c4-r4-wg64$/],
      ['GPU class', { ...t, deviceClass: 'gpu' }, /^codebook-gemv-.*-l32-c4-r1-wg\d+-workgroup$/, /^codebook-gemv-.*-l32-c4-r4-wg\d+-workgroup$/],
    ];
    if (t.features.includes('subgroups') && t.subgroupSize && t.subgroupSize.min === t.subgroupSize.max)
      targets.push(['this device', t, /^codebook-gemv-.*-subgroup$/, /^codebook-gemm-subgroup-.*-r2-/]);
    for (const [levels, indexBits] of [['nf4', 4], ['kmeans', 8]] as const) {
      const w = quantizeCodebook('w', [54, 96], new Rng(9).normals(54 * 96, 0.5), { levels, indexBits, scaleGroupSize: 32 });
      for (const [name, target, decode, prefill] of targets)
        for (const [rows, bindings, runs, variant] of [[1, {}, [1], decode], ['seq', { seq: 20 }, [20, 3], prefill]] as const) {
          const what = `${levels}, ${name}, ${rows}`;
          const g = graphOf(w, rows, 'bias-silu', 3);
          const engine = await compileGraph(g, bindings, { target });
          const session = await engine.createSession({ device: gpu });
          try {
            for (const M of runs) {
              const inputs = { x: tensorOf(M, 96, M) };
              expectClose((await session.run(inputs)).y.data as Float32Array, runGraph(g, inputs).y.data as Float32Array, `${what}, M = ${M}`);
            }
          } finally {
            await session.destroy();
          }
          expect(engine.manifest.kernels.map((k) => k.variant), what).toEqual([expect.stringMatching(variant)]);
        }
    }
  }, LONG);

  it('a codebook weight stored [K, N] (no kernel reads it) fails at compile time naming the weight', async (ctx) => {
    if (!gpu) return ctx.skip();
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 32]);
    const w = b.weight(quantizeCodebook('w_kn', [32, 16], new Rng(3).normals(32 * 16, 0.5), { levels: 'nf4', scaleGroupSize: 16 }));
    const err = await compileGraph(b.build({ y: b.matmul(x, w) }), {}, { device: gpu.info }).catch((e: unknown) => e);
    expect(String((err as Error).message)).toMatch(/w_kn.*codebook/);
  }, LONG);
});

describe('codebook-gather on WebGPU against the CPU reference', () => {
  const tables: [string, () => WeightEntry][] = [
    ['nf4, groups of 16', () => quantizeCodebook('t', [23, 48], new Rng(1).normals(23 * 48, 0.5), { levels: 'nf4', scaleGroupSize: 16 })],
    ['codebook256, no scales, D = 13', () => quantizeCodebook('t', [19, 13], new Rng(2).normals(19 * 13, 0.5), { levels: 'kmeans', indexBits: 8 })],
    ['binary, per row, D = 40', () => quantizeCodebook('t', [17, 40], new Rng(3).normals(17 * 40, 0.5), { levels: 'binary', scaleGroupSize: 40 })],
    ['ternary, groups of 8', () => quantizeCodebook('t', [21, 24], new Rng(4).normals(21 * 24, 0.5), { levels: 'ternary', scaleGroupSize: 8 })],
    ['one table per 2 rows, 2-bit', () => multiTableWeight(12, 20, 2, 2, 10, 7)],
  ];
  for (const [what, make] of tables) {
    it(`${what}: ids in range and negative`, async (ctx) => {
      if (!gpu) return ctx.skip();
      const t = make();
      const V = t.shape[0];
      const b = new GraphBuilder();
      const ids = b.input('ids', 'i32', ['seq']);
      const g = b.build({ y: b.embedding(b.weight(t), ids) });
      const engine = await compileGraph(g, { seq: 6 }, { device: gpu.info });
      const session = await engine.createSession({ device: gpu });
      try {
        // (ids past the table are the kernel's own business: the CPU reference rejects them)
        for (const list of [[0, V - 1, 3, 5, 1, 2], [-1, -V, 4], [7]]) {
          const inputs = { ids: Tensor.from('i32', [list.length], list) };
          const want = runGraph(g, inputs).y.data as Float32Array;
          expectClose((await session.run(inputs)).y.data as Float32Array, want, `${what}, ids ${list}`);
        }
      } finally {
        await session.destroy();
      }
      expect(engine.manifest.kernels.map((k) => k.family)).toEqual(['codebook-gather']);
    }, LONG);
  }
});

describe('a whole codebook-quantized Llama on WebGPU', () => {
  for (const scheme of ['nf4', 'codebook16']) {
    it(`--quant ${scheme}: decode and chunked prefill logits match the CPU reference on the same weights`, async (ctx) => {
      if (!gpu) return ctx.skip();
      // rows of 64 and 128: every weight takes groups of 64
      const c: LlamaConfig = { dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 67, seqLen: 40, sharedClassifier: true };
      const w = randomLlamaWeights(c, 21);
      const model: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(c, w, o) };
      const engine = await compile(model, { device: gpu.info, quant: scheme, prefillChunk: 8, kv: { blockSize: 4 } });
      const m = engine.manifest;
      expect(m.kernels.some((k) => k.family === 'codebook-matmul')).toBe(true);
      expect(m.kernels.some((k) => k.family === 'codebook-gather')).toBe(true);
      expect(m.kernels.some((k) => k.family === 'matmul')).toBe(false); // every projection reads its packed weight
      const coded = m.weights.filter((x) => x.encoding.kind === 'codebook');
      // per layer: the merged q/k/v, wo, the merged w1/w3, w2; and the tied embedding/classifier
      expect(coded.length).toBe(2 * 4 + 1);
      for (const q of coded) expect(q.parts.map((p) => p.role), q.name).not.toContain('values');
      // the CPU reference: the same passes (projections merged, then quantized) on the same graph, decoded by decodeWeight
      const cpuGraph = runPasses(model.build({ lastTokenLogitsOnly: true }), 'O3', { device: cpuProfile, options: { quant: parseQuantScheme(scheme) } }).graph;
      const cpu = new CpuCausalLM(cpuGraph, c.seqLen);
      const session = await engine.createSession({ device: gpu });
      try {
        await expectDecodeMatchesCpu(session, cpu);
      } finally {
        await session.destroy();
      }
    }, LONG);
  }
});
