// tokenizer.json files written here in Hugging Face's format (a tiny byte-level BPE like GPT-2/Llama 3, and a tiny
// SentencePiece-style BPE with byte fallback like Llama 2) are run through the library wrapper.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError, ModelFormatError } from '../src/errors.js';
import { HfTokenizer, hfTokenizerFromFolder, loadHfModel } from '../src/frontends/hf/index.js';
import { Rng } from '../src/util/random.js';
import { writeHfFolder } from './support/write-safetensors.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'tw-hftok-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const added = (id: number, content: string): Record<string, unknown> => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

/** Byte-level BPE (GPT-2 / Llama 3 style): spaces become 'Ġ', merges apply by rank, BOS added by a template. */
const byteVocab: Record<string, number> = {
  '<|begin|>': 0,
  '<|end|>': 1,
  '<|eot|>': 2,
  h: 3,
  e: 4,
  l: 5,
  o: 6,
  'Ġ': 7,
  w: 8,
  r: 9,
  d: 10,
  he: 11,
  ll: 12,
  hell: 13,
  hello: 14,
  'Ġw': 15,
  or: 16,
  'Ġwor': 17,
  ld: 18,
  'Ġworld': 19,
  'Ã': 20,
  '©': 21,
};
const byteLevel = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [added(0, '<|begin|>'), added(1, '<|end|>'), added(2, '<|eot|>')],
  normalizer: null,
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<|begin|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: '<|begin|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<|begin|>': { id: '<|begin|>', ids: [0], tokens: ['<|begin|>'] } },
  },
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: 'BPE',
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
    vocab: byteVocab,
    merges: ['h e', 'l l', 'he ll', 'hell o', 'Ġ w', 'o r', 'Ġw or', 'l d', 'Ġwor ld'],
  },
};

/** SentencePiece-style BPE with byte fallback (Llama 2 style): '▁' for spaces, <0xNN> pieces for unknown bytes. */
const spVocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
for (let b = 0; b < 256; b++) spVocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
Object.assign(spVocab, { '▁': 259, h: 260, i: 261, '▁h': 262, '▁hi': 263, t: 264, '▁t': 265 });
const sentencePiece = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [
    { ...added(0, '<unk>') },
    { ...added(1, '<s>') },
    { ...added(2, '</s>') },
  ],
  normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
  pre_tokenizer: null,
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
  },
  decoder: {
    type: 'Sequence',
    decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }],
  },
  model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab: spVocab, merges: ['▁ h', '▁h i', '▁ t'] },
};

describe('tokenizer.json through @huggingface/tokenizers', () => {
  const tok = HfTokenizer.fromJson(byteLevel, { bos_token: { content: '<|begin|>', special: true }, eos_token: '<|end|>' }, { eosIds: [2] });

  it('byte-level BPE: merges by rank, the template adds BOS', () => {
    expect(tok.encode('hello world')).toEqual([0, 14, 19]);
    expect(tok.encode('hello world', { addSpecialTokens: false })).toEqual([14, 19]);
    // 'held': h e l d → (he) l d → (he) (ld); 'he ll' never applies
    expect(tok.encode('held', { addSpecialTokens: false })).toEqual([11, 18]);
    expect(tok.encode('hello é', { addSpecialTokens: false })).toEqual([14, 7, 20, 21]);
    expect(tok.vocabSize).toBe(22);
    expect(tok.tokenToId('Ġworld')).toBe(19);
    expect(tok.idToToken(14)).toBe('hello');
  });

  it('decodes, with and without special tokens', () => {
    expect(tok.decode([0, 14, 19])).toBe('<|begin|>hello world');
    expect(tok.decode([0, 14, 19], { skipSpecialTokens: true })).toBe('hello world');
    expect(tok.decode([14, 7, 20, 21])).toBe('hello é');
    expect(() => tok.decode([99])).toThrow(InputError);
  });

  it('special ids come from tokenizer_config (strings or AddedToken objects) and the given eos list', () => {
    expect(tok.bosId).toBe(0);
    expect(tok.eosIds).toEqual([2, 1]);
    expect(tok.eosId).toBe(2);
  });

  it('streams text, holding back a character split over byte tokens', () => {
    const ids = [0, 14, 19, 7, 20, 21, 7, 11];
    const s = tok.stream();
    const pieces = ids.map((id) => s.push(id));
    expect(pieces).toEqual(['', 'hello', ' world', ' ', '', 'é', ' ', 'he']);
    expect(pieces.join('') + s.flush()).toBe(tok.decode(ids, { skipSpecialTokens: true }));
    expect(tok.decodePiece(0, 14)).toBe('hello');
    expect(tok.decodePiece(14, 19)).toBe(' world');
  });

  it('SentencePiece-style BPE with byte fallback (Llama 2 layout)', () => {
    const sp = HfTokenizer.fromJson(sentencePiece, { bos_token: '<s>', eos_token: '</s>' });
    expect(sp.bosId).toBe(1);
    expect(sp.eosIds).toEqual([2]);
    expect(sp.encode('hi hi')).toEqual([1, 263, 263]);
    // 'é' is not in the vocab: its UTF-8 bytes C3 A9 as <0xC3> <0xA9>
    const ids = sp.encode('hi té');
    expect(ids).toEqual([1, 263, 265, 3 + 0xc3, 3 + 0xa9]);
    expect(sp.decode(ids, { skipSpecialTokens: true })).toBe('hi té');
    const s = sp.stream();
    expect(ids.map((id) => s.push(id)).join('')).toBe('hi té');
    expect(sp.decodePiece(1, 263)).toBe('hi');
    expect(sp.decodePiece(263, 263)).toBe(' hi');
  });

  it('malformed tokenizer files are ModelFormatErrors', () => {
    const dir = path.join(tmp, 'bad');
    writeHfFolder(dir, { model_type: 'none' }, []);
    writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": ');
    expect(() => hfTokenizerFromFolder(dir)).toThrow(ModelFormatError);
    expect(() => HfTokenizer.fromJson({ ...byteLevel, model: { type: 'NoSuchModel' } })).toThrow(ModelFormatError);
    expect(() => HfTokenizer.fromJson({ ...byteLevel, pre_tokenizer: { type: 'NoSuchPreTokenizer' } })).toThrow(/pre_tokenizer\.type at byte offset 0: "NoSuchPreTokenizer" is not a pre_tokenizer type/);
    expect(hfTokenizerFromFolder(path.join(tmp))).toBeUndefined();
  });

  it('ids beyond the tokens the file holds are refused before the library walks up to them (found by the file fuzzer)', () => {
    // one vocab id of 2^31 made the library walk two billion slots (a hang in fromJson)
    const model = { ...byteLevel.model, vocab: { ...byteVocab, ll: 2 ** 31 } };
    expect(() => HfTokenizer.fromJson({ ...byteLevel, model })).toThrow(/^model\.vocab at byte offset 0: token id 2147483648 is far beyond the 25 tokens the file holds \(ids must stay below 1074\)/);
    expect(() => HfTokenizer.fromJson({ ...byteLevel, added_tokens: [added(2 ** 40, '<|x|>')] })).toThrow(/token id 1099511627776 is far beyond/);
    expect(() => HfTokenizer.fromJson({ ...byteLevel, model: { ...byteLevel.model, vocab: { ...byteVocab, ll: -1 } } })).toThrow(/^model\.vocab\["ll"\] at byte offset 0: token id must be a non-negative integer, got -1/);
    expect(() => HfTokenizer.fromJson({ ...byteLevel, model: { ...byteLevel.model, merges: ['h e', 7] } })).toThrow(/^model\.merges\[1\] at byte offset 0/);
  });

  it('component fields the library reads only while encoding are checked when the tokenizer loads (found by the file fuzzer)', () => {
    // a template item that is not an object threw a TypeError inside the library at the first encode
    const single = [-1, { Sequence: { id: 'A', type_id: 0 } }];
    expect(() => HfTokenizer.fromJson({ ...byteLevel, post_processor: { ...byteLevel.post_processor, single } })).toThrow(/^post_processor\.single\[0\] at byte offset 0: must be \{"SpecialToken"/);
    const cases: [object, RegExp][] = [
      [{ ...byteLevel, post_processor: { type: 'BertProcessing', cls: ['[CLS]'], sep: ['[SEP]', 1] } }, /^post_processor\.cls at byte offset 0: must be \[token, id\]/],
      [{ ...byteLevel, decoder: { type: 'Sequence', decoders: [{ type: 'Strip', content: ' ', start: 'x', stop: 0 }] } }, /^decoder\.decoders\[0\]\.start at byte offset 0: must be a int/],
      [{ ...byteLevel, normalizer: { type: 'Replace', content: 'x' } }, /^normalizer\.pattern at byte offset 0: is missing/],
      [{ ...byteLevel, pre_tokenizer: { type: 'FixedLength', length: 0 } }, /^pre_tokenizer\.length at byte offset 0: must be a positive integer/],
      [Object.fromEntries(Object.entries(byteLevel).filter(([k]) => k !== 'decoder')), /^decoder at byte offset 0: is missing/],
      [{ ...byteLevel, added_tokens: [{ id: 0 }] }, /^added_tokens\[0\] at byte offset 0/],
    ];
    for (const [json, re] of cases) expect(() => HfTokenizer.fromJson(json)).toThrow(re);
    expect(() => HfTokenizer.fromJson(byteLevel, { additional_special_tokens: 'x' })).toThrow(/^additional_special_tokens at byte offset 0/);
    // what the checks accept still loads and encodes
    expect(HfTokenizer.fromJson({ ...byteLevel, decoder: { type: 'Sequence', decoders: [{ type: 'Strip', content: ' ', start: 1, stop: 0 }, { type: 'ByteFallback' }] } }).encode('hello')).toEqual([0, 14]);
  });

  it('loadHfModel attaches the folder tokenizer and merges stop tokens from generation_config', async () => {
    const dir = path.join(tmp, 'model');
    const cfg = { model_type: 'gpt2', vocab_size: 22, n_positions: 8, n_embd: 8, n_head: 2, n_layer: 1, bos_token_id: 0, eos_token_id: 1 };
    const r = new Rng(1);
    const t = (name: string, shape: number[]): { name: string; shape: number[]; values: Float32Array } => ({ name, shape, values: r.normals(shape.reduce((a, b) => a * b, 1), 0.1) });
    const tensors = [
      t('wte.weight', [22, 8]),
      t('wpe.weight', [8, 8]),
      t('h.0.ln_1.weight', [8]),
      t('h.0.ln_1.bias', [8]),
      t('h.0.attn.c_attn.weight', [8, 24]),
      t('h.0.attn.c_attn.bias', [24]),
      t('h.0.attn.c_proj.weight', [8, 8]),
      t('h.0.attn.c_proj.bias', [8]),
      t('h.0.ln_2.weight', [8]),
      t('h.0.ln_2.bias', [8]),
      t('h.0.mlp.c_fc.weight', [8, 32]),
      t('h.0.mlp.c_fc.bias', [32]),
      t('h.0.mlp.c_proj.weight', [32, 8]),
      t('h.0.mlp.c_proj.bias', [8]),
      t('ln_f.weight', [8]),
      t('ln_f.bias', [8]),
    ];
    writeHfFolder(dir, cfg, tensors, {
      files: { 'tokenizer.json': byteLevel, 'tokenizer_config.json': { bos_token: '<|begin|>', eos_token: '<|end|>' }, 'generation_config.json': { bos_token_id: 0, eos_token_id: [1, 2] } },
    });
    const model = await loadHfModel(dir);
    expect(model.tokenizer).toBeDefined();
    expect(model.tokenizer!.encode('hello world')).toEqual([0, 14, 19]);
    expect(model.bosId).toBe(0);
    expect(model.stopTokens).toEqual([1, 2]);
    const noTok = await loadHfModel(dir, { tokenizer: false });
    expect(noTok.tokenizer).toBeUndefined();
  });
});
