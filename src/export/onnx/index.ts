/**
 * ONNX export: an optimized IR graph as a standard ONNX model (`com.microsoft::MatMulNBits` and
 * `GatherBlockQuantized` for quantized weights), for serving with onnxruntime or Triton.
 * @module
 */
export { exportOnnx, exportOnnxFile, writeOnnx, ONNX_EXPORT_OPSET, ONNX_EXPORT_IR_VERSION, ONNX_INLINE_LIMIT, type ExportOnnxOptions, type OnnxExport, type OnnxExportFile, type OnnxInputSpec } from './exporter.js';
export { prepareForOnnx, positionsFromIota, ONNX_EXPORT_PASSES, type PrepareForOnnxOptions } from './prepare.js';
export type { ExternalData, OnnxExportIO } from './graph-writer.js';
export { exportCausalLmOnnx, exportCausalLmOnnxFile, causalLmExportGraph, type ExportableCausalLM, type CausalLmOnnxOptions, type CausalLmOnnxExport } from './causal-lm.js';
