/**
 * Shape and layout ONNX ops: `Shape`, `Size`, `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`, `Concat`, `Split`,
 * `Slice`, `Gather`, `Expand`, `Transpose`, `Tile`, `Pad`, `Trilu`, `Range`, `Constant`, `ConstantOfShape`,
 * `Identity`, `Dropout`.
 *
 * Shape operands (`Reshape`'s shape, `Slice`'s bounds, `Expand`'s shape, …) must fold to constants, possibly holding
 * symbolic dims; one that does not is reported as a data-dependent shape. `Shape` and `Size` fold at once.
 * @module
 */
import { dimAdd, dimDivExact, dimMul, dimProduct, dimSub, isStaticShape, numel, type Dim } from '../../../ir/dim.js';
import type { Node } from '../../../ir/node.js';
import { Tensor } from '../../../runtime/cpu/tensor.js';
import { constantDims, dimsConstant } from '../../../ir/shape-arith.js';
import type { OpContext } from '../context.js';
import { OnnxType } from '../tensor.js';
import type { Converter } from './types.js';

/** int64 bounds at or beyond this are "to the end" (exporters write INT64_MAX, or INT32_MAX). */
const END = 2 ** 31 - 1;

function axisOf(c: OpContext, axis: number, rank: number): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) throw c.malformed(`axis ${axis} is out of range for rank ${rank}`);
  return axis < 0 ? axis + rank : axis;
}

/** The axes of an op that takes them as an attribute before `inputSince` and as input `index` from then on. */
function axesOperand(c: OpContext, inputSince: number, index: number): number[] | undefined {
  if (c.opset >= inputSince) return c.hasInput(index) ? c.numbers(index, 'axes') : undefined;
  return c.ints('axes');
}

/** `x` with unit dims inserted at `axes` (of the result). */
export function unsqueeze(c: OpContext, x: Node, axes: readonly number[]): Node {
  const rank = x.rank + axes.length;
  const at = new Set(axes.map((a) => axisOf(c, a, rank)));
  if (at.size !== axes.length) throw c.malformed(`repeated axis in [${axes}]`);
  const shape: Dim[] = [];
  let k = 0;
  for (let i = 0; i < rank; i++) shape.push(at.has(i) ? 1 : x.shape[k++]);
  return c.reshape(x, shape);
}

/** Resolves `Slice` bounds on one axis into the IR slice's (numbers on static axes, dims on symbolic ones). */
function sliceBounds(c: OpContext, dim: Dim, start: Dim, end: Dim, step: number): [Dim, Dim | null] {
  if (typeof dim === 'number' && typeof start === 'number' && typeof end === 'number') {
    // clamp the int64 extremes into i32 so the attribute holds ordinary numbers (the IR clamps to the dim)
    const clamp = (v: number): number => Math.max(-END - 1, Math.min(END, v));
    if (step < 0 && end <= -dim - 1) return [clamp(start), null];
    return [clamp(start), clamp(end)];
  }
  if (step !== 1) c.unsupported(`a slice with step ${step} over a symbolic dim or with symbolic bounds`);
  const resolve = (v: Dim, isEnd: boolean): Dim | null => {
    if (typeof v !== 'number') return v;
    if (isEnd && v >= END) return null;
    if (v < 0) return typeof dim === 'number' ? Math.max(dim + v, 0) : dimAdd(dim, v);
    return typeof dim === 'number' ? Math.min(v, dim) : v;
  };
  const st = resolve(start, false) ?? 0;
  const en = resolve(end, true);
  return [st, en === null && typeof dim === 'number' ? dim : en];
}

/**
 * The values of a slice bound operand, seeing through what cannot change a slice: `min(v, K)` where each `K` is at
 * least the (static) dim its position slices, as slices clamp there anyway, and casts of integers (exporters clamp a
 * symbolic length to a table's size in float: BERT's `position_ids[:, :min(seq, 512)]`).
 */
function boundValues(c: OpContext, i: number, what: string, limits: readonly (number | undefined)[]): Dim[] {
  const seen = (n: Node): Dim[] | undefined => {
    const d = constantDims(n);
    if (d) return d;
    if (n.op === 'cast') {
      const inner = seen(n.inputs[0]);
      return inner?.every((v) => typeof v !== 'number' || Number.isInteger(v)) ? inner : undefined;
    }
    if (n.op === 'minimum' && n.rank === 1 && n.shape[0] === limits.length)
      for (const [a, k] of [n.inputs, [...n.inputs].reverse()]) {
        const kv = constantDims(k);
        const at = (j: number): Dim => (kv!.length === 1 ? kv![0] : kv![j]);
        if (!kv || a.shape[0] !== n.shape[0] || !limits.every((l, j) => l !== undefined && typeof at(j) === 'number' && (at(j) as number) >= l)) continue;
        const av = seen(a);
        // min(v, K) with K >= the dim L: a number is exact; a size provably >= L = 1 is 1; another symbolic size is
        // taken as at most L (the model's valid inputs: a longer sequence overruns the table it slices)
        return av?.map((v, j) => (typeof v === 'number' ? Math.min(v, at(j) as number) : limits[j] === 1 && atLeastOne(v) ? 1 : v));
      }
    return undefined;
  };
  const v = c.value(i);
  const d = v.node && !v.wide ? seen(v.node) : undefined;
  return d ?? c.dims(i, what);
}

/** Whether a symbolic size is at least 1 when every symbol is (a polynomial with non-negative coefficients). */
function atLeastOne(d: Dim): boolean {
  return typeof d === 'number' ? d >= 1 : [...d.terms.values()].every((v) => v >= 0);
}

const slice: Converter = (c: OpContext) => {
  const x = c.x(0);
  // the axes come first: they say which dim each bound position slices
  const n = c.value(1).wide?.values.length ?? c.value(1).node!.shape[0];
  if (typeof n !== 'number') throw c.malformed('starts must be a static 1-D tensor');
  const axes = c.hasInput(3) ? c.numbers(3, 'axes') : Array.from({ length: n }, (_v, i) => i);
  const limits = axes.map((a) => {
    const d = a >= -x.rank && a < x.rank ? x.shape[a < 0 ? a + x.rank : a] : undefined;
    return typeof d === 'number' ? d : undefined;
  });
  const starts = boundValues(c, 1, 'starts', limits);
  const ends = boundValues(c, 2, 'ends', limits);
  const steps = c.hasInput(4) ? c.numbers(4, 'steps') : starts.map(() => 1);
  if (ends.length !== starts.length || axes.length !== starts.length || steps.length !== starts.length) throw c.malformed('starts, ends, axes and steps differ in length');
  const out = { axes: [] as number[], starts: [] as Dim[], ends: [] as (Dim | null)[], steps: [] as number[] };
  axes.forEach((a, i) => {
    const ax = axisOf(c, a, x.rank);
    if (steps[i] === 0) throw c.malformed('slice step 0');
    const [st, en] = sliceBounds(c, x.shape[ax], starts[i], ends[i], steps[i]);
    out.axes.push(ax);
    out.starts.push(st);
    out.ends.push(en);
    out.steps.push(steps[i]);
  });
  if (out.axes.length === 0) return [c.value(0)];
  return [c.out(c.op('slice', [x], out), c.type(0))];
};

const reshape: Converter = (c: OpContext) => {
  const x = c.x(0);
  const target = c.dims(1, 'shape');
  const allowZero = c.int('allowzero', 0) === 1;
  const shape: (Dim | -1)[] = target.map((d, i) => {
    if (d === 0 && !allowZero) {
      if (i >= x.rank) throw c.malformed(`shape value 0 at position ${i} has no input dim to copy`);
      return x.shape[i];
    }
    if (d === -1) return -1;
    if (typeof d === 'number' && d < 0) throw c.malformed(`bad shape value ${d}`);
    return d;
  });
  const infer = shape.indexOf(-1);
  if (infer >= 0) {
    if (shape.lastIndexOf(-1) !== infer) throw c.malformed('more than one -1 in the shape');
    const known = dimProduct(shape.filter((d): d is Dim => d !== -1));
    const q = known === 0 ? undefined : dimDivExact(numel(x.shape), known);
    if (q === undefined) c.unsupported(`cannot infer the -1 of shape [${target.join(', ')}] for input [${x.shape.join(', ')}]`);
    shape[infer] = q;
  }
  return [c.out(c.reshape(x, shape as Dim[]), c.type(0))];
};

const split: Converter = (c: OpContext) => {
  const x = c.x(0);
  const axis = axisOf(c, c.int('axis', 0), x.rank);
  const dim = x.shape[axis];
  const n = c.node.output.length;
  let sizes: Dim[];
  if (c.opset >= 13 && c.hasInput(1)) sizes = c.numbers(1, 'split');
  else if (c.opset < 13 && c.has('split')) sizes = c.ints('split')!;
  else if (c.has('num_outputs')) {
    const parts = c.int('num_outputs');
    if (typeof dim !== 'number') {
      const each = dimDivExact(dim, parts);
      if (each === undefined) c.unsupported(`splitting symbolic dim ${dim} into ${parts} parts`);
      sizes = new Array<Dim>(parts).fill(each);
    } else {
      const each = Math.ceil(dim / parts);
      sizes = Array.from({ length: parts }, (_v, i) => Math.max(0, Math.min(each, dim - i * each)));
    }
  } else {
    const each = dimDivExact(dim, n);
    if (each === undefined) throw c.malformed(`dim ${dim} does not split into ${n} equal parts`);
    sizes = new Array<Dim>(n).fill(each);
  }
  if (sizes.length !== n) throw c.malformed(`${sizes.length} split sizes for ${n} outputs`);
  let at: Dim = 0;
  return sizes.map((size) => {
    const end = dimAdd(at, size);
    const piece = c.op('slice', [x], { axes: [axis], starts: [at], ends: [end], steps: [1] });
    at = end;
    return c.out(piece, c.type(0));
  });
};

const squeeze: Converter = (c: OpContext) => {
  const x = c.x(0);
  const axes = axesOperand(c, 13, 1);
  const drop = new Set(axes ? axes.map((a) => axisOf(c, a, x.rank)) : x.shape.flatMap((d, i) => (d === 1 ? [i] : [])));
  for (const a of drop) if (x.shape[a] !== 1) throw c.malformed(`cannot squeeze axis ${a} of size ${x.shape[a]}`);
  return [c.out(c.reshape(x, x.shape.filter((_d, i) => !drop.has(i))), c.type(0))];
};

const unsqueezeOp: Converter = (c: OpContext) => {
  const axes = axesOperand(c, 13, 1);
  if (!axes) throw c.malformed('Unsqueeze needs axes');
  return [c.out(unsqueeze(c, c.x(0), axes), c.type(0))];
};

const flatten: Converter = (c: OpContext) => {
  const x = c.x(0);
  const a = c.int('axis', 1);
  const axis = a < 0 ? a + x.rank : a;
  if (axis < 0 || axis > x.rank) throw c.malformed(`axis ${a} is out of range for rank ${x.rank}`);
  return [c.out(c.reshape(x, [dimProduct(x.shape.slice(0, axis)), dimProduct(x.shape.slice(axis))]), c.type(0))];
};

const concat: Converter = (c: OpContext) => {
  const xs = c.inputs.map((_v, i) => c.x(i));
  const axis = axisOf(c, c.int('axis'), xs[0].rank);
  const parts = xs.filter((x) => x.shape[axis] !== 0);
  if (parts.length === 0) return [c.out(xs[0], c.type(0))];
  return [c.out(parts.length === 1 ? parts[0] : c.op('concat', parts, { axis }), c.type(0))];
};

const gather: Converter = (c: OpContext) => {
  const x = c.x(0);
  const axis = axisOf(c, c.int('axis', 0), x.rank);
  return [c.out(c.op('gather', [x, c.x(1)], { axis }), c.type(0))];
};

const expand: Converter = (c: OpContext) => {
  const x = c.x(0);
  const shape = c.dims(1, 'shape');
  if (shape.some((d) => typeof d === 'number' && d < 0)) throw c.malformed(`bad Expand shape [${shape.join(', ')}]`);
  const y = c.op('expand', [x], { shape });
  return [c.out(y.shape.some((d) => d === 0) ? c.empty(y.dtype, y.shape) : y, c.type(0))];
};

const transpose: Converter = (c: OpContext) => {
  const x = c.x(0);
  const perm = c.ints('perm');
  return [c.out(c.op('transpose', [x], perm ? { perm: perm.map((p) => axisOf(c, p, x.rank)) } : {}), c.type(0))];
};

/** `Tile`: `x [d0, …]` reshaped to `[1, d0, 1, d1, …]`, expanded to `[r0, d0, r1, d1, …]`, merged. */
const tile: Converter = (c: OpContext) => {
  const x = c.x(0);
  const reps = c.dims(1, 'repeats');
  if (reps.length !== x.rank) throw c.malformed(`${reps.length} repeats for rank ${x.rank}`);
  const interleaved = x.shape.flatMap((d) => [1, d]);
  const expanded = x.shape.flatMap((d, i) => [reps[i], d]);
  const y = c.op('expand', [c.reshape(x, interleaved)], { shape: expanded });
  return [c.out(c.reshape(y, x.shape.map((d, i) => dimMul(d, reps[i]))), c.type(0))];
};

/** `Pad` in `constant` mode: negative pads slice, positive ones concatenate fills. */
const pad: Converter = (c: OpContext) => {
  const x = c.x(0);
  if (c.opset < 11) c.unsupported('Pad before opset 11 (pads as attributes)');
  const mode = c.string('mode', 'constant');
  if (mode !== 'constant') c.unsupported(`Pad mode '${mode}'`);
  const pads = c.dims(1, 'pads');
  const axes = c.hasInput(3) ? c.numbers(3, 'axes').map((a) => axisOf(c, a, x.rank)) : x.shape.map((_d, i) => i);
  if (pads.length !== 2 * axes.length) throw c.malformed(`${pads.length} pads for ${axes.length} axes`);
  const fill = c.hasInput(2) ? c.reshape(c.x(2), []) : c.scalar(0, x);
  let y = x;
  axes.forEach((ax, i) => {
    for (const [p, atEnd] of [[pads[i], false], [pads[i + axes.length], true]] as const) {
      if (p === 0) continue;
      if (typeof p === 'number' && p < 0) {
        const dim = y.shape[ax];
        const [st, en] = atEnd ? [0, dimAdd(dim, p)] : [-p, dim];
        y = c.op('slice', [y], { axes: [ax], starts: [st], ends: [en], steps: [1] });
        continue;
      }
      const shape = [...y.shape];
      shape[ax] = p;
      const block = c.op('expand', [fill], { shape });
      y = c.op('concat', atEnd ? [y, block] : [block, y], { axis: ax });
    }
  });
  return [c.out(y, c.type(0))];
};

/**
 * `Trilu`: a keep-mask over the last two dims selects `x` or zero. With static dims the mask is a constant table;
 * over symbolic dims (a causal mask of a dynamic-length export) it is computed: `j - i` from two `range`s, compared
 * with k.
 */
const trilu: Converter = (c: OpContext) => {
  const x = c.x(0);
  const upper = c.int('upper', 1) === 1;
  const ks = c.hasInput(1) ? c.numbers(1, 'k') : [0];
  if (ks.length !== 1 || !Number.isInteger(ks[0])) throw c.malformed(`Trilu k must be one integer, got [${ks.join(', ')}]`);
  const k = ks[0];
  if (x.rank < 2) throw c.malformed('Trilu needs rank >= 2');
  const [n, m] = x.shape.slice(-2);
  if (typeof n !== 'number' || typeof m !== 'number') {
    // keep (i, j) when j - i >= k (upper) or j - i <= k (lower); k is clamped into i32 (beyond ±2^31 it keeps all or nothing)
    const kc = Math.min(Math.max(k, -(2 ** 30)), 2 ** 30);
    const row = c.reshape(c.op('range', [], { length: n }), [n, 1]);
    const col = c.reshape(c.op('range', [], { length: m }), [1, m]);
    const diff = c.op('sub', [col, row]);
    const keep = upper ? c.op('greater', [diff, c.constant(kc - 1, 'i32')]) : c.op('less', [diff, c.constant(kc + 1, 'i32')]);
    return [c.out(c.op('where', [keep, x, c.scalar(0, x)]), c.type(0))];
  }
  if (n * m === 0) return [c.value(0)];
  c.checkTableSize(n * m, 'the Trilu mask');
  const keep = new Uint8Array(n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) keep[i * m + j] = (upper ? j - i >= k : j - i <= k) ? 1 : 0;
  const mask = c.fromHost(new Tensor('bool', [n, m], keep), 'trilu_mask');
  return [c.out(c.op('where', [mask, x, c.scalar(0, x)]), c.type(0))];
};

/** Whether a dim is provably >= 0: a number >= 0, or a polynomial in sizes whose coefficients are all >= 0. */
function provablyNonNegative(d: Dim): boolean {
  return typeof d === 'number' ? d >= 0 : [...d.terms.values()].every((v) => v >= 0);
}

/**
 * `Range`: folds to a constant when the length is static (a symbolic start is fine then); a symbolic length with a
 * step of ±1 that is provably not negative (`Range(past, past + seq, 1)`, position ids of a dynamic-length export)
 * becomes `start ± range(length)`.
 */
const range: Converter = (c: OpContext) => {
  const [start] = c.dims(0, 'start');
  const [limit] = c.dims(1, 'limit');
  const [delta] = c.dims(2, 'delta');
  const dtype = c.x(0).dtype;
  const extent = dimSub(limit, start);
  if (typeof extent !== 'number' && (delta === 1 || delta === -1)) {
    const length = delta === 1 ? extent : dimSub(start, limit);
    if (provablyNonNegative(length)) {
      const ramp = c.op('range', [], { length });
      const values = c.op(delta === 1 ? 'add' : 'sub', [dimsConstant([start], []), ramp]);
      return [c.out(c.cast(values, dtype), c.type(0))];
    }
  }
  if (typeof extent !== 'number' || typeof delta !== 'number') return c.dataDependent(`the length of Range(${start}, ${limit}, ${delta}) (symbolic)`);
  if (delta === 0) throw c.malformed('Range delta 0');
  const n = Math.max(Math.ceil(extent / delta), 0);
  c.checkTableSize(n, 'Range');
  if (typeof start !== 'number') return [c.out(dimsConstant(Array.from({ length: n }, (_v, i) => dimAdd(start, i * delta)), [n]), c.type(0))];
  const values = Array.from({ length: n }, (_v, i) => start + i * delta);
  return [c.out(n === 0 ? c.empty(dtype, [0]) : c.fromHost(Tensor.from(dtype, [n], values), 'range'), c.type(0))];
};

const shape: Converter = (c: OpContext) => {
  const x = c.value(0).node;
  if (!x) return [c.out(dimsConstant([...c.value(0).wide!.shape], [c.value(0).wide!.shape.length]), OnnxType.INT64)];
  const r = x.rank;
  const clampAxis = (v: number): number => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
  const start = clampAxis(c.int('start', 0));
  const end = clampAxis(c.int('end', r));
  const dims = x.shape.slice(start, Math.max(start, end));
  return [c.out(dimsConstant(dims, [dims.length]), OnnxType.INT64)];
};

const constantOfShape: Converter = (c: OpContext) => {
  const shape = c.dims(0, 'shape');
  const value = c.tensorAttr('value') ?? { type: OnnxType.FLOAT, node: c.constant(0, 'f32') };
  if (!value.node) throw c.malformed("attribute 'value' holds an int64 value outside the int32 range tensorwright computes int64 in");
  const scalar = c.reshape(value.node, []);
  if (shape.length === 0) return [c.out(scalar, value.type)];
  if (isStaticShape(shape) && (numel(shape) as number) === 0) return [c.out(c.empty(scalar.dtype, shape), value.type)];
  return [c.out(c.op('expand', [scalar], { shape }), value.type)];
};

const constant: Converter = (c: OpContext) => {
  const t = c.tensorAttr('value');
  if (t) return [t];
  if (c.has('value_float')) return [c.out(c.constant(c.float('value_float'), 'f32'), OnnxType.FLOAT)];
  if (c.has('value_int')) return [c.out(c.constant(c.int('value_int'), 'i32'), OnnxType.INT64)];
  const floats = c.floats('value_floats');
  if (floats) return [c.out(c.fromHost(Tensor.from('f32', [floats.length], floats), 'constant'), OnnxType.FLOAT)];
  const ints = c.ints('value_ints');
  if (ints) {
    if (ints.some((v) => v < -(2 ** 31) || v >= 2 ** 31)) {
      const exact = c.ints64('value_ints')!;
      return [{ type: OnnxType.INT64, wide: { shape: [ints.length], values: ints }, node: c.fromHost(Tensor.from('i64', [ints.length], exact), 'constant') }];
    }
    return [c.out(c.fromHost(Tensor.from('i32', [ints.length], ints), 'constant'), OnnxType.INT64)];
  }
  return c.unsupported('Constant without a tensor, float or int value (strings and sparse tensors are unsupported)');
};

const dropout: Converter = (c: OpContext) => {
  const x = c.x(0);
  if (c.hasInput(2)) {
    const [training] = c.numbers(2, 'training_mode');
    if (training) c.unsupported('Dropout in training mode');
  }
  const mask = c.node.output[1] ? c.op('expand', [c.constant(1, 'bool')], { shape: [...x.shape] }) : undefined;
  return [c.value(0), mask && c.out(mask, OnnxType.BOOL)];
};

const size: Converter = (c: OpContext) => [c.out(dimsConstant([numel(c.x(0).shape)], []), OnnxType.INT64)];

/** The shape converters, by ONNX op type. */
export const SHAPE_CONVERTERS: Readonly<Record<string, Converter>> = {
  Shape: shape,
  Size: size,
  Reshape: reshape,
  Flatten: flatten,
  Squeeze: squeeze,
  Unsqueeze: unsqueezeOp,
  Concat: concat,
  Split: split,
  Slice: slice,
  Gather: gather,
  Expand: expand,
  Transpose: transpose,
  Tile: tile,
  Pad: pad,
  Trilu: trilu,
  Range: range,
  Constant: constant,
  ConstantOfShape: constantOfShape,
  Identity: (c) => [c.value(0)],
  Dropout: dropout,
};

