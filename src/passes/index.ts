/**
 * Graph passes: the rewrite engine and pattern language, the pass manager, and the passes themselves.
 * @module
 */
export * from './pattern.js';
export * from './rewrite.js';
export * from './pass.js';
export * from './pipeline.js';
export * from './fold-constants.js';
export * from './simplify.js';
export * from './cse.js';
export * from './dce.js';
export * from './recognize-norms.js';
export * from './recognize-activations.js';
export * from './recognize-rope.js';
export * from './recognize-attention.js';
export * from './merge-projections.js';
export * from './mixed-precision.js';
export * from './quantize-weights.js';
export * from './quantize-kv-cache.js';
export * from './sparsify-weights.js';
export * from './reencode-weights.js';
export * from './layout.js';
export * from './fuse-epilogues.js';
export * from './fuse-elementwise.js';
export * from './schedule.js';
export * from './memory-plan.js';
export * from './repack-quantized-weights.js';
export * from './split-large-weights.js';
export * from './legalize-webgpu.js';
export * from './lower-paged-kv.js';
export * from './materialize-outputs.js';
export * from './buffer-slots.js';
