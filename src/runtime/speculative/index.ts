/**
 * Speculative decoding, as one import: the generation loop, the drafters (n-gram lookup, a draft model) and the
 * rejection-sampling verification.
 * @module
 */
export * from './speculative-generate.js';
export * from './drafter.js';
export * from './ngram-drafter.js';
export * from './model-drafter.js';
export * from './rejection-sampling.js';
