/**
 * Hugging Face frontend: model folders (`config.json` + safetensors) for the Llama family and GPT-2, and
 * `tokenizer.json` tokenizers.
 * @module
 */
export { UnsupportedModelError } from './errors.js';
export {
  HF_LLAMA_MODEL_TYPES,
  hfGpt2Config,
  hfLlamaConfig,
  hfModelType,
  hfRope,
  parseHfConfig,
  type HfConfigJson,
  type HfLlamaModelType,
  type HfModelType,
  type HfRopeParameters,
} from './config.js';
export { hfW8A8Scheme, type HfW8A8Scheme } from './quantization.js';
export { hfGpt2Weights, hfLlamaWeights, type HfGpt2WeightsResult, type HfLlamaWeightsResult } from './weights.js';
export { HfTokenizer, HfTokenStream, hfSpecialTokenIds, hfTokenizerFromFolder, type HfDecodeOptions, type HfEncodeOptions, type HfSpecialTokens } from './tokenizer.js';
export { isHfModelFolder, loadHfModel, loadHfModelSync, type HfGpt2Model, type HfLlamaModel, type HfModelBase, type HfLoadOptions, type HfModel } from './model.js';
