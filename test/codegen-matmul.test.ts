// Matmul WGSL kernels (every variant) run on the WebGPU device (lavapipe in CI) and checked against the CPU reference
// matmul, over ragged shapes, transposes, broadcast batches, f16 storage, fused epilogues, the SwiGLU gate and a
// dynamic M. Shapes are a fixed sample of the cross product M∈{1,3,8,17,33,70} x N∈{1,5,64,77,130} x K∈{1,7,64,129,300}
// (lavapipe compiles each kernel in ~0.1-2 s, so the whole product would not fit the time budget).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ShapeError, InputError } from '../src/errors.js';
import { chooseMatmulVariant, PLAIN_GPU } from '../src/codegen/schedule/matmul.js';
import { createTarget } from '../src/codegen/target.js';
import { generateMatmulKernel, matmulRequiredFeatures, type MatmulDType, type MatmulEpilogue, type MatmulSpec, type MatmulVariant } from '../src/codegen/matmul/index.js';
import { evalGrid, evalParams } from '../src/codegen/kernel.js';
import { matmul } from '../src/runtime/cpu/kernels.js';
import { gelu, sigmoid } from '../src/runtime/cpu/math.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { readBindings, runOutput } from './support/run-kernel.js';

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(async () => {
  await gpu?.destroy();
});

const adapterInfo = (vendor: string, architecture: string, device: string, description: string, sg: number) => ({
  backend: 'node-dawn' as const,
  adapter: { vendor, architecture, device, description, isFallbackAdapter: false },
  features: ['subgroups', 'shader-f16'],
  missingFeatures: [],
  limits: {},
  subgroupSize: { min: sg, max: sg },
});
const LAVAPIPE = createTarget(adapterInfo('mesa', 'software', 'llvmpipe-llvm-15', 'llvmpipe: Mesa 25', 8));
const DISCRETE = createTarget(adapterInfo('nvidia', 'ampere', 'RTX 3080', '', 32));

function rand(shape: number[], seed: number, dtype: MatmulDType = 'f32'): Tensor {
  const r = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.from(dtype, shape, r.uniforms(n, -1, 1));
}

/** f32 copy of a tensor (f16 values are already rounded to half). */
function asF32(t: Tensor): Tensor {
  return t.dtype === 'f32' ? t : new Tensor('f32', t.shape, Float32Array.from(t.data as Float32Array));
}

/** An epilogue together with its CPU meaning and operand tensors. */
interface EpilogueCase {
  epilogue: MatmulEpilogue;
  /** Operand tensors, given the output's batch, rows and width. */
  operands: (batch: number, M: number, nOut: number) => Tensor[];
  /** CPU value of the stored element. */
  cpu: (acc: number, at: { m: number; n: number; i: number }, ops: Tensor[]) => number;
}

interface Case {
  variant: MatmulVariant;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  dtypes?: MatmulSpec['dtypes'];
  gated?: MatmulSpec['gated'];
  epilogue?: EpilogueCase;
  batch?: number;
  /** Batch strides of 0: which operand is shared by every batch. */
  broadcast?: 'a' | 'b';
  maxWorkgroupsPerDimension?: number;
}

function title(c: Case): string {
  const v = c.variant;
  const tuning = Object.entries(v)
    .filter(([k]) => k !== 'kind')
    .map(([k, x]) => `${k}=${x}`)
    .join(',');
  const flags = [c.transA ? 'Aᵀ' : '', c.transB ? 'Bᵀ' : '', c.batch ? `batch=${c.batch}${c.broadcast ? `(${c.broadcast} shared)` : ''}` : '', c.dtypes ? JSON.stringify(c.dtypes) : '', c.gated ? `gated ${c.gated.activation}` : '', c.epilogue ? 'epilogue' : '', c.maxWorkgroupsPerDimension ? `maxGrid=${c.maxWorkgroupsPerDimension}` : '']
    .filter(Boolean)
    .join(' ');
  return `${v.kind}${tuning ? `(${tuning})` : ''} M=${c.M} N=${c.N} K=${c.K} ${flags}`.trim();
}

/** Runs case `c` with one compiled kernel for every M in `ms` (M dynamic when `ms` has several values); returns the worst error. */
async function runCase(c: Case, ms: number[] = [c.M], seed = 1): Promise<{ worst: number; wgsl: string; variant: string }> {
  const dyn = ms.length > 1;
  const batch = c.batch ?? 1;
  const dt = { a: c.dtypes?.a ?? 'f32', b: c.dtypes?.b ?? 'f32', out: c.dtypes?.out ?? 'f32' } as const;
  const nOut = c.gated ? c.N / 2 : c.N;
  const spec: MatmulSpec = {
    M: dyn ? 'seq' : c.M,
    N: c.N,
    K: c.K,
    transA: c.transA,
    transB: c.transB,
    dtypes: c.dtypes,
    gated: c.gated,
    epilogue: c.epilogue?.epilogue,
    variant: c.variant,
    nodes: [`%7 = matmul(%3, %5) {transB=${!!c.transB}}`],
    maxWorkgroupsPerDimension: c.maxWorkgroupsPerDimension,
    ...(c.batch ? { batch: c.batch, batchStrides: c.broadcast === 'a' ? { a: 0 } : c.broadcast === 'b' ? { b: 0 } : {} } : {}),
  };
  const kernel = generateMatmulKernel(spec);
  let worst = 0;
  for (const M of ms) {
    const aRows = c.transA ? [c.K, M] : [M, c.K];
    const bRows = c.transB ? [c.N, c.K] : [c.K, c.N];
    const A = rand(c.batch && c.broadcast !== 'a' ? [batch, ...aRows] : aRows, seed + M, dt.a);
    const B = rand(c.batch && c.broadcast !== 'b' ? [batch, ...bRows] : bRows, seed + 1000 + M, dt.b);
    const ops = c.epilogue?.operands(batch, M, nOut) ?? [];
    const outShape = c.batch ? [batch, M, nOut] : [M, nOut];
    const got = await runOutput(gpu!.device, kernel, readBindings(kernel, [A, B, ...ops]), { dtype: dt.out, shape: outShape, fill: 'nan' }, dyn ? { seq: M } : {});
    // reference: f64 accumulation over the (f16-rounded) inputs, then the gate and the epilogue
    const acc = matmul(asF32(A), asF32(B), !!c.transA, !!c.transB);
    const want = new Float32Array(batch * M * nOut);
    for (let b = 0; b < batch; b++)
      for (let m = 0; m < M; m++)
        for (let n = 0; n < nOut; n++) {
          const row = (b * M + m) * c.N;
          let v = acc.numbers[row + n];
          if (c.gated) {
            const g = v;
            const act = c.gated.activation === 'silu' ? g * sigmoid(g) : c.gated.activation === 'gelu' ? gelu(g, 'none') : g;
            v = act * acc.numbers[row + n + nOut];
          }
          const i = (b * M + m) * nOut + n;
          want[i] = c.epilogue ? c.epilogue.cpu(v, { m, n, i }, ops) : v;
        }
    const ref = dt.out === 'f16' ? Tensor.from('f16', outShape, want) : new Tensor('f32', outShape, want);
    const tol = dt.out === 'f16' || dt.a === 'f16' || dt.b === 'f16' ? 1e-2 : 1e-3;
    for (let i = 0; i < ref.size; i++) {
      const r = ref.numbers[i];
      const err = Math.abs(got.numbers[i] - r) / Math.max(1, Math.abs(r));
      const e = Number.isNaN(err) ? Infinity : err / tol;
      if (e > worst) worst = e;
    }
  }
  return { worst, wgsl: kernel.wgsl, variant: kernel.variant };
}

const NAIVE: MatmulVariant = { kind: 'naive' };
const SUBGROUP: MatmulVariant = { kind: 'gemm-subgroup' };
const TILED: MatmulVariant = { kind: 'gemm-tiled', unrollTileK: false }; // an unrollable tile loop compiles ~10x slower on lavapipe
const TILED_SMALL: MatmulVariant = { kind: 'gemm-tiled', tileM: 32, tileN: 32, tileK: 16, threadM: 2, threadN: 2, unrollTileK: false };
const GEMV: MatmulVariant = { kind: 'gemv' };
const GEMV_LANE: MatmulVariant = { kind: 'gemv', lanesPerColumn: 1 };
const GEMV_WG: MatmulVariant = { kind: 'gemv', lanesPerColumn: 8, reduction: 'workgroup', rowsPerBlock: 2 };
const GEMV_TREE: MatmulVariant = { kind: 'gemv', lanesPerColumn: 32, reduction: 'workgroup', colsPerGroup: 2 };

/** [variant, M, N, K, transA, transB]: a fixed sample covering every value of M, N, K per variant family. */
const SHAPES: [MatmulVariant, number, number, number, boolean, boolean][] = [
  [NAIVE, 1, 1, 1, false, false],
  [NAIVE, 3, 5, 7, true, false],
  [NAIVE, 17, 77, 129, false, true],
  [NAIVE, 70, 130, 300, true, true],
  [SUBGROUP, 1, 5, 7, false, false],
  [SUBGROUP, 3, 64, 64, false, true],
  [SUBGROUP, 8, 77, 129, true, false],
  [SUBGROUP, 17, 130, 300, false, false],
  [SUBGROUP, 33, 64, 300, true, true],
  [SUBGROUP, 70, 77, 64, false, true],
  [SUBGROUP, 33, 1, 1, false, false],
  [{ kind: 'gemm-subgroup', rowsPerLane: 2, colsPerLane: 4, subgroupsPerWorkgroup: 2 }, 70, 130, 128, false, false],
  [{ kind: 'gemm-subgroup', colsPerLane: 3, subgroupsPerWorkgroup: 4 }, 17, 77, 64, false, false],
  [TILED, 70, 130, 300, false, false],
  [TILED, 33, 64, 64, true, true],
  [TILED_SMALL, 3, 5, 7, false, true],
  [TILED_SMALL, 17, 77, 129, true, false],
  [{ ...TILED_SMALL, unrollTileK: true }, 8, 1, 64, false, false],
  [GEMV, 1, 64, 64, false, true],
  [GEMV, 3, 130, 300, false, true],
  [GEMV, 8, 77, 129, false, false],
  [GEMV, 33, 5, 7, true, true],
  [GEMV_LANE, 1, 77, 300, false, true],
  [GEMV_LANE, 3, 130, 129, true, false],
  [GEMV_WG, 8, 64, 64, false, true],
  [GEMV_WG, 1, 5, 129, false, false],
  [GEMV_TREE, 3, 130, 300, false, true],
];

describe('matmul kernels vs the CPU reference', () => {
  it.for(SHAPES.map((s) => [title({ variant: s[0], M: s[1], N: s[2], K: s[3], transA: s[4], transB: s[5] }), s] as const))('%s', async ([, s], ctx) => {
    if (!gpu) return ctx.skip();
    const [variant, M, N, K, transA, transB] = s;
    const r = await runCase({ variant, M, N, K, transA, transB });
    expect(r.worst, r.variant).toBeLessThanOrEqual(1);
  });

  it('naive kernel over a property-based sample of the shape cross product (transposes, batch)', async (ctx) => {
    if (!gpu) return ctx.skip();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(1, 3, 8, 17, 33, 70),
        fc.constantFrom(1, 5, 64, 77, 130),
        fc.constantFrom(1, 7, 64, 129, 300),
        fc.boolean(),
        fc.boolean(),
        fc.constantFrom(undefined, 2),
        async (M, N, K, transA, transB, batch) => {
          const r = await runCase({ variant: NAIVE, M, N, K, transA, transB, batch });
          expect(r.worst).toBeLessThanOrEqual(1);
        },
      ),
      { numRuns: 8, seed: 20240611 },
    );
  });
});

describe('matmul kernels: f16 storage (f32 arithmetic)', () => {
  const cases: Case[] = [
    { variant: SUBGROUP, M: 17, N: 77, K: 129, transB: true, dtypes: { a: 'f16', b: 'f16', out: 'f16' } },
    { variant: GEMV, M: 1, N: 130, K: 300, transB: true, dtypes: { a: 'f16', b: 'f16', out: 'f16' } },
    { variant: TILED_SMALL, M: 33, N: 64, K: 64, dtypes: { a: 'f16', b: 'f16', out: 'f16' } },
    { variant: GEMV, M: 3, N: 64, K: 300, transB: true, dtypes: { a: 'f32', b: 'f16', out: 'f32' } },
  ];
  it.for(cases.map((c) => [title(c), c] as const))('%s', async ([, c], ctx) => {
    if (!gpu) return ctx.skip();
    const r = await runCase(c);
    expect(r.wgsl).toMatch(/^enable f16;/);
    expect(r.worst, r.variant).toBeLessThanOrEqual(1);
  });
});

const biasGelu: EpilogueCase = {
  epilogue: { operands: [{ name: 'fc.bias', dtype: 'f32', broadcast: 'row' }], expr: (acc, load) => `tw_gelu_erf(${acc} + ${load(0)})`, helpers: ['erf', 'gelu_erf'] },
  operands: (_b, _m, n) => [rand([n], 77)],
  cpu: (acc, at, ops) => gelu(acc + ops[0].numbers[at.n], 'none'),
};
const residualScale: EpilogueCase = {
  epilogue: {
    operands: [
      { name: 'residual', dtype: 'f32', broadcast: 'full' },
      { name: 'scale', dtype: 'f32', broadcast: 'scalar' },
      { name: 'row_shift', dtype: 'f16', broadcast: 'col' },
    ],
    expr: (acc, load) => `${acc} * ${load(1)} + ${load(0)} + ${load(2)}`,
  },
  operands: (b, m, n) => [rand([b, m, n], 5), Tensor.from('f32', [1], [0.5]), rand([m], 6, 'f16')],
  cpu: (acc, at, ops) => acc * 0.5 + ops[0].numbers[at.i] + ops[2].numbers[at.m],
};

describe('matmul kernels: fused epilogues and the SwiGLU gate', () => {
  const cases: Case[] = [
    { variant: SUBGROUP, M: 33, N: 77, K: 129, epilogue: biasGelu },
    { variant: GEMV, M: 3, N: 64, K: 64, transB: true, epilogue: residualScale },
    { variant: TILED_SMALL, M: 17, N: 5, K: 7, epilogue: residualScale },
    { variant: SUBGROUP, M: 17, N: 130, K: 64, transB: true, gated: { activation: 'silu' } },
    { variant: SUBGROUP, M: 8, N: 128, K: 64, gated: { activation: 'silu' } },
    { variant: TILED_SMALL, M: 8, N: 128, K: 129, gated: { activation: 'silu' } },
    { variant: GEMV, M: 1, N: 154, K: 300, transB: true, gated: { activation: 'silu' } },
    { variant: NAIVE, M: 3, N: 10, K: 7, gated: { activation: 'gelu' }, epilogue: biasGelu },
  ];
  it.for(cases.map((c) => [title(c), c] as const))('%s', async ([, c], ctx) => {
    if (!gpu) return ctx.skip();
    const r = await runCase(c);
    expect(r.worst, r.variant).toBeLessThanOrEqual(1);
  });
});

describe('matmul kernels: batches, dynamic M, large grids', () => {
  it.for([
    ['gemm-subgroup, B shared by 3 batches', { variant: SUBGROUP, M: 17, N: 64, K: 129, batch: 3, broadcast: 'b' }],
    ['gemv, A shared by 2 batches', { variant: GEMV, M: 3, N: 77, K: 64, transB: true, batch: 2, broadcast: 'a' }],
    ['gemm-tiled, 2 batches', { variant: TILED_SMALL, M: 8, N: 5, K: 7, transA: true, batch: 2 }],
  ] as [string, Case][])('%s', async ([, c], ctx) => {
    if (!gpu) return ctx.skip();
    const r = await runCase(c);
    expect(r.worst, r.variant).toBeLessThanOrEqual(1);
  });

  it.for([
    ['gemm-subgroup', { variant: SUBGROUP, M: 0, N: 77, K: 64, transB: true }, [1, 8, 33, 70]],
    ['gemv (4 rows per workgroup)', { variant: { kind: 'gemv', rowsPerBlock: 4 }, M: 0, N: 130, K: 129, transB: true }, [1, 3, 16]],
    ['gemm-tiled with a batch', { variant: TILED_SMALL, M: 0, N: 64, K: 64, batch: 2 }, [5, 33]],
  ] as [string, Case, number[]][])('one compiled %s kernel runs with several values of a dynamic M', async ([, c, ms], ctx) => {
    if (!gpu) return ctx.skip();
    const r = await runCase(c, ms);
    expect(r.wgsl).toContain('params.p0');
    expect(r.worst, r.variant).toBeLessThanOrEqual(1);
  });

  it('linearizes the workgroup index over a 2-D grid when one dimension would exceed the limit', async (ctx) => {
    if (!gpu) return ctx.skip();
    const k = generateMatmulKernel({ M: 70, N: 130, K: 7, variant: NAIVE, maxWorkgroupsPerDimension: 5 });
    expect(k.grid[0]).toBe(5);
    expect(k.grid[1]).toBeGreaterThan(1);
    for (const c of [
      { variant: NAIVE, M: 70, N: 130, K: 7, maxWorkgroupsPerDimension: 5 },
      { variant: SUBGROUP, M: 70, N: 130, K: 64, maxWorkgroupsPerDimension: 3 },
    ] as Case[]) {
      const r = await runCase(c);
      expect(r.worst, r.variant).toBeLessThanOrEqual(1);
    }
  });
});

describe('matmul codegen without a device', () => {
  it('writes a readable kernel: header without the nodes, named constants, bindings in order', () => {
    const k = generateMatmulKernel({
      M: 'seq',
      N: 64,
      K: 32,
      transB: true,
      variant: SUBGROUP,
      nodes: ['%1 = matmul(%x, %w) // evil\nname */ fn main() {}'],
      epilogue: biasGelu.epilogue,
    });
    expect(k.family).toBe('matmul');
    expect(k.wgsl).toMatch(/^enable subgroups;/);
    expect(k.wgsl).toContain('// tensorwright kernel: matmul (gemm-subgroup');
    expect(k.nodes).toEqual(['%1 = matmul(%x, %w) // evil\nname */ fn main() {}']);
    expect(k.wgsl).not.toContain('evil');
    expect(k.wgsl).not.toContain('fc.bias');
    expect(k.features).toEqual(['subgroups']);
    expect(k.wgsl.split('\n').filter((l) => l.startsWith('fn main(')).length).toBe(1);
    expect(k.wgsl).toMatch(/const K: u32 = 32u;/);
    expect(k.wgsl).toMatch(/const SUBGROUP_SIZE: u32 = 8u;/);
    expect(k.wgsl).toContain('subgroupBroadcast(a_0, 7u)');
    expect(k.bindings.map((b) => b.name)).toEqual(['a', 'b', 'fc.bias', 'out']);
    expect(k.params).toEqual(['seq']);
    expect(k.grid[0]).toEqual({ min: [{ ceilDiv: ['seq', 8] }, 65535] });
    // the kernel is plain data: it survives a JSON round trip
    expect(JSON.parse(JSON.stringify(k))).toEqual(k);
    const values = evalParams(k.params, { seq: 20 });
    expect(k.grid.map((g) => evalGrid(g, k.params, values))).toEqual([3, 1, 1]);
  });

  it('uses vec4 loads only where the contiguous dim and the batch strides allow them', () => {
    const aligned = generateMatmulKernel({ M: 8, N: 64, K: 64, transB: true, variant: SUBGROUP });
    expect(aligned.wgsl).toContain('var<storage, read> a: array<vec4<f32>>');
    expect(aligned.wgsl).toContain('var<storage, read> b: array<vec4<f32>>');
    const ragged = generateMatmulKernel({ M: 8, N: 64, K: 63, transB: true, variant: SUBGROUP });
    expect(ragged.wgsl).toContain('var<storage, read> a: array<f32>');
    expect(ragged.wgsl).toContain('fn a_tail(');
    const oddStride = generateMatmulKernel({ M: 8, N: 64, K: 64, batch: 2, batchStrides: { b: 6 }, transB: true, variant: GEMV });
    expect(oddStride.wgsl).toContain('var<storage, read> b: array<f32>');
    const tiled = generateMatmulKernel({ M: 64, N: 64, K: 64, variant: TILED });
    expect(tiled.wgsl).toContain('var<workgroup> tile_a');
    expect(tiled.wgsl).toContain('array<vec4<f32>>');
  });

  it('chooses subgroup GEMM / GEMV on lavapipe and tiled GEMM / wide GEMV on real GPUs', () => {
    // the target classifies the device once, from the adapter's identity or a profile name
    expect(LAVAPIPE.deviceClass).toBe('software-gpu');
    expect(DISCRETE.deviceClass).toBe('gpu');
    expect(createTarget('lavapipe').deviceClass).toBe('software-gpu');
    expect(createTarget('discrete').deviceClass).toBe('gpu');
    expect(chooseMatmulVariant({ M: 1024, N: 1024, K: 1024 }, LAVAPIPE)).toMatchObject({ kind: 'gemm-subgroup', subgroupSize: 8, rowsPerLane: 4 });
    expect(chooseMatmulVariant({ M: 'seq', N: 1024, K: 1024 }, LAVAPIPE).kind).toBe('gemm-subgroup');
    expect(chooseMatmulVariant({ M: 1, N: 4096, K: 4096, transB: true }, LAVAPIPE)).toMatchObject({ kind: 'gemv', lanesPerColumn: 8, reduction: 'subgroup' });
    expect(chooseMatmulVariant({ M: 'seq', expectedM: 1, N: 4096, K: 4096, transB: true }, LAVAPIPE).kind).toBe('gemv');
    // measured on lavapipe: from M = 3 on, sharing activations by broadcast beats gemv
    expect(chooseMatmulVariant({ M: 4, N: 4096, K: 4096 }, LAVAPIPE)).toMatchObject({ kind: 'gemm-subgroup', rowsPerLane: 1 });
    expect(chooseMatmulVariant({ M: 16, N: 4096, K: 4096 }, LAVAPIPE)).toMatchObject({ kind: 'gemm-subgroup', rowsPerLane: 2 });
    expect(chooseMatmulVariant({ M: 64, N: 64, K: 64 }, LAVAPIPE)).toMatchObject({ kind: 'gemm-subgroup', subgroupsPerWorkgroup: 2 });
    // no subgroups on a CPU: tiled (still 2-4x faster than naive there), and lane-per-column gemv
    expect(chooseMatmulVariant({ M: 64, N: 64, K: 64 }, { ...LAVAPIPE, features: [] })).toMatchObject({ kind: 'gemm-tiled', unrollTileK: false });
    expect(chooseMatmulVariant({ M: 1, N: 64, K: 64 }, { ...LAVAPIPE, features: [] })).toMatchObject({ kind: 'gemv', lanesPerColumn: 1 });
    expect(chooseMatmulVariant({ M: 16, N: 4096, K: 4096 }, DISCRETE).kind).toBe('gemv');
    expect(chooseMatmulVariant({ M: 1024, N: 1024, K: 1024 }, DISCRETE)).toMatchObject({ kind: 'gemm-tiled', tileM: 64, tileN: 64 });
    expect(chooseMatmulVariant({ M: 1, N: 4096, K: 4096, transB: true }, DISCRETE).kind).toBe('gemv');
    // every choice generates
    for (const d of [LAVAPIPE, DISCRETE, PLAIN_GPU])
      for (const M of [1, 4, 16, 17, 512, 'seq'])
        expect(() => generateMatmulKernel({ M, N: 96, K: 80, transB: true, variant: chooseMatmulVariant({ M, N: 96, K: 80 }, d) })).not.toThrow();
  });

  it('reports the features a kernel needs', () => {
    expect(matmulRequiredFeatures({ M: 4, N: 4, K: 4, variant: SUBGROUP })).toEqual(['subgroups']);
    expect(matmulRequiredFeatures({ M: 4, N: 4, K: 4, dtype: 'f16', variant: NAIVE })).toEqual(['shader-f16']);
    expect(matmulRequiredFeatures({ M: 4, N: 4, K: 4, variant: GEMV_LANE })).toEqual([]);
  });

  it('rejects impossible shapes and inconsistent tuning', () => {
    expect(() => generateMatmulKernel({ M: 4, N: 5, K: 4, gated: { activation: 'silu' }, variant: NAIVE })).toThrow(ShapeError);
    expect(() => generateMatmulKernel({ M: 4, N: 4, K: 0, variant: NAIVE })).toThrow(ShapeError);
    expect(() => generateMatmulKernel({ M: 0, N: 4, K: 4, variant: NAIVE })).toThrow(ShapeError);
    expect(() => generateMatmulKernel({ M: 4, N: 4, K: 4, variant: { kind: 'gemv', lanesPerColumn: 6 } })).toThrow(InputError);
    expect(() => generateMatmulKernel({ M: 4, N: 4, K: 4, variant: { kind: 'gemv', lanesPerColumn: 16, reduction: 'subgroup', subgroupSize: 8 } })).toThrow(InputError);
    expect(() => generateMatmulKernel({ M: 4, N: 4, K: 4, variant: NAIVE, epilogue: { operands: [], expr: (acc, load) => `${acc} + ${load(0)}` } })).toThrow(InputError);
    expect(() => generateMatmulKernel({ M: 4, N: 4, K: 4, variant: NAIVE, epilogue: { operands: [], expr: (acc) => acc, helpers: ['nope'] } })).toThrow(InputError);
  });
});
