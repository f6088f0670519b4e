/**
 * Network ONNX ops: `MatMul`, `Gemm` (matmul, scale and bias), `Softmax`/`LogSoftmax` (with the flatten-based
 * semantics of opsets before 13), `LayerNormalization`/`RMSNormalization` (any axis: the normalized dims are
 * flattened into the last one, which the IR norms normalize), `Gelu`, and the reductions.
 * @module
 */
import { dimProduct, shapeEquals, type Dim } from '../../../ir/dim.js';
import { isFloat } from '../../../ir/dtype.js';
import type { Node } from '../../../ir/node.js';
import type { ReduceOp } from '../../../ir/ops.js';
import { constantDims, dimsConstant } from '../../../ir/shape-arith.js';
import { dimMul } from '../../../ir/dim.js';
import type { OpContext } from '../context.js';
import { OnnxType } from '../tensor.js';
import type { Converter } from './types.js';

function axisOf(c: OpContext, axis: number, rank: number): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) throw c.malformed(`axis ${axis} is out of range for rank ${rank}`);
  return axis < 0 ? axis + rank : axis;
}

/** ONNX `MatMul` (numpy semantics: 1-D operands are promoted and their unit dim removed). */
export function matmulOf(c: OpContext, a0: Node, b0: Node): Node {
  const aVec = a0.rank === 1;
  const bVec = b0.rank === 1;
  const a = aVec ? c.reshape(a0, [1, a0.shape[0]]) : a0;
  const b = bVec ? c.reshape(b0, [b0.shape[0], 1]) : b0;
  const y = c.op('matmul', [a, b], { transA: false, transB: false });
  if (!aVec && !bVec) return y;
  const shape = [...y.shape];
  if (bVec) shape.splice(shape.length - 1, 1);
  if (aVec) shape.splice(shape.length - (bVec ? 1 : 2), 1);
  return c.reshape(y, shape);
}

const gemm: Converter = (c: OpContext) => {
  const [a, b] = [c.x(0), c.x(1)];
  const alpha = c.float('alpha', 1);
  const beta = c.float('beta', 1);
  let y = c.op('matmul', [a, b], { transA: c.int('transA', 0) === 1, transB: c.int('transB', 0) === 1 });
  if (alpha !== 1) y = c.op('mul', [y, c.scalar(alpha, y)]);
  const bias = c.opt(2);
  if (bias && beta !== 0) y = c.op('add', [y, beta === 1 ? bias : c.op('mul', [bias, c.scalar(beta, bias)])]);
  return [c.out(y, c.type(0))];
};

/** Softmax (or log-softmax) along `axis`; before opset 13 the input is coerced to 2-D at `axis` first. */
function softmax(log: boolean): Converter {
  return (c: OpContext) => {
    const x = c.x(0);
    const legacy = c.opset < 13;
    const axis = axisOf(c, c.int('axis', legacy ? 1 : -1), x.rank);
    const apply = (t: Node, ax: number): Node => {
      if (!log) return c.op('softmax', [t], { axis: ax });
      const shifted = c.op('sub', [t, c.op('max', [t], { axes: [ax], keepDims: true })]);
      return c.op('sub', [shifted, c.op('log', [c.op('sum', [c.op('exp', [shifted])], { axes: [ax], keepDims: true })])]);
    };
    if (!legacy || axis === x.rank - 1) return [c.out(apply(x, axis), c.type(0))];
    const flat = c.reshape(x, [dimProduct(x.shape.slice(0, axis)), dimProduct(x.shape.slice(axis))]);
    return [c.out(c.reshape(apply(flat, 1), x.shape), c.type(0))];
  };
}

/** A scale or bias of a norm over `x`'s dims from `axis` on, as the `[N]` vector the IR norms take. */
function normVector(c: OpContext, p: Node, normShape: readonly Dim[]): Node {
  const n = dimProduct(normShape);
  if (p.rank === 1 && p.shape[0] === n) return p;
  const full = shapeEquals(p.shape, normShape) ? p : c.op('expand', [p], { shape: [...normShape] });
  return c.reshape(full, [n]);
}

/** The IR norm of `x` over its dims from `axis` on (flattened into one last dim, restored afterwards). */
function normOver(c: OpContext, op: 'layernorm' | 'rmsnorm', x: Node, axis: number, params: Node[], eps: number): Node {
  const normShape = x.shape.slice(axis);
  const flat = c.reshape(x, [...x.shape.slice(0, axis), dimProduct(normShape)]);
  const vectors = params.map((p) => normVector(c, c.cast(p, x.dtype), normShape));
  return c.reshape(c.op(op, [flat, ...vectors], { eps }), x.shape);
}

const layerNorm: Converter = (c: OpContext) => {
  const x = c.x(0);
  const axis = axisOf(c, c.int('axis', -1), x.rank);
  const eps = c.float('epsilon', 1e-5);
  const params = [c.x(1), ...(c.hasInput(2) ? [c.x(2)] : [])];
  const y = normOver(c, 'layernorm', x, axis, params, eps);
  const outs = [c.out(y, c.type(0))];
  if (c.node.output[1] || c.node.output[2]) {
    // Mean and InvStdDev, in the stash type (f32)
    const axes = x.shape.map((_d, i) => i).filter((i) => i >= axis);
    const xf = c.cast(x, 'f32');
    const mean = c.op('mean', [xf], { axes, keepDims: true });
    const centred = c.op('sub', [xf, mean]);
    const variance = c.op('mean', [c.op('mul', [centred, centred])], { axes, keepDims: true });
    const inv = c.op('rsqrt', [c.op('add', [variance, c.scalar(eps, 'f32')])]);
    outs.push(c.out(mean, OnnxType.FLOAT), c.out(inv, OnnxType.FLOAT));
  }
  return outs;
};

const rmsNorm: Converter = (c: OpContext) => {
  const x = c.x(0);
  const axis = axisOf(c, c.int('axis', -1), x.rank);
  return [c.out(normOver(c, 'rmsnorm', x, axis, [c.x(1)], c.float('epsilon', 1e-5)), c.type(0))];
};

/** The product over `axes` of a constant's values (symbolic allowed), as a constant. */
function constantProduct(c: OpContext, x: Node, axes: readonly number[], keepDims: boolean): Node | undefined {
  const vals = constantDims(x);
  if (!vals) return undefined;
  const shape = x.shape as number[];
  const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const outSize = outShape.reduce((p, q) => p * q, 1);
  const acc: Dim[] = new Array<Dim>(outSize).fill(1);
  const strides = outShape.map((_d, i) => outShape.slice(i + 1).reduce((p, q) => p * q, 1));
  vals.forEach((v, k) => {
    let rem = k;
    let slot = 0;
    for (let d = shape.length - 1; d >= 0; d--) {
      const i = rem % shape[d];
      rem = Math.floor(rem / shape[d]);
      if (!axes.includes(d)) slot += i * strides[d];
    }
    acc[slot] = dimMul(acc[slot], v);
  });
  const finalShape = keepDims ? outShape : shape.filter((_d, i) => !axes.includes(i));
  if (x.dtype === 'i32') return dimsConstant(acc, finalShape);
  return acc.every((v) => typeof v === 'number') ? c.constant(acc as number[], x.dtype, finalShape) : undefined;
}

/** A reduction: axes as attribute (or, from `axesInputSince`, as input 1), keepdims, noop_with_empty_axes. */
function reduce(kind: ReduceOp | 'min' | 'prod', axesInputSince: number): Converter {
  return (c: OpContext) => {
    const x = c.x(0);
    const keepDims = c.int('keepdims', 1) === 1;
    let axes = c.opset >= axesInputSince ? (c.hasInput(1) ? c.numbers(1, 'axes') : []) : (c.ints('axes') ?? []);
    if (axes.length === 0) {
      if (c.int('noop_with_empty_axes', 0) === 1) return [c.value(0)];
      axes = x.shape.map((_d, i) => i);
    }
    axes = axes.map((a) => axisOf(c, a, x.rank));
    if (kind === 'prod') {
      const folded = constantProduct(c, x, axes, keepDims);
      if (!folded) c.unsupported('ReduceProd of a value computed at run time');
      return [c.out(folded, c.type(0))];
    }
    if (x.dtype === 'bool') {
      if (kind !== 'max' && kind !== 'min') c.unsupported(`Reduce ${kind} over bool`);
      const r = c.op('max', [kind === 'min' ? c.op('equal', [x, c.scalar(0, 'bool')]) : x].map((t) => c.cast(t, 'u32')), { axes, keepDims });
      const b = c.cast(r, 'bool');
      return [c.out(kind === 'min' ? c.op('equal', [b, c.scalar(0, 'bool')]) : b, c.type(0))];
    }
    if (kind === 'min') {
      if (x.dtype === 'u32') c.unsupported('ReduceMin over unsigned integers');
      return [c.out(c.op('neg', [c.op('max', [c.op('neg', [x])], { axes, keepDims })]), c.type(0))];
    }
    if (kind === 'mean' && !isFloat(x.dtype)) {
      const count = axes.reduce((p: Dim, a) => dimMul(p, x.shape[a]), 1);
      if (typeof count !== 'number') c.unsupported('ReduceMean of integers over symbolic dims');
      return [c.out(c.op('div', [c.op('sum', [x], { axes, keepDims }), c.scalar(count, x)]), c.type(0))];
    }
    return [c.out(c.op(kind, [x], { axes, keepDims }), c.type(0))];
  };
}

/** The network converters, by ONNX op type. */
export const NN_CONVERTERS: Readonly<Record<string, Converter>> = {
  MatMul: (c) => [c.out(matmulOf(c, c.x(0), c.x(1)), c.type(0))],
  Gemm: gemm,
  Softmax: softmax(false),
  LogSoftmax: softmax(true),
  LayerNormalization: layerNorm,
  RMSNormalization: rmsNorm,
  Gelu: (c) => {
    const approximate = c.string('approximate', 'none');
    if (approximate !== 'none' && approximate !== 'tanh') throw c.malformed(`Gelu approximate '${approximate}'`);
    return [c.out(c.op('gelu', [c.x(0)], { approximate }), c.type(0))];
  },
  ReduceSum: reduce('sum', 13),
  ReduceMean: reduce('mean', 18),
  ReduceMax: reduce('max', 18),
  ReduceMin: reduce('min', 18),
  ReduceProd: reduce('prod', 18),
};
