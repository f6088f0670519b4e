/**
 * Model importers.
 * @module
 */
export * from './llama2c/index.js';
export * from './llama2c/model.js';
export * from './load.js';
