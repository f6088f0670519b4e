// Sliding KV window with attention sinks (StreamingLLM) on the paged CPU executor (stories260K): a window larger than
// the sequence changes nothing (run.c goldens); after a shift the cache holds what a fresh prefill of the kept tokens at
// their cache positions holds; generation runs past the model's 512 positions in a bounded pool; bad options are typed
// errors.
import { describe, expect, it } from 'vitest';
import { InputError } from '../src/errors.js';
import { loadModel } from '../src/frontends/load.js';
import { cpuProfile } from '../src/ir/device-profile.js';
import { runPasses } from '../src/passes/pipeline.js';
import { CpuPagedExecutor } from '../src/runtime/serving/cpu-paged-executor.js';
import type { BatchExecutor, ExecutorBatch, ExecutorEntry } from '../src/runtime/serving/batch-executor.js';
import { kvWindowBlocks, parseKvWindow, planWindowStep } from '../src/runtime/serving/kv-window.js';
import { Scheduler } from '../src/runtime/serving/scheduler.js';
import { ServingSession } from '../src/runtime/serving/serving-session.js';
import { goldens, stories260K } from './support/serving.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('sliding KV window tests');

describe('kv window planning', () => {
  it('rounds to blocks, cuts chunks to the window and drops whole non-sink blocks', () => {
    const w = kvWindowBlocks({ sinkTokens: 4, windowTokens: 10 }, 4, 512);
    expect(w).toEqual({ sinkBlocks: 1, recentBlocks: 3, capacity: 16, blockSize: 4 });
    expect(planWindowStep(w, 0, 100)).toEqual({ count: 16, dropBlocks: 0 });
    expect(planWindowStep(w, 16, 1)).toEqual({ count: 1, dropBlocks: 1 });
    expect(planWindowStep(w, 13, 1)).toEqual({ count: 1, dropBlocks: 0 });
    // 14 cached: blocks 1 and 2 can go (block 3 is partly filled), so at most 16 - (14 - 8) = 10 new tokens
    expect(planWindowStep(w, 14, 50)).toEqual({ count: 10, dropBlocks: 2 });
    expect(planWindowStep(kvWindowBlocks({ sinkTokens: 0, windowTokens: 4 }, 4, 512), 4, 1)).toEqual({ count: 1, dropBlocks: 1 });
    expect(parseKvWindow('4, 252')).toEqual({ sinkTokens: 4, windowTokens: 252 });
  });

  it('bad windows are InputErrors', () => {
    expect(() => kvWindowBlocks({ sinkTokens: -1, windowTokens: 8 }, 4, 512)).toThrow(InputError);
    expect(() => kvWindowBlocks({ sinkTokens: 0, windowTokens: 0 }, 4, 512)).toThrow(InputError);
    expect(() => kvWindowBlocks({ sinkTokens: 1.5, windowTokens: 8 }, 4, 512)).toThrow(InputError);
    expect(() => kvWindowBlocks({ sinkTokens: 4, windowTokens: 510 }, 4, 512)).toThrow(/more than the model's 512/);
    for (const bad of ['4', '4,', 'a,b', '-1,8', '4;8']) expect(() => parseKvWindow(bad), bad).toThrow(InputError);
  });

  it('an executor that cannot shift keys rejects windowed requests with an InputError', () => {
    const ex: BatchExecutor = { maxPositions: 64, vocabSize: 10, stopTokens: [], kv: { numBlocks: 8, blockSize: 4 }, maxSequences: Infinity, step: async () => [], release: () => {} };
    expect(() => new Scheduler(ex, { kvWindow: { sinkTokens: 4, windowTokens: 8 } })).toThrow(InputError);
    const s = new Scheduler(ex);
    const req = { promptIds: [1], maxTokens: 4, temperature: 0, topP: 1, topK: 0, seed: 1 };
    expect(() => s.validate(req)).not.toThrow();
    expect(() => s.validate({ ...req, kvWindow: { sinkTokens: 4, windowTokens: 8 } })).toThrow(/cannot shift cached keys/);
  });
});

describe.skipIf(!hasShared)('sliding KV window on the paged CPU executor (stories260K)', () => {
  it('a window larger than the sequence changes nothing: the golden prompts reproduce run.c', async () => {
    const s = await stories260K();
    const g = goldens();
    const ex = s.executor(256, 4);
    expect(ex.canShiftKeys).toBe(true);
    const session = new ServingSession(ex, { maxBatchTokens: 7, kvWindow: { sinkTokens: 4, windowTokens: 300 } });
    const results = await Promise.all(g.map((x) => session.generate({ promptIds: x.prompt_ids, maxTokens: 40, temperature: 0 })));
    results.forEach((r, i) => expect(r.ids, `prompt ${i}`).toEqual(g[i].generated_ids.slice(0, 40)));
    // windowed sequences neither take nor feed the prefix cache
    expect(session.scheduler.blocks.cachedBlocks).toBe(0);
    expect(session.metrics().kvUsedBlocks).toBe(0);
  });

  it('after shifts, layer 0 K/V equal a fresh prefill of the kept tokens at their cache positions (later layers saw another context)', async () => {
    const s = await stories260K();
    const g = goldens();
    const ex = s.executor(16, 4);
    let last: ExecutorEntry | undefined;
    let shifts = 0;
    const inner = ex.step.bind(ex);
    ex.step = async (b: ExecutorBatch) => {
      shifts += b.shifts?.length ?? 0;
      last = b.entries[0];
      return inner(b);
    };
    const session = new ServingSession(ex, { maxBatchTokens: 8 });
    const r = await session.generate({ promptIds: g[3].prompt_ids, maxTokens: 40, temperature: 0, ignoreStopTokens: true, kvWindow: { sinkTokens: 3, windowTokens: 9 } });
    expect(r.ids.length).toBe(40);
    expect(shifts).toBeGreaterThan(5);
    const e = last!;
    const length = e.start + e.tokens.length;
    expect(length).toBeLessThanOrEqual(16);
    // the cache's tokens: the first block (sinks), then the most recent ones
    const all = [...g[3].prompt_ids, ...r.ids];
    expect(e.context.slice(0, 4)).toEqual(all.slice(0, 4));
    expect(e.context.slice(4)).toEqual(all.slice(all.length - 1 - (length - 4), all.length - 1));
    const got = ex.readPositions(e.blockTable, length);
    const fresh = s.executor(4, 4);
    const table = [0, 1, 2, 3];
    await fresh.step({ copies: [], entries: [{ seqId: 0, tokens: e.context, start: 0, context: e.context, blockTable: table }] });
    const want = fresh.readPositions(table, length);
    for (const name of ['past_k.0', 'past_v.0']) {
      const a = got.find((x) => x.input === name)!.data;
      const b = want.find((x) => x.input === name)!.data;
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      expect(worst, name).toBeLessThan(name.startsWith('past_v') ? 1e-6 : 1e-4);
    }
    // a deeper layer's keys are not those of a fresh prefill (they attended to dropped tokens): the test can tell
    const k4 = got.find((x) => x.input === 'past_k.4')!.data;
    const f4 = want.find((x) => x.input === 'past_k.4')!.data;
    expect(k4.some((v, i) => Math.abs(v - f4[i]) > 1e-3)).toBe(true);
  });

  it('generates 700 tokens past the 512-position context with the pool never above the window', async () => {
    const s = await stories260K();
    const g = goldens();
    const blockSize = 16;
    const session = new ServingSession(s.executor(8, blockSize), { maxBatchTokens: 64, kvWindow: { sinkTokens: 4, windowTokens: 60 } });
    let most = 0;
    session.onStep = () => (most = Math.max(most, session.scheduler.blocks.usedBlocks));
    expect(s.maxPositions).toBe(512);
    const r = await session.generate({ promptIds: g[0].prompt_ids, maxTokens: 700, temperature: 0, ignoreStopTokens: true });
    expect(r.ids.length).toBe(700);
    expect(r.finish.reason).toBe('length');
    expect(most).toBe(5); // 1 sink block + 4 recent blocks of 16
    // until the first drop the window is the whole sequence: run.c's tokens
    const capacity = 5 * blockSize;
    expect(r.ids.slice(0, capacity - g[0].prompt_ids.length)).toEqual(g[0].generated_ids.slice(0, capacity - g[0].prompt_ids.length));
    expect(r.ids.every((t) => Number.isInteger(t) && t >= 0 && t < s.executor(1).vocabSize)).toBe(true);
    // a request without a window still stops at the context; one longer than the context is refused without a window
    const plain = await session.generate({ promptIds: g[0].prompt_ids, maxTokens: 600, temperature: 0, ignoreStopTokens: true, kvWindow: false }).catch((e: unknown) => e);
    expect(plain).toBeInstanceOf(InputError);
    const long = Array.from({ length: 530 }, (_v, i) => g[1].prompt_ids[i % g[1].prompt_ids.length]);
    expect(() => session.scheduler.validate({ promptIds: long, maxTokens: 4, temperature: 0, topP: 1, topK: 0, seed: 1, kvWindow: false })).toThrow(InputError);
    expect(() => session.scheduler.validate({ promptIds: long, maxTokens: 4, temperature: 0, topP: 1, topK: 0, seed: 1 })).not.toThrow();
  });

  it('an int8 KV cache cannot shift its keys (they would need requantizing): windowed requests are InputErrors', async () => {
    const model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    const graph = runPasses(model.build({ lastTokenLogitsOnly: true }), 'O3', { device: cpuProfile, options: { kvCache: 'int8' } }).graph;
    const ex = new CpuPagedExecutor(graph, { numBlocks: 16, blockSize: 4, maxPositions: model.maxPositions, stopTokens: model.stopTokens });
    expect(ex.canShiftKeys).toBe(false);
    expect(() => new ServingSession(ex, { kvWindow: { sinkTokens: 4, windowTokens: 8 } })).toThrow(InputError);
  });

  it('windowed requests preempted by recompute complete within their windows and free their blocks', async () => {
    // recompute replays the tokens in chunks of the step budget through the window, so the K/V it rebuilds (and the
    // tokens after) need not equal an uninterrupted run's: only completion and the block accounting are checked
    const s = await stories260K();
    const g = goldens();
    const session = new ServingSession(s.executor(6, 4), { maxBatchTokens: 64, kvWindow: { sinkTokens: 4, windowTokens: 12 } });
    let most = 0;
    session.onStep = () => (most = Math.max(most, session.scheduler.blocks.usedBlocks));
    const results = await Promise.all([0, 1, 2].map((i) => session.generate({ promptIds: g[i + 1].prompt_ids, maxTokens: 30, temperature: 0, ignoreStopTokens: true })));
    expect(session.metrics().preemptions).toBeGreaterThan(0);
    for (const r of results) expect(r.ids.length).toBe(30);
    expect(most).toBeLessThanOrEqual(6);
    expect(session.metrics().kvUsedBlocks).toBe(0);
  });
});
