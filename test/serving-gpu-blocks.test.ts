// The serving scheduler's block manager driving the WebGPU engine's KV pool (`EngineSession.stepPaged`): prefix-cache
// hits share blocks on the GPU, copy-on-write copies and swaps to host memory happen on the device, and every output
// equals run.c's golden ids (stories260K, f32, batch-invariant kernels).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../src/compile.js';
import { InputError } from '../src/errors.js';
import { loadModel, type LoadedModel } from '../src/frontends/load.js';
import type { Engine } from '../src/runtime/engine.js';
import { BatchedEngineExecutor } from '../src/runtime/serving/batched-engine-executor.js';
import { ServingSession } from '../src/runtime/serving/serving-session.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { goldens } from './support/serving.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('serving on the WebGPU engine with the scheduler\'s block tables');

// lavapipe JIT-compiles each pipeline on its first dispatch
const LONG = 600_000;

let gpu: TestGPU | null = null;
let model: LoadedModel;
let engine: Engine;
beforeAll(async () => {
  gpu = await acquireTestDevice();
  if (!gpu || !hasShared) return;
  model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
  engine = await compile(model, { device: gpu.info, precision: 'f32', batchInvariant: true, prefillChunk: 64, kv: { blockSize: 4 } });
}, LONG);
afterAll(() => gpu?.destroy());

async function servingOn(kvBlocks: number, options: ConstructorParameters<typeof ServingSession>[1] = {}): Promise<{ session: ServingSession; executor: BatchedEngineExecutor; destroy: () => Promise<void> }> {
  const es = await engine.createSession({ device: gpu!, kvBlocks });
  const executor = new BatchedEngineExecutor(es, { maxPositions: model.maxPositions, vocabSize: model.config.vocabSize, stopTokens: model.stopTokens });
  return { session: new ServingSession(executor, { maxBatchTokens: 64, ...options }), executor, destroy: () => es.destroy() };
}

describe.skipIf(!hasShared)('serving on the WebGPU engine with the scheduler\'s block tables', () => {
  it('runs on the scheduler\'s tables with its prefix cache on', async (ctx) => {
    if (!gpu) return ctx.skip();
    const { session, executor, destroy } = await servingOn(64);
    expect(executor.sharesBlocks).toBe(true);
    expect(executor.canSwap).toBe(true);
    expect(session.scheduler.blocks.prefixCaching).toBe(true);
    await destroy();
  });

  it('a repeated prompt starts on its cached blocks (read on the GPU) and still gives the golden ids', async (ctx) => {
    if (!gpu) return ctx.skip();
    const g = goldens();
    const { session, destroy } = await servingOn(384);
    for (const i of [3, 4]) {
      const first = await session.generate({ promptIds: g[i].prompt_ids, maxTokens: 24, temperature: 0 });
      expect(first.ids, `golden ${i}, first`).toEqual(g[i].generated_ids.slice(0, 24));
      const again = await session.generate({ promptIds: g[i].prompt_ids, maxTokens: 24, temperature: 0 });
      expect(again.ids, `golden ${i}, again`).toEqual(g[i].generated_ids.slice(0, 24));
      // the whole blocks of the prompt come from the cache: only the tail of the prompt is computed again
      expect(again.finish.cachedTokens).toBe(Math.floor((g[i].prompt_ids.length - 1) / 4) * 4);
      expect(again.finish.cachedTokens).toBeGreaterThan(0);
    }
    expect(session.metrics().prefixHitRate).toBeGreaterThan(0);
    await destroy();
  }, LONG);

  it('16 requests on one 256-token prefix hold at most 1.3x the blocks of one, with the same output as alone', async (ctx) => {
    if (!gpu) return ctx.skip();
    const g = goldens();
    const story = g.flatMap((x) => x.generated_ids).filter((t) => t !== 1);
    const prefix = [1, ...story.slice(0, 255)];
    const prompt = (r: number): number[] => [...prefix, story[300 + r]];
    const held = async (requests: number): Promise<{ blocks: number; ids: number[][] }> => {
      const { session, destroy } = await servingOn(1024);
      let blocks = 0;
      session.onStep = () => (blocks = Math.max(blocks, session.scheduler.blocks.usedBlocks));
      const rs = await Promise.all(Array.from({ length: requests }, (_v, r) => session.generate({ promptIds: prompt(r), maxTokens: 3, temperature: 0 })));
      await destroy();
      return { blocks, ids: rs.map((x) => x.ids) };
    };
    const one = await held(1);
    const sixteen = await held(16);
    expect(sixteen.blocks).toBeLessThanOrEqual(1.3 * one.blocks);
    expect(sixteen.ids[0]).toEqual(one.ids[0]);
    // each request alone, on a fresh pool: the shared blocks changed nothing
    for (const r of [5, 11]) {
      const { session, destroy } = await servingOn(256);
      expect((await session.generate({ promptIds: prompt(r), maxTokens: 3, temperature: 0 })).ids, `request ${r}`).toEqual(sixteen.ids[r]);
      await destroy();
    }
  }, LONG);

  it('preemption by swapping copies blocks to host memory and back; every request is golden-exact', async (ctx) => {
    if (!gpu) return ctx.skip();
    const g = goldens();
    // a pool of 96 blocks of 4 tokens cannot hold ten goldens' prompts plus 40 tokens each at once
    const { session, executor, destroy } = await servingOn(96, { preemption: 'swap' });
    expect(session.scheduler.swapping).toBe(true);
    const runs = Array.from({ length: 10 }, (_v, i) => session.generate({ promptIds: g[i % g.length].prompt_ids, maxTokens: 40, temperature: 0 }));
    const results = await Promise.all(runs);
    results.forEach((r, i) => expect(r.ids, `request ${i}`).toEqual(g[i % g.length].generated_ids.slice(0, 40)));
    const m = session.metrics();
    expect(m.preemptions).toBeGreaterThan(0);
    expect(m.swapOuts).toBeGreaterThan(0);
    void executor;
    await destroy();
  }, LONG);

  it('after stepPaged the session\'s own sequences are refused, and bad tables are typed errors', async (ctx) => {
    if (!gpu) return ctx.skip();
    const es = await engine.createSession({ device: gpu!, kvBlocks: 8 });
    await expect(es.stepPaged([{ tokens: [1], start: 0, blockTable: [] }])).rejects.toBeInstanceOf(InputError);
    await expect(es.stepPaged([{ tokens: [1], start: 0, blockTable: [8] }])).rejects.toThrow(/outside the pool of 8/);
    await expect(es.stepPaged([{ tokens: [1, 2], start: 17, blockTable: [0] }])).rejects.toThrow(/need 5/);
    await expect(es.stepPaged([{ tokens: [1], start: 0, blockTable: [0] }], [{ src: 0, dst: 9 }])).rejects.toThrow(/copy 0's dst/);
    const greedy = { temperature: 0, topp: 1, coin: 0 };
    const [[t]] = await es.stepPaged([{ tokens: [1], start: 0, blockTable: [3], sampling: greedy }]);
    expect(() => es.createSequence()).toThrow(/managed by its caller/);
    await expect(es.step([1], greedy)).rejects.toThrow(/managed by its caller/);
    await es.destroy();
    // the same token as the session's own sequence gives
    const own = await engine.createSession({ device: gpu!, kvBlocks: 8 });
    expect(await own.step([1], greedy)).toBe(t);
    await expect(own.stepPaged([{ tokens: [2], start: 0, blockTable: [0] }])).rejects.toThrow(/held by the session's own sequences/);
    await own.destroy();
  }, LONG);
});
