// Building small ONNX models in tests: plain objects in the shape of the ONNX protobuf messages, serialized with the
// importer's own schema (protobufjs). Only what the tests need.
import { encodeModelProto, encodeTensorProto } from '../../src/frontends/onnx/index.js';

/** ONNX element type codes. */
export const T = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, STRING: 8, BOOL: 9, FLOAT16: 10, DOUBLE: 11, UINT64: 13, BFLOAT16: 16, UINT4: 21, INT4: 22 } as const;

/** An attribute value: `{ i }`, `{ f }`, `{ s }`, `{ ints }`, `{ floats }` or `{ t }` (a tensor). */
export type AttrSpec = { i: number } | { f: number } | { s: string } | { ints: number[] } | { floats: number[] } | { t: object };

/** A `TensorProto` object with typed data (`float_data`, `int64_data`, …) or raw bytes. */
export function tensor(name: string, dataType: number, dims: number[], values: number[] | bigint[] | Uint8Array): object {
  const t: Record<string, unknown> = { name, dataType, dims };
  if (values instanceof Uint8Array) t.rawData = values;
  else if (dataType === T.FLOAT) t.floatData = values;
  else if (dataType === T.INT64) t.int64Data = (values as (number | bigint)[]).map((v) => (typeof v === 'bigint' ? v.toString() : v));
  else if (dataType === T.DOUBLE) t.doubleData = values;
  else t.int32Data = values;
  return t;
}

/** A serialized tensor (the `.pb` files of test data sets). */
export function tensorBytes(name: string, dataType: number, dims: number[], values: number[] | bigint[] | Uint8Array): Uint8Array {
  return encodeTensorProto(tensor(name, dataType, dims, values));
}

/** A `ValueInfoProto`: dims as numbers, `dim_param` names, or `null` for an unnamed dynamic dim. */
export function valueInfo(name: string, elemType: number, dims: (number | string | null)[]): object {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : d === null ? {} : { dimParam: d })) } } },
  };
}

const ATTR_TYPES = { f: 1, i: 2, s: 3, t: 4, floats: 6, ints: 7 } as const;

/** A `NodeProto` (`domain` empty for the default domain, e.g. `com.microsoft` for onnxruntime's contrib ops). */
export function node(opType: string, input: string[], output: string[], attrs: Record<string, AttrSpec> = {}, name = '', domain = ''): object {
  const attribute = Object.entries(attrs).map(([k, v]) => {
    const key = Object.keys(v)[0] as keyof typeof ATTR_TYPES;
    const value = key === 's' ? new TextEncoder().encode((v as { s: string }).s) : (v as Record<string, unknown>)[key];
    return { name: k, type: ATTR_TYPES[key], [key]: value };
  });
  return { opType, input, output, attribute, name, domain };
}

/** A serialized `ModelProto` around one graph (`domains`: further opset imports, e.g. `{ 'com.microsoft': 1 }`). */
export function modelBytes(spec: { nodes: object[]; inputs: object[]; outputs: object[]; initializers?: object[]; opset?: number; irVersion?: number; domains?: Record<string, number> }): Uint8Array {
  return encodeModelProto({
    irVersion: spec.irVersion ?? 8,
    producerName: 'tensorwright-test',
    opsetImport: [{ domain: '', version: spec.opset ?? 17 }, ...Object.entries(spec.domains ?? {}).map(([domain, version]) => ({ domain, version }))],
    graph: { name: 'g', node: spec.nodes, input: spec.inputs, output: spec.outputs, initializer: spec.initializers ?? [] },
  });
}
