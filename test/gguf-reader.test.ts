// The GGUF parser: every metadata value type, alignment, tensor infos; and malformed files → typed errors, fast.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gguf as hfGguf } from '@huggingface/gguf';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelFormatError } from '../src/errors.js';
import { GgufFile, GgufValueType, looksLikeGguf } from '../src/frontends/gguf/index.js';
import { looksLikeSafetensors } from '../src/frontends/safetensors/index.js';
import { Rng } from '../src/util/random.js';
import { f32Bytes, G, ggufBytes, kv, T, type Kv } from './support/write-gguf.js';
import { expectThrown } from './support/expect-thrown.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'tw-gguf-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const allTypes: Kv[] = [
  { key: 'u8', type: T.UINT8, value: 250 },
  { key: 'i8', type: T.INT8, value: -100 },
  { key: 'u16', type: T.UINT16, value: 65000 },
  { key: 'i16', type: T.INT16, value: -30000 },
  { key: 'u32', type: T.UINT32, value: 4000000000 },
  { key: 'i32', type: T.INT32, value: -2000000000 },
  { key: 'f32', type: T.FLOAT32, value: 0.5 },
  { key: 'bool', type: T.BOOL, value: true },
  { key: 'str', type: T.STRING, value: 'héllo ✓' },
  { key: 'u64', type: T.UINT64, value: 2n ** 40n },
  { key: 'u64big', type: T.UINT64, value: 2n ** 63n + 5n },
  { key: 'i64', type: T.INT64, value: -(2n ** 50n) },
  { key: 'f64', type: T.FLOAT64, value: Math.PI },
  { key: 'arr.f32', type: T.ARRAY, arrayType: T.FLOAT32, value: [1.5, -2, 0] },
  { key: 'arr.str', type: T.ARRAY, arrayType: T.STRING, value: ['<s>', '▁the', ''] },
  { key: 'arr.empty', type: T.ARRAY, arrayType: T.INT32, value: [] },
  { key: 'arr.nested', type: T.ARRAY, arrayType: T.ARRAY, value: [{ type: T.UINT8, value: [1, 2] }, { type: T.STRING, value: ['a'] }] },
  kv.str('general.architecture', 'llama'),
];

function expectFormatError(fn: () => unknown, field: RegExp, message?: RegExp): ModelFormatError {
  const e = expectThrown(fn, ModelFormatError);
  expect(e.field).toMatch(field);
  if (message) expect(e.message).toMatch(message);
  return e;
}

/** A valid file with two tensors. */
function good(opts: { alignment?: number; version?: number } = {}): Uint8Array {
  return ggufBytes(
    allTypes,
    [
      { name: 'a', dims: [4, 3], type: G.F32, data: f32Bytes(Array.from({ length: 12 }, (_x, i) => i)) },
      { name: 'b', dims: [32], type: G.Q8_0, data: new Uint8Array(34) },
    ],
    opts,
  );
}

describe('GGUF parser', () => {
  for (const version of [2, 3])
    it(`reads every metadata value type and the tensor infos (v${version})`, () => {
      const f = GgufFile.fromBytes(good({ version }));
      expect(f.version).toBe(version);
      const v = (k: string): unknown => f.get(k);
      expect(v('u8')).toBe(250);
      expect(v('i8')).toBe(-100);
      expect(v('u16')).toBe(65000);
      expect(v('i16')).toBe(-30000);
      expect(v('u32')).toBe(4000000000);
      expect(v('i32')).toBe(-2000000000);
      expect(v('f32')).toBe(0.5);
      expect(v('bool')).toBe(true);
      expect(v('str')).toBe('héllo ✓');
      expect(v('u64')).toBe(2 ** 40);
      expect(v('u64big')).toBe(2n ** 63n + 5n);
      expect(v('i64')).toBe(-(2 ** 50));
      expect(v('f64')).toBe(Math.PI);
      expect(v('arr.f32')).toEqual([1.5, -2, 0]);
      expect(v('arr.str')).toEqual(['<s>', '▁the', '']);
      expect(v('arr.empty')).toEqual([]);
      expect(v('arr.nested')).toEqual([[1, 2], ['a']]);
      expect(f.entry('arr.str')).toMatchObject({ type: GgufValueType.ARRAY, arrayType: GgufValueType.STRING });
      expect(f.getString('general.architecture')).toBe('llama');
      expect(f.getUint('u32')).toBe(4000000000);
      expect(() => f.getUint('i8')).toThrow(ModelFormatError);
      expect(() => f.getString('u8')).toThrow(ModelFormatError);
      expect(f.header.alignment).toBe(32);
      expect(f.header.dataStart % 32).toBe(0);
      const a = f.info('a');
      expect(a).toMatchObject({ dims: [4, 3], shape: [3, 4], numel: 12, byteLength: 48, offset: 0 });
      expect(Array.from(new Float32Array(f.bytes('a').slice().buffer))).toEqual(Array.from({ length: 12 }, (_x, i) => i));
      expect(f.info('b')).toMatchObject({ dims: [32], shape: [32], numel: 32, byteLength: 34, offset: 64 });
      expect(f.tensors.map((t) => t.name)).toEqual(['a', 'b']);
    });

  it('general.alignment is honoured', () => {
    const f = GgufFile.fromBytes(good({ alignment: 256 }));
    expect(f.header.alignment).toBe(256);
    expect(f.header.dataStart % 256).toBe(0);
    expect(f.info('b').offset).toBe(256);
    expect(f.bytes('b').length).toBe(34);
  });

  it('reads from disk', () => {
    const p = path.join(tmp, 'x.gguf');
    writeFileSync(p, good());
    const f = GgufFile.open(p);
    expect(Array.from(new Float32Array(f.bytes('a').buffer))).toEqual(Array.from({ length: 12 }, (_x, i) => i));
    f.close();
  });

  it('agrees with an independent parser (@huggingface/gguf) on the files the test writer makes', async () => {
    const p = path.join(tmp, 'cross.gguf');
    const simple = allTypes.filter((k) => k.key !== 'arr.nested' && k.key !== 'u64big');
    writeFileSync(p, ggufBytes(simple, [
      { name: 'a', dims: [4, 3], type: G.F32, data: f32Bytes(new Array(12).fill(1)) },
      { name: 'q', dims: [64, 2], type: G.Q4_0, data: new Uint8Array(4 * 18) },
      { name: 'k', dims: [256], type: G.Q4_K, data: new Uint8Array(144) },
    ], { alignment: 64 }));
    const theirs = await hfGguf(p, { allowLocalFile: true });
    const mine = GgufFile.open(p);
    try {
      expect(Number(theirs.tensorDataOffset)).toBe(mine.header.dataStart);
      expect(theirs.tensorInfos.map((t) => ({ name: t.name, dims: t.shape.map(Number), type: t.dtype, offset: Number(t.offset) }))).toEqual(
        mine.tensors.map((t) => ({ name: t.name, dims: [...t.dims], type: t.type, offset: t.offset })),
      );
      const meta = theirs.metadata as Record<string, unknown>;
      for (const [key, e] of mine.header.metadata) {
        const v = meta[key];
        expect(typeof v === 'bigint' ? Number(v) : v, key).toEqual(e.value);
      }
    } finally {
      mine.close();
    }
  });

  it('content detection', () => {
    const b = good();
    expect(looksLikeGguf(b)).toBe(true);
    expect(looksLikeSafetensors(b)).toBe(false);
    expect(looksLikeGguf(new Uint8Array([0x47, 0x47, 0x55]))).toBe(false);
    expect(looksLikeGguf(new TextEncoder().encode('GGML....'))).toBe(false);
  });
});

describe('malformed GGUF files', () => {
  const header = (tensorCount: bigint, kvCount: bigint, version = 3): Uint8Array => {
    const b = new Uint8Array(24);
    b.set(new TextEncoder().encode('GGUF'));
    const dv = new DataView(b.buffer);
    dv.setUint32(4, version, true);
    dv.setBigUint64(8, tensorCount, true);
    dv.setBigUint64(16, kvCount, true);
    return b;
  };

  it('bad magic, unsupported versions', () => {
    const b = good();
    b[0] = 0x46;
    expect(expectFormatError(() => GgufFile.fromBytes(b), /magic/).offset).toBe(0);
    expectFormatError(() => GgufFile.fromBytes(new Uint8Array([0x47, 0x47])), /magic/);
    expectFormatError(() => GgufFile.fromBytes(header(0n, 0n, 1)), /version/, /version 1/);
    expectFormatError(() => GgufFile.fromBytes(header(0n, 0n, 0x03000000)), /version/, /big-endian/);
    expectFormatError(() => GgufFile.fromBytes(header(0n, 0n, 7)), /version/, /unknown GGUF version 7/);
  });

  it('impossible tensor and metadata counts fail fast, before allocating', () => {
    const before = process.memoryUsage().arrayBuffers;
    const e = expectFormatError(() => GgufFile.fromBytes(header(2n ** 62n, 0n)), /tensor_count/, /cannot fit/);
    expect(e.offset).toBe(8);
    expectFormatError(() => GgufFile.fromBytes(header(0n, 2n ** 64n - 1n)), /metadata_kv_count/, /cannot fit/);
    expectFormatError(() => GgufFile.fromBytes(header(1000n, 0n)), /tensor_count/);
    // counts that pass the size bound but whose records are not there
    const rec = new Uint8Array(16);
    rec[0] = 100; // a key length past the end
    expectFormatError(() => GgufFile.fromBytes(new Uint8Array([...header(0n, 1n), ...rec])), /metadata\[0\]\.key/, /string length/);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1 << 20); // nothing sized by the claimed counts
  });

  it('strings and arrays longer than the file', () => {
    const b = ggufBytes([kv.str('general.name', 'abc')], []);
    const dv = new DataView(b.buffer);
    // the key's length field sits right after the 24-byte header
    dv.setBigUint64(24, 2n ** 60n, true);
    expectFormatError(() => GgufFile.fromBytes(b), /metadata\[0\]\.key/, /string length/);
    const s = ggufBytes([kv.str('k', 'abc')], []);
    new DataView(s.buffer).setBigUint64(24 + 8 + 1 + 4, 1000n, true); // the value's length
    expectFormatError(() => GgufFile.fromBytes(s), /metadata 'k'/, /string length/);
    const a = ggufBytes([{ key: 'k', type: T.ARRAY, arrayType: T.UINT32, value: [1, 2, 3] }], []);
    new DataView(a.buffer).setBigUint64(24 + 8 + 1 + 4 + 4, 2n ** 40n, true);
    expectFormatError(() => GgufFile.fromBytes(a), /metadata 'k'/, /array length/);
  });

  it('unknown value types, bad bools, duplicate keys, bad alignment', () => {
    const u = ggufBytes([{ key: 'k', type: T.UINT8, value: 1 }], []);
    new DataView(u.buffer).setUint32(24 + 8 + 1, 77, true);
    expectFormatError(() => GgufFile.fromBytes(u), /metadata 'k'/, /unknown value type 77/);
    const bb = ggufBytes([{ key: 'k', type: T.BOOL, value: true }], []);
    bb[24 + 8 + 1 + 4] = 2;
    expectFormatError(() => GgufFile.fromBytes(bb), /metadata 'k'/, /bool/);
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([kv.u32('k', 1), kv.u32('k', 2)], [])), /metadata 'k'/, /duplicate/);
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([kv.u32('general.alignment', 24)], [])), /general\.alignment/, /power of two/);
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([kv.f32('general.alignment', 32)], [])), /general\.alignment/, /uint32/);
  });

  it('unknown tensor types, too many dims, dims that overflow or split a block', () => {
    const d = f32Bytes([1, 2]);
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [2], type: 99, data: d }])), /tensor 'w'/, /unknown ggml tensor type 99/);
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [1, 1, 1, 1, 2], type: G.F32, data: d }])), /tensor 'w'/, /n_dims 5/);
    const big = 2 ** 40;
    const e = expectFormatError(() => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [big, big, big], type: G.F32, data: d }])), /tensor 'w'/, /overflow/);
    expect(e.message).toContain(String(BigInt(big) ** 3n));
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [big], type: G.F32, data: d }])), /tensor 'w'/, /runs past/);
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [48], type: G.Q8_0, data: new Uint8Array(51) }])), /tensor 'w'/, /not a multiple of the Q8_0 block size 32/);
    // found by the file fuzzer: a block type with no dims (one element) was read as 1/32 of a block, 1.0625 bytes
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [], type: G.Q8_0, data: new Uint8Array(34) }])), /tensor 'w'/, /ne\[0\] = 1 \(no dims: a scalar\) is not a multiple of the Q8_0 block size 32/);
    expect(GgufFile.fromBytes(ggufBytes([], [{ name: 's', dims: [], type: G.F32, data: f32Bytes([7]) }])).info('s').byteLength).toBe(4);
    expectFormatError(
      () => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [2], type: G.F32, data: d }, { name: 'w', dims: [2], type: G.F32, data: d }])),
      /tensor 'w'/,
      /duplicate tensor name/,
    );
  });

  it('tensor offsets out of range, misaligned or overlapping; truncated data', () => {
    const d = f32Bytes(Array.from({ length: 16 }, (_x, i) => i));
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [16], type: G.F32, data: d, offset: 2n ** 50n }])), /tensor 'w'/, /beyond/);
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [16], type: G.F32, data: d, offset: 64n }])), /tensor 'w'/, /runs past/);
    expectFormatError(() => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [16], type: G.F32, data: d, offset: 4n }])), /tensor 'w'/, /not a multiple of the alignment 32/);
    expectFormatError(
      () => GgufFile.fromBytes(ggufBytes([], [{ name: 'w', dims: [16], type: G.F32, data: d }, { name: 'v', dims: [16], type: G.F32, data: d, offset: 32n }])),
      /tensor 'v'/,
      /overlaps tensor 'w'/,
    );
    const full = ggufBytes([], [{ name: 'w', dims: [16], type: G.F32, data: d }]);
    const e = expectFormatError(() => GgufFile.fromBytes(full.subarray(0, full.length - 8)), /tensor 'w'/, /truncated/);
    expect(e.offset).toBeGreaterThan(24);
  });

  it('every truncation and random corruption is a ModelFormatError (never a RangeError or a hang)', () => {
    const b = good();
    for (let n = 0; n < b.length; n += 3) {
      try {
        GgufFile.fromBytes(b.subarray(0, n));
        // a cut in the padding after the last tensor can still be a valid file
        expect(n).toBeGreaterThan(b.length - 64);
      } catch (e) {
        expect(e).toBeInstanceOf(ModelFormatError);
      }
    }
    const r = new Rng(3);
    for (let trial = 0; trial < 300; trial++) {
      const c = b.slice();
      for (let k = 0; k < 3; k++) c[r.int(Math.min(c.length, 400))] = r.int(256);
      try {
        GgufFile.fromBytes(c);
      } catch (e) {
        expect(e).toBeInstanceOf(ModelFormatError);
      }
    }
  });
});
