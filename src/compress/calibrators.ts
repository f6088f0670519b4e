/**
 * Activation calibrators: from the activations a calibration run sees, the clipping threshold `t` of a symmetric
 * integer quantizer (`x → round(clamp(x, −t, t) / Δ)`, `Δ = t / (2^(bits−1) − 1)`), per tensor or per channel:
 *
 * - **min-max**: `t = max |x|`;
 * - **percentile** (99.9, 99.99, …): the `p`-th percentile of `|x|`;
 * - **MSE**: the `t` minimising the expected squared quantization error (rounding plus clipping) over the histogram;
 * - **entropy** (TensorRT's KL calibration): the `t` whose `2^(bits−1)`-level quantized histogram of `|x|` diverges
 *   least (KL) from the histogram clipped at `t`, the clipped mass folded into the last bin.
 *
 * Statistics: {@link ActivationHistogram} (2048 bins of `|x|`, widening by merging bin pairs when a larger value
 * arrives, so one pass suffices) and {@link ChannelRanges} (per-channel min, max and max |x|).
 * @module
 */
import { InputError } from '../errors.js';

/** Bins of an {@link ActivationHistogram} (TensorRT's 2048). */
export const HISTOGRAM_BINS = 2048;

/** A histogram of `|x|` over `[0, range)` that doubles its range (merging bin pairs) as larger values arrive. */
export class ActivationHistogram {
  /** Counts per bin. */
  readonly counts: Float64Array;
  /** Upper end of the last bin. */
  range = 0;
  /** Largest |x| seen. */
  absMax = 0;
  /** Values seen. */
  total = 0;
  constructor(readonly bins = HISTOGRAM_BINS) {
    if (!(Number.isInteger(bins) && bins >= 2 && bins % 2 === 0)) throw new InputError(`a histogram needs an even number of bins, got ${bins}`);
    this.counts = new Float64Array(bins);
  }
  /** Width of one bin. */
  get binWidth(): number {
    return this.range / this.bins;
  }
  /** Adds values. */
  add(values: ArrayLike<number>): void {
    let m = 0;
    for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]));
    if (m > this.absMax) this.absMax = m;
    if (this.range === 0) this.range = m > 0 ? m * (1 + 1e-7) : 0;
    while (m >= this.range && this.range > 0) this.widen();
    if (this.range === 0) {
      this.total += values.length; // all zeros so far: nothing to place
      this.counts[0] += values.length;
      return;
    }
    const scale = this.bins / this.range;
    for (let i = 0; i < values.length; i++) this.counts[Math.min(this.bins - 1, Math.floor(Math.abs(values[i]) * scale))]++;
    this.total += values.length;
  }
  /** Doubles the range: bin pairs merge into the lower half. */
  private widen(): void {
    const c = this.counts;
    for (let i = 0; i < this.bins / 2; i++) c[i] = c[2 * i] + c[2 * i + 1];
    c.fill(0, this.bins / 2);
    this.range *= 2;
  }
}

/** Per-channel ranges of `[rows, channels]` activations. */
export class ChannelRanges {
  /** Minimum per channel. */
  readonly min: Float64Array;
  /** Maximum per channel. */
  readonly max: Float64Array;
  constructor(readonly channels: number) {
    this.min = new Float64Array(channels).fill(Infinity);
    this.max = new Float64Array(channels).fill(-Infinity);
  }
  /** Adds rows (row-major, `channels` values each). */
  add(values: ArrayLike<number>): void {
    if (values.length % this.channels !== 0) throw new InputError(`${values.length} values are no whole number of rows of ${this.channels} channels`);
    for (let i = 0; i < values.length; i++) {
      const c = i % this.channels;
      if (values[i] < this.min[c]) this.min[c] = values[i];
      if (values[i] > this.max[c]) this.max[c] = values[i];
    }
  }
  /** max |x| per channel: the per-channel min-max threshold. */
  absMax(): Float64Array {
    return Float64Array.from(this.min, (lo, c) => Math.max(Math.abs(lo), Math.abs(this.max[c])));
  }
}

/** A calibration method. */
export type Calibrator = 'minmax' | 'percentile' | 'mse' | 'entropy';

function nonEmpty(h: ActivationHistogram): void {
  if (h.total === 0) throw new InputError('calibration saw no values');
}

/** min-max: the largest |x| seen. */
export function minMaxThreshold(h: ActivationHistogram): number {
  nonEmpty(h);
  return h.absMax;
}

/** The `p`-th percentile (0 < p ≤ 100) of |x|: the upper edge of the bin where the cumulative count reaches it. */
export function percentileThreshold(h: ActivationHistogram, p: number): number {
  nonEmpty(h);
  if (!(p > 0 && p <= 100)) throw new InputError(`percentile must be in (0, 100], got ${p}`);
  const want = (p / 100) * h.total;
  let sum = 0;
  for (let i = 0; i < h.bins; i++) {
    sum += h.counts[i];
    if (sum >= want) return Math.min(h.absMax, (i + 1) * h.binWidth);
  }
  return h.absMax;
}

/** Expected squared error of quantizing the histogram's mass symmetrically with `levels` positive levels at clip `t`. */
export function histogramQuantizationError(h: ActivationHistogram, t: number, levels: number): number {
  const step = t / levels;
  let err = 0;
  for (let i = 0; i < h.bins; i++) {
    if (!h.counts[i]) continue;
    const x = (i + 0.5) * h.binWidth;
    const q = x >= t ? t : Math.round(x / step) * step;
    err += h.counts[i] * (x - q) ** 2;
  }
  return err / h.total;
}

/** MSE: the clip (a bin edge from 1/`candidates` of the range up) with the least expected error at `bits`. */
export function mseThreshold(h: ActivationHistogram, bits: number, candidates = 512): number {
  nonEmpty(h);
  const levels = (1 << (bits - 1)) - 1;
  if (!(levels >= 1)) throw new InputError(`MSE calibration needs at least 2 bits, got ${bits}`);
  let best = h.absMax;
  let bestErr = Infinity;
  const last = Math.min(h.bins, Math.ceil(h.absMax / h.binWidth));
  for (let c = 1; c <= candidates; c++) {
    const t = Math.max(1, Math.round((c / candidates) * last)) * h.binWidth;
    const e = histogramQuantizationError(h, t, levels);
    if (e < bestErr) [best, bestErr] = [t, e];
  }
  return Math.min(best, h.absMax);
}

/** KL(p ‖ q) over bins where p > 0 (q smoothed where it is 0). */
function klDivergence(p: Float64Array, q: Float64Array): number {
  let ps = 0;
  let qs = 0;
  for (let i = 0; i < p.length; i++) [ps, qs] = [ps + p[i], qs + q[i]];
  let kl = 0;
  for (let i = 0; i < p.length; i++) {
    if (!p[i]) continue;
    const pi = p[i] / ps;
    const qi = Math.max(q[i] / qs, 1e-12);
    kl += pi * Math.log(pi / qi);
  }
  return kl;
}

/**
 * Entropy (TensorRT): for each candidate bin count `i` from `2^(bits−1)` to the histogram's end, `P` = the first `i`
 * bins with the rest of the mass added to bin `i − 1`, `Q` = `P` merged into `2^(bits−1)` levels and spread back
 * evenly over each level's non-empty bins; the clip is the `i` of least KL(P ‖ Q), at the end of bin `i − 1`.
 */
export function entropyThreshold(h: ActivationHistogram, bits = 8): number {
  nonEmpty(h);
  const levels = 1 << (bits - 1);
  const hist = h.counts;
  const end = Math.max(levels, Math.min(h.bins, Math.ceil(h.absMax / h.binWidth)));
  let best = end;
  let bestKl = Infinity;
  for (let i = levels; i <= end; i++) {
    const p = hist.slice(0, i);
    let outliers = 0;
    for (let j = i; j < h.bins; j++) outliers += hist[j];
    p[i - 1] += outliers;
    const q = new Float64Array(i);
    const per = i / levels;
    for (let l = 0; l < levels; l++) {
      const a = Math.floor(l * per);
      const b = l === levels - 1 ? i : Math.floor((l + 1) * per);
      let sum = 0;
      let nonzero = 0;
      for (let j = a; j < b; j++) {
        sum += hist[j];
        if (hist[j]) nonzero++;
      }
      for (let j = a; j < b; j++) if (hist[j]) q[j] = sum / nonzero;
    }
    const kl = klDivergence(p, q);
    if (kl < bestKl) [best, bestKl] = [i, kl];
  }
  return Math.min(h.absMax, best * h.binWidth);
}

/** The threshold of `method` (`percentile`: `p`, default 99.99; others: `bits`, default 8). */
export function calibrate(h: ActivationHistogram, method: Calibrator, opts: { bits?: number; percentile?: number } = {}): number {
  switch (method) {
    case 'minmax':
      return minMaxThreshold(h);
    case 'percentile':
      return percentileThreshold(h, opts.percentile ?? 99.99);
    case 'mse':
      return mseThreshold(h, opts.bits ?? 8);
    case 'entropy':
      return entropyThreshold(h, opts.bits ?? 8);
  }
}
