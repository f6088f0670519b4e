/**
 * WGSL for 64-bit integers, which WGSL lacks: an i64 value is a `vec2<u32>` (low word, high word; two's complement),
 * stored as two u32 words per element, and these helpers do its arithmetic, comparisons and conversions exactly
 * (wrapping like the reference's int64 arithmetic). Multiplication builds the 64-bit product of the low words from
 * 16-bit limbs; division is 64 steps of shift and subtract on the magnitudes (truncating toward zero; `x / 0 = x`,
 * as the 32-bit integer division).
 * @module
 */

/** The WGSL computing type of an i64 value. */
export const I64_TYPE = 'vec2<u32>';

/** Name of the WGSL helper block (for {@link WGSL_HELPERS}) holding every `tw_i64_*` function. */
export const I64_HELPER = 'i64';

/** The `tw_i64_*` functions: add, neg, sub, mul, div, abs, eq, lt, gt, min, max and conversions from and to 32-bit types. */
export const I64_HELPER_SOURCE = `// i64 as vec2<u32> (low, high), two's complement, wrapping
fn tw_i64_add(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
  let lo = a.x + b.x;
  return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}
fn tw_i64_neg(a: vec2<u32>) -> vec2<u32> {
  let lo = ~a.x + 1u;
  return vec2<u32>(lo, ~a.y + select(0u, 1u, lo == 0u));
}
fn tw_i64_sub(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> { return tw_i64_add(a, tw_i64_neg(b)); }
// the full 64-bit product of two u32, from 16-bit limbs
fn tw_u32_mul_wide(a: u32, b: u32) -> vec2<u32> {
  let a0 = a & 0xffffu;
  let a1 = a >> 16u;
  let b0 = b & 0xffffu;
  let b1 = b >> 16u;
  let p00 = a0 * b0;
  let p01 = a0 * b1;
  let p10 = a1 * b0;
  let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  return vec2<u32>((p00 & 0xffffu) | (mid << 16u), a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u));
}
fn tw_i64_mul(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
  let p = tw_u32_mul_wide(a.x, b.x);
  return vec2<u32>(p.x, p.y + a.x * b.y + a.y * b.x);
}
fn tw_i64_negative(a: vec2<u32>) -> bool { return (a.y & 0x80000000u) != 0u; }
fn tw_i64_abs(a: vec2<u32>) -> vec2<u32> { return select(a, tw_i64_neg(a), tw_i64_negative(a)); }
fn tw_i64_eq(a: vec2<u32>, b: vec2<u32>) -> bool { return a.x == b.x && a.y == b.y; }
fn tw_i64_lt(a: vec2<u32>, b: vec2<u32>) -> bool {
  let ah = bitcast<i32>(a.y);
  let bh = bitcast<i32>(b.y);
  return ah < bh || (ah == bh && a.x < b.x);
}
fn tw_i64_gt(a: vec2<u32>, b: vec2<u32>) -> bool { return tw_i64_lt(b, a); }
fn tw_u64_lt(a: vec2<u32>, b: vec2<u32>) -> bool { return a.y < b.y || (a.y == b.y && a.x < b.x); }
// unsigned quotient by restoring division, one bit per step from the top
fn tw_u64_div(n: vec2<u32>, d: vec2<u32>) -> vec2<u32> {
  var q = vec2<u32>(0u, 0u);
  var r = vec2<u32>(0u, 0u);
  for (var i = 63u; i < 64u; i = i - 1u) {
    let word = select(n.x, n.y, i >= 32u);
    r = vec2<u32>((r.x << 1u) | ((word >> (i & 31u)) & 1u), (r.y << 1u) | (r.x >> 31u));
    if (!tw_u64_lt(r, d)) {
      r = tw_i64_sub(r, d);
      if (i >= 32u) { q.y = q.y | (1u << (i - 32u)); } else { q.x = q.x | (1u << i); }
    }
  }
  return q;
}
fn tw_i64_div(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
  if (b.x == 0u && b.y == 0u) { return a; }
  let q = tw_u64_div(tw_i64_abs(a), tw_i64_abs(b));
  return select(q, tw_i64_neg(q), tw_i64_negative(a) != tw_i64_negative(b));
}
fn tw_i64_min(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> { return select(a, b, tw_i64_lt(b, a)); }
fn tw_i64_max(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> { return select(a, b, tw_i64_lt(a, b)); }
fn tw_i64_from_i32(v: i32) -> vec2<u32> { return vec2<u32>(bitcast<u32>(v), select(0u, 0xffffffffu, v < 0)); }
fn tw_i64_from_u32(v: u32) -> vec2<u32> { return vec2<u32>(v, 0u); }
fn tw_i64_from_bool(v: bool) -> vec2<u32> { return vec2<u32>(select(0u, 1u, v), 0u); }
// truncation toward zero, saturating to the int64 range; NaN gives 0
fn tw_i64_from_f32(f: f32) -> vec2<u32> {
  let bits = bitcast<u32>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) { return vec2<u32>(0u, 0u); }
  if ((bits & 0x7fffffffu) >= 0x5f000000u) { return select(vec2<u32>(0xffffffffu, 0x7fffffffu), vec2<u32>(0u, 0x80000000u), f < 0.0); }
  let a = trunc(abs(f));
  let hi = floor(a / 4294967296.0);
  let m = vec2<u32>(u32(a - hi * 4294967296.0), u32(hi));
  return select(m, tw_i64_neg(m), f < 0.0);
}
// rounded to nearest (even) f32: the magnitude's top 32 bits keep a sticky bit for what is shifted out
fn tw_i64_to_f32(a: vec2<u32>) -> f32 {
  let neg = tw_i64_negative(a);
  let m = select(a, tw_i64_neg(a), neg);
  var r: f32;
  if (m.y == 0u) {
    r = f32(m.x);
  } else {
    let s = 32u - countLeadingZeros(m.y);
    let top = select((m.y << (32u - s)) | (m.x >> s), m.y, s == 32u);
    let lost = select(m.x & ((1u << s) - 1u), m.x, s == 32u);
    r = f32(top | select(0u, 1u, lost != 0u)) * exp2(f32(s));
  }
  return select(r, -r, neg);
}`;
