/**
 * Reader for GGUF files (llama.cpp's format), versions 2 and 3: the magic `GGUF`, a version, the tensor and metadata
 * counts (uint64), the metadata key/value pairs (every value type, arrays of any type included), the tensor infos
 * (name, dims with `ne[0]` fastest-varying, ggml type, offset), padding to `general.alignment` (default 32), then the
 * tensor data.
 *
 * Everything is checked against the file's size before it is allocated, so a lying header fails fast with a
 * {@link ModelFormatError} naming the field and byte offset: counts that could not fit in the rest of the file,
 * strings and arrays longer than the file, unknown value or tensor types, duplicate keys or tensor names, an
 * alignment that is not a power of two, dims that overflow or do not fill whole blocks, and tensor data that is
 * misaligned, overlaps another tensor or runs past the end of the file.
 * @module
 */
import { ModelFormatError } from '../../errors.js';
import { fileSource, memorySource, type ByteSource } from '../safetensors/source.js';
import { GGML_TYPES, GGUF_SCALAR_BYTES, GgufValueType, type GgmlTypeInfo } from './types.js';

/**
 * The magic number: the bytes `GGUF` read as a little-endian uint32.
 * @internal
 */
export const GGUF_MAGIC = 0x46554747;

/**
 * The default data alignment when `general.alignment` is absent.
 * @internal
 */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/**
 * Dims a ggml tensor may have.
 * @internal
 */
export const GGML_MAX_DIMS = 4;

/** A metadata value: numbers (64-bit integers beyond 2^53 as bigint), booleans, strings, and arrays of these. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

/** One metadata entry. */
export interface GgufMetadataEntry {
  /** Key. */
  readonly key: string;
  /** Value type number (see {@link GgufValueType}); for arrays, `ARRAY`. */
  readonly type: number;
  /** For arrays, the element type. */
  readonly arrayType?: number;
  /** Value. */
  readonly value: GgufValue;
  /** Byte offset of the entry (its key) in the file. */
  readonly offset: number;
}

/** One tensor's info. */
export interface GgufTensorInfo {
  /** Name. */
  readonly name: string;
  /** Dims as stored, `ne[0]` (the contiguous, fastest-varying one) first. */
  readonly dims: readonly number[];
  /** Row-major shape: the dims reversed (`[out, in]` for a matrix whose rows are `ne[0]` long). */
  readonly shape: readonly number[];
  /** ggml type number. */
  readonly type: number;
  /** The type's name and block layout. */
  readonly typeInfo: GgmlTypeInfo;
  /** Offset relative to the data section. */
  readonly offset: number;
  /** Absolute byte offset of the data. */
  readonly byteOffset: number;
  /** Bytes of data. */
  readonly byteLength: number;
  /** Elements. */
  readonly numel: number;
  /** Byte offset of this info record in the file (for messages). */
  readonly infoOffset: number;
}

/** A parsed GGUF header. */
export interface GgufHeader {
  /** Format version (2 or 3). */
  readonly version: number;
  /** Metadata by key, in file order. */
  readonly metadata: ReadonlyMap<string, GgufMetadataEntry>;
  /** Tensor infos in file order. */
  readonly tensors: readonly GgufTensorInfo[];
  /** Data alignment. */
  readonly alignment: number;
  /** Absolute offset of the data section. */
  readonly dataStart: number;
}

/**
 * Whether bytes start with the GGUF magic (needs 4 bytes).
 * @internal
 */
export function looksLikeGguf(bytes: Uint8Array): boolean {
  return bytes.byteLength >= 4 && bytes[0] === 0x47 && bytes[1] === 0x47 && bytes[2] === 0x55 && bytes[3] === 0x46;
}

const WINDOW = 1 << 20;

/** A bounds-checked little-endian cursor over a source, reading through a window. */
class Cursor {
  pos = 0;
  private buf: Uint8Array = new Uint8Array(0);
  private bufStart = 0;
  private dv = new DataView(this.buf.buffer);
  constructor(
    private readonly src: ByteSource,
    private readonly file: string | undefined,
  ) {}
  get remaining(): number {
    return this.src.size - this.pos;
  }
  fail(field: string, offset: number, msg: string): never {
    throw new ModelFormatError(field, offset, msg, this.file);
  }
  /** Ensures `n` bytes at `pos` are in the window; returns their offset in it. */
  private need(n: number, field: string): number {
    if (n > this.remaining) this.fail(field, this.pos, `needs ${n} bytes but the file ends ${this.remaining} bytes later`);
    if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.buf.length) {
      this.bufStart = this.pos;
      this.buf = this.src.read(this.pos, Math.min(this.src.size - this.pos, Math.max(n, WINDOW)));
      this.dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    }
    return this.pos - this.bufStart;
  }
  u8(field: string): number {
    const o = this.need(1, field);
    this.pos += 1;
    return this.dv.getUint8(o);
  }
  u32(field: string): number {
    const o = this.need(4, field);
    this.pos += 4;
    return this.dv.getUint32(o, true);
  }
  u64(field: string): bigint {
    const o = this.need(8, field);
    this.pos += 8;
    return this.dv.getBigUint64(o, true);
  }
  /** A uint64 that must be at most `max` (a count or length checked against what the file can hold). */
  count(field: string, max: number, what: string): number {
    const at = this.pos;
    const v = this.u64(field);
    if (v > BigInt(max)) this.fail(field, at, `${what} ${v} cannot fit in the ${this.src.size - at}-byte rest of the file`);
    return Number(v);
  }
  bytes(n: number, field: string): Uint8Array {
    const o = this.need(n, field);
    this.pos += n;
    return this.buf.subarray(o, o + n);
  }
  string(field: string): string {
    const n = this.count(field, this.remaining - 8, 'string length');
    return new TextDecoder('utf-8').decode(this.bytes(n, field));
  }
  scalar(type: number, field: string): GgufValue {
    const size = GGUF_SCALAR_BYTES[type];
    const o = this.need(size, field);
    this.pos += size;
    const dv = this.dv;
    switch (type) {
      case GgufValueType.UINT8:
        return dv.getUint8(o);
      case GgufValueType.INT8:
        return dv.getInt8(o);
      case GgufValueType.UINT16:
        return dv.getUint16(o, true);
      case GgufValueType.INT16:
        return dv.getInt16(o, true);
      case GgufValueType.UINT32:
        return dv.getUint32(o, true);
      case GgufValueType.INT32:
        return dv.getInt32(o, true);
      case GgufValueType.FLOAT32:
        return dv.getFloat32(o, true);
      case GgufValueType.BOOL: {
        const b = dv.getUint8(o);
        if (b > 1) this.fail(field, this.pos - 1, `bool value must be 0 or 1, got ${b}`);
        return b === 1;
      }
      case GgufValueType.UINT64: {
        const v = dv.getBigUint64(o, true);
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case GgufValueType.INT64: {
        const v = dv.getBigInt64(o, true);
        return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
      }
      default:
        return dv.getFloat64(o, true);
    }
  }
}

/** Smallest encoding of a value of this type (a string or array of length 0). */
function minValueBytes(type: number): number {
  if (type === GgufValueType.STRING) return 8;
  if (type === GgufValueType.ARRAY) return 12;
  return GGUF_SCALAR_BYTES[type];
}

function isValueType(t: number): boolean {
  return t === GgufValueType.STRING || t === GgufValueType.ARRAY || GGUF_SCALAR_BYTES[t] !== undefined;
}

function readValue(c: Cursor, type: number, field: string, depth: number): { value: GgufValue; arrayType?: number } {
  if (type === GgufValueType.STRING) return { value: c.string(field) };
  if (type !== GgufValueType.ARRAY) return { value: c.scalar(type, field) };
  if (depth > 8) c.fail(field, c.pos, 'arrays nested more than 8 deep');
  const typeAt = c.pos;
  const elemType = c.u32(`${field} (array type)`);
  if (!isValueType(elemType)) c.fail(field, typeAt, `unknown array element type ${elemType}`);
  const n = c.count(`${field} (array length)`, Math.floor((c.remaining - 8) / minValueBytes(elemType)), 'array length');
  const out: GgufValue[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = readValue(c, elemType, field, depth + 1).value;
  return { value: out, arrayType: elemType };
}

/**
 * Parses and validates a GGUF header from a source (see the module comment).
 * @internal
 */
export function parseGgufHeader(src: ByteSource): GgufHeader {
  const c = new Cursor(src, src.file);
  if (src.size < 4) c.fail('magic', 0, `file is ${src.size} bytes, too short for the GGUF magic`);
  const magic = c.u32('magic');
  if (magic !== GGUF_MAGIC) c.fail('magic', 0, `bad magic 0x${magic.toString(16).padStart(8, '0')} (expected 'GGUF')`);
  const version = c.u32('version');
  if (version === 1) c.fail('version', 4, 'GGUF version 1 is not supported (only 2 and 3); re-convert the model');
  if (version === 0x02000000 || version === 0x03000000) c.fail('version', 4, 'big-endian GGUF files are not supported');
  if (version !== 2 && version !== 3) c.fail('version', 4, `unknown GGUF version ${version} (supported: 2, 3)`);
  // minimal encodings: a tensor info is a name (8) + n_dims (4) + type (4) + offset (8); a KV a key (8) + type (4) + 1
  const tensorCountAt = c.pos;
  const nTensors = c.count('tensor_count', Math.floor((src.size - tensorCountAt - 16) / 24), 'tensor count');
  const nKv = c.count('metadata_kv_count', Math.floor((src.size - tensorCountAt - 16 - 24 * nTensors) / 13), 'metadata count');
  const metadata = new Map<string, GgufMetadataEntry>();
  for (let i = 0; i < nKv; i++) {
    const at = c.pos;
    const key = c.string(`metadata[${i}].key`);
    if (metadata.has(key)) c.fail(`metadata '${key}'`, at, 'duplicate key');
    const typeAt = c.pos;
    const type = c.u32(`metadata '${key}' type`);
    if (!isValueType(type)) c.fail(`metadata '${key}'`, typeAt, `unknown value type ${type}`);
    const { value, arrayType } = readValue(c, type, `metadata '${key}'`, 0);
    metadata.set(key, arrayType === undefined ? { key, type, value, offset: at } : { key, type, arrayType, value, offset: at });
  }
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al) {
    if (al.type !== GgufValueType.UINT32) c.fail('general.alignment', al.offset, `must be a uint32, got value type ${al.type}`);
    const a = al.value as number;
    if (a === 0 || (a & (a - 1)) !== 0) c.fail('general.alignment', al.offset, `must be a power of two, got ${a}`);
    alignment = a;
  }
  const infos: { name: string; dims: number[]; type: number; offset: number; at: number }[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const at = c.pos;
    const name = c.string(`tensor_info[${i}].name`);
    const field = `tensor '${name}'`;
    if (names.has(name)) c.fail(field, at, 'duplicate tensor name');
    names.add(name);
    const nDims = c.u32(`${field} n_dims`);
    if (nDims > GGML_MAX_DIMS) c.fail(field, at, `n_dims ${nDims} exceeds ${GGML_MAX_DIMS}`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(c.count(`${field} ne[${d}]`, Number.MAX_SAFE_INTEGER, 'dim'));
    const typeAt = c.pos;
    const type = c.u32(`${field} type`);
    if (!GGML_TYPES.has(type)) c.fail(field, typeAt, `unknown ggml tensor type ${type}`);
    const offAt = c.pos;
    const off = c.u64(`${field} offset`);
    if (off > BigInt(src.size)) c.fail(field, offAt, `data offset ${off} is beyond the ${src.size}-byte file`);
    infos.push({ name, dims, type, offset: Number(off), at });
  }
  const dataStart = Math.ceil(c.pos / alignment) * alignment;
  if (dataStart > src.size && nTensors > 0) c.fail('tensor data', c.pos, `the data section (aligned to ${alignment}) starts past the end of the ${src.size}-byte file`);
  const dataLength = Math.max(0, src.size - dataStart);
  const tensors: GgufTensorInfo[] = infos.map(({ name, dims, type, offset, at }) => {
    const field = `tensor '${name}'`;
    const ti = GGML_TYPES.get(type)!;
    // the element count is checked at each step so it cannot overflow (the range check below bounds it by the file)
    let numel = dims.includes(0) ? 0 : 1;
    for (const d of numel === 0 ? [] : dims) {
      numel *= d;
      if (numel * ti.typeSize > Number.MAX_SAFE_INTEGER) {
        const total = dims.reduce((p, q) => p * BigInt(q), 1n);
        c.fail(field, at, `dims [${dims}] (${total} elements of ${ti.name}) overflow: no file can hold them`);
      }
    }
    // a tensor of no dims is one element (ne = [1, 1, 1, 1] in ggml), which no block type can hold
    const ne0 = dims.length ? dims[0] : 1;
    if (ne0 % ti.blockSize !== 0) c.fail(field, at, `ne[0] = ${ne0}${dims.length ? '' : ' (no dims: a scalar)'} is not a multiple of the ${ti.name} block size ${ti.blockSize}`);
    const byteLength = (numel / ti.blockSize) * ti.typeSize;
    if (offset % alignment !== 0) c.fail(field, dataStart + offset, `data offset ${offset} is not a multiple of the alignment ${alignment}`);
    if (offset + byteLength > dataLength)
      c.fail(field, dataStart + offset, `data [${offset}, ${offset + byteLength}) runs past the ${dataLength}-byte data section (truncated file?)`);
    return Object.freeze({
      name,
      dims: Object.freeze(dims),
      shape: Object.freeze([...dims].reverse()),
      type,
      typeInfo: ti,
      offset,
      byteOffset: dataStart + offset,
      byteLength,
      numel,
      infoOffset: at,
    });
  });
  const byOffset = [...tensors].filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const p = byOffset[i - 1];
    const t = byOffset[i];
    if (t.offset < p.offset + p.byteLength)
      c.fail(`tensor '${t.name}'`, t.byteOffset, `data [${t.offset}, ${t.offset + t.byteLength}) overlaps tensor '${p.name}' [${p.offset}, ${p.offset + p.byteLength})`);
  }
  return { version, metadata, tensors, alignment, dataStart };
}

/**
 * A GGUF file: its validated header, typed metadata getters, and on-demand access to tensor bytes. Open with
 * {@link GgufFile.fromBytes} (in memory) or {@link GgufFile.open} (reads from disk as needed; close it after).
 */
export class GgufFile {
  /** The validated header. */
  readonly header: GgufHeader;
  /** File name, when known. */
  readonly file: string | undefined;
  private readonly src: ByteSource;
  private readonly byName: Map<string, GgufTensorInfo>;

  private constructor(src: ByteSource) {
    this.src = src;
    this.file = src.file;
    this.header = parseGgufHeader(src);
    this.byName = new Map(this.header.tensors.map((t) => [t.name, t]));
  }

  /** Parses a file held in memory. @throws `ModelFormatError`. */
  static fromBytes(bytes: Uint8Array, file?: string): GgufFile {
    return new GgufFile(memorySource(bytes, file));
  }

  /** Opens a file on disk and parses its header. @throws `ModelFormatError`. */
  static open(path: string): GgufFile {
    const src = fileSource(path);
    try {
      return new GgufFile(src);
    } catch (e) {
      src.close();
      throw e;
    }
  }

  /** Format version. */
  get version(): number {
    return this.header.version;
  }

  /** A metadata entry, or `undefined`. */
  entry(key: string): GgufMetadataEntry | undefined {
    return this.header.metadata.get(key);
  }

  /** A metadata value, or `undefined`. */
  get(key: string): GgufValue | undefined {
    return this.header.metadata.get(key)?.value;
  }

  /** A string value (`undefined` when absent); throws {@link ModelFormatError} for another type. */
  getString(key: string): string | undefined {
    const e = this.entry(key);
    if (!e) return undefined;
    if (typeof e.value !== 'string') throw new ModelFormatError(`metadata '${key}'`, e.offset, `must be a string, got value type ${e.type}`, this.file);
    return e.value;
  }

  /** A non-negative integer value of any integer type; throws {@link ModelFormatError} for another type. */
  getUint(key: string): number | undefined {
    const e = this.entry(key);
    if (!e) return undefined;
    const intTypes: number[] = [GgufValueType.UINT8, GgufValueType.UINT16, GgufValueType.UINT32, GgufValueType.UINT64, GgufValueType.INT8, GgufValueType.INT16, GgufValueType.INT32, GgufValueType.INT64];
    if (!intTypes.includes(e.type) || typeof e.value !== 'number' || e.value < 0)
      throw new ModelFormatError(`metadata '${key}'`, e.offset, `must be a non-negative integer, got ${String(e.value)}`, this.file);
    return e.value;
  }

  /** A numeric value of any numeric type; throws {@link ModelFormatError} for another type. */
  getNumber(key: string): number | undefined {
    const e = this.entry(key);
    if (!e) return undefined;
    if (typeof e.value !== 'number') throw new ModelFormatError(`metadata '${key}'`, e.offset, `must be a number, got ${String(e.value)}`, this.file);
    return e.value;
  }

  /** Tensor infos in file order. */
  get tensors(): readonly GgufTensorInfo[] {
    return this.header.tensors;
  }

  /** Whether a tensor exists. */
  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** A tensor's info; throws {@link ModelFormatError} when absent. */
  info(name: string): GgufTensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new ModelFormatError(`tensor '${name}'`, 0, 'no such tensor in the file', this.file);
    return t;
  }

  /** A tensor's raw bytes (a view for in-memory files, a fresh buffer from disk). */
  bytes(name: string): Uint8Array {
    const t = this.info(name);
    return this.src.read(t.byteOffset, t.byteLength);
  }

  /** Closes the file. */
  close(): void {
    this.src.close();
  }
}
