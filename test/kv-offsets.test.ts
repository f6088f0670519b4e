// Centered KV caches (`--kv-calib`): the rewrite leaves attention's result unchanged (f32 cache, CPU reference), an
// int8 cache with it clears the 0.99 top-1 bar on stories260K's whole public eval text (calibrated on the calibration
// text only), WebGPU agrees with the CPU reference, a saved engine carries the offsets, and misuse is a typed error.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tokenWindows } from '../src/compress/capture.js';
import { calibrateKvOffsets, centerCachedKv } from '../src/compress/key-offsets.js';
import { InputError } from '../src/errors.js';
import { loadModel } from '../src/frontends/load.js';
import { cpuProfile } from '../src/ir/device-profile.js';
import { runPasses } from '../src/passes/pipeline.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { Llama2cTokenizer } from '../src/tokenizers/llama2c.js';
import { acquireTestDevice } from './helpers/webgpu.js';
import { runCli } from './support/cli.js';
import { goldens } from './support/serving.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';
import { readFileSync } from 'node:fs';

noteMissingShared('centered KV cache tests');

const MODEL = hasShared ? sharedPath('models/stories260K/stories260K.bin') : '';
const TOK = hasShared ? sharedPath('models/stories260K/tok512.bin') : '';
const CALIB = hasShared ? sharedPath('data/stories260K-calib.txt') : '';
const EVAL = hasShared ? sharedPath('data/stories260K-eval-public.txt') : '';

interface EngineJson {
  weights: { name: string }[];
  plans: { dispatches: unknown[] }[];
}

interface EvalJson {
  tokens: number;
  kl_mean: number;
  top1_agreement: number;
  ppl: number;
}

async function evalJson(args: string[]): Promise<EvalJson> {
  const r = await runCli(['eval', '--model', MODEL, '--tokenizer', TOK, '--text', EVAL, '--json', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as EvalJson;
}

describe.skipIf(!hasShared)('centered KV caches (--kv-calib)', () => {
  it('centering keys and values and balancing key channels leaves the f32 model\'s logits unchanged', async () => {
    const model = await loadModel(MODEL);
    const tok = await Llama2cTokenizer.fromFile(TOK, 512);
    const windows = tokenWindows(tok.encode(readFileSync(CALIB, 'utf8')), model.bosId, 128, 512);
    const offsets = calibrateKvOffsets(model.build({ lastTokenLogitsOnly: true }), windows);
    expect(offsets.tokens).toBeGreaterThan(500);
    // the keys really do carry a large common component: some channel's mean is well away from 0
    expect(Math.max(...[...offsets.keys.values()].flatMap((m) => Array.from(m, Math.abs)))).toBeGreaterThan(0.5);
    const plain = new CpuCausalLM(runPasses(model.build({ lastTokenLogitsOnly: true }), 'O3', { device: cpuProfile }).graph, model.maxPositions);
    const centered = new CpuCausalLM(runPasses(centerCachedKv(model.build({ lastTokenLogitsOnly: true }), offsets, { values: true, scaleKeys: true }), 'O3', { device: cpuProfile }).graph, model.maxPositions);
    const g = goldens()[3];
    let a = plain.step(g.prompt_ids);
    let b = centered.step(g.prompt_ids);
    for (const t of g.generated_ids.slice(0, 20)) {
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      expect(worst).toBeLessThan(2e-4);
      a = plain.step([t]);
      b = centered.step([t]);
    }
    // offsets of another shape are refused, naming the layer
    const wrong = { ...offsets, heads: offsets.heads * 2 };
    expect(() => centerCachedKv(model.build({}), wrong)).toThrow(InputError);
    expect(() => centerCachedKv(model.build({}), wrong)).toThrow(/layer 0/);
  }, 120_000);

  it('int8 KV with --kv-calib: top-1 agreement >= 0.99 over all 6134 eval tokens and lower KL than without (CPU reference)', async () => {
    const without = await evalJson(['--backend', 'cpu', '--kv-dtype', 'int8']);
    const centered = await evalJson(['--backend', 'cpu', '--kv-dtype', 'int8', '--kv-calib', CALIB]);
    expect(centered.tokens).toBe(6134);
    expect(centered.top1_agreement).toBeGreaterThanOrEqual(0.99);
    expect(without.top1_agreement).toBeLessThan(0.99);
    expect(centered.kl_mean).toBeLessThan(0.5 * without.kl_mean);
  }, 300_000);

  it('WebGPU agrees with the CPU reference, and a compiled engine carries the offsets', async (ctx) => {
    const gpu = await acquireTestDevice();
    if (!gpu) return ctx.skip();
    await gpu.destroy();
    const args = ['--kv-dtype', 'int8', '--kv-calib', CALIB, '--max-tokens', '120'];
    const cpu = await evalJson(['--backend', 'cpu', ...args]);
    const webgpu = await evalJson(['--backend', 'webgpu', ...args]);
    expect(Math.abs(cpu.kl_mean - webgpu.kl_mean)).toBeLessThan(1e-3);
    const dir = join(mkdtempSync(join(tmpdir(), 'tw-kvc-')), 'engine');
    const c = await runCli(['compile', '--model', MODEL, '--tokenizer', TOK, '--kv-dtype', 'int8', '--kv-calib', CALIB, '--whole-step', 'off', '-o', dir]);
    expect(c.code, c.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(join(dir, 'engine.json'), 'utf8')) as EngineJson;
    expect(manifest.weights.some((w) => w.name === 'past_k.0.center')).toBe(true);
    // the centering costs no kernels: rope epilogues and projection biases carry it
    const plainDir = join(mkdtempSync(join(tmpdir(), 'tw-kvc-')), 'engine');
    const p = await runCli(['compile', '--model', MODEL, '--tokenizer', TOK, '--kv-dtype', 'int8', '--whole-step', 'off', '-o', plainDir]);
    expect(p.code, p.stderr).toBe(0);
    const plain = JSON.parse(readFileSync(join(plainDir, 'engine.json'), 'utf8')) as EngineJson;
    expect(manifest.plans.map((pl) => pl.dispatches.length)).toEqual(plain.plans.map((pl) => pl.dispatches.length));
    const g = goldens()[3];
    const r = await runCli(['generate', '--engine', dir, '--prompt', g.prompt, '--steps', String(g.prompt_ids.length + 12), '--temperature', '0', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { generated_ids: number[] }).generated_ids.slice(0, 12)).toEqual(g.generated_ids.slice(0, 12));
  }, 300_000);

  it('--kv-calib without a tokenizer or with a missing file is a usage error', async () => {
    const missing = await runCli(['eval', '--model', MODEL, '--tokenizer', TOK, '--text', EVAL, '--kv-dtype', 'int8', '--kv-calib', '/nonexistent/calib.txt', '--backend', 'cpu']);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/--kv-calib/);
  });
});
