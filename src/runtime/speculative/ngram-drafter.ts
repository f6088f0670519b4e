/**
 * Prompt-lookup drafting (n-gram matching in the context): the last `n` tokens (n from `maxN` down to `minN`) are
 * looked up among earlier positions of the sequence, and the tokens that followed the most recent match are
 * proposed, continued periodically when the match is close to the end (a sequence repeating with the period the
 * match implies). Deterministic and free to compute: what repetitive text (code edits, quoting, summaries) needs.
 * @module
 */
import { InputError } from '../../errors.js';
import type { Drafter } from './drafter.js';
import type { DraftProposal } from './rejection-sampling.js';

/** Options of {@link NgramDrafter}. */
export interface NgramDrafterOptions {
  /** Longest suffix to match (default 3). */
  readonly maxN?: number;
  /** Shortest suffix to match (default 1). */
  readonly minN?: number;
}

/** Drafts by n-gram lookup in the context ({@link NgramDrafterOptions}). */
export class NgramDrafter implements Drafter {
  /** `ngram`. */
  readonly kind = 'ngram';
  private readonly maxN: number;
  private readonly minN: number;

  constructor(o: NgramDrafterOptions = {}) {
    this.maxN = o.maxN ?? 3;
    this.minN = o.minN ?? 1;
    if (!(Number.isInteger(this.minN) && this.minN >= 1 && Number.isInteger(this.maxN) && this.maxN >= this.minN))
      throw new InputError(`n-gram drafting needs integers 1 <= minN <= maxN, got minN ${this.minN}, maxN ${this.maxN}`);
  }

  /** Nothing to forget: the draft depends on the context only. */
  reset(): void {}

  /** The continuation of the most recent earlier occurrence of the longest matching suffix (empty when none matches). */
  draft(context: readonly number[], k: number): DraftProposal {
    const L = context.length;
    for (let n = Math.min(this.maxN, L - 1); n >= this.minN; n--) {
      // an earlier occurrence starting at j (ending before the last position), the most recent first
      for (let j = L - n - 1; j >= 0; j--) {
        let hit = true;
        for (let i = 0; i < n && hit; i++) hit = context[j + i] === context[L - n + i];
        if (!hit) continue;
        // context[j..j+n) equals the suffix: predict context[t] = context[t - shift] for t >= L
        const shift = L - n - j;
        const ext = [...context];
        for (let i = 0; i < k; i++) ext.push(ext[L + i - shift]);
        return { tokens: ext.slice(L) };
      }
    }
    return { tokens: [] };
  }
}
