/**
 * safetensors frontend: a validating reader for safetensors files and sharded checkpoints.
 * @module
 */
export {
  looksLikeSafetensors,
  parseSafetensorsHeader,
  safetensorsToFloat32,
  safetensorsValues,
  SafetensorsFile,
  SAFETENSORS_DTYPE_BYTES,
  SAFETENSORS_MAX_HEADER_BYTES,
  type SafetensorsArray,
  type SafetensorsDType,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
} from './reader.js';
export { parseSafetensorsIndex, SafetensorsCheckpoint, SAFETENSORS_INDEX_FILE, SAFETENSORS_SINGLE_FILE, type SafetensorsIndex } from './checkpoint.js';
export { fileSource, memorySource, type ByteSource } from './source.js';
