// ggml block formats → quantized IR weights: decodeWeight must reproduce llama.cpp's reference dequantizers
// (dequantize_row_* in ggml-quants.c, transcribed below in float32 arithmetic, independently of the loader) bit for
// bit, on data quantized with llama.cpp's reference quantizers (Q8_0, Q4_0) or on random blocks (the others).
import { describe, expect, it } from 'vitest';
import { GgufFile, ggufTensorToWeight } from '../src/frontends/gguf/index.js';
import { UnsupportedModelError } from '../src/frontends/hf/errors.js';
import { decodeWeight, type WeightEntry } from '../src/ir/weights.js';
import { Rng } from '../src/util/random.js';
import { fp16ToFp32, fp32ToFp16, G, ggufBytes, quantizeQ4_0, quantizeQ8_0 } from './support/write-gguf.js';

const fr = Math.fround;
const h16 = (b: Uint8Array, o: number): number => fp16ToFp32(b[o] | (b[o + 1] << 8));
const i8 = (v: number): number => (v << 24) >> 24;

// ---------------------------------------------------------------------------------------------------------------
// llama.cpp's reference dequantizers

function dequantQ8_0(b: Uint8Array, k: number): Float32Array {
  const y = new Float32Array(k);
  for (let i = 0; i < k / 32; i++) {
    const d = h16(b, i * 34);
    for (let j = 0; j < 32; j++) y[i * 32 + j] = fr(i8(b[i * 34 + 2 + j]) * d);
  }
  return y;
}

function dequantQ4_0(b: Uint8Array, k: number): Float32Array {
  const y = new Float32Array(k);
  for (let i = 0; i < k / 32; i++) {
    const d = h16(b, i * 18);
    for (let j = 0; j < 16; j++) {
      const x0 = (b[i * 18 + 2 + j] & 0x0f) - 8;
      const x1 = (b[i * 18 + 2 + j] >> 4) - 8;
      y[i * 32 + j] = fr(x0 * d);
      y[i * 32 + j + 16] = fr(x1 * d);
    }
  }
  return y;
}

function dequantQ4_1(b: Uint8Array, k: number): Float32Array {
  const y = new Float32Array(k);
  for (let i = 0; i < k / 32; i++) {
    const d = h16(b, i * 20);
    const m = h16(b, i * 20 + 2);
    for (let j = 0; j < 16; j++) {
      const x0 = b[i * 20 + 4 + j] & 0x0f;
      const x1 = b[i * 20 + 4 + j] >> 4;
      y[i * 32 + j] = fr(fr(x0 * d) + m);
      y[i * 32 + j + 16] = fr(fr(x1 * d) + m);
    }
  }
  return y;
}

function dequantQ5(b: Uint8Array, k: number, one: boolean): Float32Array {
  const y = new Float32Array(k);
  const B = one ? 24 : 22;
  for (let i = 0; i < k / 32; i++) {
    const o = i * B;
    const d = h16(b, o);
    const m = one ? h16(b, o + 2) : 0;
    const h = o + (one ? 4 : 2);
    const qh = new DataView(b.buffer, b.byteOffset + h, 4).getUint32(0, true);
    for (let j = 0; j < 16; j++) {
      const xh0 = ((qh >>> j) << 4) & 0x10;
      const xh1 = (qh >>> (j + 12)) & 0x10;
      const q = b[h + 4 + j];
      if (one) {
        y[i * 32 + j] = fr(fr(((q & 0x0f) | xh0) * d) + m);
        y[i * 32 + j + 16] = fr(fr(((q >> 4) | xh1) * d) + m);
      } else {
        y[i * 32 + j] = fr((((q & 0x0f) | xh0) - 16) * d);
        y[i * 32 + j + 16] = fr((((q >> 4) | xh1) - 16) * d);
      }
    }
  }
  return y;
}

function getScaleMinK4(j: number, q: Uint8Array, o: number): [number, number] {
  if (j < 4) return [q[o + j] & 63, q[o + j + 4] & 63];
  return [(q[o + j + 4] & 0xf) | ((q[o + j - 4] >> 6) << 4), (q[o + j + 4] >> 4) | ((q[o + j] >> 6) << 4)];
}

function dequantQ4_K(b: Uint8Array, k: number): Float32Array {
  const y = new Float32Array(k);
  let yi = 0;
  for (let i = 0; i < k / 256; i++) {
    const o = i * 144;
    const d = h16(b, o);
    const min = h16(b, o + 2);
    let q = o + 16;
    let is = 0;
    for (let j = 0; j < 256; j += 64) {
      let [sc, m] = getScaleMinK4(is + 0, b, o + 4);
      const d1 = fr(d * sc);
      const m1 = fr(min * m);
      [sc, m] = getScaleMinK4(is + 1, b, o + 4);
      const d2 = fr(d * sc);
      const m2 = fr(min * m);
      for (let l = 0; l < 32; ++l) y[yi++] = fr(fr(d1 * (b[q + l] & 0xf)) - m1);
      for (let l = 0; l < 32; ++l) y[yi++] = fr(fr(d2 * (b[q + l] >> 4)) - m2);
      q += 32;
      is += 2;
    }
  }
  return y;
}

function dequantQ5_K(b: Uint8Array, k: number): Float32Array {
  const y = new Float32Array(k);
  let yi = 0;
  for (let i = 0; i < k / 256; i++) {
    const o = i * 176;
    const d = h16(b, o);
    const min = h16(b, o + 2);
    let ql = o + 48;
    const qh = o + 16;
    let is = 0;
    let u1 = 1;
    let u2 = 2;
    for (let j = 0; j < 256; j += 64) {
      let [sc, m] = getScaleMinK4(is + 0, b, o + 4);
      const d1 = fr(d * sc);
      const m1 = fr(min * m);
      [sc, m] = getScaleMinK4(is + 1, b, o + 4);
      const d2 = fr(d * sc);
      const m2 = fr(min * m);
      for (let l = 0; l < 32; ++l) y[yi++] = fr(fr(d1 * ((b[ql + l] & 0xf) + (b[qh + l] & u1 ? 16 : 0))) - m1);
      for (let l = 0; l < 32; ++l) y[yi++] = fr(fr(d2 * ((b[ql + l] >> 4) + (b[qh + l] & u2 ? 16 : 0))) - m2);
      ql += 32;
      is += 2;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
  return y;
}

function dequantQ6_K(b: Uint8Array, k: number): Float32Array {
  const y = new Float32Array(k);
  for (let i = 0; i < k / 256; i++) {
    const o = i * 210;
    const d = h16(b, o + 208);
    let ql = o;
    let qh = o + 128;
    let sc = o + 192;
    let yo = i * 256;
    for (let n = 0; n < 256; n += 128) {
      for (let l = 0; l < 32; ++l) {
        const is = Math.floor(l / 16);
        const q1 = i8((b[ql + l] & 0xf) | (((b[qh + l] >> 0) & 3) << 4)) - 32;
        const q2 = i8((b[ql + l + 32] & 0xf) | (((b[qh + l] >> 2) & 3) << 4)) - 32;
        const q3 = i8((b[ql + l] >> 4) | (((b[qh + l] >> 4) & 3) << 4)) - 32;
        const q4 = i8((b[ql + l + 32] >> 4) | (((b[qh + l] >> 6) & 3) << 4)) - 32;
        y[yo + l] = fr(fr(d * i8(b[sc + is])) * q1);
        y[yo + l + 32] = fr(fr(d * i8(b[sc + is + 2])) * q2);
        y[yo + l + 64] = fr(fr(d * i8(b[sc + is + 4])) * q3);
        y[yo + l + 96] = fr(fr(d * i8(b[sc + is + 6])) * q4);
      }
      yo += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
  return y;
}

// ---------------------------------------------------------------------------------------------------------------

/** Random block bytes whose fp16 fields (at the given offsets within each block) are finite. */
function randomBlocks(r: Rng, nBlocks: number, blockBytes: number, halfAt: number[]): Uint8Array {
  const b = new Uint8Array(nBlocks * blockBytes);
  for (let i = 0; i < b.length; i++) b[i] = r.int(256);
  for (let i = 0; i < nBlocks; i++)
    for (const h of halfAt) {
      const v = fp32ToFp16((r.next() - 0.3) * 0.05);
      b[i * blockBytes + h] = v & 0xff;
      b[i * blockBytes + h + 1] = v >> 8;
    }
  return b;
}

/** Loads one tensor through a GGUF file and converts it. */
function viaGguf(type: number, dims: number[], data: Uint8Array): WeightEntry {
  const f = GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims, type, data }]));
  const t = f.info('w');
  const w = ggufTensorToWeight(t, f.bytes('w'));
  expect(w).not.toBeInstanceOf(Float32Array);
  return w as WeightEntry;
}

function expectBitExact(got: Float32Array, want: Float32Array): void {
  expect(got.length).toBe(want.length);
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let mismatches = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) mismatches++;
  expect(mismatches).toBe(0);
}

describe('ggml fp16 reference conversions (test helpers) agree with IEEE', () => {
  it('round trips and rounds to nearest even', () => {
    for (const v of [0, -0, 1, -2.5, 65504, 6.1e-5, 5.96e-8, 1e-10, 70000, 1 + 2 ** -11, 1 + 3 * 2 ** -11]) {
      const h = fp32ToFp16(v);
      expect(fp16ToFp32(h)).toBe(fp16ToFp32(fp32ToFp16(fp16ToFp32(h))));
    }
    expect(fp32ToFp16(1 + 2 ** -11)).toBe(0x3c00); // tie to even
    expect(fp32ToFp16(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(fp32ToFp16(70000)).toBe(0x7c00);
    expect(fp16ToFp32(0x0001)).toBe(2 ** -24);
  });
});

describe('ggml block formats decode bit-exactly to llama.cpp', () => {
  const r = new Rng(42);
  const rows = 3;
  const cols = 256 * 2;
  // weights with varied ranges per block (and an all-zero block: d = 0)
  const x = r.normals(rows * cols, 1).map((v, i) => v * (0.01 + ((i >> 5) % 7)));
  x.fill(0, 64, 96);

  it('Q8_0 (quantize_row_q8_0_ref) → 8-bit signed, group 32', () => {
    const q = quantizeQ8_0(x);
    const w = viaGguf(G.Q8_0, [cols, rows], q);
    expect(w.shape).toEqual([rows, cols]);
    expect(w.encoding).toEqual({ kind: 'quantized', bits: 8, signed: true, groupSize: 32, hasZeroPoint: false, scaleDType: 'f32' });
    expect(w.data.packed.length).toBe(rows * cols);
    expectBitExact(decodeWeight(w), dequantQ8_0(q, rows * cols));
    // and close to the original weights
    const dec = decodeWeight(w);
    for (let i = 0; i < x.length; i++) expect(Math.abs(dec[i] - x[i])).toBeLessThanOrEqual(Math.abs(x[i]) * 0.01 + 0.05 * (0.01 + ((i >> 5) % 7)));
  });

  it('Q4_0 (quantize_row_q4_0_ref) → 4-bit unsigned, group 32, zero point 8, nibbles repacked', () => {
    const q = quantizeQ4_0(x);
    const w = viaGguf(G.Q4_0, [cols, rows], q);
    expect(w.encoding).toEqual({ kind: 'quantized', bits: 4, signed: false, groupSize: 32, hasZeroPoint: true, scaleDType: 'f32' });
    expect(w.data.packed.length).toBe((rows * cols) / 2);
    expect(Array.from(w.data.zeroPoints as Int32Array).every((z) => z === 8)).toBe(true);
    expectBitExact(decodeWeight(w), dequantQ4_0(q, rows * cols));
    // sequential order: element 1 of block 0 is the low nibble of qs[1]; element 17 the high nibble of qs[1]
    const packed = w.data.packed as Uint8Array;
    expect(packed[0] >> 4).toBe(q[3] & 0x0f);
    expect(packed[8] >> 4).toBe(q[3] >> 4);
  });

  it('a single block and the extremes of the nibble range', () => {
    const block = new Uint8Array(18);
    const d = fp32ToFp16(0.5);
    block[0] = d & 0xff;
    block[1] = d >> 8;
    for (let j = 0; j < 16; j++) block[2 + j] = j | ((15 - j) << 4);
    const w = viaGguf(G.Q4_0, [32], block);
    expect(Array.from(decodeWeight(w))).toEqual([...Array.from({ length: 16 }, (_x, j) => (j - 8) * 0.5), ...Array.from({ length: 16 }, (_x, j) => (7 - j) * 0.5)]);
  });

  const cases: { name: string; type: number; bytes: number; block: number; halves: number[]; ref: (b: Uint8Array, k: number) => Float32Array; enc: object }[] = [
    { name: 'Q4_1', type: G.Q4_1, bytes: 20, block: 32, halves: [0, 2], ref: dequantQ4_1, enc: { bits: 4, signed: false, groupSize: 32, hasMin: true } },
    { name: 'Q5_0', type: G.Q5_0, bytes: 22, block: 32, halves: [0], ref: (b, k) => dequantQ5(b, k, false), enc: { bits: 8, signed: true, groupSize: 32 } },
    { name: 'Q5_1', type: G.Q5_1, bytes: 24, block: 32, halves: [0, 2], ref: (b, k) => dequantQ5(b, k, true), enc: { bits: 8, signed: false, groupSize: 32, hasMin: true } },
    { name: 'Q4_K', type: G.Q4_K, bytes: 144, block: 256, halves: [0, 2], ref: dequantQ4_K, enc: { bits: 4, signed: false, groupSize: 32, hasMin: true } },
    { name: 'Q5_K', type: G.Q5_K, bytes: 176, block: 256, halves: [0, 2], ref: dequantQ5_K, enc: { bits: 8, signed: false, groupSize: 32, hasMin: true } },
    { name: 'Q6_K', type: G.Q6_K, bytes: 210, block: 256, halves: [208], ref: dequantQ6_K, enc: { bits: 8, signed: true, groupSize: 16 } },
  ];
  for (const c of cases)
    it(`${c.name} (random blocks) → ${JSON.stringify(c.enc)}`, () => {
      const nBlocks = (rows * cols) / c.block;
      const data = randomBlocks(r, nBlocks, c.bytes, c.halves);
      const w = viaGguf(c.type, [cols, rows], data);
      expect(w.encoding).toMatchObject({ kind: 'quantized', ...c.enc });
      expectBitExact(decodeWeight(w), c.ref(data, rows * cols));
    });

  it('F16 and BF16 become exact float32; F32 stays a view', () => {
    const vals = [1, -2.5, 0.1, 65504, 2 ** -24];
    const h = new Uint16Array(vals.map(fp32ToFp16));
    const f = GgufFile.fromBytes(
      ggufBytes(
        [],
        [
          { name: 'h', dims: [5], type: G.F16, data: new Uint8Array(h.buffer) },
          { name: 'b', dims: [2], type: G.BF16, data: new Uint8Array(new Uint16Array([0x3f80, 0xc0a0]).buffer) },
          { name: 'f', dims: [3], type: G.F32, data: new Uint8Array(new Float32Array([1, 2, 3]).buffer) },
        ],
      ),
    );
    expect(Array.from(ggufTensorToWeight(f.info('h'), f.bytes('h')) as Float32Array)).toEqual(Array.from(h, fp16ToFp32));
    expect(Array.from(ggufTensorToWeight(f.info('b'), f.bytes('b')) as Float32Array)).toEqual([1, -5]);
    const fv = ggufTensorToWeight(f.info('f'), f.bytes('f')) as Float32Array;
    expect(Array.from(fv)).toEqual([1, 2, 3]);
  });

  it('other block types are typed as unsupported', () => {
    const f = GgufFile.fromBytes(ggufBytes([], [{ name: 'q2', dims: [256], type: G.Q2_K, data: new Uint8Array(84) }]));
    expect(() => ggufTensorToWeight(f.info('q2'), f.bytes('q2'))).toThrow(UnsupportedModelError);
  });
});
