/**
 * Every ONNX op converter, by op type (default domain).
 * @module
 */
import { ATTENTION_CONVERTERS } from './attention.js';
import { ELEMENTWISE_CONVERTERS } from './elementwise.js';
import { NN_CONVERTERS } from './nn.js';
import { QUANT_CONVERTERS } from './quant.js';
import { SHAPE_CONVERTERS } from './shape.js';
import type { Converter } from './types.js';

export type { Converter } from './types.js';

/** The converters of every supported op. */
export const CONVERTERS: Readonly<Record<string, Converter>> = Object.freeze({
  ...ELEMENTWISE_CONVERTERS,
  ...SHAPE_CONVERTERS,
  ...NN_CONVERTERS,
  ...ATTENTION_CONVERTERS,
  ...QUANT_CONVERTERS,
});

/** The ONNX op types the importer converts, sorted. */
export const SUPPORTED_ONNX_OPS: readonly string[] = Object.freeze(Object.keys(CONVERTERS).sort());
