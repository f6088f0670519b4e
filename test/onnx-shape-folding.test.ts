/**
 * Shape arithmetic over symbolic dims: constants holding symbolic dims (`constant i32 [3] [batch, seq, 64]`), their
 * folding (ir/shape-arith, and the optimizer's fold-constants), their evaluation by the interpreter, and the ONNX
 * shape subgraphs (Shape → Gather → Unsqueeze → Concat → Reshape, Range, ReduceProd, ConstantOfShape, Slice to
 * INT64_MAX) the importer folds as it builds, over known or symbolic dims.
 */
import { describe, expect, it } from 'vitest';
import { InputError, UnsupportedOpError } from '../src/errors.js';
import { importOnnx, ShapeInputsRequiredError } from '../src/frontends/onnx/index.js';
import { dimAdd, dimMul, sym, type Dim } from '../src/ir/dim.js';
import { Graph } from '../src/ir/graph.js';
import { makeNode, type Node } from '../src/ir/node.js';
import { printGraph } from '../src/ir/printer.js';
import { WeightStore } from '../src/ir/weights.js';
import { compareDims, constantDims, dimsConstant, foldShapeArithmetic } from '../src/ir/shape-arith.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { modelBytes, node, T, tensor, valueInfo } from './support/onnx.js';

const batch = sym('batch');
const seq = sym('seq');
const i32 = (values: readonly Dim[], shape: readonly number[] = [values.length]): Node => dimsConstant(values, shape);
const scalar = (v: Dim): Node => dimsConstant([v], []);
const bool = (values: number[]): Node => makeNode('constant', [], { dtype: 'bool', shape: [values.length], values });

function folded(n: Node): Dim[] | undefined {
  const f = foldShapeArithmetic(n);
  return f && constantDims(f);
}


describe('symbolic constants in the IR', () => {
  it('an i32 constant may hold symbolic dims, and the interpreter evaluates them with the run bindings', () => {
    const x = makeNode('input', [], { name: 'x', dtype: 'f32', shape: [batch, seq, 64] });
    const shape = i32([batch, seq, 64]);
    expect(shape.shape).toEqual([3]);
    const g = new Graph([x], [{ name: 'shape', node: shape }, { name: 'x', node: x }], new WeightStore());
    expect(printGraph(g)).toContain('constant [batch, seq, 64]');
    const out = runGraph(g, { x: Tensor.zeros('f32', [2, 5, 64]) });
    expect(out.shape.toArray()).toEqual([2, 5, 64]);
  });

  it('only i32 constants may be symbolic', () => {
    expect(() => makeNode('constant', [], { dtype: 'f32', shape: [1], values: [seq] })).toThrow(/symbolic/);
  });

  it('folds gather, concat, slice, reshape, transpose and reduce-sum over symbolic values', () => {
    const shape = i32([batch, seq, 64]);
    expect(folded(makeNode('gather', [shape, scalar(1)], { axis: 0 }))).toEqual([seq]);
    expect(folded(makeNode('gather', [shape, i32([-1, 0])], { axis: 0 }))).toEqual([64, batch]);
    expect(folded(makeNode('concat', [i32([batch]), i32([-1]), i32([seq])], { axis: 0 }))).toEqual([batch, -1, seq]);
    expect(folded(makeNode('slice', [shape], { axes: [0], starts: [1], ends: [3] }))).toEqual([seq, 64]);
    expect(folded(makeNode('reshape', [scalar(seq)], { shape: [1] }))).toEqual([seq]);
    expect(folded(makeNode('transpose', [i32([batch, seq, 1, 2], [2, 2])], { perm: [1, 0] }))).toEqual([batch, 1, seq, 2]);
    expect(folded(makeNode('sum', [shape], { axes: [0] }))).toEqual([dimAdd(dimAdd(batch, seq), 64)]);
    expect(folded(makeNode('expand', [scalar(seq)], { shape: [2] }))).toEqual([seq, seq]);
  });

  it('folds arithmetic as polynomials, division only when exact', () => {
    expect(folded(makeNode('mul', [scalar(seq), scalar(64)]))).toEqual([dimMul(seq, 64)]);
    expect(folded(makeNode('add', [i32([batch, seq]), scalar(1)]))).toEqual([dimAdd(batch, 1), dimAdd(seq, 1)]);
    expect(folded(makeNode('div', [scalar(dimMul(seq, 64)), scalar(64)]))).toEqual([seq]);
    expect(folded(makeNode('div', [scalar(seq), scalar(2)]))).toBeUndefined();
    expect(folded(makeNode('neg', [scalar(seq)]))).toEqual([dimMul(seq, -1)]);
  });

  it('decides comparisons only when the symbols being sizes (>= 0) decides them', () => {
    expect(compareDims(dimAdd(seq, 1), 0)).toBe(1);
    expect(compareDims(seq, dimAdd(seq, 1))).toBe(-1);
    expect(compareDims(seq, 4)).toBeUndefined();
    expect(folded(makeNode('equal', [i32([batch, seq, 64]), scalar(-1)]))).toEqual([0, 0, 0]);
    expect(folded(makeNode('equal', [scalar(seq), scalar(4)]))).toBeUndefined();
    expect(folded(makeNode('maximum', [scalar(dimAdd(seq, 2)), scalar(seq)]))).toEqual([dimAdd(seq, 2)]);
    expect(folded(makeNode('where', [bool([1, 0]), i32([batch, seq]), i32([1, 1])]))).toEqual([batch, 1]);
    expect(folded(makeNode('cast', [scalar(seq)], { to: 'i32' }))).toEqual([seq]);
    expect(folded(makeNode('cast', [scalar(seq)], { to: 'f32' }))).toBeUndefined();
  });

  it("the optimizer's fold-constants folds shape chains, and the result evaluates to the same values", () => {
    const x = makeNode('input', [], { name: 'x', dtype: 'f32', shape: [batch, seq, 64] });
    const shape = i32([batch, seq, 64]);
    const tokens = makeNode('mul', [makeNode('gather', [shape, scalar(0)], { axis: 0 }), makeNode('gather', [shape, scalar(1)], { axis: 0 })]);
    const target = makeNode('concat', [makeNode('reshape', [tokens], { shape: [1] }), i32([64])], { axis: 0 });
    const g = new Graph([x], [{ name: 'target', node: target }, { name: 'x', node: x }], new WeightStore());
    const before = runGraph(g, { x: Tensor.zeros('f32', [3, 7, 64]) });
    const after = runPasses(g, 'fold-constants', { verify: true }).graph;
    const node = after.output('target');
    expect(node.op).toBe('constant');
    expect(constantDims(node)).toEqual([dimMul(batch, seq), 64]);
    expect(runGraph(after, { x: Tensor.zeros('f32', [3, 7, 64]) }).target.toArray()).toEqual(before.target.toArray());
    expect(before.target.toArray()).toEqual([21, 64]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// the ONNX importer

/** A model reshaping `x` `[batch, seq, 64]` to `[batch, seq, 4, 16]` with a shape computed from `Shape(x)`. */
function reshapeChainModel(): Uint8Array {
  const i64 = (name: string, values: number[], dims = [values.length]): object => tensor(name, T.INT64, dims, values);
  return modelBytes({
    opset: 13,
    inputs: [valueInfo('x', T.FLOAT, ['batch', 'seq', 64])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 'seq', 4, 16])],
    initializers: [i64('zero', [0], []), i64('one', [1], []), i64('axes0', [0]), i64('heads', [4, 16])],
    nodes: [
      node('Shape', ['x'], ['s']),
      node('Gather', ['s', 'zero'], ['b'], { axis: { i: 0 } }),
      node('Gather', ['s', 'one'], ['n'], { axis: { i: 0 } }),
      node('Unsqueeze', ['b', 'axes0'], ['b1']),
      node('Unsqueeze', ['n', 'axes0'], ['n1']),
      node('Concat', ['b1', 'n1', 'heads'], ['target'], { axis: { i: 0 } }),
      node('Reshape', ['x', 'target'], ['y'], {}, 'split_heads'),
    ],
  });
}

describe('ONNX shape subgraphs fold while importing', () => {
  it('Shape → Gather → Unsqueeze → Concat → Reshape over symbolic dims becomes one reshape to [batch, seq, 4, 16]', () => {
    const m = importOnnx(reshapeChainModel());
    const ops = m.graph.nodes().map((n) => n.op);
    expect(ops).toEqual(['input', 'reshape']);
    const y = m.graph.output('y');
    expect(y.shape).toEqual([batch, seq, 4, 16]);
    const x = Tensor.from('f32', [2, 3, 64], Array.from({ length: 384 }, (_v, i) => i));
    const out = runGraph(m.graph, { x }).y;
    expect(out.shape).toEqual([2, 3, 4, 16]);
    expect(out.toArray()).toEqual(x.toArray());
  });

  it('dim_params become symbols (made identifiers, shared by name); unnamed dynamic dims get fresh ones', () => {
    const m = importOnnx(
      modelBytes({
        inputs: [valueInfo('a', T.FLOAT, ['batch size', null, 4]), valueInfo('b', T.FLOAT, ['batch size', null, 4])],
        outputs: [valueInfo('c', T.FLOAT, [])],
        nodes: [node('Concat', ['a', 'b'], ['c'], { axis: { i: 1 } })],
      }),
    );
    const [a, b] = m.inputs;
    expect(a.shape[0]).toBe(sym('batch_size'));
    expect(b.shape[0]).toBe(a.shape[0]);
    expect(a.shape[1]).not.toBe(b.shape[1]);
    expect(m.graph.output('c').shape).toEqual([sym('batch_size'), dimAdd(a.shape[1], b.shape[1]), 4]);
  });

  it('Range over a symbolic start with a static length (position ids after a KV cache) is a symbolic constant', () => {
    const m = importOnnx(
      modelBytes({
        opset: 13,
        inputs: [valueInfo('past', T.FLOAT, [1, 'past_len', 2]), valueInfo('ids', T.INT64, [1, 1])],
        outputs: [valueInfo('emb', T.FLOAT, [])],
        initializers: [tensor('one', T.INT64, [], [1]), tensor('wpe', T.FLOAT, [8, 2], Array.from({ length: 16 }, (_v, i) => i)), tensor('ax', T.INT64, [1], [0])],
        nodes: [
          node('Shape', ['past'], ['s']),
          node('Gather', ['s', 'one'], ['p'], { axis: { i: 0 } }),
          node('Add', ['p', 'one'], ['end']),
          node('Range', ['p', 'end', 'one'], ['pos']),
          node('Unsqueeze', ['pos', 'ax'], ['pos2']),
          node('Gather', ['wpe', 'pos2'], ['emb'], { axis: { i: 0 } }),
        ],
      }),
    );
    const pos = m.graph.output('emb').inputs[1];
    expect(pos.op).toBe('constant');
    expect(constantDims(pos)).toEqual([sym('past_len')]);
    const out = runGraph(m.graph, { past: Tensor.zeros('f32', [1, 5, 2]), ids: Tensor.from('i32', [1, 1], [0]) }).emb;
    expect(out.toArray()).toEqual([10, 11]);
  });

  it('Range with a symbolic length of step 2 (ceil(n / 2)), and Reshape to a shape computed from data, are data-dependent: one error naming both nodes', () => {
    const bytes = modelBytes({
      opset: 13,
      inputs: [valueInfo('x', T.FLOAT, ['n']), valueInfo('y', T.FLOAT, [4])],
      outputs: [valueInfo('r', T.INT64, []), valueInfo('z', T.FLOAT, [])],
      initializers: [tensor('zero', T.INT64, [], [0]), tensor('two', T.INT64, [], [2])],
      nodes: [
        node('Shape', ['x'], ['s']),
        node('Gather', ['s', 'zero'], ['n']),
        // (step ±1 over a symbolic length imports as the range op: test/onnx-symbolic-masks.test.ts)
        node('Range', ['zero', 'n', 'two'], ['r'], {}, 'iota'),
        node('Cast', ['y'], ['yi'], { to: { i: T.INT64 } }),
        node('Reshape', ['y', 'yi'], ['z'], {}, 'by_data'),
      ],
    });
    let err: unknown;
    try {
      importOnnx(bytes);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnsupportedOpError);
    const e = err as UnsupportedOpError;
    expect(e.ops).toEqual(['Range', 'Reshape']);
    expect(e.message).toMatch(/Range 'iota'.*data-dependent shape/);
    expect(e.message).toMatch(/Reshape 'by_data'.*data-dependent shape/);
    expect(e).toBeInstanceOf(ShapeInputsRequiredError);
    expect((e as ShapeInputsRequiredError).inputs).toEqual(['y']);
  });

  it('shape operands fed by graph inputs are named, and specialize when given as shape inputs', () => {
    const bytes = modelBytes({
      opset: 13,
      inputs: [valueInfo('x', T.FLOAT, [2, 6]), valueInfo('shape', T.INT64, [2])],
      outputs: [valueInfo('y', T.FLOAT, [])],
      nodes: [node('Reshape', ['x', 'shape'], ['y'])],
    });
    expect(() => importOnnx(bytes)).toThrow(ShapeInputsRequiredError);
    const m = importOnnx(bytes, { shapeInputs: { shape: Tensor.from('i32', [2], [3, -1]) } });
    expect(m.inputs.map((i) => i.name)).toEqual(['x']);
    expect(m.shapeInputs).toEqual(['shape']);
    expect(m.graph.output('y').shape).toEqual([3, 4]);
    expect(() => importOnnx(bytes, { shapeInputs: { shape: Tensor.from('i32', [3], [3, 2, 2]) } })).toThrow(InputError);
  });

  it("keras's ReduceProd of a shape slice folds to the symbolic product", () => {
    const m = importOnnx(
      modelBytes({
        opset: 11,
        inputs: [valueInfo('x', T.FLOAT, ['batch', 'seq', 8])],
        outputs: [valueInfo('y', T.FLOAT, [])],
        initializers: [tensor('st', T.INT64, [1], [0]), tensor('en', T.INT64, [1], [2]), tensor('last', T.INT64, [1], [8])],
        nodes: [
          node('Shape', ['x'], ['s']),
          node('Slice', ['s', 'st', 'en'], ['lead']),
          node('ReduceProd', ['lead'], ['rows'], { keepdims: { i: 1 } }),
          node('Concat', ['rows', 'last'], ['target'], { axis: { i: 0 } }),
          node('Reshape', ['x', 'target'], ['y']),
        ],
      }),
    );
    expect(m.graph.output('y').shape).toEqual([dimMul(batch, seq), 8]);
  });

  it("ConstantOfShape of a symbolic shape is a broadcast scalar; PyTorch's Where(Equal(shape, -1), 1, shape) → Expand folds", () => {
    const m = importOnnx(
      modelBytes({
        opset: 13,
        inputs: [valueInfo('x', T.FLOAT, ['batch', 'seq'])],
        outputs: [valueInfo('filled', T.FLOAT, []), valueInfo('e', T.FLOAT, [])],
        initializers: [tensor('minus1', T.INT64, [], [-1]), tensor('v', T.FLOAT, [1], [3]), tensor('w', T.FLOAT, [1, 1], [2])],
        nodes: [
          node('Shape', ['x'], ['s']),
          node('ConstantOfShape', ['s'], ['filled'], { value: { t: tensor('', T.FLOAT, [1], [7]) } }),
          node('Shape', ['s'], ['rank']),
          node('ConstantOfShape', ['rank'], ['ones_i'], { value: { t: tensor('', T.INT64, [1], [1]) } }),
          node('Equal', ['s', 'minus1'], ['is_neg']),
          node('Where', ['is_neg', 'ones_i', 's'], ['target']),
          node('Expand', ['w', 'target'], ['e']),
        ],
      }),
    );
    const filled = m.graph.output('filled');
    expect(filled.op).toBe('expand');
    expect(filled.shape).toEqual([batch, seq]);
    expect(m.graph.output('e').shape).toEqual([batch, seq]);
    const out = runGraph(m.graph, { x: Tensor.zeros('f32', [2, 3]) });
    expect(out.filled.toArray()).toEqual(new Array(6).fill(7));
    expect(out.e.toArray()).toEqual(new Array(6).fill(2));
  });

  it('Slice to INT64_MAX over a symbolic axis, and from -1 (the last token), keeps the symbolic extent', () => {
    const m = importOnnx(
      modelBytes({
        opset: 13,
        inputs: [valueInfo('x', T.FLOAT, [1, 'seq', 2])],
        outputs: [valueInfo('tail', T.FLOAT, []), valueInfo('last', T.FLOAT, [])],
        initializers: [
          tensor('one', T.INT64, [1], [1]),
          tensor('max', T.INT64, [1], [9223372036854775807n]),
          tensor('m1', T.INT64, [1], [-1]),
          tensor('ax', T.INT64, [1], [1]),
        ],
        nodes: [node('Slice', ['x', 'one', 'max', 'ax'], ['tail']), node('Slice', ['x', 'm1', 'max', 'ax'], ['last'])],
      }),
    );
    expect(m.graph.output('tail').shape).toEqual([1, dimAdd(seq, -1), 2]);
    expect(m.graph.output('last').shape).toEqual([1, 1, 2]);
    const out = runGraph(m.graph, { x: Tensor.from('f32', [1, 3, 2], [0, 1, 2, 3, 4, 5]) });
    expect(out.tail.toArray()).toEqual([2, 3, 4, 5]);
    expect(out.last.toArray()).toEqual([4, 5]);
  });

  it('an int64 constant outside int32 used as data is held exactly as i64 (never truncated)', () => {
    const bytes = modelBytes({
      opset: 13,
      inputs: [valueInfo('x', T.INT64, [1])],
      outputs: [valueInfo('y', T.INT64, [1])],
      initializers: [tensor('big', T.INT64, [1], [5000000000])],
      nodes: [node('Add', ['x', 'big'], ['y'])],
    });
    const g = importOnnx(bytes).graph;
    const y = runGraph(g, { x: new Tensor('i64', [1], BigInt64Array.of(7n)) }).y;
    expect(y.dtype).toBe('i64');
    expect(Array.from(y.data as BigInt64Array)).toEqual([5000000007n]);
  });
});

