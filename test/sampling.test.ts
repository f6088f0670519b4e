// The host sampler (src/runtime/sampling.ts) against an independent reference (test/support/reference-sampler.ts):
// top-k by value with ties in index order, then multinomial or run.c's top-p, the same coin giving the same token.
// The GPU sampler is held to the same reference in codegen-kernels.test.ts.
import { describe, expect, it } from 'vitest';
import { samplerParamValues, SAMPLER_PARAM_NAMES } from '../src/runtime/sampler-params.js';
import { Sampler, sampleToken, validateSampling } from '../src/runtime/sampling.js';
import { InputError } from '../src/errors.js';
import { XorShiftRng } from '../src/util/random.js';
import { acceptablePicks, referencePick, referenceTopK, samplingCases } from './support/reference-sampler.js';

describe('host sampler against the reference', () => {
  it('top-k keeps the larger value: logits [1,1,1,2,0,0] with top-k 2 keep {3, 0}, and a coin sweep picks both', () => {
    const logits = Float32Array.of(1, 1, 1, 2, 0, 0);
    expect(referenceTopK(logits, 2)).toEqual([3, 0]);
    for (const topp of [1, 0.9]) {
      const s = { temperature: 1, topp, topk: 2 };
      const picks = new Set<number>();
      for (let j = 0; j < 64; j++) {
        const coin = j / 64;
        const host = sampleToken(logits, s, coin);
        expect(host, `topp ${topp} coin ${coin}`).toBe(referencePick(logits, s, coin));
        picks.add(host);
      }
      expect([...picks].sort(), `topp ${topp}`).toEqual([0, 3]);
    }
    // top-k 1 is argmax; top-k 4 keeps index 3 and the first three ties
    for (let j = 0; j < 16; j++) expect(sampleToken(logits, { temperature: 1, topp: 1, topk: 1 }, j / 16)).toBe(3);
    const four = new Set(Array.from({ length: 64 }, (_v, j) => sampleToken(logits, { temperature: 1, topp: 1, topk: 4 }, j / 64)));
    expect([...four].sort()).toEqual([0, 1, 2, 3]);
  });

  it('same coin, same token as the reference on random and tie-heavy rows (multinomial, top-k, top-p)', () => {
    let draws = 0;
    let offExact = 0; // picks that agree only through the boundary allowance
    for (const V of [6, 50, 300]) {
      for (const c of samplingCases(V, 40, V)) {
        const kept = new Set(referenceTopK(c.logits, c.settings.topk));
        const coins = new XorShiftRng(V * 1000 + draws);
        const host = new Sampler({ ...c.settings, seed: V * 1000 + draws });
        for (let d = 0; d < 12; d++) {
          const coin = coins.nextF32();
          const got = host.sample(c.logits);
          expect(kept.has(got), `${c.name}: ${got} is not in the top-k set`).toBe(true);
          const ok = acceptablePicks(c.logits, c.settings, coin);
          expect(ok.has(got), `${c.name} coin ${coin}: host ${got}, reference ${[...ok]}`).toBe(true);
          if (got !== referencePick(c.logits, c.settings, coin)) offExact++;
          draws++;
        }
      }
    }
    expect(draws).toBe(3 * 40 * 12);
    expect(offExact).toBe(0);
  });

  it('a coin past the end of the cdf takes the last token in the kept set, never one top-k dropped', () => {
    // rounding can leave the f32 cdf of the kept tokens just below the coin; a coin of 1 forces that path
    const logits = Float32Array.of(0, 3, 0, 3, 0, 0);
    expect(sampleToken(logits, { temperature: 1, topp: 1, topk: 2 }, 1)).toBe(3);
    expect(referencePick(logits, { temperature: 1, topp: 1, topk: 2 }, 1)).toBe(3);
    expect(sampleToken(logits, { temperature: 1, topp: 1 }, 1)).toBe(5);
  });

  it('settings are checked', () => {
    expect(() => validateSampling({ temperature: 0.8, topp: 1.5, seed: 1 })).toThrow(InputError);
    expect(() => validateSampling({ temperature: -1, topp: 0.9, seed: 1 })).toThrow(/temperature/);
    expect(() => validateSampling({ temperature: 1, topp: 0.9, topk: 2.5, seed: 1 })).toThrow(/topk/);
  });
});

describe('GPU sampler params', () => {
  it('carry the settings as f32 bits; top-k at or above V and top-p outside (0, 1) are off', () => {
    const bits = (x: number): number => new Uint32Array(Float32Array.of(x).buffer)[0];
    const on = samplerParamValues({ temperature: 0.8, topp: 0.9, topk: 40, coin: 0.25 }, 512);
    expect(on).toEqual({
      [SAMPLER_PARAM_NAMES.coin]: bits(0.25),
      [SAMPLER_PARAM_NAMES.temperature]: bits(0.8),
      [SAMPLER_PARAM_NAMES.topk]: 40,
      [SAMPLER_PARAM_NAMES.topp]: bits(0.9),
      [SAMPLER_PARAM_NAMES.toppCutoff]: on[SAMPLER_PARAM_NAMES.toppCutoff],
    });
    // the cutoff is the smallest f32 at or above (1 - topp) / (V - 1)
    const cutoff = new Float32Array(new Uint32Array([on[SAMPLER_PARAM_NAMES.toppCutoff]]).buffer)[0];
    const below = new Float32Array(new Uint32Array([on[SAMPLER_PARAM_NAMES.toppCutoff] - 1]).buffer)[0];
    expect(cutoff).toBeGreaterThanOrEqual(0.1 / 511);
    expect(below).toBeLessThan(0.1 / 511);
    const off = samplerParamValues({ temperature: 1, topp: 1, topk: 512, coin: 0 }, 512);
    expect([off[SAMPLER_PARAM_NAMES.topk], off[SAMPLER_PARAM_NAMES.topp], off[SAMPLER_PARAM_NAMES.toppCutoff]]).toEqual([0, 0, 0]);
    expect(samplerParamValues({ temperature: 1, topp: 0, coin: 0 }, 512)[SAMPLER_PARAM_NAMES.topp]).toBe(0);
    // a top-p that is on but rounds to f32 zero stays on
    expect(samplerParamValues({ temperature: 1, topp: 1e-50, coin: 0 }, 512)[SAMPLER_PARAM_NAMES.topp]).toBe(1);
  });
});
