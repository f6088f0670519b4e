// The continuous-batching scheduler and serving session on the paged CPU executor (stories260K): every request's
// output equals run.c's golden output (greedy) or the CPU reference's solo generation (sampled) however requests are
// batched, chunked, prefix-shared or preempted; plus cancellation, priorities and deadlines.
import { describe, expect, it } from 'vitest';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { generateTokens } from '../src/runtime/generate.js';
import { Scheduler, type FinishReason } from '../src/runtime/serving/scheduler.js';
import { ServingSession } from '../src/runtime/serving/serving-session.js';
import { goldens, stories260K } from './support/serving.js';
import { hasShared, noteMissingShared } from './support/shared.js';

noteMissingShared('serving scheduler tests');

describe.skipIf(!hasShared)('serving on the paged CPU executor (stories260K)', () => {
  it('five golden prompts submitted staggered (each joins while others decode) reproduce run.c', async () => {
    const s = await stories260K();
    const g = goldens();
    const session = new ServingSession(s.executor(128, 4), { maxBatchTokens: 6 });
    let steps = 0;
    const started: Promise<{ ids: number[] }>[] = [];
    const submitAt = [0, 3, 5, 9, 14];
    session.onStep = () => {
      steps++;
      while (started.length < g.length && steps >= submitAt[started.length]) started.push(session.generate({ promptIds: g[started.length].prompt_ids, maxTokens: 24, temperature: 0 }));
    };
    started.push(session.generate({ promptIds: g[0].prompt_ids, maxTokens: 24, temperature: 0 }));
    while (started.length < g.length) await new Promise((r) => setTimeout(r, 5));
    const results = await Promise.all(started);
    results.forEach((r, i) => expect(r.ids, `prompt ${i}`).toEqual(g[i].generated_ids.slice(0, 24)));
  });

  it('64 requests on a KV pool sized for 8 all complete golden-exact, with preemptions counted', async () => {
    const s = await stories260K();
    const g = goldens();
    const blockSize = 4;
    const maxTokens = (i: number): number => 8 + (i % 9);
    const longest = Math.max(...g.map((x) => x.prompt_ids.length)) + 16;
    const pool = 8 * Math.ceil(longest / blockSize);
    const session = new ServingSession(s.executor(pool, blockSize), { maxBatchTokens: 64 });
    let maxRunning = 0;
    session.onStep = () => (maxRunning = Math.max(maxRunning, session.scheduler.runningCount));
    const runs = Array.from({ length: 64 }, (_v, i) => session.generate({ promptIds: g[i % g.length].prompt_ids, maxTokens: maxTokens(i), temperature: 0 }));
    const results = await Promise.all(runs);
    results.forEach((r, i) => {
      const want = g[i % g.length].generated_ids.slice(0, maxTokens(i));
      expect(r.ids, `request ${i}`).toEqual(want);
      expect(r.finish.reason).toBe(want.length < maxTokens(i) ? 'stop' : 'length');
    });
    const m = session.metrics();
    expect(m.preemptions).toBeGreaterThan(0);
    expect(m.finished).toEqual({ length: 64 });
    expect(m.kvUsedBlocks).toBe(0);
    expect(m.prefixHitRate).toBeGreaterThan(0);
    expect(maxRunning).toBeGreaterThan(8);
    process.stderr.write(`[serving] 64 requests on ${pool} blocks of ${blockSize}: ${m.preemptions} preemptions, prefix hit rate ${m.prefixHitRate.toFixed(3)}, up to ${maxRunning} running\n`);
  });

  it('with the swap policy, preempted sequences go to host memory and come back golden-exact', async () => {
    const s = await stories260K();
    const g = goldens();
    const executor = s.executor(40, 4);
    const session = new ServingSession(executor, { maxBatchTokens: 64, preemption: 'swap' });
    expect(session.scheduler.swapping).toBe(true);
    const runs = Array.from({ length: 24 }, (_v, i) => session.generate({ promptIds: g[i % g.length].prompt_ids, maxTokens: 10 + (i % 7), temperature: 0 }));
    const results = await Promise.all(runs);
    results.forEach((r, i) => expect(r.ids, `request ${i}`).toEqual(g[i % g.length].generated_ids.slice(0, 10 + (i % 7))));
    const m = session.metrics();
    expect(m.swapOuts).toBeGreaterThan(0);
    expect(m.swapOuts).toBe(m.preemptions);
    expect(executor.swappedSequences).toBe(0);
    expect(m.kvUsedBlocks).toBe(0);
  });

  it('sampled requests (temperature, top-p, top-k, seeds) equal the CPU reference run alone, under preemption', async () => {
    const s = await stories260K();
    const g = goldens();
    const reqs = Array.from({ length: 10 }, (_v, i) => ({ promptIds: g[i % g.length].prompt_ids, maxTokens: 12, temperature: 0.8 + 0.05 * i, topP: i % 2 ? 0.9 : 1, topK: i % 3 ? 0 : 20, seed: 1000 + i }));
    const session = new ServingSession(s.executor(24, 4), { maxBatchTokens: 16 });
    const results = await Promise.all(reqs.map((r) => session.generate({ ...r, ignoreStopTokens: true })));
    for (const [i, r] of reqs.entries()) {
      const lm = new CpuCausalLM(s.graph, s.maxPositions);
      const ref = await generateTokens(lm, r.promptIds, { steps: r.promptIds.length + r.maxTokens - 1, temperature: r.temperature, topp: r.topP, topk: r.topK, seed: r.seed, stopTokens: [] });
      expect(results[i].ids, `request ${i}`).toEqual(ref.generated);
    }
    expect(session.metrics().preemptions).toBeGreaterThan(0);
  });

  it('16 requests sharing a 256-token prefix hold at most 1.3x the blocks of one request, with the same output', async () => {
    const s = await stories260K();
    const g = goldens();
    const story = g.flatMap((x) => x.generated_ids).filter((t) => t !== 1);
    const prefix = [1, ...story.slice(0, 255)];
    const prompt = (r: number): number[] => [...prefix, story[300 + r]];
    const held = async (requests: number): Promise<{ blocks: number; ids: number[][] }> => {
      const session = new ServingSession(s.executor(512, 4), { maxBatchTokens: 512 });
      let blocks = 0;
      session.onStep = () => (blocks = Math.max(blocks, session.scheduler.blocks.usedBlocks));
      const rs = await Promise.all(Array.from({ length: requests }, (_v, r) => session.generate({ promptIds: prompt(r), maxTokens: 3, temperature: 0 })));
      return { blocks, ids: rs.map((x) => x.ids) };
    };
    const one = await held(1);
    const sixteen = await held(16);
    expect(sixteen.blocks).toBeLessThanOrEqual(1.3 * one.blocks);
    expect(sixteen.ids[0]).toEqual(one.ids[0]);
    const lm = new CpuCausalLM(s.graph, s.maxPositions);
    const ref = await generateTokens(lm, prompt(5), { steps: prompt(5).length + 2, temperature: 0, topp: 1, seed: 0, stopTokens: [] });
    expect(sixteen.ids[5]).toEqual(ref.generated);
  });

  it('an aborted request ends with reason abort and gives its blocks back; the others finish', async () => {
    const s = await stories260K();
    const g = goldens();
    const session = new ServingSession(s.executor(64, 4));
    const ac = new AbortController();
    const stream = session.submit({ promptIds: g[1].prompt_ids, maxTokens: 200, temperature: 0, signal: ac.signal });
    const other = session.generate({ promptIds: g[2].prompt_ids, maxTokens: 10, temperature: 0 });
    const seen: number[] = [];
    let reason: string | undefined;
    for await (const e of stream) {
      if (e.type === 'token') {
        seen.push(e.id);
        if (seen.length === 3) ac.abort();
      } else reason = e.reason;
    }
    expect(reason).toBe('abort');
    expect(seen).toEqual(g[1].generated_ids.slice(0, seen.length));
    expect((await other).ids).toEqual(g[2].generated_ids.slice(0, 10));
    await session.idle();
    expect(session.scheduler.blocks.usedBlocks).toBe(0);
    expect(session.metrics().finished).toEqual({ abort: 1, length: 1 });
  });

  it('leaving the iteration early cancels the request', async () => {
    const s = await stories260K();
    const session = new ServingSession(s.executor(64, 4));
    for await (const e of session.submit({ promptIds: [1], maxTokens: 100, temperature: 0 })) if (e.type === 'token') break;
    await session.idle();
    expect(session.metrics().finished).toEqual({ abort: 1 });
    expect(session.scheduler.blocks.usedBlocks).toBe(0);
  });

  it('stop strings cut the text before them; stop token ids end generation', async () => {
    const s = await stories260K();
    const { Llama2cTokenizer } = await import('../src/tokenizers/llama2c.js');
    const { sharedPath } = await import('./support/shared.js');
    const tokenizer = await Llama2cTokenizer.fromFile(sharedPath('models/stories260K/tok512.bin'), 512);
    const g = goldens()[1];
    const session = new ServingSession(s.executor(128, 4), { tokenizer });
    const full = await session.generate({ prompt: g.prompt, maxTokens: 40, temperature: 0 });
    expect(full.ids).toEqual(g.generated_ids.slice(0, 40));
    const word = full.text.trim().split(/\s+/)[4];
    const cut = await session.generate({ prompt: g.prompt, maxTokens: 40, temperature: 0, stop: [word] });
    expect(cut.finish.reason).toBe('stop');
    expect(cut.text).toBe(full.text.slice(0, full.text.indexOf(word)));
    const byId = await session.generate({ promptIds: g.prompt_ids, maxTokens: 40, temperature: 0, stopTokenIds: [g.generated_ids[6]] });
    expect(byId.ids).toEqual(g.generated_ids.slice(0, g.generated_ids.indexOf(g.generated_ids[6])));
    expect(byId.finish.reason).toBe('stop');
  });

  it('bad requests are refused before anything is queued', async () => {
    const s = await stories260K();
    const session = new ServingSession(s.executor(16, 4), { maxWaiting: 1 });
    expect(() => session.submit({ promptIds: [] })).toThrow(/no tokens/);
    expect(() => session.submit({ promptIds: [1, 9999] })).toThrow(/outside the vocabulary/);
    expect(() => session.submit({ promptIds: new Array(600).fill(1) })).toThrow(/more than the model's context/);
    expect(() => session.submit({ promptIds: [1], maxTokens: 100 })).toThrow(/more than the 16 in the pool/);
    expect(() => session.submit({ promptIds: [1], temperature: -1 })).toThrow(/temperature/);
    expect(() => session.submit({ prompt: 'hi' })).toThrow(/tokenizer/);
    // requests submitted in one turn wait together for the next step: the second finds the queue full
    const first = session.submit({ promptIds: [1], maxTokens: 4, temperature: 0 });
    expect(() => session.submit({ promptIds: [1], maxTokens: 4 })).toThrow(expect.objectContaining({ code: 'OVERLOADED' }));
    for await (const _e of first);
    expect(session.scheduler.idle).toBe(true);
  });
});

describe.skipIf(!hasShared)('Scheduler order, deadlines and budget (paged CPU executor, stories260K)', () => {
  const observer = (log: string[], name: string, done?: (r: FinishReason) => void) => ({
    onToken: () => void log.push(name),
    onFinish: (r: FinishReason) => done?.(r),
  });

  it('runs smaller priority values first, then earlier deadlines, when only one sequence fits', async () => {
    const s = await stories260K();
    const sched = new Scheduler(s.executor(32, 4), { maxSequences: 1 });
    const log: string[] = [];
    const base = { promptIds: [1], maxTokens: 2, temperature: 0, topP: 1, topK: 0, seed: 0 };
    sched.add({ ...base, priority: 5 }, observer(log, 'low'));
    sched.add({ ...base, priority: 0, deadline: 1e12 }, observer(log, 'late'));
    sched.add({ ...base, priority: 0, deadline: 1e11 }, observer(log, 'soon'));
    sched.add({ ...base, priority: -1 }, observer(log, 'high'));
    while (!sched.idle) await sched.step();
    expect(log).toEqual(['high', 'high', 'soon', 'soon', 'late', 'late', 'low', 'low']);
  });

  it('ends a request whose deadline passed, on its clock', async () => {
    const s = await stories260K();
    let now = 0;
    const sched = new Scheduler(s.executor(32, 4), { clock: () => now });
    const log: string[] = [];
    let reason: FinishReason | undefined;
    sched.add({ promptIds: [1], maxTokens: 50, temperature: 0, topP: 1, topK: 0, seed: 0, deadline: 3 }, observer(log, 'x', (r) => (reason = r)));
    while (!sched.idle) {
      await sched.step();
      now++;
    }
    expect(reason).toBe('deadline');
    expect(log.length).toBe(3);
    expect(sched.blocks.usedBlocks).toBe(0);
  });

  it('keeps every step within the token budget, chunking prompts and mixing them with decodes', async () => {
    const s = await stories260K();
    const g = goldens();
    const session = new ServingSession(s.executor(128, 4), { maxBatchTokens: 5 });
    const reports: { prefill: number; decode: number }[] = [];
    session.onStep = (r) => reports.push({ prefill: r.prefillTokens, decode: r.decodeTokens });
    const rs = await Promise.all(g.slice(1).map((x) => session.generate({ promptIds: x.prompt_ids, maxTokens: 6, temperature: 0 })));
    rs.forEach((r, i) => expect(r.ids).toEqual(g[i + 1].generated_ids.slice(0, 6)));
    for (const r of reports) expect(r.prefill + r.decode).toBeLessThanOrEqual(5);
    expect(reports.some((r) => r.prefill > 0 && r.decode > 0)).toBe(true);
  });
});

describe.skipIf(!hasShared)('copy-on-write forks on the paged CPU executor (stories260K)', () => {
  it('a fork shares the prompt blocks, copies the partial one on write, and both continue as if run alone', async () => {
    const { KvBlockManager } = await import('../src/runtime/serving/kv-block-manager.js');
    const s = await stories260K();
    const ex = s.executor(32, 4);
    const m = new KvBlockManager({ numBlocks: 32, blockSize: 4, prefixCaching: false });
    const greedy = { temperature: 0, topp: 1, coin: 0 };
    const prompt = goldens()[4].prompt_ids.slice(0, 6);
    const run = async (seq: number, context: number[], count: number): Promise<number> => {
      const copies = m.append(seq, count);
      const start = context.length - count;
      const [id] = await ex.step({ copies, entries: [{ seqId: seq, tokens: context.slice(start), start, context, blockTable: m.table(seq), sampling: greedy }] });
      return id;
    };
    const a = m.createSequence();
    const first = await run(a, prompt, prompt.length);
    const b = m.fork(a);
    expect(m.usedBlocks).toBe(2);
    // the two branches continue from different tokens
    const ctxA = [...prompt, first];
    const ctxB = [...prompt, (first + 7) % 512];
    for (let i = 0; i < 6; i++) {
      ctxA.push(await run(a, ctxA, 1));
      ctxB.push(await run(b, ctxB, 1));
    }
    expect(m.table(a)[0]).toBe(m.table(b)[0]);
    expect(m.table(a)[1]).not.toBe(m.table(b)[1]);
    for (const ctx of [ctxA, ctxB]) {
      const lm = new CpuCausalLM(s.graph, s.maxPositions);
      const ref = await generateTokens(lm, ctx.slice(0, prompt.length + 1), { steps: ctx.length, temperature: 0, topp: 1, seed: 0, stopTokens: [] });
      expect(ctx.slice(prompt.length + 1)).toEqual(ref.generated.slice(0, 6));
    }
  });
});
