/**
 * ggml tensor data → IR weights, without expanding quantized types to float32: each ggml block format becomes a
 * {@link QuantizedEncoding} whose decoded values equal llama.cpp's reference dequantizers (`dequantize_row_*` in
 * `ggml-quants.c`) bit for bit. Blocks run along `ne[0]`, the row-major last axis, so groups are the encoding's
 * row-major groups.
 *
 * | ggml | encoding | value |
 * | --- | --- | --- |
 * | Q8_0 | 8-bit signed, group 32 | `q · d` |
 * | Q4_0 | 4-bit unsigned, group 32, zero point 8 | `(q − 8) · d` (nibbles repacked to sequential order) |
 * | Q4_1 | 4-bit unsigned, group 32, min | `q · d + m` |
 * | Q5_0 | 8-bit signed, group 32 | `(q − 16) · d` (5-bit values widened) |
 * | Q5_1 | 8-bit unsigned, group 32, min | `q · d + m` |
 * | Q4_K | 4-bit unsigned, group 32, min | `(d · sc) · q − dmin · m` per 32-element sub-block |
 * | Q5_K | 8-bit unsigned, group 32, min | as Q4_K with 5-bit quants |
 * | Q6_K | 8-bit signed, group 16 | `(d · sc) · (q − 32)` per 16-element sub-block |
 *
 * F32 stays a zero-copy view where aligned; F16 and BF16 become float32 exactly (the builders compute in float32).
 * @module
 */
import { ModelFormatError } from '../../errors.js';
import { WeightStore, type QuantizedEncoding, type WeightEntry } from '../../ir/weights.js';
import type { WeightSource } from '../../models/llama.js';
import { UnsupportedModelError } from '../hf/errors.js';
import { bf16BytesToF32, f16BytesToF32, f32FromBytes, halfBitsToFloat } from '../safetensors/source.js';
import type { GgufTensorInfo } from './reader.js';
import { GgmlType } from './types.js';

/** ggml types {@link ggufTensorToWeight} maps. */
export const GGUF_SUPPORTED_TYPES: readonly string[] = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'];

const f16 = (b: Uint8Array, o: number): number => halfBitsToFloat(b[o] | (b[o + 1] << 8));

/** The 6-bit scale and min `j` (0..7) of a Q4_K/Q5_K super-block's 12 packed scale bytes (`get_scale_min_k4`). */
function scaleMinK4(j: number, q: Uint8Array, o: number): [number, number] {
  if (j < 4) return [q[o + j] & 63, q[o + j + 4] & 63];
  return [(q[o + j + 4] & 0xf) | ((q[o + j - 4] >> 6) << 4), (q[o + j + 4] >> 4) | ((q[o + j] >> 6) << 4)];
}

function quantized(t: GgufTensorInfo, bits: 8 | 4, signed: boolean, groupSize: number, data: { packed: Uint8Array; scales: Float32Array; zeroPoints?: Int32Array; mins?: Float32Array }): WeightEntry {
  const enc: QuantizedEncoding = {
    kind: 'quantized',
    bits,
    signed,
    groupSize,
    hasZeroPoint: data.zeroPoints !== undefined,
    scaleDType: 'f32',
    ...(data.mins ? { hasMin: true } : {}),
  };
  const payload: Record<string, Uint8Array | Float32Array | Int32Array> = { packed: data.packed, scales: data.scales };
  if (data.zeroPoints) payload.zeroPoints = data.zeroPoints;
  if (data.mins) payload.mins = data.mins;
  return WeightStore.entry(t.name, 'f32', t.shape, payload, enc);
}

/**
 * A GGUF tensor as a builder weight source: a Float32Array for F32/F16/BF16, a quantized {@link WeightEntry} (named
 * after the tensor, logical shape `t.shape`) for the block types in the module table.
 * @throws `UnsupportedModelError` for other ggml types; `ModelFormatError` when `bytes` is not the tensor's size.
 */
export function ggufTensorToWeight(t: GgufTensorInfo, bytes: Uint8Array, file?: string): WeightSource {
  if (bytes.byteLength !== t.byteLength) throw new ModelFormatError(`tensor '${t.name}'`, t.byteOffset, `has ${bytes.byteLength} bytes, expected ${t.byteLength}`, file);
  const n = t.numel;
  const nb = n / t.typeInfo.blockSize;
  const B = t.typeInfo.typeSize;
  switch (t.type) {
    case GgmlType.F32:
      return f32FromBytes(bytes, n);
    case GgmlType.F16:
      return f16BytesToF32(bytes, n);
    case GgmlType.BF16:
      return bf16BytesToF32(bytes, n);
    case GgmlType.Q8_0: {
      const packed = new Uint8Array(n);
      const scales = new Float32Array(nb);
      for (let b = 0; b < nb; b++) {
        scales[b] = f16(bytes, b * B);
        packed.set(bytes.subarray(b * B + 2, b * B + 34), b * 32);
      }
      return quantized(t, 8, true, 32, { packed, scales });
    }
    case GgmlType.Q4_0:
    case GgmlType.Q4_1: {
      // element j < 16 is the low nibble of qs[j], element j + 16 its high nibble; sequential packing puts elements
      // 2k, 2k+1 in the low, high nibble of byte k
      const head = t.type === GgmlType.Q4_0 ? 2 : 4;
      const packed = new Uint8Array(n / 2);
      const scales = new Float32Array(nb);
      const mins = t.type === GgmlType.Q4_1 ? new Float32Array(nb) : undefined;
      for (let b = 0; b < nb; b++) {
        const o = b * B;
        scales[b] = f16(bytes, o);
        if (mins) mins[b] = -f16(bytes, o + 2);
        const qs = o + head;
        const out = b * 16;
        for (let k = 0; k < 8; k++) packed[out + k] = (bytes[qs + 2 * k] & 0x0f) | ((bytes[qs + 2 * k + 1] & 0x0f) << 4);
        for (let k = 8; k < 16; k++) packed[out + k] = (bytes[qs + 2 * k - 16] >> 4) | (bytes[qs + 2 * k - 15] & 0xf0);
      }
      if (mins) return quantized(t, 4, false, 32, { packed, scales, mins });
      return quantized(t, 4, false, 32, { packed, scales, zeroPoints: new Int32Array(nb).fill(8) });
    }
    case GgmlType.Q5_0:
    case GgmlType.Q5_1: {
      const one = t.type === GgmlType.Q5_1;
      const packed = new Uint8Array(n);
      const scales = new Float32Array(nb);
      const mins = one ? new Float32Array(nb) : undefined;
      for (let b = 0; b < nb; b++) {
        const o = b * B;
        scales[b] = f16(bytes, o);
        if (mins) mins[b] = -f16(bytes, o + 2);
        const h = o + (one ? 4 : 2);
        const qh = (bytes[h] | (bytes[h + 1] << 8) | (bytes[h + 2] << 16) | (bytes[h + 3] << 24)) >>> 0;
        const qs = h + 4;
        for (let j = 0; j < 16; j++) {
          const x0 = (bytes[qs + j] & 0x0f) | (((qh >>> j) << 4) & 0x10);
          const x1 = (bytes[qs + j] >> 4) | ((qh >>> (j + 12)) & 0x10);
          // Q5_0 stores q - 16 as a signed byte (two's complement in the packed uint8)
          packed[b * 32 + j] = one ? x0 : (x0 - 16) & 0xff;
          packed[b * 32 + j + 16] = one ? x1 : (x1 - 16) & 0xff;
        }
      }
      return one ? quantized(t, 8, false, 32, { packed, scales, mins }) : quantized(t, 8, true, 32, { packed, scales });
    }
    case GgmlType.Q4_K:
    case GgmlType.Q5_K: {
      const five = t.type === GgmlType.Q5_K;
      const packed = new Uint8Array(five ? n : n / 2);
      const scales = new Float32Array(n / 32);
      const mins = new Float32Array(n / 32);
      for (let b = 0; b < nb; b++) {
        const o = b * B;
        const d = f16(bytes, o);
        const dmin = f16(bytes, o + 2);
        const sc = o + 4;
        const qh = o + 16; // Q5_K only
        const qs = five ? o + 48 : o + 16;
        for (let j = 0; j < 4; j++) {
          // sub-blocks 2j (low nibbles of qs[32j..32j+32)) and 2j+1 (their high nibbles)
          for (const half of [0, 1]) {
            const g = 8 * b + 2 * j + half;
            const [s, m] = scaleMinK4(2 * j + half, bytes, sc);
            scales[g] = Math.fround(d * s);
            mins[g] = Math.fround(dmin * m);
            for (let l = 0; l < 32; l++) {
              const byte = bytes[qs + 32 * j + l];
              let q = half ? byte >> 4 : byte & 0x0f;
              if (five && bytes[qh + l] & (1 << (2 * j + half))) q += 16;
              const e = g * 32 + l;
              if (five) packed[e] = q;
              else packed[e >> 1] |= e & 1 ? q << 4 : q;
            }
          }
        }
      }
      return quantized(t, five ? 8 : 4, false, 32, { packed, scales, mins });
    }
    case GgmlType.Q6_K: {
      const packed = new Uint8Array(n);
      const scales = new Float32Array(n / 16);
      for (let b = 0; b < nb; b++) {
        const o = b * B;
        const d = f16(bytes, o + 208);
        for (let s = 0; s < 16; s++) scales[16 * b + s] = Math.fround(d * ((bytes[o + 192 + s] << 24) >> 24));
        for (let c = 0; c < 2; c++) {
          const ql = o + 64 * c;
          const qh = o + 128 + 32 * c;
          const y = 256 * b + 128 * c;
          for (let l = 0; l < 32; l++) {
            const h = bytes[qh + l];
            packed[y + l] = (((bytes[ql + l] & 0xf) | (((h >> 0) & 3) << 4)) - 32) & 0xff;
            packed[y + l + 32] = (((bytes[ql + l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32) & 0xff;
            packed[y + l + 64] = (((bytes[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32) & 0xff;
            packed[y + l + 96] = (((bytes[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32) & 0xff;
          }
        }
      }
      return quantized(t, 8, true, 16, { packed, scales });
    }
    default:
      throw new UnsupportedModelError(`tensor '${t.name}'`, `ggml type ${t.typeInfo.name} is not supported (supported: ${GGUF_SUPPORTED_TYPES.join(', ')})`, file);
  }
}

/**
 * Bits per element a ggml type stores (block overhead included), e.g. 4.5 for Q4_0.
 * @internal
 */
export function ggmlBitsPerElement(t: GgufTensorInfo): number {
  return (8 * t.typeInfo.typeSize) / t.typeInfo.blockSize;
}
