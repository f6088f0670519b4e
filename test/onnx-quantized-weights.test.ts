/**
 * Quantized ONNX weights on the CPU reference and on WebGPU:
 * - onnxruntime-web's vectors for `com.microsoft::MatMulNBits`, `GatherBlockQuantized` and `DequantizeLinear` (int4,
 *   uint8, blocked) from `../shared/onnx/ort-web-ops`, against their expected outputs;
 * - `MatMulNBits` with 8 and 2 bits, packed and float zero points, a bias and a 1-D A, against the operator's
 *   definition computed here in plain JavaScript; its typed errors naming the node;
 * - `DequantizeLinear → MatMul` (int8 and int4; per-tensor, per-column and blocked) against the CPU reference.
 * On WebGPU every matmul over such a weight must run the dequantizing kernel on the packed integers: the engine
 * holds the quantized weight and no dense matmul.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { compileGraph } from '../src/compile.js';
import { compareOutput } from '../src/cli/onnx-test.js';
import { ModelFormatError, UnsupportedOpError } from '../src/errors.js';
import { importOnnx } from '../src/frontends/onnx/index.js';
import type { Graph } from '../src/ir/graph.js';
import { floatToHalf, packBits, type QuantizedEncoding } from '../src/ir/weights.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import type { EngineManifest } from '../src/runtime/engine-manifest.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice } from './helpers/webgpu.js';
import { modelBytes, node, T, tensor, valueInfo, type AttrSpec } from './support/onnx.js';
import { ortCaseModel, readOrtWebOps, type OrtCase, type OrtTest } from './support/ort-web-ops.js';
import { hasShared, noteMissingShared } from './support/shared.js';

if (!hasShared) noteMissingShared('onnxruntime-web quantized-op vectors');
const gpu = await acquireTestDevice();
afterAll(async () => gpu?.destroy());
const LONG = 300_000;

/** Which inputs of an op are initializers: the weight-side inputs of the contrib ops (indices are fed). */
function constantInputs(op: string, asWeights: boolean): (i: number) => boolean {
  if (op === 'MatMulNBits') return (i) => i >= 1;
  if (op === 'GatherBlockQuantized') return (i) => i !== 1;
  return (i) => asWeights && i >= 0;
}

/** Runs `g` on the WebGPU device: outputs and the engine manifest. */
async function runOnGpu(g: Graph, inputs: Record<string, Tensor>): Promise<{ outputs: Record<string, Tensor>; manifest: EngineManifest }> {
  const engine = await compileGraph(g, {}, { device: gpu!.info });
  const session = await engine.createSession({ device: gpu! });
  try {
    return { outputs: await session.run(inputs), manifest: engine.manifest };
  } finally {
    await session.destroy();
  }
}

const families = (m: EngineManifest): string[] => m.kernels.map((k) => k.family);

/** Every case of a vector file, labelled. */
function casesOf(file: string): [string, OrtTest, OrtCase][] {
  return hasShared ? readOrtWebOps(file).flatMap((t) => t.cases.map((c): [string, OrtTest, OrtCase] => [`${t.name} / ${c.name}`, t, c])) : [];
}

const VECTOR_FILES = ['matmulnbits.jsonc', 'dequantize-linear-int4.jsonc', 'dequantizelinear.jsonc', 'gather-block-quantized.jsonc'];

describe.skipIf(!hasShared)('onnxruntime-web quantized-op vectors (cpu)', () => {
  for (const file of VECTOR_FILES)
    it(`${file}: every case matches onnxruntime's expected output (weights as initializers, and as graph inputs where the op allows)`, () => {
      const cases = casesOf(file);
      expect(cases.length).toBeGreaterThan(0);
      for (const [label, t, c] of cases)
        for (const asWeights of t.operator === 'DequantizeLinear' ? [false, true] : [true]) {
          const m = ortCaseModel(t, c, constantInputs(t.operator, asWeights));
          const g = importOnnx(m.bytes).graph;
          const out = runGraph(g, m.inputs);
          m.expected.forEach((want, i) => expect(compareOutput(out[g.outputs[i].name], want), `${label}${asWeights ? ' (initializers)' : ''}`).toBeUndefined());
        }
    });

  it('MatMulNBits and GatherBlockQuantized import as one quantized weight, never a dense float copy', () => {
    for (const file of ['matmulnbits.jsonc', 'gather-block-quantized.jsonc'])
      for (const [label, t, c] of casesOf(file)) {
        const g = importOnnx(ortCaseModel(t, c, constantInputs(t.operator, true)).bytes).graph;
        const kinds = g.weights.all().map((e) => `${e.encoding.kind}:${e.dtype}`);
        expect(kinds, label).toEqual(['quantized:f32']);
      }
  });
});

describe.skipIf(!hasShared || !gpu)('onnxruntime-web quantized-op vectors (webgpu)', () => {
  for (const file of VECTOR_FILES)
    it(
      `${file}: every case matches onnxruntime's expected output${file === 'matmulnbits.jsonc' ? ', through the dequantizing matmul' : ''}`,
      async () => {
        for (const [label, t, c] of casesOf(file)) {
          const m = ortCaseModel(t, c, constantInputs(t.operator, false));
          const g = importOnnx(m.bytes).graph;
          const { outputs, manifest } = await runOnGpu(g, m.inputs);
          m.expected.forEach((want, i) => expect(compareOutput(outputs[g.outputs[i].name], want), label).toBeUndefined());
          if (t.operator === 'MatMulNBits') {
            expect(families(manifest), label).toContain('dequant-matmul');
            expect(families(manifest), label).not.toContain('matmul');
            expect(manifest.weights.map((w) => w.encoding.kind), label).toEqual(['quantized']);
          }
          if (t.operator === 'GatherBlockQuantized') expect(families(manifest), label).toContain('dequant-gather');
        }
      },
      LONG,
    );
});

// ---------------------------------------------------------------------------------------------------------------
// MatMulNBits beyond the vectors: its definition, computed here

interface NBitsSpec {
  M: number;
  K: number;
  N: number;
  bits: 2 | 4 | 8;
  block: number;
  zp?: 'packed' | 'float' | 'float-integral';
  bias?: boolean;
  vectorA?: boolean;
}

/** A random MatMulNBits model and its inputs, with the output the operator defines: `A · ((q - zp) · scale)ᵀ + bias`. */
function nbitsCase(s: NBitsSpec, seed: number): { bytes: Uint8Array; x: Tensor; want: Float32Array } {
  const r = new Rng(seed);
  const blocks = s.K / s.block;
  const q = Array.from({ length: s.N * s.K }, () => Math.floor(r.next() * (1 << s.bits)));
  const scales = Array.from({ length: s.N * blocks }, () => 0.01 + r.next() * 0.1);
  const zpInts = Array.from({ length: s.N * blocks }, () => Math.floor(r.next() * (1 << s.bits)));
  const zpFloat = zpInts.map((z) => (s.zp === 'float' ? z + 0.25 : z));
  const zpOf = (g: number): number => (s.zp === undefined ? 1 << (s.bits - 1) : s.zp === 'packed' ? zpInts[g] : zpFloat[g]);
  const bias = Array.from({ length: s.N }, () => r.next() - 0.5);
  const xv = Array.from({ length: s.M * s.K }, () => r.next() * 2 - 1);
  const want = new Float32Array(s.M * s.N);
  for (let m = 0; m < s.M; m++)
    for (let n = 0; n < s.N; n++) {
      let acc = s.bias ? bias[n] : 0;
      for (let k = 0; k < s.K; k++) {
        const g = n * blocks + Math.floor(k / s.block);
        acc += xv[m * s.K + k] * (q[n * s.K + k] - zpOf(g)) * scales[g];
      }
      want[m * s.N + n] = acc;
    }
  const zpRow = Math.ceil((blocks * s.bits) / 8);
  const packedZp = Array.from({ length: s.N }, (_v, n) => [...packBits(zpInts.slice(n * blocks, (n + 1) * blocks), s.bits)]).flat();
  const inits = [tensor('B', T.UINT8, [s.N, blocks, (s.block * s.bits) / 8], packBits(q, s.bits)), tensor('scales', T.FLOAT, [s.N * blocks], scales)];
  const names = ['A', 'B', 'scales'];
  if (s.zp === 'packed') inits.push(tensor('zp', T.UINT8, [s.N * zpRow], Uint8Array.from(packedZp)));
  if (s.zp === 'float' || s.zp === 'float-integral') inits.push(tensor('zp', T.FLOAT, [s.N, blocks], zpFloat));
  names.push(s.zp ? 'zp' : '', '');
  if (s.bias) {
    inits.push(tensor('bias', T.FLOAT, [s.N], bias));
    names.push('bias');
  }
  const aShape = s.vectorA ? [s.K] : [s.M, s.K];
  const bytes = modelBytes({
    domains: { 'com.microsoft': 1 },
    inputs: [valueInfo('A', T.FLOAT, aShape)],
    outputs: [valueInfo('Y', T.FLOAT, s.vectorA ? [s.N] : [s.M, s.N])],
    initializers: inits,
    nodes: [node('MatMulNBits', names.slice(0, s.bias ? 6 : s.zp ? 4 : 3), ['Y'], { K: { i: s.K }, N: { i: s.N }, bits: { i: s.bits }, block_size: { i: s.block } }, 'mm', 'com.microsoft')],
  });
  return { bytes, x: Tensor.from('f32', aShape, xv), want };
}

const NBITS: [string, NBitsSpec][] = [
  ['8 bits, block 32, default zero point 128, bias', { M: 3, K: 64, N: 24, bits: 8, block: 32, bias: true }],
  ['8 bits, block 16, packed zero points', { M: 2, K: 48, N: 16, bits: 8, block: 16, zp: 'packed' }],
  ['4 bits, block 32, packed zero points (odd block count: padded zero-point bytes)', { M: 4, K: 96, N: 20, bits: 4, block: 32, zp: 'packed' }],
  ['4 bits, block 64, float zero points (offsets), 1-D A', { M: 1, K: 128, N: 32, bits: 4, block: 64, zp: 'float', vectorA: true }],
  ['4 bits, block 16, whole-number float zero points', { M: 5, K: 32, N: 8, bits: 4, block: 16, zp: 'float-integral' }],
  ['2 bits, block 16, packed zero points and bias', { M: 2, K: 64, N: 16, bits: 2, block: 16, zp: 'packed', bias: true }],
];

function close(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) if (!(Math.abs(got[i] - want[i]) <= 1e-4 + 1e-4 * Math.abs(want[i]))) expect.fail(`${what}: element ${i}: got ${got[i]}, want ${want[i]}`);
}

describe('MatMulNBits (cpu)', () => {
  for (const [what, s] of NBITS)
    it(`${what}: matches the operator's definition; the weight stays quantized [N, K]`, () => {
      const c = nbitsCase(s, s.K + s.N);
      const g = importOnnx(c.bytes).graph;
      const [w] = g.weights.all().filter((e) => e.encoding.kind === 'quantized');
      expect(w.shape).toEqual([s.N, s.K]);
      expect(w.encoding).toMatchObject({ bits: s.bits, groupSize: s.block, signed: false });
      close(runGraph(g, { A: c.x }).Y.toArray(), c.want, what);
    });

  const bad = (attrs: Record<string, AttrSpec>, bShape: number[], extra: { gIdx?: boolean } = {}): Uint8Array =>
    modelBytes({
      domains: { 'com.microsoft': 1 },
      inputs: [valueInfo('A', T.FLOAT, [2, 32])],
      outputs: [valueInfo('Y', T.FLOAT, [2, 8])],
      initializers: [
        tensor('B', T.UINT8, bShape, new Uint8Array(bShape.reduce((a, b) => a * b, 1))),
        tensor('scales', T.FLOAT, [16], new Array(16).fill(1)),
        ...(extra.gIdx ? [tensor('g_idx', T.INT32, [32], new Array(32).fill(0))] : []),
      ],
      nodes: [node('MatMulNBits', ['A', 'B', 'scales', '', ...(extra.gIdx ? ['g_idx'] : [])], ['Y'], { K: { i: 32 }, N: { i: 8 }, ...attrs }, 'proj', 'com.microsoft')],
    });

  it('bad input is a typed error naming the node and the constraint', () => {
    expect(() => importOnnx(bad({ bits: { i: 4 }, block_size: { i: 16 } }, [8, 2, 16]))).toThrow(ModelFormatError);
    expect(() => importOnnx(bad({ bits: { i: 4 }, block_size: { i: 16 } }, [8, 2, 16]))).toThrow(/MatMulNBits 'proj'.*B must be uint8 \[N, ceil\(K \/ block_size\), block_size · bits \/ 8\] = \[8, 2, 8\], got \[8, 2, 16\]/);
    expect(() => importOnnx(bad({ bits: { i: 4 }, block_size: { i: 24 } }, [8, 2, 12]))).toThrow(/MatMulNBits 'proj'.*block_size 24 must be a power of two of at least 16/);
    expect(() => importOnnx(bad({ bits: { i: 4 }, block_size: { i: 8 } }, [8, 4, 4]))).toThrow(/block_size 8 must be a power of two/);
    const bits3 = (): unknown => importOnnx(bad({ bits: { i: 3 }, block_size: { i: 16 } }, [8, 2, 6]));
    expect(bits3).toThrow(UnsupportedOpError);
    expect(bits3).toThrow(/MatMulNBits 'proj': bits 3/);
    expect(() => importOnnx(bad({ bits: { i: 4 }, block_size: { i: 16 } }, [8, 2, 8], { gIdx: true }))).toThrow(/MatMulNBits 'proj': g_idx \('g_idx'\)/);
  });
});

describe.skipIf(!gpu)('MatMulNBits (webgpu)', () => {
  it(
    'every form runs the dequantizing matmul on the packed weight and matches the operator definition',
    async () => {
      for (const [what, s] of NBITS) {
        const c = nbitsCase(s, s.K + s.N);
        const g = importOnnx(c.bytes).graph;
        const { outputs, manifest } = await runOnGpu(g, { A: c.x });
        close(outputs.Y.numbers, c.want, what);
        expect(families(manifest), what).toContain('dequant-matmul');
        expect(families(manifest), what).not.toContain('matmul');
      }
    },
    LONG,
  );
});

describe.skipIf(!gpu)('MatMulNBits in float16 (webgpu)', () => {
  it('f16 A and scales: the scales are repacked to f32 for the dequantizing matmul; outputs match the CPU reference', async () => {
    const [N, K, block] = [16, 64, 32];
    const r = new Rng(4);
    const q = Array.from({ length: N * K }, () => Math.floor(r.next() * 16));
    const halves = Array.from({ length: (N * K) / block }, () => floatToHalf(0.01 + r.next() * 0.05));
    const bytes = modelBytes({
      domains: { 'com.microsoft': 1 },
      inputs: [valueInfo('A', T.FLOAT16, [3, K])],
      outputs: [valueInfo('Y', T.FLOAT16, [3, N])],
      initializers: [tensor('B', T.UINT8, [N, K / block, block / 2], packBits(q, 4)), { name: 'scales', dataType: T.FLOAT16, dims: [halves.length], int32Data: halves }],
      nodes: [node('MatMulNBits', ['A', 'B', 'scales'], ['Y'], { K: { i: K }, N: { i: N }, bits: { i: 4 }, block_size: { i: block } }, 'mm', 'com.microsoft')],
    });
    const g = importOnnx(bytes).graph;
    expect(g.weights.all().map((e) => (e.encoding as QuantizedEncoding).scaleDType)).toEqual(['f16']);
    const A = Tensor.from('f16', [3, K], Array.from({ length: 3 * K }, () => r.next() * 2 - 1));
    const { outputs, manifest } = await runOnGpu(g, { A });
    expect(compareOutput(outputs.Y, runGraph(g, { A }).Y)).toBeUndefined();
    expect(families(manifest)).toEqual(['dequant-matmul']);
  }, LONG);
});

// ---------------------------------------------------------------------------------------------------------------
// DequantizeLinear → MatMul

interface DqSpec {
  type: 'int8' | 'int4' | 'uint8';
  layout: 'tensor' | 'column' | 'row-blocks';
  K: number;
  N: number;
  block?: number;
  zp?: boolean;
}

/** `y = x · DequantizeLinear(W)` with W `[K, N]` an initializer. */
function dqMatmul(s: DqSpec, seed: number): { bytes: Uint8Array; x: Tensor } {
  const r = new Rng(seed);
  const [lo, hi] = s.type === 'int8' ? [-128, 127] : s.type === 'int4' ? [-8, 7] : [0, 255];
  const q = Array.from({ length: s.K * s.N }, () => lo + Math.floor(r.next() * (hi - lo + 1)));
  const onnxType = s.type === 'int8' ? T.INT8 : s.type === 'int4' ? T.INT4 : T.UINT8;
  const sShape = s.layout === 'tensor' ? [] : s.layout === 'column' ? [s.N] : [s.K / s.block!, s.N];
  const count = sShape.reduce((a, b) => a * b, 1);
  const scales = Array.from({ length: count }, () => 0.005 + r.next() * 0.02);
  const zps = Array.from({ length: count }, () => Math.floor(lo / 2 + r.next() * (hi - lo) / 2));
  const raw = (v: number[]): Uint8Array | number[] => (onnxType === T.INT4 ? packBits(v, 4) : onnxType === T.UINT8 ? Uint8Array.from(v) : v);
  const attrs: Record<string, AttrSpec> = s.layout === 'row-blocks' ? { axis: { i: 0 }, block_size: { i: s.block! } } : s.layout === 'column' ? { axis: { i: 1 } } : {};
  const M = 3;
  const bytes = modelBytes({
    opset: 21,
    inputs: [valueInfo('x', T.FLOAT, [M, s.K])],
    outputs: [valueInfo('y', T.FLOAT, [M, s.N])],
    initializers: [tensor('w', onnxType, [s.K, s.N], raw(q)), tensor('s', T.FLOAT, sShape, scales), ...(s.zp ? [tensor('z', onnxType, sShape, raw(zps))] : [])],
    nodes: [node('DequantizeLinear', ['w', 's', ...(s.zp ? ['z'] : [])], ['wf'], attrs), node('MatMul', ['x', 'wf'], ['y'])],
  });
  return { bytes, x: Tensor.from('f32', [M, s.K], Array.from({ length: M * s.K }, () => r.next() * 2 - 1)) };
}

const DQ: DqSpec[] = [
  { type: 'int8', layout: 'column', K: 64, N: 24, zp: true },
  { type: 'int8', layout: 'tensor', K: 32, N: 16 },
  { type: 'uint8', layout: 'tensor', K: 32, N: 16, zp: true },
  { type: 'int4', layout: 'column', K: 64, N: 16 },
  { type: 'int4', layout: 'row-blocks', K: 128, N: 16, block: 32, zp: true },
  { type: 'int8', layout: 'row-blocks', K: 64, N: 8, block: 16 },
];
const dqName = (s: DqSpec): string => `${s.type} ${s.layout}${s.block ? ` ${s.block}` : ''}${s.zp ? ' with zero points' : ''}`;

describe.skipIf(!gpu)('DequantizeLinear → MatMul (webgpu)', () => {
  it(
    'int8 and int4, per-tensor, per-column and blocked: the dequantizing matmul reads the packed weight; outputs match the CPU reference',
    async () => {
      for (const s of DQ) {
        const what = dqName(s);
        const { bytes, x } = dqMatmul(s, s.K * 7 + s.N);
        const g = importOnnx(bytes).graph;
        expect(g.weights.all().map((e) => (e.encoding as QuantizedEncoding).bits), what).toEqual([s.type === 'int4' ? 4 : 8]);
        const want = runGraph(g, { x }).y;
        const { outputs, manifest } = await runOnGpu(g, { x });
        close(outputs.y.numbers, want.numbers, what);
        expect(families(manifest), what).toContain('dequant-matmul');
        expect(families(manifest), what).not.toContain('matmul');
        expect(manifest.weights.map((w) => w.encoding.kind), what).toEqual(['quantized']);
      }
    },
    LONG,
  );
});
