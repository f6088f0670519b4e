/**
 * H2O heavy-hitter KV eviction (Zhang et al. 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of
 * Large Language Models"), at KV-block granularity: a sequence keeps at most `budgetTokens` tokens' K/V (rounded up to
 * whole blocks), of which the last `recentTokens` (rounded up to whole blocks) are always kept and the rest are the
 * "heavy hitters": the blocks whose positions have received the most attention so far. Every block accumulates the
 * softmax weights its positions receive, summed over layers, query heads and steps (the executor computes them
 * exactly, see `BatchExecutor.takeAttentionMass`). When the cache would exceed the budget, the non-recent block with
 * the least accumulated mass is dropped and its mass forgotten; as with the sliding window (`kv-window.ts`), the keys
 * of the blocks after it are rotated back by the positions dropped, so every kept token's position stays its index in
 * the cache.
 *
 * Unlike the paper, which evicts single tokens, the unit is a block (the paged cache frees blocks), and nothing is
 * pinned: a block of attention sinks stays because it keeps receiving mass.
 * @module
 */
import { InputError } from '../../errors.js';
import { planBoundedStep } from './kv-window.js';

/** A request's (or a session's default) KV eviction policy. */
export interface KvEviction {
  /** The policy: `h2o` keeps recent blocks and the blocks that received the most attention. */
  readonly policy: 'h2o';
  /** Tokens of K/V a sequence keeps at most (rounded up to whole KV blocks). */
  readonly budgetTokens: number;
  /** Most recent tokens always kept, part of the budget (rounded up to whole KV blocks; fewer blocks than the budget). */
  readonly recentTokens: number;
}

/** A {@link KvEviction} in blocks of one pool. */
export interface KvEvictionBlocks {
  /** Blocks a sequence holds at most. */
  readonly budgetBlocks: number;
  /** Most recent full blocks that are never dropped. */
  readonly recentBlocks: number;
  /** Blocks kept for heavy hitters: `budgetBlocks − recentBlocks` (at least 1). */
  readonly heavyBlocks: number;
  /** Tokens the cache holds at most: `budgetBlocks · blockSize`. */
  readonly capacity: number;
  /** Tokens per block. */
  readonly blockSize: number;
}

/**
 * Checks a policy against the pool's block size and the model's context and returns it in blocks. Throws
 * {@link InputError} for an unknown policy, non-positive or fractional counts, a recent part that leaves no block for
 * heavy hitters, or a budget (rounded to blocks) longer than the model's positions.
 */
export function kvEvictionBlocks(e: KvEviction, blockSize: number, maxPositions: number): KvEvictionBlocks {
  if (e.policy !== 'h2o') throw new InputError(`kvEviction.policy must be 'h2o', got ${JSON.stringify(e.policy)}`);
  if (!(Number.isInteger(e.budgetTokens) && e.budgetTokens >= 1)) throw new InputError(`kvEviction.budgetTokens must be a positive integer, got ${e.budgetTokens}`);
  if (!(Number.isInteger(e.recentTokens) && e.recentTokens >= 1)) throw new InputError(`kvEviction.recentTokens must be a positive integer, got ${e.recentTokens}`);
  const budgetBlocks = Math.ceil(e.budgetTokens / blockSize);
  const recentBlocks = Math.ceil(e.recentTokens / blockSize);
  if (recentBlocks >= budgetBlocks)
    throw new InputError(
      `kvEviction: ${e.recentTokens} recent tokens take ${recentBlocks} block(s) of ${blockSize}, which leaves none of the budget's ${budgetBlocks} for heavy hitters`,
    );
  const capacity = budgetBlocks * blockSize;
  if (capacity > maxPositions) throw new InputError(`kvEviction budget of ${e.budgetTokens} tokens takes ${capacity} positions in blocks of ${blockSize}, more than the model's ${maxPositions}`);
  return { budgetBlocks, recentBlocks, heavyBlocks: budgetBlocks - recentBlocks, capacity, blockSize };
}

/** What an evicting sequence does before writing more tokens. */
export interface EvictionStep {
  /** Tokens it may write now (at most the count asked for; at least 1). */
  readonly count: number;
  /** Blocks to drop first, one at a time, each the least-mass block outside the recent ones ({@link leastMassBlock}). */
  readonly dropBlocks: number;
}

/**
 * For a sequence holding `cached` tokens that wants to write `want` more: how many it may write in this step (a prefill
 * chunk is cut so that it and what it attends to fit in the budget) and how many blocks to drop first. Only full
 * blocks before the last `recentBlocks` full ones can go (never the partly filled last block).
 */
export function planEvictionStep(e: KvEvictionBlocks, cached: number, want: number): EvictionStep {
  return planBoundedStep(e, e.recentBlocks, cached, want);
}

/**
 * The block H2O drops from a cache of `cached` tokens: of the full blocks before the last `recentBlocks` full ones, the
 * one with the least accumulated mass (`mass[b]`, per block of the cache in order; the first on a tie). Throws
 * {@link InputError} when no block can go.
 */
export function leastMassBlock(mass: readonly number[], cached: number, e: Pick<KvEvictionBlocks, 'blockSize' | 'recentBlocks'>): number {
  const candidates = Math.floor(cached / e.blockSize) - e.recentBlocks;
  if (candidates < 1) throw new InputError(`no KV block of ${cached} cached tokens is outside the ${e.recentBlocks} recent block(s)`);
  let best = 0;
  for (let b = 1; b < candidates; b++) if ((mass[b] ?? 0) < (mass[best] ?? 0)) best = b;
  return best;
}

/** Parses the CLI's `--kv-h2o BUDGET,RECENT` (e.g. `256,64`). Throws {@link InputError} on anything else. */
export function parseKvH2o(text: string): KvEviction {
  const m = /^\s*(\d+)\s*,\s*(\d+)\s*$/.exec(text);
  if (!m) throw new InputError(`--kv-h2o takes BUDGET,RECENT (two token counts, e.g. 256,64), got ${JSON.stringify(text)}`);
  return { policy: 'h2o', budgetTokens: Number(m[1]), recentTokens: Number(m[2]) };
}
