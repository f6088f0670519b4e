// Speculative decoding on stories260K (#14 item 4): greedy output with n-gram drafts and with an int4 draft model
// equals the golden (run.c) output on the CPU reference and on WebGPU; the verify plan's logits for every row match
// the CPU reference; rolling the KV cache back and running other tokens gives the logits of a fresh run; and sampled
// output keeps the target's next-token distribution (chi-square against the exact conditionals, fixed seeds).
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile, compressionOf } from '../src/compile.js';
import { loadModel, type LoadedModel } from '../src/frontends/load.js';
import { cpuProfile } from '../src/ir/device-profile.js';
import { runPasses } from '../src/passes/pipeline.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import type { Engine } from '../src/runtime/engine.js';
import { samplingProbabilities } from '../src/runtime/sampling.js';
import { cpuTarget, engineTarget, speculativeGenerate, type SpeculativeTarget } from '../src/runtime/speculative/speculative-generate.js';
import { cpuDraftModel, engineDraftModel, ModelDrafter } from '../src/runtime/speculative/model-drafter.js';
import { NgramDrafter } from '../src/runtime/speculative/ngram-drafter.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';
import { chiSquareTest } from './support/chi-square.js';

noteMissingShared('speculative decoding on stories260K');

const LONG = 600_000;
const golden = (i: number): { prompt_ids: number[]; steps: number; generated_ids: number[] } => JSON.parse(readFileSync(sharedPath(`golden/stories260K/stories260K-${i}.json`), 'utf8'));
const STEPS = 120; // a prefix of the 256-step goldens keeps the CPU runs short
const greedy = { temperature: 0, topp: 1, seed: 1, steps: STEPS };

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe.skipIf(!hasShared)('speculative decoding on stories260K, CPU reference', () => {
  let model: LoadedModel;
  let target: CpuCausalLM;
  let draft: CpuCausalLM;
  beforeAll(async () => {
    model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    target = new CpuCausalLM(runPasses(model.build({}), 'O3', { device: cpuProfile }).graph, model.maxPositions);
    draft = new CpuCausalLM(runPasses(model.build({ lastTokenLogitsOnly: true }), 'O3', { device: cpuProfile, options: compressionOf({ quant: 'int4-g32' }) }).graph, model.maxPositions);
  });

  it('greedy output with n-gram drafts and with an int4 draft model is the golden output', async () => {
    for (const i of [1, 3]) {
      const g = golden(i);
      const want = g.generated_ids.slice(0, STEPS - g.prompt_ids.length + 1);
      const ngram = await speculativeGenerate(cpuTarget(target, model.config.vocabSize), new NgramDrafter(), g.prompt_ids, { ...greedy, stopTokens: model.stopTokens });
      expect(ngram.generated).toEqual(want);
      expect(ngram.stats.targetSteps).toBeLessThan(want.length - 1);
      const drafted = await speculativeGenerate(cpuTarget(target, model.config.vocabSize), new ModelDrafter(cpuDraftModel(draft)), g.prompt_ids, { ...greedy, stopTokens: model.stopTokens, draftLength: 6 });
      expect(drafted.generated).toEqual(want);
      expect(drafted.stats.acceptanceRate).toBeGreaterThan(0.3);
    }
  }, LONG);

  it('rolling the cache back and running other tokens gives the logits of a fresh run', () => {
    const prompt = golden(2).prompt_ids;
    target.reset();
    target.stepAll([...prompt, 7, 8, 9, 10]);
    target.truncate(prompt.length + 1);
    const rolled = target.stepAll([42, 43]);
    target.reset();
    const fresh = target.stepAll([...prompt, 7, 42, 43]);
    expect(maxAbsDiff(rolled, fresh.slice((prompt.length + 1) * model.config.vocabSize))).toBe(0);
    expect(() => target.truncate(target.position + 1)).toThrow(/roll/);
  });

  it('sampled output keeps the target distribution of the tokens after the first (chi-square, fixed seeds)', async () => {
    // each run's second and third tokens are compared with the exact conditional distributions given the tokens
    // before them: the counts per token summed over runs against the probabilities summed over runs
    const prompt = golden(3).prompt_ids;
    const s = { temperature: 1, topp: 0.95, topk: 0 };
    const vocab = model.config.vocabSize;
    const runs = 300;
    const drafted = new ModelDrafter(cpuDraftModel(draft));
    // the prompt is run once: a target whose prefill rolls back to the prompt afterwards
    target.reset();
    const promptLogits = target.stepAll(prompt).slice((prompt.length - 1) * vocab);
    const base = cpuTarget(target, vocab);
    const cached: SpeculativeTarget = { ...base, maxVerifyTokens: 17, get position() { return target.position; }, reset: () => target.truncate(prompt.length), prefill: () => promptLogits, verify: (t) => target.stepAll(t), truncate: (n) => target.truncate(n) };
    const observed = [new Map<string, number>(), new Map<string, number>()];
    const expected = [new Map<string, number>(), new Map<string, number>()];
    for (let seed = 1; seed <= runs; seed++) {
      const r = await speculativeGenerate(cached, drafted, prompt, { ...s, seed, steps: prompt.length + 2, stopTokens: [], draftLength: 3 });
      expect(r.generated.length).toBe(3);
      target.truncate(prompt.length);
      const rows = target.stepAll(r.generated.slice(0, 2));
      for (let j = 0; j < 2; j++) {
        const p = samplingProbabilities(rows.subarray(j * vocab, (j + 1) * vocab), s);
        p.forEach((v, t) => v > 0 && expected[j].set(String(t), (expected[j].get(String(t)) ?? 0) + v));
        const t = String(r.generated[j + 1]);
        observed[j].set(t, (observed[j].get(t) ?? 0) + 1);
      }
    }
    for (let j = 0; j < 2; j++) {
      const res = chiSquareTest(observed[j], expected[j]);
      expect(res.df).toBeGreaterThan(3);
      expect(res.p, JSON.stringify(res)).toBeGreaterThan(1e-4);
    }
  }, LONG);
});

describe.skipIf(!hasShared)('speculative decoding on stories260K, WebGPU', () => {
  let gpu: TestGPU | null = null;
  let model: LoadedModel;
  let engine: Engine;
  let draftEngine: Engine;
  beforeAll(async () => {
    gpu = await acquireTestDevice();
    if (!gpu) return;
    model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    engine = await compile(model, { device: gpu.info, prefillChunk: 16 });
    draftEngine = await compile(model, { device: gpu.info, quant: 'int4-g32' });
  }, LONG);
  afterAll(() => gpu?.destroy());

  it('the verify plan returns the logits of every row; rollback and one-token verification agree with the CPU reference', async (ctx) => {
    if (!gpu) return ctx.skip();
    const cpu = new CpuCausalLM(model.build({}), model.maxPositions);
    const session = await engine.createSession({ device: gpu });
    try {
      expect(session.maxVerifyTokens).toBe(16); // a step's token budget: the prefill chunk
      const prompt = golden(4).prompt_ids;
      await session.step(prompt, { temperature: 0, topp: 1, coin: 0 });
      cpu.stepAll(prompt);
      const drafted = [5, 6, 7, 8, 9, 10, 11, 12, 13];
      expect(maxAbsDiff(await session.stepAllLogits(drafted), cpu.stepAll(drafted))).toBeLessThan(1e-4);
      session.truncate(prompt.length + 2);
      cpu.truncate(prompt.length + 2);
      expect(session.position).toBe(prompt.length + 2);
      expect(maxAbsDiff(await session.stepAllLogits([40, 41, 42]), cpu.stepAll([40, 41, 42]))).toBeLessThan(1e-4);
      expect(maxAbsDiff(await session.stepAllLogits([43]), cpu.stepAll([43]))).toBeLessThan(1e-4);
      await expect(session.stepAllLogits(new Array(17).fill(3))).rejects.toThrow(/1 to 16 tokens/);
      expect(() => session.truncate(session.position + 1)).toThrow(/roll/);
    } finally {
      await session.destroy();
    }
  }, LONG);

  it('greedy output with n-gram drafts and with an int4 draft engine is the golden output', async (ctx) => {
    if (!gpu) return ctx.skip();
    const session = await engine.createSession({ device: gpu });
    const draftSession = await draftEngine.createSession({ device: gpu });
    try {
      for (const i of [1, 3]) {
        const g = golden(i);
        const o = { temperature: 0, topp: 1, seed: 1, steps: g.steps, stopTokens: model.stopTokens };
        const ngram = await speculativeGenerate(engineTarget(session), new NgramDrafter(), g.prompt_ids, o);
        expect(ngram.generated, `ngram ${i}`).toEqual(g.generated_ids);
        const drafted = await speculativeGenerate(engineTarget(session), new ModelDrafter(engineDraftModel(draftSession)), g.prompt_ids, { ...o, draftLength: 6 });
        expect(drafted.generated, `draft ${i}`).toEqual(g.generated_ids);
        expect(drafted.stats.targetSteps).toBeLessThan(g.generated_ids.length - 1);
      }
      // an engine whose steps take one token cannot verify a draft
      const oneTokenSteps = { engine: draftSession.engine, maxVerifyTokens: 1 } as unknown as typeof draftSession;
      expect(() => engineTarget(oneTokenSteps)).toThrow(/at least 2 tokens/);
    } finally {
      await draftSession.destroy();
      await session.destroy();
    }
  }, LONG);
});
