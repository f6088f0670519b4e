// Differential testing of the whole optimizer: random well-typed graphs run on the reference backend before and
// after the full O3 pipeline (verifier after every pass) must agree; O3 must be idempotent. `npm run fuzz` runs more.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { runPasses } from '../src/passes/pipeline.js';
import { lavapipeProfile, discreteGpuProfile } from '../src/ir/device-profile.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { arbGraphCase, compareTensors, describeCase } from './support/random-graph.js';
import type { Tensor } from '../src/runtime/cpu/tensor.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);
/** Seeded, so a failure reproduces: `FUZZ_SEED=<seed> npx vitest run test/optimizer-fuzz.test.ts`. */
const SEED = Number(process.env.FUZZ_SEED ?? 20261205);

/** Runs a fast-check property with the file's seed; a failure names the seed to rerun with. */
function assertSeeded<T>(property: fc.IProperty<T>, numRuns: number): void {
  try {
    fc.assert(property, { numRuns, seed: SEED });
  } catch (e) {
    throw new Error(`fuzz failure with FUZZ_SEED=${SEED} (FUZZ_RUNS=${RUNS}):\n${(e as Error).message}`, { cause: e });
  }
}

/**
 * f16 against f32: float outputs agree within `2e-2 × scale`, where scale is the largest |f32 output| (at least 1).
 * f16 keeps 11 significant bits (2^-11 ≈ 4.9e-4 of an operand's magnitude), and a random graph chains up to 16 ops,
 * each rounding again; 2e-2 of the output's magnitude is about 40 such roundings (400 seeded cases measured at most
 * 8.2e-3). Integer and boolean outputs must be equal.
 */
function f16Mismatch(f32: Tensor, f16: Tensor): string | null {
  if (f32.dtype !== 'f32' && f32.dtype !== 'f16') return compareTensors(f16, f32, { rtol: 0, atol: 0 });
  let scale = 1;
  for (let i = 0; i < f32.numbers.length; i++) if (Number.isFinite(f32.numbers[i])) scale = Math.max(scale, Math.abs(f32.numbers[i]));
  return compareTensors(f16, f32, { rtol: 0, atol: 2e-2 * scale });
}

describe('O3 differential fuzzing', () => {
  it(`${RUNS} random graphs give the same outputs before and after O3, and O3 is idempotent`, () => {
    let fired = 0;
    assertSeeded(
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
      RUNS,
    );
    // the fuzzer must exercise the optimizer, not only run it
    expect(fired).toBeGreaterThan(RUNS / 4);
  }, 600_000);

  it('random graphs through O3 with f16 (discrete GPU profile) stay close to f32, within a tolerance scaled by magnitude', () => {
    let changed = 0;
    assertSeeded(
      fc.property(arbGraphCase(), (c) => {
        const before = runGraph(c.graph, c.inputs, { bindings: c.bindings });
        const r = runPasses(c.graph, 'O3', { verify: true, device: discreteGpuProfile, options: { bindings: c.bindings } });
        const after = runGraph(r.graph, c.inputs, { bindings: c.bindings });
        for (const o of c.graph.outputs) {
          expect(after[o.name].dtype).toBe(before[o.name].dtype);
          expect(after[o.name].shape).toEqual(before[o.name].shape);
          const bad = f16Mismatch(before[o.name], after[o.name]);
          if (bad) throw new Error(`output ${o.name}: ${bad}\n${describeCase(c)}`);
          if (after[o.name].data.some((v, i) => v !== before[o.name].data[i])) changed++;
        }
      }),
      Math.max(100, Math.floor(RUNS / 10)),
    );
    expect(changed).toBeGreaterThan(10); // f16 really ran: some outputs differ from f32
  }, 600_000);
});
