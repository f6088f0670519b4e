/**
 * Reader for safetensors files (the Hugging Face format): an 8-byte little-endian header length N, N bytes of JSON
 * mapping each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data section that
 * follows the header) plus an optional `__metadata__` string map, then the tensor bytes.
 *
 * The header is validated as the reference implementation (the `safetensors` crate) does, before any tensor is read:
 * the header fits in the file and is at most 100 MB of UTF-8 JSON object; every dtype is known; every shape is a list
 * of non-negative integers whose product cannot overflow; every tensor's byte range is exactly `numel × dtype size`;
 * the ranges, in offset order, tile the data section with no overlap, no hole and nothing after the last one. Every
 * complaint is a {@link ModelFormatError} naming the tensor and the byte offset.
 * @module
 */
import { ModelFormatError } from '../../errors.js';
import { UnsupportedModelError } from '../hf/errors.js';
import { bf16BytesToF32, f16BytesToF32, f32FromBytes, fileSource, HOST_LITTLE_ENDIAN, memorySource, type ByteSource } from './source.js';

/** Element types a safetensors file may declare. */
export type SafetensorsDType = 'BOOL' | 'U8' | 'I8' | 'F8_E5M2' | 'F8_E4M3' | 'I16' | 'U16' | 'F16' | 'BF16' | 'I32' | 'U32' | 'F32' | 'F64' | 'I64' | 'U64';

/**
 * Bytes per element of each safetensors dtype.
 * @internal
 */
export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<SafetensorsDType, number>> = Object.freeze({
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
});

/**
 * The largest header accepted (the reference implementation's limit).
 * @internal
 */
export const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;

/** One tensor's entry in the header. */
export interface SafetensorsTensorInfo {
  /** Tensor name. */
  readonly name: string;
  /** Element type. */
  readonly dtype: SafetensorsDType;
  /** Shape, row-major. */
  readonly shape: readonly number[];
  /** Number of elements. */
  readonly numel: number;
  /** `[begin, end)` relative to the data section, as the header gives it. */
  readonly dataOffsets: readonly [number, number];
  /** Absolute byte offset of the data in the file. */
  readonly byteOffset: number;
  /** Bytes of data. */
  readonly byteLength: number;
}

/** A parsed, validated header. */
export interface SafetensorsHeader {
  /** The JSON length N from the first 8 bytes. */
  readonly headerLength: number;
  /** Absolute offset of the data section (`8 + N`). */
  readonly dataStart: number;
  /** Tensors in data order. */
  readonly tensors: readonly SafetensorsTensorInfo[];
  /** The `__metadata__` map (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
}

/** Typed arrays {@link SafetensorsFile.values} returns, one per dtype family. */
export type SafetensorsArray =
  | Float32Array
  | Float64Array
  | Uint16Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

/**
 * Whether bytes look like the start of a safetensors file: a plausible little-endian header length followed by a JSON
 * object (`{`, then whitespace or `"` or `}`). Needs only the first 10 bytes.
 * @internal
 */
export function looksLikeSafetensors(bytes: Uint8Array): boolean {
  if (bytes.byteLength < 10) return false;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n < 2n || n > BigInt(SAFETENSORS_MAX_HEADER_BYTES)) return false;
  if (bytes[8] !== 0x7b) return false;
  const c = bytes[9];
  return c === 0x22 || c === 0x7d || c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function isDType(s: unknown): s is SafetensorsDType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPE_BYTES, s);
}

/**
 * Parses and validates the header of a safetensors source (see the module comment).
 * @internal
 */
export function parseSafetensorsHeader(src: ByteSource): SafetensorsHeader {
  const file = src.file;
  const fail = (field: string, offset: number, msg: string): never => {
    throw new ModelFormatError(field, offset, msg, file);
  };
  if (src.size < 8) fail('header length', 0, `file is ${src.size} bytes, shorter than the 8-byte header length`);
  const lenBytes = src.read(0, 8);
  const n64 = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(src.size - 8)) fail('header length', 0, `header length ${n64} is larger than the ${src.size - 8} bytes after it (truncated file, or not safetensors)`);
  if (n64 > BigInt(SAFETENSORS_MAX_HEADER_BYTES)) fail('header length', 0, `header length ${n64} exceeds the ${SAFETENSORS_MAX_HEADER_BYTES}-byte limit`);
  const n = Number(n64);
  if (n < 2) fail('header', 8, `header length ${n} is too short for a JSON object`);
  const raw = src.read(8, n);
  if (raw[0] !== 0x7b) fail('header', 8, `header must start with '{', found byte 0x${raw[0].toString(16).padStart(2, '0')}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    return fail('header', 8, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail('header', 8, `header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail('header', 8, 'header must be a JSON object');
  const dataStart = 8 + n;
  const dataLength = src.size - dataStart;
  let metadata: Record<string, string> = {};
  const tensors: SafetensorsTensorInfo[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('__metadata__', 8, 'must be an object of strings');
      for (const [k, v] of Object.entries(entry as Record<string, unknown>))
        if (typeof v !== 'string') fail(`__metadata__.${k}`, 8, `metadata values must be strings, got ${JSON.stringify(v)}`);
      metadata = { ...(entry as Record<string, string>) };
      continue;
    }
    const field = `tensor '${name}'`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return fail(field, 8, 'entry must be an object {dtype, shape, data_offsets}');
    const { dtype, shape, data_offsets: offs } = entry as Record<string, unknown>;
    if (!isDType(dtype)) return fail(`${field}.dtype`, 8, `unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0))
      return fail(`${field}.shape`, 8, `shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => typeof o === 'number' && Number.isInteger(o) && o >= 0))
      return fail(`${field}.data_offsets`, 8, `data_offsets must be two non-negative integers, got ${JSON.stringify(offs)}`);
    const [begin, end] = offs as number[];
    if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin > dataLength || end > dataLength)
      return fail(`${field}.data_offsets`, dataStart + Math.min(begin, dataLength), `[${begin}, ${end}) is outside the ${dataLength}-byte data section (truncated file?)`);
    if (end < begin) return fail(`${field}.data_offsets`, dataStart + begin, `end ${end} is before begin ${begin}`);
    const size = SAFETENSORS_DTYPE_BYTES[dtype];
    // the element count is checked against what the data section can hold before it is multiplied further
    let numel = (shape as number[]).includes(0) ? 0 : 1;
    for (const d of numel === 0 ? [] : (shape as number[])) {
      numel *= d;
      if (numel * size > dataLength) {
        const total = (shape as number[]).reduce((a, b) => a * BigInt(b), 1n) * BigInt(size);
        return fail(`${field}.shape`, dataStart + begin, `shape [${shape}] of ${dtype} needs ${total} bytes, more than the ${dataLength}-byte data section`);
      }
    }
    if (numel * size !== end - begin)
      return fail(`${field}.data_offsets`, dataStart + begin, `[${begin}, ${end}) holds ${end - begin} bytes but shape [${shape}] of ${dtype} needs ${numel * size}`);
    tensors.push(Object.freeze({ name, dtype, shape: Object.freeze([...(shape as number[])]), numel, dataOffsets: Object.freeze([begin, end]) as readonly [number, number], byteOffset: dataStart + begin, byteLength: end - begin }));
  }
  tensors.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let at = 0;
  let prev: SafetensorsTensorInfo | undefined;
  for (const t of tensors) {
    const [begin, end] = t.dataOffsets;
    if (begin < at) fail(`tensor '${t.name}'.data_offsets`, dataStart + begin, `[${begin}, ${end}) overlaps tensor '${prev?.name}' [${prev?.dataOffsets[0]}, ${at})`);
    if (begin > at) fail(`tensor '${t.name}'.data_offsets`, dataStart + at, `${begin - at} bytes at [${at}, ${begin}) belong to no tensor (holes are not allowed)`);
    at = end;
    if (end > begin) prev = t;
  }
  if (at !== dataLength) fail('data', dataStart + at, `${dataLength - at} trailing bytes after the last tensor belong to no tensor`);
  return { headerLength: n, dataStart, tensors, metadata: Object.freeze(metadata) };
}

/** Converts a tensor's bytes to float32 (F32 zero-copy when aligned; F16, BF16, F64 and integer types converted). */
export function safetensorsToFloat32(dtype: SafetensorsDType, bytes: Uint8Array, numel: number, what = 'tensor'): Float32Array {
  switch (dtype) {
    case 'F32':
      return f32FromBytes(bytes, numel);
    case 'F16':
      return f16BytesToF32(bytes, numel);
    case 'BF16':
      return bf16BytesToF32(bytes, numel);
    case 'F8_E4M3':
    case 'F8_E5M2':
      throw new UnsupportedModelError(what, `dtype ${dtype} (float8) is not supported`);
    default: {
      const v = safetensorsValues(dtype, bytes, numel);
      const out = new Float32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = Number(v[i]);
      return out;
    }
  }
}

/** A tensor's bytes as the typed array of its dtype (halves and bfloat16s as raw `Uint16Array` bits); views when aligned. */
export function safetensorsValues(dtype: SafetensorsDType, bytes: Uint8Array, numel: number): SafetensorsArray {
  const size = SAFETENSORS_DTYPE_BYTES[dtype];
  // a view needs the element alignment (and a little-endian host for multi-byte types); otherwise copy once
  const b = size === 1 || (HOST_LITTLE_ENDIAN && bytes.byteOffset % size === 0) ? bytes : bytes.slice(0, numel * size);
  if (!HOST_LITTLE_ENDIAN && size > 1) {
    // byte-swap the copy in place: the file is little-endian
    for (let i = 0; i < numel; i++) b.subarray(i * size, (i + 1) * size).reverse();
  }
  const { buffer, byteOffset } = b;
  switch (dtype) {
    case 'F32':
      return new Float32Array(buffer, byteOffset, numel);
    case 'F64':
      return new Float64Array(buffer, byteOffset, numel);
    case 'F16':
    case 'BF16':
    case 'U16':
      return new Uint16Array(buffer, byteOffset, numel);
    case 'I16':
      return new Int16Array(buffer, byteOffset, numel);
    case 'I32':
      return new Int32Array(buffer, byteOffset, numel);
    case 'U32':
      return new Uint32Array(buffer, byteOffset, numel);
    case 'I64':
      return new BigInt64Array(buffer, byteOffset, numel);
    case 'U64':
      return new BigUint64Array(buffer, byteOffset, numel);
    case 'I8':
      return new Int8Array(buffer, byteOffset, numel);
    default:
      return new Uint8Array(buffer, byteOffset, numel);
  }
}

/**
 * One safetensors file: its validated header and on-demand access to each tensor's data. Open with
 * {@link SafetensorsFile.fromBytes} (in memory: reads are zero-copy views) or {@link SafetensorsFile.open} (reads each
 * tensor from disk when asked); {@link SafetensorsFile.close} releases the file.
 */
export class SafetensorsFile {
  /** The validated header. */
  readonly header: SafetensorsHeader;
  /** File name, when known. */
  readonly file: string | undefined;
  private readonly byName: Map<string, SafetensorsTensorInfo>;
  private readonly src: ByteSource;

  private constructor(src: ByteSource) {
    this.src = src;
    this.file = src.file;
    this.header = parseSafetensorsHeader(src);
    this.byName = new Map(this.header.tensors.map((t) => [t.name, t]));
  }

  /** Parses a whole file held in memory. @throws `ModelFormatError` for a malformed header. */
  static fromBytes(bytes: Uint8Array, file?: string): SafetensorsFile {
    return new SafetensorsFile(memorySource(bytes, file));
  }

  /** Opens a file on disk and parses its header (tensor data is read on demand). @throws `ModelFormatError`. */
  static open(path: string): SafetensorsFile {
    const src = fileSource(path);
    try {
      return new SafetensorsFile(src);
    } catch (e) {
      src.close();
      throw e;
    }
  }

  /** Tensor names, in data order. */
  names(): string[] {
    return this.header.tensors.map((t) => t.name);
  }

  /** Whether the file holds a tensor. */
  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** A tensor's header entry; throws {@link ModelFormatError} when absent. */
  info(name: string): SafetensorsTensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new ModelFormatError(`tensor '${name}'`, 8, 'no such tensor in the file', this.file);
    return t;
  }

  /** A tensor's raw bytes (a view for in-memory files). */
  bytes(name: string): Uint8Array {
    const t = this.info(name);
    return this.src.read(t.byteOffset, t.byteLength);
  }

  /** A tensor as float32 (see {@link safetensorsToFloat32}). */
  float32(name: string): Float32Array {
    const t = this.info(name);
    return safetensorsToFloat32(t.dtype, this.bytes(name), t.numel, `tensor '${name}'`);
  }

  /** A tensor as the typed array of its dtype (see {@link safetensorsValues}). */
  values(name: string): SafetensorsArray {
    const t = this.info(name);
    return safetensorsValues(t.dtype, this.bytes(name), t.numel);
  }

  /** Closes the file (in-memory files need not be closed). */
  close(): void {
    this.src.close();
  }
}
