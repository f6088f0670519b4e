import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelFormatError } from '../src/errors.js';
import {
  LLAMA2C_HEADER_BYTES,
  looksLikeLlama2cCheckpoint,
  parseLlama2cCheckpoint,
  readLlama2cCheckpoint,
  type Llama2cConfig,
} from '../src/frontends/llama2c/index.js';
import { expectThrown } from './support/expect-thrown.js';
import { requiredPresent } from './support/shared.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(repoRoot, '../shared');
const hasShared = requiredPresent(shared);
if (!hasShared) console.log(`llama2c-checkpoint tests on real models skipped: test data directory ${shared} (../shared) is absent`);

const stories = path.join(shared, 'models/stories260K/stories260K.bin');
const baby = path.join(shared, 'models/babyllama105/model5000.bin');

function readBytes(p: string): Uint8Array {
  const b = readFileSync(p);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Header as 7 int32s: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len. */
type Header = [number, number, number, number, number, number, number];

function withHeader(bytes: Uint8Array, edits: Partial<Record<number, number>>): Uint8Array {
  const b = bytes.slice();
  const dv = new DataView(b.buffer);
  for (const [i, v] of Object.entries(edits)) dv.setInt32(4 * Number(i), v as number, true);
  return b;
}

/** Float count of the body for a header (legacy RoPE tables included). */
function bodyFloats([dim, hidden, layers, heads, kv, vocab, seq]: Header): number {
  const kvDim = (dim * kv) / heads;
  const headSize = dim / heads;
  const v = Math.abs(vocab);
  return (
    v * dim +
    layers * (2 * dim + 2 * dim * dim + 2 * kvDim * dim + 3 * dim * hidden) +
    dim +
    2 * Math.floor((seq * headSize) / 2) +
    (vocab < 0 ? v * dim : 0)
  );
}

/** A synthetic checkpoint whose float i is `i + 0.5` (so every tensor's position can be checked). */
function synthetic(h: Header): Uint8Array {
  const n = bodyFloats(h);
  const out = new Uint8Array(LLAMA2C_HEADER_BYTES + 4 * n);
  const dv = new DataView(out.buffer);
  h.forEach((v, i) => dv.setInt32(4 * i, v, true));
  for (let i = 0; i < n; i++) dv.setFloat32(LLAMA2C_HEADER_BYTES + 4 * i, i + 0.5, true);
  return out;
}

function expectFormatError(fn: () => unknown, field: string, offset: number, message?: RegExp): ModelFormatError {
  const e = expectThrown(fn, ModelFormatError);
  expect(e.field).toBe(field);
  expect(e.offset).toBe(offset);
  expect(e.code).toBe('BAD_MODEL_FILE');
  expect(e.message).toContain(`${field} at byte offset ${offset}`);
  if (message) expect(e.message).toMatch(message);
  return e;
}

describe('synthetic llama2.c checkpoints (no test data needed)', () => {
  const header: Header = [8, 12, 2, 2, 1, -10, 4]; // separate classifier
  let tmp: string;
  beforeAll(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'tw-llama2c-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('reads a checkpoint with a separate classifier (vocab_size < 0) written to disk', async () => {
    const bytes = synthetic(header);
    const file = path.join(tmp, 'sep.bin');
    writeFileSync(file, bytes);
    const { config, weights: w } = await readLlama2cCheckpoint(file);
    const expected: Llama2cConfig = {
      dim: 8,
      hiddenDim: 12,
      nLayers: 2,
      nHeads: 2,
      nKvHeads: 1,
      vocabSize: 10,
      seqLen: 4,
      sharedClassifier: false,
      headSize: 4,
      kvDim: 4,
    };
    expect(config).toEqual(expected);
    expect(looksLikeLlama2cCheckpoint(bytes)).toBe(true);
    // Walk the layout by hand: float index -> value i + 0.5.
    let i = 0;
    const expectAt = (a: Float32Array, len: number): void => {
      expect(a.length).toBe(len);
      expect(a[0]).toBe(i + 0.5);
      expect(a[len - 1]).toBe(i + len - 1 + 0.5);
      i += len;
    };
    expectAt(w.tokenEmbedding, 80);
    for (const [arr, len] of [
      [w.rmsAtt, 8],
      [w.wq, 64],
      [w.wk, 32],
      [w.wv, 32],
      [w.wo, 64],
      [w.rmsFfn, 8],
      [w.w1, 96],
      [w.w2, 96],
      [w.w3, 96],
    ] as const) {
      expect(arr.length).toBe(2);
      for (const a of arr) expectAt(a, len);
    }
    expectAt(w.rmsFinal, 8);
    i += 2 * ((4 * 4) / 2); // RoPE tables
    expectAt(w.wcls, 80);
    expect(LLAMA2C_HEADER_BYTES + 4 * i).toBe(bytes.byteLength);
    expect(w.wcls).not.toBe(w.tokenEmbedding);
  });

  it('reports a missing classifier', () => {
    const bytes = synthetic(header);
    const wclsOffset = bytes.byteLength - 4 * 80;
    const e = expectFormatError(() => parseLlama2cCheckpoint(bytes.subarray(0, wclsOffset), 'sep.bin'), 'wcls', wclsOffset);
    expect(e.message).toContain(`file is ${wclsOffset} bytes but the header implies ${bytes.byteLength} bytes`);
    expect(e.file).toBe('sep.bin');
  });

  it('hints at a missing minus sign when a shared-classifier header has a classifier appended', () => {
    const bytes = withHeader(synthetic(header), { 5: 10 });
    const e = expectFormatError(() => parseLlama2cCheckpoint(bytes), 'trailing data', bytes.byteLength - 320);
    expect(e.message).toMatch(/vocab_size be negative/);
  });

  it('copies when the buffer is not 4-byte aligned, and gives views when it is', () => {
    const bytes = synthetic(header);
    const padded = new Uint8Array(bytes.byteLength + 1);
    padded.set(bytes, 1);
    const unaligned = parseLlama2cCheckpoint(padded.subarray(1));
    const aligned = parseLlama2cCheckpoint(bytes);
    expect(aligned.weights.wq[1].buffer).toBe(bytes.buffer);
    expect(unaligned.weights.wq[1].buffer).not.toBe(padded.buffer);
    expect(Array.from(unaligned.weights.wq[1])).toEqual(Array.from(aligned.weights.wq[1]));
    expect(Array.from(unaligned.weights.wcls)).toEqual(Array.from(aligned.weights.wcls));
  });

  it('rejects a header whose heads do not divide', () => {
    expectFormatError(() => parseLlama2cCheckpoint(withHeader(synthetic(header), { 3: 3 })), 'header.n_heads', 12, /not divisible/);
  });

  it('fails fast, without allocating, on a header claiming a giant model', () => {
    const h = new Uint8Array(64);
    const dv = new DataView(h.buffer);
    [2 ** 30, 2 ** 31 - 1, 2 ** 30, 2 ** 20, 2 ** 10, -(2 ** 31), 2 ** 31 - 1].forEach((v, i) => dv.setInt32(4 * i, v, true));
    const before = process.memoryUsage().arrayBuffers;
    const e = expectFormatError(() => parseLlama2cCheckpoint(h), 'token_embedding_table', 28, /header implies/);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1 << 20);
    expect(e.message).toContain('file is 64 bytes');
    expect(looksLikeLlama2cCheckpoint(h)).toBe(false);
  });

  it('throws only ModelFormatError on random headers and lengths, and agrees with looksLikeLlama2cCheckpoint', () => {
    const small = fc.integer({ min: -4, max: 16 });
    const any32 = fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });
    fc.assert(
      fc.property(
        fc.array(fc.oneof(small, any32), { minLength: 7, maxLength: 7 }),
        fc.nat({ max: 40000 }),
        (h, extra) => {
          const bytes = new Uint8Array(extra);
          const dv = new DataView(bytes.buffer);
          h.forEach((v, i) => {
            if (4 * i + 4 <= bytes.byteLength) dv.setInt32(4 * i, v, true);
          });
          let ok = true;
          try {
            parseLlama2cCheckpoint(bytes);
          } catch (e) {
            ok = false;
            expect(e).toBeInstanceOf(ModelFormatError);
          }
          expect(looksLikeLlama2cCheckpoint(bytes)).toBe(ok);
        },
      ),
      { numRuns: 500 },
    );
    // Valid synthetic files of random small shapes parse, and every truncation of one is rejected.
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 2 }),
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 5 }),
        fc.boolean(),
        fc.nat(),
        (kvHeads, group, headHalf, hidden, layers, vocab, separate, cutSeed) => {
          const heads = kvHeads * group;
          const dim = heads * headHalf * 2;
          const h: Header = [dim, hidden, layers, heads, kvHeads, separate ? -vocab : vocab, 3];
          const bytes = synthetic(h);
          const { config } = parseLlama2cCheckpoint(bytes);
          expect(config.kvDim * config.nHeads).toBe(dim * kvHeads);
          const cut = cutSeed % bytes.byteLength;
          expect(() => parseLlama2cCheckpoint(bytes.subarray(0, cut))).toThrow(ModelFormatError);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('looksLikeLlama2cCheckpoint never throws', () => {
    expect(looksLikeLlama2cCheckpoint(new Uint8Array(0))).toBe(false);
    expect(looksLikeLlama2cCheckpoint(new Uint8Array(100))).toBe(false);
    expect(looksLikeLlama2cCheckpoint(new Uint8Array(100).fill(0xff))).toBe(false);
  });
});

describe.skipIf(!hasShared)('real llama2.c checkpoints', () => {
  let bytes: Uint8Array;
  beforeAll(() => {
    bytes = readBytes(stories);
  });

  it('parses stories260K', async () => {
    const { config, weights } = await readLlama2cCheckpoint(stories);
    expect(config).toEqual({
      dim: 64,
      hiddenDim: 172,
      nLayers: 5,
      nHeads: 8,
      nKvHeads: 4,
      vocabSize: 512,
      seqLen: 512,
      sharedClassifier: true,
      headSize: 8,
      kvDim: 32,
    });
    expect(bytes.byteLength).toBe(1056540);
    expect(looksLikeLlama2cCheckpoint(bytes)).toBe(true);
    expect(weights.wcls).toBe(weights.tokenEmbedding);
    expect(weights.tokenEmbedding.length).toBe(512 * 64);
    expect(weights.wq).toHaveLength(5);
    expect(weights.wk[0].length).toBe(32 * 64);
    expect(weights.w2[4].length).toBe(64 * 172);
    expect(weights.rmsFinal.length).toBe(64);

    // Spot checks against manual DataView reads at offsets computed from the layout.
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const f = (floatIndex: number): number => dv.getFloat32(28 + 4 * floatIndex, true);
    const emb = 512 * 64;
    const L = 5;
    expect(weights.tokenEmbedding[3 * 64 + 7]).toBe(f(3 * 64 + 7));
    expect(weights.rmsAtt[2][5]).toBe(f(emb + 2 * 64 + 5));
    const wqStart = emb + L * 64;
    expect(weights.wq[2][10 * 64 + 3]).toBe(f(wqStart + 2 * 64 * 64 + 10 * 64 + 3));
    const wkStart = wqStart + L * 64 * 64;
    const wvStart = wkStart + L * 32 * 64;
    expect(weights.wv[4][31 * 64 + 63]).toBe(f(wvStart + 4 * 32 * 64 + 31 * 64 + 63));
    const rmsFinalStart = wvStart + L * 32 * 64 + L * 64 * 64 + L * 64 + 3 * L * 172 * 64;
    expect(weights.rmsFinal[63]).toBe(f(rmsFinalStart + 63));
    expect(weights.rmsFinal[0]).not.toBe(0);
    expect(28 + 4 * (rmsFinalStart + 64 + 2 * ((512 * 8) / 2))).toBe(1056540);
  });

  it('parses babyllama105', async () => {
    const { config, weights } = await readLlama2cCheckpoint(baby);
    expect(config).toMatchObject({ dim: 128, hiddenDim: 352, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 105, seqLen: 256 });
    expect(config.kvDim).toBe(64);
    expect(config.headSize).toBe(16);
    expect(weights.w1[4].length).toBe(352 * 128);
    const b = readBytes(baby);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    expect(weights.tokenEmbedding[104 * 128 + 127]).toBe(dv.getFloat32(28 + 4 * (105 * 128 - 1), true));
  });

  it('rejects truncation inside the header, naming the field cut', () => {
    expectFormatError(() => parseLlama2cCheckpoint(bytes.subarray(0, 0)), 'header.dim', 0, /shorter than the 28-byte/);
    expectFormatError(() => parseLlama2cCheckpoint(bytes.subarray(0, 18)), 'header.n_kv_heads', 16);
    expectFormatError(() => parseLlama2cCheckpoint(bytes.subarray(0, 27)), 'header.seq_len', 24);
  });

  it('rejects truncation inside a tensor, naming the tensor, its layer and offset', () => {
    const wqStart = 28 + 4 * (512 * 64 + 5 * 64);
    const wq2 = wqStart + 2 * 4 * 64 * 64;
    const e = expectFormatError(() => parseLlama2cCheckpoint(bytes.subarray(0, wq2 + 100), 'stories260K.bin'), 'wq[2]', wq2);
    expect(e.message).toContain(`file is ${wq2 + 100} bytes but the header implies 1056540 bytes`);
    expectFormatError(() => parseLlama2cCheckpoint(bytes.subarray(0, 28 + 4)), 'token_embedding_table', 28);
    expectFormatError(() => parseLlama2cCheckpoint(bytes.subarray(0, 1056540 - 4)), 'freq_cis_imag', 1056540 - 4 * 2048);
    expectFormatError(() => parseLlama2cCheckpoint(bytes.subarray(0, 1056540 - 2 * 4 * 2048 - 4)), 'rms_final_weight', 1056540 - 2 * 4 * 2048 - 4 * 64);
  });

  it('rejects bad header values, naming the field and its offset', () => {
    expectFormatError(() => parseLlama2cCheckpoint(withHeader(bytes, { 0: 0 })), 'header.dim', 0, /must be positive, got 0/);
    expectFormatError(() => parseLlama2cCheckpoint(withHeader(bytes, { 2: -5 })), 'header.n_layers', 8, /must be positive, got -5/);
    expectFormatError(() => parseLlama2cCheckpoint(withHeader(bytes, { 5: 0 })), 'header.vocab_size', 20);
    expectFormatError(() => parseLlama2cCheckpoint(withHeader(bytes, { 6: -1 })), 'header.seq_len', 24);
    expectFormatError(() => parseLlama2cCheckpoint(withHeader(bytes, { 3: 7 })), 'header.n_heads', 12, /dim 64 is not divisible by n_heads 7/);
    expectFormatError(() => parseLlama2cCheckpoint(withHeader(bytes, { 4: 3 })), 'header.n_kv_heads', 16, /n_heads 8 is not divisible by n_kv_heads 3/);
    expectFormatError(() => parseLlama2cCheckpoint(withHeader(bytes, { 4: 16 })), 'header.n_kv_heads', 16);
    for (const edit of [{ 0: 0 }, { 2: -5 }, { 3: 7 }, { 1: 173 }]) expect(looksLikeLlama2cCheckpoint(withHeader(bytes, edit))).toBe(false);
  });

  it('rejects extra trailing bytes', () => {
    const longer = new Uint8Array(bytes.byteLength + 3);
    longer.set(bytes);
    const e = expectFormatError(() => parseLlama2cCheckpoint(longer), 'trailing data', 1056540);
    expect(e.message).toContain('file is 1056543 bytes but the header implies 1056540 bytes');
    expect(looksLikeLlama2cCheckpoint(longer)).toBe(false);
  });

  it('rejects a header that does not match the body size', () => {
    // dim 128 instead of 64: embedding 65536 floats, rms_att 640, wq 81920, wk 40960, wv 40960, then wo (16384 per
    // layer) starts at float 230016; 264128 floats are in the file, so wo[0] and wo[1] fit and wo[2] does not.
    const e = expectFormatError(() => parseLlama2cCheckpoint(withHeader(bytes, { 0: 128 })), 'wo[2]', 28 + 4 * (230016 + 2 * 16384));
    expect(e.message).toMatch(/file is 1056540 bytes but the header implies \d+ bytes; tensor wo\[2\]/);
  });
});
