// Differential testing of the whole optimizer: random well-typed graphs run on the reference backend before and
// after the full O3 pipeline (verifier after every pass) must agree; O3 must be idempotent. `npm run fuzz` runs more.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { runPasses } from '../src/passes/pipeline.js';
import { lavapipeProfile, discreteGpuProfile } from '../src/ir/device-profile.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { arbGraphCase, compareTensors, describeCase } from './support/random-graph.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);

describe('O3 differential fuzzing', () => {
  it(`${RUNS} random graphs give the same outputs before and after O3, and O3 is idempotent`, () => {
    let fired = 0;
    fc.assert(
      fc.property(arbGraphCase(), (c) => {
        const before = runGraph(c.graph, c.inputs, { bindings: c.bindings });
        const r = runPasses(c.graph, 'O3', { verify: true, device: lavapipeProfile, options: { bindings: c.bindings } });
        if (r.graph.outputNodes.some((n, i) => n !== c.graph.outputNodes[i])) fired++;
        const after = runGraph(r.graph, c.inputs, { bindings: c.bindings });
        for (const o of c.graph.outputs) {
          const bad = compareTensors(before[o.name], after[o.name], { rtol: 1e-4, atol: 1e-4 });
          if (bad) throw new Error(`output ${o.name}: ${bad}\n${describeCase(c)}`);
        }
        const again = runPasses(r.graph, 'O3', { verify: true, device: lavapipeProfile, options: { bindings: c.bindings } });
        expect(again.graph.outputNodes).toEqual(r.graph.outputNodes);
        again.graph.outputNodes.forEach((n, i) => expect(n).toBe(r.graph.outputNodes[i]));
      }),
      { numRuns: RUNS },
    );
    // the fuzzer must exercise the optimizer, not only run it
    expect(fired).toBeGreaterThan(RUNS / 4);
  }, 600_000);

  it('random graphs through O3 with f16 (discrete GPU profile) stay close to f32', () => {
    fc.assert(
      fc.property(arbGraphCase(), (c) => {
        const before = runGraph(c.graph, c.inputs, { bindings: c.bindings });
        const r = runPasses(c.graph, 'O3', { verify: true, device: discreteGpuProfile, options: { bindings: c.bindings } });
        const after = runGraph(r.graph, c.inputs, { bindings: c.bindings });
        for (const o of c.graph.outputs) {
          expect(after[o.name].dtype).toBe(before[o.name].dtype);
          expect(after[o.name].shape).toEqual(before[o.name].shape);
        }
      }),
      { numRuns: Math.max(50, Math.floor(RUNS / 20)) },
    );
  });
});
