/**
 * The drafter interface of speculative decoding: something that proposes a continuation of the sequence so far
 * (an n-gram lookup in the context, a smaller draft model), which the target then verifies in one step.
 * @module
 */
import type { DraftProposal, SpeculativeSampling } from './rejection-sampling.js';

/** Proposes draft tokens for `speculativeGenerate`. */
export interface Drafter {
  /** What drafts (`ngram`, `draft-model`), for reports. */
  readonly kind: string;
  /** Forgets any state (called when a generation starts). */
  reset(): void;
  /**
   * Proposes up to `k` tokens to follow `context` (the whole sequence so far: prompt and generated tokens). A sampled
   * draft draws its coins from `coin` and returns the distributions it drew from; `k` is at least 1.
   */
  draft(context: readonly number[], k: number, sampling: SpeculativeSampling, coin: () => number): Promise<DraftProposal> | DraftProposal;
}
