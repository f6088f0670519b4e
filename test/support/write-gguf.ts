// Writes GGUF files for tests, as gguf-py's GGUFWriter lays them out: header, metadata, tensor infos, padding to the
// alignment, tensor data each padded to the alignment. Also llama.cpp's reference quantizers (quantize_row_q8_0_ref,
// quantize_row_q4_0_ref) and fp16 conversions, transcribed from ggml independently of the loader.
import { writeFileSync } from 'node:fs';

export const T = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 } as const;
export const G = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q2_K: 10, Q4_K: 12, Q5_K: 13, Q6_K: 14, BF16: 30 } as const;

export interface Kv {
  key: string;
  type: number;
  value: unknown;
  /** Element type when `type` is ARRAY (nested arrays: `value` holds `{type, value}` objects). */
  arrayType?: number;
}

export interface GgufTensor {
  name: string;
  /** ggml dims, ne[0] first (the reverse of the row-major shape). */
  dims: number[];
  type: number;
  data: Uint8Array;
  /** Overrides the written offset (to write lying files). */
  offset?: bigint;
}

export interface GgufWriteOptions {
  version?: number;
  alignment?: number;
  /** Overrides the tensor count / KV count fields. */
  tensorCount?: bigint;
  kvCount?: bigint;
}

class Bytes {
  private chunks: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u8(v: number): void {
    this.push(Uint8Array.of(v));
  }
  u32(v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    this.push(b);
  }
  u64(v: bigint | number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    this.push(b);
  }
  str(s: string): void {
    const e = new TextEncoder().encode(s);
    this.u64(e.length);
    this.push(e);
  }
  pad(align: number): void {
    const n = (align - (this.length % align)) % align;
    this.push(new Uint8Array(n));
  }
  value(type: number, v: unknown, arrayType?: number): void {
    const b = new Uint8Array(8);
    const dv = new DataView(b.buffer);
    switch (type) {
      case T.UINT8: return this.u8(v as number);
      case T.INT8: dv.setInt8(0, v as number); return this.push(b.subarray(0, 1));
      case T.UINT16: dv.setUint16(0, v as number, true); return this.push(b.subarray(0, 2));
      case T.INT16: dv.setInt16(0, v as number, true); return this.push(b.subarray(0, 2));
      case T.UINT32: return this.u32(v as number);
      case T.INT32: dv.setInt32(0, v as number, true); return this.push(b.subarray(0, 4));
      case T.FLOAT32: dv.setFloat32(0, v as number, true); return this.push(b.subarray(0, 4));
      case T.BOOL: return this.u8(v ? 1 : 0);
      case T.STRING: return this.str(v as string);
      case T.UINT64: return this.u64(BigInt(v as number | bigint));
      case T.INT64: dv.setBigInt64(0, BigInt(v as number | bigint), true); return this.push(b);
      case T.FLOAT64: dv.setFloat64(0, v as number, true); return this.push(b);
      case T.ARRAY: {
        const list = v as unknown[];
        this.u32(arrayType!);
        this.u64(list.length);
        for (const x of list) {
          if (arrayType === T.ARRAY) {
            const inner = x as { type: number; value: unknown[] };
            this.value(T.ARRAY, inner.value, inner.type);
          } else this.value(arrayType!, x);
        }
        return;
      }
      default:
        throw new Error(`test writer: value type ${type}`);
    }
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

/** A GGUF file's bytes. */
export function ggufBytes(kv: readonly Kv[], tensors: readonly GgufTensor[], opts: GgufWriteOptions = {}): Uint8Array {
  const align = opts.alignment ?? 32;
  const b = new Bytes();
  b.push(new TextEncoder().encode('GGUF'));
  b.u32(opts.version ?? 3);
  b.u64(opts.tensorCount ?? BigInt(tensors.length));
  const all = opts.alignment !== undefined && !kv.some((k) => k.key === 'general.alignment') ? [...kv, { key: 'general.alignment', type: T.UINT32, value: align }] : kv;
  b.u64(opts.kvCount ?? BigInt(all.length));
  for (const k of all) {
    b.str(k.key);
    b.u32(k.type);
    b.value(k.type, k.value, k.arrayType);
  }
  let offset = 0;
  const offsets: bigint[] = [];
  for (const t of tensors) {
    b.str(t.name);
    b.u32(t.dims.length);
    for (const d of t.dims) b.u64(d);
    b.u32(t.type);
    const off = t.offset ?? BigInt(offset);
    b.u64(off);
    offsets.push(off);
    offset += Math.ceil(t.data.length / align) * align;
  }
  b.pad(align);
  for (const t of tensors) {
    b.push(t.data);
    b.pad(align);
  }
  return b.concat();
}

export function writeGguf(path: string, kv: readonly Kv[], tensors: readonly GgufTensor[], opts: GgufWriteOptions = {}): void {
  writeFileSync(path, ggufBytes(kv, tensors, opts));
}

// ---------------------------------------------------------------------------------------------------------------
// ggml's fp16 conversions (ggml-impl.h, from the FP16 library), in float32 arithmetic

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsOf = (x: number): number => {
  f32[0] = x;
  return u32[0];
};
const fromBits = (b: number): number => {
  u32[0] = b >>> 0;
  return f32[0];
};

/** ggml_compute_fp32_to_fp16. */
export function fp32ToFp16(f: number): number {
  const fr = Math.fround;
  let base = fr(fr(Math.abs(fr(f)) * fr(2 ** 112)) * fr(2 ** -110));
  const w = bitsOf(f);
  const shl1w = (w + w) >>> 0;
  const sign = (w & 0x80000000) >>> 0;
  let bias = (shl1w & 0xff000000) >>> 0;
  if (bias < 0x71000000) bias = 0x71000000;
  base = fr(fromBits(((bias >>> 1) + 0x07800000) >>> 0) + base);
  const bits = bitsOf(base);
  const expBits = (bits >>> 13) & 0x00007c00;
  const mantissaBits = bits & 0x00000fff;
  const nonsign = expBits + mantissaBits;
  return ((sign >>> 16) | (shl1w > 0xff000000 ? 0x7e00 : nonsign)) & 0xffff;
}

/** ggml_compute_fp16_to_fp32. */
export function fp16ToFp32(h: number): number {
  const w = (h << 16) >>> 0;
  const sign = (w & 0x80000000) >>> 0;
  const twoW = (w + w) >>> 0;
  const normalized = Math.fround(fromBits(((twoW >>> 4) + (0xe0 << 23)) >>> 0) * Math.fround(2 ** -112));
  const denormalized = Math.fround(fromBits((twoW >>> 17) | (126 << 23)) - 0.5);
  const result = (sign | (twoW < 1 << 27 ? bitsOf(denormalized) : bitsOf(normalized))) >>> 0;
  return fromBits(result);
}

// ---------------------------------------------------------------------------------------------------------------
// llama.cpp's reference quantizers (ggml-quants.c)

/** C's roundf: half away from zero. */
const roundf = (x: number): number => Math.sign(x) * Math.floor(Math.abs(x) + 0.5);

/** quantize_row_q8_0_ref: blocks of 34 bytes (fp16 d, 32 int8). */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  const fr = Math.fround;
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[i * 32 + j]));
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    dv.setUint16(i * 34, fp32ToFp16(d), true);
    for (let j = 0; j < 32; j++) dv.setInt8(i * 34 + 2 + j, roundf(fr(x[i * 32 + j] * id)));
  }
  return out;
}

/** quantize_row_q4_0_ref: blocks of 18 bytes (fp16 d, 16 bytes of nibbles: j low, j+16 high). */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  const fr = Math.fround;
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 18);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[i * 32 + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -8);
    const id = d ? fr(1 / d) : 0;
    dv.setUint16(i * 18, fp32ToFp16(d), true);
    for (let j = 0; j < 16; j++) {
      const x0 = fr(x[i * 32 + j] * id);
      const x1 = fr(x[i * 32 + 16 + j] * id);
      // (int8_t)(x + 8.5f) truncates toward zero
      const xi0 = Math.min(15, Math.trunc(fr(x0 + 8.5)));
      const xi1 = Math.min(15, Math.trunc(fr(x1 + 8.5)));
      out[i * 18 + 2 + j] = xi0 | (xi1 << 4);
    }
  }
  return out;
}

/**
 * A simple Q4_K quantizer (not llama.cpp's search, the same format): blocks of 256 as 144 bytes — fp16 `d`, fp16
 * `dmin`, 12 bytes of 6-bit sub-block scales and mins (`get_scale_min_k4`'s packing), 128 bytes of nibbles (in each
 * 64-element chunk, element `l` in the low nibble of byte `l`, element `l + 32` in its high nibble). Value =
 * `d · sc · q − dmin · m` per 32-element sub-block.
 */
export function quantizeQ4_K(x: Float32Array): Uint8Array {
  const fr = Math.fround;
  const nb = x.length / 256;
  const out = new Uint8Array(nb * 144);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    const o = i * 144;
    const scale = new Array<number>(8);
    const minus = new Array<number>(8);
    for (let s = 0; s < 8; s++) {
      let lo = 0;
      let hi = 0;
      for (let l = 0; l < 32; l++) {
        lo = Math.min(lo, x[i * 256 + s * 32 + l]);
        hi = Math.max(hi, x[i * 256 + s * 32 + l]);
      }
      scale[s] = (hi - lo) / 15;
      minus[s] = -lo;
    }
    const d = fp16ToFp32(fp32ToFp16(Math.max(...scale) / 63));
    const dmin = fp16ToFp32(fp32ToFp16(Math.max(...minus) / 63));
    dv.setUint16(o, fp32ToFp16(d), true);
    dv.setUint16(o + 2, fp32ToFp16(dmin), true);
    const sc = scale.map((v) => (d ? Math.min(63, Math.round(v / d)) : 0));
    const m = minus.map((v) => (dmin ? Math.min(63, Math.round(v / dmin)) : 0));
    for (let j = 0; j < 8; j++) {
      if (j < 4) {
        out[o + 4 + j] |= sc[j];
        out[o + 4 + j + 4] |= m[j];
      } else {
        out[o + 4 + j + 4] = (sc[j] & 0xf) | ((m[j] & 0xf) << 4);
        out[o + 4 + j - 4] |= (sc[j] >> 4) << 6;
        out[o + 4 + j] |= (m[j] >> 4) << 6;
      }
    }
    for (let e = 0; e < 256; e++) {
      const s = e >> 5;
      const step = fr(d * sc[s]);
      const q = step ? Math.max(0, Math.min(15, Math.round((x[i * 256 + e] + fr(dmin * m[s])) / step))) : 0;
      const byte = o + 16 + 32 * (e >> 6) + (e & 31);
      out[byte] |= e & 32 ? q << 4 : q;
    }
  }
  return out;
}

/**
 * A simple Q6_K quantizer (the same format as llama.cpp's): blocks of 256 as 210 bytes — 128 bytes of low nibbles,
 * 64 of high 2-bit pairs, 16 int8 sub-block scales, fp16 `d`. Value = `d · sc · (q − 32)` per 16-element sub-block.
 */
export function quantizeQ6_K(x: Float32Array): Uint8Array {
  const fr = Math.fround;
  const nb = x.length / 256;
  const out = new Uint8Array(nb * 210);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    const o = i * 210;
    const scale = Array.from({ length: 16 }, (_v, s) => Math.max(...Array.from(x.subarray(i * 256 + s * 16, i * 256 + s * 16 + 16), Math.abs)) / 31);
    const d = fp16ToFp32(fp32ToFp16(Math.max(...scale) / 127));
    dv.setUint16(o + 208, fp32ToFp16(d), true);
    const sc = scale.map((v) => (d ? Math.min(127, Math.round(v / d)) : 0));
    sc.forEach((v, s) => dv.setInt8(o + 192 + s, v));
    for (let e = 0; e < 256; e++) {
      const step = fr(d * sc[e >> 4]);
      const q = (step ? Math.max(-32, Math.min(31, Math.round(x[i * 256 + e] / step))) : 0) + 32;
      // half h (128 elements), then quarter w (32 elements) and lane l within it
      const h = e >> 7;
      const w = (e >> 5) & 3;
      const l = e & 31;
      const ql = o + 64 * h + l + (w & 1 ? 32 : 0);
      out[ql] |= w < 2 ? q & 0xf : (q & 0xf) << 4;
      out[o + 128 + 32 * h + l] |= (q >> 4) << (2 * w);
    }
  }
  return out;
}

/** F32 tensor bytes. */
export function f32Bytes(x: ArrayLike<number>): Uint8Array {
  return new Uint8Array(Float32Array.from(x).buffer);
}

/** F16 tensor bytes (ggml's conversion). */
export function f16Bytes(x: ArrayLike<number>): Uint8Array {
  const h = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) h[i] = fp32ToFp16(x[i]);
  return new Uint8Array(h.buffer);
}

/** Common metadata helpers. */
export const kv = {
  u32: (key: string, value: number): Kv => ({ key, type: T.UINT32, value }),
  f32: (key: string, value: number): Kv => ({ key, type: T.FLOAT32, value }),
  str: (key: string, value: string): Kv => ({ key, type: T.STRING, value }),
  strs: (key: string, value: string[]): Kv => ({ key, type: T.ARRAY, arrayType: T.STRING, value }),
};
