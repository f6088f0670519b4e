/**
 * The ONNX graph writer: collects the nodes, initializers, inputs and outputs of an ONNX `GraphProto` as the exporter
 * emits them, hands out fresh value names, caches small constants, and assembles the `ModelProto` object that
 * `encodeModelProto` (the ONNX importer's protobuf schema) serializes. Initializer bytes are kept as they are
 * (`raw_data`, little-endian) until {@link OnnxGraphWriter.modelObject} decides which go to external data.
 * @module
 */
import { InternalError } from '../../errors.js';
import type { Dim } from '../../ir/dim.js';
import type { DType } from '../../ir/dtype.js';
import { floatToHalf } from '../../ir/weights.js';

/** `TensorProto.DataType` numbers the exporter writes. */
export const OnnxDataType = Object.freeze({ FLOAT: 1, UINT8: 2, INT32: 6, INT64: 7, BOOL: 9, FLOAT16: 10, UINT32: 12 });

/** `AttributeProto.AttributeType` numbers. */
const AttrType = Object.freeze({ FLOAT: 1, INT: 2, STRING: 3, FLOATS: 6, INTS: 7 });

/** The ONNX element type an IR dtype is stored as. */
export function onnxDataType(dtype: DType): number {
  switch (dtype) {
    case 'f32':
      return OnnxDataType.FLOAT;
    case 'f16':
      return OnnxDataType.FLOAT16;
    case 'i32':
      return OnnxDataType.INT32;
    case 'u32':
      return OnnxDataType.UINT32;
    case 'bool':
      return OnnxDataType.BOOL;
    case 'i64':
      return OnnxDataType.INT64;
  }
}

/** An attribute value as the emitters give it: an int, a float (tagged), a string, or a list of ints or floats. */
export type OnnxAttrValue = number | { readonly float: number } | string | readonly number[] | { readonly floats: readonly number[] };

/** The `AttributeProto` object of one attribute (ints are integers, floats are tagged). */
function attributeObject(name: string, v: OnnxAttrValue): Record<string, unknown> {
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new InternalError(`ONNX attribute '${name}' = ${v}: an int attribute needs an integer (tag floats as { float })`);
    return { name, type: AttrType.INT, i: v };
  }
  if (typeof v === 'string') return { name, type: AttrType.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: AttrType.INTS, ints: [...v] };
  if ('float' in v) return { name, type: AttrType.FLOAT, f: v.float };
  return { name, type: AttrType.FLOATS, floats: [...(v as { floats: readonly number[] }).floats] };
}

/** One initializer: its name, element type, dims and little-endian bytes. */
export interface OnnxInitializer {
  /** Value name. */
  readonly name: string;
  /** `TensorProto.DataType`. */
  readonly dataType: number;
  /** Dims. */
  readonly dims: readonly number[];
  /** The tensor's bytes (`raw_data`). */
  readonly bytes: Uint8Array;
}

/** A graph input or output: name, element type and shape (symbolic dims become `dim_param`s). */
export interface OnnxExportIO {
  /** Value name. */
  readonly name: string;
  /** `TensorProto.DataType`. */
  readonly dataType: number;
  /** Shape. */
  readonly shape: readonly Dim[];
}

/** Where initializers larger than a threshold are written instead of `raw_data`. */
export interface ExternalDataPlan {
  /** File name, relative to the model file (`model.onnx.data`). */
  readonly location: string;
  /** Initializers of at least this many bytes go to the file; smaller ones stay inline. */
  readonly minBytes: number;
  /** Each tensor's offset in the file is a multiple of this. */
  readonly alignment: number;
}

/** The external-data file as chunks (tensors and alignment padding, in file order) and its length. */
export interface ExternalData {
  /** File name, relative to the model file. */
  readonly location: string;
  /** The file's bytes, in order. */
  readonly chunks: readonly Uint8Array[];
  /** Total length in bytes. */
  readonly bytes: number;
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Accumulates one ONNX graph. */
export class OnnxGraphWriter {
  private readonly nodes: Record<string, unknown>[] = [];
  private readonly initializers: OnnxInitializer[] = [];
  private readonly names = new Set<string>();
  private readonly constCache = new Map<string, string>();
  private readonly opCounts = new Map<string, number>();
  /** Domains used by emitted nodes (besides the default one). */
  readonly domains = new Set<string>();

  /** A value name not used yet, from `hint` (made unique with a numeric suffix). */
  fresh(hint: string): string {
    const base = hint.replace(/[^A-Za-z0-9_.:/^@-]/g, '_') || 'v';
    let name = base;
    for (let i = 1; this.names.has(name); i++) name = `${base}_${i}`;
    this.names.add(name);
    return name;
  }

  /** Claims an exact name (graph inputs and outputs); throws when it is taken. */
  claim(name: string): string {
    if (this.names.has(name)) throw new InternalError(`ONNX value name '${name}' is used twice`);
    this.names.add(name);
    return name;
  }

  /**
   * Emits a node; returns its output names (`outputs` of them, fresh unless `outputNames` are given). The node's name
   * is its op type and a running count.
   */
  node(opType: string, inputs: readonly string[], attrs: Readonly<Record<string, OnnxAttrValue>> = {}, opts: { domain?: string; outputs?: number; outputNames?: readonly string[] } = {}): string[] {
    const outputs = opts.outputNames ? [...opts.outputNames] : Array.from({ length: opts.outputs ?? 1 }, () => this.fresh(`${opType}_out`));
    const count = (this.opCounts.get(opType) ?? 0) + 1;
    this.opCounts.set(opType, count);
    if (opts.domain) this.domains.add(opts.domain);
    this.nodes.push({
      input: [...inputs],
      output: outputs,
      name: `${opType}_${count}`,
      opType,
      domain: opts.domain ?? '',
      attribute: Object.entries(attrs).map(([k, v]) => attributeObject(k, v)),
    });
    return outputs;
  }

  /** Emits a one-output node and returns its output name. */
  op(opType: string, inputs: readonly string[], attrs: Readonly<Record<string, OnnxAttrValue>> = {}, domain?: string): string {
    return this.node(opType, inputs, attrs, domain ? { domain } : {})[0];
  }

  /** Adds an initializer named after `hint` and returns its name. */
  initializer(hint: string, dataType: number, dims: readonly number[], data: ArrayBufferView): string {
    const name = this.fresh(hint);
    this.initializers.push({ name, dataType, dims: [...dims], bytes: bytesOf(data) });
    return name;
  }

  /** A cached int64 constant (`dims` default `[values.length]`). */
  int64(values: readonly (number | bigint)[], dims: readonly number[] = [values.length]): string {
    const key = `i64:${dims.join('x')}:${values.join(',')}`;
    let name = this.constCache.get(key);
    if (!name) {
      name = this.initializer('const_i64', OnnxDataType.INT64, dims, BigInt64Array.from(values, (v) => BigInt(v)));
      this.constCache.set(key, name);
    }
    return name;
  }

  /** A cached scalar (`dims` `[]`) of a float or integer IR dtype. */
  scalar(value: number, dtype: DType): string {
    const key = `s:${dtype}:${Object.is(value, -0) ? '-0' : value}`;
    let name = this.constCache.get(key);
    if (!name) {
      name = this.initializer(`const_${dtype}`, onnxDataType(dtype), [], typedArrayOf(dtype, [value]));
      this.constCache.set(key, name);
    }
    return name;
  }

  /** Total bytes of the initializers added so far. */
  get initializerBytes(): number {
    return this.initializers.reduce((a, t) => a + t.bytes.byteLength, 0);
  }

  /** Counts of emitted nodes by op type. */
  opHistogram(): Record<string, number> {
    return Object.fromEntries([...this.opCounts].sort(([a], [b]) => a.localeCompare(b)));
  }

  /**
   * The `ModelProto` object (field names as `encodeModelProto` takes them) and, when `external` is given, the
   * external-data file holding the initializers of at least `external.minBytes` bytes.
   */
  modelObject(spec: { inputs: readonly OnnxExportIO[]; outputs: readonly OnnxExportIO[]; opset: number; irVersion: number; producerVersion: string; graphName: string; external?: ExternalDataPlan }): { model: object; external?: ExternalData } {
    const chunks: Uint8Array[] = [];
    let fileBytes = 0;
    const tensors = this.initializers.map((t) => {
      const base = { name: t.name, dataType: t.dataType, dims: [...t.dims] };
      const ext = spec.external;
      if (!ext || t.bytes.byteLength < ext.minBytes) return { ...base, rawData: t.bytes };
      const pad = (ext.alignment - (fileBytes % ext.alignment)) % ext.alignment;
      if (pad) chunks.push(new Uint8Array(pad));
      const offset = fileBytes + pad;
      chunks.push(t.bytes);
      fileBytes = offset + t.bytes.byteLength;
      return {
        ...base,
        dataLocation: 1,
        externalData: [
          { key: 'location', value: ext.location },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(t.bytes.byteLength) },
        ],
      };
    });
    const valueInfo = (v: OnnxExportIO): object => ({
      name: v.name,
      type: { tensorType: { elemType: v.dataType, shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d.text })) } } },
    });
    const model = {
      irVersion: spec.irVersion,
      producerName: 'tensorwright',
      producerVersion: spec.producerVersion,
      opsetImport: [{ domain: '', version: spec.opset }, ...[...this.domains].sort().map((domain) => ({ domain, version: 1 }))],
      graph: { name: spec.graphName, node: this.nodes, initializer: tensors, input: spec.inputs.map(valueInfo), output: spec.outputs.map(valueInfo) },
    };
    return spec.external && chunks.length ? { model, external: { location: spec.external.location, chunks, bytes: fileBytes } } : { model };
  }
}

/** A typed array of an IR dtype holding `values` (f16 as IEEE half bits). */
export function typedArrayOf(dtype: DType, values: readonly number[]): ArrayBufferView {
  switch (dtype) {
    case 'f32':
      return Float32Array.from(values);
    case 'f16':
      return Uint16Array.from(values, floatToHalf);
    case 'i32':
      return Int32Array.from(values);
    case 'u32':
      return Uint32Array.from(values);
    case 'bool':
      return Uint8Array.from(values, (v) => (v ? 1 : 0));
    case 'i64':
      return BigInt64Array.from(values, (v) => BigInt(v));
  }
}

