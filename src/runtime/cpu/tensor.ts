/**
 * Host tensors: a dtype, a static shape and a typed array. The reference backend computes on these; the CLI and the
 * WebGPU runtime use them to pass inputs and read outputs.
 * @module
 */
import type { DType } from '../../ir/dtype.js';
import { InputError } from '../../errors.js';
import { floatToHalf, halfToFloat, type WeightArray } from '../../ir/weights.js';

// defined in the IR (the compiler needs it too); re-exported for the runtime entry point
export { stridesOf } from '../../ir/dim.js';

/**
 * The typed array holding a tensor's elements: f32 and f16 values in a Float32Array (f16 values rounded to half), i64
 * values in a BigInt64Array (exact).
 */
export type TensorData = Float32Array | Int32Array | Uint32Array | Uint8Array | BigInt64Array;

/** A host tensor. */
export class Tensor {
  /** Element type. */
  readonly dtype: DType;
  /** Static shape. */
  readonly shape: readonly number[];
  /** Elements, row-major. */
  readonly data: TensorData;
  constructor(dtype: DType, shape: readonly number[], data: TensorData) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new InputError(`tensor of shape [${shape}] needs ${n} elements, got ${data.length}`);
    const want = arrayTypeFor(dtype);
    if (!(data instanceof want)) throw new InputError(`a ${dtype} tensor needs a ${want.name}, got ${data.constructor.name}`);
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.data = data;
  }
  /** A zero-filled tensor. */
  static zeros(dtype: DType, shape: readonly number[]): Tensor {
    const T = arrayTypeFor(dtype);
    return new Tensor(dtype, shape, new T(shape.reduce((a, b) => a * b, 1)));
  }
  /**
   * A tensor from numbers (converted to the dtype; f16 rounded to half precision). An i64 tensor takes integers
   * (numbers, exact up to 2^53, or bigints, wrapped to 64 bits).
   */
  static from(dtype: DType, shape: readonly number[], values: ArrayLike<number> | ArrayLike<bigint>): Tensor {
    if (dtype === 'i64') {
      const data = new BigInt64Array(values.length);
      for (let i = 0; i < values.length; i++) data[i] = toBigInt64(values[i]);
      return new Tensor(dtype, shape, data);
    }
    const T = arrayTypeFor(dtype);
    const data = new T(values.length) as Exclude<TensorData, BigInt64Array>;
    for (let i = 0; i < values.length; i++) data[i] = Number(values[i]);
    if (dtype === 'f16') roundToHalf(data as Float32Array);
    return new Tensor(dtype, shape, data);
  }
  /**
   * The elements of a tensor of any dtype but i64, as numbers (the same array as {@link Tensor.data}); an i64 tensor
   * is an {@link InputError} (read its BigInt64Array from `data`).
   */
  get numbers(): Exclude<TensorData, BigInt64Array> {
    if (this.data instanceof BigInt64Array) throw new InputError(`an i64 tensor [${this.shape}] holds bigints: read its data, not numbers`);
    return this.data;
  }
  /** Number of elements. */
  get size(): number {
    return this.data.length;
  }
  /** Same data, new shape (no copy). */
  reshape(shape: readonly number[]): Tensor {
    return new Tensor(this.dtype, shape, this.data);
  }
  /** Elements as plain numbers (i64 values beyond ±2^53 are rounded: read {@link Tensor.data} to keep them exact). */
  toArray(): number[] {
    return Array.from(this.data as ArrayLike<number | bigint>, Number);
  }
}

/**
 * An integer as the int64 it stands for: a bigint wrapped to 64 bits, a number truncated toward zero (NaN and
 * infinities, which no int64 holds, are an {@link InputError}).
 * @internal
 */
export function toBigInt64(v: number | bigint): bigint {
  if (typeof v === 'bigint') return BigInt.asIntN(64, v);
  if (!Number.isFinite(v)) throw new InputError(`${v} is not an int64 value`);
  return BigInt.asIntN(64, BigInt(Math.trunc(v)));
}

/**
 * The typed-array constructor used for a dtype on the host.
 * @internal
 */
export function arrayTypeFor(dtype: DType): Float32ArrayConstructor | Int32ArrayConstructor | Uint32ArrayConstructor | Uint8ArrayConstructor | BigInt64ArrayConstructor {
  switch (dtype) {
    case 'f32':
    case 'f16':
      return Float32Array;
    case 'i32':
      return Int32Array;
    case 'u32':
      return Uint32Array;
    case 'bool':
      return Uint8Array;
    case 'i64':
      return BigInt64Array;
  }
}

/**
 * Rounds every element to the nearest half-precision value, in place.
 * @internal
 */
export function roundToHalf(a: Float32Array): Float32Array {
  for (let i = 0; i < a.length; i++) a[i] = halfToFloat(floatToHalf(a[i]));
  return a;
}

/**
 * The dense weight payload holding a host tensor's values as `dtype` (f16 as half bits, i64 as word pairs, other
 * dtypes as they are).
 * @internal
 */
export function weightPayload(dtype: DType, t: Tensor): WeightArray {
  if (t.data instanceof BigInt64Array) return new Int32Array(BigInt64Array.from(t.data).buffer); // two words per element, low first
  if (dtype !== 'f16') return t.data;
  return Uint16Array.from(t.data, (v) => floatToHalf(v));
}

/**
 * A tensor's elements as the numbers an inline `constant` holds, or `undefined` when it cannot hold them exactly (i64
 * values beyond ±2^53, which belong in the weight store).
 * @internal
 */
export function inlineValues(t: Tensor): number[] | undefined {
  if (!(t.data instanceof BigInt64Array)) return Array.from(t.data);
  const out: number[] = [];
  for (const v of t.data) {
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) return undefined;
    out.push(Number(v));
  }
  return out;
}

/**
 * `t` as the value of a graph input of dtype `want`: itself, or for an i64 input an i32 tensor widened exactly (so
 * int64 inputs may be given as Int32Array data when their values fit).
 * @internal
 */
export function asInputDType(t: Tensor, want: DType): Tensor {
  if (want === 'i64' && t.dtype === 'i32') return new Tensor('i64', t.shape, BigInt64Array.from(t.data as Int32Array, (v) => BigInt(v)));
  return t;
}
