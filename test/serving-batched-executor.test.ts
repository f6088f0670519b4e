// The adapter to the batched engine API (createSequence / stepBatch / releaseSequence) driven by the scheduler, over a
// test double of that API built on the CPU reference (one CpuCausalLM per sequence, the engine's limits enforced:
// tokens per step and KV blocks per pool). Every request's output equals run.c's golden output.
import { describe, expect, it } from 'vitest';
import { CacheFullError, InputError } from '../src/errors.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { sampleToken } from '../src/runtime/sampling.js';
import { BatchedEngineExecutor, type BatchedEngineSession, type BatchedSequence } from '../src/runtime/serving/batched-engine-executor.js';
import { ServingSession } from '../src/runtime/serving/serving-session.js';
import { goldens, stories260K } from './support/serving.js';
import { hasShared, noteMissingShared } from './support/shared.js';

noteMissingShared('batched executor tests');

/** The batched session API over the CPU reference, with the engine's checks. */
function cpuBatchedSession(graph: ConstructorParameters<typeof CpuCausalLM>[0], maxPositions: number, total: number, blockSize: number, maxTokens: number): BatchedEngineSession & { steps: number; maxSeen: number } {
  const live = new Map<BatchedSequence, CpuCausalLM>();
  let next = 0;
  const blocksHeld = (): number => [...live.values()].reduce((a, lm) => a + Math.ceil(lm.position / blockSize), 0);
  return {
    maxTokens,
    steps: 0,
    maxSeen: 0,
    createSequence() {
      const h = Object.freeze({ id: next++ });
      live.set(h, new CpuCausalLM(graph, maxPositions));
      return h;
    },
    releaseSequence(seq) {
      if (!live.delete(seq)) throw new InputError(`sequence ${seq.id} is not live`);
    },
    kvBlocks: () => ({ total, blockSize }),
    async stepBatch(entries) {
      this.steps++;
      const n = entries.reduce((a, e) => a + e.tokens.length, 0);
      if (n > maxTokens) throw new InputError(`a step takes at most ${maxTokens} tokens, got ${n}`);
      const after = blocksHeld() + entries.reduce((a, e) => a + Math.ceil((live.get(e.seq)!.position + e.tokens.length) / blockSize) - Math.ceil(live.get(e.seq)!.position / blockSize), 0);
      if (after > total) throw new CacheFullError(`the pool has ${total} blocks, the step needs ${after}`);
      this.maxSeen = Math.max(this.maxSeen, entries.length);
      return entries.map((e) => {
        const lm = live.get(e.seq);
        if (!lm) throw new InputError(`sequence ${e.seq.id} is not live`);
        const logits = lm.step(e.tokens);
        return e.sampling ? [sampleToken(logits, e.sampling, e.sampling.coin)] : [];
      });
    },
  };
}

describe.skipIf(!hasShared)('BatchedEngineExecutor (scheduler over the batched engine API)', () => {
  it('runs staggered and preempted requests golden-exact within the engine\'s step and pool limits', async () => {
    const s = await stories260K();
    const g = goldens();
    const engine = cpuBatchedSession(s.graph, s.maxPositions, 24, 4, 16);
    const executor = new BatchedEngineExecutor(engine, { maxPositions: s.maxPositions, vocabSize: 512, stopTokens: s.stopTokens });
    const session = new ServingSession(executor, { maxBatchTokens: 16 });
    expect(session.scheduler.blocks.prefixCaching).toBe(false);
    const runs = Array.from({ length: 12 }, (_v, i) => session.generate({ promptIds: g[i % g.length].prompt_ids, maxTokens: 10 + (i % 3), temperature: 0 }));
    const results = await Promise.all(runs);
    results.forEach((r, i) => expect(r.ids, `request ${i}`).toEqual(g[i % g.length].generated_ids.slice(0, 10 + (i % 3))));
    expect(session.metrics().preemptions).toBeGreaterThan(0);
    expect(engine.maxSeen).toBeGreaterThan(1);
  });

  it('runs identical prompts side by side when the prefix cache is off (nothing to wait for)', async () => {
    const s = await stories260K();
    const g = goldens()[1];
    const engine = cpuBatchedSession(s.graph, s.maxPositions, 64, 4, 64);
    const session = new ServingSession(new BatchedEngineExecutor(engine, { maxPositions: s.maxPositions, vocabSize: 512, stopTokens: s.stopTokens }), { maxBatchTokens: 64 });
    const results = await Promise.all(Array.from({ length: 8 }, () => session.generate({ promptIds: g.prompt_ids, maxTokens: 6, temperature: 0 })));
    for (const r of results) expect(r.ids).toEqual(g.generated_ids.slice(0, 6));
    expect(engine.maxSeen).toBe(8);
    expect(engine.steps).toBe(6);
  });
});
