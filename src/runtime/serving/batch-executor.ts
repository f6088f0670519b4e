/**
 * The batch executor: what the serving scheduler needs from a model backend. One call runs one scheduler step, a
 * ragged batch of sequences (each a prefill chunk or one decode token) over a paged KV cache whose blocks the
 * scheduler's {@link KvBlockManager} assigns, and returns the token sampled after each entry that asked for one.
 *
 * Implementations: {@link CpuPagedExecutor} (the CPU reference, paged for real: the block tables decide where K/V
 * live) and {@link EngineSessionExecutor} (the WebGPU engine, one sequence per session, until the engine runs
 * batches itself).
 * @module
 */
import type { SamplerStepSettings } from '../sampler-params.js';

/** One sequence's share of a step. */
export interface ExecutorEntry {
  /** The scheduler's id of the sequence (stable across steps; a preempted sequence comes back with a new id). */
  readonly seqId: number;
  /** Tokens to run now, at positions `start, start + 1, …`. */
  readonly tokens: readonly number[];
  /** Position of `tokens[0]`: how many tokens of the sequence already have K/V in the cache. */
  readonly start: number;
  /**
   * Every token of the sequence up to `start + tokens.length` (`context.slice(start)` equals `tokens`); for a windowed
   * sequence that dropped blocks, the tokens the cache holds, in cache order (sinks, then the recent ones).
   */
  readonly context: readonly number[];
  /** Physical KV blocks of the sequence in logical order, covering positions `0 .. start + tokens.length - 1`. */
  readonly blockTable: readonly number[];
  /** Sample a token after the last of `tokens` with these settings; absent for a prefill chunk that is not the last. */
  readonly sampling?: SamplerStepSettings;
  /**
   * Compute the attention mass the cache positions receive in this entry (H2O eviction, see `kv-eviction.ts`), for
   * {@link BatchExecutor.takeAttentionMass}; only for an executor with `tracksAttention`.
   */
  readonly attentionMass?: boolean;
}

/** The KV pool's shape. */
export interface KvPoolShape {
  /** Blocks in the pool. */
  readonly numBlocks: number;
  /** Tokens per block. */
  readonly blockSize: number;
}

/** A block copy (copy-on-write): the contents of block `src` into block `dst`. */
export interface BlockCopy {
  /** Block copied from. */
  readonly src: number;
  /** Block copied to. */
  readonly dst: number;
}

/** Blocks of a preempted sequence moved between the KV pool and host memory, under a key of the scheduler's. */
export interface SwapBlocks {
  /** Names the host copy (the scheduler's request id). */
  readonly key: number;
  /** Pool blocks, in the sequence's logical order. */
  readonly blocks: readonly number[];
}

/**
 * A key shift of a windowed sequence (StreamingLLM, see `kv-window.ts`): after blocks before these were dropped from
 * its table, the keys stored in `blocks` (every slot) are rotated back by `delta` positions, so that the key of the
 * token at cache position `p + delta` becomes the key RoPE gives at position `p`. Values do not change.
 */
export interface KvShift {
  /** The sequence (for error messages). */
  readonly seqId: number;
  /** Pool blocks whose keys to rotate. */
  readonly blocks: readonly number[];
  /** Positions to rotate back by (positive). */
  readonly delta: number;
}

/**
 * One scheduler step for the executor, done in this order: swap-outs (read before anything is written), swap-ins,
 * copies, key shifts, then the entries.
 */
export interface ExecutorBatch {
  /** Blocks to copy to host memory (preemption by swapping; only for an executor with `canSwap`). */
  readonly swapOut?: readonly SwapBlocks[];
  /** Host copies to write back into these blocks (and forget). */
  readonly swapIn?: readonly SwapBlocks[];
  /** Block copies to make before running (copy-on-write of shared blocks): contents of `src` into `dst`. */
  readonly copies: readonly BlockCopy[];
  /** Key shifts of windowed sequences (only for an executor with `canShiftKeys`). */
  readonly shifts?: readonly KvShift[];
  /** The sequences to run. */
  readonly entries: readonly ExecutorEntry[];
}

/** A model backend the serving scheduler can drive. */
export interface BatchExecutor {
  /** Longest sequence (prompt and generation) the model supports. */
  readonly maxPositions: number;
  /** Vocabulary size (token ids are `0 .. vocabSize - 1`). */
  readonly vocabSize: number;
  /** Ids that end generation when sampled (EOS; BOS for llama2.c models). */
  readonly stopTokens: readonly number[];
  /** The KV pool the executor holds: blocks and tokens per block; the scheduler's block manager uses the same. */
  readonly kv: KvPoolShape;
  /** Most sequences that can hold KV state at once (Infinity when only the KV pool limits it). */
  readonly maxSequences: number;
  /**
   * Whether a block the block manager shares between sequences is stored once by the executor too (default true).
   * False (an engine with its own block tables): the scheduler runs without its prefix cache, which would count a
   * shared block once while the executor stores it per sequence.
   */
  readonly sharesBlocks?: boolean;
  /**
   * Runs one step and resolves to one id per entry, in entry order: the sampled token, or -1 for an entry without
   * `sampling`.
   */
  step(batch: ExecutorBatch): Promise<number[]>;
  /** Forgets sequence `seqId` (finished, cancelled or preempted); its blocks are the block manager's to reuse. */
  release(seqId: number): void;
  /**
   * Bytes of memory the executor holds for the model on its device (GPU buffers for an engine; the KV pool and the
   * weights in host memory for the CPU reference), for a memory budget over several models.
   */
  readonly memoryBytes?: number;
  /** Whether the executor can swap blocks to host memory ({@link ExecutorBatch.swapOut}); default false. */
  readonly canSwap?: boolean;
  /**
   * Whether the executor can rotate cached keys to new positions ({@link ExecutorBatch.shifts}), which sliding-window
   * requests with attention sinks need; default false.
   */
  readonly canShiftKeys?: boolean;
  /**
   * Whether the executor computes the attention mass of entries that ask ({@link ExecutorEntry.attentionMass}), which
   * H2O eviction needs; default false.
   */
  readonly tracksAttention?: boolean;
  /**
   * After a step: per cache position `0 .. start + tokens.length − 1` of sequence `seqId`, the softmax weight it
   * received in that step, summed over layers, query heads and the entry's tokens (undefined when its entry did not
   * ask). Forgotten once taken.
   */
  takeAttentionMass?(seqId: number): Float64Array | undefined;
  /** Forgets a host copy that will not be swapped in (its request ended while swapped out). */
  discardSwapped?(key: number): void;
  /** Frees what the executor holds (device sessions). */
  destroy?(): Promise<void>;
}
