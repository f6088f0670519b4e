/**
 * Random access to a model file's bytes, held in memory or read from disk on demand: the safetensors and GGUF readers
 * parse headers through it and read each tensor's bytes once, so a multi-gigabyte file is never held whole.
 * @module
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { InputError } from '../../errors.js';

/** A model file's bytes: in memory (reads are views) or on disk (reads are fresh buffers). */
export interface ByteSource {
  /** Total size in bytes. */
  readonly size: number;
  /** File name for error messages, when known. */
  readonly file: string | undefined;
  /**
   * Bytes `[offset, offset + length)`. In-memory sources return a view (zero copy); file sources a fresh buffer, which
   * is therefore 8-byte aligned. The caller checks bounds first; out-of-range reads throw {@link InputError}.
   */
  read(offset: number, length: number): Uint8Array;
  /** Releases the file handle (a no-op for memory). Reads after closing throw. */
  close(): void;
}

function checkRange(src: ByteSource, offset: number, length: number): void {
  if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= src.size))
    throw new InputError(`${src.file ?? 'bytes'}: read of ${length} bytes at offset ${offset} is outside the ${src.size}-byte file`);
}

/** A source over bytes already in memory. */
export function memorySource(bytes: Uint8Array, file?: string): ByteSource {
  const src: ByteSource = {
    size: bytes.byteLength,
    file,
    read(offset, length) {
      checkRange(src, offset, length);
      return bytes.subarray(offset, offset + length);
    },
    close() {},
  };
  return src;
}

/** Largest single `readSync` (its length argument is a 32-bit int). */
const READ_CHUNK = 1 << 30;

/** A source reading a file on demand with positioned reads; {@link ByteSource.close} closes the descriptor. */
export function fileSource(path: string): ByteSource {
  const fd = openSync(path, 'r');
  let open = true;
  let size: number;
  try {
    size = fstatSync(fd).size;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  const src: ByteSource = {
    size,
    file: path,
    read(offset, length) {
      if (!open) throw new InputError(`${path}: read after the file was closed`);
      checkRange(src, offset, length);
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = readSync(fd, out, done, Math.min(READ_CHUNK, length - done), offset + done);
        if (n <= 0) throw new InputError(`${path}: file ended at byte ${offset + done} while reading (was it truncated while open?)`);
        done += n;
      }
      return out;
    },
    close() {
      if (open) closeSync(fd);
      open = false;
    },
  };
  return src;
}

/** Whether this host stores numbers little-endian (every platform Node runs on in practice). */
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let halfTable: Float32Array | undefined;

/** IEEE half bits → float32 for all 65536 patterns (built once, 256 KiB). */
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const f = h & 0x3ff;
    t[h] = e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
  }
  return (halfTable = t);
}

/** Little-endian u16 array from bytes: a view when aligned on a little-endian host, else a copy. */
export function u16View(bytes: Uint8Array, count: number): Uint16Array {
  if (HOST_LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, count);
  const out = new Uint16Array(count);
  for (let i = 0; i < count; i++) out[i] = bytes[2 * i] | (bytes[2 * i + 1] << 8);
  return out;
}

/** Little-endian float32s to a Float32Array: a view when 4-aligned on a little-endian host, else one copy. */
export function f32FromBytes(bytes: Uint8Array, count: number): Float32Array {
  if (HOST_LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  if (HOST_LITTLE_ENDIAN) return new Float32Array(bytes.slice(0, 4 * count).buffer);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = dv.getFloat32(4 * i, true);
  return out;
}

/** Little-endian IEEE halves to float32 (exact: every half is a float32). */
export function f16BytesToF32(bytes: Uint8Array, count: number): Float32Array {
  const t = halfToFloatTable();
  const h = u16View(bytes, count);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = t[h[i]];
  return out;
}

/** Little-endian bfloat16s to float32 (exact: a bfloat16 is the top half of a float32). */
export function bf16BytesToF32(bytes: Uint8Array, count: number): Float32Array {
  const h = u16View(bytes, count);
  const out = new Float32Array(count);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < count; i++) bits[i] = h[i] << 16;
  return out;
}

/** Float32 value of IEEE half bits (table look-up). */
export function halfBitsToFloat(h: number): number {
  return halfToFloatTable()[h & 0xffff];
}
