/**
 * Token sampling on the host, as llama2.c's run.c does it: argmax at temperature 0; otherwise softmax of
 * `logits / temperature`, optionally top-k (the k largest probabilities, ties at the k-th value taken in index
 * order), then multinomial or nucleus (top-p) sampling with run.c's cutoff and ordering, driven by run.c's xorshift
 * generator so the same seed gives the same choices. The GPU sampler (src/codegen/sampling.ts) makes the same
 * choices for the same coin.
 * @module
 */
import { InputError } from '../errors.js';
import { XorShiftRng } from '../util/random.js';

/** Sampling settings. */
export interface SamplingOptions {
  /** 0 = greedy (argmax). */
  temperature: number;
  /** Nucleus threshold in (0, 1); 1 or 0 disables top-p (as run.c). */
  topp: number;
  /**
   * Keep only the k most likely tokens (0 = off; k >= the vocabulary keeps all). By value: every token more likely
   * than the k-th is kept, and ties at the k-th value are kept in index order until k are kept. Applied before top-p.
   */
  topk?: number;
  /** RNG seed. */
  seed: number;
}

/**
 * Index of the largest value (first on ties, as run.c).
 * @internal
 */
export function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/** Checks sampling settings; throws {@link errors!InputError | InputError} naming the bad one. */
export function validateSampling(o: SamplingOptions): void {
  if (!(o.temperature >= 0) || !Number.isFinite(o.temperature)) throw new InputError(`temperature must be >= 0, got ${o.temperature}`);
  if (!(o.topp >= 0 && o.topp <= 1)) throw new InputError(`topp must be in [0, 1], got ${o.topp}`);
  if (o.topk !== undefined && !(Number.isInteger(o.topk) && o.topk >= 0)) throw new InputError(`topk must be a non-negative integer, got ${o.topk}`);
}

/** A stateful sampler (owns the RNG). */
export class Sampler {
  private readonly rng: XorShiftRng;
  constructor(
    /** The sampling settings. */
    readonly options: SamplingOptions,
  ) {
    validateSampling(options);
    this.rng = new XorShiftRng(options.seed);
  }
  /** Picks the next token from a row of logits (drawing the next coin at temperature > 0). */
  sample(logits: ArrayLike<number>): number {
    if (this.options.temperature === 0) return argmax(logits);
    return sampleToken(logits, this.options, this.rng.nextF32());
  }
}

/**
 * Picks a token from a row of logits with the given settings and coin in [0, 1) (what {@link Sampler.sample} does
 * with its generator's next coin; the GPU sampler makes the same choice for the same coin). Settings are not
 * checked here: see {@link validateSampling}.
 */
export function sampleToken(logits: ArrayLike<number>, o: Omit<SamplingOptions, 'seed'>, coin: number): number {
  const { temperature, topp } = o;
  if (temperature === 0) return argmax(logits);
  const probs = temperedTopK(logits, temperature, o.topk ?? 0);
  return topp <= 0 || topp >= 1 ? sampleMult(probs, coin) : sampleTopp(probs, topp, coin);
}

/**
 * The probability with which {@link sampleToken} picks each token for these settings (over a uniform coin): one-hot at
 * the argmax at temperature 0; otherwise the softmax of `logits / temperature`, cut to the top-k and then to run.c's
 * nucleus, renormalized. Speculative decoding preserves this distribution of the target model.
 */
export function samplingProbabilities(logits: ArrayLike<number>, o: Omit<SamplingOptions, 'seed'>): Float32Array {
  const n = logits.length;
  const probs = new Float32Array(n);
  if (o.temperature === 0) {
    probs[argmax(logits)] = 1;
    return probs;
  }
  const { temperature, topp } = o;
  temperedTopK(logits, temperature, o.topk ?? 0, probs);
  if (topp <= 0 || topp >= 1) return probs;
  const { idx, last, kept } = nucleus(probs, topp);
  const out = new Float32Array(n);
  for (let i = 0; i <= last; i++) out[idx[i]] = probs[idx[i]] / kept;
  return out;
}

/**
 * Picks a token from probabilities (summing to about 1) with a coin in [0, 1): the first index whose cdf passes the
 * coin; past the end (rounding), the last token with a non-zero probability.
 */
export function sampleFromProbabilities(probs: Float32Array, coin: number): number {
  return sampleMult(probs, coin);
}

/** The softmax of `logits / temperature` (run.c's f32 rounding), cut to the top `topk` by value when 0 < topk < n. */
function temperedTopK(logits: ArrayLike<number>, temperature: number, topk: number, probs = new Float32Array(logits.length)): Float32Array {
  const n = logits.length;
  let mx = -Infinity;
  for (let i = 0; i < n; i++) mx = Math.max(mx, Math.fround(logits[i] / temperature));
  let sum = 0;
  for (let i = 0; i < n; i++) sum += probs[i] = Math.exp(Math.fround(logits[i] / temperature) - mx);
  for (let i = 0; i < n; i++) probs[i] /= sum;
  if (topk > 0 && topk < n) keepTopK(probs, topk);
  return probs;
}

/**
 * Top-k by value, in place: keeps every probability larger than the k-th largest one, then ties of the k-th value in
 * index order until `k` are kept; zeroes the rest and renormalizes the kept ones.
 */
function keepTopK(probs: Float32Array, k: number): void {
  const n = probs.length;
  const kth = Float32Array.from(probs).sort()[n - k];
  let ties = k;
  for (let i = 0; i < n; i++) if (probs[i] > kth) ties--;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    if (probs[i] > kth || (probs[i] === kth && ties-- > 0)) sum += probs[i];
    else probs[i] = 0;
  }
  for (let i = 0; i < n; i++) probs[i] /= sum;
}

/** Multinomial in index order: the first i with `coin < cdf(i)`; past the end (rounding), the last non-zero one. */
function sampleMult(probs: Float32Array, coin: number): number {
  let cdf = 0;
  let last = probs.length - 1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] > 0) last = i;
    cdf += probs[i];
    if (coin < cdf) return i;
  }
  return last;
}

/**
 * run.c's nucleus: the candidates above the cutoff `(1 - topp) / (n - 1)`, by probability (index order on ties), and
 * how many of them (`last + 1`) it takes for the sum (`kept`) to pass top-p.
 */
function nucleus(probs: Float32Array, topp: number): { idx: number[]; last: number; kept: number } {
  const n = probs.length;
  const cutoff = (1 - topp) / (n - 1);
  const idx: number[] = [];
  for (let i = 0; i < n; i++) if (probs[i] >= cutoff) idx.push(i);
  idx.sort((a, b) => probs[b] - probs[a] || a - b);
  let kept = 0;
  let last = idx.length - 1;
  for (let i = 0; i < idx.length; i++) {
    kept += probs[idx[i]];
    if (kept > topp) {
      last = i;
      break;
    }
  }
  return { idx, last, kept };
}

function sampleTopp(probs: Float32Array, topp: number, coin: number): number {
  const { idx, last, kept } = nucleus(probs, topp);
  const r = coin * kept;
  let cdf = 0;
  for (let i = 0; i <= last; i++) {
    cdf += probs[idx[i]];
    if (r < cdf) return idx[i];
  }
  return idx[last];
}
