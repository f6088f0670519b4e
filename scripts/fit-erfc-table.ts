/**
 * Generates `src/codegen/erfc-table.ts`: the piecewise polynomial of `Λ(a) = ln(erfc(a/√2)) + a²/2` (the logarithm of
 * the scaled complementary error function) that the WGSL erf and GELU helpers evaluate, so that
 * `erfc(a/√2) = exp(-a²/2 + Λ(a))` keeps a small relative error far into the tail.
 *
 * Pieces: [0,1), [1,2), [2,3), [3,4) and then width 2 up to 16 (where (a/2)·erfc(a/√2) is below the smallest f32).
 * On each piece, Λ(c + u) (c its centre) is interpolated at Chebyshev nodes by a polynomial of degree 8 in u, written
 * as `λ0 + λ1·u + u²·(q0 + q1·u + … + q6·u⁶)`; λ0 and λ1 are stored as float-float pairs (a head with 12 significant
 * bits and the f32 rest), the q's as f32. The reference is the CPU backend's `erfc` (double precision).
 *
 * Run: `npx tsx scripts/fit-erfc-table.ts > src/codegen/erfc-table.ts`. It also checks the fit (to stderr).
 * @module
 */
import { erfc } from '../src/runtime/cpu/math.js';

const DEGREE = 8;

/** Λ(a) = ln(erfc(a/√2)) + a²/2, in double precision. */
function logScaledErfc(a: number): number {
  return Math.log(erfc(a * Math.SQRT1_2)) + (a * a) / 2;
}

/** The pieces `[start, start + width)`. */
const PIECES: readonly { start: number; width: number }[] = [
  ...[0, 1, 2, 3].map((start) => ({ start, width: 1 })),
  ...[4, 6, 8, 10, 12, 14].map((start) => ({ start, width: 2 })),
];

/** Monomial coefficients in u = a - c of the Chebyshev interpolant of `f` on [c - h, c + h]. */
function chebyshevFit(f: (a: number) => number, c: number, h: number, degree: number): number[] {
  const n = degree + 1;
  const nodes = Array.from({ length: n }, (_v, k) => Math.cos((Math.PI * (k + 0.5)) / n));
  const values = nodes.map((x) => f(c + h * x));
  const cheb = Array.from({ length: n }, (_v, j) => (2 / n) * nodes.reduce((s, x, k) => s + values[k] * Math.cos(j * Math.acos(x)), 0));
  cheb[0] /= 2;
  // sum_j cheb_j T_j(x), T_j expanded into monomials by T_{j+1} = 2x T_j - T_{j-1}
  const mono = new Array<number>(n).fill(0);
  let prev = [1];
  let cur = [0, 1];
  mono[0] += cheb[0];
  if (n > 1) mono[1] += cheb[1];
  for (let j = 2; j < n; j++) {
    const next = new Array<number>(j + 1).fill(0);
    cur.forEach((v, i) => (next[i + 1] += 2 * v));
    prev.forEach((v, i) => (next[i] -= v));
    next.forEach((v, i) => (mono[i] += cheb[j] * v));
    prev = cur;
    cur = next;
  }
  return mono.map((m, i) => m / h ** i); // x = u / h
}

/** The f32 head with 12 significant bits (the low 12 mantissa bits cleared), as the WGSL `tw_hi12` computes it. */
function hi12(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer);
  u[0] &= 0xfffff000;
  return f[0];
}

/** `v` as a float-float pair [head (12 bits), f32 rest]. */
function floatFloat(v: number): [number, number] {
  const h = hi12(v);
  return [h, Math.fround(v - h)];
}

const rows: number[][] = [];
let worst = 0;
for (const { start, width } of PIECES) {
  const c = start + width / 2;
  const p = chebyshevFit(logScaledErfc, c, width / 2, DEGREE);
  const row = [...floatFloat(p[0]), ...floatFloat(p[1]), ...p.slice(2).map((q) => Math.fround(q))];
  rows.push(row);
  const evalRow = (u: number): number => row[0] + row[1] + (row[2] + row[3]) * u + u * u * row.slice(4).reduceRight((s, q) => s * u + q, 0);
  for (let i = 0; i <= 1000; i++) {
    const a = start + (width * i) / 1000;
    worst = Math.max(worst, Math.abs(evalRow(a - c) - logScaledErfc(a)));
  }
}
process.stderr.write(`max |fit - Λ| over the pieces (constants as stored): ${worst.toExponential(2)}\n`);

// erf(x) = x·(c0 + z·R(z)), z = x² < ERF_SERIES_LIMIT², c0 = 2/√π: R interpolated at Chebyshev nodes in z, its values
// from the Maclaurin series R(z) = c0·Σ_{n>=1} (-1)^n z^(n-1) / (n! (2n+1)) (no cancellation at small z)
const ERF_SERIES_LIMIT = 0.75;
const ERF_SERIES_DEGREE = 7;
function erfSeriesRest(z: number): number {
  let sum = 0;
  let term = 1; // z^(n-1) / n!, times (-1)^n
  for (let n = 1; n < 40; n++) {
    term *= -(n === 1 ? 1 : z) / n;
    sum += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}
const zMax = ERF_SERIES_LIMIT * ERF_SERIES_LIMIT;
const series = chebyshevFit(erfSeriesRest, zMax / 2, zMax / 2, ERF_SERIES_DEGREE);
// re-expand around z = 0: the fit is in (z - zMax/2); shift by Horner's synthetic division (Taylor shift)
const shifted = [...series];
for (let i = 0; i < shifted.length; i++) for (let j = shifted.length - 2; j >= i; j--) shifted[j] -= (zMax / 2) * shifted[j + 1];
const seriesF32 = shifted.map((q) => Math.fround(q));
let seriesWorst = 0;
for (let i = 0; i <= 2000; i++) {
  const z = (zMax * i) / 2000;
  seriesWorst = Math.max(seriesWorst, Math.abs(seriesF32.reduceRight((s, q) => s * z + q, 0) - erfSeriesRest(z)) * z);
}
process.stderr.write(`max |z·(R fit - R)| on the erf series range: ${seriesWorst.toExponential(2)}\n`);

const fmt = (v: number): string => (Object.is(v, -0) ? '-0' : v.toPrecision(9));
const lines = [
  '/**',
  ' * The piecewise polynomial of Λ(a) = ln(erfc(a/√2)) + a²/2 used by the WGSL erf and GELU helpers. GENERATED by',
  ' * `npx tsx scripts/fit-erfc-table.ts > src/codegen/erfc-table.ts`; do not edit by hand (the script says how it is fitted).',
  ' * @module',
  ' */',
  '',
  `/** Coefficients per piece, ${rows[0].length} each: λ0 head, λ0 rest, λ1 head, λ1 rest, then q0…q${DEGREE - 2} (see the script). */`,
  'export const ERFC_TABLE: readonly number[] = [',
  ...rows.map((r, k) => `  ${r.map(fmt).join(', ')}, // [${PIECES[k].start}, ${PIECES[k].start + PIECES[k].width})`),
  '];',
  '',
  `/** Values per piece in {@link ERFC_TABLE}. */`,
  `export const ERFC_TABLE_STRIDE = ${rows[0].length};`,
  '',
  `/** erf(x) = x·(2/√π + x²·R(x²)) is evaluated by this series below |x| = ${ERF_SERIES_LIMIT}. */`,
  `export const ERF_SERIES_LIMIT = ${ERF_SERIES_LIMIT};`,
  '',
  `/** Coefficients of R(z), lowest degree first. */`,
  `export const ERF_SERIES: readonly number[] = [${seriesF32.map(fmt).join(', ')}];`,
  '',
];
process.stdout.write(lines.join('\n'));
