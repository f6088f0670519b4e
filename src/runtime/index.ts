/**
 * The runtime entry point (`tensorwright/runtime`): host tensors, the CPU reference backend, generation and
 * sampling, and WebGPU device acquisition. It does not pull in the pass pipeline or codegen.
 * @module
 */
export * from './cpu/tensor.js';
export * from './cpu/interpreter.js';
export * from './cpu/lm.js';
export * from './generate.js';
export * from './sampling.js';
export * from './sampler-params.js';
export * from './device.js';
export * from './webgpu/one-shot.js';
export * from './webgpu/gpu-wait.js';
export * from './kernel-source.js';
export * from './block-allocator.js';
export * from './engine.js';
export * from './engine-manifest.js';
