/**
 * Each IR op as standard ONNX ops (opset 21), plus onnxruntime's `com.microsoft` ops for quantized weights. Ops
 * ONNX has one-to-one become that op (`Softmax`, `LayerNormalization`, `Gelu`, `Gather`, …); the fused forms
 * tensorwright recognizes become the primitive ops they stand for, computed in the reference backend's order:
 *
 * - `rmsnorm`: `x · 1/sqrt(mean(x²) + eps) · w` (`RMSNormalization` is opset 23);
 * - `rope`: angles `f32(position) · frequency` (frequencies as the reference computes them), `Cos`/`Sin`, and the
 *   rotation of adjacent pairs (`interleaved`) or halves (`half`) of the first `rotaryDim` dims;
 * - `attention` with `Hq = g · Hkv` query heads: queries reshaped to `[B, Hkv, g, S, D]` and multiplied with keys
 *   `[B, Hkv, 1, D, T]`, so each group of `g` query heads reads its KV head by broadcasting (no repeated keys or
 *   values are materialized), scaled, masked (`j > i + T - S` for `causal`, then the optional mask), `Softmax`, and
 *   multiplied with values `[B, Hkv, 1, T, Dv]`. Standard ops rather than `com.microsoft::GroupQueryAttention`,
 *   whose inputs are a KV cache (`past_key`, `seqlens_k`, `total_sequence_length`) that a graph without one does not
 *   have;
 * - `silu`: `x · Sigmoid(x)`; `rsqrt`: `Reciprocal(Sqrt(x))`.
 *
 * Matmul transposes become `Transpose` nodes (onnxruntime folds those of initializers when it loads the model).
 * @module
 */
import { InternalError, UnsupportedOpError } from '../../errors.js';
import { typedOp, type OpLike } from '../../ir/attrs.js';
import { dimSub, type Dim } from '../../ir/dim.js';
import type { TensorType } from '../../ir/node.js';
import { ropeFrequency } from '../../ir/rope.js';
import type { WeightEntry } from '../../ir/weights.js';
import type { DimValues } from './dim-values.js';
import { onnxDataType, OnnxDataType, typedArrayOf, type OnnxGraphWriter } from './graph-writer.js';
import { emitGatherBlockQuantized, emitMatMulNBits, type BlockQuantized } from './weights.js';

/** A graph value while exporting: its IR type, the weight it is (if any), and its ONNX name. */
export interface ExportValue {
  /** IR dtype and shape. */
  readonly type: TensorType;
  /** The weight entry, when the value is a `weight` node (its dense initializer is written only if `name()` is called). */
  readonly weight?: WeightEntry;
  /** The ONNX value name (for a weight: its dense initializer, written on the first call). */
  name(): string;
}

/** What the op emitters use. */
export interface EmitContext {
  /** The graph being written. */
  readonly w: OnnxGraphWriter;
  /** Symbolic dims as values. */
  readonly dims: DimValues;
  /** An int64 `[length]` value `0, 1, …, length - 1`. */
  iota(length: Dim): string;
  /** Whether quantized weights are written for `MatMulNBits` / `GatherBlockQuantized`. */
  readonly blockQuantized: boolean;
  /** The block layout of a quantized weight (cached), or why it has none. */
  blockLayout(e: WeightEntry): BlockQuantized | string;
  /** Records that a weight was read packed by an onnxruntime op. */
  packedUse(e: WeightEntry, op: string): void;
}

const UNARY: Readonly<Record<string, string>> = {
  neg: 'Neg', abs: 'Abs', exp: 'Exp', log: 'Log', sqrt: 'Sqrt', reciprocal: 'Reciprocal', tanh: 'Tanh', erf: 'Erf', sin: 'Sin', cos: 'Cos', relu: 'Relu', sigmoid: 'Sigmoid',
};
const BINARY: Readonly<Record<string, string>> = { add: 'Add', sub: 'Sub', mul: 'Mul', div: 'Div', pow: 'Pow', maximum: 'Max', minimum: 'Min', equal: 'Equal', less: 'Less', greater: 'Greater' };
const REDUCE: Readonly<Record<string, string>> = { sum: 'ReduceSum', mean: 'ReduceMean', max: 'ReduceMax' };

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);

/** The last two axes of a rank-`r` tensor swapped. */
function swapLast(r: number): number[] {
  return Array.from({ length: r }, (_v, i) => (i === r - 2 ? r - 1 : i === r - 1 ? r - 2 : i));
}

/** `Unsqueeze(x, axes)`. */
function unsqueeze(c: EmitContext, x: string, axes: readonly number[]): string {
  return c.w.op('Unsqueeze', [x, c.w.int64(axes)]);
}

/** `Slice(x, starts, ends, axes)` with static bounds. */
function sliceStatic(c: EmitContext, x: string, axis: number, start: number, end: number): string {
  return c.w.op('Slice', [x, c.w.int64([start]), c.w.int64([end]), c.w.int64([axis])]);
}

/**
 * Emits `op` applied to `args` (a node, or a step of a fused program) whose result has type `out`; returns the ONNX
 * name of the result. `where` names the node for messages.
 */
export function emitOp(c: EmitContext, op: OpLike, args: readonly ExportValue[], out: TensorType, where: () => string): string {
  const w = c.w;
  const t = typedOp(op);
  const x = (i: number): string => args[i].name();
  switch (t.op) {
    case 'input':
    case 'weight':
      throw new InternalError(`${t.op} nodes are graph values, not emitted ops (${where()})`);
    case 'constant':
      return constant(c, t.attrs.values, out);
    case 'neg': case 'abs': case 'exp': case 'log': case 'sqrt': case 'reciprocal': case 'tanh': case 'erf': case 'sin': case 'cos': case 'relu': case 'sigmoid':
      return w.op(UNARY[t.op], [x(0)]);
    case 'rsqrt':
      return w.op('Reciprocal', [w.op('Sqrt', [x(0)])]);
    case 'silu':
      return w.op('Mul', [x(0), w.op('Sigmoid', [x(0)])]);
    case 'gelu':
      return w.op('Gelu', [x(0)], { approximate: t.attrs.approximate });
    case 'add': case 'sub': case 'mul': case 'div': case 'pow': case 'maximum': case 'minimum': case 'equal': case 'less': case 'greater':
      return w.op(BINARY[t.op], [x(0), x(1)]);
    case 'where':
      return w.op('Where', [x(0), x(1), x(2)]);
    case 'cast':
      return w.op('Cast', [x(0)], { to: onnxDataType(t.attrs.to) });
    case 'matmul':
      // int8 activations have no ONNX form here (QLinearMatMul's per-tensor scales do not cover per-token ones)
      if (t.attrs.actQuant) throw new UnsupportedOpError(['matmul'], 'ONNX export of a W8A8 matmul (int8 activations, actQuant) is not supported');
      return matmul(c, args, t.attrs.transA, t.attrs.transB);
    case 'sum': case 'mean': case 'max': {
      const axes = t.attrs.axes;
      return w.op(REDUCE[t.op], [x(0), w.int64(axes)], { keepdims: t.attrs.keepDims ? 1 : 0, ...(axes.length === 0 ? { noop_with_empty_axes: 1 } : {}) });
    }
    case 'softmax':
      return w.op('Softmax', [x(0)], { axis: t.attrs.axis });
    case 'rmsnorm': {
      const dt = args[0].type.dtype;
      const ms = w.op('ReduceMean', [w.op('Mul', [x(0), x(0)]), w.int64([-1])], { keepdims: 1 });
      const inv = w.op('Reciprocal', [w.op('Sqrt', [w.op('Add', [ms, w.scalar(t.attrs.eps, dt)])])]);
      return w.op('Mul', [w.op('Mul', [x(0), inv]), x(1)]);
    }
    case 'layernorm':
      return w.op('LayerNormalization', args.map((a) => a.name()), { axis: -1, epsilon: { float: t.attrs.eps } });
    case 'rope':
      return rope(c, args, t.attrs.theta, t.attrs.style, t.attrs.rotaryDim);
    case 'reshape': {
      const zero = out.shape.some((d) => d === 0);
      return w.op('Reshape', [x(0), c.dims.shape(out.shape)], zero ? { allowzero: 1 } : {});
    }
    case 'transpose':
      return w.op('Transpose', [x(0)], { perm: t.attrs.perm });
    case 'concat':
      return w.op('Concat', args.map((a) => a.name()), { axis: t.attrs.axis });
    case 'slice': {
      const { axes, starts, ends, steps } = t.attrs;
      const endList = ends.map((e, i) => (e === null ? (steps[i] > 0 ? INT64_MAX : INT64_MIN) : e));
      return w.op('Slice', [x(0), c.dims.list(starts), c.dims.list(endList), w.int64(axes), w.int64(steps)]);
    }
    case 'gather':
      return gather(c, args, t.attrs.axis);
    case 'expand':
      return w.op('Expand', [x(0), c.dims.shape(out.shape)]);
    case 'attention':
      return attention(c, args, t.attrs.causal, t.attrs.scale);
    case 'fused':
      throw new InternalError(`fused programs are expanded step by step, not emitted as one op (${where()})`);
    default: {
      const op: string = (t as { op: string }).op;
      throw new UnsupportedOpError([op], `op '${op}' has no ONNX form yet (${where()})`);
    }
  }
}

/** An inline constant: an initializer, or (i32 holding symbolic dims) the dims computed and cast to int32. */
function constant(c: EmitContext, values: readonly (number | Dim)[], out: TensorType): string {
  const shape = out.shape as readonly number[];
  const n = shape.reduce((a, b) => a * b, 1);
  const full = values.length === 1 && n !== 1 ? new Array<number | Dim>(n).fill(values[0]) : values;
  if (full.every((v) => typeof v === 'number')) return c.w.initializer(`const_${out.dtype}`, onnxDataType(out.dtype), shape, typedArrayOf(out.dtype, full as number[]));
  const list = c.w.op('Cast', [c.dims.list(full)], { to: OnnxDataType.INT32 });
  return shape.length === 1 ? list : c.w.op('Reshape', [list, c.w.int64(shape)]);
}

/** `matmul(a, b)`: `MatMulNBits` for a quantized `[N, K]` weight read with `transB`, else `MatMul` (with transposes). */
function matmul(c: EmitContext, args: readonly ExportValue[], transA: boolean, transB: boolean): string {
  const [a, b] = args;
  const aName = transA ? c.w.op('Transpose', [a.name()], { perm: swapLast(a.type.shape.length) }) : a.name();
  const e = b.weight;
  if (c.blockQuantized && e && transB && e.encoding.kind === 'quantized' && a.type.dtype === 'f32') {
    const q = c.blockLayout(e);
    if (typeof q !== 'string') {
      c.packedUse(e, 'MatMulNBits');
      return emitMatMulNBits(c.w, aName, e.name, q);
    }
  }
  const bName = transB ? c.w.op('Transpose', [b.name()], { perm: swapLast(b.type.shape.length) }) : b.name();
  return c.w.op('MatMul', [aName, bName]);
}

/** `gather(x, ids)`: `GatherBlockQuantized` for rows of a 4- or 8-bit quantized table, else `Gather`. */
function gather(c: EmitContext, args: readonly ExportValue[], axis: number): string {
  const [table, ids] = args;
  const idx = ids.type.dtype === 'u32' ? c.w.op('Cast', [ids.name()], { to: OnnxDataType.INT64 }) : ids.name();
  const e = table.weight;
  if (c.blockQuantized && e && axis === 0 && e.encoding.kind === 'quantized' && e.encoding.bits !== 2) {
    const q = c.blockLayout(e);
    if (typeof q !== 'string') {
      c.packedUse(e, 'GatherBlockQuantized');
      return emitGatherBlockQuantized(c.w, idx, e.name, q);
    }
  }
  return c.w.op('Gather', [table.name(), idx], { axis });
}

/** Rotary embedding of `x [B, S, H, D]` at positions `[S]` or `[B, S]`. */
function rope(c: EmitContext, args: readonly ExportValue[], theta: number, style: 'interleaved' | 'half', rotaryDim: number): string {
  const w = c.w;
  const [xv, pv] = args;
  const x = xv.name();
  const D = xv.type.shape[3] as number;
  const half = rotaryDim / 2;
  const freq = w.initializer('rope_frequencies', OnnxDataType.FLOAT, [half], Float32Array.from({ length: half }, (_v, i) => ropeFrequency(theta, i, rotaryDim)));
  // angle [.., S, 1, half]: f32(position) · frequency, as the reference rounds it
  const angle = unsqueeze(c, w.op('Mul', [unsqueeze(c, w.op('Cast', [pv.name()], { to: OnnxDataType.FLOAT }), [-1]), freq]), [-2]);
  const f16 = xv.type.dtype === 'f16';
  const trig = (op: 'Cos' | 'Sin'): string => (f16 ? w.op('Cast', [w.op(op, [angle])], { to: OnnxDataType.FLOAT16 }) : w.op(op, [angle]));
  let cos = trig('Cos');
  let sin = trig('Sin');
  const rotate = (x0: string, x1: string): [string, string] => [
    w.op('Sub', [w.op('Mul', [x0, cos]), w.op('Mul', [x1, sin])]),
    w.op('Add', [w.op('Mul', [x0, sin]), w.op('Mul', [x1, cos])]),
  ];
  const rest = rotaryDim < D ? sliceStatic(c, x, 3, rotaryDim, D) : undefined;
  if (style === 'half') {
    const [o0, o1] = rotate(sliceStatic(c, x, 3, 0, half), sliceStatic(c, x, 3, half, rotaryDim));
    return w.op('Concat', rest ? [o0, o1, rest] : [o0, o1], { axis: 3 });
  }
  // interleaved: pairs [B, S, H, half, 2], rotated and put back in place
  const pairs = w.op('Reshape', [rest ? sliceStatic(c, x, 3, 0, rotaryDim) : x, w.int64([0, 0, 0, half, 2])]);
  cos = unsqueeze(c, cos, [-1]);
  sin = unsqueeze(c, sin, [-1]);
  const [o0, o1] = rotate(sliceStatic(c, pairs, 4, 0, 1), sliceStatic(c, pairs, 4, 1, 2));
  const rotated = w.op('Reshape', [w.op('Concat', [o0, o1], { axis: 4 }), w.int64([0, 0, 0, rotaryDim])]);
  return rest ? w.op('Concat', [rotated, rest], { axis: 3 }) : rotated;
}

/** Attention over `[B, S, H, D]` tensors with GQA by broadcasting (see the module comment). */
function attention(c: EmitContext, args: readonly ExportValue[], causal: boolean, scale: number): string {
  const w = c.w;
  const [qv, kv, vv, mv] = args;
  const [, S, Hq, D] = qv.type.shape;
  const [, T, Hkv] = kv.type.shape;
  const Dv = vv.type.shape[3];
  const hq = Hq as number;
  const hkv = Hkv as number;
  const g = hq / hkv;
  const dt = qv.type.dtype;
  // q [B, S, Hq, D] -> [B, S, Hkv, g, D] -> [B, Hkv, g, S, D]
  const q5 = w.op('Transpose', [w.op('Reshape', [qv.name(), w.int64([0, 0, hkv, g, D as number])])], { perm: [0, 2, 3, 1, 4] });
  // k [B, T, Hkv, D] -> [B, Hkv, 1, D, T]; v [B, T, Hkv, Dv] -> [B, Hkv, 1, T, Dv]
  const k5 = unsqueeze(c, w.op('Transpose', [kv.name()], { perm: [0, 2, 3, 1] }), [2]);
  const v5 = unsqueeze(c, w.op('Transpose', [vv.name()], { perm: [0, 2, 1, 3] }), [2]);
  let scores = w.op('Mul', [w.op('MatMul', [q5, k5]), w.scalar(scale, dt)]);
  const minusInf = (): string => w.scalar(-Infinity, dt);
  if (causal) {
    // key j is masked for query i when j > i + (T - S); one mask per (S, T), shared by every layer
    const masked = c.dims.memo(`causal:${String(S)}:${String(T)}`, () => {
      const offset = dimSub(T, S);
      let rows = unsqueeze(c, c.iota(S), [1]);
      if (offset !== 0) rows = w.op('Add', [rows, c.dims.dim(offset)]);
      return w.op('Greater', [unsqueeze(c, c.iota(T), [0]), rows]);
    });
    scores = w.op('Where', [masked, minusInf(), scores]);
  }
  if (mv) {
    const r = mv.type.shape.length;
    const shape4: Dim[] = [...new Array<Dim>(4 - r).fill(1), ...mv.type.shape];
    const m4 = r < 4 ? unsqueeze(c, mv.name(), Array.from({ length: 4 - r }, (_v, i) => i)) : mv.name();
    // [mb, mh, ms, mt] -> [mb, 1, 1, ms, mt] (heads broadcast) or [mb, Hkv, g, ms, mt]
    const m5 = shape4[1] === 1 ? unsqueeze(c, m4, [2]) : w.op('Reshape', [m4, c.dims.shape([shape4[0], hkv, g, shape4[2], shape4[3]])]);
    scores = mv.type.dtype === 'bool' ? w.op('Where', [m5, scores, minusInf()]) : w.op('Add', [scores, m5]);
  }
  const o5 = w.op('MatMul', [w.op('Softmax', [scores], { axis: -1 }), v5]);
  // [B, Hkv, g, S, Dv] -> [B, S, Hkv, g, Dv] -> [B, S, Hq, Dv]
  return w.op('Reshape', [w.op('Transpose', [o5], { perm: [0, 3, 1, 2, 4] }), w.int64([0, 0, hq, Dv as number])]);
}
