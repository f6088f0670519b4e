/**
 * GGUF frontend: a validating reader for llama.cpp's GGUF files, ggml block formats mapped onto quantized IR
 * weights, and `llama`/`qwen2` models for the Llama builder.
 * @module
 */
export { GGML_TYPES, GGUF_SCALAR_BYTES, GgmlType, GgufValueType, type GgmlTypeInfo, type GgufValueTypeId } from './types.js';
export {
  GGML_MAX_DIMS,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GgufFile,
  looksLikeGguf,
  parseGgufHeader,
  type GgufHeader,
  type GgufMetadataEntry,
  type GgufTensorInfo,
  type GgufValue,
} from './reader.js';
export { ggmlBitsPerElement, ggufTensorToWeight, GGUF_SUPPORTED_TYPES } from './quant.js';
export {
  GGUF_LLAMA_ARCHITECTURES,
  ggufLlamaConfig,
  ggufLlamaWeights,
  loadGgufModel,
  loadGgufModelFromBytes,
  type GgufLlamaModel,
  type GgufLlamaWeightsResult,
} from './model.js';
