/**
 * GGUF frontend: a validating reader for llama.cpp's GGUF files, ggml block formats mapped onto quantized IR
 * weights, `llama`/`qwen2` models for the Llama builder, and the tokenizer the file carries.
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
export { GGUF_TOKENIZER_MODELS, GgufTokenType, GgufTokenizer, type GgufEncodeOptions } from './tokenizer.js';
