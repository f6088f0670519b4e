// The mixed-bits allocator (src/compress/mixed-bits.ts): the budget holds, and the DP's choice is the exact optimum of
// the additive model, checked against brute force over every combination on small random problems.
import { describe, expect, it } from 'vitest';
import { allocateBits, bitsPerWeight, type AllocationLayer } from '../src/compress/mixed-bits.js';
import { InputError } from '../src/errors.js';

/** A deterministic generator (mulberry32). */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bruteForce(layers: readonly AllocationLayer[], avg: number): number {
  const total = layers.reduce((a, l) => a + l.params, 0);
  let best = Infinity;
  const walk = (i: number, cost: number, loss: number): void => {
    if (cost > avg * total + 1e-6) return;
    if (i === layers.length) return void (best = Math.min(best, loss));
    layers[i].bits.forEach((b, c) => walk(i + 1, cost + b * layers[i].params, loss + layers[i].loss[c]));
  };
  walk(0, 0, 0);
  return best;
}

describe('allocateBits', () => {
  it('finds the brute-force optimum and respects the budget on random problems', () => {
    const r = rng(15);
    for (let trial = 0; trial < 60; trial++) {
      const bits = [2, 3, 4, 8].map((b) => b + (trial % 2 ? 1 : 0)); // grid bits, or grid + f16 scale and offset at group 32
      const layers: AllocationLayer[] = Array.from({ length: 2 + Math.floor(r() * 5) }, () => {
        const params = 32 * (1 + Math.floor(r() * 40));
        const s = 0.01 + r();
        // decreasing in bits, with noise, as sensitivities are
        return { params, bits, loss: bits.map((_b, c) => s * 4 ** -c * (0.5 + r())) };
      });
      const avg = bits[0] + r() * (bits[3] - bits[0]);
      const a = allocateBits(layers, avg);
      const total = layers.reduce((x, l) => x + l.params, 0);
      const used = a.choice.reduce((x, c, i) => x + layers[i].bits[c] * layers[i].params, 0);
      expect(used).toBeLessThanOrEqual(avg * total + 1e-6);
      expect(a.averageBits).toBeCloseTo(used / total, 12);
      expect(a.exact).toBe(true);
      expect(a.loss).toBeCloseTo(bruteForce(layers, avg), 12);
    }
  });

  it('spends the budget where the loss falls most per bit', () => {
    // two layers of equal size: only one can go from 4 to 8 bits at an average of 6; the sensitive one does
    const layers = [
      { params: 64, bits: [4, 8], loss: [1, 0.5] },
      { params: 64, bits: [4, 8], loss: [10, 0.1] },
    ];
    expect(allocateBits(layers, 6).choice).toEqual([0, 1]);
    expect(allocateBits(layers, 8).choice).toEqual([1, 1]);
    expect(allocateBits(layers, 4).choice).toEqual([0, 0]);
  });

  it('stays within the budget when the states are coarsened', () => {
    const layers = [
      { params: 1000003, bits: [2, 3, 4, 8], loss: [4, 3, 2, 0] },
      { params: 999983, bits: [2, 3, 4, 8], loss: [8, 4, 2, 0] },
    ];
    const a = allocateBits(layers, 4.5, 1000);
    expect(a.averageBits).toBeLessThanOrEqual(4.5);
    expect(a.exact).toBe(false);
  });

  it('rejects a budget below the cheapest choice', () => {
    expect(() => allocateBits([{ params: 64, bits: [4, 8], loss: [1, 0] }], 3)).toThrow(InputError);
  });

  it('counts bits per weight three ways', () => {
    expect(bitsPerWeight({ bits: 4, groupSize: 32, symmetric: false }, 'grid')).toBe(4);
    expect(bitsPerWeight({ bits: 4, groupSize: 32, symmetric: false }, 'packed')).toBe(5); // Q4_1: f16 d and m per 32
    expect(bitsPerWeight({ bits: 3, groupSize: 128, symmetric: false }, 'packed')).toBe(3.25);
    expect(bitsPerWeight({ bits: 3, groupSize: 128, symmetric: false }, 'file')).toBe(5); // a Q4_1 block per 32
    expect(bitsPerWeight({ bits: 2, groupSize: 32, symmetric: true }, 'file')).toBe(4.5); // Q4_0
    expect(bitsPerWeight({ bits: 8, groupSize: 32, symmetric: false }, 'file')).toBe(8.5); // Q8_0
    expect(bitsPerWeight({ bits: 8, groupSize: 64, symmetric: false }, 'packed')).toBe(8.25);
  });
});
