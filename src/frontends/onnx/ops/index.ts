/**
 * Every ONNX op converter, by domain and op type.
 * @module
 */
import { ATTENTION_CONVERTERS } from './attention.js';
import { MICROSOFT_CONVERTERS } from './contrib.js';
import { ELEMENTWISE_CONVERTERS } from './elementwise.js';
import { NN_CONVERTERS } from './nn.js';
import { QUANT_CONVERTERS } from './quant.js';
import { SHAPE_CONVERTERS } from './shape.js';
import type { Converter } from './types.js';

export type { Converter } from './types.js';

/** The converters of every supported default-domain (`ai.onnx`) op. */
export const CONVERTERS: Readonly<Record<string, Converter>> = Object.freeze({
  ...ELEMENTWISE_CONVERTERS,
  ...SHAPE_CONVERTERS,
  ...NN_CONVERTERS,
  ...ATTENTION_CONVERTERS,
  ...QUANT_CONVERTERS,
});

/** The ONNX op types the importer converts, sorted. */
export const SUPPORTED_ONNX_OPS: readonly string[] = Object.freeze(Object.keys(CONVERTERS).sort());

/** The converters of ops in other domains, by domain (onnxruntime's contrib ops are `com.microsoft`). */
export const DOMAIN_CONVERTERS: Readonly<Record<string, Readonly<Record<string, Converter>>>> = Object.freeze({
  'com.microsoft': MICROSOFT_CONVERTERS,
});
