import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { InputError, ModelFormatError } from '../src/errors.js';
import { Llama2cTokenizer } from '../src/frontends/llama2c/index.js';
import { expectThrown } from './support/expect-thrown.js';
import { requiredPresent } from './support/shared.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(repoRoot, '../shared');
const hasShared = requiredPresent(shared);
if (!hasShared) console.log(`llama2c-tokenizer tests skipped: test data directory ${shared} (../shared) is absent`);

const models = path.join(shared, 'models');
const goldenDir = path.join(shared, 'golden/stories260K');

interface EncodeCase {
  prompt: string;
  expected_tokens: number[];
}
interface Golden {
  prompt: string;
  prompt_ids: number[];
  generated_ids: number[];
  text: string;
}

function readBytes(p: string): Uint8Array {
  const b = readFileSync(p);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** A literal port of run.c's encode (quadratic merge loop), to check the heap-based encoder against. */
const referenceTables = new WeakMap<Llama2cTokenizer, { keys: string[]; lookup: Map<string, number> }>();
function referenceEncode(t: Llama2cTokenizer, text: string): number[] {
  let tables = referenceTables.get(t);
  if (!tables) {
    const keys = Array.from({ length: t.vocabSize }, (_, i) => Buffer.from(t.piece(i), 'utf8').toString('latin1'));
    const lookup = new Map<string, number>();
    for (let i = t.vocabSize - 1; i >= 0; i--) lookup.set(keys[i], i);
    tables = { keys, lookup };
    referenceTables.set(t, tables);
  }
  const { keys, lookup } = tables;
  const tokens = [1];
  if (text.length > 0) tokens.push(lookup.get(' ') ?? -1);
  for (const ch of text) {
    const id = lookup.get(Buffer.from(ch, 'utf8').toString('latin1'));
    if (id !== undefined) tokens.push(id);
    else for (const b of Buffer.from(ch, 'utf8')) tokens.push(b + 3);
  }
  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i < tokens.length - 1; i++) {
      const id = lookup.get(keys[tokens[i]] + keys[tokens[i + 1]]);
      if (id !== undefined && t.score(id) > bestScore) {
        bestScore = t.score(id);
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens.splice(bestIdx, 2, bestId);
  }
  return tokens;
}

/** Builds a tokenizer file from pieces (score = -index). */
function buildTokenizerFile(pieces: string[], maxTokenLength?: number, scores?: number[]): Uint8Array {
  const enc = pieces.map((p) => Buffer.from(p, 'utf8'));
  const mtl = maxTokenLength ?? Math.max(0, ...enc.map((e) => e.length));
  const total = 4 + enc.reduce((a, e) => a + 8 + e.length, 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setInt32(0, mtl, true);
  let off = 4;
  enc.forEach((e, i) => {
    dv.setFloat32(off, scores ? scores[i] : -i, true);
    dv.setInt32(off + 4, e.length, true);
    out.set(e, off + 8);
    off += 8 + e.length;
  });
  return out;
}

function expectFormatError(
  fn: () => unknown,
  field: string | RegExp,
  offset: number | undefined,
  message?: RegExp,
): ModelFormatError {
  const e = expectThrown(fn, ModelFormatError);
  if (typeof field === 'string') expect(e.field).toBe(field);
  else expect(e.field).toMatch(field);
  if (offset !== undefined) expect(e.offset).toBe(offset);
  expect(e.message).toContain(`at byte offset ${e.offset}`);
  expect(e.message).toContain(e.field);
  if (message) expect(e.message).toMatch(message);
  return e;
}

describe('Llama2cTokenizer on synthetic files (no test data needed)', () => {
  it('encodes and decodes a tiny vocab with merges and byte fallback', () => {
    const bytePieces = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    const pieces = ['<unk>', '\n<s>\n', '\n</s>\n', ...bytePieces, ' ', 'a', 'b', 'ab', ' ab', 'ba'];
    const t = Llama2cTokenizer.fromBytes(buildTokenizerFile(pieces), pieces.length);
    expect(t.hasByteFallback).toBe(true);
    const id = (p: string): number => pieces.indexOf(p);
    expect(t.encode('ab')).toEqual([1, id(' ab')]);
    // "aba": ' ', a, b, a → 'ab' (score -262) beats 'ba' (-264) → ' ', ab, a → ' ab' (-263), a
    expect(t.encode('aba')).toEqual([1, id(' ab'), id('a')]);
    expect(t.encode('é', { bos: false, eos: true })).toEqual([id(' '), 0xc3 + 3, 0xa9 + 3, 2]);
    expect(t.decode(t.encode('abé'))).toBe('abé');
    expect(t.encode('')).toEqual([1]);
    expect(t.encode('', { bos: false })).toEqual([]);
  });

  it('merges like run.c when scores tie (leftmost best pair first)', () => {
    // Vocab over the alphabet {' ', a, b} with every string of length <= 3, scores drawn from a tiny set (many ties).
    const alphabet = [' ', 'a', 'b'];
    const strings: string[] = [];
    for (let len = 1; len <= 3; len++) {
      let layer = [''];
      for (let k = 0; k < len; k++) layer = layer.flatMap((p) => alphabet.map((c) => p + c));
      strings.push(...layer);
    }
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(0, -1, -2), { minLength: strings.length, maxLength: strings.length }),
        fc.subarray(strings.filter((x) => x.length > 1)),
        fc.string({ unit: fc.constantFrom(' ', 'a', 'b'), maxLength: 16 }),
        (scoreChoice, kept, text) => {
          const pieces = ['<unk>', '\n<s>\n', '\n</s>\n', ...alphabet, ...kept];
          const scores = pieces.map((_, i) => (i < 3 ? 0 : scoreChoice[i - 3]));
          const t = Llama2cTokenizer.fromBytes(buildTokenizerFile(pieces, undefined, scores), pieces.length);
          expect(t.encode(text)).toEqual(referenceEncode(t, text));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('rejects bad vocab sizes with InputError', () => {
    const f = buildTokenizerFile(['<unk>', '\n<s>\n', '\n</s>\n']);
    for (const v of [0, -1, 1.5, Number.NaN]) expect(() => Llama2cTokenizer.fromBytes(f, v)).toThrow(InputError);
  });

  it('reports malformed headers and entries', () => {
    const f = buildTokenizerFile(['<unk>', '\n<s>\n', '\n</s>\n', 'hello']);
    expectFormatError(() => Llama2cTokenizer.fromBytes(f.subarray(0, 2), 4), 'max_token_length', 0);
    const neg = f.slice();
    new DataView(neg.buffer).setInt32(0, -5, true);
    expectFormatError(() => Llama2cTokenizer.fromBytes(neg, 4), 'max_token_length', 0, /negative/);
    const short = buildTokenizerFile(['x', 'ab', 'hello'], 3);
    expectFormatError(() => Llama2cTokenizer.fromBytes(short, 3), 'vocab[2].len', 4 + 9 + 10 + 4, /exceeds max_token_length 3/);
  });
});

describe.skipIf(!hasShared)('Llama2cTokenizer against llama2.c data', () => {
  let llama: Llama2cTokenizer;
  let tok512: Llama2cTokenizer;
  let tok105: Llama2cTokenizer;
  const llamaPath = path.join(models, 'llama2-tokenizer/tokenizer.bin');
  const tok512Path = path.join(models, 'stories260K/tok512.bin');
  const cases: EncodeCase[] = hasShared
    ? (JSON.parse(readFileSync(path.join(models, 'llama2-tokenizer/tokenizer_bin_encode_cases.json'), 'utf8')) as { cases: EncodeCase[] }).cases
    : [];
  const goldenFiles = hasShared ? readdirSync(goldenDir).filter((f) => /^stories260K-\d+\.json$/.test(f)).sort() : [];
  const golden = (f: string): Golden => JSON.parse(readFileSync(path.join(goldenDir, f), 'utf8')) as Golden;

  beforeAll(async () => {
    llama = await Llama2cTokenizer.fromFile(llamaPath, 32000);
    tok512 = await Llama2cTokenizer.fromFile(tok512Path, 512);
    tok105 = await Llama2cTokenizer.fromFile(path.join(models, 'babyllama105/tok105.bin'), 105);
  });

  it('loads the vocabularies', () => {
    expect(llama.vocabSize).toBe(32000);
    expect(llama.maxTokenLength).toBe(27);
    expect(llama.bosId).toBe(1);
    expect(llama.eosId).toBe(2);
    expect(llama.piece(1)).toBe('\n<s>\n');
    expect(llama.piece(2)).toBe('\n</s>\n');
    expect(llama.piece(13)).toBe('<0x0A>');
    expect(llama.piece(29871)).toBe(' ');
    expect(llama.hasByteFallback).toBe(true);
    expect(tok512.vocabSize).toBe(512);
    expect(tok512.hasByteFallback).toBe(true);
    expect(tok105.hasByteFallback).toBe(false);
    expect(() => llama.piece(32000)).toThrow(InputError);
    expect(() => llama.piece(-1)).toThrow(InputError);
  });

  it('has encode cases to check', () => {
    expect(cases.length).toBeGreaterThanOrEqual(5);
    expect(goldenFiles.length).toBeGreaterThanOrEqual(5);
  });

  it.each(cases.map((c, i) => [i, c] as const))('reproduces llama2.c test.c encode case %i', (_i, c) => {
    expect(llama.encode(c.prompt)).toEqual(c.expected_tokens);
    expect(llama.encode(c.prompt, { bos: false })).toEqual(c.expected_tokens.slice(1));
    expect(llama.encode(c.prompt, { eos: true })).toEqual([...c.expected_tokens, 2]);
    expect(llama.decode(c.expected_tokens)).toBe(c.prompt);
  });

  it.each(goldenFiles)('encodes the prompt of %s with tok512 as run.c did', (f) => {
    const g = golden(f);
    expect(tok512.encode(g.prompt)).toEqual(g.prompt_ids);
  });

  it.each(goldenFiles)('decodes prompt + generation of %s to the golden text', (f) => {
    const g = golden(f);
    const ids = [...g.prompt_ids, ...g.generated_ids];
    expect(tok512.decode(ids)).toBe(g.text);
    // Same text piece by piece, as run.c prints it (all ASCII here, so per-piece decoding is exact).
    let s = '';
    for (let i = 1; i < ids.length; i++) s += tok512.decodePiece(ids[i - 1], ids[i]);
    expect(s).toBe(g.text);
  });

  it('decodes pieces as run.c: leading space dropped after BOS, <0xHH> to the raw byte', () => {
    const the = llama.encode('the', { bos: false })[0];
    expect(llama.piece(the)).toBe(' the');
    expect(llama.decodePiece(1, the)).toBe('the');
    expect(llama.decodePiece(278, the)).toBe(' the');
    expect(llama.decodePiece(1, 13)).toBe('\n');
    expect(Array.from(llama.decodePieceBytes(5, 0xf0 + 3))).toEqual([0xf0]);
    expect(llama.decodePiece(5, 0xf0 + 3)).toBe('\uFFFD');
    // A multi-byte character split into byte tokens comes out whole from decode().
    const ids = llama.encode('🦙');
    expect(ids.slice(-4)).toEqual([0xf0 + 3, 0x9f + 3, 0xa6 + 3, 0x99 + 3]);
    expect(llama.decode(ids)).toBe('🦙');
    expect(() => llama.decode([1, 32000])).toThrow(InputError);
    expect(() => llama.decodePiece(1, 1.5)).toThrow(InputError);
  });

  it('uses <unk> for characters a vocab without byte pieces cannot encode', () => {
    const ids = tok105.encode('Hi #1');
    expect(ids).toContain(0);
    expect(tok105.decode(ids)).toBe('Hi <unk>1');
  });

  it('round-trips arbitrary Unicode through the 32000-token vocab (byte fallback)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
        expect(llama.decode(llama.encode(s))).toBe(s);
        expect(llama.decode(llama.encode(s, { bos: false, eos: true }))).toBe(s);
      }),
      { numRuns: 300 },
    );
  });

  it('round-trips text mixing words, whitespace, emoji and accents through both byte-fallback vocabs', () => {
    const unit = fc.constantFrom('a', 'the', ' ', '  ', '\n', '\t', 'é', 'ß', '日本', '😀', '👩‍👩‍👧', '🦙', 'Lily', '.', '"', '\u0000', '\u{10FFFF}');
    fc.assert(
      fc.property(fc.array(unit, { maxLength: 30 }), (parts) => {
        const s = parts.join('');
        expect(llama.decode(llama.encode(s))).toBe(s);
        expect(tok512.decode(tok512.encode(s))).toBe(s);
      }),
      { numRuns: 300 },
    );
  });

  it('picks the same merges as a literal port of run.c (heap vs. quadratic scan)', () => {
    const unit = fc.oneof(
      fc.constantFrom('a', 'b', 'e', 'th', ' ', '  ', 'an', 'in', 'ing', 'ee', '\n', 'é', '😀', 'Once', 'upon'),
      fc.string({ unit: 'grapheme-ascii', maxLength: 4 }),
    );
    fc.assert(
      fc.property(fc.array(unit, { maxLength: 25 }), (parts) => {
        const s = parts.join('');
        expect(tok512.encode(s)).toEqual(referenceEncode(tok512, s));
      }),
      { numRuns: 150 },
    );
    for (const c of cases) expect(referenceEncode(llama, c.prompt)).toEqual(c.expected_tokens);
  });

  it('encodes a few KB of text and decodes it back', () => {
    // (its speed is measured by the host section of `npm run bench`, not asserted here)
    const text = 'Once upon a time, there was a little girl named Lily. She loved to play outside. 😀 café\n'.repeat(50);
    const ids = llama.encode(text);
    expect(llama.decode(ids)).toBe(text);
    expect(ids.length).toBeLessThan(text.length);
  });

  describe('malformed tokenizer files', () => {
    let bytes: Uint8Array;
    /** Offset of entry i in tok512.bin. */
    let entryOffset: (i: number) => number;
    beforeAll(() => {
      bytes = readBytes(tok512Path);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      entryOffset = (i) => {
        let off = 4;
        for (let k = 0; k < i; k++) off += 8 + dv.getInt32(off + 4, true);
        return off;
      };
    });

    it('names the field and offset where a truncated file ends', () => {
      const e37 = entryOffset(37);
      expectFormatError(() => Llama2cTokenizer.fromBytes(bytes.subarray(0, 3), 512, 'tok512.bin'), 'max_token_length', 0);
      expectFormatError(() => Llama2cTokenizer.fromBytes(bytes.subarray(0, e37 + 2), 512), 'vocab[37].score', e37, /truncated/);
      expectFormatError(() => Llama2cTokenizer.fromBytes(bytes.subarray(0, e37 + 6), 512), 'vocab[37].len', e37 + 4, /truncated/);
      expectFormatError(() => Llama2cTokenizer.fromBytes(bytes.subarray(0, e37 + 9), 512), 'vocab[37].bytes', e37 + 8, /truncated/);
      const e = expectFormatError(() => Llama2cTokenizer.fromBytes(bytes.subarray(0, e37), 512, 'tok512.bin'), 'vocab[37]', e37);
      expect(e.message).toMatch(/ends after 37 entries.*vocab size is 512/);
      expect(e.file).toBe('tok512.bin');
      expect(e.message.startsWith('tok512.bin: ')).toBe(true);
    });

    it('rejects a negative piece length', () => {
      const bad = bytes.slice();
      const e10 = entryOffset(10);
      new DataView(bad.buffer).setInt32(e10 + 4, -3, true);
      expectFormatError(() => Llama2cTokenizer.fromBytes(bad, 512), 'vocab[10].len', e10 + 4, /negative piece length -3/);
    });

    it('detects a vocab size that does not match the file, both ways', () => {
      const fewer = expectFormatError(() => Llama2cTokenizer.fromBytes(bytes, 511), 'vocab[511]', entryOffset(511));
      expect(fewer.message).toMatch(/does not match/);
      expect(fewer.message).toMatch(/file holds 512 entries/);
      const more = expectFormatError(() => Llama2cTokenizer.fromBytes(bytes, 513), 'vocab[512]', bytes.byteLength);
      expect(more.message).toMatch(/ends after 512 entries/);
      // The 32000-token vocab size for the 512-token file (a model/tokenizer mix-up), and vice versa.
      expectFormatError(() => Llama2cTokenizer.fromBytes(bytes, 32000), 'vocab[512]', bytes.byteLength, /does not match/);
      const big = expectFormatError(() => Llama2cTokenizer.fromBytes(readBytes(llamaPath), 512), 'vocab[512]', undefined);
      expect(big.message).toMatch(/the file holds 32000 entries/);
    });

    it('fails on an absurd vocab size without allocating for it', () => {
      const before = process.memoryUsage().arrayBuffers;
      expectFormatError(() => Llama2cTokenizer.fromBytes(bytes, 2 ** 31 - 1), 'vocab[512]', bytes.byteLength);
      expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1 << 20);
    });

    it('throws only ModelFormatError on corrupted or truncated files', () => {
      fc.assert(
        fc.property(
          fc.nat({ max: bytes.byteLength }),
          fc.array(fc.tuple(fc.nat({ max: bytes.byteLength - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
          (cut, edits) => {
            const b = bytes.slice(0, cut);
            for (const [o, v] of edits) if (o < b.length) b[o] = v;
            try {
              const t = Llama2cTokenizer.fromBytes(b, 512);
              t.decode(t.encode('Once upon a time'));
            } catch (e) {
              expect(e).toBeInstanceOf(ModelFormatError);
            }
          },
        ),
        { numRuns: 300 },
      );
    });
  });
});
