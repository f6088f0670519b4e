// `tensorwright quantize --method smoothquant|w8a8` and `eval --w8a8` on stories260K: the per-layer report (every
// decoder matmul W8A8, SmoothQuant's 1/s folded into the norms and producer rows, the tied classifier kept f32), the
// eval figures, the same W8A8 model on WebGPU scoring as on the CPU reference, and the usage errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('quantize --method smoothquant on stories260K');

const LONG = 300_000;
const model = sharedPath('models/stories260K/stories260K.bin');
const tokenizer = sharedPath('models/stories260K/tok512.bin');
const calib = sharedPath('data/stories260K-calib.txt');
const evalText = sharedPath('data/stories260K-eval-public.txt');

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

describe.skipIf(!hasShared)('quantize --method smoothquant|w8a8', () => {
  it('reports every decoder matmul as W8A8 with the smoothing folds, and scores the text', async () => {
    const r = await runCli(['quantize', '--model', model, '--tokenizer', tokenizer, '--method', 'smoothquant', '--bits', '8', '--calib', calib, '--calib-tokens', '255', '--eval', evalText, '--eval-tokens', '100', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout.trim());
    expect(o).toMatchObject({ method: 'smoothquant', activations: 'static', alpha: 0.5, calibration_tokens: 256 });
    // 5 layers of q, k, v, o, gate, up, down; the classifier is the embedding table (tied)
    expect(o.layers).toHaveLength(35);
    expect(o.layers.slice(0, 7).map((l: { smoothing: string }) => l.smoothing)).toEqual(['norm', 'norm', 'norm', 'rows', 'norm', 'norm', 'rows']);
    for (const l of o.layers) expect(l.activationScale, l.name).toBeGreaterThan(0);
    expect(o.kept).toEqual([{ name: 'tok_embeddings', why: 'classifier (stays f32)' }]);
    expect(o.eval.tokens).toBe(100);
    expect(o.eval.kl_mean).toBeGreaterThan(0);
    expect(o.eval.top1_agreement).toBeGreaterThan(0.8);
  }, LONG);

  it('eval --w8a8 on WebGPU scores as on the CPU reference', async (ctx) => {
    if (!gpu) return ctx.skip();
    const args = ['eval', '--model', model, '--tokenizer', tokenizer, '--text', evalText, '--max-tokens', '40', '--w8a8', 'per-token', '--smoothquant', '0.5', '--calib', calib, '--calib-tokens', '255', '--json'];
    const [cpu, webgpu] = [await runCli([...args, '--backend', 'cpu']), await runCli([...args, '--backend', 'webgpu'])];
    expect(cpu.code, cpu.stderr).toBe(0);
    expect(webgpu.code, webgpu.stderr).toBe(0);
    const [c, w] = [JSON.parse(cpu.stdout.trim()), JSON.parse(webgpu.stdout.trim())];
    expect(w.top1_agreement).toBe(c.top1_agreement);
    expect(w.kl_mean).toBeCloseTo(c.kl_mean, 5);
    expect(w.ppl).toBeCloseTo(c.ppl, 4);
  }, LONG);

  it('rejects what it cannot do with usage errors', async () => {
    // (-o now writes a compressed-tensors folder: test/w8a8-file.test.ts)
    const bits = await runCli(['quantize', '--model', model, '--tokenizer', tokenizer, '--method', 'w8a8', '--bits', '4', '--calib', calib]);
    expect(bits.code).toBe(2);
    expect(bits.stderr).toMatch(/--bits must be 8/);
    const noOut = await runCli(['quantize', '--model', model, '--tokenizer', tokenizer, '--method', 'rtn', '--bits', '4', '--calib', calib]);
    expect(noOut.code).toBe(2);
    expect(noOut.stderr).toMatch(/pass -o/);
    const noCalib = await runCli(['eval', '--model', model, '--tokenizer', tokenizer, '--text', evalText, '--w8a8', 'static']);
    expect(noCalib.code).toBe(2);
    expect(noCalib.stderr).toMatch(/--w8a8 needs --calib/);
  });
});
