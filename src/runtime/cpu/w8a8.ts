/**
 * The reference arithmetic of a W8A8 matmul (`matmul` with `actQuant`), which the WebGPU kernels reproduce:
 *
 * 1. each row `m` of A gets a scale `s_a`: the calibrated per-tensor scale, or per token `max_k |A[m, k]| / 127`
 *    (f32; a row of zeros has scale 0 and quantizes to zeros). Its integers are
 *    `q_a = clamp(round(f32(A[m, k] · inv)), −127, 127)` with `inv = f32(1 / s_a)` (per token: `f32(127 / max)`),
 *    rounding half to even as WGSL's `round` does;
 * 2. B `[N, K]` is int8 per output channel, symmetric: the stored integers and scales when the weight is stored so
 *    (8-bit, signed, one group per row, no zero point), otherwise rounded here as `quantizeWeight` does
 *    (`s_w = max|row| / 127`);
 * 3. `acc = Σ_k q_a · q_w` in 32-bit integers, and `out = f32(f32(acc) · f32(s_a · s_w[n]))`.
 * @module
 */
import { InputError } from '../../errors.js';
import type { ActivationQuant } from '../../ir/attrs.js';
import { quantizeWeight, unpackBits, type WeightEntry } from '../../ir/weights.js';
import { roundToHalf, Tensor } from './tensor.js';

/** An int8 weight per output channel: integers row-major `[N, K]` and one scale per row. */
export interface Int8Weight {
  /** Rows (output channels). */
  readonly n: number;
  /** Columns (K). */
  readonly k: number;
  /** Integers, row-major `[N, K]`. */
  readonly q: Int8Array;
  /** One f32 scale per row. */
  readonly scales: Float32Array;
}

/** Whether a weight entry is stored as int8 per output channel, symmetric (`[N, K]`, one group per row of K). */
export function isInt8PerChannel(e: Pick<WeightEntry, 'encoding' | 'shape'>): boolean {
  const enc = e.encoding;
  return e.shape.length === 2 && enc.kind === 'quantized' && enc.bits === 8 && enc.signed && !enc.hasZeroPoint && !enc.hasMin && enc.groupSize === e.shape[1] && enc.scaleDType === 'f32';
}

/** The stored integers and scales of an int8 per-channel weight entry ({@link isInt8PerChannel}). */
export function int8WeightOfEntry(e: WeightEntry): Int8Weight {
  if (!isInt8PerChannel(e)) throw new InputError(`weight '${e.name}' is not stored as int8 per output channel`);
  const [n, k] = e.shape;
  const packed = e.data.packed as Uint8Array;
  const q = new Int8Array(n * k);
  for (let i = 0; i < n * k; i++) q[i] = (unpackBits(packed, i, 8) << 24) >> 24;
  return { n, k, q, scales: Float32Array.from(e.data.scales.subarray(0, n)) };
}

/** B's values rounded to int8 per output channel (`[N, K]` when `transB`, else `[K, N]`), as `quantizeWeight` rounds. */
export function int8WeightOfValues(b: Tensor, transB: boolean): Int8Weight {
  const [r, c] = b.shape;
  const [n, k] = transB ? [r, c] : [c, r];
  const src = b.numbers;
  const rows = new Float32Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) rows[i * k + j] = transB ? src[i * k + j] : src[j * n + i];
  return int8WeightOfEntry(quantizeWeight('w8a8', [n, k], rows, { bits: 8, groupSize: k }));
}

/** Rounds half to even (WGSL's `round`). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The scale and reciprocal a row of `k` activations at `at` is quantized with. */
export function activationScale(a: ArrayLike<number>, at: number, k: number, q: ActivationQuant): { scale: number; inv: number } {
  if (q.scale !== 'per-token') return { scale: Math.fround(q.scale), inv: Math.fround(1 / q.scale) };
  let max = 0;
  for (let i = 0; i < k; i++) max = Math.max(max, Math.abs(a[at + i]));
  return max > 0 ? { scale: Math.fround(max / 127), inv: Math.fround(127 / max) } : { scale: 0, inv: 0 };
}

/** One activation rounded to int8 with reciprocal scale `inv`. */
export function quantizeActivation(x: number, inv: number): number {
  return Math.min(127, Math.max(-127, roundHalfEven(Math.fround(x * inv))));
}

/**
 * The W8A8 product of A `[..., M, K]` and B (see the module comment); `w` is B as int8 (from its stored encoding or
 * {@link int8WeightOfValues}). The result has A's dtype.
 */
export function w8a8Matmul(a: Tensor, w: Int8Weight, q: ActivationQuant): Tensor {
  const K = a.shape[a.shape.length - 1];
  if (K !== w.k) throw new InputError(`W8A8 matmul: A has ${K} columns, B ${w.k}`);
  const rows = a.shape.slice(0, -1).reduce((x, y) => x * y, 1);
  const out = Tensor.zeros(a.dtype, [...a.shape.slice(0, -1), w.n]);
  const src = a.numbers;
  const o = out.numbers;
  const qa = new Int32Array(K);
  for (let m = 0; m < rows; m++) {
    const { scale, inv } = activationScale(src, m * K, K, q);
    for (let k = 0; k < K; k++) qa[k] = quantizeActivation(src[m * K + k], inv);
    for (let n = 0; n < w.n; n++) {
      let acc = 0;
      const base = n * K;
      for (let k = 0; k < K; k++) acc += qa[k] * w.q[base + k];
      o[m * w.n + n] = Math.fround(Math.fround(acc) * Math.fround(scale * w.scales[n]));
    }
  }
  if (out.dtype === 'f16') roundToHalf(o as Float32Array);
  return out;
}
