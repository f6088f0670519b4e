// Writes safetensors files (and Hugging Face model folders) for tests: the layout the `safetensors` Python package
// writes (8-byte LE header length, JSON header padded with spaces to a multiple of 8, tensors back to back in the
// order given), with F32, F16 and BF16 encodings of float data, and hooks to write deliberately broken files.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { floatToHalf } from '../../src/ir/weights.js';

export type WriteDType = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64' | 'U8';

export interface TensorToWrite {
  name: string;
  shape: number[];
  /** Float data for F32/F16/BF16, integers otherwise. */
  values: ArrayLike<number>;
  dtype?: WriteDType;
}

/** float32 → bfloat16 bits, round to nearest even (what torch's `.to(torch.bfloat16)` does), NaN kept quiet. */
export function floatToBf16(v: number): number {
  const u = new Uint32Array(new Float32Array([v]).buffer)[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bfloat16 bits → number. */
export function bf16ToFloat(h: number): number {
  return new Float32Array(new Uint32Array([h << 16]).buffer)[0];
}

/** The values a reader must see for float data stored as `dtype` (rounded as the writer rounds). */
export function roundAs(values: ArrayLike<number>, dtype: WriteDType): Float32Array {
  const out = Float32Array.from(values);
  if (dtype === 'F16') {
    const h = new Uint16Array(out.length);
    for (let i = 0; i < out.length; i++) h[i] = floatToHalf(out[i]);
    const back = new Float32Array(out.length);
    for (let i = 0; i < out.length; i++) back[i] = halfBitsToNumber(h[i]);
    return back;
  }
  if (dtype === 'BF16') for (let i = 0; i < out.length; i++) out[i] = bf16ToFloat(floatToBf16(out[i]));
  return out;
}

function halfBitsToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

export function encodeTensor(t: TensorToWrite): Uint8Array {
  const dtype = t.dtype ?? 'F32';
  const n = t.values.length;
  switch (dtype) {
    case 'F32':
      return new Uint8Array(Float32Array.from(t.values).buffer);
    case 'F16': {
      const h = new Uint16Array(n);
      for (let i = 0; i < n; i++) h[i] = floatToHalf(t.values[i]);
      return new Uint8Array(h.buffer);
    }
    case 'BF16': {
      const h = new Uint16Array(n);
      for (let i = 0; i < n; i++) h[i] = floatToBf16(t.values[i]);
      return new Uint8Array(h.buffer);
    }
    case 'I32':
      return new Uint8Array(Int32Array.from(t.values).buffer);
    case 'I64':
      return new Uint8Array(BigInt64Array.from(Array.from(t.values, (v) => BigInt(v))).buffer);
    case 'U8':
      return Uint8Array.from(t.values);
  }
}

const DTYPE_SIZE: Record<WriteDType, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8, U8: 1 };

export interface WriteOptions {
  metadata?: Record<string, string>;
  /** Edits the header object before it is serialised (to write lying headers). */
  editHeader?: (header: Record<string, unknown>) => void;
  /** Replaces the header text entirely. */
  headerText?: string;
  /** Pads the header to a multiple of this (8 by default, as the Python package does; 1 for none). */
  align?: number;
}

/** A safetensors file's bytes. */
export function safetensorsBytes(tensors: readonly TensorToWrite[], opts: WriteOptions = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (opts.metadata) header.__metadata__ = opts.metadata;
  const bodies: Uint8Array[] = [];
  let at = 0;
  for (const t of tensors) {
    const dtype = t.dtype ?? 'F32';
    const body = encodeTensor(t);
    if (body.length !== t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[dtype]) throw new Error(`test writer: ${t.name} values do not match shape [${t.shape}]`);
    header[t.name] = { dtype, shape: t.shape, data_offsets: [at, at + body.length] };
    bodies.push(body);
    at += body.length;
  }
  opts.editHeader?.(header);
  let text = opts.headerText ?? JSON.stringify(header);
  const align = opts.align ?? 8;
  const enc = new TextEncoder();
  let hb = enc.encode(text);
  while ((8 + hb.length) % align !== 0) {
    text += ' ';
    hb = enc.encode(text);
  }
  const out = new Uint8Array(8 + hb.length + at);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let off = 8 + hb.length;
  for (const b of bodies) {
    out.set(b, off);
    off += b.length;
  }
  return out;
}

export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], opts: WriteOptions = {}): void {
  writeFileSync(path, safetensorsBytes(tensors, opts));
}

/**
 * Writes a Hugging Face model folder: config.json, the weights (one file, or `shards` shards with an index), and any
 * extra JSON files (tokenizer.json, tokenizer_config.json, generation_config.json).
 */
export function writeHfFolder(
  dir: string,
  config: Record<string, unknown>,
  tensors: readonly TensorToWrite[],
  opts: { shards?: number; files?: Record<string, unknown> } = {},
): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  for (const [name, value] of Object.entries(opts.files ?? {})) writeFileSync(join(dir, name), JSON.stringify(value, null, 2));
  const shards = opts.shards ?? 1;
  if (shards <= 1) {
    writeSafetensors(join(dir, 'model.safetensors'), tensors, { metadata: { format: 'pt' } });
    return;
  }
  const per = Math.ceil(tensors.length / shards);
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (let s = 0; s < shards; s++) {
    const part = tensors.slice(s * per, (s + 1) * per);
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    writeSafetensors(join(dir, file), part, { metadata: { format: 'pt' } });
    for (const t of part) {
      weightMap[t.name] = file;
      total += encodeTensor(t).length;
    }
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
}
