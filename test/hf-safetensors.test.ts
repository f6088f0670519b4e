import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError, ModelFormatError } from '../src/errors.js';
import { UnsupportedModelError } from '../src/frontends/hf/errors.js';
import {
  looksLikeSafetensors,
  parseSafetensorsIndex,
  SafetensorsCheckpoint,
  SafetensorsFile,
} from '../src/frontends/safetensors/index.js';
import { bf16ToFloat, floatToBf16, roundAs, safetensorsBytes, writeHfFolder, writeSafetensors, type TensorToWrite } from './support/write-safetensors.js';
import { Rng } from '../src/util/random.js';
import { expectThrown } from './support/expect-thrown.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'tw-safetensors-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const rng = new Rng(5);
const a = rng.normals(6 * 5, 1);
const b = rng.normals(7, 3);
const tensors: TensorToWrite[] = [
  { name: 'a.f32', shape: [6, 5], values: a },
  { name: 'b.f16', shape: [7], values: b, dtype: 'F16' },
  { name: 'c.bf16', shape: [2, 3], values: a.subarray(0, 6), dtype: 'BF16' },
  { name: 'd.i32', shape: [3], values: [-5, 0, 2147483647], dtype: 'I32' },
  { name: 'e.i64', shape: [2], values: [-3, 2 ** 40], dtype: 'I64' },
  { name: 'f.u8', shape: [3], values: [0, 7, 255], dtype: 'U8' },
  { name: 'g.empty', shape: [0, 4], values: [] },
];

/** Expects a ModelFormatError whose field and message match. */
function expectFormatError(fn: () => unknown, field: RegExp, message?: RegExp): ModelFormatError {
  const e = expectThrown(fn, ModelFormatError);
  expect(e.code).toBe('BAD_MODEL_FILE');
  expect(e.field).toMatch(field);
  if (message) expect(e.message).toMatch(message);
  return e;
}

/** A file whose JSON header is replaced, keeping the given data section. */
function withHeader(header: unknown, data: Uint8Array): Uint8Array {
  const text = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return out;
}

describe('safetensors reader', () => {
  const bytes = safetensorsBytes(tensors, { metadata: { format: 'pt', note: 'hi' } });
  const f = SafetensorsFile.fromBytes(bytes, 'x.safetensors');

  it('reads every dtype back', () => {
    expect(f.names().sort()).toEqual(tensors.map((t) => t.name).sort());
    expect(f.header.metadata).toEqual({ format: 'pt', note: 'hi' });
    expect(Array.from(f.float32('a.f32'))).toEqual(Array.from(a));
    expect(Array.from(f.float32('b.f16'))).toEqual(Array.from(roundAs(b, 'F16')));
    expect(Array.from(f.float32('c.bf16'))).toEqual(Array.from(roundAs(a.subarray(0, 6), 'BF16')));
    expect(Array.from(f.values('d.i32') as Int32Array)).toEqual([-5, 0, 2147483647]);
    expect(Array.from(f.values('e.i64') as BigInt64Array)).toEqual([-3n, 2n ** 40n]);
    expect(Array.from(f.float32('e.i64'))).toEqual([-3, 2 ** 40]);
    expect(Array.from(f.values('f.u8') as Uint8Array)).toEqual([0, 7, 255]);
    expect(f.info('g.empty')).toMatchObject({ shape: [0, 4], numel: 0, byteLength: 0 });
    expect(f.float32('g.empty').length).toBe(0);
    expect(f.info('a.f32')).toMatchObject({ dtype: 'F32', shape: [6, 5], numel: 30, byteLength: 120 });
  });

  it('returns zero-copy views of aligned F32 data, and copies when unaligned', () => {
    const v = f.float32('a.f32');
    expect(v.buffer).toBe(bytes.buffer);
    // a header length that leaves the data section 1 byte off 4-alignment
    let text = '{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}';
    while ((8 + text.length) % 4 !== 1) text += ' ';
    const odd = safetensorsBytes([{ name: 'x', shape: [3], values: [1, 2, 3] }], { align: 1, headerText: text });
    expect((8 + new DataView(odd.buffer).getUint32(0, true)) % 4).not.toBe(0);
    const g = SafetensorsFile.fromBytes(odd);
    expect(Array.from(g.float32('x'))).toEqual([1, 2, 3]);
    // and a file whose bytes sit at an odd offset in a larger buffer
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    const h = SafetensorsFile.fromBytes(shifted.subarray(1));
    expect(Array.from(h.float32('a.f32'))).toEqual(Array.from(a));
    expect(Array.from(h.float32('b.f16'))).toEqual(Array.from(roundAs(b, 'F16')));
  });

  it('bf16 values are the stored bits as the top half of a float32', () => {
    const bits = [0x3f80, 0xc020, 0x7f80, 0xff80, 0x0001, 0x8000, 0x4049, 0x7f7f];
    const data = new Uint8Array(new Uint16Array(bits).buffer);
    const g = SafetensorsFile.fromBytes(withHeader({ x: { dtype: 'BF16', shape: [bits.length], data_offsets: [0, data.length] } }, data));
    const want = new Float32Array(new Uint32Array(bits.map((h) => h << 16)).buffer);
    expect(Array.from(g.float32('x'))).toEqual(Array.from(want));
    expect(Array.from(g.values('x') as Uint16Array)).toEqual(bits);
    // the test writer rounds to nearest even, as torch does
    expect(floatToBf16(1 + 2 ** -8)).toBe(0x3f80);
    expect(floatToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(bf16ToFloat(floatToBf16(3.140625))).toBe(3.140625);
  });

  it('reads files from disk on demand', () => {
    const p = path.join(tmp, 'disk.safetensors');
    writeSafetensors(p, tensors);
    const d = SafetensorsFile.open(p);
    try {
      expect(Array.from(d.float32('a.f32'))).toEqual(Array.from(a));
      expect(Array.from(d.float32('c.bf16'))).toEqual(Array.from(roundAs(a.subarray(0, 6), 'BF16')));
    } finally {
      d.close();
    }
    expect(() => d.float32('a.f32')).toThrow(InputError);
  });

  it('detects safetensors by content', () => {
    expect(looksLikeSafetensors(bytes)).toBe(true);
    expect(looksLikeSafetensors(bytes.subarray(0, 10))).toBe(true);
    expect(looksLikeSafetensors(new TextEncoder().encode('GGUF\x03\x00\x00\x00........'))).toBe(false);
    expect(looksLikeSafetensors(new Uint8Array(16))).toBe(false);
    expect(looksLikeSafetensors(new Uint8Array(4))).toBe(false);
  });

  it('float8 tensors are reported as unsupported', () => {
    const data = new Uint8Array(2);
    const g = SafetensorsFile.fromBytes(withHeader({ x: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, data));
    expect(() => g.float32('x')).toThrow(UnsupportedModelError);
  });
});

describe('safetensors validation', () => {
  const good = safetensorsBytes([
    { name: 'w', shape: [2, 3], values: [1, 2, 3, 4, 5, 6] },
    { name: 'v', shape: [2], values: [7, 8] },
  ]);
  const dataOf = (n: number): Uint8Array => new Uint8Array(n);

  it('accepts the well-formed file', () => {
    expect(SafetensorsFile.fromBytes(good).names()).toEqual(['w', 'v']);
  });

  it('a header length larger than the file', () => {
    const bad = good.slice();
    new DataView(bad.buffer).setBigUint64(0, BigInt(good.length), true);
    const e = expectFormatError(() => SafetensorsFile.fromBytes(bad, 'bad.safetensors'), /header length/, /larger than/);
    expect(e.offset).toBe(0);
    expect(e.file).toBe('bad.safetensors');
    const huge = good.slice();
    new DataView(huge.buffer).setBigUint64(0, 2n ** 63n, true);
    expectFormatError(() => SafetensorsFile.fromBytes(huge), /header length/);
  });

  it('files shorter than 8 bytes, and truncated files', () => {
    expectFormatError(() => SafetensorsFile.fromBytes(new Uint8Array(5)), /header length/, /shorter than/);
    // cut in the data section: the last tensor's offsets run past the end
    const e = expectFormatError(() => SafetensorsFile.fromBytes(good.subarray(0, good.length - 3)), /tensor 'v'\.data_offsets/, /outside|truncated/);
    expect(e.offset).toBeGreaterThan(8);
    // cut in the header
    expectFormatError(() => SafetensorsFile.fromBytes(good.subarray(0, 20)), /header length/);
  });

  it('JSON that does not parse, is not an object, or is not UTF-8', () => {
    expectFormatError(() => SafetensorsFile.fromBytes(safetensorsBytes([], { headerText: '{"w": {"dtype": "F32",' })), /header/, /not valid JSON/);
    expectFormatError(() => SafetensorsFile.fromBytes(safetensorsBytes([], { headerText: '[1, 2]' })), /header/, /start with '\{'/);
    const raw = new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d, 0x20]);
    const bad = new Uint8Array(16);
    new DataView(bad.buffer).setBigUint64(0, 8n, true);
    bad.set(raw, 8);
    expectFormatError(() => SafetensorsFile.fromBytes(bad), /header/, /UTF-8/);
  });

  it('offsets out of range, reversed, or not matching dtype × shape', () => {
    expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 64] } }, dataOf(8))), /tensor 'w'\.data_offsets/, /outside/);
    expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, dataOf(8))), /tensor 'w'\.data_offsets/, /before begin/);
    const e = expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, dataOf(8))), /tensor 'w'/, /needs 12/);
    expect(e.message).toContain("tensor 'w'");
    expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'F32', shape: [2], data_offsets: [0, -8] } }, dataOf(8))), /data_offsets/);
    expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'F32', shape: [2], data_offsets: [0] } }, dataOf(8))), /data_offsets/);
  });

  it('overlapping tensors, holes and trailing bytes', () => {
    const overlap = withHeader(
      { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, v: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
      dataOf(12),
    );
    expectFormatError(() => SafetensorsFile.fromBytes(overlap), /tensor 'v'/, /overlaps tensor 'w'/);
    const hole = withHeader({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, v: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, dataOf(12));
    expectFormatError(() => SafetensorsFile.fromBytes(hole), /tensor 'v'/, /belong to no tensor/);
    const trailing = withHeader({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, dataOf(12));
    const e = expectFormatError(() => SafetensorsFile.fromBytes(trailing), /data/, /trailing/);
    expect(e.offset).toBeGreaterThan(8);
  });

  it('dims whose product overflows are rejected before anything is allocated', () => {
    const big = 2 ** 40;
    const e = expectFormatError(
      () => SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'F32', shape: [big, big, big], data_offsets: [0, 8] } }, dataOf(8))),
      /tensor 'w'\.shape/,
      /needs \d+ bytes, more than/,
    );
    expect(e.message).toContain(String(BigInt(big) ** 3n * 4n));
    expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'F32', shape: [2 ** 60], data_offsets: [0, 8] } }, dataOf(8))), /shape/);
    expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'F32', shape: [-1, 2], data_offsets: [0, 8] } }, dataOf(8))), /shape/);
    expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 8] } }, dataOf(8))), /shape/);
    // a zero dim next to a huge one is a valid empty tensor
    expect(SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'F32', shape: [big, 0], data_offsets: [0, 0] } }, dataOf(0))).info('w').numel).toBe(0);
  });

  it('unknown dtypes and bad metadata', () => {
    expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ w: { dtype: 'Q4', shape: [2], data_offsets: [0, 8] } }, dataOf(8))), /tensor 'w'\.dtype/, /unknown dtype/);
    expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ __metadata__: { a: 1 } }, dataOf(0))), /__metadata__\.a/);
    expectFormatError(() => SafetensorsFile.fromBytes(withHeader({ w: [1, 2] }, dataOf(0))), /tensor 'w'/);
  });

  it('asking for a tensor that is not there', () => {
    expectFormatError(() => SafetensorsFile.fromBytes(good).float32('nope'), /tensor 'nope'/, /no such tensor/);
  });
});

describe('sharded checkpoints', () => {
  const t: TensorToWrite[] = Array.from({ length: 5 }, (_x, i) => ({ name: `t${i}`, shape: [2, i + 1], values: rng.normals(2 * (i + 1), 1), dtype: i % 2 ? 'BF16' : 'F32' }));

  it('reads tensors across shards through the index', () => {
    const dir = path.join(tmp, 'sharded');
    writeHfFolder(dir, { model_type: 'none' }, t, { shards: 3 });
    const ck = SafetensorsCheckpoint.open(dir);
    try {
      expect(ck.index).toBeDefined();
      expect(ck.files.length).toBe(3);
      expect(ck.names().sort()).toEqual(t.map((x) => x.name).sort());
      for (const x of t) expect(Array.from(ck.float32(x.name))).toEqual(Array.from(roundAs(x.values, x.dtype ?? 'F32')));
      expect(ck.dataBytes).toBe(t.reduce((n, x) => n + x.values.length * (x.dtype === 'BF16' ? 2 : 4), 0));
    } finally {
      ck.close();
    }
  });

  it('a single-file folder', () => {
    const dir = path.join(tmp, 'single');
    writeHfFolder(dir, { model_type: 'none' }, t);
    const ck = SafetensorsCheckpoint.open(dir);
    expect(ck.index).toBeUndefined();
    expect(ck.names().length).toBe(5);
    ck.close();
  });

  it('index errors: missing shard, tensor not in its shard, paths outside the folder, bad JSON', () => {
    const dir = path.join(tmp, 'bad-index');
    mkdirSync(dir, { recursive: true });
    writeSafetensors(path.join(dir, 'a.safetensors'), t.slice(0, 2));
    const idx = path.join(dir, 'model.safetensors.index.json');
    writeFileSync(idx, JSON.stringify({ weight_map: { t0: 'a.safetensors', t1: 'b.safetensors' } }));
    expectFormatError(() => SafetensorsCheckpoint.open(dir), /weight_map\['t1'\]/, /does not exist/);
    writeFileSync(idx, JSON.stringify({ weight_map: { t0: 'a.safetensors', t3: 'a.safetensors' } }));
    expectFormatError(() => SafetensorsCheckpoint.open(dir), /weight_map\['t3'\]/, /has no tensor/);
    writeFileSync(idx, JSON.stringify({ weight_map: { t0: '../a.safetensors' } }));
    expectFormatError(() => SafetensorsCheckpoint.open(dir), /weight_map\['t0'\]/, /outside/);
    writeFileSync(idx, '{"weight_map": ');
    expectFormatError(() => SafetensorsCheckpoint.open(dir), /index/, /JSON/);
    expectFormatError(() => parseSafetensorsIndex('{"weight_map": [1]}'), /weight_map/);
    expectFormatError(() => parseSafetensorsIndex('{"weight_map": {"x": 3}}'), /weight_map\['x'\]/);
  });

  it('shards are checked through symbolic links: a link out of the folder is refused, a hub snapshot\'s blob links are not', () => {
    const outside = path.join(tmp, 'outside');
    mkdirSync(outside, { recursive: true });
    writeSafetensors(path.join(outside, 'secret.safetensors'), t.slice(0, 2));
    const dir = path.join(tmp, 'link-out');
    mkdirSync(dir, { recursive: true });
    symlinkSync(path.join(outside, 'secret.safetensors'), path.join(dir, 'a.safetensors'));
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { t0: 'a.safetensors' } }));
    expectFormatError(() => SafetensorsCheckpoint.open(dir), /weight_map\['t0'\]/, /symbolic link.*outside the checkpoint folder/);
    // a link to a file inside the folder is fine, and so is the hub cache layout (snapshots/<rev>/x -> ../../blobs/<hash>)
    const repo = path.join(tmp, 'models--org--tiny');
    mkdirSync(path.join(repo, 'blobs'), { recursive: true });
    const snap = path.join(repo, 'snapshots', 'abc123');
    mkdirSync(snap, { recursive: true });
    writeSafetensors(path.join(repo, 'blobs', 'f00d'), t.slice(0, 2));
    symlinkSync('../../blobs/f00d', path.join(snap, 'a.safetensors'));
    writeFileSync(path.join(snap, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { t0: 'a.safetensors', t1: 'a.safetensors' } }));
    const ck = SafetensorsCheckpoint.open(snap);
    expect(ck.names().sort()).toEqual(['t0', 't1']);
    ck.close();
  });

  it('a folder without weights', () => {
    const dir = path.join(tmp, 'empty');
    mkdirSync(dir, { recursive: true });
    expect(() => SafetensorsCheckpoint.open(dir)).toThrow(InputError);
  });
});
