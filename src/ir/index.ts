/**
 * The typed graph IR.
 * @module
 */
export * from './dtype.js';
export * from './dim.js';
export * from './weights.js';
export * from './node.js';
export * from './ops.js';
export * from './graph.js';
export * from './builder.js';
export * from './printer.js';
export * from './verifier.js';
export * from './stats.js';
export * from './shape-arith.js';
export * from './rope.js';
