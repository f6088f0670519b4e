/**
 * Autoregressive generation over any backend that can run one forward step: prefill the prompt, then decode one
 * token at a time, stopping at `steps` positions (prompt included, as run.c counts) or at a stop token.
 * @module
 */
import { InputError } from '../errors.js';
import { Sampler, type SamplingOptions } from './sampling.js';

/** One forward step of a causal LM with its own KV cache. */
export interface LMStepper {
  /** Runs `tokens` at the next positions and returns the logits after the last of them. */
  step(tokens: readonly number[]): Promise<Float32Array> | Float32Array;
  /** Maximum positions the model (or cache) supports. */
  readonly maxPositions: number;
}

/** Options for {@link generateTokens}. */
export interface GenerateOptions extends SamplingOptions {
  /** Positions to run, prompt included. */
  steps: number;
  /** Tokens that end generation when sampled (not included in the output). */
  stopTokens: readonly number[];
  /** Called with each new token id. */
  onToken?: (id: number) => void;
}

/** What {@link generateTokens} returns. */
export interface GenerateResult {
  /** New tokens (without the prompt and without a stop token). */
  generated: number[];
  /** Logits after the last prompt token. */
  promptLogits: Float32Array;
  /** Seconds spent on the prompt (prefill). */
  prefillSeconds: number;
  /** Seconds spent generating after the prompt (decode). */
  decodeSeconds: number;
  /** Whether a stop token ended generation. */
  stopped: boolean;
}

/** Prefill + decode loop with run.c's step counting. */
export async function generateTokens(model: LMStepper, promptIds: readonly number[], opts: GenerateOptions): Promise<GenerateResult> {
  if (promptIds.length === 0) throw new InputError('the prompt has no tokens (it needs at least BOS)');
  if (!(Number.isInteger(opts.steps) && opts.steps > 0)) throw new InputError(`steps must be a positive integer, got ${opts.steps}`);
  const steps = Math.min(opts.steps, model.maxPositions);
  if (promptIds.length > steps) throw new InputError(`the prompt has ${promptIds.length} tokens, more than steps (${steps})`);
  const sampler = new Sampler(opts);
  const t0 = performance.now();
  let logits = await model.step(promptIds);
  const promptLogits = logits;
  const t1 = performance.now();
  const generated: number[] = [];
  let stopped = false;
  // run.c samples after each position from the last prompt token up to steps-1
  for (let pos = promptIds.length - 1; pos < steps; pos++) {
    const next = sampler.sample(logits);
    if (opts.stopTokens.includes(next)) {
      stopped = true;
      break;
    }
    generated.push(next);
    opts.onToken?.(next);
    if (pos + 1 >= steps) break;
    logits = await model.step([next]);
  }
  const t2 = performance.now();
  return { generated, promptLogits, prefillSeconds: (t1 - t0) / 1000, decodeSeconds: (t2 - t1) / 1000, stopped };
}
