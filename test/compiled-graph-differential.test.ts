// Differential testing of compiled graphs: random well-typed graphs (test/support/random-graph.ts) compiled for WebGPU
// and run on the device, every output compared with the CPU reference interpreter. FUZZ_RUNS cases (default 200) in
// batches of FUZZ_BATCH (default 10) merged into one engine each, every other batch compiled for a GPU-class target
// (f16 storage, the kernel variants of real GPUs) and run on the same device; case seeds come from FUZZ_SEED, and a
// failure prints its seed, how to rebuild it and its minimized graph. `FUZZ_RUNS=5000` runs 5,000 cases. lavapipe
// JIT-compiles each distinct kernel on its first dispatch: that is most of the time.
import { afterAll, describe, expect, it } from 'vitest';
import { createTarget } from '../src/codegen/target.js';
import { compileGraphEngine } from '../src/compile.js';
import { UnsupportedOpError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { quantizeWeight } from '../src/ir/weights.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice } from './helpers/webgpu.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { runDifferentialBatch, type CaseOutcome } from './support/compiled-differential.js';
import { mergeGraphCases } from './support/merge-graphs.js';
import { buildRandomGraph, compareTensors, type RandomGraphOptions } from './support/random-graph.js';

// FUZZ_CASE=<seed> reruns one case alone, compiled for both targets (what a failure report says to run)
const ONLY = process.env.FUZZ_CASE === undefined ? undefined : Number(process.env.FUZZ_CASE);
const RUNS = ONLY !== undefined ? 1 : Number(process.env.FUZZ_RUNS ?? 200);
const BATCH = Number(process.env.FUZZ_BATCH ?? 10);
const SEED = Number(process.env.FUZZ_SEED ?? 20261205);
const GEN: RandomGraphOptions = { maxSteps: 10 };

const gpu = await acquireTestDevice();
afterAll(() => gpu?.destroy());

/** The case seeds of a run: FUZZ_RUNS draws from FUZZ_SEED. */
function caseSeeds(): number[] {
  if (ONLY !== undefined) return [ONLY];
  const rng = new Rng(SEED);
  return Array.from({ length: RUNS }, () => Math.floor(rng.next() * 0x7fffffff));
}

describe('compiled graphs on WebGPU agree with the CPU reference (differential)', () => {
  it.skipIf(!gpu)(`${RUNS} random graphs in batches of ${BATCH}`, { timeout: Math.max(1_200_000, RUNS * 10_000) }, async () => {
    const seeds = caseSeeds();
    const outcomes: CaseOutcome[] = [];
    for (let at = 0; at < seeds.length; at += BATCH) {
      const batch = seeds.slice(at, at + BATCH);
      // every other batch is compiled for a GPU-class target (its kernel variants, f16 storage) and run on the device
      const engines = ONLY !== undefined ? (['device', 'gpu-class'] as const) : [(at / BATCH) % 2 === 0 ? ('device' as const) : ('gpu-class' as const)];
      const done: CaseOutcome[] = [];
      for (const engine of engines) {
        const origin = `FUZZ_SEED=${SEED} batch ${at / BATCH} of ${BATCH}; rerun alone: FUZZ_CASE=<seed> npx vitest run test/compiled-graph-differential.test.ts`;
        done.push(...(await runDifferentialBatch(batch, gpu!, { gen: GEN, engine, origin })));
      }
      // failures as they are found (a long FUZZ_RUNS run shows them before it ends)
      for (const f of done) if (f.status === 'fail') process.stderr.write(`[compiled-graph-differential] FAIL ${f.detail}\n`);
      outcomes.push(...done);
      if (RUNS > 200 && (at / BATCH) % 10 === 9) process.stderr.write(`[compiled-graph-differential] ${outcomes.length}/${RUNS} cases, ${outcomes.filter((o) => o.status === 'fail').length} failed\n`);
    }
    const failed = outcomes.filter((o) => o.status === 'fail');
    const unsupported = outcomes.filter((o) => o.status === 'unsupported');
    const reasons = new Map<string, number>();
    for (const u of unsupported) {
      const key = u.detail!.replace(/%\d+ = .*/s, '').replace(/'[^']*'/g, "'…'");
      reasons.set(key, (reasons.get(key) ?? 0) + 1);
    }
    process.stderr.write(
      `[compiled-graph-differential] FUZZ_SEED=${SEED}: ${outcomes.length} cases, ${outcomes.length - failed.length - unsupported.length} pass, ${unsupported.length} refused with UnsupportedOpError, ${failed.length} fail\n` +
        [...reasons].map(([r, n]) => `  refused ${n}x: ${r}\n`).join(''),
    );
    expect(failed.map((f) => f.detail)).toEqual([]);
    // most cases run (about a fifth are refused, nearly all for a quantized weight read by a dense kernel)
    if (ONLY === undefined) expect(unsupported.length).toBeLessThan(outcomes.length / 2);
  });
});

// The refusals the differential sets apart are typed errors at compile time, naming what has no kernel.
describe('what the compiler refuses for WebGPU, it refuses with UnsupportedOpError', () => {
  const compileFor = (g: ReturnType<GraphBuilder['build']>, bindings: Record<string, number> = {}): unknown => {
    try {
      compileGraphEngine(g, bindings, { target: createTarget('lavapipe') });
      return undefined;
    } catch (e) {
      return e;
    }
  };

  it('a quantized weight read by a dense kernel (an elementwise add): no dense copy is made, the weight is named', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 4]);
    const w = b.weight(quantizeWeight('w_q', [2, 4], Float32Array.from([0.5, -1, 0.25, 1, -0.5, 0.75, 0, 1]), { bits: 8, groupSize: 4 }));
    const err = compileFor(b.build({ y: b.add(x, w) }));
    expect(err).toBeInstanceOf(UnsupportedOpError);
    expect((err as Error).message).toMatch(/w_q.*quantized/);
  });

  it('layernorm over a symbolic last axis: the node is named', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4, 'batch']);
    const g = b.build({ y: b.layernorm(x, b.input('g', 'f32', ['batch']), undefined, 1e-3) });
    const err = compileFor(g, { batch: 2 });
    expect(err).toBeInstanceOf(UnsupportedOpError);
    expect((err as Error).message).toMatch(/static last axis.*layernorm/);
  });
});

// Batching cannot hide a failure or make one up: a merged batch computes, output by output, what its cases compute alone.
describe('merged batches', () => {
  it('the union of random cases (static and symbolic, renamed symbols) gives each case its own outputs on the CPU reference', () => {
    const rng = new Rng(SEED + 1);
    let symbolic = 0;
    for (let batch = 0; batch < 6; batch++) {
      const cases = Array.from({ length: 8 }, () => buildRandomGraph(Math.floor(rng.next() * 0x7fffffff), GEN));
      symbolic += cases.filter((c) => Object.keys(c.bindings).length).length;
      const m = mergeGraphCases(cases);
      expect(m.graph.outputs.length).toBe(cases.reduce((a, c) => a + c.graph.outputs.length, 0));
      const got = runGraph(m.graph, m.inputs, { bindings: m.bindings });
      cases.forEach((c, i) => {
        const want = runGraph(c.graph, c.inputs, { bindings: c.bindings });
        for (const [name, t] of Object.entries(want)) expect(compareTensors(got[m.outputNames[i][name]], t, { rtol: 0, atol: 0 }), `seed ${c.seed} ${name}`).toBeNull();
      });
    }
    // more than one symbolic case per batch on average: the renaming is exercised
    expect(symbolic).toBeGreaterThan(6);
  });
});
