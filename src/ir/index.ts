/**
 * The typed graph IR.
 * @module
 */
export * from './dtype.js';
export * from './dim.js';
export * from './weights.js';
export * from './sparsify.js';
export * from './node.js';
export * from './attrs.js';
export * from './ops.js';
export * from './graph.js';
export * from './builder.js';
export * from './printer.js';
export * from './verifier.js';
export * from './stats.js';
export * from './device-profile.js';
export * from './target.js';
export * from './head-window.js';
export * from './paged-kv.js';
export * from './kv-cache-quant.js';
export * from './shape-arith.js';
export * from './rope.js';
export * from './quant-scheme.js';
export * from './sparsity-scheme.js';
export * from './codebook.js';
