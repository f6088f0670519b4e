/**
 * Drafting with a smaller model that shares the target's tokenizer (an int4 copy of the target, a distilled model):
 * the draft model runs ahead `k` tokens, greedily at temperature 0 and otherwise sampling with the run's settings (and
 * reporting the distributions it sampled from, which exact rejection sampling needs). Its KV cache keeps the longest
 * prefix it shares with the context and is rolled back past it, so rejected draft tokens are forgotten.
 * @module
 */
import { InputError } from '../../errors.js';
import type { CpuCausalLM } from '../cpu/lm.js';
import type { EngineSession } from '../engine.js';
import { argmax, sampleFromProbabilities, samplingProbabilities } from '../sampling.js';
import type { Drafter } from './drafter.js';
import type { DraftProposal, SpeculativeSampling } from './rejection-sampling.js';

/** A causal LM with a KV cache that can be rolled back: what {@link ModelDrafter} drafts with. */
export interface DraftModel {
  /** Positions in the cache. */
  readonly position: number;
  /** Longest sequence the model supports. */
  readonly maxPositions: number;
  /** Empties the cache. */
  reset(): void;
  /** Rolls the cache back to its first `length` positions. */
  truncate(length: number): void;
  /** Runs `tokens` at the next positions and returns the logits after the last one. */
  stepLogits(tokens: readonly number[]): Promise<Float32Array> | Float32Array;
  /** Runs `tokens` and returns the argmax after the last one (when the model can do that without reading logits). */
  stepArgmax?(tokens: readonly number[]): Promise<number>;
}

/** Drafts with a {@link DraftModel}. */
export class ModelDrafter implements Drafter {
  /** `draft-model`. */
  readonly kind = 'draft-model';
  private cached: number[] = [];

  constructor(
    /** The draft model. */
    readonly model: DraftModel,
  ) {}

  /** Empties the draft model's cache. */
  reset(): void {
    this.model.reset();
    this.cached = [];
  }

  /** Runs the draft model `k` tokens ahead of `context`. */
  async draft(context: readonly number[], k: number, sampling: SpeculativeSampling, coin: () => number): Promise<DraftProposal> {
    if (context.length === 0) throw new InputError('drafting needs a non-empty context');
    // keep the cached prefix shared with the context (but feed at least its last token)
    let common = 0;
    while (common < this.cached.length && common < context.length - 1 && this.cached[common] === context[common]) common++;
    if (common < this.model.position) this.model.truncate(common);
    this.cached.length = common;
    let feed = context.slice(common);
    const tokens: number[] = [];
    const probs: Float32Array[] = [];
    for (let i = 0; i < k && this.cached.length + feed.length <= this.model.maxPositions; i++) {
      let token: number;
      if (sampling.temperature === 0) token = this.model.stepArgmax ? await this.model.stepArgmax(feed) : argmax(await this.model.stepLogits(feed));
      else {
        const q = samplingProbabilities(await this.model.stepLogits(feed), sampling);
        token = sampleFromProbabilities(q, coin());
        probs.push(q);
      }
      this.cached.push(...feed);
      tokens.push(token);
      feed = [token];
    }
    return sampling.temperature === 0 ? { tokens } : { tokens, probs };
  }
}

/** An engine session as a {@link DraftModel} (greedy drafts read back only the argmax). */
export function engineDraftModel(session: EngineSession): DraftModel {
  const greedy = { temperature: 0, topp: 1, coin: 0 };
  return {
    get position() {
      return session.position;
    },
    maxPositions: session.engine.manifest.lm?.maxPositions ?? 0,
    reset: () => session.reset(),
    truncate: (length) => session.truncate(length),
    stepLogits: async (tokens) => {
      await session.step(tokens, greedy);
      return session.lastLogits();
    },
    stepArgmax: (tokens) => session.step(tokens, greedy),
  };
}

/** A CPU reference model as a {@link DraftModel}. */
export function cpuDraftModel(lm: CpuCausalLM): DraftModel {
  return {
    get position() {
      return lm.position;
    },
    maxPositions: lm.maxPositions,
    reset: () => lm.reset(),
    truncate: (length) => lm.truncate(length),
    stepLogits: (tokens) => lm.step(tokens),
  };
}
