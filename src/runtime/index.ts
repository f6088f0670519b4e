/**
 * The runtime entry point (`tensorwright/runtime`): host tensors, the CPU reference backend, generation and
 * sampling, continuous-batching serving (scheduler, paged KV blocks with a prefix cache, metrics), WebGPU device
 * acquisition, loading engines (from paths in Node; from URLs, responses and bytes anywhere)
 * and their tokenizers. It does not pull in the pass pipeline or codegen, and imports nothing of Node statically, so
 * it bundles for the browser; Node-only file access is in `tensorwright/runtime/node`.
 * @module
 */
export * from './cpu/tensor.js';
export * from './cpu/interpreter.js';
export * from './cpu/lm.js';
export * from './generate.js';
export * from './sampling.js';
export * from './speculative/index.js';
export * from './sampler-params.js';
export * from './device.js';
export * from './webgpu/one-shot.js';
export * from './webgpu/gpu-wait.js';
export * from './kernel-source.js';
export * from './block-allocator.js';
export * from './serving/batch-executor.js';
export * from './serving/kv-block-manager.js';
export * from './serving/kv-eviction.js';
export * from './serving/kv-window.js';
export * from './serving/scheduler.js';
export * from './serving/serving-session.js';
export * from './serving/serving-metrics.js';
export * from './serving/stop-strings.js';
export * from './serving/cpu-paged-executor.js';
export * from './serving/engine-session-executor.js';
export * from './serving/batched-engine-executor.js';
export * from './engine.js';
export * from './engine-manifest.js';
export * from './engine-manifest-schema.js';
export { type EngineFiles, type EngineLoadOptions, type EngineSource, type FetchLike } from './engine-load.js';
export * from './engine-container.js';
export * from './engine-cache.js';
export * from './weight-source.js';
export { DEFAULT_UPLOAD_CHUNK_BYTES, uploadWeights, type WeightUploadOptions, type WeightUploadTarget } from './weight-upload.js';
export * from './tokenizer-loader.js';
export { Llama2cTokenizer, type Llama2cEncodeOptions } from '../tokenizers/llama2c.js';
export type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
export type { HfDecodeOptions, HfEncodeOptions, HfSpecialTokens, HfTokenizer, HfTokenStream } from '../tokenizers/hf.js';
