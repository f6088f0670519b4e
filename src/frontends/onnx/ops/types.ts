/**
 * The converter interface shared by the op files.
 * @module
 */
import type { OnnxValue, OpContext } from '../context.js';

/** Converts one ONNX node: returns a value per output (`undefined` for an output it cannot produce). */
export type Converter = (c: OpContext) => (OnnxValue | undefined)[];
