/**
 * WGSL text helpers shared by the kernel generators: type names, literals, identifier escaping, and the scalar
 * functions WGSL lacks (erf, GELU). Names that come from model files only ever reach WGSL through {@link wgslComment}
 * (which cannot break out of a comment); identifiers in generated WGSL are the generators' own.
 * @module
 */
import type { DType } from '../ir/dtype.js';
import type { Dim } from '../ir/dim.js';
import type { KernelParams } from './kernel.js';
import { SPECIAL_FUNCTION_HELPERS } from './wgsl-math.js';
import { I64_HELPER, I64_HELPER_SOURCE, I64_TYPE } from './wgsl-int64.js';

/** The WGSL storage element type of a dtype (bool is stored as u32, i64 as a `vec2<u32>` of low and high words). */
export function storageType(dtype: DType): string {
  switch (dtype) {
    case 'f32': return 'f32';
    case 'f16': return 'f16';
    case 'i32': return 'i32';
    case 'u32': return 'u32';
    case 'bool': return 'u32';
    case 'i64': return I64_TYPE;
  }
}

/** The WGSL type a value of `dtype` is computed in (f16 is computed in f32; bool as `bool`; i64 as `vec2<u32>`). */
export function computeType(dtype: DType): string {
  switch (dtype) {
    case 'f32':
    case 'f16': return 'f32';
    case 'i32': return 'i32';
    case 'u32': return 'u32';
    case 'bool': return 'bool';
    case 'i64': return I64_TYPE;
  }
}

/**
 * A WGSL literal of the compute type. Non-finite floats come out as calls of the `bits_f32` helper of
 * {@link WGSL_HELPERS} (include it when {@link usesBitsHelper} says so); they cannot be `const`.
 */
export function literal(dtype: DType, v: number): string {
  switch (computeType(dtype)) {
    case 'f32': {
      // WGSL rejects constant expressions that evaluate to a non-finite value: build those at run time
      if (Number.isNaN(v)) return 'tw_bits_f32(0x7fc00000u)';
      if (v === Infinity) return 'tw_bits_f32(0x7f800000u)';
      if (v === -Infinity) return 'tw_bits_f32(0xff800000u)';
      const f = Math.fround(v);
      // exact decimal of the f32 value, always with a decimal point or exponent
      let s = f.toPrecision(9);
      if (!/[.e]/.test(s)) s += '.0';
      return `f32(${s})`;
    }
    case 'i32': return `i32(${v | 0})`;
    case 'u32': return `${v >>> 0}u`;
    case I64_TYPE: {
      const b = BigInt.asUintN(64, BigInt(v));
      return `vec2<u32>(${b & 0xffffffffn}u, ${b >> 32n}u)`;
    }
    default: return v ? 'true' : 'false';
  }
}

/** Text safe to put inside a `//` comment (no newlines or control characters; at most 120 characters). */
export function wgslComment(text: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, ' ');
  return clean.length > 120 ? `${clean.slice(0, 117)}...` : clean;
}

/** A WebGPU feature that generated WGSL can need: `shader-f16` (`enable f16;`) or `subgroups` (`enable subgroups;`). */
export type KernelFeature = 'shader-f16' | 'subgroups';

/**
 * The features a kernel needs, in a fixed order (so equal kernels list them equally): `shader-f16` when it stores or
 * reads f16, `subgroups` when it uses subgroup operations. Set the result as {@link KernelSource.features} and emit
 * its {@link enableDirectives}: the WGSL and the declared features then cannot disagree.
 */
export function kernelFeatures(o: { readonly f16?: boolean; readonly subgroups?: boolean }): KernelFeature[] {
  return [...(o.f16 ? (['shader-f16'] as const) : []), ...(o.subgroups ? (['subgroups'] as const) : [])];
}

/** The WGSL `enable` directives of `features` (one line each: `enable f16;`, `enable subgroups;`). */
export function enableDirectives(features: readonly string[]): string[] {
  return features.map((f) => {
    if (f === 'shader-f16') return 'enable f16;';
    if (f === 'subgroups') return 'enable subgroups;';
    throw new Error(`no WGSL enable directive for feature '${f}'`);
  });
}

/** Whether WGSL text calls the `bits_f32` helper (a non-finite literal). */
export function usesBitsHelper(text: string): boolean {
  return text.includes('tw_bits_f32(');
}

/**
 * WGSL source of helper functions, by name, for generators to include when used: through {@link wgslHelperSources},
 * which adds the helpers a helper calls. `erf`, `gelu_erf` and `gelu_tanh` (and their building blocks `ff`, `erfc_ff`)
 * come from `wgsl-math.ts`.
 */
export const WGSL_HELPERS: Readonly<Record<string, string>> = {
  ...Object.fromEntries(Object.entries(SPECIAL_FUNCTION_HELPERS).map(([name, h]) => [name, h.source])),
  bits_f32: `// an f32 from its bits at run time (a constant expression may not be infinite or NaN)
fn tw_bits_f32(bits: u32) -> f32 { return bitcast<f32>(bits); }`,
  tanh: `fn tw_tanh(u: f32) -> f32 {
  let e = exp(-2.0 * abs(clamp(u, -15.0, 15.0)));
  return sign(u) * (1.0 - e) / (1.0 + e);
}`,
  [I64_HELPER]: I64_HELPER_SOURCE,
  sigmoid: `fn tw_sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }`,
  round_f16: `// x rounded to the nearest f16 value (ties to even), as an f32; |x| >= 65520 becomes ±inf, as IEEE 754 says.
// Integer arithmetic on the bits, because WGSL leaves f32 -> f16 rounding and overflow below 2^16 to the implementation.
fn tw_round_f16(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  let sign = b & 0x80000000u;
  let a = b & 0x7fffffffu;
  if (a >= 0x7f800000u) { return x; } // inf, NaN
  if (a >= 0x477ff000u) { return bitcast<f32>(sign | 0x7f800000u); } // >= 65520: overflows to inf
  if (a < 0x38800000u) { // below 2^-14: f16 subnormals, multiples of 2^-24 (scaling by 2^24 is exact; round() ties to even)
    return bitcast<f32>(sign | bitcast<u32>(round(bitcast<f32>(a) * 16777216.0) * 5.9604644775390625e-8));
  }
  let odd = (a >> 13u) & 1u;
  return bitcast<f32>(sign | ((a + 0x0fffu + odd) & 0xffffe000u));
}`,
};

/**
 * The sources of the named {@link WGSL_HELPERS} and of the helpers they call, each once, in one fixed order (so equal
 * kernels get byte-identical WGSL whatever order their helpers were asked for in).
 */
export function wgslHelperSources(names: Iterable<string>): string[] {
  const wanted = new Set<string>();
  const add = (name: string): void => {
    if (wanted.has(name)) return;
    if (!(name in WGSL_HELPERS)) throw new Error(`no WGSL helper '${name}'`);
    wanted.add(name);
    for (const d of SPECIAL_FUNCTION_HELPERS[name]?.deps ?? []) add(d);
  };
  for (const n of names) add(n);
  return Object.keys(WGSL_HELPERS).filter((n) => wanted.has(n)).map((n) => WGSL_HELPERS[n]);
}

/** The WGSL `u32` expression of an IR dim: a literal, or the params field holding a symbolic one. */
export function dimRef(params: KernelParams, d: Dim): string {
  return params.ref(typeof d === 'number' ? d : d.text);
}
