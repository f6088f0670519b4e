/**
 * WGSL source of the special functions WGSL lacks, accurate to about one ulp over the whole f32 range: erf, and GELU in
 * its erf and tanh forms, with the float-float arithmetic and the exponential they are built on.
 *
 * Why not the textbook formulas: `0.5·x·(1 + erf(x/√2))` and `0.5·x·(1 + tanh(u))` cancel in the negative tail (10%
 * relative error at x = -5, every digit lost below), a rational erf approximation has only absolute accuracy, and
 * WGSL's `exp` may err by 3 + 2|x| ulp (lavapipe's does by ~7 ulp near 0 and ~60 ulp near ±87). So:
 *
 * - GELU is computed through its tail `N(a) = |gelu(-a)|` for a = |x|: gelu(x) = -N(a) for x < 0 and x - N(a) for
 *   x >= 0 (gelu(x) - gelu(-x) = x holds for both forms), so nothing cancels by more than a factor 2.
 * - erf form: N(a) = (a/2)·erfc(a/√2) = (a/2)·exp(-a²/2 + Λ(a)), where Λ(a) = ln(erfc(a/√2)) + a²/2 is a smooth
 *   function of size ≤ 3 given by a piecewise polynomial (`erfc-table.ts`), and -a²/2 is formed exactly.
 * - tanh form: N(a) = a·sigmoid(-2u) = a / (1 + exp(2u)), u = √(2/π)(a + 0.044715 a³), with 2u formed exactly.
 * - erf(x) = x·(2/√π + x²·R(x²)) for |x| < 0.75 (relative accuracy down to the smallest subnormal), else
 *   ±(1 - erfc(|x|)) with erfc as above.
 * - The exponential is our own: Cody–Waite reduction by n·ln2 with ln2 in two parts, a degree-9 Taylor polynomial,
 *   and the result kept as a float-float mantissa and a power of two that is applied last, so results far below 1
 *   (down to subnormals) keep their precision.
 *
 * Float-float ("ff") values are `vec2<f32>(head, tail)` whose head has at most 12 significant bits, so a product of
 * two heads is exact in f32. Sums are renormalized by truncating to 12 bits with a bit mask: the classic two-sum
 * `(a + b) - a` is simplified away by shader compilers that reassociate (Mesa's does), a bit mask is not.
 * @module
 */
import { ERF_SERIES, ERF_SERIES_LIMIT, ERFC_TABLE, ERFC_TABLE_STRIDE } from './erfc-table.js';

/** The f32 head of `v` with 12 significant bits, as `tw_hi12` truncates it. */
function hi12(v: number): number {
  const f = new Float32Array([v]);
  new Uint32Array(f.buffer)[0] &= 0xfffff000;
  return f[0];
}

/** An f32 WGSL literal that reads back as exactly `v` (an f32 value). */
function f32Literal(v: number): string {
  const s = Math.fround(v).toPrecision(9);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** The WGSL float-float constant for the real number `v` (a double): `vec2<f32>(head, tail)`. */
function ffLiteral(v: number): string {
  const h = hi12(v);
  return `vec2<f32>(${f32Literal(h)}, ${f32Literal(v - h)})`;
}

/** WGSL text of the polynomial Σ coeffs[i]·v^i by Horner's rule. */
function horner(v: string, coeffs: readonly string[]): string {
  return coeffs.slice(0, -1).reduceRight((inner, c) => `${c} + ${v} * (${inner})`, coeffs[coeffs.length - 1]);
}

/** ln 2 split for Cody–Waite reduction: 15 significant bits (so n·LN2_HI is exact for |n| < 512) and the rest. */
const LN2_HI = 0.693145751953125;
const LN2_LO = Math.LN2 - LN2_HI;

/** Float-float arithmetic, `ldexp` in two steps, and the exponential of a float-float argument. */
const FF = `// float-float arithmetic: a value is head + tail, the head with at most 12 significant bits (products of heads are
// exact). Sums renormalize through a 12-bit mask, which no compiler reassociates away (unlike (a + b) - a).
fn tw_hi12(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) & 0xfffff000u); }
fn tw_ff(x: f32) -> vec2<f32> { let h = tw_hi12(x); return vec2<f32>(h, x - h); }
fn tw_ff_add(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let swap = abs(b.x) > abs(a.x);
  let big = select(a.x, b.x, swap);
  let small = select(b.x, a.x, swap);
  let s = tw_hi12(big + small);
  return vec2<f32>(s, ((big - s) + small) + (a.y + b.y)); // big - s is exact
}
fn tw_ff_mul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let p = a.x * b.x; // exact
  let t = a.x * b.y + a.y * b.x + a.y * b.y;
  let s = tw_hi12(p + t);
  return vec2<f32>(s, (p - s) + t); // p - s is exact
}
// a / b rounded to f32: q0 and one correction from the exact remainder a - q0·b
fn tw_ff_div(a: vec2<f32>, b: vec2<f32>) -> f32 {
  let bf = b.x + b.y;
  let q0 = (a.x + a.y) / bf;
  let r = tw_ff_add(a, -tw_ff_mul(tw_ff(q0), b));
  return q0 + (r.x + r.y) / bf;
}
// m·2^n (n integral), in two steps so that no step needs a power of two outside the normal range
fn tw_ldexp(m: f32, n: f32) -> f32 {
  let k = i32(n);
  let k1 = k / 2;
  return ldexp(ldexp(m, k1), k - k1);
}
// exp(e) = (r.x + r.y)·2^r.z for |e| < 350, to ~2^-30 relative (WGSL's exp may err by 3 + 2|e| ulp): e - n·ln2 is
// exact in two parts (n·LN2_HI exact, Sterbenz), exp of the reduced argument (|z| < 0.4) by its Taylor series
fn tw_exp_ff(e: vec2<f32>) -> vec3<f32> {
  let n = round(e.x * 1.44269504);
  let r = tw_ff_add(tw_ff(e.x - n * ${f32Literal(LN2_HI)}), tw_ff(e.y - n * ${f32Literal(LN2_LO)}));
  let z = r.x + r.y;
  let rest = z * z * (${horner('z', [2, 6, 24, 120, 720, 5040, 40320, 362880].map((f) => f32Literal(1 / f)))});
  return vec3<f32>(tw_ff_add(tw_ff_add(vec2<f32>(1.0, 0.0), r), tw_ff(rest)), n);
}`;

const T = ERFC_TABLE_STRIDE;
const coeff = (k: number): string => `TW_ERFC_TABLE[i + ${k}u]`;

/** erfc(a/√2) as exp(-a²/2 + Λ(a)) from the fitted table. */
const ERFC_FF = `// Λ(a) = ln(erfc(a/√2)) + a²/2 on [0, 16): per piece λ0 head, λ0 tail, λ1 head, λ1 tail, q0…q6 with
// Λ(c + u) = λ0 + λ1·u + u²·(q0 + q1·u + …), c the piece's centre (pieces [0,1) … [3,4), then width 2)
const TW_ERFC_TABLE = array<f32, ${ERFC_TABLE.length}>(
${Array.from({ length: ERFC_TABLE.length / T }, (_v, k) => `  ${ERFC_TABLE.slice(k * T, k * T + T).map(f32Literal).join(', ')},`).join('\n')}
);
// erfc(a/√2) = (r.x + r.y)·2^r.z for 0 <= a < 16, given e = -a²/2 exactly (as float-float)
fn tw_erfc_ff(a: f32, e: vec2<f32>) -> vec3<f32> {
  let k = min(u32(select(2.0 + floor(0.5 * a), floor(a), a < 4.0)), ${ERFC_TABLE.length / T - 1}u);
  let c = select(2.0 * f32(k) - 3.0, f32(k) + 0.5, k < 4u);
  let uf = tw_ff_add(tw_ff(a), vec2<f32>(-c, 0.0));
  let u = uf.x + uf.y;
  let i = k * ${T}u;
  let q = ${horner('u', [4, 5, 6, 7, 8, 9, 10].map(coeff))};
  let linear = tw_ff_mul(vec2<f32>(${coeff(2)}, ${coeff(3)}), uf);
  let lambda = tw_ff_add(tw_ff_add(vec2<f32>(${coeff(0)}, ${coeff(1)}), linear), tw_ff(u * u * q));
  return tw_exp_ff(tw_ff_add(e, lambda));
}`;

/** erf, relatively accurate everywhere. */
const ERF = `// erf(x): x·(2/√π + x²·R(x²)) below |x| = ${ERF_SERIES_LIMIT}, ±(1 - erfc(|x|)) above; the sign bit copied from x (erf(-0) = -0)
fn tw_erf(x: f32) -> f32 {
  let a = abs(x);
  var y: f32;
  if (a < ${f32Literal(ERF_SERIES_LIMIT)}) {
    // below 2^-64, work on a·2^64 (exact) so that no step but the last one meets subnormals
    let tiny = a < ${f32Literal(2 ** -64)};
    let s = select(a, a * ${f32Literal(2 ** 64)}, tiny);
    let z = a * a;
    let p = tw_ff_mul(${ffLiteral(2 / Math.sqrt(Math.PI))}, tw_ff(s));
    y = p.x + (p.y + s * z * (${horner('z', ERF_SERIES.map(f32Literal))}));
    y = select(y, y * ${f32Literal(2 ** -64)}, tiny);
  } else if (a >= 4.0) {
    y = 1.0; // 1 - erfc(4) rounds to 1
  } else {
    let af = tw_ff(a);
    let p = tw_erfc_ff(a * 1.41421356, tw_ff_mul(af, af) * -1.0);
    y = 1.0 - tw_ldexp(p.x + p.y, p.z);
  }
  return bitcast<f32>(bitcast<u32>(y) | (bitcast<u32>(x) & 0x80000000u));
}`;

/** GELU, erf form. */
const GELU_ERF = `// GELU, erf form: gelu(x) = -N(|x|) for x < 0, x - N(x) for x >= 0, N(a) = (a/2)·erfc(a/√2) = |gelu(-a)|
fn tw_gelu_erf_tail(a: f32) -> f32 {
  if (a >= 16.0) { return 0.0; } // N(16) < 2^-150
  let af = tw_ff(a);
  let p = tw_erfc_ff(a, tw_ff_mul(af, af) * -0.5);
  let m = tw_ff_mul(tw_ff(0.5 * a), p.xy);
  return tw_ldexp(m.x + m.y, p.z);
}
fn tw_gelu_erf(x: f32) -> f32 {
  let n = tw_gelu_erf_tail(abs(x));
  return select(-n, x - n, x >= 0.0);
}`;

/** GELU, tanh form. */
const GELU_TANH = `// GELU, tanh form (x·sigmoid(2u), u = √(2/π)(x + 0.044715 x³)): -N(|x|) for x < 0, x - N(x) for x >= 0, with
// N(a) = a / (1 + exp(2u(a))) = |gelu_tanh(-a)|; 2u(a) formed in float-float
fn tw_gelu_tanh_tail(a: f32) -> f32 {
  if (a >= 12.0) { return 0.0; } // N(12) < 2^-150
  let af = tw_ff(a);
  let cube = tw_ff_mul(tw_ff_mul(af, af), af);
  let two_u = tw_ff_mul(${ffLiteral(2 * Math.sqrt(2 / Math.PI))}, tw_ff_add(af, tw_ff_mul(${ffLiteral(0.044715)}, cube)));
  let p = tw_exp_ff(two_u); // exp(2u) = (p.x + p.y)·2^p.z, p.z >= 0
  let d = tw_ff_add(p.xy, tw_ff(ldexp(1.0, -i32(p.z)))); // (1 + exp(2u))·2^-p.z
  return tw_ldexp(tw_ff_div(af, d), -p.z);
}
fn tw_gelu_tanh(x: f32) -> f32 {
  let n = tw_gelu_tanh_tail(abs(x));
  return select(-n, x - n, x >= 0.0);
}`;

/** A WGSL helper: its source and the helpers it calls. */
export interface WgslHelper {
  /** WGSL source (functions and module-scope constants). */
  readonly source: string;
  /** Names of the helpers it calls. */
  readonly deps: readonly string[];
}

/** The special-function helpers, by name: `ff` and `erfc_ff` are building blocks of `erf`, `gelu_erf`, `gelu_tanh`. */
export const SPECIAL_FUNCTION_HELPERS: Readonly<Record<string, WgslHelper>> = {
  ff: { source: FF, deps: [] },
  erfc_ff: { source: ERFC_FF, deps: ['ff'] },
  erf: { source: ERF, deps: ['ff', 'erfc_ff'] },
  gelu_erf: { source: GELU_ERF, deps: ['ff', 'erfc_ff'] },
  gelu_tanh: { source: GELU_TANH, deps: ['ff'] },
};
