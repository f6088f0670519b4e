// Pearson's chi-square goodness-of-fit test for the speculative-decoding tests: observed counts against expected
// counts over categories, categories with small expectations merged into one, and the p-value from the regularized
// upper incomplete gamma function (Numerical Recipes' series and continued fraction).

/** ln Γ(x) for x > 0 (Lanczos, g = 7). */
function lnGamma(x: number): number {
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Q(a, x) = Γ(a, x) / Γ(a), the upper regularized incomplete gamma function. */
export function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const lead = -x + a * Math.log(x) - lnGamma(a);
  if (x < a + 1) {
    let sum = 1 / a;
    let term = sum;
    for (let n = 1; n < 10_000; n++) {
      term *= x / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * 1e-15) break;
    }
    return 1 - sum * Math.exp(lead);
  }
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 10_000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return Math.exp(lead) * h;
}

/** The result of {@link chiSquareTest}. */
export interface ChiSquareResult {
  /** Pearson's statistic. */
  readonly statistic: number;
  /** Degrees of freedom (categories after merging, less one). */
  readonly df: number;
  /** P(chi-square(df) >= statistic). */
  readonly p: number;
}

/**
 * Pearson's test of `observed` against `expected` counts (same keys; the expected counts sum to the observed total).
 * Categories expecting fewer than `minExpected` are pooled into one (dropped if the pool still expects less).
 */
export function chiSquareTest(observed: ReadonlyMap<string, number>, expected: ReadonlyMap<string, number>, minExpected = 5): ChiSquareResult {
  let stat = 0;
  let cats = 0;
  let poolO = 0;
  let poolE = 0;
  const keys = new Set([...observed.keys(), ...expected.keys()]);
  for (const k of keys) {
    const o = observed.get(k) ?? 0;
    const e = expected.get(k) ?? 0;
    if (e < minExpected) {
      poolO += o;
      poolE += e;
      continue;
    }
    stat += ((o - e) * (o - e)) / e;
    cats++;
  }
  if (poolE >= minExpected) {
    stat += ((poolO - poolE) * (poolO - poolE)) / poolE;
    cats++;
  } else if (poolO > 0 && poolE === 0) stat = Infinity; // outcomes that cannot happen
  const df = Math.max(1, cats - 1);
  return { statistic: stat, df, p: stat === Infinity ? 0 : gammaQ(df / 2, stat / 2) };
}
