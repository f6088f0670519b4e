/**
 * Elementwise ONNX ops: arithmetic, comparisons, logic, `Where`, `Cast`/`CastLike`, and the roundings and `Mod`
 * composed from IR ops.
 *
 * Integers narrower than 32 bits (INT8, UINT8, INT16, UINT16, INT4, …) are held in i32/u32; arithmetic that can leave
 * their range (`Add`, `Sub`, `Mul`, `Div`, `Neg`, `Cast` to them) is followed by a wrap to the narrow type, as ONNX
 * computes in the narrow type itself. `Floor`, `Ceil` and `Round` (half to even, as ONNX and WGSL's `round`) are
 * composed from truncating casts; values of magnitude ≥ 2^23 (already integers) and NaN pass through.
 * @module
 */
import { isFloat, type DType } from '../../../ir/dtype.js';
import type { Node } from '../../../ir/node.js';
import type { BinaryOp, CompareOp, UnaryOp } from '../../../ir/ops.js';
import type { OnnxValue, OpContext } from '../context.js';
import { irDType, narrowIntBits, onnxTypeName, OnnxType } from '../tensor.js';
import type { Converter } from './types.js';

/** `x` wrapped to the range of the narrow integer type `type` (no-op for other types). */
export function wrapNarrow(c: OpContext, x: Node, type: number): Node {
  const nb = narrowIntBits(type);
  if (!nb) return x;
  const m = 2 ** nb.bits;
  const modU32 = (u: Node): Node => c.op('sub', [u, c.op('mul', [c.op('div', [u, c.scalar(m, 'u32')]), c.scalar(m, 'u32')])]);
  if (!nb.signed) return c.cast(modU32(c.cast(x, 'u32')), x.dtype);
  // two's complement: ((x + m/2) mod m) - m/2, the modulus taken on the u32 bits (exact for any i32)
  const half = m / 2;
  const shifted = c.cast(c.op('add', [x, c.scalar(half, 'i32')]), 'u32');
  return c.op('sub', [c.cast(modU32(shifted), 'i32'), c.scalar(half, 'i32')]);
}

/** `trunc(x)` of a float, through an i32 cast (callers guard magnitudes ≥ 2^23). */
function trunc(c: OpContext, x: Node): Node {
  return c.cast(c.cast(x, 'i32'), x.dtype);
}

/**
 * Keeps `result` where `|x| < 2^23` (and x is not NaN), else `x`; a zero result takes `x`'s sign (`ceil(-0.5)` is
 * `-0`, as in C and numpy).
 */
function guardLarge(c: OpContext, x: Node, result: Node): Node {
  const signed = c.op('where', [c.op('equal', [result, c.scalar(0, x)]), c.op('mul', [x, c.scalar(0, x)]), result]);
  return c.op('where', [c.op('less', [c.op('abs', [x]), c.scalar(2 ** 23, x)]), signed, x]);
}

/** `floor(x)` of a float. */
export function floorOf(c: OpContext, x: Node): Node {
  const t = trunc(c, x);
  return guardLarge(c, x, c.op('where', [c.op('less', [x, t]), c.op('sub', [t, c.scalar(1, x)]), t]));
}

/** `ceil(x)` of a float. */
function ceilOf(c: OpContext, x: Node): Node {
  const t = trunc(c, x);
  return guardLarge(c, x, c.op('where', [c.op('greater', [x, t]), c.op('add', [t, c.scalar(1, x)]), t]));
}

/** `round(x)`, half to even, of a float. */
export function roundOf(c: OpContext, x: Node): Node {
  const f = floorOf(c, x);
  const up = c.op('add', [f, c.scalar(1, x)]);
  const d = c.op('sub', [x, f]);
  const fi = c.cast(f, 'i32');
  const even = c.op('equal', [c.op('sub', [fi, c.op('mul', [c.op('div', [fi, c.scalar(2, 'i32')]), c.scalar(2, 'i32')])]), c.scalar(0, 'i32')]);
  const tie = c.op('where', [even, f, up]);
  const r = c.op('where', [c.op('greater', [d, c.scalar(0.5, x)]), up, c.op('where', [c.op('less', [d, c.scalar(0.5, x)]), f, tie])]);
  return guardLarge(c, x, r);
}

function notOf(c: OpContext, x: Node): Node {
  return c.op('equal', [x, c.scalar(0, 'bool')]);
}

const UNARY: Readonly<Record<string, UnaryOp>> = {
  Exp: 'exp', Log: 'log', Sqrt: 'sqrt', Reciprocal: 'reciprocal', Tanh: 'tanh', Erf: 'erf', Sin: 'sin', Cos: 'cos', Sigmoid: 'sigmoid',
};

function unary(op: UnaryOp): Converter {
  return (c) => [c.out(c.op(op, [c.x(0)]), c.type(0))];
}

function arithmetic(op: BinaryOp): Converter {
  return (c: OpContext) => {
    const [a, b] = [c.x(0), c.x(1)];
    return [c.out(wrapNarrow(c, c.op(op, [a, b]), c.type(0)), c.type(0))];
  };
}

function compare(op: CompareOp, negate = false): Converter {
  return (c: OpContext) => {
    const r = c.op(op, [c.x(0), c.x(1)]);
    return [c.out(negate ? notOf(c, r) : r, OnnxType.BOOL)];
  };
}

/** A variadic op (`Max`, `Min`, `Sum`) as a chain of binary ops. */
function variadic(op: BinaryOp): Converter {
  return (c: OpContext) => {
    const xs = c.inputs.map((_v, i) => c.x(i));
    const r = xs.slice(1).reduce((acc, x) => c.op(op, [acc, x]), xs[0]);
    return [c.out(wrapNarrow(c, r, c.type(0)), c.type(0))];
  };
}

/** The target of a `Cast`: IR dtype and ONNX type; unsupported types are reported. */
function castTarget(c: OpContext, type: number): DType {
  const to = irDType(type);
  if (!to) c.unsupported(`cast to ${onnxTypeName(type)} is not supported`);
  return to;
}

function castValue(c: OpContext, x: Node, fromType: number, toType: number): OnnxValue {
  // to INT64: floats and int64 data become i64 (exact); integers that fit 32 bits, and floats whose cast folds to
  // int32-sized constants, stay i32 (shape arithmetic)
  if (toType === OnnxType.INT64 && (isFloat(x.dtype) || x.dtype === 'i64')) {
    const wide = c.cast(x, 'i64');
    const fits = wide.op === 'constant' && (wide.attrs.values as readonly number[]).every((v) => v === (v | 0));
    return c.out(fits ? c.cast(x, 'i32') : wide, toType);
  }
  const to = castTarget(c, toType);
  if (!irDType(fromType)) c.unsupported(`cast from ${onnxTypeName(fromType)} is not supported`);
  // floats to a narrow integer: truncate in i32 first, then wrap (as C casts do)
  const viaI32 = isFloat(x.dtype) && narrowIntBits(toType) ? c.cast(x, 'i32') : x;
  return c.out(wrapNarrow(c, c.cast(viaI32, to), toType), toType);
}

/** `Mod`: `fmod = 1` is C's `fmod` (sign of the dividend); `fmod = 0` (integers) Python's `%` (sign of the divisor). */
const mod: Converter = (c: OpContext) => {
  const [a, b] = [c.x(0), c.x(1)];
  const fmod = c.int('fmod', 0);
  if (isFloat(a.dtype)) {
    if (!fmod) throw c.malformed('Mod on floats needs fmod = 1');
    const q = c.op('div', [a, b]);
    return [c.out(c.op('sub', [a, c.op('mul', [guardLarge(c, q, trunc(c, q)), b])]), c.type(0))];
  }
  const r = c.op('sub', [a, c.op('mul', [c.op('div', [a, b]), b])]);
  if (fmod || a.dtype === 'u32') return [c.out(r, c.type(0))];
  const zero = c.scalar(0, a);
  const signsDiffer = notOf(c, c.op('equal', [c.op('less', [r, zero]), c.op('less', [b, zero])]));
  const fix = c.op('where', [c.op('where', [notOf(c, c.op('equal', [r, zero])), signsDiffer, c.scalar(0, 'bool')]), c.op('add', [r, b]), r]);
  return [c.out(fix, c.type(0))];
};

/** `Pow`: the exponent is cast to the base's type; integer bases are computed in f32 and cast back. */
const pow: Converter = (c: OpContext) => {
  const [x, y] = [c.x(0), c.x(1)];
  if (isFloat(x.dtype)) return [c.out(c.op('pow', [x, c.cast(y, x.dtype)]), c.type(0))];
  const r = c.op('pow', [c.cast(x, 'f32'), c.cast(y, 'f32')]);
  return [c.out(wrapNarrow(c, c.cast(r, x.dtype), c.type(0)), c.type(0))];
};

/** The elementwise converters, by ONNX op type. */
export const ELEMENTWISE_CONVERTERS: Readonly<Record<string, Converter>> = {
  ...Object.fromEntries(Object.entries(UNARY).map(([k, op]) => [k, unary(op)])),
  Neg: (c) => [c.out(wrapNarrow(c, c.op('neg', [c.x(0)]), c.type(0)), c.type(0))],
  Abs: (c) => [c.out(c.x(0).dtype === 'u32' ? c.x(0) : c.op('abs', [c.x(0)]), c.type(0))],
  Relu: (c) => {
    const x = c.x(0);
    return [c.out(isFloat(x.dtype) ? c.op('relu', [x]) : c.op('maximum', [x, c.scalar(0, x)]), c.type(0))];
  },
  Floor: (c) => [c.out(floorOf(c, c.x(0)), c.type(0))],
  Ceil: (c) => [c.out(ceilOf(c, c.x(0)), c.type(0))],
  Round: (c) => [c.out(roundOf(c, c.x(0)), c.type(0))],
  Add: arithmetic('add'),
  Sub: arithmetic('sub'),
  Mul: arithmetic('mul'),
  Div: arithmetic('div'),
  Pow: pow,
  Mod: mod,
  Max: variadic('maximum'),
  Min: variadic('minimum'),
  Sum: variadic('add'),
  Mean: (c) => {
    const xs = c.inputs.map((_v, i) => c.x(i));
    const s = xs.slice(1).reduce((acc, x) => c.op('add', [acc, x]), xs[0]);
    return [c.out(c.op('div', [s, c.scalar(xs.length, s)]), c.type(0))];
  },
  Clip: (c: OpContext) => {
    if (c.opset < 11) c.unsupported('Clip before opset 11 (bounds as attributes)');
    let x = c.x(0);
    const lo = c.opt(1);
    const hi = c.opt(2);
    if (lo) x = c.op('maximum', [x, lo]);
    if (hi) x = c.op('minimum', [x, hi]);
    return [c.out(x, c.type(0))];
  },
  Equal: compare('equal'),
  Less: compare('less'),
  Greater: compare('greater'),
  LessOrEqual: compare('greater', true),
  GreaterOrEqual: compare('less', true),
  Not: (c) => [c.out(notOf(c, c.x(0)), OnnxType.BOOL)],
  And: (c) => [c.out(c.op('where', [c.x(0), c.x(1), c.scalar(0, 'bool')]), OnnxType.BOOL)],
  Or: (c) => [c.out(c.op('where', [c.x(0), c.scalar(1, 'bool'), c.x(1)]), OnnxType.BOOL)],
  Xor: (c) => [c.out(notOf(c, c.op('equal', [c.x(0), c.x(1)])), OnnxType.BOOL)],
  Where: (c) => [c.out(c.op('where', [c.x(0), c.x(1), c.x(2)]), c.type(1))],
  Cast: (c) => {
    const v = c.value(0);
    if (v.wide) {
      // int64 bounds cast to int64/int32 again: keep them exact for the Slice that reads them
      if (c.int('to') === OnnxType.INT64) return [v];
    }
    return [castValue(c, c.x(0), c.type(0), c.int('to'))];
  },
  CastLike: (c) => [castValue(c, c.x(0), c.type(0), c.type(1))],
};
