/**
 * INT64 data held exactly: ONNX models whose int64 values go beyond ±2^31 (up to ±2^63, with wraparound) import
 * as i64 and run exactly on the CPU reference and on WebGPU (pairs of u32 words), compared against BigInt arithmetic
 * computed here; ops that cannot take i64 are typed errors naming the op; int64 that is only shape still folds.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { UnsupportedOpError } from '../src/errors.js';
import { importOnnx } from '../src/frontends/onnx/index.js';
import type { Graph } from '../src/ir/graph.js';
import { runGraphOnWebGPU } from '../src/compile.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { acquireTestDevice } from './helpers/webgpu.js';
import { modelBytes, node, T, tensor, valueInfo, type AttrSpec } from './support/onnx.js';

const gpu = await acquireTestDevice();
afterAll(() => gpu?.destroy());

const wrap = (v: bigint): bigint => BigInt.asIntN(64, v);
const i64 = (shape: number[], values: bigint[]): Tensor => new Tensor('i64', shape, BigInt64Array.from(values));
const big = (t: Tensor): bigint[] => Array.from(t.data as ArrayLike<number | bigint>, (v) => BigInt(v));

const A = [2n ** 40n + 3n, -(2n ** 40n) - 5n, 2n ** 62n + 7n, -(2n ** 62n) - 9n, 2n ** 63n - 1n, -(2n ** 63n), 123456789012345n, -1n];
const B = [2n ** 33n + 1n, 3n, 2n ** 62n - 1n, -(2n ** 62n) + 11n, 1n, -1n, -987654321n, 2n ** 31n];

interface Case {
  name: string;
  op: string;
  inputs: [string, number, number[]][];
  out: [number, number[]];
  attrs?: Record<string, AttrSpec>;
  initializers?: object[];
  extraInputs?: string[];
  feed: Record<string, Tensor>;
  want: bigint[] | boolean[] | number[];
}

const n = A.length;
const cases: Case[] = [
  { name: 'Add (wraps at 2^63)', op: 'Add', inputs: [['a', T.INT64, [n]], ['b', T.INT64, [n]]], out: [T.INT64, [n]], feed: { a: i64([n], A), b: i64([n], B) }, want: A.map((a, i) => wrap(a + B[i])) },
  { name: 'Sub', op: 'Sub', inputs: [['a', T.INT64, [n]], ['b', T.INT64, [n]]], out: [T.INT64, [n]], feed: { a: i64([n], A), b: i64([n], B) }, want: A.map((a, i) => wrap(a - B[i])) },
  { name: 'Mul (the low 64 bits of the product)', op: 'Mul', inputs: [['a', T.INT64, [n]], ['b', T.INT64, [n]]], out: [T.INT64, [n]], feed: { a: i64([n], A), b: i64([n], B) }, want: A.map((a, i) => wrap(a * B[i])) },
  { name: 'Neg', op: 'Neg', inputs: [['a', T.INT64, [n]]], out: [T.INT64, [n]], feed: { a: i64([n], A) }, want: A.map((a) => wrap(-a)) },
  { name: 'Abs', op: 'Abs', inputs: [['a', T.INT64, [n]]], out: [T.INT64, [n]], feed: { a: i64([n], A) }, want: A.map((a) => wrap(a < 0n ? -a : a)) },
  { name: 'Max', op: 'Max', inputs: [['a', T.INT64, [n]], ['b', T.INT64, [n]]], out: [T.INT64, [n]], feed: { a: i64([n], A), b: i64([n], B) }, want: A.map((a, i) => (a > B[i] ? a : B[i])) },
  { name: 'Min', op: 'Min', inputs: [['a', T.INT64, [n]], ['b', T.INT64, [n]]], out: [T.INT64, [n]], feed: { a: i64([n], A), b: i64([n], B) }, want: A.map((a, i) => (a < B[i] ? a : B[i])) },
  { name: 'Equal', op: 'Equal', inputs: [['a', T.INT64, [n]], ['b', T.INT64, [n]]], out: [T.BOOL, [n]], feed: { a: i64([n], A), b: i64([n], [A[0], A[0] + 2n ** 32n, ...A.slice(2, 6), 0n, -1n]) }, want: [true, false, true, true, true, true, false, true] },
  { name: 'Less', op: 'Less', inputs: [['a', T.INT64, [n]], ['b', T.INT64, [n]]], out: [T.BOOL, [n]], feed: { a: i64([n], A), b: i64([n], B) }, want: A.map((a, i) => a < B[i]) },
  { name: 'Greater', op: 'Greater', inputs: [['a', T.INT64, [n]], ['b', T.INT64, [n]]], out: [T.BOOL, [n]], feed: { a: i64([n], A), b: i64([n], B) }, want: A.map((a, i) => a > B[i]) },
  {
    name: 'Where',
    op: 'Where',
    inputs: [['c', T.BOOL, [n]], ['a', T.INT64, [n]], ['b', T.INT64, [n]]],
    out: [T.INT64, [n]],
    feed: { c: Tensor.from('bool', [n], [1, 0, 1, 0, 1, 0, 1, 0]), a: i64([n], A), b: i64([n], B) },
    want: A.map((a, i) => (i % 2 === 0 ? a : B[i])),
  },
  {
    name: 'Add of a wide initializer broadcast over an int64 input',
    op: 'Add',
    inputs: [['a', T.INT64, [2, 4]]],
    initializers: [tensor('k', T.INT64, [4], [2n ** 40n + 3n, -(2n ** 62n), 5n, 2n ** 53n + 1n])],
    out: [T.INT64, [2, 4]],
    feed: { a: i64([2, 4], A) },
    want: A.map((a, i) => wrap(a + [2n ** 40n + 3n, -(2n ** 62n), 5n, 2n ** 53n + 1n][i % 4])),
  },
  { name: 'Cast int64 → int32 (wraps)', op: 'Cast', inputs: [['a', T.INT64, [n]]], attrs: { to: { i: T.INT32 } }, out: [T.INT32, [n]], feed: { a: i64([n], A) }, want: A.map((a) => Number(BigInt.asIntN(32, a))) },
  {
    name: 'Cast int64 → float (rounded once)',
    op: 'Cast',
    inputs: [['a', T.INT64, [n]]],
    attrs: { to: { i: T.FLOAT } },
    out: [T.FLOAT, [n]],
    feed: { a: i64([n], [...A.slice(0, 7), 2n ** 40n + 2n ** 16n + 1n]) },
    want: [...A.slice(0, 7), 2n ** 40n + 2n ** 16n + 1n].map((a) => Math.fround(Number(a))),
  },
  { name: 'Cast int64 → bool', op: 'Cast', inputs: [['a', T.INT64, [3]]], attrs: { to: { i: T.BOOL } }, out: [T.BOOL, [3]], feed: { a: i64([3], [0n, 2n ** 32n, -1n]) }, want: [false, true, true] },
  {
    name: 'Cast float → int64 (truncates, saturates)',
    op: 'Cast',
    inputs: [['f', T.FLOAT, [5]]],
    attrs: { to: { i: T.INT64 } },
    out: [T.INT64, [5]],
    feed: { f: Tensor.from('f32', [5], [2 ** 40 + 2 ** 20, -(2 ** 50), -3.75, 1e30, -1e30]) },
    want: [2n ** 40n + 2n ** 20n, -(2n ** 50n), -3n, 2n ** 63n - 1n, -(2n ** 63n)],
  },
  { name: 'Cast int32 → int64 (sign extends)', op: 'Cast', inputs: [['x', T.INT32, [3]]], attrs: { to: { i: T.INT64 } }, out: [T.INT64, [3]], feed: { x: Tensor.from('i32', [3], [-5, 7, -(2 ** 31)]) }, want: [-5n, 7n, -(2n ** 31n)] },
  {
    name: 'Gather of int64 data at int64 indices (negative counts from the end)',
    op: 'Gather',
    inputs: [['a', T.INT64, [4, 2]], ['i', T.INT64, [3]]],
    attrs: { axis: { i: 0 } },
    out: [T.INT64, [3, 2]],
    feed: { a: i64([4, 2], A), i: i64([3], [3n, -4n, 1n]) },
    want: [A[6], A[7], A[0], A[1], A[2], A[3]],
  },
  { name: 'Concat', op: 'Concat', inputs: [['a', T.INT64, [2, 2]], ['b', T.INT64, [2, 3]]], attrs: { axis: { i: 1 } }, out: [T.INT64, [2, 5]], feed: { a: i64([2, 2], A.slice(0, 4)), b: i64([2, 3], B.slice(0, 6)) }, want: [A[0], A[1], B[0], B[1], B[2], A[2], A[3], B[3], B[4], B[5]] },
  {
    name: 'Reshape (shape as an int64 initializer)',
    op: 'Reshape',
    inputs: [['a', T.INT64, [n]]],
    initializers: [tensor('shape', T.INT64, [2], [2, 4])],
    out: [T.INT64, [2, 4]],
    feed: { a: i64([n], A) },
    want: A,
  },
  {
    name: 'Slice (INT64_MAX end, step 2)',
    op: 'Slice',
    inputs: [['a', T.INT64, [n]]],
    initializers: [tensor('starts', T.INT64, [1], [1]), tensor('ends', T.INT64, [1], [2n ** 63n - 1n]), tensor('axes', T.INT64, [1], [0]), tensor('steps', T.INT64, [1], [2])],
    out: [T.INT64, [4]],
    feed: { a: i64([n], A) },
    want: [A[1], A[3], A[5], A[7]],
  },
  { name: 'Transpose', op: 'Transpose', inputs: [['a', T.INT64, [2, 4]]], attrs: { perm: { ints: [1, 0] } }, out: [T.INT64, [4, 2]], feed: { a: i64([2, 4], A) }, want: [A[0], A[4], A[1], A[5], A[2], A[6], A[3], A[7]] },
  {
    name: 'Expand',
    op: 'Expand',
    inputs: [['a', T.INT64, [2, 1]]],
    initializers: [tensor('shape', T.INT64, [2], [2, 3])],
    out: [T.INT64, [2, 3]],
    feed: { a: i64([2, 1], [A[2], A[5]]) },
    want: [A[2], A[2], A[2], A[5], A[5], A[5]],
  },
  {
    name: 'ReduceMax over an axis',
    op: 'ReduceMax',
    inputs: [['a', T.INT64, [2, 4]]],
    initializers: [tensor('axes', T.INT64, [1], [1])],
    attrs: { keepdims: { i: 1 } },
    out: [T.INT64, [2, 1]],
    feed: { a: i64([2, 4], B) },
    want: [B.slice(0, 4).reduce((p, q) => (q > p ? q : p)), B.slice(4).reduce((p, q) => (q > p ? q : p))],
  },
  { name: 'Identity', op: 'Identity', inputs: [['a', T.INT64, [n]]], out: [T.INT64, [n]], feed: { a: i64([n], A) }, want: A },
  {
    name: 'ReduceSum over an axis (wrapping)',
    op: 'ReduceSum',
    inputs: [['a', T.INT64, [2, 4]]],
    initializers: [tensor('axes', T.INT64, [1], [1])],
    attrs: { keepdims: { i: 0 } },
    out: [T.INT64, [2]],
    feed: { a: i64([2, 4], A) },
    want: [wrap(A[0] + A[1] + A[2] + A[3]), wrap(A[4] + A[5] + A[6] + A[7])],
  },
];

function modelOf(c: Case): Graph {
  const inits = c.initializers ?? [];
  return importOnnx(
    modelBytes({
      opset: 18,
      inputs: c.inputs.map(([name, t, d]) => valueInfo(name, t, d)),
      outputs: [valueInfo('y', c.out[0], c.out[1])],
      initializers: inits,
      nodes: [node(c.op, [...c.inputs.map(([name]) => name), ...inits.map((t) => (t as { name: string }).name)], ['y'], c.attrs ?? {})],
    }),
  ).graph;
}

function expectExact(y: Tensor, want: Case['want']): void {
  if (typeof want[0] === 'bigint') {
    // an INT64 value is i64 unless the importer knows it fits int32 (a cast from int32 stays i32): exact either way
    expect(['i64', 'i32']).toContain(y.dtype);
    if ((want as bigint[]).some((v) => v !== BigInt.asIntN(32, v))) expect(y.dtype).toBe('i64');
    expect(big(y)).toEqual(want);
  } else if (typeof want[0] === 'boolean') expect(y.toArray()).toEqual((want as boolean[]).map((v) => (v ? 1 : 0)));
  else expect(y.toArray()).toEqual(want);
}

describe('INT64 beyond ±2^31 on the CPU reference', () => {
  for (const c of cases) it(c.name, () => expectExact(runGraph(modelOf(c), c.feed).y, c.want));

  it('int64 inputs may be given as Int32Array data (widened exactly)', () => {
    const g = modelOf(cases[0]);
    const y = runGraph(g, { a: Tensor.from('i32', [n], [1, -2, 3, -4, 5, -6, 7, -8]), b: i64([n], B) }).y;
    expect(big(y)).toEqual([1n, -2n, 3n, -4n, 5n, -6n, 7n, -8n].map((a, i) => wrap(a + B[i])));
  });

  it('a chain through elementwise fusion and the optimizer stays exact (Mul → Add → Neg → Max of a wide constant)', async () => {
    const k = 3n * 2n ** 50n + 1n;
    const g = importOnnx(
      modelBytes({
        opset: 18,
        inputs: [valueInfo('a', T.INT64, [n]), valueInfo('b', T.INT64, [n])],
        outputs: [valueInfo('y', T.INT64, [n])],
        initializers: [tensor('k', T.INT64, [1], [k])],
        nodes: [node('Mul', ['a', 'b'], ['m']), node('Add', ['m', 'k'], ['s']), node('Neg', ['s'], ['t']), node('Max', ['t', 'a'], ['y'])],
      }),
    ).graph;
    const want = A.map((a, i) => {
      const t = wrap(-wrap(wrap(a * B[i]) + k));
      return t > a ? t : a;
    });
    expect(big(runGraph(g, { a: i64([n], A), b: i64([n], B) }).y)).toEqual(want);
    if (gpu) expect(big((await runGraphOnWebGPU(g, { a: i64([n], A), b: i64([n], B) }, { device: gpu })).y)).toEqual(want);
  });

  it('int64 that is only shape still folds to constants (Shape → Gather → Mul → Reshape)', () => {
    const g = importOnnx(
      modelBytes({
        opset: 18,
        inputs: [valueInfo('x', T.FLOAT, ['batch', 6])],
        outputs: [valueInfo('y', T.FLOAT, ['batch', 2, 3])],
        initializers: [tensor('i1', T.INT64, [1], [1]), tensor('three', T.INT64, [1], [3]), tensor('i0', T.INT64, [1], [0])],
        nodes: [
          node('Shape', ['x'], ['s']),
          node('Gather', ['s', 'i0'], ['b']),
          node('Gather', ['s', 'i1'], ['six']),
          node('Div', ['six', 'three'], ['two']),
          node('Concat', ['b', 'two', 'three'], ['shape'], { axis: { i: 0 } }),
          node('Reshape', ['x', 'shape'], ['y']),
        ],
      }),
    ).graph;
    expect(g.nodes().map((m) => m.op)).toEqual(['input', 'reshape']);
  });
});

describe('ops that cannot take int64 are typed errors naming the op', () => {
  it('MatMul of int64 is an UnsupportedOpError naming the node', () => {
    const bytes = modelBytes({
      opset: 18,
      inputs: [valueInfo('a', T.INT64, [2, 2]), valueInfo('b', T.INT64, [2, 2])],
      outputs: [valueInfo('y', T.INT64, [2, 2])],
      nodes: [node('MatMul', ['a', 'b'], ['y'], {}, 'mm')],
    });
    expect(() => importOnnx(bytes)).toThrow(UnsupportedOpError);
    expect(() => importOnnx(bytes)).toThrow(/MatMul 'mm'.*int64/);
  });

  it('float-only ops on int64 (Sqrt) are an UnsupportedOpError naming the node', () => {
    const bytes = modelBytes({ opset: 18, inputs: [valueInfo('a', T.INT64, [2])], outputs: [valueInfo('y', T.INT64, [2])], nodes: [node('Sqrt', ['a'], ['y'], {}, 'root')] });
    expect(() => importOnnx(bytes)).toThrow(UnsupportedOpError);
    expect(() => importOnnx(bytes)).toThrow(/Sqrt 'root'.*i64/);
  });
});

describe('int64 Div and Mod (truncating; x / 0 = x)', () => {
  const a = [2n ** 62n + 1n, -(2n ** 40n) - 1n, 7n, -(2n ** 63n), -(2n ** 63n), 5n, -9n, 2n ** 63n - 1n];
  const b = [3n, 2n ** 20n, -2n, -1n, 2n ** 32n + 3n, 0n, 4n, -(2n ** 35n) + 7n];
  const div = a.map((x, i) => (b[i] === 0n ? x : wrap(x / b[i])));
  const divModel = (): Graph =>
    importOnnx(modelBytes({ opset: 18, inputs: [valueInfo('a', T.INT64, [n]), valueInfo('b', T.INT64, [n])], outputs: [valueInfo('y', T.INT64, [n])], nodes: [node('Div', ['a', 'b'], ['y'])] })).graph;
  const feed = { a: i64([n], a), b: i64([n], b) };
  it('on the CPU reference', () => expect(big(runGraph(divModel(), feed).y)).toEqual(div));
  it.skipIf(!gpu)('on WebGPU', async () => expect(big((await runGraphOnWebGPU(divModel(), feed, { device: gpu! })).y)).toEqual(div));
  it.skipIf(!gpu)('Mod (sign of the divisor) on WebGPU as on the CPU', async () => {
    const nz = b.map((v) => (v === 0n ? 3n : v));
    const want = a.map((x, i) => {
      const r = x % nz[i];
      return r !== 0n && r < 0n !== nz[i] < 0n ? wrap(r + nz[i]) : r;
    });
    const g = importOnnx(modelBytes({ opset: 18, inputs: [valueInfo('a', T.INT64, [n]), valueInfo('b', T.INT64, [n])], outputs: [valueInfo('y', T.INT64, [n])], nodes: [node('Mod', ['a', 'b'], ['y'])] })).graph;
    const f = { a: i64([n], a), b: i64([n], nz) };
    expect(big(runGraph(g, f).y)).toEqual(want);
    expect(big((await runGraphOnWebGPU(g, f, { device: gpu! })).y)).toEqual(want);
  });
});

describe.skipIf(!gpu)('INT64 beyond ±2^31 on WebGPU (pairs of u32)', () => {
  for (const c of cases) it(c.name, async () => expectExact((await runGraphOnWebGPU(modelOf(c), c.feed, { device: gpu! })).y, c.want));
});
