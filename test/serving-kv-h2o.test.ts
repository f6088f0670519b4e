// H2O heavy-hitter KV eviction on the paged CPU executor: the attention mass the executor reports equals a direct
// softmax over the model's own queries and keys (small random llama); eviction drops the least-mass block outside the
// recent ones, and the kept keys sit at their cache positions afterwards; a budget larger than the sequence changes
// nothing (run.c goldens, stories260K); generation runs past the 512 context in a pool of the budget's blocks; bad
// policies and unsupported backends are typed errors.
import { describe, expect, it } from 'vitest';
import { InputError } from '../src/errors.js';
import { attrsOf, isOp } from '../src/ir/attrs.js';
import { cpuProfile } from '../src/ir/device-profile.js';
import { runPasses } from '../src/passes/pipeline.js';
import type { Graph } from '../src/ir/graph.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import type { BatchExecutor, ExecutorBatch, ExecutorEntry } from '../src/runtime/serving/batch-executor.js';
import { CpuPagedExecutor } from '../src/runtime/serving/cpu-paged-executor.js';
import { kvEvictionBlocks, leastMassBlock, parseKvH2o, planEvictionStep } from '../src/runtime/serving/kv-eviction.js';
import { Scheduler } from '../src/runtime/serving/scheduler.js';
import { ServingSession } from '../src/runtime/serving/serving-session.js';
import { Rng } from '../src/util/random.js';
import { goldens, stories260K } from './support/serving.js';
import { hasShared, noteMissingShared } from './support/shared.js';

noteMissingShared('H2O KV eviction tests');

const config: LlamaConfig = { dim: 32, hiddenDim: 48, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 40, seqLen: 96, sharedClassifier: false };
let tiny: Graph | undefined;
const tinyGraph = (): Graph => (tiny ??= buildLlama(config, randomLlamaWeights(config, 11), { lastTokenLogitsOnly: true }));
const tinyExecutor = (numBlocks: number, blockSize = 4): CpuPagedExecutor => new CpuPagedExecutor(tinyGraph(), { numBlocks, blockSize, maxPositions: config.seqLen, stopTokens: [] });
const randomTokens = (seed: number, n: number): number[] => {
  const r = new Rng(seed);
  return [1, ...Array.from({ length: n - 1 }, () => 2 + r.int(config.vocabSize - 2))];
};

/**
 * The oracle: one forward over `tokens` from an empty cache; at every attention node, the softmax of `q·k · scale` over
 * the causal keys, written out here (not the kernel's), summed over layers, query heads and queries, per key position.
 */
function directMass(graph: Graph, tokens: readonly number[]): Float64Array {
  const n = tokens.length;
  const inputs: Record<string, Tensor> = { tokens: Tensor.from('i32', [1, n], tokens), positions: Tensor.from('i32', [n], tokens.map((_t, i) => i)) };
  for (const inp of graph.inputs) {
    const name = inp.attrs.name as string;
    if (name.startsWith('past_')) inputs[name] = new Tensor('f32', [1, 0, inp.shape[2] as number, inp.shape[3] as number], new Float32Array(0));
  }
  const mass = new Float64Array(n);
  let layers = 0;
  runGraph(graph, inputs, {
    observe: (node, _value, args) => {
      if (!isOp(node, 'attention')) return;
      layers++;
      const [q, k] = args;
      const [, S, Hq, D] = q.shape;
      const Hkv = k.shape[2];
      expect(S).toBe(n);
      for (let h = 0; h < Hq; h++) {
        const hk = Math.floor((h * Hkv) / Hq);
        for (let i = 0; i < S; i++) {
          const s: number[] = [];
          for (let j = 0; j <= i; j++) {
            let dot = 0;
            for (let d = 0; d < D; d++) dot += Number(q.data[(i * Hq + h) * D + d]) * Number(k.data[(j * Hkv + hk) * D + d]);
            s.push(dot * node.attrs.scale);
          }
          const mx = Math.max(...s);
          const e = s.map((x) => Math.exp(x - mx));
          const z = e.reduce((a, b) => a + b, 0);
          e.forEach((x, j) => (mass[j] += x / z));
        }
      }
    },
  });
  expect(layers).toBe(config.nLayers);
  return mass;
}

describe('H2O planning', () => {
  it('rounds to blocks, cuts chunks to the budget and picks the least-mass block outside the recent ones', () => {
    const e = kvEvictionBlocks({ policy: 'h2o', budgetTokens: 15, recentTokens: 5 }, 4, 512);
    expect(e).toEqual({ budgetBlocks: 4, recentBlocks: 2, heavyBlocks: 2, capacity: 16, blockSize: 4 });
    expect(planEvictionStep(e, 0, 100)).toEqual({ count: 16, dropBlocks: 0 });
    expect(planEvictionStep(e, 16, 1)).toEqual({ count: 1, dropBlocks: 1 });
    expect(planEvictionStep(e, 15, 1)).toEqual({ count: 1, dropBlocks: 0 });
    // 14 cached: 3 full blocks, the last 2 recent, so one can go: at most 16 - (14 - 4) = 6 new tokens
    expect(planEvictionStep(e, 14, 50)).toEqual({ count: 6, dropBlocks: 1 });
    // blocks 0 and 1 are candidates (2 and 3 are recent); the least mass goes, even block 0
    expect(leastMassBlock([5, 1, 0, 0], 16, e)).toBe(1);
    expect(leastMassBlock([0.5, 1, 0, 0], 16, e)).toBe(0);
    expect(leastMassBlock([3, 2, 1, 0, 0], 17, e)).toBe(1); // 4 full blocks: the last 2 are recent, the partial one too
    expect(() => leastMassBlock([1, 1], 8, e)).toThrow(InputError);
    expect(parseKvH2o('256, 64')).toEqual({ policy: 'h2o', budgetTokens: 256, recentTokens: 64 });
  });

  it('bad policies are InputErrors', () => {
    expect(() => kvEvictionBlocks({ policy: 'h2o', budgetTokens: 0, recentTokens: 4 }, 4, 512)).toThrow(InputError);
    expect(() => kvEvictionBlocks({ policy: 'h2o', budgetTokens: 16, recentTokens: 0 }, 4, 512)).toThrow(InputError);
    expect(() => kvEvictionBlocks({ policy: 'h2o', budgetTokens: 16, recentTokens: 13 }, 4, 512)).toThrow(/none of the budget/);
    expect(() => kvEvictionBlocks({ policy: 'h2o', budgetTokens: 520, recentTokens: 16 }, 4, 512)).toThrow(/more than the model's 512/);
    expect(() => kvEvictionBlocks({ policy: 'lru' as 'h2o', budgetTokens: 16, recentTokens: 4 }, 4, 512)).toThrow(/policy/);
    for (const bad of ['4', '4,', 'a,b', '-1,8', '4;8']) expect(() => parseKvH2o(bad), bad).toThrow(InputError);
  });

  it('a backend that does not track attention, or a window besides, is an InputError naming kvEviction', () => {
    const ex: BatchExecutor = { maxPositions: 64, vocabSize: 10, stopTokens: [], kv: { numBlocks: 8, blockSize: 4 }, maxSequences: Infinity, canShiftKeys: true, step: async () => [], release: () => {} };
    const h2o = { policy: 'h2o', budgetTokens: 16, recentTokens: 4 } as const;
    expect(() => new Scheduler(ex, { kvEviction: h2o })).toThrow(/kvEviction 'h2o' needs a model backend that tracks attention/);
    const req = { promptIds: [1], maxTokens: 4, temperature: 0, topP: 1, topK: 0, seed: 1 };
    expect(() => new Scheduler(ex).validate({ ...req, kvEviction: h2o })).toThrow(InputError);
    const cpu = tinyExecutor(8);
    expect(() => new Scheduler(cpu, { kvEviction: h2o, kvWindow: { sinkTokens: 4, windowTokens: 8 } })).toThrow(/do not go together/);
    expect(() => new Scheduler(cpu).validate({ ...req, kvEviction: h2o, kvWindow: { sinkTokens: 4, windowTokens: 8 } })).toThrow(/do not go together/);
    // a request's own policy replaces the session's default window
    expect(() => new Scheduler(cpu, { kvWindow: { sinkTokens: 4, windowTokens: 8 } }).validate({ ...req, kvEviction: h2o })).not.toThrow();
  });
});

describe('H2O on the paged CPU executor (random llama)', () => {
  it('the attention mass accumulated over chunked prefill and decode equals a direct softmax over the whole sequence', async () => {
    const ex = tinyExecutor(16);
    const sum = new Float64Array(64);
    const take = ex.takeAttentionMass.bind(ex);
    ex.takeAttentionMass = (id: number) => {
      const m = take(id)!;
      m.forEach((x, j) => (sum[j] += x));
      return m;
    };
    const prompt = randomTokens(5, 11);
    // a budget larger than the sequence: nothing is evicted, so every query saw every earlier key
    const session = new ServingSession(ex, { maxBatchTokens: 4, kvEviction: { policy: 'h2o', budgetTokens: 64, recentTokens: 8 } });
    const r = await session.generate({ promptIds: prompt, maxTokens: 20, temperature: 0, ignoreStopTokens: true });
    expect(session.scheduler.evictedBlocks).toBe(0);
    // the last generated token was never run; every other token was, once
    const all = [...prompt, ...r.ids].slice(0, prompt.length + r.ids.length - 1);
    const want = directMass(tinyGraph(), all);
    let worst = 0;
    for (let j = 0; j < all.length; j++) worst = Math.max(worst, Math.abs(sum[j] - want[j]) / want[j]);
    expect(worst).toBeLessThan(1e-5);
    for (let j = all.length; j < sum.length; j++) expect(sum[j]).toBe(0);
    // the total is one per layer, head and query
    const total = want.reduce((a, b) => a + b, 0);
    expect(total).toBeCloseTo(config.nLayers * config.nHeads * all.length, 6);
  });

  it('each drop takes the least-mass block outside the recent ones; afterwards layer 0 K/V are a fresh prefill of the kept tokens', async () => {
    const bs = 4;
    const ex = tinyExecutor(4, bs);
    const e = kvEvictionBlocks({ policy: 'h2o', budgetTokens: 16, recentTokens: 8 }, bs, config.seqLen);
    // a mirror of the cache: physical blocks in cache order, their mass, and the text index of each cached token
    let table: number[] = [];
    let mass: number[] = [];
    let text: number[] = [];
    let computed = 0;
    let drops = 0;
    let last: ExecutorEntry | undefined;
    const prompt = randomTokens(9, 6);
    const tokens: number[] = [];
    const inner = ex.step.bind(ex);
    ex.step = async (b: ExecutorBatch) => {
      const entry = b.entries[0];
      // each shift follows one drop: the block before the first one it rotates was dropped (a freed block may come back
      // at the end of the table, so the tables alone do not say which went)
      for (const sh of b.shifts ?? []) {
        expect(sh.delta).toBe(bs);
        const at = table.indexOf(sh.blocks[0]) - 1;
        expect(at).toBeGreaterThanOrEqual(0);
        // it must be a candidate with the least mass among the candidates
        expect(sh.blocks).toEqual(table.slice(at + 1, Math.ceil(text.length / bs)));
        const candidates = Math.floor(text.length / bs) - e.recentBlocks;
        expect(at, `drop ${drops}`).toBeLessThan(candidates);
        expect(mass[at]).toBe(Math.min(...mass.slice(0, candidates)));
        table.splice(at, 1);
        mass.splice(at, 1);
        text.splice(at * bs, bs);
        drops++;
      }
      expect(entry.start).toBe(text.length);
      entry.tokens.forEach((t, i) => (tokens[computed + i] = t));
      table = [...entry.blockTable];
      last = entry;
      expect(entry.context).toEqual([...text.map((i) => tokens[i]), ...entry.tokens]);
      return inner(b);
    };
    const take = ex.takeAttentionMass.bind(ex);
    ex.takeAttentionMass = (id: number) => {
      const m = take(id)!;
      m.forEach((x, p) => (mass[Math.floor(p / bs)] = (mass[Math.floor(p / bs)] ?? 0) + x));
      const n = m.length - text.length;
      for (let i = 0; i < n; i++) text.push(computed + i);
      computed += n;
      return m;
    };
    const session = new ServingSession(ex, { maxBatchTokens: 1, kvEviction: { policy: 'h2o', budgetTokens: 16, recentTokens: 8 } });
    const r = await session.generate({ promptIds: prompt, maxTokens: 60, temperature: 0, ignoreStopTokens: true });
    expect(r.ids.length).toBe(60);
    expect(drops).toBeGreaterThan(10);
    expect(session.scheduler.evictedBlocks).toBe(drops);
    // H2O keeps some old block past the recent ones: not a sliding window
    expect(text.slice(0, bs).some((i) => i < computed - e.capacity)).toBe(true);
    const length = last!.start + last!.tokens.length;
    const got = ex.readPositions(last!.blockTable, length);
    const fresh = tinyExecutor(4, bs);
    await fresh.step({ copies: [], entries: [{ seqId: 0, tokens: last!.context, start: 0, context: last!.context, blockTable: [0, 1, 2, 3] }] });
    const want = fresh.readPositions([0, 1, 2, 3], length);
    for (const name of ['past_k.0', 'past_v.0']) {
      const a = got.find((x) => x.input === name)!.data;
      const b = want.find((x) => x.input === name)!.data;
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      expect(worst, name).toBeLessThan(name.startsWith('past_v') ? 1e-6 : 1e-4);
    }
  });
});

describe('H2O support', () => {
  it("the interpreter's observeOps reports the steps of fused programs (where a fused attention would be), not the fused node", () => {
    const g = runPasses(tinyGraph(), 'O3', { device: cpuProfile }).graph;
    const stepOps = new Set(g.nodes().filter((n) => n.op === 'fused').flatMap((n) => attrsOf(n, 'fused').steps.map((st) => st.op)));
    expect(stepOps.size).toBeGreaterThan(0);
    const tokens = randomTokens(3, 5);
    const inputs: Record<string, Tensor> = { tokens: Tensor.from('i32', [1, 5], tokens), positions: Tensor.from('i32', [5], [0, 1, 2, 3, 4]) };
    for (const inp of g.inputs) {
      const name = inp.attrs.name as string;
      if (name.startsWith('past_')) inputs[name] = new Tensor('f32', [1, 0, inp.shape[2] as number, inp.shape[3] as number], new Float32Array(0));
    }
    const seen = new Map<string, number>();
    runGraph(g, inputs, { observeOps: (op) => void seen.set(op.op, (seen.get(op.op) ?? 0) + 1) });
    expect(seen.has('fused')).toBe(false);
    for (const op of stepOps) expect(seen.has(op), op).toBe(true);
    expect(seen.get('attention')).toBe(config.nLayers);
  });

  it('evicting requests preempted by recompute complete within their budgets and free their blocks', async () => {
    const session = new ServingSession(tinyExecutor(6, 4), { maxBatchTokens: 16, kvEviction: { policy: 'h2o', budgetTokens: 12, recentTokens: 4 } });
    let most = 0;
    session.onStep = () => (most = Math.max(most, session.scheduler.blocks.usedBlocks));
    const results = await Promise.all([0, 1, 2].map((i) => session.generate({ promptIds: randomTokens(20 + i, 7), maxTokens: 30, temperature: 0, ignoreStopTokens: true })));
    expect(session.metrics().preemptions).toBeGreaterThan(0);
    for (const r of results) expect(r.ids.length).toBe(30);
    expect(session.scheduler.evictedBlocks).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(6);
    expect(session.metrics().kvUsedBlocks).toBe(0);
  });
});

describe.skipIf(!hasShared)('H2O on the paged CPU executor (stories260K)', () => {
  it('a budget larger than the sequence changes nothing: the golden prompts reproduce run.c', async () => {
    const s = await stories260K();
    const g = goldens();
    const session = new ServingSession(s.executor(256, 4), { maxBatchTokens: 7, kvEviction: { policy: 'h2o', budgetTokens: 300, recentTokens: 16 } });
    const results = await Promise.all(g.map((x) => session.generate({ promptIds: x.prompt_ids, maxTokens: 40, temperature: 0 })));
    results.forEach((r, i) => expect(r.ids, `prompt ${i}`).toEqual(g[i].generated_ids.slice(0, 40)));
    expect(session.scheduler.evictedBlocks).toBe(0);
    expect(session.scheduler.blocks.cachedBlocks).toBe(0);
    expect(session.metrics().kvUsedBlocks).toBe(0);
  });

  it('generates 600 tokens past the 512-position context in a pool of the budget, never above it', async () => {
    const s = await stories260K();
    const g = goldens();
    const blockSize = 16;
    const session = new ServingSession(s.executor(4, blockSize), { maxBatchTokens: 64, kvEviction: { policy: 'h2o', budgetTokens: 64, recentTokens: 32 } });
    let most = 0;
    session.onStep = () => (most = Math.max(most, session.scheduler.blocks.usedBlocks));
    expect(s.maxPositions).toBe(512);
    const r = await session.generate({ promptIds: g[0].prompt_ids, maxTokens: 600, temperature: 0, ignoreStopTokens: true });
    expect(r.ids.length).toBe(600);
    expect(r.finish.reason).toBe('length');
    expect(most).toBe(4);
    expect(session.metrics().preemptions).toBe(0);
    expect(session.scheduler.evictedBlocks).toBeGreaterThan(30);
    // until the first drop the cache is the whole sequence: run.c's tokens
    const before = 64 - g[0].prompt_ids.length;
    expect(r.ids.slice(0, before)).toEqual(g[0].generated_ids.slice(0, before));
  }, 60_000);
});
