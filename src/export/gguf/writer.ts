/**
 * The GGUF container writer (version 3, as llama.cpp's gguf-py `GGUFWriter` lays files out): header, metadata
 * key-values, tensor infos, padding to the alignment, then each tensor's data padded to the alignment. Tensor data
 * arrives already encoded ({@link ggufTensorBytes} encodes IR weights); `src/frontends/gguf/reader.ts` reads it back.
 * @module
 */
import { InputError } from '../../errors.js';

/** GGUF metadata value types (`gguf_type`). */
export const GgufValueType = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 } as const;

/** A metadata value: numbers, big integers, booleans, strings, and flat arrays of them. */
export type GgufWriteValue = number | bigint | boolean | string | readonly (number | bigint | boolean | string)[];

/** One metadata key-value (the shape the reader's metadata entries have, so they can be copied). */
export interface GgufKeyValue {
  /** Key (`general.architecture`). */
  readonly key: string;
  /** A {@link GgufValueType}. */
  readonly type: number;
  /** Element type of an `ARRAY` value (flat arrays only). */
  readonly arrayType?: number;
  /** The value. */
  readonly value: unknown;
}

/** One tensor to write. */
export interface GgufTensorToWrite {
  /** Tensor name (`blk.0.attn_q.weight`). */
  readonly name: string;
  /** Row-major shape (written as ggml `ne`, reversed). */
  readonly shape: readonly number[];
  /** ggml type id (`GGML_TYPE_F32` = 0, `Q4_0` = 2, `Q4_1` = 3, `Q8_0` = 8). */
  readonly type: number;
  /** Encoded data. */
  readonly data: Uint8Array;
}

/** A growable little-endian byte buffer. */
class ByteWriter {
  private chunks: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  private fixed(n: number, set: (v: DataView) => void): void {
    const b = new Uint8Array(n);
    set(new DataView(b.buffer));
    this.push(b);
  }
  u32(v: number): void {
    this.fixed(4, (d) => d.setUint32(0, v, true));
  }
  u64(v: number | bigint): void {
    this.fixed(8, (d) => d.setBigUint64(0, BigInt(v), true));
  }
  str(s: string): void {
    const e = new TextEncoder().encode(s);
    this.u64(e.length);
    this.push(e);
  }
  pad(align: number): void {
    this.push(new Uint8Array((align - (this.length % align)) % align));
  }
  scalar(type: number, v: unknown, key: string): void {
    const T = GgufValueType;
    const num = (): number => {
      if (typeof v !== 'number' && typeof v !== 'bigint' && typeof v !== 'boolean') throw new InputError(`GGUF metadata '${key}': expected a number, got ${typeof v}`);
      return Number(v);
    };
    switch (type) {
      case T.UINT8: return this.fixed(1, (d) => d.setUint8(0, num()));
      case T.INT8: return this.fixed(1, (d) => d.setInt8(0, num()));
      case T.UINT16: return this.fixed(2, (d) => d.setUint16(0, num(), true));
      case T.INT16: return this.fixed(2, (d) => d.setInt16(0, num(), true));
      case T.UINT32: return this.fixed(4, (d) => d.setUint32(0, num(), true));
      case T.INT32: return this.fixed(4, (d) => d.setInt32(0, num(), true));
      case T.FLOAT32: return this.fixed(4, (d) => d.setFloat32(0, num(), true));
      case T.BOOL: return this.fixed(1, (d) => d.setUint8(0, v ? 1 : 0));
      case T.STRING:
        if (typeof v !== 'string') throw new InputError(`GGUF metadata '${key}': expected a string`);
        return this.str(v);
      case T.UINT64: return this.fixed(8, (d) => d.setBigUint64(0, BigInt(v as number | bigint), true));
      case T.INT64: return this.fixed(8, (d) => d.setBigInt64(0, BigInt(v as number | bigint), true));
      case T.FLOAT64: return this.fixed(8, (d) => d.setFloat64(0, num(), true));
      default:
        throw new InputError(`GGUF metadata '${key}': value type ${type} cannot be written`);
    }
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

/**
 * A GGUF v3 file's bytes.
 * @throws InputError for a value that does not fit its type, nested arrays, or duplicate keys or tensor names.
 */
export function ggufFileBytes(metadata: readonly GgufKeyValue[], tensors: readonly GgufTensorToWrite[], alignment = 32): Uint8Array {
  const keys = new Set<string>();
  for (const kv of metadata) {
    if (keys.has(kv.key)) throw new InputError(`GGUF metadata key '${kv.key}' appears twice`);
    keys.add(kv.key);
  }
  const names = new Set<string>();
  for (const t of tensors) {
    if (names.has(t.name)) throw new InputError(`GGUF tensor '${t.name}' appears twice`);
    names.add(t.name);
  }
  const all = alignment !== 32 && !keys.has('general.alignment') ? [...metadata, { key: 'general.alignment', type: GgufValueType.UINT32, value: alignment }] : metadata;
  const b = new ByteWriter();
  b.push(new TextEncoder().encode('GGUF'));
  b.u32(3);
  b.u64(tensors.length);
  b.u64(all.length);
  for (const kv of all) {
    b.str(kv.key);
    b.u32(kv.type);
    if (kv.type === GgufValueType.ARRAY) {
      if (kv.arrayType === undefined || kv.arrayType === GgufValueType.ARRAY || !Array.isArray(kv.value))
        throw new InputError(`GGUF metadata '${kv.key}': only flat arrays with an element type can be written`);
      b.u32(kv.arrayType);
      b.u64(kv.value.length);
      for (const x of kv.value) b.scalar(kv.arrayType, x, kv.key);
    } else b.scalar(kv.type, kv.value, kv.key);
  }
  let offset = 0;
  for (const t of tensors) {
    b.str(t.name);
    b.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) b.u64(d);
    b.u32(t.type);
    b.u64(offset);
    offset += Math.ceil(t.data.length / alignment) * alignment;
  }
  b.pad(alignment);
  for (const t of tensors) {
    b.push(t.data);
    b.pad(alignment);
  }
  return b.bytes();
}
