/**
 * Model importers.
 * @module
 */
export * from './llama2c/index.js';
export * from './llama2c/model.js';
export * from './load.js';
export type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
export * from './safetensors/index.js';
export * from './hf/index.js';
export * from './gguf/index.js';
export * from './onnx/index.js';
