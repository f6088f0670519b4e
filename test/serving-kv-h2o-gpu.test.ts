// H2O heavy-hitter KV eviction on the WebGPU engine (stories260K, f32, blocks of 4): the engine's attention-mass
// observers (one kernel after each layer's paged attention, emitted by codegen) report the mass the CPU reference
// executor reports for the same run, within f32 rounding, so the scheduler drops the same blocks in the same order
// and greedy generation gives the same ids, also for prompt chunks longer than an engine step and 560 tokens past the
// 512 context in a pool of the budget; an engine compiled without observers (an int8 KV cache) is refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../src/compile.js';
import { InputError } from '../src/errors.js';
import { loadModel, type LoadedModel } from '../src/frontends/load.js';
import type { Engine } from '../src/runtime/engine.js';
import type { BatchExecutor, ExecutorBatch } from '../src/runtime/serving/batch-executor.js';
import { BatchedEngineExecutor } from '../src/runtime/serving/batched-engine-executor.js';
import { ServingSession } from '../src/runtime/serving/serving-session.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { goldens, stories260K } from './support/serving.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('H2O KV eviction on the WebGPU engine');

// lavapipe JIT-compiles each pipeline on its first dispatch
const LONG = 600_000;

let gpu: TestGPU | null = null;
let model: LoadedModel;
let engine: Engine;
beforeAll(async () => {
  gpu = await acquireTestDevice();
  if (!gpu || !hasShared) return;
  model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
  engine = await compile(model, { device: gpu.info, precision: 'f32', batchInvariant: true, prefillChunk: 16, kv: { blockSize: 4 } });
}, LONG);
afterAll(() => gpu?.destroy());

/** Records every step's key shifts (each follows one dropped block) and the attention mass each step reported. */
function recorder<T extends BatchExecutor & { step(b: ExecutorBatch): Promise<number[]>; takeAttentionMass(id: number): Float64Array | undefined }>(ex: T): { shifts: string[]; masses: Float64Array[] } {
  const rec = { shifts: [] as string[], masses: [] as Float64Array[] };
  const step = ex.step.bind(ex);
  ex.step = async (b: ExecutorBatch) => {
    for (const s of b.shifts ?? []) rec.shifts.push(`${s.blocks.join(',')}-${s.delta}`);
    return step(b);
  };
  const take = ex.takeAttentionMass.bind(ex);
  ex.takeAttentionMass = (id: number) => {
    const m = take(id);
    if (m) rec.masses.push(Float64Array.from(m));
    return m;
  };
  return rec;
}

describe.skipIf(!hasShared)('H2O eviction on the WebGPU engine', () => {
  it('the GPU attention mass equals the CPU executor\'s; the same blocks are dropped and greedy ids agree', async (ctx) => {
    if (!gpu) return ctx.skip();
    expect(engine.manifest.kv?.attentionMass).toBeDefined();
    const g = goldens();
    const h2o = { policy: 'h2o', budgetTokens: 16, recentTokens: 4 } as const;
    const req = { promptIds: g[3].prompt_ids, maxTokens: 40, temperature: 0, ignoreStopTokens: true, kvEviction: h2o };
    const cpu = (await stories260K()).executor(8, 4);
    const cpuRec = recorder(cpu);
    const cpuSession = new ServingSession(cpu, { maxBatchTokens: 8 });
    const want = await cpuSession.generate(req);
    const es = await engine.createSession({ device: gpu, kvBlocks: 8 });
    const ex = new BatchedEngineExecutor(es, { maxPositions: model.maxPositions, vocabSize: model.config.vocabSize, stopTokens: model.stopTokens });
    expect(ex.tracksAttention).toBe(true);
    const gpuRec = recorder(ex);
    const gpuSession = new ServingSession(ex, { maxBatchTokens: 8 });
    const got = await gpuSession.generate(req);
    expect(gpuRec.masses.length).toBe(cpuRec.masses.length);
    let worst = 0;
    cpuRec.masses.forEach((m, i) => {
      expect(gpuRec.masses[i].length).toBe(m.length);
      m.forEach((x, j) => (worst = Math.max(worst, Math.abs(gpuRec.masses[i][j] - x))));
    });
    process.stderr.write(`[kv-h2o gpu] ${cpuSession.scheduler.evictedBlocks} blocks dropped; worst |mass gpu - cpu| ${worst.toExponential(2)} (a step's mass sums to layers x heads x tokens)\n`);
    expect(worst).toBeLessThan(1e-4);
    expect(cpuSession.scheduler.evictedBlocks).toBeGreaterThan(5);
    expect(gpuSession.scheduler.evictedBlocks).toBe(cpuSession.scheduler.evictedBlocks);
    expect(gpuRec.shifts).toEqual(cpuRec.shifts);
    expect(got.ids).toEqual(want.ids);
    await es.destroy();
  }, LONG);

  it('a prompt longer than an engine step (chunks summed), then 560 tokens past the 512 context in a pool of the budget: the CPU executor\'s ids', async (ctx) => {
    if (!gpu) return ctx.skip();
    const g = goldens();
    // 40 prompt tokens: the scheduler's 32-token chunks run as two engine steps of at most 16 each
    const prompt = [...g[1].prompt_ids, ...g[1].generated_ids].slice(0, 40);
    const h2o = { policy: 'h2o', budgetTokens: 48, recentTokens: 16 } as const;
    const req = { promptIds: prompt, maxTokens: 560, temperature: 0, ignoreStopTokens: true, kvEviction: h2o };
    const cpu = (await stories260K()).executor(12, 4);
    const cpuRec = recorder(cpu);
    const want = await new ServingSession(cpu, { maxBatchTokens: 32 }).generate(req);
    const es = await engine.createSession({ device: gpu, kvBlocks: 12 });
    const ex = new BatchedEngineExecutor(es, { maxPositions: model.maxPositions, vocabSize: model.config.vocabSize, stopTokens: model.stopTokens });
    const gpuRec = recorder(ex);
    const session = new ServingSession(ex, { maxBatchTokens: 32 });
    let most = 0;
    session.onStep = () => (most = Math.max(most, session.scheduler.blocks.usedBlocks));
    const got = await session.generate(req);
    expect(got.ids.length).toBe(560);
    expect(most).toBe(12);
    // the first step's mass covers the 32-token chunk run as two engine steps
    expect(gpuRec.masses[0].length).toBe(32);
    let worst = 0;
    gpuRec.masses.slice(0, 3).forEach((m, i) => m.forEach((x, j) => (worst = Math.max(worst, Math.abs(x - cpuRec.masses[i][j])))));
    expect(worst).toBeLessThan(1e-4);
    expect(gpuRec.shifts).toEqual(cpuRec.shifts);
    expect(got.ids).toEqual(want.ids);
    await es.destroy();
  }, LONG);

  it('an engine without attention-mass observers (int8 KV cache) is refused by the scheduler and by stepPaged', async (ctx) => {
    if (!gpu) return ctx.skip();
    const e8 = await compile(model, { device: gpu.info, precision: 'f32', prefillChunk: 8, kv: { blockSize: 4, dtype: 'int8' } });
    expect(e8.manifest.kv?.attentionMass).toBeUndefined();
    const es = await e8.createSession({ device: gpu, kvBlocks: 8 });
    const ex = new BatchedEngineExecutor(es, { maxPositions: model.maxPositions, vocabSize: model.config.vocabSize, stopTokens: model.stopTokens });
    expect(ex.tracksAttention).toBe(false);
    expect(() => new ServingSession(ex, { kvEviction: { policy: 'h2o', budgetTokens: 16, recentTokens: 4 } })).toThrow(/kvEviction 'h2o' needs a model backend that tracks attention/);
    await expect(es.stepPaged([{ tokens: [1], start: 0, blockTable: [0], attentionMass: true }])).rejects.toThrow(InputError);
    await es.destroy();
  }, LONG);
});
