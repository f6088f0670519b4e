/**
 * Verification of a speculative draft by exact rejection sampling (Leviathan et al. 2023, Chen et al. 2023): given the
 * target model's logits after the last accepted token and after each drafted token, accepts a prefix of the draft
 * and picks one more token, so that the tokens produced are distributed exactly as if the target had sampled them one
 * at a time with the same settings (temperature, top-k, top-p: {@link samplingProbabilities}).
 *
 * Drafted token `x` with draft probability `q(x)` is kept with probability `min(1, p(x) / q(x))`; on the first
 * rejection the token is drawn from the residual `max(0, p - q)`, renormalized. A deterministic draft (n-gram lookup,
 * greedy drafting) has `q` one-hot: `x` is kept with probability `p(x)`, the residual is `p` without `x`. When every
 * drafted token is kept, the extra token comes from the target's distribution after the last one. At temperature 0
 * `p` is one-hot at the argmax: a drafted token is kept exactly when it is the target's argmax, so greedy output is
 * the target's own greedy output.
 * @module
 */
import { InputError } from '../../errors.js';
import { argmax, sampleFromProbabilities, samplingProbabilities, type SamplingOptions } from '../sampling.js';

/** Sampling settings of a speculative run (those of {@link SamplingOptions} without the seed). */
export type SpeculativeSampling = Omit<SamplingOptions, 'seed'>;

/** A draft: proposed tokens and, for a sampled draft, the distribution each was drawn from. */
export interface DraftProposal {
  /** The proposed continuation (possibly empty). */
  readonly tokens: readonly number[];
  /**
   * For each token, the draft distribution it was sampled from (vocabulary-sized probabilities, already adjusted by
   * the run's sampling settings). Absent for a deterministic draft (the proposal is a function of the context only).
   */
  readonly probs?: readonly Float32Array[];
}

/** What {@link verifyDraft} decides. */
export interface VerifyOutcome {
  /** How many drafted tokens are kept (a prefix of the draft). */
  readonly accepted: number;
  /** The token after them: the residual's draw on a rejection, else a draw from the target after the whole draft. */
  readonly next: number;
}

/**
 * Verifies `draft` against the target's logits `rows` (`draft.tokens.length + 1` rows of `vocab` logits, row-major:
 * row `i` is the target's prediction after the last accepted token and the first `i` drafted tokens). `coin` draws
 * uniform numbers in [0, 1) (not called at temperature 0).
 */
export function verifyDraft(rows: Float32Array, vocab: number, draft: DraftProposal, sampling: SpeculativeSampling, coin: () => number): VerifyOutcome {
  const m = draft.tokens.length;
  if (rows.length !== (m + 1) * vocab) throw new InputError(`verifying ${m} drafted tokens needs ${m + 1} rows of ${vocab} logits, got ${rows.length / vocab}`);
  if (draft.probs !== undefined && draft.probs.length !== m) throw new InputError(`the draft has ${m} tokens but ${draft.probs.length} distributions`);
  const row = (i: number): Float32Array => rows.subarray(i * vocab, (i + 1) * vocab);
  for (let i = 0; i < m; i++) {
    const x = draft.tokens[i];
    if (sampling.temperature === 0) {
      const best = argmax(row(i));
      if (best !== x) return { accepted: i, next: best };
      continue;
    }
    const p = samplingProbabilities(row(i), sampling);
    const q = draft.probs?.[i];
    const keep = q ? Math.min(1, p[x] / q[x]) : p[x];
    if (coin() < keep) continue;
    // rejected: draw from max(0, p - q), renormalized (q one-hot for a deterministic draft)
    const residual = new Float32Array(vocab);
    let total = 0;
    for (let v = 0; v < vocab; v++) total += residual[v] = Math.max(0, p[v] - (q ? q[v] : v === x ? 1 : 0));
    if (!(total > 0)) return { accepted: i, next: sampleFromProbabilities(p, coin()) }; // p == q up to rounding
    for (let v = 0; v < vocab; v++) residual[v] /= total;
    return { accepted: i, next: sampleFromProbabilities(residual, coin()) };
  }
  const last = row(m);
  return { accepted: m, next: sampling.temperature === 0 ? argmax(last) : sampleFromProbabilities(samplingProbabilities(last, sampling), coin()) };
}
