/**
 * Element types of tensors in the IR.
 *
 * A tensor's *logical* dtype (what its elements mean to the maths) is one of {@link DType}. How a weight is *stored*
 * (packed integers with scales, a codebook, a sparse layout) is a separate {@link WeightEncoding} in `weights.ts`, so
 * quantized and sparse weights flow through the graph as ordinary f32/f16 tensors whose bytes a kernel decodes.
 * @module
 */

/**
 * Logical element types a graph value can have. `i64` is a signed 64-bit integer held exactly: a BigInt64Array on
 * the host, a pair of u32 words (low, high) on the GPU, which has no 64-bit integers.
 */
export type DType = 'f32' | 'f16' | 'i32' | 'u32' | 'bool' | 'i64';

/** Every logical dtype, in a fixed order. */
export const DTYPES: readonly DType[] = ['f32', 'f16', 'i32', 'u32', 'bool', 'i64'];

/** True for the floating-point dtypes. */
export function isFloat(dtype: DType): boolean {
  return dtype === 'f32' || dtype === 'f16';
}

/** True for the integer dtypes (not bool). */
export function isInteger(dtype: DType): boolean {
  return dtype === 'i32' || dtype === 'u32' || dtype === 'i64';
}

/** Bytes one element occupies in a GPU buffer (bool is stored as a u32 there, i64 as two u32 words). */
export function byteSize(dtype: DType): number {
  return dtype === 'f16' ? 2 : dtype === 'i64' ? 8 : 4;
}

/** True when `s` names a logical dtype. */
export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && (DTYPES as readonly string[]).includes(s);
}
