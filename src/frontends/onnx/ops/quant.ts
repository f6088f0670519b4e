/**
 * Quantization ONNX ops: `DequantizeLinear`, `QuantizeLinear` (per-tensor, per-axis and blocked scales), and
 * `MatMulInteger`.
 *
 * TensorRT-style Q/DQ handling:
 * - `DequantizeLinear` of an int8/uint8/int4/uint4 initializer with constant scales (and zero points) becomes one
 *   quantized weight ({@link QuantizedEncoding}): groups run along the last axis, so per-axis scales on an axis other
 *   than the last repeat per row, and scales along the last axis (per-column or blocked along rows, the usual MatMul
 *   weight) are stored transposed under a `transpose` node, which `simplify` folds into the matmul's `transB`.
 *   Layouts the encoding cannot hold (int16/int32, blocks that do not divide the axis) are dequantized densely.
 * - `DequantizeLinear(QuantizeLinear(x))` on activations, with the same scales, zero points and axis, becomes a float
 *   fake-quant composite: `(clamp(round(x / s) + zp, lo, hi) - zp) * s`, with no integer tensors in between.
 * - Otherwise both are composed from elementwise ops (`(x - zp) * s`, and `clamp(round(x / s) + zp)` cast to the
 *   integer type).
 * @module
 */
import { numel } from '../../../ir/dim.js';
import { isFloat, type DType } from '../../../ir/dtype.js';
import type { Node } from '../../../ir/node.js';
import { packBits, WeightStore, type WeightArray } from '../../../ir/weights.js';
import type { OnnxValue, OpContext } from '../context.js';
import { intRange, irDType, narrowIntBits, onnxTypeName, OnnxType } from '../tensor.js';
import { roundOf } from './elementwise.js';
import { matmulOf } from './nn.js';
import type { Converter } from './types.js';

/** How scales map onto the quantized tensor. */
interface QuantLayout {
  /** Per-tensor, per-axis or blocked. */
  readonly kind: 'tensor' | 'axis' | 'block';
  /** The quantized axis (normalized). */
  readonly axis: number;
  /** Block length along `axis` (blocked only). */
  readonly blockSize: number;
}

function layoutOf(c: OpContext, x: Node, scale: Node): QuantLayout {
  const blockSize = c.int('block_size', 0);
  const a = c.int('axis', 1);
  const axis = x.rank === 0 ? 0 : a < 0 ? a + x.rank : a;
  if (blockSize === 0 && (scale.rank === 0 || (scale.rank === 1 && scale.shape[0] === 1 && x.shape[axis] !== 1))) return { kind: 'tensor', axis, blockSize: 0 };
  if (axis < 0 || axis >= x.rank) throw c.malformed(`axis ${a} is out of range for rank ${x.rank}`);
  if (blockSize > 0) {
    if (scale.rank !== x.rank) throw c.malformed(`blocked scales must have the input's rank (${x.rank}), got [${scale.shape.join(', ')}]`);
    return { kind: 'block', axis, blockSize };
  }
  if (scale.rank !== 1 || scale.shape[0] !== x.shape[axis]) throw c.malformed(`per-axis scales [${scale.shape.join(', ')}] do not match axis ${axis} of [${x.shape.join(', ')}]`);
  return { kind: 'axis', axis, blockSize: 0 };
}

/** A scale or zero point broadcast against `x` (per-axis reshaped, blocked repeated along the axis). */
function alignTo(c: OpContext, p: Node, x: Node, l: QuantLayout): Node {
  if (l.kind === 'tensor') return c.reshape(p, []);
  if (l.kind === 'axis') return c.reshape(p, x.shape.map((d, i) => (i === l.axis ? d : 1)));
  const nb = p.shape[l.axis];
  const withUnit = [...p.shape.slice(0, l.axis + 1), 1, ...p.shape.slice(l.axis + 1)];
  const repeated = [...p.shape.slice(0, l.axis + 1), l.blockSize, ...p.shape.slice(l.axis + 1)];
  const merged = [...p.shape];
  merged[l.axis] = typeof nb === 'number' ? nb * l.blockSize : nb;
  const full = c.reshape(c.op('expand', [c.reshape(p, withUnit)], { shape: repeated }), merged);
  return full.shape[l.axis] === x.shape[l.axis] ? full : c.op('slice', [full], { axes: [l.axis], starts: [0], ends: [x.shape[l.axis]], steps: [1] });
}

/** `clamp(round(x / scale) + zp, lo, hi)` in f32. */
function quantizeFloat(c: OpContext, x: Node, scale: Node, zp: Node | undefined, l: QuantLayout, range: [number, number]): Node {
  const s = c.cast(alignTo(c, scale, x, l), 'f32');
  let q = roundOf(c, c.op('div', [c.cast(x, 'f32'), s]));
  if (zp) q = c.op('add', [q, c.cast(alignTo(c, zp, x, l), 'f32')]);
  return c.op('maximum', [c.op('minimum', [q, c.scalar(range[1], 'f32')]), c.scalar(range[0], 'f32')]);
}

/** `(q - zp) * scale` in f32, then `dtype`. */
function dequantizeFloat(c: OpContext, q: Node, x: Node, scale: Node, zp: Node | undefined, l: QuantLayout, dtype: DType): Node {
  let v = c.cast(q, 'f32');
  if (zp) v = c.op('sub', [v, c.cast(alignTo(c, zp, x, l), 'f32')]);
  return c.cast(c.op('mul', [v, c.cast(alignTo(c, scale, x, l), 'f32')]), dtype);
}

/** Row-major `[…, r, c]` values with the last two axes swapped. */
function swapLast2(v: ArrayLike<number>, shape: readonly number[]): number[] {
  const [r, k] = shape.slice(-2);
  const batches = v.length / (r * k || 1);
  const out = new Array<number>(v.length);
  for (let b = 0; b < batches; b++) for (let i = 0; i < r; i++) for (let j = 0; j < k; j++) out[b * r * k + j * r + i] = v[b * r * k + i * k + j];
  return out;
}

/**
 * A quantized weight for `DequantizeLinear` of a constant integer tensor, or `undefined` when the layout or type does
 * not fit {@link QuantizedEncoding} (the caller then dequantizes densely).
 */
function quantizedWeight(c: OpContext, x: Node, type: number, scale: Node, zp: Node | undefined, l: QuantLayout, dtype: DType): Node | undefined {
  const nb = narrowIntBits(type);
  const q0 = c.readValues(x);
  const s0 = c.readValues(scale);
  const z0 = zp ? c.readValues(zp) : undefined;
  if (!nb || (nb.bits !== 8 && nb.bits !== 4 && nb.bits !== 2) || !q0 || !s0 || (zp && !z0) || !isFloat(dtype)) return undefined;
  const shape = x.shape as number[];
  const n = numel(shape) as number;
  if (n === 0 || x.rank === 0) return undefined;
  const last = shape[shape.length - 1];
  let values: ArrayLike<number> = q0;
  let stored = shape;
  let transposed = false;
  let groupSize: number;
  let scales: number[];
  let zps: number[] | undefined;
  const perGroup = (src: ArrayLike<number>, groups: number, index: (g: number) => number): number[] => Array.from({ length: groups }, (_v, g) => src[index(g)]);
  if (l.kind === 'tensor') {
    groupSize = n;
    scales = [s0[0]];
    zps = z0 && [z0[0]];
  } else if (l.kind === 'axis' && (l.axis < x.rank - 1 || x.rank === 1)) {
    // one scale per row of the last axis (or per element of a vector)
    groupSize = x.rank === 1 ? 1 : last;
    const inner = shape.slice(l.axis + 1, x.rank === 1 ? undefined : -1).reduce((p, d) => p * d, 1);
    const index = (g: number): number => Math.floor(g / inner) % shape[l.axis];
    scales = perGroup(s0, n / groupSize, index);
    zps = z0 && perGroup(z0, n / groupSize, index);
  } else if ((l.kind === 'axis' && l.axis === x.rank - 1) || (l.kind === 'block' && l.axis === x.rank - 2)) {
    // scales along the last axis (per-column) or blocks along rows: store transposed, one group per row (or block)
    if (l.kind === 'block' && shape[l.axis] % l.blockSize !== 0) return undefined;
    transposed = true;
    values = swapLast2(q0, shape);
    stored = [...shape.slice(0, -2), last, shape[shape.length - 2]];
    if (l.kind === 'axis') {
      groupSize = stored[stored.length - 1];
      scales = perGroup(s0, n / groupSize, (g) => g % last);
      zps = z0 && perGroup(z0, n / groupSize, (g) => g % last);
    } else {
      groupSize = l.blockSize;
      scales = swapLast2(s0, scale.shape as number[]);
      zps = z0 && swapLast2(z0, scale.shape as number[]);
    }
  } else if (l.kind === 'block' && l.axis === x.rank - 1 && last % l.blockSize === 0) {
    groupSize = l.blockSize;
    scales = Array.from(s0);
    zps = z0 && Array.from(z0);
  } else return undefined;
  const hasZeroPoint = !!zps && zps.some((z) => z !== 0);
  const data: Record<string, WeightArray> = { packed: packBits(values, nb.bits), scales: Float32Array.from(scales) };
  if (hasZeroPoint) data.zeroPoints = Int32Array.from(zps!);
  const name = x.op === 'weight' ? String(x.attrs.name) : `dequantized_${c.node.input[0]}`;
  const entry = WeightStore.entry(name, dtype, stored, data, { kind: 'quantized', bits: nb.bits as 8 | 4 | 2, signed: nb.signed, groupSize, hasZeroPoint, scaleDType: dtype === 'f16' ? 'f16' : 'f32' });
  const w = c.addWeight(entry);
  return transposed ? c.op('transpose', [w], { perm: [...shape.map((_d, i) => i).slice(0, -2), x.rank - 1, x.rank - 2] }) : w;
}

function outputDType(c: OpContext, fallback: DType): DType {
  const t = c.int('output_dtype', 0);
  if (!t) return fallback;
  const d = irDType(t);
  if (!d || !isFloat(d)) c.unsupported(`output_dtype ${onnxTypeName(t)}`);
  return d;
}

const dequantizeLinear: Converter = (c: OpContext) => {
  const v = c.value(0);
  const x = c.x(0);
  const scale = c.x(1);
  const zp = c.opt(2);
  const type = c.type(0);
  if (!irDType(type) || isFloat(x.dtype)) c.unsupported(`DequantizeLinear of ${onnxTypeName(type)}`);
  const l = layoutOf(c, x, scale);
  const dtype = outputDType(c, scale.dtype);
  const qv = v.quantized;
  if (qv && qv.scale === scale && qv.zeroPoint === zp && (x.rank === 0 || (qv.axis === l.axis && qv.blockSize === l.blockSize))) {
    // Q -> DQ on an activation: fake quantization, in float
    const q = quantizeFloat(c, qv.x, scale, zp, l, intRange(type)!);
    return [c.out(dequantizeFloat(c, q, x, scale, zp, l, dtype))];
  }
  if (x.op === 'weight' || x.op === 'constant') {
    const w = quantizedWeight(c, x, type, scale, zp, l, dtype);
    if (w) return [c.out(w)];
  }
  return [c.out(dequantizeFloat(c, x, x, scale, zp, l, dtype))];
};

const quantizeLinear: Converter = (c: OpContext) => {
  const x = c.x(0);
  const scale = c.x(1);
  const zp = c.opt(2);
  const attrType = c.int('output_dtype', 0);
  const type = zp ? c.type(2) : attrType || OnnxType.UINT8;
  const range = intRange(type);
  const dtype = irDType(type);
  if (!range || !dtype) return c.unsupported(`QuantizeLinear to ${onnxTypeName(type)}`);
  const l = layoutOf(c, x, scale);
  const q = quantizeFloat(c, x, scale, zp, l, range);
  const value: OnnxValue = { node: c.cast(q, dtype), type, quantized: { x, scale, zeroPoint: zp, axis: l.axis, blockSize: l.blockSize } };
  return [value];
};

/** `MatMulInteger`: `(A - a_zero_point) · (B - b_zero_point)` in i32 (`a_zero_point` per row, `b_zero_point` per column). */
const matMulInteger: Converter = (c: OpContext) => {
  const [a0, b0] = [c.x(0), c.x(1)];
  let a = c.cast(a0, 'i32');
  let b = c.cast(b0, 'i32');
  const azp = c.opt(2);
  const bzp = c.opt(3);
  if (azp) {
    const z = c.cast(azp, 'i32');
    a = c.op('sub', [a, z.rank === 1 && z.shape[0] !== 1 ? c.reshape(z, [z.shape[0], 1]) : z]);
  }
  if (bzp) b = c.op('sub', [b, c.cast(bzp, 'i32')]);
  return [c.out(matmulOf(c, a, b), OnnxType.INT32)];
};

/** The quantization converters, by ONNX op type. */
export const QUANT_CONVERTERS: Readonly<Record<string, Converter>> = {
  DequantizeLinear: dequantizeLinear,
  QuantizeLinear: quantizeLinear,
  MatMulInteger: matMulInteger,
};
