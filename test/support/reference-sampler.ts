// An independent reference of token sampling (issue #12 item 5), written from the definition rather than from
// src/runtime/sampling.ts: probabilities in float64; top-k by sorting indices by (value desc, index asc) and cutting
// at k; renormalize; then multinomial in index order or run.c's nucleus with the same coin. Plus the allowance the
// GPU sampler's docs give (src/codegen/sampling.ts): a pick agrees if the reference makes it for a coin (and top-p)
// within EPS, and the rows the sampling tests draw from.
import { Rng } from '../../src/util/random.js';

/** Settings of one draw (temperature > 0). */
export interface RefSettings {
  readonly temperature: number;
  readonly topp: number;
  readonly topk?: number;
}

/** The kept set after top-k (sorted by value desc, index asc, cut at k); every index when top-k is off. */
export function referenceTopK(logits: ArrayLike<number>, topk: number | undefined): number[] {
  const order = Array.from({ length: logits.length }, (_v, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  const k = topk ?? 0;
  return k > 0 && k < logits.length ? order.slice(0, k) : order;
}

/** The reference's pick for `coin` in [0, 1). */
export function referencePick(logits: ArrayLike<number>, s: RefSettings, coin: number): number {
  const n = logits.length;
  const x = Array.from(logits, (l) => l / s.temperature);
  const mx = Math.max(...x);
  const kept = new Set(referenceTopK(logits, s.topk));
  const e = x.map((v, i) => (kept.has(i) ? Math.exp(v - mx) : 0));
  const total = e.reduce((a, b) => a + b, 0);
  const p = e.map((v) => v / total);
  if (s.topp <= 0 || s.topp >= 1) {
    let cdf = 0;
    let last = n - 1;
    for (let i = 0; i < n; i++) {
      if (p[i] > 0) last = i;
      cdf += p[i];
      if (coin < cdf) return i;
    }
    return last;
  }
  const cutoff = (1 - s.topp) / (n - 1);
  const cand = p.map((_v, i) => i).filter((i) => p[i] >= cutoff).sort((a, b) => p[b] - p[a] || a - b);
  let cum = 0;
  let last = cand.length - 1;
  for (let j = 0; j < cand.length; j++) {
    cum += p[cand[j]];
    if (cum > s.topp) {
      last = j;
      break;
    }
  }
  const r = coin * cum;
  let cdf = 0;
  for (let j = 0; j <= last; j++) {
    cdf += p[cand[j]];
    if (r < cdf) return cand[j];
  }
  return cand[last];
}

/**
 * How far (absolute) a coin or top-p may sit from where a sampler's rounding moves a cdf boundary: f32 probabilities,
 * f32 tree sums and WGSL's `exp` (a few ulp per term) stay far below it for the rows these tests draw.
 */
export const BOUNDARY_EPS = 1e-5;

/**
 * The picks that agree with the reference for `coin`: its pick for every coin in {coin - EPS, coin, coin + EPS}
 * and (with top-p on) every top-p in {topp - EPS, topp, topp + EPS}. One element unless the coin or top-p sits
 * within EPS of a cdf boundary. The top-k set is never perturbed: a pick outside it never agrees.
 */
export function acceptablePicks(logits: ArrayLike<number>, s: RefSettings, coin: number): Set<number> {
  const coins = [coin - BOUNDARY_EPS, coin, coin + BOUNDARY_EPS].map((c) => Math.min(Math.max(c, 0), 1 - 2 ** -24));
  const topps = s.topp > 0 && s.topp < 1 ? [s.topp - BOUNDARY_EPS, s.topp, s.topp + BOUNDARY_EPS].filter((t) => t > 0 && t < 1) : [s.topp];
  const out = new Set<number>();
  for (const c of coins) for (const t of topps) out.add(referencePick(logits, { ...s, topp: t }, c));
  return out;
}

/** One logits row and settings to draw with. */
export interface SamplingCase {
  readonly name: string;
  readonly logits: Float32Array;
  readonly settings: RefSettings;
}

/**
 * `count` rows of `V` logits with settings, half of them tie-heavy (logits rounded to a coarse grid, or drawn from a
 * handful of integers), the others Gaussian; top-k from {off, 1, 2, small, V - 1, > V}, top-p off or on.
 */
export function samplingCases(V: number, count: number, seed: number): SamplingCase[] {
  const r = new Rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[r.int(xs.length)];
  const cases: SamplingCase[] = [];
  for (let c = 0; c < count; c++) {
    const kind = pick(['gaussian', 'grid', 'few-integers'] as const);
    const scale = pick([0.5, 1, 2, 3]);
    const logits = new Float32Array(V);
    for (let i = 0; i < V; i++) {
      const g = r.normal() * scale;
      logits[i] = kind === 'gaussian' ? g : kind === 'grid' ? Math.round(g / 0.5) * 0.5 : r.int(4);
    }
    const settings: RefSettings = {
      temperature: pick([0.5, 0.8, 1, 1.3]),
      topk: pick([0, 0, 1, 2, 3, 7, V - 1, V + 5]),
      topp: pick([1, 1, 0.9, 0.5, 0.95]),
    };
    cases.push({ name: `#${c} ${kind} x${scale} T=${settings.temperature} k=${settings.topk} p=${settings.topp}`, logits, settings });
  }
  return cases;
}
