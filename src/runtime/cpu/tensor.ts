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

/** The typed array holding a tensor's elements: f32 and f16 values in a Float32Array (f16 values rounded to half). */
export type TensorData = Float32Array | Int32Array | Uint32Array | Uint8Array;

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
  /** A tensor from numbers (converted to the dtype; f16 rounded to half precision). */
  static from(dtype: DType, shape: readonly number[], values: ArrayLike<number>): Tensor {
    const T = arrayTypeFor(dtype);
    const data = new T(values.length);
    for (let i = 0; i < values.length; i++) data[i] = values[i];
    if (dtype === 'f16') roundToHalf(data as Float32Array);
    return new Tensor(dtype, shape, data);
  }
  /** Number of elements. */
  get size(): number {
    return this.data.length;
  }
  /** Same data, new shape (no copy). */
  reshape(shape: readonly number[]): Tensor {
    return new Tensor(this.dtype, shape, this.data);
  }
  /** Elements as plain numbers. */
  toArray(): number[] {
    return Array.from(this.data as ArrayLike<number>);
  }
}

/**
 * The typed-array constructor used for a dtype on the host.
 * @internal
 */
export function arrayTypeFor(dtype: DType): Float32ArrayConstructor | Int32ArrayConstructor | Uint32ArrayConstructor | Uint8ArrayConstructor {
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
 * The dense weight payload holding a host tensor's values as `dtype` (f16 as half bits, other dtypes as they are).
 * @internal
 */
export function weightPayload(dtype: DType, t: Tensor): WeightArray {
  if (dtype !== 'f16') return t.data;
  return Uint16Array.from(t.data, (v) => floatToHalf(v));
}
