/**
 * llama2.c frontend: readers for llama2.c version-0 checkpoints and `.bin` tokenizers.
 * @module
 */
export {
  LLAMA2C_HEADER_BYTES,
  looksLikeLlama2cCheckpoint,
  parseLlama2cCheckpoint,
  readLlama2cCheckpoint,
  type Llama2cCheckpoint,
  type Llama2cConfig,
  type Llama2cWeights,
} from './checkpoint.js';
export { Llama2cTokenizer, type Llama2cEncodeOptions } from '../../tokenizers/llama2c.js';
