/**
 * Reading quantized weights in WGSL, shared by every kernel that dequantizes in registers (the dequantizing matmuls,
 * the quantized embedding lookup). A {@link QuantizedEncoding}'s payload parts are bound as storage arrays —
 * `packed` as `u32` words (the store packs integers little-endian in bytes, so word `w` holds elements
 * `w·32/bits …` from the low bits up), `scales` f32, then `zeroPoints` i32 and `mins` f32 when the format has them —
 * and an element's value is `(q - zero_point) * scale - min` with its group's parameters, computed in f32.
 * @module
 */
import type { QuantizedEncoding } from '../ir/weights.js';
import type { KernelBinding } from './kernel.js';

/** How a quantized weight is stored (the {@link QuantizedEncoding} fields a kernel's text depends on). */
export interface DequantWeightFormat {
  /** Bits per stored integer. */
  readonly bits: 8 | 4 | 2;
  /** Whether the integers are two's complement. */
  readonly signed: boolean;
  /** Consecutive elements (row-major) sharing one scale: divides the last dim, or is the element count (one group). */
  readonly groupSize: number;
  /** Whether a zero point (i32) is stored per group. */
  readonly hasZeroPoint: boolean;
  /** Whether an offset (f32) is stored per group and subtracted after scaling. */
  readonly hasMin: boolean;
}

/** The format a kernel reads for a weight stored with `e`. */
export function dequantFormatOf(e: QuantizedEncoding): DequantWeightFormat {
  return { bits: e.bits, signed: e.signed, groupSize: e.groupSize, hasZeroPoint: e.hasZeroPoint, hasMin: !!e.hasMin };
}

/** The format in a kernel variant name: `s4-zp-min-g32` (signedness and bits, zero points, offsets, group size). */
export function dequantFormatTag(w: DequantWeightFormat): string {
  return `${w.signed ? 's' : 'u'}${w.bits}${w.hasZeroPoint ? '-zp' : ''}${w.hasMin ? '-min' : ''}-g${w.groupSize}`;
}

/** The payload parts a kernel binds for format `w`, in binding order (names as in the weight entry's `data`). */
export function dequantParts(w: DequantWeightFormat): string[] {
  return ['packed', 'scales', ...(w.hasZeroPoint ? ['zeroPoints'] : []), ...(w.hasMin ? ['mins'] : [])];
}

/** WGSL name, element type and comment of each payload part's binding. */
const PART_DECLS: Readonly<Record<string, { wgsl: string; type: string; comment: (w: DequantWeightFormat) => string }>> = {
  packed: { wgsl: 'packed', type: 'array<u32>', comment: (w) => `W's ${w.bits}-bit integers, little-endian in u32 words` },
  scales: { wgsl: 'scales', type: 'array<f32>', comment: () => 'one scale per group' },
  zeroPoints: { wgsl: 'zero_points', type: 'array<i32>', comment: () => 'one zero point per group' },
  mins: { wgsl: 'mins', type: 'array<f32>', comment: () => 'one offset per group' },
};

/** Appends the read-only bindings of the weight's parts ({@link dequantParts}) to `decls` and `list`, numbered on from `list`. */
export function addDequantBindings(w: DequantWeightFormat, decls: string[], list: KernelBinding[]): void {
  for (const b of dequantPartBindings(w)) {
    decls.push(`@group(0) @binding(${list.length}) var<storage, read> ${b.wgslName}: ${b.type}; // ${b.comment}`);
    list.push({ name: b.name, access: 'read' });
  }
}

/** The read-only bindings of the weight's payload parts, in binding order: launch name, WGSL name, type, comment. */
export function dequantPartBindings(w: DequantWeightFormat): { name: string; wgslName: string; type: string; comment: string }[] {
  return dequantParts(w).map((part) => {
    const d = PART_DECLS[part];
    return { name: part, wgslName: d.wgsl, type: d.type, comment: d.comment(w) };
  });
}

/** WGSL `q_at(word, shift) -> f32`: the integer at bit `shift` of a packed word (needs the `BITS` const). */
export function qAtFn(w: DequantWeightFormat): string[] {
  return [
    `// the ${w.bits}-bit integer at bit \`shift\` of a packed word, as f32${w.signed ? ' (sign-extended)' : ''}`,
    `fn q_at(word: u32, shift: u32) -> f32 {`,
    `  return f32(extractBits(${w.signed ? 'bitcast<i32>(word)' : 'word'}, shift, BITS));`,
    `}`,
  ];
}

/** WGSL `q_quad(word, t) -> vec4<f32>`: integers `4t .. 4t+3` of a packed word (needs the `BITS` const). */
export function qQuadFn(w: DequantWeightFormat): string[] {
  return [
    `// integers 4t .. 4t+3 of a packed word, as f32${w.signed ? ' (sign-extended)' : ''}`,
    `fn q_quad(word: u32, t: u32) -> vec4<f32> {`,
    `  let sh = vec4<u32>(0u, BITS, 2u * BITS, 3u * BITS) + vec4<u32>(t * 4u * BITS);`,
    w.signed
      ? `  return vec4<f32>((vec4<i32>(bitcast<i32>(word)) << (vec4<u32>(32u - BITS) - sh)) >> vec4<u32>(32u - BITS));`
      : `  return vec4<f32>((vec4<u32>(word) >> sh) & vec4<u32>(${(1 << w.bits) - 1}u));`,
    `}`,
  ];
}

/**
 * The WGSL expression dequantizing integer `q` (an f32 expression) with its group's scale, and zero point (as f32)
 * and offset when the format has them: `(q - zero_point) * scale - min`.
 */
export function dequantExpr(w: DequantWeightFormat, q: string, group: { scale: string; zeroPoint: string; min: string }): string {
  return `(${q}${w.hasZeroPoint ? ` - ${group.zeroPoint}` : ''}) * ${group.scale}${w.hasMin ? ` - ${group.min}` : ''}`;
}
