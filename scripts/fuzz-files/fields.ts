/**
 * Where the header fields of each binary model format sit in a well-formed file: the structure-aware half of the file
 * fuzzer's mutator. Each locator walks a seed file once (tolerantly: it stops where the file stops making sense) and
 * lists the integer fields a lying header would lie in, grouped by role (`gguf tensor dims`, `onnx TensorProto.dims`,
 * …) so that mutations spread over roles rather than over the thousands of string lengths of a vocabulary.
 * @module
 */

/** How a field is stored. */
export type FieldKind = 'u8' | 'i32' | 'u32' | 'u64' | 'f32' | 'varint';

/** One integer (or float) field of a binary file. */
export interface Field {
  /** What the field is (`tensor 'blk.0.attn_q.weight' ne[1]`). */
  readonly name: string;
  /** Its role, for balanced selection (`gguf tensor dims`). */
  readonly group: string;
  /** Byte offset in the file. */
  readonly offset: number;
  /** Storage. */
  readonly kind: FieldKind;
  /** Bytes it takes (the encoded length for varints). */
  readonly length: number;
  /** For protobuf fields: the length prefixes of the messages around it, outermost first (offset and encoded size). */
  readonly parents?: readonly { readonly offset: number; readonly length: number }[];
}

/** Bytes of the fixed-size kinds. */
export const FIELD_BYTES: Readonly<Record<Exclude<FieldKind, 'varint'>, number>> = { u8: 1, i32: 4, u32: 4, u64: 8, f32: 4 };

const fixed = (name: string, group: string, offset: number, kind: Exclude<FieldKind, 'varint'>): Field => ({ name, group, offset, kind, length: FIELD_BYTES[kind] });

/** The seven int32s of a llama2.c checkpoint header. */
export function llama2cFields(bytes: Uint8Array): Field[] {
  const names = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'];
  return names.filter((_n, i) => 4 * i + 4 <= bytes.length).map((n, i) => fixed(`header.${n}`, 'llama2c header', 4 * i, 'i32'));
}

/** A llama2.c tokenizer's `max_token_length` and each entry's score and piece length. */
export function llama2cTokenizerFields(bytes: Uint8Array): Field[] {
  const out: Field[] = [];
  if (bytes.length < 4) return out;
  out.push(fixed('max_token_length', 'tokenizer header', 0, 'i32'));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let off = 4;
  for (let i = 0; off + 8 <= bytes.length; i++) {
    out.push(fixed(`vocab[${i}].score`, 'tokenizer score', off, 'f32'));
    out.push(fixed(`vocab[${i}].len`, 'tokenizer piece length', off + 4, 'i32'));
    const len = dv.getInt32(off + 4, true);
    if (len < 0) break;
    off += 8 + len;
  }
  return out;
}

/** Element sizes of GGUF scalar value types. */
const GGUF_SCALAR: Record<number, Exclude<FieldKind, 'varint'> | 'i8' | 'u16' | 'f64'> = { 0: 'u8', 1: 'i8', 2: 'u16', 3: 'u16', 4: 'u32', 5: 'i32', 6: 'f32', 7: 'u8', 10: 'u64', 11: 'u64', 12: 'f64' };
const GGUF_SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/**
 * A GGUF file's version, tensor and metadata counts, every key's and string's length, value and array-element types,
 * array counts, integer metadata values, and every tensor info's name length, `n_dims`, dims, type and data offset.
 */
export function ggufFields(bytes: Uint8Array): Field[] {
  const out: Field[] = [];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.length;
  let p = 0;
  const has = (k: number): boolean => p + k <= n;
  const u32 = (): number => {
    const v = dv.getUint32(p, true);
    p += 4;
    return v;
  };
  const u64 = (): number => {
    const v = dv.getBigUint64(p, true);
    p += 8;
    return v > BigInt(n) ? n + 1 : Number(v);
  };
  if (!has(24)) return out;
  out.push(fixed('version', 'gguf header', 4, 'u32'));
  out.push(fixed('tensor_count', 'gguf header', 8, 'u64'));
  out.push(fixed('metadata_kv_count', 'gguf header', 16, 'u64'));
  p = 8;
  const nTensors = u64();
  const nKv = u64();
  const str = (name: string, group: string): string | undefined => {
    if (!has(8)) return undefined;
    out.push(fixed(`${name} length`, group, p, 'u64'));
    const len = u64();
    if (!has(len)) return undefined;
    const s = new TextDecoder().decode(bytes.subarray(p, p + len));
    p += len;
    return s;
  };
  const value = (type: number, name: string, depth: number): boolean => {
    if (type === 8) return str(name, 'gguf string value') !== undefined;
    if (type === 9) {
      if (depth > 2 || !has(12)) return false;
      out.push(fixed(`${name} array type`, 'gguf array type', p, 'u32'));
      const et = u32();
      out.push(fixed(`${name} array length`, 'gguf array length', p, 'u64'));
      const len = u64();
      for (let i = 0; i < len; i++) if (!value(et, `${name}[${i}]`, depth + 1)) return false;
      return true;
    }
    const size = GGUF_SCALAR_BYTES[type];
    if (size === undefined || !has(size)) return false;
    const kind = GGUF_SCALAR[type];
    // scalars of arrays (token types, scores) are left to the byte mutations; top-level numbers are config
    if (depth === 0 && (kind === 'u32' || kind === 'i32' || kind === 'u64' || kind === 'f32' || kind === 'u8')) out.push(fixed(name, 'gguf metadata value', p, kind));
    p += size;
    return true;
  };
  for (let i = 0; i < nKv; i++) {
    const key = str(`metadata[${i}].key`, 'gguf key length');
    if (key === undefined || !has(4)) return out;
    out.push(fixed(`metadata '${key}' type`, 'gguf value type', p, 'u32'));
    const type = u32();
    if (!value(type, `metadata '${key}'`, 0)) return out;
  }
  for (let i = 0; i < nTensors; i++) {
    const name = str(`tensor_info[${i}].name`, 'gguf tensor name length');
    if (name === undefined || !has(4)) return out;
    out.push(fixed(`tensor '${name}' n_dims`, 'gguf tensor n_dims', p, 'u32'));
    const nDims = u32();
    if (nDims > 4) return out;
    for (let d = 0; d < nDims; d++) {
      if (!has(8)) return out;
      out.push(fixed(`tensor '${name}' ne[${d}]`, 'gguf tensor dims', p, 'u64'));
      p += 8;
    }
    if (!has(12)) return out;
    out.push(fixed(`tensor '${name}' type`, 'gguf tensor type', p, 'u32'));
    p += 4;
    out.push(fixed(`tensor '${name}' offset`, 'gguf tensor offset', p, 'u64'));
    p += 8;
  }
  return out;
}

/** A safetensors file's 8-byte header length (its JSON header is mutated as JSON). */
export function safetensorsFields(bytes: Uint8Array): Field[] {
  return bytes.length >= 8 ? [fixed('header length', 'safetensors header length', 0, 'u64')] : [];
}

/** A single-file engine container's version, manifest length and weights length (its manifest is mutated as JSON). */
export function engineContainerFields(bytes: Uint8Array): Field[] {
  if (bytes.length < 24) return [];
  return [fixed('container version', 'engine container header', 8, 'u32'), fixed('manifest length', 'engine container header', 12, 'u32'), fixed('weights length', 'engine container header', 16, 'u64')];
}

/** How the walker reads one field of an ONNX message. */
interface ProtoField {
  readonly name: string;
  /** A nested message type. */
  readonly msg?: string;
  /** Packed repeated varints (`dims`, `ints`, `int64_data`). */
  readonly packedVarints?: boolean;
}

/** The parts of `onnx.proto` whose integers and lengths matter to the importer. */
const ONNX_SCHEMA: Readonly<Record<string, Readonly<Record<number, ProtoField>>>> = {
  Model: { 1: { name: 'ir_version' }, 7: { name: 'graph', msg: 'Graph' }, 8: { name: 'opset_import', msg: 'Opset' }, 25: { name: 'functions', msg: 'Function' } },
  Opset: { 1: { name: 'domain' }, 2: { name: 'version' } },
  Function: { 4: { name: 'node', msg: 'Node' } },
  Graph: {
    1: { name: 'node', msg: 'Node' },
    5: { name: 'initializer', msg: 'Tensor' },
    11: { name: 'input', msg: 'ValueInfo' },
    12: { name: 'output', msg: 'ValueInfo' },
    13: { name: 'value_info', msg: 'ValueInfo' },
    15: { name: 'sparse_initializer', msg: 'Sparse' },
  },
  Node: { 1: { name: 'input' }, 2: { name: 'output' }, 3: { name: 'name' }, 4: { name: 'op_type' }, 5: { name: 'attribute', msg: 'Attribute' }, 7: { name: 'domain' } },
  Attribute: {
    1: { name: 'name' },
    3: { name: 'i' },
    4: { name: 's' },
    5: { name: 't', msg: 'Tensor' },
    6: { name: 'g', msg: 'Graph' },
    8: { name: 'ints', packedVarints: true },
    10: { name: 'tensors', msg: 'Tensor' },
    11: { name: 'graphs', msg: 'Graph' },
    20: { name: 'type' },
  },
  Tensor: {
    1: { name: 'dims', packedVarints: true },
    2: { name: 'data_type' },
    3: { name: 'segment', msg: 'Segment' },
    5: { name: 'int32_data', packedVarints: true },
    7: { name: 'int64_data', packedVarints: true },
    8: { name: 'name' },
    9: { name: 'raw_data' },
    11: { name: 'uint64_data', packedVarints: true },
    13: { name: 'external_data', msg: 'Entry' },
    14: { name: 'data_location' },
  },
  Sparse: { 1: { name: 'values', msg: 'Tensor' }, 2: { name: 'indices', msg: 'Tensor' }, 3: { name: 'dims', packedVarints: true } },
  Segment: { 1: { name: 'begin' }, 2: { name: 'end' } },
  Entry: { 1: { name: 'key' }, 2: { name: 'value' } },
  ValueInfo: { 1: { name: 'name' }, 2: { name: 'type', msg: 'Type' } },
  Type: { 1: { name: 'tensor_type', msg: 'TensorType' }, 4: { name: 'sequence_type', msg: 'Elem' }, 8: { name: 'sparse_tensor_type', msg: 'TensorType' }, 9: { name: 'optional_type', msg: 'Elem' } },
  Elem: { 1: { name: 'elem_type', msg: 'Type' } },
  TensorType: { 1: { name: 'elem_type' }, 2: { name: 'shape', msg: 'Shape' } },
  Shape: { 1: { name: 'dim', msg: 'Dim' } },
  Dim: { 1: { name: 'dim_value' }, 2: { name: 'dim_param' } },
};

/** Reads a varint at `p`; returns its value and end, or undefined past `end` or beyond 10 bytes. */
export function readVarint(bytes: Uint8Array, p: number, end: number): { value: bigint; end: number } | undefined {
  let v = 0n;
  for (let i = 0; i < 10; i++) {
    if (p + i >= end) return undefined;
    const b = bytes[p + i];
    v |= BigInt(b & 0x7f) << BigInt(7 * i);
    if ((b & 0x80) === 0) return { value: v, end: p + i + 1 };
  }
  return undefined;
}

/**
 * An ONNX model's varints (ir_version, opset versions, data types, dims, attribute ints, dim values, data locations)
 * and the length prefix of every length-delimited field, walking the messages the importer reads.
 */
export function onnxFields(bytes: Uint8Array): Field[] {
  const out: Field[] = [];
  const walk = (msg: string, start: number, end: number, depth: number, parents: { offset: number; length: number }[]): void => {
    const schema = ONNX_SCHEMA[msg] ?? {};
    let p = start;
    while (p < end && out.length < 200_000) {
      const key = readVarint(bytes, p, end);
      if (!key) return;
      const field = Number(key.value >> 3n);
      const wire = Number(key.value & 7n);
      const f = schema[field];
      const label = `${msg}.${f?.name ?? `#${field}`}`;
      p = key.end;
      if (wire === 0) {
        const v = readVarint(bytes, p, end);
        if (!v) return;
        if (f) out.push({ name: `${label} @${p}`, group: `onnx ${label}`, offset: p, kind: 'varint', length: v.end - p, parents });
        p = v.end;
      } else if (wire === 1) p += 8;
      else if (wire === 5) p += 4;
      else if (wire === 2) {
        const len = readVarint(bytes, p, end);
        if (!len || len.value > BigInt(end - len.end)) return;
        out.push({ name: `${label} length @${p}`, group: `onnx length of ${msg}.${f?.msg ? f.name : 'bytes'}`, offset: p, kind: 'varint', length: len.end - p, parents });
        const inner = [...parents, { offset: p, length: len.end - p }];
        const body = len.end;
        const bodyEnd = body + Number(len.value);
        if (f?.msg && depth < 16) walk(f.msg, body, bodyEnd, depth + 1, inner);
        else if (f?.packedVarints) {
          for (let q = body; q < bodyEnd; ) {
            const v = readVarint(bytes, q, bodyEnd);
            if (!v) break;
            out.push({ name: `${label}[] @${q}`, group: `onnx ${label}`, offset: q, kind: 'varint', length: v.end - q, parents: inner });
            q = v.end;
          }
        }
        p = bodyEnd;
      } else return;
    }
  };
  walk('Model', 0, bytes.length, 0, []);
  return out;
}
