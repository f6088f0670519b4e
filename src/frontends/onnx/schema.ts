/**
 * The subset of the ONNX protobuf schema (`onnx/onnx.proto`, IR version 11) the importer reads, as a protobufjs JSON
 * descriptor, and the decoders built from it. Fields the importer never reads are left out; protobufjs skips unknown
 * fields, so files that use them still decode.
 * @module
 */
import protobuf from 'protobufjs';

/** `TensorProto.DataType`. */
export const ONNX_DATA_TYPES: Readonly<Record<number, string>> = Object.freeze({
  0: 'UNDEFINED', 1: 'FLOAT', 2: 'UINT8', 3: 'INT8', 4: 'UINT16', 5: 'INT16', 6: 'INT32', 7: 'INT64', 8: 'STRING', 9: 'BOOL',
  10: 'FLOAT16', 11: 'DOUBLE', 12: 'UINT32', 13: 'UINT64', 14: 'COMPLEX64', 15: 'COMPLEX128', 16: 'BFLOAT16',
  17: 'FLOAT8E4M3FN', 18: 'FLOAT8E4M3FNUZ', 19: 'FLOAT8E5M2', 20: 'FLOAT8E5M2FNUZ', 21: 'UINT4', 22: 'INT4', 23: 'FLOAT4E2M1',
  24: 'FLOAT8E8M0', 25: 'UINT2', 26: 'INT2',
});

const str = (id: number): object => ({ type: 'string', id });
const rep = (type: string, id: number): object => ({ rule: 'repeated', type, id });

const DESCRIPTOR = {
  nested: {
    onnx: {
      nested: {
        StringStringEntryProto: { fields: { key: str(1), value: str(2) } },
        OperatorSetIdProto: { fields: { domain: str(1), version: { type: 'int64', id: 2 } } },
        ModelProto: {
          fields: {
            irVersion: { type: 'int64', id: 1 },
            opsetImport: rep('OperatorSetIdProto', 8),
            producerName: str(2),
            producerVersion: str(3),
            domain: str(4),
            graph: { type: 'GraphProto', id: 7 },
            functions: rep('FunctionProto', 25),
          },
        },
        FunctionProto: { fields: { name: str(1), domain: str(10) } },
        GraphProto: {
          fields: {
            node: rep('NodeProto', 1),
            name: str(2),
            initializer: rep('TensorProto', 5),
            sparseInitializer: rep('SparseTensorProto', 15),
            input: rep('ValueInfoProto', 11),
            output: rep('ValueInfoProto', 12),
            valueInfo: rep('ValueInfoProto', 13),
          },
        },
        NodeProto: {
          fields: {
            input: rep('string', 1),
            output: rep('string', 2),
            name: str(3),
            opType: str(4),
            domain: str(7),
            attribute: rep('AttributeProto', 5),
          },
        },
        AttributeProto: {
          fields: {
            name: str(1),
            refAttrName: str(21),
            type: { type: 'int32', id: 20 },
            f: { type: 'float', id: 2 },
            i: { type: 'int64', id: 3 },
            s: { type: 'bytes', id: 4 },
            t: { type: 'TensorProto', id: 5 },
            g: { type: 'GraphProto', id: 6 },
            floats: rep('float', 7),
            ints: rep('int64', 8),
            strings: rep('bytes', 9),
            tensors: rep('TensorProto', 10),
            graphs: rep('GraphProto', 11),
          },
        },
        ValueInfoProto: { fields: { name: str(1), type: { type: 'TypeProto', id: 2 } } },
        TypeProto: {
          oneofs: { value: { oneof: ['tensorType', 'sequenceType', 'mapType', 'optionalType', 'sparseTensorType'] } },
          fields: {
            tensorType: { type: 'TensorTypeProto', id: 1 },
            sequenceType: { type: 'ElemTypeProto', id: 4 },
            mapType: { type: 'ElemTypeProto', id: 5 },
            optionalType: { type: 'ElemTypeProto', id: 9 },
            sparseTensorType: { type: 'TensorTypeProto', id: 8 },
          },
        },
        TensorTypeProto: { fields: { elemType: { type: 'int32', id: 1 }, shape: { type: 'TensorShapeProto', id: 2 } } },
        ElemTypeProto: { fields: { elemType: { type: 'TypeProto', id: 1 } } },
        TensorShapeProto: { fields: { dim: rep('DimensionProto', 1) } },
        DimensionProto: {
          oneofs: { value: { oneof: ['dimValue', 'dimParam'] } },
          fields: { dimValue: { type: 'int64', id: 1 }, dimParam: str(2) },
        },
        TensorProto: {
          fields: {
            dims: rep('int64', 1),
            dataType: { type: 'int32', id: 2 },
            segment: { type: 'SegmentProto', id: 3 },
            floatData: rep('float', 4),
            int32Data: rep('int32', 5),
            stringData: rep('bytes', 6),
            int64Data: rep('int64', 7),
            name: str(8),
            rawData: { type: 'bytes', id: 9 },
            doubleData: rep('double', 10),
            uint64Data: rep('uint64', 11),
            externalData: rep('StringStringEntryProto', 13),
            dataLocation: { type: 'int32', id: 14 },
          },
        },
        SegmentProto: { fields: { begin: { type: 'int64', id: 1 }, end: { type: 'int64', id: 2 } } },
        SparseTensorProto: { fields: { values: { type: 'TensorProto', id: 1 }, indices: { type: 'TensorProto', id: 2 }, dims: rep('int64', 3) } },
      },
    },
  },
};

const root = protobuf.Root.fromJSON(DESCRIPTOR as unknown as protobuf.INamespace);

/**
 * A protobuf int64 as protobufjs decodes it: a `Long`'s two halves (or a plain number, depending on the build).
 * @internal
 */
export type Int64 = number | LongBits;

/**
 * The two 32-bit halves of a 64-bit integer (protobufjs's `Long`).
 * @internal
 */
export interface LongBits {
  /** Low 32 bits. */
  readonly low: number;
  /** High 32 bits (signed unless `unsigned`). */
  readonly high: number;
  /** Whether the value is unsigned. */
  readonly unsigned?: boolean;
}

/**
 * `OperatorSetIdProto`.
 * @internal
 */
export interface OpsetId {
  /** Operator domain (`''` or `ai.onnx` for the default domain). */
  domain: string;
  /** Opset version. */
  version: Int64;
}

/**
 * `StringStringEntryProto`.
 * @internal
 */
export interface StringEntry {
  /** Key. */
  key: string;
  /** Value. */
  value: string;
}

/**
 * `TensorProto` (the fields read).
 * @internal
 */
export interface TensorMsg {
  /** Dims. */
  dims: Int64[];
  /** `TensorProto.DataType`. */
  dataType: number;
  /** A segment of a larger tensor (unsupported when present). */
  segment?: unknown;
  /** Typed payloads. */
  floatData: number[];
  /** int32 payload (also int8/uint8/int16/uint16/bool/float16 bits, packed 4-bit pairs, …). */
  int32Data: number[];
  /** Strings. */
  stringData: Uint8Array[];
  /** int64 payload. */
  int64Data: Int64[];
  /** Tensor name. */
  name: string;
  /** Raw little-endian bytes. */
  rawData: Uint8Array;
  /** double payload. */
  doubleData: number[];
  /** uint64 payload (also uint32). */
  uint64Data: Int64[];
  /** `location`, `offset`, `length` of external data. */
  externalData: StringEntry[];
  /** 0 default, 1 external. */
  dataLocation: number;
}

/**
 * `TensorShapeProto.Dimension`.
 * @internal
 */
export interface DimMsg {
  /** Known size. */
  dimValue?: Int64;
  /** Symbolic name. */
  dimParam?: string;
  /** Which one is set. */
  value?: 'dimValue' | 'dimParam';
}

/**
 * `TypeProto.Tensor`.
 * @internal
 */
export interface TensorTypeMsg {
  /** Element type (`TensorProto.DataType`). */
  elemType: number;
  /** Shape (absent: unknown rank). */
  shape?: ShapeMsg;
}

/**
 * `TensorShapeProto`.
 * @internal
 */
export interface ShapeMsg {
  /** Dims. */
  dim: DimMsg[];
}

/**
 * `TypeProto` (tensor types; the other kinds only as markers).
 * @internal
 */
export interface TypeMsg {
  /** A tensor type. */
  tensorType?: TensorTypeMsg;
  /** Which kind of type it is. */
  value?: string;
}

/**
 * `ValueInfoProto`.
 * @internal
 */
export interface ValueInfoMsg {
  /** Value name. */
  name: string;
  /** Its type. */
  type?: TypeMsg;
}

/**
 * `AttributeProto`.
 * @internal
 */
export interface AttributeMsg {
  /** Attribute name. */
  name: string;
  /** Set in function bodies: the attribute refers to one of the function's. */
  refAttrName: string;
  /** `AttributeProto.AttributeType`. */
  type: number;
  /** FLOAT. */
  f: number;
  /** INT. */
  i: Int64;
  /** STRING. */
  s: Uint8Array;
  /** TENSOR. */
  t?: TensorMsg;
  /** GRAPH. */
  g?: GraphMsg;
  /** FLOATS. */
  floats: number[];
  /** INTS. */
  ints: Int64[];
  /** STRINGS. */
  strings: Uint8Array[];
  /** TENSORS. */
  tensors: TensorMsg[];
  /** GRAPHS. */
  graphs: GraphMsg[];
}

/**
 * `NodeProto`.
 * @internal
 */
export interface NodeMsg {
  /** Input value names (`''` = an omitted optional input). */
  input: string[];
  /** Output value names. */
  output: string[];
  /** Node name (may be empty). */
  name: string;
  /** Operator. */
  opType: string;
  /** Operator domain. */
  domain: string;
  /** Attributes. */
  attribute: AttributeMsg[];
}

/**
 * `GraphProto`.
 * @internal
 */
export interface GraphMsg {
  /** Nodes (in the file's order, which ONNX requires to be topological). */
  node: NodeMsg[];
  /** Graph name. */
  name: string;
  /** Initializers. */
  initializer: TensorMsg[];
  /** Sparse initializers (unsupported when present). */
  sparseInitializer: unknown[];
  /** Inputs (may include initializers, in old IR versions). */
  input: ValueInfoMsg[];
  /** Outputs. */
  output: ValueInfoMsg[];
  /** Types of intermediate values. */
  valueInfo: ValueInfoMsg[];
}

/**
 * `FunctionProto` (only its identity: model-local functions are not supported).
 * @internal
 */
export interface FunctionMsg {
  /** Function name (the op type that calls it). */
  name: string;
  /** Its domain. */
  domain: string;
}

/**
 * `ModelProto`.
 * @internal
 */
export interface ModelMsg {
  /** IR version. */
  irVersion: Int64;
  /** Opsets imported. */
  opsetImport: OpsetId[];
  /** Producer. */
  producerName: string;
  /** Producer version. */
  producerVersion: string;
  /** Model domain. */
  domain: string;
  /** The main graph. */
  graph?: GraphMsg;
  /** Model-local functions. */
  functions: FunctionMsg[];
}

const ModelType = root.lookupType('onnx.ModelProto');
const AttributeType = root.lookupType('onnx.AttributeProto');
const TensorType = root.lookupType('onnx.TensorProto');

/**
 * Decodes a serialized `ModelProto`; throws what protobufjs throws on malformed bytes.
 * @internal
 */
export function decodeModelProto(bytes: Uint8Array): ModelMsg {
  return ModelType.decode(bytes) as unknown as ModelMsg;
}

/**
 * Decodes a serialized `TensorProto` (the `.pb` files of ONNX test data sets).
 * @internal
 */
export function decodeTensorProto(bytes: Uint8Array): TensorMsg {
  return TensorType.decode(bytes) as unknown as TensorMsg;
}

/** The serialized bytes of a node's attributes (to compare two nodes' attributes exactly). */
export function encodeAttributes(attrs: readonly AttributeMsg[]): Uint8Array[] {
  return attrs.map((a) => AttributeType.encode(a as unknown as protobuf.Message).finish());
}

/**
 * Serializes a `ModelProto` given as a plain object with the field names of {@link ModelMsg} (camelCase; int64s as
 * numbers). For tests and tools that write ONNX files.
 * @internal
 */
export function encodeModelProto(model: object): Uint8Array {
  // a plain Uint8Array (protobufjs returns a Node Buffer, whose slice() is a view)
  return new Uint8Array(ModelType.encode(ModelType.fromObject(model)).finish());
}

/**
 * Serializes a `TensorProto` given as a plain object (see {@link encodeModelProto}).
 * @internal
 */
export function encodeTensorProto(tensor: object): Uint8Array {
  return new Uint8Array(TensorType.encode(TensorType.fromObject(tensor)).finish());
}
