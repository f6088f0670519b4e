/**
 * tensorwright: an optimizing compiler from transformer graphs to WebGPU, with a CPU reference backend.
 *
 * - `ir`: the typed graph IR (interned nodes, symbolic dims, weight store, builder, printer, verifier)
 * - `models`: Llama, GPT-2 and BERT written with the builder
 * - `frontends`: model importers (llama2.c checkpoints and tokenizer) and {@link loadModel}
 * - `runtime`: the CPU reference interpreter, generation and sampling, WebGPU device bring-up
 * - `export`: {@link exportOnnx}, the optimized graph as a standard ONNX model
 * @module
 */
export * from './errors.js';
export * from './ir/index.js';
export * from './passes/index.js';
export * from './models/index.js';
export * from './frontends/index.js';
export * from './runtime/index.js';
export * from './compile.js';
export type { LowerVariants, Launch, LaunchOperand, KvOperand, KvPoolOperand, BlockTableOperand, WeightPartOperand } from './codegen/family.js';
export { createTarget, profileDevice, DEFAULT_KV_BLOCK_SIZE, type TargetOptions, type TargetProfileName } from './codegen/target.js';
export * from './webgpu-pipeline.js';
export type { AttentionVariant, DecodeAttentionVariant, FlashAttentionVariant } from './codegen/attention.js';
export * from './export/onnx/index.js';
