/**
 * Element types of tensors in the IR.
 *
 * A tensor's *logical* dtype (what its elements mean to the maths) is one of {@link DType}. How a weight is *stored*
 * (packed integers with scales, a codebook, a sparse layout) is a separate {@link WeightEncoding} in `weights.ts`, so
 * quantized and sparse weights flow through the graph as ordinary f32/f16 tensors whose bytes a kernel decodes.
 * @module
 */

/** Logical element types a graph value can have. */
export type DType = 'f32' | 'f16' | 'i32' | 'u32' | 'bool';

/** Every logical dtype, in a fixed order. */
export const DTYPES: readonly DType[] = ['f32', 'f16', 'i32', 'u32', 'bool'];

/** True for the floating-point dtypes. */
export function isFloat(dtype: DType): boolean {
  return dtype === 'f32' || dtype === 'f16';
}

/** True for the integer dtypes (not bool). */
export function isInteger(dtype: DType): boolean {
  return dtype === 'i32' || dtype === 'u32';
}

/** Bytes one element occupies in a GPU buffer (bool is stored as a u32 there). */
export function byteSize(dtype: DType): number {
  return dtype === 'f16' ? 2 : 4;
}

/** True when `s` names a logical dtype. */
export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && (DTYPES as readonly string[]).includes(s);
}
