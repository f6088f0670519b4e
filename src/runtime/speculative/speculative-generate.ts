/**
 * Speculative decoding: generation in which a drafter proposes several tokens and the target model checks them all
 * in one forward pass (one step over the last accepted token and the draft, logits for every row), keeping the
 * longest prefix that exact rejection sampling accepts plus one more token ({@link verifyDraft}). The output is
 * distributed as the target's own sampling with the same settings, and at temperature 0 it is the target's greedy
 * output. After each verification the target's KV cache is rolled back past the rejected tokens. The draft length
 * adapts: it grows by 2 after a fully accepted draft and shrinks by 1 after a rejection.
 * @module
 */
import { InputError } from '../../errors.js';
import { XorShiftRng } from '../../util/random.js';
import type { CpuCausalLM } from '../cpu/lm.js';
import type { EngineSession } from '../engine.js';
import { sampleToken, validateSampling, type SamplingOptions } from '../sampling.js';
import type { Drafter } from './drafter.js';
import { verifyDraft, type DraftProposal } from './rejection-sampling.js';

/** The model whose distribution speculative decoding preserves: it runs tokens and returns logits for all of them. */
export interface SpeculativeTarget {
  /** Vocabulary size (logits per row). */
  readonly vocabSize: number;
  /** Longest sequence the model supports. */
  readonly maxPositions: number;
  /** Most tokens one {@link SpeculativeTarget.verify} runs (the draft is at most one less). */
  readonly maxVerifyTokens: number;
  /** Positions in the KV cache. */
  readonly position: number;
  /** Empties the KV cache. */
  reset(): void;
  /** Runs the prompt (any length) and returns the logits after its last token. */
  prefill(tokens: readonly number[]): Promise<Float32Array> | Float32Array;
  /** Runs `tokens` at the next positions and returns the logits after each (`tokens.length` rows, row-major). */
  verify(tokens: readonly number[]): Promise<Float32Array> | Float32Array;
  /** Rolls the KV cache back to its first `length` positions. */
  truncate(length: number): void;
}

/** Options of {@link speculativeGenerate}. */
export interface SpeculativeOptions extends SamplingOptions {
  /** Positions to run, prompt included (run.c's counting, as in non-speculative generation). */
  steps: number;
  /** Tokens that end generation when produced (not included in the output). */
  stopTokens: readonly number[];
  /** Called with each new token id, in order. */
  onToken?: (id: number) => void;
  /** Draft length to start with (default 4, at most `maxDraftLength`). */
  draftLength?: number;
  /** Longest draft (default: what one target verification takes, less one, and at most 16). */
  maxDraftLength?: number;
  /** Adapt the draft length to the acceptance (default true): +2 after a fully accepted draft, -1 after a rejection. */
  adaptive?: boolean;
}

/** Counters of a speculative run. */
export interface SpeculativeStats {
  /** Target forward passes after the prompt (each verifies one draft, possibly empty). */
  targetSteps: number;
  /** Tokens the drafter proposed. */
  draftedTokens: number;
  /** Proposed tokens the target accepted. */
  acceptedTokens: number;
  /** `acceptedTokens / draftedTokens` (0 when nothing was drafted). */
  acceptanceRate: number;
  /** Tokens produced per target step after the first token (1 for plain decoding). */
  tokensPerTargetStep: number;
  /** Mean length of the drafts proposed. */
  meanDraftLength: number;
  /** Seconds spent drafting. */
  draftSeconds: number;
  /** Seconds spent in target verification steps (including acceptance). */
  verifySeconds: number;
}

/** What {@link speculativeGenerate} returns. */
export interface SpeculativeResult {
  /** New tokens (without the prompt and without a stop token). */
  generated: number[];
  /** Seconds spent on the prompt. */
  prefillSeconds: number;
  /** Seconds spent after the prompt (drafting and verification). */
  decodeSeconds: number;
  /** Whether a stop token ended generation. */
  stopped: boolean;
  /** Drafting and acceptance counters. */
  stats: SpeculativeStats;
}

/**
 * Generates from `promptIds` with speculative decoding: `drafter` proposes, `target` verifies. Same step counting,
 * stop tokens and first-token sampling as non-speculative generation (`generateTokens`), so at temperature 0 the
 * output is the same; at temperature > 0 each token is distributed as the target's sampling with these settings.
 * Throws {@link errors!InputError | InputError} for bad settings before anything runs.
 */
export async function speculativeGenerate(target: SpeculativeTarget, drafter: Drafter, promptIds: readonly number[], o: SpeculativeOptions): Promise<SpeculativeResult> {
  if (promptIds.length === 0) throw new InputError('the prompt has no tokens (it needs at least BOS)');
  if (!(Number.isInteger(o.steps) && o.steps > 0)) throw new InputError(`steps must be a positive integer, got ${o.steps}`);
  validateSampling(o);
  const steps = Math.min(o.steps, target.maxPositions);
  if (promptIds.length > steps) throw new InputError(`the prompt has ${promptIds.length} tokens, more than steps (${steps})`);
  const maxDraft = o.maxDraftLength ?? Math.min(16, target.maxVerifyTokens - 1);
  if (!(Number.isInteger(maxDraft) && maxDraft >= 1 && maxDraft <= target.maxVerifyTokens - 1))
    throw new InputError(`the longest draft must be from 1 to ${target.maxVerifyTokens - 1} tokens (what one target step verifies, less one), got ${o.maxDraftLength}`);
  let k = o.draftLength ?? Math.min(4, maxDraft);
  if (!(Number.isInteger(k) && k >= 1 && k <= maxDraft)) throw new InputError(`the draft length must be from 1 to ${maxDraft}, got ${o.draftLength}`);
  const adaptive = o.adaptive ?? true;
  const sampling = { temperature: o.temperature, topp: o.topp, topk: o.topk };
  const rng = new XorShiftRng(o.seed);
  const coin = (): number => rng.nextF32();
  const stats: SpeculativeStats = { targetSteps: 0, draftedTokens: 0, acceptedTokens: 0, acceptanceRate: 0, tokensPerTargetStep: 0, meanDraftLength: 0, draftSeconds: 0, verifySeconds: 0 };
  const maxNew = steps - promptIds.length + 1; // run.c samples after positions promptIds.length - 1 .. steps - 1
  target.reset();
  drafter.reset();
  const t0 = performance.now();
  const promptLogits = await target.prefill(promptIds);
  // the first token as non-speculative generation draws it (the same first coin)
  let next = o.temperature === 0 ? sampleToken(promptLogits, sampling, 0) : sampleToken(promptLogits, sampling, coin());
  const t1 = performance.now();
  const context = [...promptIds];
  const generated: number[] = [];
  let stopped = false;
  const emit = (t: number): boolean => {
    if (o.stopTokens.includes(t)) {
      stopped = true;
      return false;
    }
    generated.push(t);
    context.push(t);
    o.onToken?.(t);
    return generated.length < maxNew;
  };
  let drafts = 0;
  while (emit(next)) {
    // the target's cache holds the context but its last token; a full draft and the extra token must fit in maxNew
    const base = target.position;
    const room = Math.min(k, maxNew - generated.length - 1);
    const td = performance.now();
    let draft: DraftProposal = { tokens: [] };
    if (room > 0) {
      draft = await drafter.draft(context, room, sampling, coin);
      if (draft.tokens.length > room) draft = { tokens: draft.tokens.slice(0, room), probs: draft.probs?.slice(0, room) };
      drafts++;
    }
    const tv = performance.now();
    stats.draftSeconds += (tv - td) / 1000;
    const m = draft.tokens.length;
    const rows = await target.verify([next, ...draft.tokens]);
    const { accepted, next: after } = verifyDraft(rows, target.vocabSize, draft, sampling, coin);
    target.truncate(base + 1 + accepted);
    stats.verifySeconds += (performance.now() - tv) / 1000;
    stats.targetSteps++;
    stats.draftedTokens += m;
    stats.acceptedTokens += accepted;
    if (adaptive && room > 0 && m > 0) k = accepted === m ? (m >= k ? Math.min(maxDraft, k + 2) : k) : Math.max(1, k - 1);
    let going = true;
    for (let i = 0; i < accepted && going; i++) going = emit(draft.tokens[i]);
    if (!going) break;
    next = after;
  }
  const t2 = performance.now();
  stats.acceptanceRate = stats.draftedTokens ? stats.acceptedTokens / stats.draftedTokens : 0;
  stats.tokensPerTargetStep = stats.targetSteps ? Math.max(0, generated.length - 1 + (stopped ? 1 : 0)) / stats.targetSteps : 0;
  stats.meanDraftLength = drafts ? stats.draftedTokens / drafts : 0;
  return { generated, prefillSeconds: (t1 - t0) / 1000, decodeSeconds: (t2 - t1) / 1000, stopped, stats };
}

/**
 * An engine session as a {@link SpeculativeTarget}. Verification runs as one batched step with every row's logits, so drafts are bounded by the engine's step size;
 * one-token verifications run the decode plan, as plain decoding does.
 */
export function engineTarget(session: EngineSession): SpeculativeTarget {
  const lm = session.engine.manifest.lm;
  if (!lm) throw new InputError('this engine is not a causal LM');
  if (session.maxVerifyTokens < 2) throw new InputError('speculative decoding needs an engine whose steps take at least 2 tokens (a prefill chunk of 2 or more)');
  return {
    vocabSize: lm.vocabSize,
    maxPositions: lm.maxPositions,
    maxVerifyTokens: session.maxVerifyTokens,
    get position() {
      return session.position;
    },
    reset: () => session.reset(),
    prefill: async (tokens) => {
      await session.step(tokens, { temperature: 0, topp: 1, coin: 0 });
      return session.lastLogits();
    },
    verify: (tokens) => session.stepAllLogits(tokens),
    truncate: (length) => session.truncate(length),
  };
}

/**
 * A CPU reference model as a {@link SpeculativeTarget}: its graph must return logits at every position (built
 * without `lastTokenLogitsOnly`). `maxVerifyTokens` defaults to 17 (drafts of up to 16 tokens).
 */
export function cpuTarget(lm: CpuCausalLM, vocabSize: number, maxVerifyTokens = 17): SpeculativeTarget {
  return {
    vocabSize,
    maxPositions: lm.maxPositions,
    maxVerifyTokens,
    get position() {
      return lm.position;
    },
    reset: () => lm.reset(),
    prefill: (tokens) => {
      const all = lm.stepAll(tokens);
      return all.slice(all.length - vocabSize);
    },
    verify: (tokens) => lm.stepAll(tokens),
    truncate: (length) => lm.truncate(length),
  };
}
