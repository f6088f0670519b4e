// Static W8A8 activation scales by calibrator (`quantize --method minmax|percentile|mse|entropy --bits 8`) on
// stories260K, scored against the f32 model: the README's claim that entropy (TensorRT KL) calibration does NOT reach
// #15's bar (KL ≤ min-max's) — it clips the SwiGLU output feeding the down projections far below its range — checked on
// the first 600 evaluation tokens, calibrating on the first 2048 calibration tokens, also with `--outliers 2` (outlier
// channels in f32, which lowers min-max's KL but leaves entropy above it); and the usage errors.
import { describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('W8A8 calibrators on stories260K');

const LONG = 300_000;
const model = sharedPath('models/stories260K/stories260K.bin');
const tokenizer = sharedPath('models/stories260K/tok512.bin');
const calib = sharedPath('data/stories260K-calib.txt');
const evalText = sharedPath('data/stories260K-eval-public.txt');
const base = ['quantize', '--model', model, '--tokenizer', tokenizer, '--bits', '8', '--calib', calib];

interface Layer {
  name: string;
  inputMax: number;
  clip: number;
  activationScale: number;
  outlierChannels?: number[];
}

describe.skipIf(!hasShared)('W8A8 static scales by calibrator', () => {
  it('entropy calibration clips the down projections and scores a larger KL than min-max, with or without outlier channels in f32', async () => {
    const run = async (method: string, ...flags: string[]): Promise<{ layers: Layer[]; calibrator: string; eval: { kl_mean: number } }> => {
      const r = await runCli([...base, '--method', method, ...flags, '--calib-tokens', '2047', '--eval', evalText, '--eval-tokens', '600', '--json']);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout.trim());
    };
    const [minmax, entropy] = [await run('minmax'), await run('entropy')];
    expect(minmax).toMatchObject({ method: 'minmax', activations: 'static', calibrator: 'minmax' });
    expect(entropy).toMatchObject({ method: 'entropy', activations: 'static', calibrator: 'entropy' });
    for (const l of minmax.layers) {
      expect(l.clip, l.name).toBe(l.inputMax);
      expect(l.activationScale, l.name).toBeCloseTo(l.inputMax / 127, 6);
    }
    for (const l of entropy.layers) {
      expect(l.clip, l.name).toBeLessThanOrEqual(l.inputMax);
      expect(l.activationScale, l.name).toBeCloseTo(l.clip / 127, 6);
    }
    // the down projections' inputs (SwiGLU outputs, the most heavy-tailed) are clipped well inside their range
    for (const l of entropy.layers.filter((x) => x.name.endsWith('.w2'))) expect(l.clip, l.name).toBeLessThan(0.6 * l.inputMax);
    expect(entropy.eval.kl_mean).toBeGreaterThan(minmax.eval.kl_mean);

    // --outliers 2 (the channels over 2× the median channel max in f32, out of every calibrator's statistics) lowers
    // min-max's KL, and entropy still scores above min-max: it still clips the down projections' inputs
    const [minmaxOut, entropyOut] = [await run('minmax', '--outliers', '2'), await run('entropy', '--outliers', '2')];
    expect(minmaxOut.layers.some((l) => l.outlierChannels!.length > 0)).toBe(true);
    for (const [i, l] of entropyOut.layers.entries()) expect(l.outlierChannels, l.name).toEqual(minmaxOut.layers[i].outlierChannels);
    for (const l of minmaxOut.layers) expect(l.clip, l.name).toBe(l.inputMax);
    expect(minmaxOut.eval.kl_mean).toBeLessThan(minmax.eval.kl_mean);
    for (const l of entropyOut.layers.filter((x) => x.name.endsWith('.w2'))) expect(l.clip, l.name).toBeLessThan(0.8 * l.inputMax);
    expect(entropyOut.eval.kl_mean).toBeGreaterThan(minmaxOut.eval.kl_mean);
  }, LONG);

  it('rejects contradictory calibrator flags', async () => {
    const bits = await runCli([...base, '--method', 'entropy', '--bits', '4']);
    expect(bits.code).toBe(2);
    expect(bits.stderr).toMatch(/--bits must be 8/);
    const perToken = await runCli([...base, '--method', 'mse', '--activations', 'per-token']);
    expect(perToken.code).toBe(2);
    expect(perToken.stderr).toMatch(/--activations must be static/);
    const both = await runCli([...base, '--method', 'smoothquant', '--activations', 'per-token', '--calibrator', 'entropy']);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/per-token scales need none/);
    const out = await runCli([...base, '--method', 'entropy', '--outliers', '2', '-o', '/tmp/never-written']);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(/no place for f32 outlier channels/);
    const pct = await runCli([...base, '--method', 'w8a8', '--percentile', '99.9']);
    expect(pct.code).toBe(2);
    expect(pct.stderr).toMatch(/--percentile goes with the percentile calibrator/);
  });
});
