/**
 * The ONNX importer: {@link importOnnx}, {@link readOnnx}, {@link looksLikeOnnx}.
 * @module
 */
export { importOnnx, readOnnx, looksLikeOnnx, onnxInputNames, ShapeInputsRequiredError, ONNX_OPSET_RANGE, type OnnxModel, type OnnxValueInfo, type ImportOnnxOptions } from './importer.js';
export { SUPPORTED_ONNX_OPS } from './ops/index.js';
export { decodeTensor, onnxTypeName, irDType, type DecodedTensor, type TensorSource } from './tensor.js';
export { decodeModelProto, decodeTensorProto, encodeModelProto, encodeTensorProto } from './schema.js';
export type { AttributeMsg, DimMsg, FunctionMsg, GraphMsg, Int64, LongBits, ModelMsg, NodeMsg, OpsetId, ShapeMsg, StringEntry, TensorMsg, TensorTypeMsg, TypeMsg, ValueInfoMsg } from './schema.js';
