// The tokenizer a GGUF file carries: stories260K-F32.gguf's embedded SentencePiece vocab (tok512, converted by
// llama.cpp's gguf library) encodes and decodes as the llama2.c tokenizer does on tok512.bin; `generate` on that file
// with no --tokenizer reproduces run.c's goldens; a gpt2 byte-level BPE vocab written here agrees with
// @huggingface/tokenizers on an equivalent tokenizer.json and with hand-computed ids; malformed metadata gives typed
// errors naming the key.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError, ModelFormatError } from '../src/errors.js';
import { GgufFile, GgufTokenizer, GgufTokenType, loadGgufModel, loadGgufModelFromBytes } from '../src/frontends/gguf/index.js';
import { UnsupportedModelError } from '../src/frontends/hf/errors.js';
import { HfTokenizer } from '../src/frontends/hf/index.js';
import { Llama2cTokenizer } from '../src/frontends/llama2c/index.js';
import { Rng } from '../src/util/random.js';
import { runCli } from './support/cli.js';
import { expectThrown } from './support/expect-thrown.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';
import { ggufBytes, kv, T, type GgufTensor, type Kv } from './support/write-gguf.js';

noteMissingShared('GGUF embedded-tokenizer tests on stories260K');

const tmp = mkdtempSync(path.join(os.tmpdir(), 'tw-gguf-tok-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const ggufPath = hasShared ? sharedPath('models/gguf/stories260K-F32.gguf') : '';
const tok512Path = hasShared ? sharedPath('models/stories260K/tok512.bin') : '';

/** The texts both tokenizers must agree on: the eval lines plus unicode, byte-fallback and whitespace cases. */
function texts(): string[] {
  const lines = readFileSync(sharedPath('data/stories260K-eval-public.txt'), 'utf8').split('\n');
  const extra = ['', ' ', 'a', '  two  spaces  ', ' leading', 'trailing ', 'héllo wörld', 'naïve café', '日本語のテキスト', 'emoji 🙂🚀 and 👩‍👩‍👧', 'tab\there\nnew\r\nline', '\u0000nul', 'Ω≈ç√∫', '"Quotes," she said; (parens) [brackets] {braces}!?'];
  return [...lines, ...extra];
}

/** A GGUF file rewritten with edited metadata (tensors copied as they are). */
function rewriteGguf(file: string, edit: (kvs: Kv[]) => Kv[]): Uint8Array {
  const f = GgufFile.open(file);
  try {
    const kvs: Kv[] = [...f.header.metadata.values()].map((e) => ({ key: e.key, type: e.type, arrayType: e.arrayType, value: e.value }));
    const tensors: GgufTensor[] = f.tensors.map((t) => ({ name: t.name, dims: [...t.dims], type: t.type, data: f.bytes(t.name).slice() }));
    return ggufBytes(edit(kvs), tensors, { alignment: f.header.alignment });
  } finally {
    f.close();
  }
}

describe.skipIf(!hasShared)('stories260K-F32.gguf: the embedded tokenizer is tok512', () => {
  let gguf: GgufTokenizer;
  let l2c: Llama2cTokenizer;
  beforeAll(async () => {
    const model = await loadGgufModel(ggufPath);
    gguf = model.tokenizer!;
    l2c = await Llama2cTokenizer.fromFile(tok512Path, 512);
  });

  it('reads the SentencePiece vocab with its special ids', () => {
    expect(gguf).toBeInstanceOf(GgufTokenizer);
    expect(gguf).toMatchObject({ model: 'llama', vocabSize: 512, bosId: 1, eosId: 2, addBos: true, addEos: false });
    expect(gguf.tokenType(0)).toBe(GgufTokenType.UNKNOWN);
    expect(gguf.tokenType(1)).toBe(GgufTokenType.CONTROL);
    expect(gguf.piece(3 + 0x0a)).toBe('<0x0A>');
    expect(gguf.tokenType(3 + 0x0a)).toBe(GgufTokenType.BYTE);
    expect(() => gguf.piece(512)).toThrow(InputError);
  });

  it('encodes every text to the same ids as the llama2.c tokenizer on tok512.bin', () => {
    for (const t of texts()) expect(gguf.encode(t), JSON.stringify(t)).toEqual(l2c.encode(t));
    for (const t of ['Once upon a time', 'héllo']) {
      expect(gguf.encode(t, { bos: false, eos: true })).toEqual(l2c.encode(t, { bos: false, eos: true }));
    }
  });

  it('decodes every text, and every piece after every predecessor, to the same text', () => {
    for (const t of texts()) {
      const ids = l2c.encode(t);
      expect(gguf.decode(ids), JSON.stringify(t)).toBe(l2c.decode(ids));
      expect(gguf.decode(ids.slice(1))).toBe(l2c.decode(ids.slice(1)));
    }
    // run.c's decode(prev, token) for every normal and byte piece after BOS and after an ordinary token
    for (let id = 3; id < 512; id++) {
      for (const prev of [1, 300]) expect(gguf.decodePiece(prev, id), `${prev} ${id}`).toBe(l2c.decodePiece(prev, id));
    }
  });

  it('byte fallback round-trips arbitrary Unicode', () => {
    const r = new Rng(5);
    for (let k = 0; k < 50; k++) {
      const cps = Array.from({ length: 1 + Math.floor(r.next() * 12) }, () => {
        const c = Math.floor(r.next() * 0x30000);
        return c >= 0xd800 && c < 0xe000 ? 0x41 : c;
      });
      const s = String.fromCodePoint(...cps);
      const ids = gguf.encode(s);
      expect(ids).toEqual(l2c.encode(s));
      expect(gguf.decode(ids)).toBe(s);
    }
  });

  it('a literal U+2581 in the text reads as a space (as in llama.cpp), where tok512.bin keeps the character', () => {
    expect(gguf.encode('a\u2581b')).toEqual(gguf.encode('a b'));
  });
});

describe.skipIf(!hasShared)('generate on stories260K-F32.gguf with no --tokenizer', () => {
  const dir = hasShared ? sharedPath('golden/stories260K') : '';
  const files = hasShared ? readdirSync(dir).filter((f) => f.endsWith('.json')) : [];
  for (const f of files) {
    it(`--backend cpu --temperature 0 reproduces ${f}`, async () => {
      const gold = JSON.parse(readFileSync(`${dir}/${f}`, 'utf8'));
      const r = await runCli(['generate', '--model', ggufPath, '--prompt', gold.prompt, '--steps', String(gold.steps), '--temperature', '0', '--backend', 'cpu', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.prompt_ids).toEqual(gold.prompt_ids);
      // run.c stops at BOS (id 1); the GGUF model stops at its EOS (id 2) only, so it may run on past run.c's end
      expect(out.generated_ids.slice(0, gold.generated_ids.length)).toEqual(gold.generated_ids);
      if (out.generated_ids.length > gold.generated_ids.length) expect(out.generated_ids[gold.generated_ids.length]).toBe(1);
      expect(out.text.startsWith(gold.text)).toBe(true);
      if (out.generated_ids.length === gold.generated_ids.length) expect(out.text).toBe(gold.text);
    });
  }

  it('--steps 200 with an empty prompt prints what run.c prints', async () => {
    const want = readFileSync(sharedPath('golden/stories260K/run_c_stdout_greedy_200.txt'), 'utf8');
    const r = await runCli(['generate', '--model', ggufPath, '--steps', '200', '--temperature', '0', '--backend', 'cpu']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trimEnd()).toBe(want.trimEnd());
  });

  it('an explicit --tokenizer still wins over the embedded one', async () => {
    // a 32000-piece tokenizer cannot serve a 512-token model: the error shows it was the one used
    const r = await runCli(['generate', '--model', ggufPath, '--tokenizer', sharedPath('models/llama2-tokenizer/tokenizer.bin'), '--prompt', 'Hi', '--steps', '5', '--json']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^error \[BAD_MODEL_FILE\].*tokenizer\.bin/);
  });

  it('a broken embedded tokenizer is a typed error naming the key, and does not stop a model given --tokenizer', async () => {
    const bytes = rewriteGguf(ggufPath, (kvs) => kvs.map((k) => (k.key === 'tokenizer.ggml.tokens' ? { ...k, value: (k.value as string[]).slice(0, 500) } : k.key === 'tokenizer.ggml.scores' || k.key === 'tokenizer.ggml.token_type' ? { ...k, value: (k.value as number[]).slice(0, 500) } : k)));
    const p = path.join(tmp, 'short-vocab.gguf');
    writeFileSync(p, bytes);
    const model = loadGgufModelFromBytes(bytes, p);
    const e = expectThrown(() => model.tokenizer, ModelFormatError);
    expect(e.field).toBe('tokenizer.ggml.tokens');
    expect(e.message).toMatch(/500 tokens but token_embd.weight has 512 rows/);
    const bad = await runCli(['generate', '--model', p, '--prompt', 'Hi', '--steps', '5', '--json']);
    expect(bad.stderr).toMatch(/^error \[BAD_MODEL_FILE\].*tokenizer\.ggml\.tokens/);
    const ok = await runCli(['generate', '--model', p, '--tokenizer', tok512Path, '--prompt', 'Hi', '--steps', '5', '--temperature', '0', '--json']);
    expect(ok.code, ok.stderr).toBe(0);
  });

  it('a GGUF without tokenizer metadata has no tokenizer; a prompt then needs --tokenizer', async () => {
    const bytes = rewriteGguf(ggufPath, (kvs) => kvs.filter((k) => !k.key.startsWith('tokenizer.ggml.')));
    const p = path.join(tmp, 'no-tokenizer.gguf');
    writeFileSync(p, bytes);
    expect(loadGgufModelFromBytes(bytes, p).tokenizer).toBeUndefined();
    const r = await runCli(['generate', '--model', p, '--prompt', 'Hi', '--steps', '5', '--json']);
    expect(r.stderr).toMatch(/^error \[USAGE\].*--tokenizer/);
  });
});

describe.skipIf(!hasShared)('generate on stories260K-F32.gguf on WebGPU with no --tokenizer', () => {
  let hasGpu = false;
  beforeAll(async () => {
    const { probeWebGPU } = await import('../src/runtime/device.js');
    const p = await probeWebGPU();
    hasGpu = !('available' in p);
    if (!hasGpu && process.env.REQUIRE_WEBGPU === '1') throw new Error(`REQUIRE_WEBGPU=1 but no WebGPU adapter: ${(p as { reason: string }).reason}`);
  });
  it('reproduces a golden sequence', async (ctx) => {
    if (!hasGpu) return ctx.skip();
    const gold = JSON.parse(readFileSync(sharedPath('golden/stories260K/stories260K-1.json'), 'utf8'));
    const r = await runCli(['generate', '--model', ggufPath, '--prompt', gold.prompt, '--steps', String(gold.steps), '--temperature', '0', '--backend', 'webgpu', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.backend).toBe('webgpu');
    expect(out.prompt_ids).toEqual(gold.prompt_ids);
    expect(out.generated_ids.slice(0, gold.generated_ids.length)).toEqual(gold.generated_ids);
    expect(out.text.startsWith(gold.text)).toBe(true);
  }, 600_000);
});

// ---------------------------------------------------------------------------------------------------------------
// gpt2 (byte-level BPE)

/** GPT-2's bytes_to_unicode, written out independently of the loader. */
const BYTE_CHARS: string[] = (() => {
  const direct = (b: number): boolean => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCharCode(direct(b) ? b : 256 + extra++));
  return out;
})();

/** Ids 0..255 are the byte characters (by byte value); merged tokens follow, then a control and a user-defined token. */
const MERGES = ['Ġ t', 'h e', 'Ġt he', 'l l', 'he ll', 'hell o', '1 2', 'Ã ©'];
const MERGED = ['Ġt', 'he', 'Ġthe', 'll', 'hell', 'hello', '12', 'Ã©'];
const TOKENS = [...BYTE_CHARS, ...MERGED, '<|endoftext|>', '<user>'];
const EOT = 256 + MERGED.length;
const USER = EOT + 1;
const id = (t: string): number => TOKENS.indexOf(t);

function gpt2Kvs(extra: Kv[] = [], drop: string[] = []): Kv[] {
  const types = TOKENS.map((_t, i) => (i === EOT ? 3 : i === USER ? 4 : 1));
  const base: Kv[] = [
    kv.str('general.architecture', 'llama'),
    kv.str('tokenizer.ggml.model', 'gpt2'),
    kv.strs('tokenizer.ggml.tokens', TOKENS),
    { key: 'tokenizer.ggml.token_type', type: T.ARRAY, arrayType: T.INT32, value: types },
    kv.strs('tokenizer.ggml.merges', MERGES),
    kv.u32('tokenizer.ggml.eos_token_id', EOT),
  ];
  const keys = new Set(extra.map((k) => k.key));
  return [...base.filter((k) => !keys.has(k.key) && !drop.includes(k.key)), ...extra];
}
const fromKvs = (kvs: Kv[]): GgufTokenizer | undefined => GgufTokenizer.fromGguf(GgufFile.fromBytes(ggufBytes(kvs, []), 'tok.gguf'));

describe('gpt2 byte-level BPE tokenizer', () => {
  const tok = fromKvs(gpt2Kvs())!;

  it('encodes with ranked merges over the GPT-2 pre-tokenizer (hand-computed ids)', () => {
    expect(tok).toMatchObject({ model: 'gpt2', pre: 'default', vocabSize: TOKENS.length, bosId: undefined, eosId: EOT, addBos: false });
    expect(tok.encode(' the')).toEqual([id('Ġthe')]);
    expect(tok.encode('the')).toEqual([id('t'), id('he')]);
    expect(tok.encode('hello the')).toEqual([id('hello'), id('Ġthe')]);
    expect(tok.encode('12')).toEqual([id('12')]);
    expect(tok.encode('123')).toEqual([id('12'), id('3')]);
    expect(tok.encode('é')).toEqual([id('Ã©')]);
    expect(tok.encode('')).toEqual([]);
    // control-token text is taken literally; user-defined tokens are matched
    expect(tok.encode('<|endoftext|>')).not.toContain(EOT);
    expect(tok.encode('a<user>b')).toEqual([id('a'), USER, id('b')]);
    expect(tok.encode('the', { eos: true })).toEqual([id('t'), id('he'), EOT]);
  });

  it('decodes bytes back to text, control tokens to nothing', () => {
    expect(tok.decode([id('hello'), id('Ġthe'), EOT])).toBe('hello the');
    expect(tok.decode([id('Ã'), id('©')])).toBe('é');
    expect(tok.decodePiece(id('hello'), id('Ġthe'))).toBe(' the');
    expect(tok.decodePiece(id('hello'), EOT)).toBe('');
    expect(() => tok.decode([TOKENS.length])).toThrow(InputError);
  });

  it('agrees with @huggingface/tokenizers on an equivalent tokenizer.json', () => {
    const vocab = Object.fromEntries(TOKENS.map((t, i) => [t, i]));
    const json = {
      version: '1.0',
      added_tokens: [{ id: USER, content: '<user>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: false }],
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: MERGES },
    };
    const hf = HfTokenizer.fromJson(json, { clean_up_tokenization_spaces: false });
    const r = new Rng(11);
    const alphabet = ['the', ' the', 'hello', ' ', '  ', '12', '3', 'é', 'ü', '\n', "'s", '!', '<user>', 'x', '🙂'];
    for (let k = 0; k < 200; k++) {
      const s = Array.from({ length: 1 + Math.floor(r.next() * 8) }, () => alphabet[Math.floor(r.next() * alphabet.length)]).join('');
      const ids = tok.encode(s);
      expect(ids, JSON.stringify(s)).toEqual(hf.encode(s, { addSpecialTokens: false }));
      expect(tok.decode(ids)).toBe(s);
      expect(tok.decode(ids)).toBe(hf.decode(ids));
    }
  });

  it('honours tokenizer.ggml.pre (qwen2 splits digits one by one) and add_bos_token', () => {
    const qwen = fromKvs(gpt2Kvs([kv.str('tokenizer.ggml.pre', 'qwen2')]))!;
    expect(qwen.encode('123')).toEqual([id('1'), id('2'), id('3')]);
    expect(qwen.encode('hello the')).toEqual([id('hello'), id('Ġthe')]);
    const bos = fromKvs(gpt2Kvs([kv.u32('tokenizer.ggml.bos_token_id', EOT), { key: 'tokenizer.ggml.add_bos_token', type: T.BOOL, value: true }]))!;
    expect(bos.encode('the')).toEqual([EOT, id('t'), id('he')]);
    expect(bos.decode(bos.encode('the'))).toBe('the');
  });
});

describe('malformed tokenizer metadata', () => {
  const spm = (extra: Kv[] = [], drop: string[] = []): Kv[] => {
    const tokens = ['<unk>', '<s>', '</s>', '▁', 'a', 'b', '▁a', '<0x41>'];
    const base: Kv[] = [
      kv.str('tokenizer.ggml.model', 'llama'),
      kv.strs('tokenizer.ggml.tokens', tokens),
      { key: 'tokenizer.ggml.scores', type: T.ARRAY, arrayType: T.FLOAT32, value: tokens.map((_t, i) => -i) },
      { key: 'tokenizer.ggml.token_type', type: T.ARRAY, arrayType: T.INT32, value: [2, 3, 3, 1, 1, 1, 1, 6] },
    ];
    const keys = new Set(extra.map((k) => k.key));
    return [...base.filter((k) => !keys.has(k.key) && !drop.includes(k.key)), ...extra];
  };
  const fails = (kvs: Kv[], key: string, msg: RegExp): void => {
    const e = expectThrown(() => fromKvs(kvs), ModelFormatError, key);
    expect(e.field).toBe(key);
    expect(e.message).toMatch(msg);
    expect(e.file).toBe('tok.gguf');
  };

  it('a small SentencePiece vocab works (merges by score, byte and unknown fallback)', () => {
    const t = fromKvs(spm())!;
    expect(t.encode('a a')).toEqual([1, 6, 6]);
    expect(t.encode('ab')).toEqual([1, 6, 5]);
    expect(t.encode('A')).toEqual([1, 3, 7]);
    expect(t.encode('z')).toEqual([1, 3, 0]);
    expect(t.decode([1, 6, 6, 7, 0, 2])).toBe('a aA');
    const noPrefix = fromKvs(spm([{ key: 'tokenizer.ggml.add_space_prefix', type: T.BOOL, value: false }]))!;
    expect(noPrefix.encode('a')).toEqual([1, 4]);
  });

  it('no tokenizer.ggml.model: no tokenizer', () => {
    expect(fromKvs([kv.str('general.architecture', 'llama')])).toBeUndefined();
  });

  it('names the key for each kind of bad metadata', () => {
    fails(spm([], ['tokenizer.ggml.tokens']), 'tokenizer.ggml.tokens', /missing/);
    fails(spm([kv.strs('tokenizer.ggml.tokens', [])]), 'tokenizer.ggml.tokens', /empty/);
    fails(spm([{ key: 'tokenizer.ggml.tokens', type: T.ARRAY, arrayType: T.UINT32, value: [1, 2] }]), 'tokenizer.ggml.tokens', /array of strings/);
    fails(spm([kv.str('tokenizer.ggml.tokens', 'abc')]), 'tokenizer.ggml.tokens', /array of strings/);
    fails(spm([{ key: 'tokenizer.ggml.scores', type: T.ARRAY, arrayType: T.FLOAT32, value: [0, 0] }]), 'tokenizer.ggml.scores', /has 2 entries but tokenizer.ggml.tokens has 8/);
    fails(spm([{ key: 'tokenizer.ggml.scores', type: T.ARRAY, arrayType: T.STRING, value: ['x'] }]), 'tokenizer.ggml.scores', /array of floats/);
    fails(spm([{ key: 'tokenizer.ggml.token_type', type: T.ARRAY, arrayType: T.INT32, value: [1] }]), 'tokenizer.ggml.token_type', /has 1 entries/);
    fails(spm([{ key: 'tokenizer.ggml.token_type', type: T.ARRAY, arrayType: T.INT32, value: [2, 3, 3, 1, 1, 9, 1, 6] }]), 'tokenizer.ggml.token_type', /entry 5 is 9/);
    fails(spm([{ key: 'tokenizer.ggml.token_type', type: T.ARRAY, arrayType: T.INT32, value: [2, 3, 3, 1, 6, 1, 1, 6] }]), 'tokenizer.ggml.tokens', /token 4 has type BYTE/);
    fails(spm([kv.u32('tokenizer.ggml.bos_token_id', 8)]), 'tokenizer.ggml.bos_token_id', /out of range/);
    fails(spm([kv.u32('tokenizer.ggml.eos_token_id', 1000)]), 'tokenizer.ggml.eos_token_id', /out of range/);
    fails(spm([kv.u32('tokenizer.ggml.unknown_token_id', 8)]), 'tokenizer.ggml.unknown_token_id', /out of range/);
    fails(spm([kv.str('tokenizer.ggml.add_bos_token', 'yes')]), 'tokenizer.ggml.add_bos_token', /must be a bool/);
    fails(gpt2Kvs([], ['tokenizer.ggml.merges']), 'tokenizer.ggml.merges', /missing/);
    fails(gpt2Kvs([kv.strs('tokenizer.ggml.merges', ['he'])]), 'tokenizer.ggml.merges', /merge 0 'he' is not two tokens/);
    fails(gpt2Kvs([kv.strs('tokenizer.ggml.merges', ['Ġ t', 'x y'])]), 'tokenizer.ggml.merges', /merge 1 'x y' makes 'xy'/);
    fails(gpt2Kvs([kv.strs('tokenizer.ggml.tokens', TOKENS.slice(1)), { key: 'tokenizer.ggml.token_type', type: T.ARRAY, arrayType: T.INT32, value: TOKENS.slice(1).map(() => 1) }]), 'tokenizer.ggml.tokens', /byte 0x00/);
    fails(gpt2Kvs([{ key: 'tokenizer.ggml.add_bos_token', type: T.BOOL, value: true }]), 'tokenizer.ggml.bos_token_id', /missing/);
  });

  it('an unimplemented tokenizer model or pre-tokenizer is UnsupportedModelError naming the key', () => {
    const m = expectThrown(() => fromKvs(spm([kv.str('tokenizer.ggml.model', 'bert')])), UnsupportedModelError);
    expect(m.feature).toBe('tokenizer.ggml.model');
    const p = expectThrown(() => fromKvs(gpt2Kvs([kv.str('tokenizer.ggml.pre', 'falcon')])), UnsupportedModelError);
    expect(p.feature).toBe('tokenizer.ggml.pre');
  });
});
