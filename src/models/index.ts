/**
 * Model definitions written with the builder.
 * @module
 */
export * from './llama.js';
export * from './gpt2.js';
export * from './bert.js';
