/**
 * GGUF constants: metadata value types and ggml tensor types with their block layouts (as in ggml's `ggml.h` and
 * `ggml-common.h`; numbers of removed types are left out).
 * @module
 */

/** GGUF metadata value types. */
export const GgufValueType = {
  /** `uint8_t`. */
  UINT8: 0,
  /** `int8_t`. */
  INT8: 1,
  /** `uint16_t`. */
  UINT16: 2,
  /** `int16_t`. */
  INT16: 3,
  /** `uint32_t`. */
  UINT32: 4,
  /** `int32_t`. */
  INT32: 5,
  /** `float`. */
  FLOAT32: 6,
  /** One byte, 0 or 1. */
  BOOL: 7,
  /** `uint64_t` length + UTF-8 bytes. */
  STRING: 8,
  /** `uint32_t` element type + `uint64_t` count + elements. */
  ARRAY: 9,
  /** `uint64_t`. */
  UINT64: 10,
  /** `int64_t`. */
  INT64: 11,
  /** `double`. */
  FLOAT64: 12,
} as const;

/** A GGUF metadata value type number. */
export type GgufValueTypeId = (typeof GgufValueType)[keyof typeof GgufValueType];

/**
 * Fixed byte sizes of the scalar value types (strings and arrays are variable).
 * @internal
 */
export const GGUF_SCALAR_BYTES: Readonly<Record<number, number>> = Object.freeze({ 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 });

/** A ggml tensor type: its name, elements per block and bytes per block. */
export interface GgmlTypeInfo {
  /** ggml's name (`Q4_0`, `F16`, …). */
  readonly name: string;
  /** Elements per block (1 for plain types). */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
}

/**
 * Every ggml tensor type a GGUF file may hold, by type number.
 * @internal
 */
export const GGML_TYPES: ReadonlyMap<number, GgmlTypeInfo> = new Map(
  (
    [
      [0, 'F32', 1, 4],
      [1, 'F16', 1, 2],
      [2, 'Q4_0', 32, 18],
      [3, 'Q4_1', 32, 20],
      [6, 'Q5_0', 32, 22],
      [7, 'Q5_1', 32, 24],
      [8, 'Q8_0', 32, 34],
      [9, 'Q8_1', 32, 36],
      [10, 'Q2_K', 256, 84],
      [11, 'Q3_K', 256, 110],
      [12, 'Q4_K', 256, 144],
      [13, 'Q5_K', 256, 176],
      [14, 'Q6_K', 256, 210],
      [15, 'Q8_K', 256, 292],
      [16, 'IQ2_XXS', 256, 66],
      [17, 'IQ2_XS', 256, 74],
      [18, 'IQ3_XXS', 256, 98],
      [19, 'IQ1_S', 256, 50],
      [20, 'IQ4_NL', 32, 18],
      [21, 'IQ3_S', 256, 110],
      [22, 'IQ2_S', 256, 82],
      [23, 'IQ4_XS', 256, 136],
      [24, 'I8', 1, 1],
      [25, 'I16', 1, 2],
      [26, 'I32', 1, 4],
      [27, 'I64', 1, 8],
      [28, 'F64', 1, 8],
      [29, 'IQ1_M', 256, 56],
      [30, 'BF16', 1, 2],
      [34, 'TQ1_0', 256, 54],
      [35, 'TQ2_0', 256, 66],
      [39, 'MXFP4', 32, 17],
    ] as const
  ).map(([id, name, blockSize, typeSize]) => [id, Object.freeze({ name, blockSize, typeSize })]),
);

/** ggml type numbers by name, for the types the loader maps. */
export const GgmlType = {
  /** float32. */
  F32: 0,
  /** IEEE half. */
  F16: 1,
  /** 32-element blocks: f16 scale, 4-bit quants, value `(q - 8) * d`. */
  Q4_0: 2,
  /** 32-element blocks: f16 scale and min, 4-bit quants, value `q * d + m`. */
  Q4_1: 3,
  /** 32-element blocks: f16 scale, 5-bit quants, value `(q - 16) * d`. */
  Q5_0: 6,
  /** 32-element blocks: f16 scale and min, 5-bit quants, value `q * d + m`. */
  Q5_1: 7,
  /** 32-element blocks: f16 scale, int8 quants, value `q * d`. */
  Q8_0: 8,
  /** 256-element super-blocks of 8 × 32: 6-bit scales and mins, 4-bit quants, value `d·sc·q − dmin·m`. */
  Q4_K: 12,
  /** 256-element super-blocks of 8 × 32: 6-bit scales and mins, 5-bit quants. */
  Q5_K: 13,
  /** 256-element super-blocks of 16 × 16: int8 scales, 6-bit quants, value `d·sc·(q − 32)`. */
  Q6_K: 14,
  /** bfloat16. */
  BF16: 30,
} as const;
