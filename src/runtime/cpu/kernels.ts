/**
 * Reference implementations of every op on host tensors. Clarity over speed, but no quadratic surprises: these run
 * real (small) models in tests. Floats are computed in float64 and stored as float32 (rounded to half for f16);
 * matmul, norms, softmax and attention accumulate in float64.
 * @module
 */
import { InputError } from '../../errors.js';
import type { DType } from '../../ir/dtype.js';
import { isFloat } from '../../ir/dtype.js';
import type { Attrs } from '../../ir/node.js';
import { broadcastShapes, matmulMNK } from '../../ir/ops.js';
import { ropeFrequency } from '../../ir/rope.js';
import { fakeQuantizeKvRows, type QuantizedKvDType } from '../../ir/kv-cache-quant.js';
import { shapeEquals, stridesOf } from '../../ir/dim.js';
import { arrayTypeFor, roundToHalf, Tensor, type TensorData } from './tensor.js';
import { binaryFn, binaryFn64, unaryFn } from './math.js';

/** The elements of a tensor that is not i64 (every op but the integer ones and data movement refuses i64). */
function nums(t: Tensor): Exclude<TensorData, BigInt64Array> {
  return t.numbers;
}

function alloc(dtype: DType, shape: readonly number[]): Tensor {
  return Tensor.zeros(dtype, shape);
}

function finish(t: Tensor): Tensor {
  if (t.dtype === 'f16') roundToHalf(t.data as Float32Array);
  return t;
}

/** Broadcast output shape of static shapes: the IR's rule, on numbers. */
function broadcast(op: string, shapes: readonly (readonly number[])[]): number[] {
  return broadcastShapes(op, shapes) as number[];
}

/** For each output element, the flat offset of the corresponding (broadcast) input element. */
function broadcastOffsets(outShape: readonly number[], inShape: readonly number[]): Int32Array | null {
  const n = outShape.reduce((a, b) => a * b, 1);
  if (shapeEquals(inShape, outShape)) return null;
  const rank = outShape.length;
  const inStr = stridesOf(inShape);
  const st = new Array<number>(rank).fill(0);
  for (let i = 0; i < inShape.length; i++) {
    const o = i + rank - inShape.length;
    st[o] = inShape[i] === 1 ? 0 : inStr[i];
  }
  const offs = new Int32Array(n);
  const idx = new Array<number>(rank).fill(0);
  let off = 0;
  for (let k = 0; k < n; k++) {
    offs[k] = off;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      off += st[d];
      if (idx[d] < outShape[d]) break;
      off -= st[d] * idx[d];
      idx[d] = 0;
    }
  }
  return offs;
}

/** Unary elementwise ops. */
export function unary(op: string, attrs: Attrs, x: Tensor): Tensor {
  if (x.data instanceof BigInt64Array) {
    if (op !== 'neg' && op !== 'abs') throw new InputError(`unary op '${op}' cannot take i64 values`);
    const a = x.data;
    const o = new BigInt64Array(a.length);
    for (let i = 0; i < a.length; i++) o[i] = op === 'abs' && a[i] >= 0n ? a[i] : BigInt.asIntN(64, -a[i]);
    return new Tensor('i64', x.shape, o);
  }
  const f = unaryFn(op, attrs);
  const out = alloc(x.dtype, x.shape);
  const a = x.data;
  const o = out.data;
  if (x.dtype === 'i32' && op === 'neg') for (let i = 0; i < a.length; i++) o[i] = -a[i] | 0;
  else for (let i = 0; i < a.length; i++) o[i] = f(a[i]);
  return finish(out);
}

/** Binary elementwise ops and comparisons, with broadcasting. */
export function binary(op: string, x: Tensor, y: Tensor, outDType: DType): Tensor {
  const shape = broadcast(op, [x.shape, y.shape]);
  const out = alloc(outDType, shape);
  const ox = broadcastOffsets(shape, x.shape);
  const oy = broadcastOffsets(shape, y.shape);
  if (x.data instanceof BigInt64Array && y.data instanceof BigInt64Array) {
    const f64 = binaryFn64(op);
    const [a, b, o] = [x.data, y.data, out.data as { [i: number]: number | bigint }];
    for (let i = 0; i < out.size; i++) o[i] = f64(a[ox ? ox[i] : i], b[oy ? oy[i] : i]);
    return out;
  }
  const f = binaryFn(op, !isFloat(x.dtype));
  const a = nums(x);
  const b = nums(y);
  const o = nums(out);
  for (let i = 0; i < o.length; i++) o[i] = f(a[ox ? ox[i] : i], b[oy ? oy[i] : i]);
  return finish(out);
}

/** `where(cond, a, b)`. */
export function where(c: Tensor, x: Tensor, y: Tensor): Tensor {
  const shape = broadcast('where', [c.shape, x.shape, y.shape]);
  const out = alloc(x.dtype, shape);
  const oc = broadcastOffsets(shape, c.shape);
  const ox = broadcastOffsets(shape, x.shape);
  const oy = broadcastOffsets(shape, y.shape);
  for (let i = 0; i < out.data.length; i++) out.data[i] = c.data[oc ? oc[i] : i] ? x.data[ox ? ox[i] : i] : y.data[oy ? oy[i] : i];
  return out;
}

/**
 * Element type conversion with WGSL's semantics: floats to integers truncate toward zero and saturate to the
 * target's range (NaN becomes 0); integers convert between i32 and u32 by reinterpreting bits.
 */
export function cast(x: Tensor, to: DType): Tensor {
  if (x.data instanceof BigInt64Array || to === 'i64') return cast64(x, to);
  const out = alloc(to, x.shape);
  const a = x.data;
  const o = out.data;
  const fromFloat = isFloat(x.dtype);
  if (to === 'bool') for (let i = 0; i < a.length; i++) o[i] = a[i] !== 0 ? 1 : 0;
  else if ((to === 'i32' || to === 'u32') && fromFloat) {
    const [lo, hi] = to === 'i32' ? [-2147483648, 2147483647] : [0, 4294967295];
    for (let i = 0; i < a.length; i++) o[i] = Number.isNaN(a[i]) ? 0 : Math.min(hi, Math.max(lo, Math.trunc(a[i])));
  } else for (let i = 0; i < a.length; i++) o[i] = a[i];
  return finish(out);
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/**
 * Casts to or from i64: integers widen exactly and narrow by wrapping (keeping the low bits, as ONNX and C casts do);
 * floats truncate toward zero and saturate to the int64 range (NaN becomes 0); i64 to a float rounds to nearest.
 */
function cast64(x: Tensor, to: DType): Tensor {
  const a = x.data;
  const n = a.length;
  if (to === 'i64') {
    const o = new BigInt64Array(n);
    if (a instanceof BigInt64Array) o.set(a);
    else if (isFloat(x.dtype))
      for (let i = 0; i < n; i++) {
        const v = a[i];
        o[i] = Number.isNaN(v) ? 0n : v >= 2 ** 63 ? INT64_MAX : v <= -(2 ** 63) ? INT64_MIN : BigInt(Math.trunc(v));
      }
    else for (let i = 0; i < n; i++) o[i] = BigInt(a[i]);
    return new Tensor('i64', x.shape, o);
  }
  const v = a as BigInt64Array;
  const out = alloc(to, x.shape);
  const o = out.data as Exclude<TensorData, BigInt64Array>;
  for (let i = 0; i < n; i++)
    o[i] = to === 'bool' ? (v[i] !== 0n ? 1 : 0) : to === 'i32' ? Number(BigInt.asIntN(32, v[i])) : to === 'u32' ? Number(BigInt.asUintN(32, v[i])) : int64ToF32(v[i]);
  return finish(out);
}

/**
 * An int64 rounded once to the nearest f32 (ties to even): a magnitude of 2^32 or more keeps its top 32 bits plus a
 * sticky bit for the rest (so rounding those 32 bits to 24 rounds the whole value), as the WGSL `tw_i64_to_f32` does.
 */
function int64ToF32(v: bigint): number {
  const m = v < 0n ? -v : v;
  const bits = m.toString(2).length;
  let r: number;
  if (bits <= 32) r = Math.fround(Number(m));
  else {
    const s = BigInt(bits - 32);
    const top = (m >> s) | ((m & ((1n << s) - 1n)) !== 0n ? 1n : 0n);
    r = Math.fround(Number(top)) * 2 ** Number(s);
  }
  return v < 0n ? -r : r;
}

/** Batched matmul with broadcasting batch dims and optional transposes; float64 accumulation. */
export function matmul(A: Tensor, B: Tensor, transA: boolean, transB: boolean): Tensor {
  const { m: M, k: K, n: N } = matmulMNK(A.shape, B.shape, transA, transB);
  const batchShape = broadcast('matmul', [A.shape.slice(0, -2), B.shape.slice(0, -2)]);
  const batches = batchShape.reduce((p, q) => p * q, 1);
  const out = alloc(A.dtype, [...batchShape, M, N]);
  const aOff = broadcastOffsets(batchShape, A.shape.slice(0, -2));
  const bOff = broadcastOffsets(batchShape, B.shape.slice(0, -2));
  const a = nums(A);
  const b = nums(B);
  const o = nums(out);
  // strides of the logical (possibly transposed) operands
  const [aM, aK] = transA ? [1, M] : [K, 1];
  const [bK, bN] = transB ? [1, K] : [N, 1];
  const col = new Float64Array(K);
  for (let bt = 0; bt < batches; bt++) {
    const abase = (aOff ? aOff[bt] : bt) * M * K;
    const bbase = (bOff ? bOff[bt] : bt) * K * N;
    const obase = bt * M * N;
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) col[k] = b[bbase + k * bK + n * bN];
      for (let m = 0; m < M; m++) {
        let acc = 0;
        const arow = abase + m * aM;
        for (let k = 0; k < K; k++) acc += a[arow + k * aK] * col[k];
        o[obase + m * N + n] = acc;
      }
    }
  }
  return finish(out);
}

/** sum / mean / max over axes. */
export function reduce(op: string, x: Tensor, axes: readonly number[], keepDims: boolean): Tensor {
  const keptShape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const outShape = keepDims ? keptShape : x.shape.filter((_d, i) => !axes.includes(i));
  const out = alloc(x.dtype, outShape);
  if (x.data instanceof BigInt64Array) return reduce64(op, x, out, axes);
  const n = out.data.length;
  const acc = new Float64Array(n).fill(op === 'max' ? -Infinity : 0);
  const count = x.shape.reduce((p, d, i) => (axes.includes(i) ? p * d : p), 1);
  // map every input element to its output slot
  const outStr = stridesOf(keptShape);
  const rank = x.shape.length;
  const idx = new Array<number>(rank).fill(0);
  let off = 0;
  const a = nums(x);
  for (let k = 0; k < a.length; k++) {
    const v = a[k];
    if (op === 'max') {
      if (v > acc[off] || Number.isNaN(v)) acc[off] = v;
    } else acc[off] += v;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      if (!axes.includes(d)) off += outStr[d];
      if (idx[d] < x.shape[d]) break;
      if (!axes.includes(d)) off -= outStr[d] * idx[d];
      idx[d] = 0;
    }
  }
  for (let i = 0; i < n; i++) out.data[i] = op === 'mean' ? acc[i] / count : acc[i];
  return finish(out);
}

/** sum / max of i64 values (wrapping sums), into `out`. */
function reduce64(op: string, x: Tensor, out: Tensor, axes: readonly number[]): Tensor {
  if (op !== 'sum' && op !== 'max') throw new InputError(`reduction '${op}' cannot take i64 values`);
  const o = out.data as BigInt64Array;
  if (op === 'max') o.fill(INT64_MIN);
  const keptShape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const outStr = stridesOf(keptShape);
  const rank = x.shape.length;
  const idx = new Array<number>(rank).fill(0);
  let off = 0;
  const a = x.data as BigInt64Array;
  for (let k = 0; k < a.length; k++) {
    o[off] = op === 'max' ? (a[k] > o[off] ? a[k] : o[off]) : BigInt.asIntN(64, o[off] + a[k]);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      if (!axes.includes(d)) off += outStr[d];
      if (idx[d] < x.shape[d]) break;
      if (!axes.includes(d)) off -= outStr[d] * idx[d];
      idx[d] = 0;
    }
  }
  return out;
}

function outerInner(shape: readonly number[], axis: number): [number, number, number] {
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  return [outer, shape[axis], inner];
}

/** Softmax along an axis (max-subtracted, float64). */
export function softmax(x: Tensor, axis: number): Tensor {
  const [outer, len, inner] = outerInner(x.shape, axis);
  const out = alloc(x.dtype, x.shape);
  const a = nums(x);
  const o = out.data;
  const e = new Float64Array(len);
  for (let p = 0; p < outer; p++)
    for (let q = 0; q < inner; q++) {
      const base = p * len * inner + q;
      let mx = -Infinity;
      for (let i = 0; i < len; i++) mx = Math.max(mx, a[base + i * inner]);
      let sum = 0;
      for (let i = 0; i < len; i++) sum += e[i] = mx === -Infinity ? 0 : Math.exp(a[base + i * inner] - mx);
      for (let i = 0; i < len; i++) o[base + i * inner] = sum > 0 ? e[i] / sum : NaN;
    }
  return finish(out);
}

/** RMSNorm over the last axis: `w * x / sqrt(mean(x²) + eps)` (as run.c: scale computed once per row, in float32). */
export function rmsnorm(x: Tensor, w: Tensor, eps: number): Tensor {
  const d = x.shape[x.shape.length - 1];
  const rows = x.data.length / Math.max(d, 1);
  const out = alloc(x.dtype, x.shape);
  const a = nums(x);
  const o = out.data;
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < d; i++) ss += a[r * d + i] * a[r * d + i];
    const scale = Math.fround(1 / Math.sqrt(Math.fround(Math.fround(ss / d) + eps)));
    for (let i = 0; i < d; i++) o[r * d + i] = nums(w)[i] * Math.fround(scale * a[r * d + i]);
  }
  return finish(out);
}

/**
 * What a quantized KV cache reads back of `x` (f32): each vector along the last axis quantized with its own scale and
 * dequantized (the semantics of `src/ir/kv-cache-quant.ts`, which the WebGPU KV-cache kernels implement).
 */
export function kvQuantize(x: Tensor, dtype: QuantizedKvDType): Tensor {
  if (x.dtype !== 'f32') throw new InputError(`kv_quantize takes f32, got ${x.dtype}`);
  const d = x.shape[x.shape.length - 1];
  const data = Float32Array.from(x.data as Float32Array);
  if (d > 0) fakeQuantizeKvRows(data, 0, data.length / d, d, dtype);
  return new Tensor('f32', [...x.shape], data);
}

/** LayerNorm over the last axis. */
export function layernorm(x: Tensor, w: Tensor, b: Tensor | undefined, eps: number): Tensor {
  const d = x.shape[x.shape.length - 1];
  const rows = x.data.length / Math.max(d, 1);
  const out = alloc(x.dtype, x.shape);
  const a = nums(x);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += a[r * d + i];
    mean /= d;
    let v = 0;
    for (let i = 0; i < d; i++) v += (a[r * d + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / d + eps);
    for (let i = 0; i < d; i++) out.data[r * d + i] = (a[r * d + i] - mean) * inv * nums(w)[i] + (b ? nums(b)[i] : 0);
  }
  return finish(out);
}

/** The i32 vector `[0, 1, …, n - 1]`; a negative n (a symbolic length evaluated below zero) is an {@link InputError}. */
export function range(n: number): Tensor {
  if (!Number.isInteger(n) || n < 0) throw new InputError(`range length ${n} is not a non-negative integer`);
  return new Tensor('i32', [n], Int32Array.from({ length: n }, (_v, i) => i));
}

/** Rotary embedding of x `[B, S, H, D]` at positions `[S]` or `[B, S]` (float32 angles, as run.c). */
export function rope(x: Tensor, pos: Tensor, theta: number, style: string, rotaryDim: number): Tensor {
  const [B, S, H, D] = x.shape;
  const out = new Tensor(x.dtype, x.shape, Float32Array.from(x.data as Float32Array));
  const o = out.data as Float32Array;
  const half = rotaryDim / 2;
  const cos = new Float32Array(half);
  const sin = new Float32Array(half);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++) {
      const p = pos.shape.length === 1 ? nums(pos)[s] : nums(pos)[(pos.shape[0] === 1 ? 0 : b) * S + s];
      for (let i = 0; i < half; i++) {
        const val = Math.fround(p * ropeFrequency(theta, i, rotaryDim));
        cos[i] = Math.cos(val);
        sin[i] = Math.sin(val);
      }
      for (let h = 0; h < H; h++) {
        const base = ((b * S + s) * H + h) * D;
        for (let i = 0; i < half; i++) {
          const [i0, i1] = style === 'half' ? [base + i, base + i + half] : [base + 2 * i, base + 2 * i + 1];
          const v0 = o[i0];
          const v1 = o[i1];
          o[i0] = Math.fround(v0 * cos[i]) - Math.fround(v1 * sin[i]);
          o[i1] = Math.fround(v0 * sin[i]) + Math.fround(v1 * cos[i]);
        }
      }
    }
  return finish(out);
}

/** Axis permutation. */
export function transpose(x: Tensor, perm: readonly number[]): Tensor {
  const shape = perm.map((p) => x.shape[p]);
  const out = alloc(x.dtype, shape);
  const inStr = stridesOf(x.shape);
  const st = perm.map((p) => inStr[p]);
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  let off = 0;
  const a = x.data;
  const o = out.data;
  for (let k = 0; k < o.length; k++) {
    o[k] = a[off];
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      off += st[d];
      if (idx[d] < shape[d]) break;
      off -= st[d] * idx[d];
      idx[d] = 0;
    }
  }
  return out;
}

/** Concatenation along an axis. */
export function concat(xs: readonly Tensor[], axis: number): Tensor {
  const shape = [...xs[0].shape];
  shape[axis] = xs.reduce((a, t) => a + t.shape[axis], 0);
  const out = alloc(xs[0].dtype, shape);
  const [outer, , inner] = outerInner(shape, axis);
  let at = 0;
  for (const t of xs) {
    const chunk = t.shape[axis] * inner;
    for (let p = 0; p < outer; p++) out.data.set(t.data.subarray(p * chunk, (p + 1) * chunk) as never, p * shape[axis] * inner + at * inner);
    at += t.shape[axis];
  }
  return out;
}

/** Strided slice with already-resolved (evaluated, clamped) starts and ends. */
export function slice(x: Tensor, axes: readonly number[], starts: readonly number[], ends: readonly number[], steps: readonly number[]): Tensor {
  const rank = x.shape.length;
  const st = new Array<number>(rank).fill(0);
  const sp = new Array<number>(rank).fill(1);
  const shape = [...x.shape];
  axes.forEach((ax, i) => {
    const dim = x.shape[ax];
    const step = steps[i];
    // clamp again against the runtime dim (symbolic bounds were evaluated by the caller)
    const s = Math.min(Math.max(starts[i], step > 0 ? 0 : -1), step > 0 ? dim : dim - 1);
    const e = Math.min(Math.max(ends[i], step > 0 ? 0 : -1), step > 0 ? dim : dim - 1);
    st[ax] = s;
    sp[ax] = step;
    shape[ax] = step > 0 ? Math.max(0, Math.ceil((e - s) / step)) : Math.max(0, Math.ceil((s - e) / -step));
  });
  const out = alloc(x.dtype, shape);
  const inStr = stridesOf(x.shape);
  const idx = new Array<number>(rank).fill(0);
  const o = out.data;
  for (let k = 0; k < o.length; k++) {
    let off = 0;
    for (let d = 0; d < rank; d++) off += (st[d] + idx[d] * sp[d]) * inStr[d];
    o[k] = x.data[off];
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/** Gather along an axis (negative indices count from the end; out-of-range ones are an {@link InputError}). */
export function gather(x: Tensor, indices: Tensor, axis: number, what = 'gather'): Tensor {
  const [outer, len, inner] = outerInner(x.shape, axis);
  const shape = [...x.shape.slice(0, axis), ...indices.shape, ...x.shape.slice(axis + 1)];
  const out = alloc(x.dtype, shape);
  const ni = indices.data.length;
  for (let p = 0; p < outer; p++)
    for (let j = 0; j < ni; j++) {
      let ix = Number(indices.data[j]);
      if (ix < 0) ix += len;
      if (ix < 0 || ix >= len) throw new InputError(`${what}: index ${indices.data[j]} is out of range for a dim of ${len}`);
      const src = (p * len + ix) * inner;
      out.data.set(x.data.subarray(src, src + inner) as never, (p * ni + j) * inner);
    }
  return out;
}

/** Broadcast to a shape. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const outShape = broadcast('expand', [x.shape, shape]);
  const out = alloc(x.dtype, outShape);
  const off = broadcastOffsets(outShape, x.shape);
  for (let i = 0; i < out.data.length; i++) out.data[i] = x.data[off ? off[i] : i];
  return out;
}

/**
 * The softmax rows of attention: for every batch `b`, query head `h` (reading KV head `hk`) and query `i`, `visit`
 * gets the unnormalized weights `exp(score_j − max)` of the `T` keys (0 where masked; all 0 when the query sees no key)
 * and their sum, in float64. Scores are `q · k · scale` with GQA grouping, bottom-right-aligned causal masking and the
 * optional mask broadcast to `[B, Hq, S, T]` (added, or for bool selecting). `weights` is reused between calls.
 */
function forEachSoftmaxRow(
  q: Tensor,
  k: Tensor,
  mask: Tensor | undefined,
  causal: boolean,
  scale: number,
  visit: (b: number, h: number, hk: number, i: number, weights: Float64Array, sum: number) => void,
): void {
  const [B, S, Hq, D] = q.shape;
  const [, T, Hkv] = k.shape;
  const group = Hq / Hkv;
  const mOff = mask ? broadcastOffsets([B, Hq, S, T], mask.shape) : null;
  const scores = new Float64Array(T);
  const qd = nums(q);
  const kd = nums(k);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < S; i++) {
        const qb = ((b * S + i) * Hq + h) * D;
        let mx = -Infinity;
        for (let j = 0; j < T; j++) {
          let sc: number;
          if (causal && j > i + (T - S)) sc = -Infinity;
          else {
            let dot = 0;
            const kb = ((b * T + j) * Hkv + hk) * D;
            for (let d = 0; d < D; d++) dot += qd[qb + d] * kd[kb + d];
            sc = dot * scale;
            if (mask) {
              const flat = ((b * Hq + h) * S + i) * T + j;
              const mv = nums(mask)[mOff ? mOff[flat] : flat];
              if (mask.dtype === 'bool') sc = mv ? sc : -Infinity;
              else sc += mv;
            }
          }
          scores[j] = sc;
          if (sc > mx) mx = sc;
        }
        let sum = 0;
        for (let j = 0; j < T; j++) sum += scores[j] = mx === -Infinity ? 0 : Math.exp(scores[j] - mx);
        visit(b, h, hk, i, scores, sum);
      }
    }
}

/**
 * Attention over `[B, S, H, D]` tensors: GQA head grouping, bottom-right-aligned causal masking, optional additive or
 * boolean mask broadcast to `[B, Hq, S, T]`; float64 softmax and accumulation.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | undefined, causal: boolean, scale: number): Tensor {
  const [B, S, Hq] = q.shape;
  const [, T, Hkv] = k.shape;
  const Dv = v.shape[3];
  const out = alloc(q.dtype, [B, S, Hq, Dv]);
  const acc = new Float64Array(Dv);
  const vd = nums(v);
  forEachSoftmaxRow(q, k, mask, causal, scale, (b, h, hk, i, weights, sum) => {
    acc.fill(0);
    for (let j = 0; j < T; j++) {
      const p = weights[j];
      if (p === 0) continue;
      const vb = ((b * T + j) * Hkv + hk) * Dv;
      for (let d = 0; d < Dv; d++) acc[d] += p * vd[vb + d];
    }
    const ob = ((b * S + i) * Hq + h) * Dv;
    for (let d = 0; d < Dv; d++) out.data[ob + d] = sum > 0 ? acc[d] / sum : 0;
  });
  return finish(out);
}

/**
 * The attention mass each key receives: for `[B, S, H, D]` queries and `[B, T, Hkv, D]` keys (GQA grouping,
 * bottom-right-aligned causal masking and the optional mask as in {@link attention}), the softmax weight of key `j`
 * summed over batch, query heads and queries, in float64; `T` entries. H2O eviction ranks cached blocks by it.
 */
export function attentionKeyMass(q: Tensor, k: Tensor, mask: Tensor | undefined, causal: boolean, scale: number): Float64Array {
  const mass = new Float64Array(k.shape[1]);
  forEachSoftmaxRow(q, k, mask, causal, scale, (_b, _h, _hk, _i, weights, sum) => {
    if (sum > 0) for (let j = 0; j < mass.length; j++) mass[j] += weights[j] / sum;
  });
  return mass;
}

/** A tensor filled from an inline constant (splat or full). */
export function constant(dtype: DType, shape: readonly number[], values: readonly number[]): Tensor {
  const T = arrayTypeFor(dtype);
  const n = shape.reduce((a, b) => a * b, 1);
  if (dtype === 'i64') {
    const v = new BigInt64Array(n);
    if (values.length === 1) v.fill(BigInt(values[0]));
    else for (let i = 0; i < n; i++) v[i] = BigInt(values[i]);
    return new Tensor(dtype, shape, v);
  }
  const data = new T(n) as Exclude<TensorData, BigInt64Array>;
  if (values.length === 1) data.fill(values[0]);
  else for (let i = 0; i < n; i++) data[i] = values[i];
  return finish(new Tensor(dtype, shape, data));
}
