/**
 * ONNX `TensorProto`s to host tensors: element types, payloads (`raw_data`, the typed fields, external files) and the
 * checks that keep a malformed file from crashing the reader or allocating more than the file holds.
 *
 * Element types map onto the IR's: FLOAT → f32, FLOAT16 → f16, DOUBLE → f32 (the IR and WGSL have no f64; values
 * are rounded to float32), INT64/INT32/INT16/INT8/INT4/INT2 → i32, UINT64/UINT32/UINT16/UINT8/UINT4/UINT2 → u32,
 * BOOL → bool. An INT64 tensor whose values do not fit int32 is held exactly, as i64 (graph inputs and outputs of type
 * INT64 are i64 too: see the importer); UINT64 values must fit in 32 bits: a value that does not is an error naming
 * the tensor, never truncated. Other types (BFLOAT16, the float8/float4 types, STRING, complex) are unsupported.
 * @module
 */
import { closeSync, fstatSync, openSync, readSync, realpathSync } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { InputError, ModelFormatError, UnsupportedOpError } from '../../errors.js';
import type { DType } from '../../ir/dtype.js';
import { halfToFloat } from '../../ir/weights.js';
import { Tensor, type TensorData } from '../../runtime/cpu/tensor.js';
import { ONNX_DATA_TYPES, type Int64, type TensorMsg } from './schema.js';

/** ONNX element type codes the importer refers to by name. */
export const OnnxType = Object.freeze({
  FLOAT: 1, UINT8: 2, INT8: 3, UINT16: 4, INT16: 5, INT32: 6, INT64: 7, STRING: 8, BOOL: 9, FLOAT16: 10, DOUBLE: 11,
  UINT32: 12, UINT64: 13, BFLOAT16: 16, UINT4: 21, INT4: 22, UINT2: 25, INT2: 26,
});

/** Largest element count a tensor may declare (typed arrays cannot be larger in practice). */
export const MAX_TENSOR_ELEMENTS = 2 ** 31 - 1;

interface TypeInfo {
  /** IR dtype. */
  dtype: DType;
  /** Bits per element in `raw_data`. */
  bits: number;
  /** Signed integer. */
  signed: boolean;
}

const TYPES: Readonly<Record<number, TypeInfo>> = {
  [OnnxType.FLOAT]: { dtype: 'f32', bits: 32, signed: true },
  [OnnxType.FLOAT16]: { dtype: 'f16', bits: 16, signed: true },
  [OnnxType.DOUBLE]: { dtype: 'f32', bits: 64, signed: true },
  [OnnxType.INT64]: { dtype: 'i32', bits: 64, signed: true },
  [OnnxType.INT32]: { dtype: 'i32', bits: 32, signed: true },
  [OnnxType.INT16]: { dtype: 'i32', bits: 16, signed: true },
  [OnnxType.INT8]: { dtype: 'i32', bits: 8, signed: true },
  [OnnxType.INT4]: { dtype: 'i32', bits: 4, signed: true },
  [OnnxType.INT2]: { dtype: 'i32', bits: 2, signed: true },
  [OnnxType.UINT64]: { dtype: 'u32', bits: 64, signed: false },
  [OnnxType.UINT32]: { dtype: 'u32', bits: 32, signed: false },
  [OnnxType.UINT16]: { dtype: 'u32', bits: 16, signed: false },
  [OnnxType.UINT8]: { dtype: 'u32', bits: 8, signed: false },
  [OnnxType.UINT4]: { dtype: 'u32', bits: 4, signed: false },
  [OnnxType.UINT2]: { dtype: 'u32', bits: 2, signed: false },
  [OnnxType.BOOL]: { dtype: 'bool', bits: 8, signed: false },
};

/**
 * The ONNX name of an element type code (`FLOAT`, `INT64`, …).
 * @internal
 */
export function onnxTypeName(type: number): string {
  return ONNX_DATA_TYPES[type] ?? `type ${type}`;
}

/**
 * The IR dtype an ONNX element type is held in, or `undefined` when it is unsupported.
 * @internal
 */
export function irDType(type: number): DType | undefined {
  return TYPES[type]?.dtype;
}

/** Bits of an integer element type narrower than 32 (`INT8` → 8), with its signedness; `undefined` otherwise. */
export function narrowIntBits(type: number): { bits: number; signed: boolean } | undefined {
  const t = TYPES[type];
  return t && t.dtype !== 'bool' && t.dtype !== 'f32' && t.dtype !== 'f16' && t.bits < 32 ? { bits: t.bits, signed: t.signed } : undefined;
}

/** The range of values an integer element type holds (`[lo, hi]`), or `undefined` for other types. */
export function intRange(type: number): [number, number] | undefined {
  const t = TYPES[type];
  if (!t || t.dtype === 'f32' || t.dtype === 'f16' || t.dtype === 'bool') return undefined;
  const bits = Math.min(t.bits, 32);
  return t.signed ? [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] : [0, 2 ** bits - 1];
}

/** The ONNX element type a value of this IR dtype is declared with when nothing says otherwise. */
export function defaultOnnxType(dtype: DType): number {
  switch (dtype) {
    case 'f32': return OnnxType.FLOAT;
    case 'f16': return OnnxType.FLOAT16;
    case 'i32': return OnnxType.INT64;
    case 'u32': return OnnxType.UINT32;
    case 'bool': return OnnxType.BOOL;
    case 'i64': return OnnxType.INT64;
  }
}

/** A protobuf int64 as a bigint. */
export function int64ToBigInt(v: Int64, unsigned = false): bigint {
  if (typeof v === 'number') return BigInt(v);
  if (typeof v === 'string') return BigInt(v);
  const high = unsigned || v.unsigned ? BigInt(v.high >>> 0) : BigInt(v.high);
  return (high << 32n) | BigInt(v.low >>> 0);
}

/** A protobuf int64 as a number when it is a safe integer, else `undefined`. */
export function int64ToNumber(v: Int64): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v : undefined;
  const b = int64ToBigInt(v);
  return b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : undefined;
}

/**
 * Where a tensor is being read, for errors and external data.
 * @internal
 */
export interface TensorSource {
  /** The model file (for messages). */
  file?: string;
  /** The model's directory: external data is read from here, and must stay inside it. */
  dir?: string;
  /** The whole file's bytes, to report byte offsets of `raw_data`. */
  fileBytes?: Uint8Array;
  /** What the tensor is (`initializer 'w'`, `input 0`), for messages. */
  what: string;
  /** Whether a bad value is the caller's input (an {@link InputError}) rather than a malformed file. */
  isInput?: boolean;
}

/**
 * A decoded tensor: the host tensor and, for an int64 tensor with values outside int32, those values as numbers.
 * @internal
 */
export interface DecodedTensor {
  /** ONNX element type. */
  readonly type: number;
  /** Dims. */
  readonly shape: readonly number[];
  /** The values in the IR dtype (i64 for int64 values beyond int32; absent for such uint64 values). */
  readonly tensor?: Tensor;
  /** int64/uint64 values that do not fit 32 bits (only with `allowWide`), as doubles (for bounds that clamp them). */
  readonly wide?: readonly number[];
}

function offsetOf(sub: Uint8Array | undefined, src: TensorSource): number {
  const f = src.fileBytes;
  if (!sub || !f || sub.buffer !== f.buffer) return 0;
  return sub.byteOffset - f.byteOffset;
}

function bad(src: TensorSource, message: string, offset = 0): Error {
  if (src.isInput) return new InputError(`${src.what}: ${message}`);
  return new ModelFormatError(src.what, offset, message, src.file);
}

/** Checked dims and element count of a tensor. */
export function tensorShape(dims: readonly Int64[], src: TensorSource): { shape: number[]; count: number } {
  const shape: number[] = [];
  let count = 1;
  for (const d of dims) {
    const n = int64ToNumber(d);
    if (n === undefined || n < 0) throw bad(src, `dim ${int64ToBigInt(d)} is not a size`);
    shape.push(n);
    count *= n;
    if (count > MAX_TENSOR_ELEMENTS) throw bad(src, `dims [${dims.map((x) => int64ToBigInt(x)).join(', ')}] hold more than ${MAX_TENSOR_ELEMENTS} elements`);
  }
  return { shape, count };
}

/** The bytes of a tensor stored outside the model file (`data_location: EXTERNAL`), confined to the model's directory. */
function readExternal(msg: TensorMsg, expectedBytes: number, src: TensorSource): Uint8Array {
  const kv = new Map(msg.externalData.map((e) => [e.key, e.value]));
  const location = kv.get('location');
  if (!location) throw bad(src, "external data has no 'location'");
  if (!src.dir) throw bad(src, `external data '${location}' needs the model's directory (import the model from a file)`);
  const num = (key: string): number | undefined => {
    const v = kv.get(key);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw bad(src, `external data '${key}' is not a byte count: ${JSON.stringify(v)}`);
    return Number(v);
  };
  const offset = num('offset') ?? 0;
  const length = num('length');
  const dir = resolve(src.dir);
  const full = resolve(dir, location);
  const inside = (root: string, p: string): boolean => {
    const rel = relative(root, p);
    return rel !== '' && !rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel);
  };
  if (location.includes('\0') || isAbsolute(location) || !inside(dir, full)) throw bad(src, `external data path '${location}' escapes the model's directory`);
  let real: string;
  try {
    real = realpathSync(full);
  } catch {
    throw bad(src, `external data file '${location}' does not exist`);
  }
  if (!inside(realpathSync(dir), real)) throw bad(src, `external data path '${location}' escapes the model's directory (through a link)`);
  const fd = openSync(real, 'r');
  try {
    const size = fstatSync(fd).size;
    const want = length ?? size - offset;
    if (want !== expectedBytes) throw bad(src, `external data holds ${want} bytes, but the dims and type need ${expectedBytes}`);
    if (offset + want > size) throw bad(src, `external data '${location}' has ${size} bytes, too few for ${want} at offset ${offset}`);
    const out = new Uint8Array(want);
    let at = 0;
    while (at < want) {
      const n = readSync(fd, out, at, want - at, offset + at);
      if (n <= 0) throw bad(src, `external data '${location}' ended early`);
      at += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

/** Unpacks `count` `bits`-bit integers (LSB first) from bytes, sign-extending when `signed`. */
function unpackLowBits(bytes: ArrayLike<number>, count: number, bits: number, signed: boolean, out: Int32Array | Uint32Array): void {
  const per = 8 / bits;
  const mask = (1 << bits) - 1;
  const sign = 1 << (bits - 1);
  for (let i = 0; i < count; i++) {
    let v = (bytes[Math.floor(i / per)] >> ((i % per) * bits)) & mask;
    if (signed && v & sign) v -= 1 << bits;
    out[i] = v;
  }
}

const I32_MIN = -(2n ** 31n);
const I32_MAX = 2n ** 31n - 1n;
const U32_MAX = 2n ** 32n - 1n;

/**
 * Decodes a `TensorProto` to a host tensor in its IR dtype. Throws {@link ModelFormatError} (or {@link InputError}
 * for a run's input) when the payload disagrees with the dims and type, the dims overflow, or a 64-bit value does not
 * fit 32 bits (unless `allowWide`, which returns such values in {@link DecodedTensor.wide}); throws
 * {@link UnsupportedOpError} for element types the IR cannot hold.
 * @internal
 */
export function decodeTensor(msg: TensorMsg, src: TensorSource, opts: { allowWide?: boolean } = {}): DecodedTensor {
  const type = msg.dataType;
  const info = TYPES[type];
  if (!info) throw new UnsupportedOpError([`dtype ${onnxTypeName(type)}`], `${src.what} has element type ${onnxTypeName(type)}, which tensorwright does not support`);
  if (msg.segment) throw new UnsupportedOpError(['TensorProto.segment'], `${src.what} is a segment of a larger tensor, which is unsupported`);
  const { shape, count } = tensorShape(msg.dims, src);
  const rawBytes = Math.ceil((count * info.bits) / 8);
  let raw: Uint8Array | undefined;
  if (msg.dataLocation === 1) raw = readExternal(msg, rawBytes, src);
  else if (msg.rawData && msg.rawData.length > 0) raw = msg.rawData;
  const off = offsetOf(raw ?? msg.rawData, src);
  const T = info.dtype === 'f32' || info.dtype === 'f16' ? Float32Array : info.dtype === 'i32' ? Int32Array : info.dtype === 'u32' ? Uint32Array : Uint8Array;
  const made = (data: TensorData): DecodedTensor => ({ type, shape, tensor: new Tensor(info.dtype, shape, data) });
  if (raw) {
    if (raw.length !== rawBytes) throw bad(src, `raw_data holds ${raw.length} bytes, but ${onnxTypeName(type)}[${shape.join(',')}] needs ${rawBytes}`, off);
    const aligned = raw.slice(); // an aligned copy: typed views need their element alignment
    const buf = aligned.buffer;
    switch (type) {
      case OnnxType.FLOAT:
        return made(new Float32Array(buf, 0, count));
      case OnnxType.DOUBLE:
        return made(Float32Array.from(new Float64Array(buf, 0, count)));
      case OnnxType.FLOAT16: {
        const h = new Uint16Array(buf, 0, count);
        const f = new Float32Array(count);
        for (let i = 0; i < count; i++) f[i] = halfToFloat(h[i]);
        return made(f);
      }
      case OnnxType.INT32:
        return made(new Int32Array(buf, 0, count));
      case OnnxType.UINT32:
        return made(new Uint32Array(buf, 0, count));
      case OnnxType.INT16:
        return made(Int32Array.from(new Int16Array(buf, 0, count)));
      case OnnxType.UINT16:
        return made(Uint32Array.from(new Uint16Array(buf, 0, count)));
      case OnnxType.INT8:
        return made(Int32Array.from(new Int8Array(buf, 0, count)));
      case OnnxType.UINT8:
        return made(Uint32Array.from(aligned));
      case OnnxType.BOOL:
        return made(aligned.map((v) => (v ? 1 : 0)));
      case OnnxType.INT64:
      case OnnxType.UINT64:
        return wideInts(Array.from(type === OnnxType.INT64 ? new BigInt64Array(buf, 0, count) : new BigUint64Array(buf, 0, count)), type, shape, src, opts, off);
      default: {
        const out = new T(count) as Int32Array | Uint32Array;
        unpackLowBits(aligned, count, info.bits, info.signed, out);
        return made(out);
      }
    }
  }
  // typed fields
  const field = (list: ArrayLike<unknown>, name: string, want = count): void => {
    if (list.length !== want) throw bad(src, `${name} holds ${list.length} values, but ${onnxTypeName(type)}[${shape.join(',')}] needs ${want}`);
  };
  switch (type) {
    case OnnxType.FLOAT:
      field(msg.floatData, 'float_data');
      return made(Float32Array.from(msg.floatData));
    case OnnxType.DOUBLE:
      field(msg.doubleData, 'double_data');
      return made(Float32Array.from(msg.doubleData));
    case OnnxType.FLOAT16: {
      field(msg.int32Data, 'int32_data');
      return made(Float32Array.from(msg.int32Data, (v) => halfToFloat(v & 0xffff)));
    }
    case OnnxType.INT64:
      field(msg.int64Data, 'int64_data');
      return wideInts(msg.int64Data.map((v) => int64ToBigInt(v)), type, shape, src, opts, off);
    case OnnxType.UINT64:
    case OnnxType.UINT32: {
      field(msg.uint64Data, 'uint64_data');
      const vals = msg.uint64Data.map((v) => int64ToBigInt(v, true));
      if (type === OnnxType.UINT64) return wideInts(vals, type, shape, src, opts, off);
      return made(Uint32Array.from(vals, (v) => Number(v & U32_MAX)));
    }
    case OnnxType.BOOL:
      field(msg.int32Data, 'int32_data');
      return made(Uint8Array.from(msg.int32Data, (v) => (v ? 1 : 0)));
    default: {
      if (info.bits < 8) {
        // sub-byte types: one packed byte per int32_data entry, or one value per entry
        const packed = Math.ceil((count * info.bits) / 8);
        if (msg.int32Data.length !== packed && msg.int32Data.length !== count) field(msg.int32Data, 'int32_data', packed);
        const out = new T(count) as Int32Array | Uint32Array;
        if (msg.int32Data.length === packed && packed !== count) unpackLowBits(msg.int32Data, count, info.bits, info.signed, out);
        else out.set(msg.int32Data.map((v) => v & ((1 << info.bits) - 1)).map((v) => (info.signed && v & (1 << (info.bits - 1)) ? v - (1 << info.bits) : v)));
        return made(out);
      }
      field(msg.int32Data, 'int32_data');
      return made(info.dtype === 'i32' ? Int32Array.from(msg.int32Data) : Uint32Array.from(msg.int32Data, (v) => v >>> 0));
    }
  }
}

/**
 * 64-bit integers to i32/u32 when they fit; int64 values that do not fit are an i64 tensor, uint64 ones an error (or
 * `wide` numbers when allowed).
 */
function wideInts(vals: bigint[], type: number, shape: number[], src: TensorSource, opts: { allowWide?: boolean }, off: number): DecodedTensor {
  const signed = type === OnnxType.INT64;
  const [lo, hi] = signed ? [I32_MIN, I32_MAX] : [0n, U32_MAX];
  const at = vals.findIndex((v) => v < lo || v > hi);
  if (at >= 0) {
    // int64 beyond int32: held exactly as i64 (and, for the inputs that clamp them, Slice bounds, as numbers)
    if (signed) return { type, shape, tensor: new Tensor('i64', shape, BigInt64Array.from(vals)), ...(opts.allowWide ? { wide: vals.map(Number) } : {}) };
    if (opts.allowWide) return { type, shape, wide: vals.map(Number) };
    throw bad(src, `${onnxTypeName(type)} value ${vals[at]} (element ${at}) does not fit in ${signed ? 'int32' : 'uint32'}, which tensorwright computes ${onnxTypeName(type)} in`, off);
  }
  const data = signed ? Int32Array.from(vals, Number) : Uint32Array.from(vals, Number);
  return { type, shape, tensor: new Tensor(signed ? 'i32' : 'u32', shape, data) };
}
