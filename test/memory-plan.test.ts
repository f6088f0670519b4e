// Static memory planning: hand-built graphs with known answers, random DAGs checked against the plan's invariants,
// and the stories260K / babyllama105 models from ../shared.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InputError, VerifyError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import type { Node } from '../src/ir/node.js';
import { launchesKernel } from '../src/ir/stats.js';
import { cpuProfile } from '../src/ir/device-profile.js';
import { describeMemoryPlan, memoryPlanPass, planMemory, resolvePlanBindings, verifyMemoryPlan, type MemoryPlan, type PlannedBuffer } from '../src/passes/memory-plan.js';
import { OptimizationReport, type PassContext } from '../src/passes/pass.js';
import type { LlamaConfig } from '../src/models/llama.js';
import { analyzeBuffers, normalizeSchedule, scheduleForMemory } from '../src/passes/schedule.js';
import { Rng } from '../src/util/random.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

const S = 4096; // bytes of an f32[1024] buffer, a multiple of every alignment used below

function buf(plan: MemoryPlan, n: Node): PlannedBuffer {
  const b = plan.bufferOf(n);
  if (!b) throw new Error(`no buffer for ${n.op}#${n.id}`);
  return b;
}

function tampered(plan: MemoryPlan, edit: (b: PlannedBuffer) => PlannedBuffer): MemoryPlan {
  return { ...plan, buffers: plan.buffers.map(edit) };
}

function ctx(options: Record<string, unknown> = {}): PassContext {
  return { options, device: cpuProfile, report: new OptimizationReport(), matches: {} };
}

/** A chain over f32[1024] (one buffer each): x → a = silu → bb = exp → c = tanh → d = relu. */
function chain(): { b: GraphBuilder; x: Node; a: Node; bb: Node; c: Node; d: Node } {
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', [1024]);
  const a = b.silu(x);
  const bb = b.exp(a);
  const c = b.tanh(bb);
  return { b, x, a, bb, c, d: b.relu(c) };
}

/** A diamond over f32[1024]: a = silu(x) forks into l = exp(a) and r = tanh(a), joined by d = l + r. */
function diamond(): { b: GraphBuilder; x: Node; a: Node; l: Node; r: Node; d: Node } {
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', [1024]);
  const a = b.silu(x);
  const l = b.exp(a);
  const r = b.tanh(a);
  return { b, x, a, l, r, d: b.add(l, r) };
}

describe('planMemory on hand-built graphs', () => {
  it('a chain a→b→c→d needs two buffers', () => {
    const { b, x, a, bb, c, d } = chain();
    const plan = planMemory(b.build({ d }), { bindings: {} });
    verifyMemoryPlan(plan);
    expect(plan.schedule).toEqual([a, bb, c, d]);
    expect(plan.peakBytesNaive).toBe(4 * S);
    expect(plan.peakBytesPlanned).toBe(2 * S);
    expect(plan.arenaBytes).toBe(2 * S);
    expect(plan.lowerBound).toBe(2 * S);
    expect(plan.inputBytes).toBe(S);
    expect([buf(plan, a), buf(plan, bb), buf(plan, c), buf(plan, d)].map((x) => [x.firstStep, x.lastStep])).toEqual([[0, 1], [1, 2], [2, 3], [3, 3]]);
    expect(plan.offsetOf(a)).toBe(plan.offsetOf(c));
    expect(plan.offsetOf(bb)).toBe(plan.offsetOf(d));
    expect(plan.offsetOf(a)).not.toBe(plan.offsetOf(bb));
    expect(plan.offsetOf(x)).toBeUndefined();
    expect(describeMemoryPlan(plan)).toBe('planned peak 0.01 MiB vs naive 0.02 MiB (50.0%)');
  });

  it('a diamond keeps the fork live until both branches ran', () => {
    const { b, a, d } = diamond();
    const plan = planMemory(b.build({ d }), { bindings: {} });
    verifyMemoryPlan(plan);
    expect(plan.schedule[0]).toBe(a);
    expect(plan.schedule[3]).toBe(d);
    expect(buf(plan, a).lastStep).toBe(2);
    expect(plan.peakBytesNaive).toBe(4 * S);
    expect(plan.lowerBound).toBe(3 * S);
    expect(plan.peakBytesPlanned).toBe(3 * S);
    // d reuses a's bytes: a is dead once both branches have read it
    expect(plan.offsetOf(d)).toBe(plan.offsetOf(a));
  });

  it('a reshape view aliases its operand and extends its lifetime', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4, 256]);
    const a = b.silu(x);
    const e = b.exp(a);
    const t = b.tanh(e);
    const va = b.reshape(b.reshape(a, [1024]), [2, 512]); // a view of a view
    const d = b.add(b.reshape(t, [2, 512]), va);
    const out = b.reshape(d, [1024]); // an output that is a view
    const plan = planMemory(b.build({ out }), { bindings: {} });
    verifyMemoryPlan(plan);
    expect(plan.schedule).toEqual([a, e, t, d]);
    expect(plan.buffers.filter((x) => !x.aliasOf)).toHaveLength(4);
    expect(buf(plan, a)).toMatchObject({ firstStep: 0, lastStep: 3 });
    expect(buf(plan, va)).toMatchObject({ aliasOf: a, offset: plan.offsetOf(a), firstStep: 0, lastStep: 3, bytes: S });
    expect(buf(plan, va.inputs[0]).aliasOf).toBe(a);
    expect(buf(plan, out)).toMatchObject({ aliasOf: d, lastStep: 3 });
    expect(plan.lowerBound).toBe(3 * S);
    expect(plan.peakBytesPlanned).toBe(3 * S);
    // without the view a would die after step 1 and two buffers would do (as in the chain)
    expect(plan.offsetOf(a)).not.toBe(plan.offsetOf(t));
  });

  it('graph outputs stay live until the end', () => {
    const { b, a, bb, c, d } = chain();
    const plan = planMemory(b.build({ a, d }), { bindings: {} });
    verifyMemoryPlan(plan);
    expect(plan.schedule).toEqual([a, bb, c, d]);
    expect(buf(plan, a)).toMatchObject({ firstStep: 0, lastStep: 3 });
    expect(plan.peakBytesPlanned).toBe(3 * S);
    expect(plan.lowerBound).toBe(3 * S);
    expect(new Set([a, c, d].map((n) => plan.offsetOf(n))).size).toBe(3);
  });

  it('inputs, weights and constants stay outside the arena', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', ['seq', 8]);
    const w = b.weight('w', [16, 8], new Float32Array(128));
    const y = b.add(b.linear(x, w), 1);
    const v = b.reshape(x, [-1]);
    const plan = planMemory(b.build({ y, v, w }), { bindings: { seq: 3 } });
    verifyMemoryPlan(plan);
    expect(plan.inputBytes).toBe(3 * 8 * 4);
    expect(plan.weightBytes).toBe(128 * 4);
    expect(plan.constantBytes).toBe(4);
    expect(plan.schedule.map((n) => n.op)).toEqual(['matmul', 'add']);
    expect(plan.buffers.map((p) => p.node.op)).toEqual(['matmul', 'add']);
    expect(plan.offsetOf(v)).toBeUndefined();
    expect(plan.offsetOf(w)).toBeUndefined();
    expect(buf(plan, y).bytes).toBe(3 * 16 * 4);
    expect(buf(plan, y).alignedBytes).toBe(256);
    expect(plan.peakBytesPlanned).toBe(512);
  });

  it('sizes follow dtype and bindings, offsets follow alignment', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f16', ['batch', 'seq', 10]);
    const m = b.greater(x, b.constant(0, 'f16'));
    const h = b.cast(x, 'f32');
    const y = b.where(m, h, 0);
    const g = b.build({ y });
    for (const alignment of [1, 4, 64, 256]) {
      const plan = planMemory(g, { bindings: { batch: 2, seq: 7 }, alignment });
      verifyMemoryPlan(plan);
      expect(plan.inputBytes).toBe(2 * 7 * 10 * 2);
      expect(buf(plan, m).bytes).toBe(140 * 4); // bool is a u32 in a GPU buffer
      expect(buf(plan, h).bytes).toBe(140 * 4);
      for (const p of plan.buffers) expect(p.offset % alignment).toBe(0);
    }
    expect(() => planMemory(g, { bindings: { batch: 2 } })).toThrow(InputError);
    expect(() => planMemory(g, { bindings: { batch: 2, seq: 7 }, alignment: 0 })).toThrow(InputError);
  });

  it('takes a given schedule, and rejects invalid ones', () => {
    const { b, x, a, l, r, d } = diamond();
    const g = b.build({ d });
    const plan = planMemory(g, { bindings: {}, schedule: [x, a, r, l, d] });
    expect(plan.schedule).toEqual([a, r, l, d]);
    verifyMemoryPlan(plan);
    expect(() => planMemory(g, { bindings: {}, schedule: [l, a, r, d] })).toThrow(/runs before its operand/);
    expect(() => planMemory(g, { bindings: {}, schedule: [a, l, d] })).toThrow(/missing/);
    expect(() => planMemory(g, { bindings: {}, schedule: [a, l, l, r, d] })).toThrow(/twice/);
    expect(() => planMemory(g, { bindings: {}, schedule: [a, l, r, d, b.sin(x)] })).toThrow(/not a kernel of this graph/);
  });

  it('verifyMemoryPlan catches overlaps, misalignment, overflow and short lifetimes', () => {
    const { b, a, l, r, d } = diamond();
    const plan = planMemory(b.build({ d }), { bindings: {} });
    verifyMemoryPlan(plan);
    const at = (n: Node, change: Partial<PlannedBuffer>): MemoryPlan => tampered(plan, (p) => (p.node === n ? { ...p, ...change } : p));
    expect(() => verifyMemoryPlan(at(l, { offset: plan.offsetOf(r)! }))).toThrow(VerifyError);
    expect(() => verifyMemoryPlan(at(l, { offset: plan.offsetOf(r)! }))).toThrow(/overlap in memory while both are live/);
    expect(() => verifyMemoryPlan(at(a, { offset: 4 }))).toThrow(/not a non-negative multiple of 256/);
    expect(() => verifyMemoryPlan(at(a, { offset: plan.arenaBytes }))).toThrow(/runs past/);
    expect(() => verifyMemoryPlan(at(a, { lastStep: 1 }))).toThrow(/reads silu#\d+, live only in steps \[0, 1\]/);
    expect(() => verifyMemoryPlan(at(d, { lastStep: 2, firstStep: 2 }))).toThrow(VerifyError);
    expect(() => verifyMemoryPlan({ ...plan, buffers: plan.buffers.filter((p) => p.node !== r) })).toThrow(/no buffer/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// random DAGs

type Step = { kind: 0 | 1 | 2 | 3 | 4 | 5; i: number; j: number };

/** A random DAG of 1-D and 2-D f32 values of varying sizes: unary ops, adds, concats, reductions and views. */
function randomGraph(inputLens: readonly number[], steps: readonly Step[], outputPicks: readonly number[]): Graph {
  const b = new GraphBuilder();
  const pool: Node[] = inputLens.map((n, i) => b.input(`x${i}`, 'f32', [n]));
  const flat = (n: Node): Node => (n.rank === 1 ? n : b.reshape(n, [-1]));
  const len = (n: Node): number => n.shape.reduce((p: number, q) => p * (q as number), 1);
  const prefix = (n: Node, m: number): Node => (len(n) === m ? flat(n) : b.sliceAxis(flat(n), 0, 0, m));
  for (const s of steps) {
    const x = pool[s.i % pool.length];
    const y = pool[s.j % pool.length];
    let n: Node;
    switch (s.kind) {
      case 0:
        n = b.silu(flat(x));
        break;
      case 1: {
        const m = Math.min(len(x), len(y));
        n = b.add(prefix(x, m), prefix(y, m));
        break;
      }
      case 2:
        n = len(x) + len(y) <= 1 << 14 ? b.concat([flat(x), flat(y)], 0) : b.exp(flat(x));
        break;
      case 3:
        n = x.rank === 1 ? b.reshape(x, [1, -1]) : b.reshape(x, [-1]);
        break;
      case 4:
        n = b.sum(flat(x), [0], true);
        break;
      default:
        n = b.mul(flat(x), flat(x));
    }
    pool.push(n);
  }
  const outs = new Map<string, Node>([['last', pool[pool.length - 1]]]);
  outputPicks.forEach((p, i) => outs.set(`o${i}`, pool[p % pool.length]));
  return b.build(Object.fromEntries(outs));
}

/** A random valid kernel order: Kahn's algorithm with seeded random picks. */
function randomSchedule(g: Graph, seed: number): Node[] {
  const a = analyzeBuffers(g, {});
  const rng = new Rng(seed);
  const waiting = new Map(a.kernels.map((k) => [k, a.deps.get(k)!.length]));
  const ready = a.kernels.filter((k) => waiting.get(k) === 0);
  const out: Node[] = [];
  while (ready.length) {
    const [k] = ready.splice(rng.int(ready.length), 1);
    out.push(k);
    for (const r of a.readers.get(k)!) {
      waiting.set(r, waiting.get(r)! - 1);
      if (waiting.get(r) === 0) ready.push(r);
    }
  }
  return out;
}

/** Brute force: the most aligned bytes live at any step, from the buffers' lifetimes. */
function liveAtWorstStep(plan: MemoryPlan): number {
  let worst = 0;
  for (let s = 0; s < plan.schedule.length; s++) {
    let live = 0;
    for (const p of plan.buffers) if (!p.aliasOf && p.firstStep <= s && s <= p.lastStep) live += p.alignedBytes;
    worst = Math.max(worst, live);
  }
  return worst;
}

describe('planMemory on random DAGs', () => {
  const graphArb = fc.record({
    inputLens: fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 3 }),
    steps: fc.array(fc.record({ kind: fc.constantFrom(0, 1, 2, 3, 4, 5) as fc.Arbitrary<Step['kind']>, i: fc.nat(), j: fc.nat() }), { minLength: 1, maxLength: 40 }),
    outputPicks: fc.array(fc.nat(), { maxLength: 3 }),
    alignment: fc.constantFrom(1, 4, 16, 256),
    seed: fc.nat(),
  });

  it('plans verify, and lowerBound ≤ planned ≤ naive, for the default and random schedules', () => {
    fc.assert(
      fc.property(graphArb, ({ inputLens, steps, outputPicks, alignment, seed }) => {
        const g = randomGraph(inputLens, steps, outputPicks);
        for (const schedule of [undefined, randomSchedule(g, seed)]) {
          const plan = planMemory(g, { bindings: {}, alignment, schedule });
          verifyMemoryPlan(plan);
          expect(plan.peakBytesPlanned).toBeLessThanOrEqual(plan.peakBytesNaive);
          expect(plan.peakBytesPlanned).toBeGreaterThanOrEqual(plan.lowerBound);
          expect(plan.lowerBound).toBe(liveAtWorstStep(plan));
          expect(plan.schedule).toHaveLength(g.nodes().filter(launchesKernel).length);
          for (const o of g.outputNodes) {
            const p = plan.bufferOf(o);
            if (p) expect(p.lastStep).toBe(plan.schedule.length - 1);
          }
        }
      }),
      { numRuns: 200 },
    );
  });

  it('the memory-aware schedule is a valid order, and the default plan is never larger than the depth-first plan', () => {
    fc.assert(
      fc.property(graphArb, ({ inputLens, steps, outputPicks, alignment }) => {
        const g = randomGraph(inputLens, steps, outputPicks);
        const a = analyzeBuffers(g, {});
        const order = scheduleForMemory(g, {}, alignment, a);
        expect(normalizeSchedule(a, order)).toEqual(order);
        const dfs = planMemory(g, { bindings: {}, alignment, schedule: g.nodes() });
        const chosen = planMemory(g, { bindings: {}, alignment });
        expect(chosen.peakBytesPlanned).toBeLessThanOrEqual(dfs.peakBytesPlanned);
      }),
      { numRuns: 100 },
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// the pass

describe('memoryPlanPass', () => {
  it('puts the plan in meta.memoryPlan and reports planned vs naive', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', ['batch', 'seq', 'width']);
    const y = b.exp(b.silu(x));
    const g = b.build({ y }, { family: 'test' });
    const c = ctx({ bindings: { width: 256 } });
    const out = memoryPlanPass.run(g, c);
    expect(memoryPlanPass.name).toBe('plan-memory');
    expect(out.outputs).toEqual(g.outputs);
    expect(out.meta.family).toBe('test');
    expect(g.meta.memoryPlan).toBeUndefined();
    const plan = out.meta.memoryPlan as MemoryPlan;
    verifyMemoryPlan(plan);
    expect(plan.bindings).toEqual({ batch: 1, seq: 512, width: 256 });
    expect(plan.peakBytesPlanned).toBe(2 * 512 * 256 * 4);
    const mem = c.report.ofKind('memory');
    expect(mem).toHaveLength(1);
    expect(mem[0].pass).toBe('plan-memory');
    expect(mem[0].message).toMatch(/^planned peak 1\.00 MiB vs naive 1\.00 MiB \(100\.0%\)/);
    expect(c.report.ofKind('info')).toHaveLength(0);
  });

  it('assumes 1 for unknown symbols, with a note', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', ['heads', 'seq', 'past']);
    const g = b.build({ y: b.exp(x) });
    expect(resolvePlanBindings(g)).toEqual({ bindings: { heads: 1, past: 0, seq: 512 }, assumed: ['heads'] });
    const c = ctx({ bindings: { seq: 4, past: 2 }, memoryAlignment: 16 });
    const plan = memoryPlanPass.run(g, c).meta.memoryPlan as MemoryPlan;
    expect(plan.alignment).toBe(16);
    expect(plan.peakBytesPlanned).toBe(32);
    expect(c.report.ofKind('info').map((e) => e.message)).toEqual(['no value for symbolic dim heads; assumed 1']);
    expect(() => memoryPlanPass.run(g, ctx({ bindings: { seq: 'x' } }))).toThrow(InputError);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// real models

noteMissingShared('memory plans of stories260K and babyllama105');

describe.skipIf(!hasShared)('planMemory on llama2.c models at seq 512, past 0', async () => {
  const { loadModel } = await import('../src/frontends/load.js');
  for (const [name, file] of [
    ['stories260K', 'models/stories260K/stories260K.bin'],
    ['babyllama105', 'models/babyllama105/model5000.bin'],
  ] as const) {
    it(`${name}: planned peak is at most half of naive`, async () => {
      const model = await loadModel(sharedPath(file));
      const g = model.build();
      const plan = planMemory(g, { bindings: { seq: 512, past: 0 } });
      verifyMemoryPlan(plan);
      process.stderr.write(
        `[memory-plan] ${name}: ${plan.schedule.length} kernels, naive ${plan.peakBytesNaive} B, planned ${plan.peakBytesPlanned} B, lower bound ${plan.lowerBound} B (${describeMemoryPlan(plan)})\n`,
      );
      expect(plan.peakBytesPlanned).toBeLessThanOrEqual(0.5 * plan.peakBytesNaive);
      expect(plan.peakBytesPlanned).toBeGreaterThanOrEqual(plan.lowerBound);
      // logits [1, 512, vocab] and the present K/V of every layer are outputs, live at the end together
      const c = model.config;
      const kv = 2 * (c as LlamaConfig).nLayers * 512 * ((c as LlamaConfig).dim / (c as LlamaConfig).nHeads) * (c as LlamaConfig).nKvHeads * 4;
      expect(plan.lowerBound).toBeGreaterThanOrEqual(512 * c.vocabSize * 4 + kv);
      expect(plan.weightBytes).toBe(model.weightBytes);
      // the default plan is no worse than planning the graph's depth-first order
      expect(plan.peakBytesPlanned).toBeLessThanOrEqual(planMemory(g, { bindings: { seq: 512, past: 0 }, schedule: g.nodes() }).peakBytesPlanned);
    });
  }

  it('stories260K through the O1 pipeline and then plan-memory', async () => {
    const { resolvePipeline, runPasses } = await import('../src/passes/pipeline.js');
    const model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    const r = runPasses(model.build(), [...resolvePipeline('O1'), memoryPlanPass], { verify: true, options: { bindings: { seq: 512, past: 0 } } });
    const plan = r.graph.meta.memoryPlan as MemoryPlan;
    verifyMemoryPlan(plan);
    expect(r.graph.outputs.map((o) => plan.bufferOf(o.node)?.lastStep)).toEqual(r.graph.outputs.map(() => plan.schedule.length - 1));
    expect(plan.peakBytesPlanned).toBeLessThanOrEqual(0.5 * plan.peakBytesNaive);
    expect(r.report.ofPass('plan-memory').map((e) => e.kind)).toEqual(['memory']);
    expect(r.report.ofPass('plan-memory')[0].message).toMatch(/^planned peak \d+\.\d\d MiB vs naive \d+\.\d\d MiB \(\d+\.\d%\)/);
  });
});
