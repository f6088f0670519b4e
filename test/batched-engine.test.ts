// Batched execution on WebGPU: several sequences of different lengths in one step (ragged prefill chunks mixed
// with decode rows), checked against run.c's goldens, bit-exact batch invariance, copy-on-write forks and typed errors.
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../src/compile.js';
import { loadModel, type LoadedModel } from '../src/frontends/load.js';
import type { BatchEntry, Engine, EngineSession, SequenceHandle } from '../src/runtime/engine.js';
import { CacheFullError, InputError } from '../src/errors.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('batched WebGPU engine tests');

// lavapipe JIT-compiles each pipeline on its first dispatch
const LONG = 600_000;
const GREEDY = { temperature: 0, topp: 0.9, coin: 0 } as const;

interface Golden {
  prompt: string;
  steps: number;
  prompt_ids: number[];
  generated_ids: number[];
}

/** The f32 bit patterns of a row of logits, so that equality is bit equality. */
function bits(x: Float32Array): number[] {
  return Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));
}

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

describe.skipIf(!hasShared)('batched stories260K on WebGPU (f32)', () => {
  let model: LoadedModel;
  let engine: Engine;
  let session: EngineSession;
  const golds: Golden[] = hasShared
    ? readdirSync(sharedPath('golden/stories260K'))
        .filter((f) => f.endsWith('.json'))
        .sort()
        .map((f) => JSON.parse(readFileSync(sharedPath('golden/stories260K', f), 'utf8')) as Golden)
    : [];
  beforeAll(async () => {
    if (!gpu) return;
    model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    engine = await compile(model, { device: gpu.info, precision: 'f32', batchInvariant: true });
    // the five goldens together hold ~1280 tokens: 80 blocks of 16, more than the default pool of one context (32)
    session = await engine.createSession({ device: gpu, kvBlocks: 96 });
  }, LONG);
  afterAll(async () => session?.destroy());

  it('the five golden prompts submitted staggered (each joins while the others decode, its prompt in chunks) each give run.c ids exactly', async (ctx) => {
    if (!gpu) return ctx.skip();
    expect(golds.length).toBe(5);
    const free0 = session.kvBlocks().free;
    // per sequence: run.c's loop (steps positions, prompt included; stop at a stop token)
    const state = golds.map((g, i) => ({ g, joinAt: 12 * i, seq: undefined as SequenceHandle | undefined, fed: 0, next: -1, pos: 0, out: [] as number[], done: false }));
    let mixedSteps = 0;
    for (let step = 0; state.some((s) => !s.done); step++) {
      const entries: BatchEntry[] = [];
      const owners: (typeof state)[number][] = [];
      for (const s of state) {
        if (s.done || step < s.joinAt) continue;
        s.seq ??= session.createSequence();
        if (s.fed < s.g.prompt_ids.length) {
          // the prompt in chunks of 3 tokens, each chunk a ragged part of a step other sequences decode in
          const chunk = s.g.prompt_ids.slice(s.fed, s.fed + 3);
          s.fed += chunk.length;
          entries.push({ seq: s.seq, tokens: chunk, sampling: s.fed === s.g.prompt_ids.length ? GREEDY : undefined });
        } else entries.push({ seq: s.seq, tokens: [s.next], sampling: GREEDY });
        owners.push(s);
      }
      if (entries.some((e) => e.tokens.length > 1) && entries.length > 1) mixedSteps++;
      const ids = await session.stepBatch(entries);
      owners.forEach((s, i) => {
        if (!entries[i].sampling) return;
        expect(ids[i]).toHaveLength(1);
        const next = ids[i][0];
        if (s.out.length === 0 && s.next < 0) s.pos = s.g.prompt_ids.length - 1;
        else s.pos++;
        // run.c: a stop token ends it; otherwise the token is generated, and it ends after `steps` positions
        if (model.stopTokens.includes(next)) s.done = true;
        else {
          s.out.push(next);
          if (s.pos + 1 >= Math.min(s.g.steps, model.maxPositions)) s.done = true;
        }
        s.next = next;
        if (s.done) session.releaseSequence(s.seq!);
      });
    }
    state.forEach((s) => expect(s.out, s.g.prompt).toEqual(s.g.generated_ids));
    expect(mixedSteps).toBeGreaterThan(0);
    expect(session.kvBlocks().free).toBe(free0);
  }, LONG);

  it("a sequence's logits in a batch (ragged prefill chunks mixed with decode rows) bit-equal its logits alone", async (ctx) => {
    if (!gpu) return ctx.skip();
    const [g0, g1, g2] = golds.map((g) => g.prompt_ids).filter((p) => p.length > 4);
    // alone: the prompt, then two decode steps
    const a = session.createSequence();
    const alone: number[][] = [];
    await session.stepBatch([{ seq: a, tokens: g0, sampling: GREEDY }]);
    alone.push(bits((await session.lastBatchLogits())[0][0]));
    for (const t of [7, 42]) {
      await session.stepBatch([{ seq: a, tokens: [t], sampling: GREEDY }]);
      alone.push(bits((await session.lastBatchLogits())[0][0]));
    }
    session.releaseSequence(a);
    // in batches: other sequences decode and prefill around it, at other rows of the step, with other token counts
    const b = session.createSequence();
    const c = session.createSequence();
    await session.stepBatch([{ seq: b, tokens: g1, sampling: GREEDY }]);
    const a2 = session.createSequence();
    const together: number[][] = [];
    // step 1: b decodes (row 0), a2's whole prompt (rows 1..), c's first prompt chunk (no sample)
    let ids = await session.stepBatch([
      { seq: b, tokens: [3], sampling: GREEDY },
      { seq: a2, tokens: g0, sampling: GREEDY },
      { seq: c, tokens: g2.slice(0, 3) },
    ]);
    expect(ids.map((x) => x.length)).toEqual([1, 1, 0]);
    together.push(bits((await session.lastBatchLogits())[1][0]));
    // step 2: c's prompt rest first, then a2 decodes, then b decodes
    await session.stepBatch([
      { seq: c, tokens: g2.slice(3), sampling: { temperature: 0.8, topp: 0.9, coin: 0.25 } },
      { seq: a2, tokens: [7], sampling: GREEDY },
      { seq: b, tokens: [9], sampling: GREEDY },
    ]);
    together.push(bits((await session.lastBatchLogits())[1][0]));
    // step 3: a2 alone in the middle of a step where it is the only decode among verification rows of b
    ids = await session.stepBatch([
      { seq: b, tokens: [11, 12, 13], sampling: GREEDY, allRows: true },
      { seq: a2, tokens: [42], sampling: GREEDY },
      { seq: c, tokens: [5], sampling: GREEDY },
    ]);
    expect(ids.map((x) => x.length)).toEqual([3, 1, 1]);
    together.push(bits((await session.lastBatchLogits())[1][0]));
    for (const s of [a2, b, c]) session.releaseSequence(s);
    expect(together).toHaveLength(alone.length);
    together.forEach((t, i) => expect(t, `step ${i}`).toEqual(alone[i]));
  }, LONG);

  it('a forked sequence shares its blocks and copies the partly filled one on the GPU when either side writes', async (ctx) => {
    if (!gpu) return ctx.skip();
    const g = golds.find((x) => x.prompt_ids.length % 16 !== 0 && x.prompt_ids.length > 1)!;
    const free0 = session.kvBlocks().free;
    const a = session.createSequence();
    const [[first]] = await session.stepBatch([{ seq: a, tokens: g.prompt_ids, sampling: GREEDY }]);
    expect(first).toBe(g.generated_ids[0]);
    const used = free0 - session.kvBlocks().free;
    const b = session.forkSequence(a);
    expect(session.sequenceLength(b)).toBe(g.prompt_ids.length);
    expect(session.kvBlocks().free).toBe(free0 - used); // nothing copied yet
    // both continue greedily in one batch: each writes into the shared last block, so one of them gets a copy
    const outA = [first];
    const outB = [first];
    for (let i = 0; i < 20; i++) {
      const [[x], [y]] = await session.stepBatch([
        { seq: a, tokens: [outA.at(-1)!], sampling: GREEDY },
        { seq: b, tokens: [outB.at(-1)!], sampling: GREEDY },
      ]);
      outA.push(x);
      outB.push(y);
    }
    expect(outA).toEqual(g.generated_ids.slice(0, 21));
    expect(outB).toEqual(outA);
    session.releaseSequence(a);
    session.releaseSequence(b);
    expect(session.kvBlocks().free).toBe(free0);
  }, LONG);

  it('bad entries are typed errors before anything runs; a full pool is a CacheFullError naming the sequence and allocating nothing', async (ctx) => {
    if (!gpu) return ctx.skip();
    const small = await engine.createSession({ device: gpu, kvBlocks: 4 });
    try {
      const a = small.createSequence();
      const b = small.createSequence();
      await expect(small.stepBatch([])).rejects.toBeInstanceOf(InputError);
      await expect(small.stepBatch([{ seq: a, tokens: [1] }, { seq: a, tokens: [2] }])).rejects.toBeInstanceOf(InputError);
      await expect(small.stepBatch([{ seq: a, tokens: [] }])).rejects.toBeInstanceOf(InputError);
      await expect(small.stepBatch([{ seq: a, tokens: [100000] }])).rejects.toBeInstanceOf(InputError);
      await expect(small.stepBatch([{ seq: a, tokens: [1], sampling: { temperature: 0, topp: 0.9, coin: 1.5 } }])).rejects.toBeInstanceOf(InputError);
      await expect(small.stepBatch([{ seq: a, tokens: new Array(small.maxTokens + 1).fill(1) }])).rejects.toBeInstanceOf(InputError);
      expect(small.sequenceLength(a)).toBe(0);
      // 40 tokens take 3 of the 4 blocks; 30 more for b need 2
      await small.stepBatch([{ seq: a, tokens: new Array(40).fill(5) }]);
      expect(small.kvBlocks()).toEqual({ total: 4, free: 1, blockSize: 16 });
      const err = await small.stepBatch([{ seq: a, tokens: [6], sampling: GREEDY }, { seq: b, tokens: new Array(30).fill(5), sampling: GREEDY }]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CacheFullError);
      expect((err as CacheFullError).sequence).toBe(b.id);
      expect((err as CacheFullError).code).toBe('KV_CACHE_FULL');
      expect(small.kvBlocks().free).toBe(1);
      expect(small.sequenceLength(a)).toBe(40);
      expect(small.sequenceLength(b)).toBe(0);
      // 16 fit, and the sequences keep going
      const ids = await small.stepBatch([{ seq: a, tokens: [6], sampling: GREEDY }, { seq: b, tokens: new Array(16).fill(5), sampling: GREEDY }]);
      expect(ids.map((x) => x.length)).toEqual([1, 1]);
      small.releaseSequence(b);
      expect(() => small.sequenceLength(b)).toThrow(InputError);
      await expect(small.stepBatch([{ seq: b, tokens: [1] }])).rejects.toBeInstanceOf(InputError);
      small.truncateSequence(a, 10);
      expect(small.kvBlocks().free).toBe(3);
    } finally {
      await small.destroy();
    }
  }, LONG);
});
