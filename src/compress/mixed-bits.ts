/**
 * Mixed bits per layer under an average-bit budget: given, for every layer, its parameter count and a loss (its
 * sensitivity, e.g. the KL to the f32 model with that layer alone quantized) for each candidate grid, picks one
 * candidate per layer so that the parameter-weighted average of bits per weight stays within the budget and the sum
 * of the losses is least (the usual additive model of layer sensitivities, as in HAWQ-style allocation).
 *
 * {@link allocateBits} solves this multiple-choice knapsack exactly by dynamic programming over layers, with the budget
 * in bits (`Σ bits·params`) measured in units of the greatest common divisor of all cost differences, so the solution
 * is the exact optimum whenever that many states fit (`maxStates`); otherwise the costs are rounded *up* to a coarser
 * unit (the budget is still respected, `exact` is false).
 *
 * How the bits of a candidate are counted is the caller's choice ({@link bitsPerWeight}): the grid bits alone, the grid
 * bits plus the f16 scales (and offsets) per group as a format packing b-bit integers would store them, or the bits per
 * weight of the GGUF blocks actually written (3- and 2-bit grids in 4-bit blocks).
 * @module
 */
import { InputError } from '../errors.js';
import { GGUF_BLOCK, type GridSpec } from './grid.js';

/** How a candidate's bits per weight are counted. */
export type BitCount = 'grid' | 'packed' | 'file';

/** The ways of counting, for help texts. */
export const BIT_COUNTS: readonly BitCount[] = ['grid', 'packed', 'file'];

/**
 * Bits per weight of a grid:
 * - `grid`: the grid's bits alone (scales not counted);
 * - `packed`: grid bits + a f16 scale per group, + a f16 offset per group for asymmetric grids below 8 bits (8-bit
 *   grids are symmetric): what a format packing b-bit integers would store;
 * - `file`: the GGUF blocks `quantize` writes: Q8_0 8.5, Q4_0 4.5, Q4_1 5 (3- and 2-bit grids in 4-bit blocks; groups
 *   above 32 repeat their scale in every 32-element block).
 */
export function bitsPerWeight(spec: GridSpec, count: BitCount): number {
  const asym = spec.bits < 8 && !spec.symmetric;
  if (count === 'grid') return spec.bits;
  if (count === 'packed') return spec.bits + (16 * (asym ? 2 : 1)) / spec.groupSize;
  const blockBits = spec.bits === 8 ? 8 : 4;
  return blockBits + (16 * (asym ? 2 : 1)) / GGUF_BLOCK;
}

/** One layer of an allocation problem. */
export interface AllocationLayer {
  /** Parameters (weights) of the layer. */
  readonly params: number;
  /** Bits per weight of each candidate. */
  readonly bits: readonly number[];
  /** Loss of each candidate (same length as `bits`; smaller is better). */
  readonly loss: readonly number[];
}

/** The result of {@link allocateBits}. */
export interface Allocation {
  /** The candidate index chosen for each layer. */
  readonly choice: number[];
  /** Σ loss of the choice. */
  readonly loss: number;
  /** Σ bits·params / Σ params of the choice. */
  readonly averageBits: number;
  /** Whether the DP ran on the exact costs (the optimum), or on costs rounded up to a coarser unit. */
  readonly exact: boolean;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Chooses a candidate per layer minimising Σ loss subject to Σ bits·params ≤ `averageBits`·Σ params.
 * Costs `bits·params` are rounded to integers (multiply `bits` up front if they are finer than 1/params).
 * @throws InputError when even the cheapest candidates exceed the budget, or for malformed layers.
 */
export function allocateBits(layers: readonly AllocationLayer[], averageBits: number, maxStates = 1 << 20): Allocation {
  if (!layers.length) throw new InputError('no layers to allocate bits to');
  for (const l of layers)
    if (!(l.params > 0) || !l.bits.length || l.bits.length !== l.loss.length || l.loss.some((x) => !Number.isFinite(x)))
      throw new InputError('each layer needs positive params and one finite loss per candidate');
  const total = layers.reduce((a, l) => a + l.params, 0);
  const cost = layers.map((l) => l.bits.map((b) => Math.round(b * l.params)));
  const base = cost.map((c) => Math.min(...c));
  const minTotal = base.reduce((a, b) => a + b, 0);
  const budget = Math.floor(averageBits * total + 1e-6);
  if (minTotal > budget) throw new InputError(`the budget of ${averageBits} bits per weight is below the cheapest choice (${(minTotal / total).toFixed(4)} bits per weight)`);
  const slack = budget - minTotal;
  // extra cost of each candidate over the layer's cheapest, in units
  const extras = cost.map((c, i) => c.map((x) => x - base[i]));
  let unit = 0;
  for (const e of extras) for (const x of e) if (x > 0 && x <= slack) unit = gcd(unit, x);
  let exact = true;
  if (unit === 0) unit = slack + 1;
  if (slack / unit > maxStates) {
    unit = Math.ceil(slack / maxStates);
    exact = false;
  }
  const states = Math.floor(slack / unit) + 1;
  const units = extras.map((e) => e.map((x) => Math.ceil(x / unit)));
  // dp[s]: least loss of the layers so far with extra cost ≤ s units; pick[i][s]: choice of layer i
  let dp = new Float64Array(states); // zero layers: 0 loss
  const pick: Uint8Array[] = [];
  layers.forEach((l, i) => {
    const next = new Float64Array(states).fill(Infinity);
    const p = new Uint8Array(states);
    for (let s = 0; s < states; s++)
      for (let c = 0; c < l.bits.length; c++) {
        const u = units[i][c];
        if (u > s) continue;
        const v = dp[s - u] + l.loss[c];
        if (v < next[s]) {
          next[s] = v;
          p[s] = c;
        }
      }
    pick.push(p);
    dp = next;
  });
  const choice = new Array<number>(layers.length);
  let s = states - 1;
  for (let i = layers.length - 1; i >= 0; i--) {
    choice[i] = pick[i][s];
    s -= units[i][choice[i]];
  }
  const loss = choice.reduce((a, c, i) => a + layers[i].loss[c], 0);
  const averageBitsChosen = choice.reduce((a, c, i) => a + layers[i].bits[c] * layers[i].params, 0) / total;
  return { choice, loss, averageBits: averageBitsChosen, exact };
}
