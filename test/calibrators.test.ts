// Activation calibrators on distributions whose answers are known: percentiles of uniform and Gaussian |x|, the MSE
// clip against a brute-force search over the raw samples, entropy calibration ignoring rare outliers that min-max
// follows, and per-channel ranges against a direct scan. Seeded.
import { describe, expect, it } from 'vitest';
import { ActivationHistogram, ChannelRanges, calibrate, entropyThreshold, minMaxThreshold, mseThreshold, percentileThreshold } from '../src/compress/calibrators.js';
import { InputError } from '../src/errors.js';
import { Rng } from '../src/util/random.js';

function histogramOf(values: Float32Array, chunks = 8): ActivationHistogram {
  const h = new ActivationHistogram();
  const n = values.length / chunks;
  // in chunks, so the range has to widen as larger values arrive
  for (let c = 0; c < chunks; c++) h.add(values.subarray(c * n, (c + 1) * n));
  return h;
}

/** Mean squared error of symmetric quantization with clip t on the raw samples. */
function sampleError(x: Float32Array, t: number, bits: number): number {
  const step = t / ((1 << (bits - 1)) - 1);
  let e = 0;
  for (const v of x) {
    const c = Math.max(-t, Math.min(t, v));
    e += (v - Math.round(c / step) * step) ** 2;
  }
  return e / x.length;
}

describe('activation calibrators', () => {
  const rng = new Rng(2024);
  const uniform = rng.uniforms(200_000, -1, 1);
  const gauss = rng.normals(200_000);

  it('min-max is the largest |x|; the histogram keeps every value while widening', () => {
    const h = histogramOf(gauss);
    expect(minMaxThreshold(h)).toBe(Array.from(gauss, Math.abs).reduce((a, b) => Math.max(a, b), 0));
    expect(h.counts.reduce((a, b) => a + b, 0)).toBe(gauss.length);
    expect(h.range).toBeGreaterThan(h.absMax);
  });

  it('percentiles of |x| match the distributions (uniform: p/100; Gaussian: 3.29σ at 99.9, 3.89σ at 99.99)', () => {
    expect(percentileThreshold(histogramOf(uniform), 99.9)).toBeCloseTo(0.999, 2);
    expect(percentileThreshold(histogramOf(uniform), 50)).toBeCloseTo(0.5, 2);
    expect(percentileThreshold(histogramOf(gauss), 99.9)).toBeGreaterThan(3.29 * 0.97);
    expect(percentileThreshold(histogramOf(gauss), 99.9)).toBeLessThan(3.29 * 1.03);
    expect(percentileThreshold(histogramOf(gauss), 99.99)).toBeGreaterThan(3.89 * 0.95);
    expect(percentileThreshold(histogramOf(gauss), 99.99)).toBeLessThan(3.89 * 1.05);
  });

  for (const bits of [4, 8])
    it(`MSE clipping finds the clip a brute-force search over the samples finds (Gaussian, ${bits} bits)`, () => {
      const x = gauss.subarray(0, 20_000);
      const t = mseThreshold(histogramOf(x), bits);
      let best = 0;
      let bestErr = Infinity;
      for (let c = 0.5; c <= 5; c += 0.02) {
        const e = sampleError(x, c, bits);
        if (e < bestErr) [best, bestErr] = [c, e];
      }
      // the error curve is flat near its minimum: compare errors, and the clip loosely
      expect(sampleError(x, t, bits)).toBeLessThan(bestErr * 1.02);
      expect(Math.abs(t - best)).toBeLessThan(0.25);
      // 4 bits clip well inside the range (Banner et al.: about 2.5σ), 8 bits near the tail
      if (bits === 4) expect(t).toBeGreaterThan(2.2), expect(t).toBeLessThan(2.9);
      else expect(t).toBeGreaterThan(3.2);
    });

  it('entropy calibration ignores rare outliers that min-max follows, and keeps the range of a uniform distribution', () => {
    const x = Float32Array.from(gauss);
    for (let i = 0; i < 5; i++) x[i * 1000] = 60 + i;
    const h = histogramOf(x);
    expect(minMaxThreshold(h)).toBe(64);
    const t = entropyThreshold(h, 8);
    expect(t).toBeLessThan(12);
    expect(t).toBeGreaterThan(2.5);
    expect(entropyThreshold(histogramOf(uniform), 8)).toBeGreaterThan(0.9);
    expect(calibrate(h, 'entropy')).toBe(t);
    expect(calibrate(h, 'percentile', { percentile: 99.9 })).toBe(percentileThreshold(h, 99.9));
  });

  it('per-channel ranges equal a direct scan', () => {
    const channels = 7;
    const x = rng.normals(700 * channels);
    for (let i = 3; i < x.length; i += channels) x[i] *= 10;
    const r = new ChannelRanges(channels);
    r.add(x.subarray(0, 350 * channels));
    r.add(x.subarray(350 * channels));
    for (let c = 0; c < channels; c++) {
      const col = Array.from({ length: 700 }, (_v, i) => x[i * channels + c]);
      expect(r.min[c]).toBe(Math.min(...col));
      expect(r.max[c]).toBe(Math.max(...col));
      expect(r.absMax()[c]).toBe(Math.max(...col.map(Math.abs)));
    }
    expect(() => r.add(new Float32Array(5))).toThrow(InputError);
    expect(() => minMaxThreshold(new ActivationHistogram())).toThrow(InputError);
  });
});
