/**
 * Scalar maths shared by the reference backend (and by constant folding): the elementwise functions with the exact
 * definitions tensorwright uses everywhere, so every backend is compared against one meaning.
 * @module
 */

/** erf by its Maclaurin series, for |x| < 2.5 (alternating terms; ~1e-15 absolute there). */
function erfSeries(x: number): number {
  // 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
  let term = x;
  let sum = x;
  const x2 = x * x;
  for (let n = 1; n < 100; n++) {
    term *= -x2 / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
  }
  return sum * 1.1283791670955126;
}

/** erfc for x >= 2.5 by Laplace's continued fraction (modified Lentz), relative error ~1e-15. */
function erfcContinuedFraction(x: number): number {
  if (x > 27) return 0; // exp(-x²) underflows
  // erfc(x) = exp(-x²)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
  const tiny = 1e-300;
  let f = x;
  let c = x;
  let d = 0;
  for (let n = 1; n < 200; n++) {
    const an = n / 2;
    d = x + an * d;
    d = d === 0 ? tiny : d;
    c = x + an / c;
    c = c === 0 ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
}

/** The error function, accurate to ~1e-15 relative (series near 0, continued fraction for erfc in the tails). */
export function erf(x: number): number {
  if (Number.isNaN(x) || x === 0) return x;
  const ax = Math.abs(x);
  if (ax < 2.5) return erfSeries(x);
  return Math.sign(x) * (1 - erfcContinuedFraction(ax));
}

/**
 * The complementary error function `1 - erf(x)`, with small RELATIVE error in the right tail too (where `1 - erf`
 * cancels): the continued fraction for x >= 2.5 (relative error ~1e-15), `1 - erf(x)` below (~3e-13 relative at 2.5,
 * where erfc is 4e-4), `2 - erfc(-x)` for negative x.
 */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return 2 - erfc(-x);
  return x < 2.5 ? 1 - erfSeries(x) : erfcContinuedFraction(x);
}

/** Logistic sigmoid. */
export function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/**
 * GELU: exact `x/2 (1 + erf(x/√2))`, or the tanh approximation `x/2 (1 + tanh(u))`, u = √(2/π) (x + 0.044715 x³).
 * Both are computed in forms that do not cancel in the negative tail, where `1 + erf` and `1 + tanh` lose every digit
 * (gelu(-10) is -7.7e-23 and the tanh form's -1.5e-37, both normal f32 numbers): `x/2 · erfc(-x/√2)` and
 * `x · sigmoid(2u) = x / (1 + exp(-2u))`. gelu(-∞) is -0, its limit.
 */
export function gelu(x: number, approximate: 'none' | 'tanh'): number {
  if (x === -Infinity) return -0; // the limit (x · 0 would be NaN)
  if (approximate === 'tanh') return x / (1 + Math.exp(-2 * 0.7978845608028654 * (x + 0.044715 * x * x * x)));
  return 0.5 * x * erfc(-x * Math.SQRT1_2);
}

/** The scalar function of a unary op. */
export function unaryFn(op: string, attrs: { readonly approximate?: unknown }): (x: number) => number {
  switch (op) {
    case 'neg': return (x) => -x;
    case 'abs': return Math.abs;
    case 'exp': return Math.exp;
    case 'log': return Math.log;
    case 'sqrt': return Math.sqrt;
    case 'rsqrt': return (x) => 1 / Math.sqrt(x);
    case 'reciprocal': return (x) => 1 / x;
    case 'tanh': return Math.tanh;
    case 'erf': return erf;
    case 'sin': return Math.sin;
    case 'cos': return Math.cos;
    case 'silu': return (x) => x * sigmoid(x);
    case 'gelu': {
      const a = attrs.approximate === 'tanh' ? 'tanh' : 'none';
      return (x) => gelu(x, a);
    }
    case 'relu': return (x) => (x > 0 ? x : 0);
    case 'sigmoid': return sigmoid;
    default: throw new Error(`no scalar function for unary op ${op}`);
  }
}

/** The scalar function of a binary op (integer ops follow WGSL: wrapping arithmetic, `x / 0 = x`). */
export function binaryFn(op: string, integer: boolean): (a: number, b: number) => number {
  switch (op) {
    case 'add': return (a, b) => a + b;
    case 'sub': return (a, b) => a - b;
    case 'mul': return integer ? (a, b) => Math.imul(a, b) : (a, b) => a * b;
    case 'div': return integer ? (a, b) => (b === 0 ? a : Math.trunc(a / b)) : (a, b) => a / b;
    case 'pow': return Math.pow;
    case 'maximum': return (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : a > b ? a : b);
    case 'minimum': return (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : a < b ? a : b);
    case 'equal': return (a, b) => (a === b ? 1 : 0);
    case 'less': return (a, b) => (a < b ? 1 : 0);
    case 'greater': return (a, b) => (a > b ? 1 : 0);
    default: throw new Error(`no scalar function for binary op ${op}`);
  }
}

/**
 * The scalar function of a binary op on int64 values (wrapping two's-complement arithmetic, `x / 0 = x`, as the
 * 32-bit integer ops; comparisons give 1 or 0).
 */
export function binaryFn64(op: string): (a: bigint, b: bigint) => bigint | number {
  const wrap = (v: bigint): bigint => BigInt.asIntN(64, v);
  switch (op) {
    case 'add': return (a, b) => wrap(a + b);
    case 'sub': return (a, b) => wrap(a - b);
    case 'mul': return (a, b) => wrap(a * b);
    case 'div': return (a, b) => (b === 0n ? a : wrap(a / b));
    case 'maximum': return (a, b) => (a > b ? a : b);
    case 'minimum': return (a, b) => (a < b ? a : b);
    case 'equal': return (a, b) => (a === b ? 1 : 0);
    case 'less': return (a, b) => (a < b ? 1 : 0);
    case 'greater': return (a, b) => (a > b ? 1 : 0);
    default: throw new Error(`no int64 function for binary op ${op}`);
  }
}
