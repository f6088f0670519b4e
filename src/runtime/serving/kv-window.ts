/**
 * Sliding-window KV with attention sinks (StreamingLLM, Xiao et al. 2023): a sequence keeps the K/V of its first
 * `sinkTokens` tokens (the "attention sinks" that soak up the softmax mass of heads with nothing to attend to) and of
 * its most recent tokens; older ones are dropped, so a sequence can run past the model's context length in a bounded
 * cache. As in the paper (§3.2) and llama.cpp's context shift, positions are positions within the cache, not in the
 * text: when blocks are dropped, the keys of the blocks after them are rotated back by the number of positions
 * dropped (RoPE composes, `R(p − d) = R(−d) R(p)`, so the shift depends on `d` only), and every kept token's
 * position equals its index in the cache.
 *
 * The cache works in whole blocks: the sinks are rounded up to whole blocks, the recent part to whole blocks, and
 * blocks are dropped one block at a time, oldest non-sink first. After a drop the recent part holds between
 * `(recentBlocks − 1) · blockSize + 1` and `recentBlocks · blockSize` tokens.
 * @module
 */
import { InputError } from '../../errors.js';

/** A request's (or a model's default) sliding window with attention sinks. */
export interface KvWindow {
  /** Tokens kept from the start of the sequence (rounded up to whole KV blocks; 0 = a plain sliding window). */
  readonly sinkTokens: number;
  /** Most recent tokens kept besides the sinks (rounded up to whole KV blocks; at least 1). */
  readonly windowTokens: number;
}

/** A {@link KvWindow} in blocks of one pool. */
export interface KvWindowBlocks {
  /** Blocks at the start of the cache that are never dropped. */
  readonly sinkBlocks: number;
  /** Blocks of recent tokens. */
  readonly recentBlocks: number;
  /** Tokens the cache holds at most: `(sinkBlocks + recentBlocks) · blockSize`. */
  readonly capacity: number;
  /** Tokens per block. */
  readonly blockSize: number;
}

/**
 * Checks a window against the pool's block size and the model's context and returns it in blocks. Throws
 * {@link InputError} for negative or fractional counts, an empty recent part, or a window (rounded to blocks) longer
 * than the model's positions.
 */
export function kvWindowBlocks(w: KvWindow, blockSize: number, maxPositions: number): KvWindowBlocks {
  if (!(Number.isInteger(w.sinkTokens) && w.sinkTokens >= 0)) throw new InputError(`kvWindow.sinkTokens must be a non-negative integer, got ${w.sinkTokens}`);
  if (!(Number.isInteger(w.windowTokens) && w.windowTokens >= 1)) throw new InputError(`kvWindow.windowTokens must be a positive integer, got ${w.windowTokens}`);
  const sinkBlocks = Math.ceil(w.sinkTokens / blockSize);
  const recentBlocks = Math.ceil(w.windowTokens / blockSize);
  const capacity = (sinkBlocks + recentBlocks) * blockSize;
  if (capacity > maxPositions)
    throw new InputError(
      `kvWindow of ${w.sinkTokens} sink + ${w.windowTokens} recent tokens takes ${capacity} positions in blocks of ${blockSize}, more than the model's ${maxPositions}`,
    );
  return { sinkBlocks, recentBlocks, capacity, blockSize };
}

/** What a windowed sequence does before writing more tokens. */
export interface WindowStep {
  /** Tokens it may write now (at most the count asked for; at least 1). */
  readonly count: number;
  /** Blocks to drop, starting at block index `sinkBlocks` of its table (0 = none). */
  readonly dropBlocks: number;
}

/**
 * For a windowed sequence holding `cached` tokens that wants to write `want` more: how many it may write in this step
 * (a prefill chunk is cut so that the chunk and what it attends to fit in the window) and how many blocks to drop
 * first (whole blocks before the write position, so never a sink block nor the partly filled last block).
 */
export function planWindowStep(w: KvWindowBlocks, cached: number, want: number): WindowStep {
  return planBoundedStep(w, w.sinkBlocks, cached, want);
}

/**
 * The step of a sequence whose cache is bounded by `capacity` tokens (a window, an eviction budget): of `cached`
 * tokens, the full blocks past the first `keptBlocks` may be dropped; the write is cut so that it and what it attends
 * to fit, and the drops are the fewest that make room for it.
 */
export function planBoundedStep(b: { readonly capacity: number; readonly blockSize: number }, keptBlocks: number, cached: number, want: number): WindowStep {
  const bs = b.blockSize;
  const droppable = Math.max(0, Math.floor(cached / bs) - keptBlocks);
  const count = Math.max(1, Math.min(want, b.capacity - (cached - droppable * bs)));
  const dropBlocks = Math.max(0, Math.ceil((cached + count - b.capacity) / bs));
  return { count, dropBlocks };
}

/** Parses the CLI's `--kv-window SINKS,RECENT` (e.g. `4,252`). Throws {@link InputError} on anything else. */
export function parseKvWindow(text: string): KvWindow {
  const m = /^\s*(\d+)\s*,\s*(\d+)\s*$/.exec(text);
  if (!m) throw new InputError(`--kv-window takes SINKS,RECENT (two token counts, e.g. 4,252), got ${JSON.stringify(text)}`);
  return { sinkTokens: Number(m[1]), windowTokens: Number(m[2]) };
}
