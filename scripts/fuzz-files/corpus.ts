/**
 * The file fuzzer's seed corpus: per format, real files from `../shared` (stories260K and its tokenizers, the GGUF
 * conversions, the exported ONNX models and a sample of the ONNX node tests) and small files written here (a tiny
 * llama2.c checkpoint, a tokenizer with byte pieces, GGUF files with `llama` and `gpt2` tokenizers, Hugging Face
 * folders for Llama, GPT-2 and a sharded Qwen2, ONNX models with external data, engines compiled from a checkpoint).
 * Each seed lists its files, which of them mutations target and how (`FileKind`), and how often it is drawn.
 * @module
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../../src/frontends/load.js';
import { compile } from '../../src/compile.js';
import { createTarget } from '../../src/codegen/target.js';
import { Engine } from '../../src/runtime/engine.js';
import { Rng } from '../../src/util/random.js';
import { f16Bytes, f32Bytes, ggufBytes, G, quantizeQ4_0, quantizeQ8_0, T, type GgufTensor, type Kv } from '../../test/support/write-gguf.js';
import { modelBytes, node, T as OT, tensor, valueInfo } from '../../test/support/onnx.js';
import { writeHfFolder, type TensorToWrite } from '../../test/support/write-safetensors.js';
import { requiredPresent, sharedDir } from '../../test/support/shared.js';

/** The formats the file fuzzer knows. */
export const FUZZ_FORMATS = ['llama2c', 'llama2c-tokenizer', 'gguf', 'safetensors', 'onnx', 'engine'] as const;

/** One of {@link FUZZ_FORMATS}. */
export type FuzzFormat = (typeof FUZZ_FORMATS)[number];

/** How a file of a seed is mutated. */
export type FileKind = 'llama2c' | 'llama2c-tokenizer' | 'gguf' | 'safetensors' | 'onnx' | 'config-json' | 'tokenizer-json' | 'engine-json' | 'engine-container' | 'index-json' | 'raw';

/** One file of a seed. */
export interface SeedFile {
  /** Its name in the case folder. */
  readonly name: string;
  /** Where the seed's bytes are. */
  readonly path: string;
  /** How mutations treat it. */
  readonly kind: FileKind;
  /** How often mutations target it (0: copied unchanged). */
  readonly weight: number;
}

/** A seed: files written into the case folder, one or more of them mutated, then loaded. */
export interface Seed {
  /** Name, for reports. */
  readonly name: string;
  /** How often it is drawn. */
  readonly weight: number;
  /** Files of the case folder. */
  readonly files: readonly SeedFile[];
  /** What the loader opens: a file name, or `.` for the folder itself. */
  readonly open: string;
  /** The vocabulary size a llama2.c tokenizer is read with. */
  readonly vocabSize?: number;
}

/** Which seeds to use: `quick` leaves out the few whose clean load takes more than ~150 ms. */
export type CorpusSize = 'quick' | 'full';

const shared = (...parts: string[]): string => join(sharedDir, ...parts);
const single = (name: string, path: string, kind: FileKind, weight: number, extra: Partial<Seed> = {}): Seed => ({ name, weight, files: [{ name: path.split('/').pop()!, path, kind, weight: 1 }], open: path.split('/').pop()!, ...extra });

/** A llama2.c checkpoint with random weights (`vocab < 0`: a separate classifier). */
function llama2cBytes(c: { dim: number; hidden: number; layers: number; heads: number; kvHeads: number; vocab: number; seq: number }, rng: Rng): Uint8Array {
  const vocab = Math.abs(c.vocab);
  const hs = c.dim / c.heads;
  const kvDim = hs * c.kvHeads;
  const perLayer = 2 * c.dim + 2 * c.dim * c.dim + 2 * kvDim * c.dim + 3 * c.hidden * c.dim;
  const floats = vocab * c.dim + c.layers * perLayer + c.dim + 2 * Math.floor((c.seq * hs) / 2) + (c.vocab < 0 ? vocab * c.dim : 0);
  const out = new Uint8Array(28 + 4 * floats);
  new Int32Array(out.buffer, 0, 7).set([c.dim, c.hidden, c.layers, c.heads, c.kvHeads, c.vocab, c.seq]);
  new Float32Array(out.buffer, 28).set(rng.normals(floats, 0.1));
  return out;
}

/** The pieces of a small SentencePiece-style vocabulary: `<unk>`, BOS, EOS, 256 byte pieces, then a few words. */
function smallPieces(): string[] {
  const pieces = ['<unk>', '\n<s>\n', '\n</s>\n'];
  for (let b = 0; b < 256; b++) pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  pieces.push(' ', 'e', 't', 'a', 'o', 'n', ' t', 'th', 'he', ' the', ' a', 'an', 'on', 'ce', 'up', ' up', 'im', 'me', ' time', 'Once');
  return pieces;
}

/** A llama2.c tokenizer file. */
function llama2cTokenizerBytes(pieces: readonly string[], rng: Rng): Uint8Array {
  const enc = pieces.map((p) => new TextEncoder().encode(p));
  const out = new Uint8Array(4 + enc.reduce((a, e) => a + 8 + e.length, 0));
  const dv = new DataView(out.buffer);
  dv.setInt32(0, Math.max(...enc.map((e) => e.length)), true);
  let o = 4;
  enc.forEach((e, i) => {
    dv.setFloat32(o, i < 259 ? 0 : -rng.next() * 10, true);
    dv.setInt32(o + 4, e.length, true);
    out.set(e, o + 8);
    o += 8 + e.length;
  });
  return out;
}

/** GPT-2's byte → character map. */
function byteLevelChars(): string[] {
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out.push(String.fromCodePoint(printable ? b : 256 + n++));
  }
  return out;
}

/** A tiny Llama-family GGUF file (Q8_0, Q4_0, F16 and F32 tensors) with a `llama` or `gpt2` tokenizer. */
function ggufSeedBytes(kind: 'llama' | 'qwen2', rng: Rng): Uint8Array {
  const dim = 32;
  const hidden = 64;
  const heads = 4;
  const kvHeads = 2;
  const kvDim = (dim / heads) * kvHeads;
  const kv: Kv[] = [
    { key: 'general.architecture', type: T.STRING, value: kind },
    { key: 'general.name', type: T.STRING, value: `fuzz-${kind}` },
    { key: `${kind}.context_length`, type: T.UINT32, value: 64 },
    { key: `${kind}.embedding_length`, type: T.UINT32, value: dim },
    { key: `${kind}.feed_forward_length`, type: T.UINT32, value: hidden },
    { key: `${kind}.block_count`, type: T.UINT32, value: 1 },
    { key: `${kind}.attention.head_count`, type: T.UINT32, value: heads },
    { key: `${kind}.attention.head_count_kv`, type: T.UINT32, value: kvHeads },
    { key: `${kind}.rope.freq_base`, type: T.FLOAT32, value: 10000 },
    { key: `${kind}.attention.layer_norm_rms_epsilon`, type: T.FLOAT32, value: 1e-5 },
  ];
  let vocab: number;
  if (kind === 'llama') {
    const pieces = smallPieces().map((p, i) => (i < 3 ? ['<unk>', '<s>', '</s>'][i] : p.replaceAll(' ', '\u2581')));
    vocab = pieces.length;
    kv.push(
      { key: 'tokenizer.ggml.model', type: T.STRING, value: 'llama' },
      { key: 'tokenizer.ggml.tokens', type: T.ARRAY, arrayType: T.STRING, value: pieces },
      { key: 'tokenizer.ggml.scores', type: T.ARRAY, arrayType: T.FLOAT32, value: pieces.map((_p, i) => (i < 259 ? 0 : -i)) },
      { key: 'tokenizer.ggml.token_type', type: T.ARRAY, arrayType: T.INT32, value: pieces.map((_p, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1)) },
      { key: 'tokenizer.ggml.bos_token_id', type: T.UINT32, value: 1 },
      { key: 'tokenizer.ggml.eos_token_id', type: T.UINT32, value: 2 },
    );
  } else {
    const chars = byteLevelChars();
    const words = ['Ġt', 'he', 'Ġthe', 'on', 'ce', 'Ġa'];
    const tokens = ['<|endoftext|>', ...chars, ...words];
    vocab = tokens.length;
    kv.push(
      { key: 'tokenizer.ggml.model', type: T.STRING, value: 'gpt2' },
      { key: 'tokenizer.ggml.pre', type: T.STRING, value: 'qwen2' },
      { key: 'tokenizer.ggml.tokens', type: T.ARRAY, arrayType: T.STRING, value: tokens },
      { key: 'tokenizer.ggml.token_type', type: T.ARRAY, arrayType: T.INT32, value: tokens.map((_t, i) => (i === 0 ? 3 : 1)) },
      { key: 'tokenizer.ggml.merges', type: T.ARRAY, arrayType: T.STRING, value: ['Ġ t', 'h e', 'Ġt he', 'o n', 'c e', 'Ġ a'] },
      { key: 'tokenizer.ggml.eos_token_id', type: T.UINT32, value: 0 },
    );
  }
  const w = (n: number): Float32Array => rng.normals(n, 0.1);
  const t = (name: string, dims: number[], type: number): GgufTensor => {
    const n = dims.reduce((a, b) => a * b, 1);
    const x = name.endsWith('norm.weight') ? Float32Array.from({ length: n }, () => 1) : w(n);
    const data = type === G.Q8_0 ? quantizeQ8_0(x) : type === G.Q4_0 ? quantizeQ4_0(x) : type === G.F16 ? f16Bytes(x) : f32Bytes(x);
    return { name, dims, type, data };
  };
  const tensors: GgufTensor[] = [
    t('token_embd.weight', [dim, vocab], G.F16),
    t('blk.0.attn_norm.weight', [dim], G.F32),
    t('blk.0.attn_q.weight', [dim, dim], G.Q8_0),
    t('blk.0.attn_k.weight', [dim, kvDim], G.Q8_0),
    t('blk.0.attn_v.weight', [dim, kvDim], G.Q4_0),
    t('blk.0.attn_output.weight', [dim, dim], G.Q8_0),
    t('blk.0.ffn_norm.weight', [dim], G.F32),
    t('blk.0.ffn_gate.weight', [dim, hidden], G.Q4_0),
    t('blk.0.ffn_down.weight', [hidden, dim], G.Q8_0),
    t('blk.0.ffn_up.weight', [dim, hidden], G.Q8_0),
    t('output_norm.weight', [dim], G.F32),
  ];
  if (kind === 'qwen2') tensors.push(t('blk.0.attn_q.bias', [dim], G.F32), t('blk.0.attn_k.bias', [kvDim], G.F32), t('blk.0.attn_v.bias', [kvDim], G.F32));
  else tensors.push(t('output.weight', [dim, vocab], G.Q8_0));
  return ggufBytes(kv, tensors);
}

const added = (id: number, content: string): Record<string, unknown> => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

/** A byte-level BPE tokenizer.json (GPT-2 / Llama 3 style) over the given vocabulary size. */
function byteLevelTokenizerJson(vocabSize: number): Record<string, unknown> {
  const chars = byteLevelChars();
  const vocab: Record<string, number> = { '<|begin|>': 0, '<|end|>': 1 };
  const words = ['Ġt', 'he', 'Ġthe', 'on', 'ce', 'Ġa', 'Ġup', 'ti', 'me'];
  for (const c of [...chars.slice(0, Math.max(0, vocabSize - 2 - words.length))]) vocab[c] = Object.keys(vocab).length;
  for (const word of words) if (Object.keys(vocab).length < vocabSize) vocab[word] = Object.keys(vocab).length;
  const merges = ['Ġ t', 'h e', 'Ġt he', 'o n', 'c e', 'Ġ a', 'Ġ up', 't i', 'm e'].filter((m) => vocab[m.replace(' ', '')] !== undefined);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [added(0, '<|begin|>'), added(1, '<|end|>')],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<|begin|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<|begin|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<|begin|>': { id: '<|begin|>', ids: [0], tokens: ['<|begin|>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
}

/** A SentencePiece-style BPE tokenizer.json with byte fallback (Llama 2 style). */
function sentencePieceTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  Object.assign(vocab, { '▁': 259, h: 260, i: 261, '▁h': 262, '▁hi': 263, t: 264, '▁t': 265 });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [added(0, '<unk>'), added(1, '<s>'), added(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: ['▁ h', '▁h i', '▁ t'] },
  };
}

/** The tensors of a tiny Llama-family checkpoint in Hugging Face names. */
function hfLlamaTensors(c: { dim: number; hidden: number; layers: number; heads: number; kvHeads: number; vocab: number; tied: boolean; bias: boolean }, rng: Rng, dtype: 'F32' | 'F16' | 'BF16'): TensorToWrite[] {
  const kvDim = (c.dim / c.heads) * c.kvHeads;
  const t = (name: string, shape: number[]): TensorToWrite => ({ name, shape, dtype, values: name.endsWith('layernorm.weight') || name.endsWith('norm.weight') ? new Float32Array(shape[0]).fill(1) : rng.normals(shape.reduce((a, b) => a * b, 1), 0.1) });
  const out = [t('model.embed_tokens.weight', [c.vocab, c.dim])];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    out.push(t(`${p}input_layernorm.weight`, [c.dim]), t(`${p}self_attn.q_proj.weight`, [c.dim, c.dim]), t(`${p}self_attn.k_proj.weight`, [kvDim, c.dim]), t(`${p}self_attn.v_proj.weight`, [kvDim, c.dim]));
    if (c.bias) out.push(t(`${p}self_attn.q_proj.bias`, [c.dim]), t(`${p}self_attn.k_proj.bias`, [kvDim]), t(`${p}self_attn.v_proj.bias`, [kvDim]));
    out.push(t(`${p}self_attn.o_proj.weight`, [c.dim, c.dim]), t(`${p}post_attention_layernorm.weight`, [c.dim]));
    out.push(t(`${p}mlp.gate_proj.weight`, [c.hidden, c.dim]), t(`${p}mlp.up_proj.weight`, [c.hidden, c.dim]), t(`${p}mlp.down_proj.weight`, [c.dim, c.hidden]));
  }
  out.push(t('model.norm.weight', [c.dim]));
  if (!c.tied) out.push(t('lm_head.weight', [c.vocab, c.dim]));
  return out;
}

/** The tensors of a tiny GPT-2 checkpoint (Conv1D weights `[in, out]`). */
function hfGpt2Tensors(c: { vocab: number; positions: number; d: number; layers: number }, rng: Rng): TensorToWrite[] {
  const t = (name: string, shape: number[]): TensorToWrite => ({ name, shape, dtype: 'F16', values: rng.normals(shape.reduce((a, b) => a * b, 1), 0.1) });
  const d = c.d;
  const out = [t('wte.weight', [c.vocab, d]), t('wpe.weight', [c.positions, d])];
  for (let l = 0; l < c.layers; l++) {
    const p = `h.${l}.`;
    out.push(t(`${p}ln_1.weight`, [d]), t(`${p}ln_1.bias`, [d]), t(`${p}attn.c_attn.weight`, [d, 3 * d]), t(`${p}attn.c_attn.bias`, [3 * d]), t(`${p}attn.c_proj.weight`, [d, d]), t(`${p}attn.c_proj.bias`, [d]));
    out.push(t(`${p}ln_2.weight`, [d]), t(`${p}ln_2.bias`, [d]), t(`${p}mlp.c_fc.weight`, [d, 4 * d]), t(`${p}mlp.c_fc.bias`, [4 * d]), t(`${p}mlp.c_proj.weight`, [4 * d, d]), t(`${p}mlp.c_proj.bias`, [d]));
  }
  out.push(t('ln_f.weight', [d]), t('ln_f.bias', [d]));
  return out;
}

/** The files of a Hugging Face folder, as seed files. */
function hfSeed(name: string, dir: string, weight: number): Seed {
  const kinds: Record<string, [FileKind, number]> = {
    'model.safetensors': ['safetensors', 4],
    'config.json': ['config-json', 3],
    'tokenizer.json': ['tokenizer-json', 2],
    'tokenizer_config.json': ['config-json', 0.5],
    'generation_config.json': ['config-json', 0.5],
    'model.safetensors.index.json': ['index-json', 1],
  };
  const files = readdirSync(dir)
    .sort()
    .map((f): SeedFile => {
      const [kind, w] = kinds[f] ?? (f.endsWith('.safetensors') ? (['safetensors', 2] as [FileKind, number]) : (['raw', 0] as [FileKind, number]));
      return { name: f, path: join(dir, f), kind, weight: w };
    });
  return { name, weight, files, open: '.' };
}

/** An engine folder as a seed (its `created.at` fixed, so the files are the same on every run). */
async function engineSeed(name: string, dir: string, engine: Engine, weight: number): Promise<Seed> {
  const fixed = new Engine({ ...engine.manifest, created: { by: engine.manifest.created.by, at: '2026-01-01T00:00:00.000Z' } }, engine.weightBytes);
  await fixed.save(dir);
  return { name, weight, open: '.', files: [{ name: 'engine.json', path: join(dir, 'engine.json'), kind: 'engine-json', weight: 6 }, { name: 'weights.bin', path: join(dir, 'weights.bin'), kind: 'raw', weight: 1 }] };
}

/**
 * Writes the generated seeds of `format` under `dir` and lists them with the shared ones. `../shared` is optional
 * (its seeds are left out when it is absent); `size` leaves out the slow seeds for `quick`.
 */
export async function buildCorpus(format: FuzzFormat, dir: string, size: CorpusSize = 'full'): Promise<Seed[]> {
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(12);
  const full = size === 'full';
  const seeds: Seed[] = [];
  // ../shared seeds: left out when absent, a failure when REQUIRE_SHARED=1 (CI)
  const have = (p: string): boolean => requiredPresent(p);
  const write = (name: string, bytes: Uint8Array | string): string => {
    const p = join(dir, name);
    writeFileSync(p, bytes);
    return p;
  };
  const tiny = { dim: 16, hidden: 32, layers: 2, heads: 4, kvHeads: 2, vocab: 32, seq: 16 };
  switch (format) {
    case 'llama2c': {
      seeds.push(single('tiny', write('tiny.bin', llama2cBytes(tiny, rng)), 'llama2c', 4));
      seeds.push(single('tiny-separate-classifier', write('tiny-wcls.bin', llama2cBytes({ ...tiny, vocab: -32, layers: 1 }, rng)), 'llama2c', 2));
      if (have(shared('models/stories260K/stories260K.bin'))) seeds.push(single('stories260K', shared('models/stories260K/stories260K.bin'), 'llama2c', 2));
      if (full && have(shared('models/babyllama105/model5000.bin'))) seeds.push(single('babyllama105', shared('models/babyllama105/model5000.bin'), 'llama2c', 0.5));
      break;
    }
    case 'llama2c-tokenizer': {
      const pieces = smallPieces();
      seeds.push(single('small', write('tok-small.bin', llama2cTokenizerBytes(pieces, rng)), 'llama2c-tokenizer', 3, { vocabSize: pieces.length }));
      const chars = ['<unk>', '\n<s>\n', '\n</s>\n', ...'abcdefghijklmnopqrstuvwxyz .,'.split('')];
      seeds.push(single('characters', write('tok-chars.bin', llama2cTokenizerBytes(chars, rng)), 'llama2c-tokenizer', 2, { vocabSize: chars.length }));
      if (have(shared('models/stories260K/tok512.bin'))) seeds.push(single('tok512', shared('models/stories260K/tok512.bin'), 'llama2c-tokenizer', 3, { vocabSize: 512 }));
      if (have(shared('models/babyllama105/tok105.bin'))) seeds.push(single('tok105', shared('models/babyllama105/tok105.bin'), 'llama2c-tokenizer', 2, { vocabSize: 105 }));
      if (full && have(shared('models/llama2-tokenizer/tokenizer.bin'))) seeds.push(single('llama2-32000', shared('models/llama2-tokenizer/tokenizer.bin'), 'llama2c-tokenizer', 0.3, { vocabSize: 32000 }));
      break;
    }
    case 'gguf': {
      seeds.push(single('tiny-llama', write('tiny-llama.gguf', ggufSeedBytes('llama', rng)), 'gguf', 3));
      seeds.push(single('tiny-qwen2-gpt2-tokenizer', write('tiny-qwen2.gguf', ggufSeedBytes('qwen2', rng)), 'gguf', 3));
      for (const [q, w] of [['Q8_0', 2], ['Q4_0', 1.5], ['F32', 1]] as const) {
        const p = shared(`models/gguf/stories260K-${q}.gguf`);
        if (have(p)) seeds.push(single(`stories260K-${q}`, p, 'gguf', w));
      }
      break;
    }
    case 'safetensors': {
      const llamaDir = join(dir, 'llama');
      const llama = { dim: 16, hidden: 40, layers: 2, heads: 4, kvHeads: 2, vocab: 24, tied: false, bias: false };
      const llamaCfg = { model_type: 'llama', hidden_size: 16, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 24, max_position_embeddings: 64, rope_theta: 10000, rms_norm_eps: 1e-5, tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 1, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 } };
      writeHfFolder(llamaDir, llamaCfg, hfLlamaTensors(llama, rng, 'F32'), { files: { 'tokenizer.json': byteLevelTokenizerJson(24), 'tokenizer_config.json': { bos_token: '<|begin|>', eos_token: '<|end|>' }, 'generation_config.json': { bos_token_id: 0, eos_token_id: [1] } } });
      seeds.push(hfSeed('llama', llamaDir, 3));
      const gptDir = join(dir, 'gpt2');
      writeHfFolder(gptDir, { model_type: 'gpt2', vocab_size: 270, n_positions: 16, n_embd: 16, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5, activation_function: 'gelu_new', bos_token_id: 1, eos_token_id: 2 }, hfGpt2Tensors({ vocab: 270, positions: 16, d: 16, layers: 1 }, rng), { files: { 'tokenizer.json': sentencePieceTokenizerJson(), 'tokenizer_config.json': { bos_token: '<s>', eos_token: '</s>' } } });
      seeds.push(hfSeed('gpt2', gptDir, 2));
      const qwenDir = join(dir, 'qwen2-sharded');
      const qwen = { dim: 16, hidden: 24, layers: 2, heads: 2, kvHeads: 1, vocab: 20, tied: true, bias: true };
      writeHfFolder(qwenDir, { model_type: 'qwen2', hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 20, max_position_embeddings: 32768, rms_norm_eps: 1e-6, tie_word_embeddings: true, use_sliding_window: false, eos_token_id: 1 }, hfLlamaTensors(qwen, rng, 'BF16'), { shards: 2, files: { 'tokenizer.json': byteLevelTokenizerJson(20) } });
      seeds.push(hfSeed('qwen2-sharded', qwenDir, 2));
      break;
    }
    case 'onnx': {
      const mlp = modelBytes({
        opset: 13,
        inputs: [valueInfo('x', OT.FLOAT, ['n', 4])],
        outputs: [valueInfo('y', OT.FLOAT, [])],
        initializers: [tensor('w', OT.FLOAT, [4, 4], Array.from({ length: 16 }, (_v, i) => i)), tensor('shape', OT.INT64, [2], [-1, 2]), tensor('axes', OT.INT64, [1], [1])],
        nodes: [node('MatMul', ['x', 'w'], ['h']), node('Relu', ['h'], ['r']), node('Reshape', ['r', 'shape'], ['y0']), node('Softmax', ['y0'], ['y'], { axis: { i: -1 } })],
      });
      seeds.push(single('mlp', write('mlp.onnx', mlp), 'onnx', 2));
      const extDir = join(dir, 'external');
      mkdirSync(extDir, { recursive: true });
      const wBytes = new Uint8Array(Float32Array.from({ length: 16 }, (_v, i) => i / 4).buffer);
      writeFileSync(join(extDir, 'w.bin'), wBytes);
      const ext = modelBytes({
        inputs: [valueInfo('x', OT.FLOAT, [2, 4])],
        outputs: [valueInfo('y', OT.FLOAT, [2, 4])],
        initializers: [{ name: 'w', dataType: OT.FLOAT, dims: [4, 4], dataLocation: 1, externalData: [{ key: 'location', value: 'w.bin' }, { key: 'offset', value: '0' }, { key: 'length', value: '64' }] }],
        nodes: [node('MatMul', ['x', 'w'], ['y'])],
      });
      writeFileSync(join(extDir, 'model.onnx'), ext);
      seeds.push({ name: 'external-data', weight: 1, open: 'model.onnx', files: [{ name: 'model.onnx', path: join(extDir, 'model.onnx'), kind: 'onnx', weight: 3 }, { name: 'w.bin', path: join(extDir, 'w.bin'), kind: 'raw', weight: 1 }] });
      const models: [string, number, boolean][] = [['gpt2_megatron', 2, false], ['bert_toy_optimized', 1, false], ['attention_past_state', 1, false], ['gpt2_past', 0.3, true], ['TFBertForQuestionAnswering', 0.3, true]];
      for (const [m, w, heavy] of models) {
        const p = shared('onnx/models', m, 'model.onnx');
        if ((full || !heavy) && have(p)) seeds.push({ ...single(m, p, 'onnx', w), files: [{ name: 'model.onnx', path: p, kind: 'onnx', weight: 1 }], open: 'model.onnx' });
      }
      if (have(shared('onnx/node'))) {
        // every 15th node test: a spread of ops, each a small model
        const tests = readdirSync(shared('onnx/node')).sort().filter((_t, i) => i % 15 === 7);
        for (const t of tests) {
          const p = shared('onnx/node', t, 'model.onnx');
          if (have(p)) seeds.push({ name: t, weight: 0.1, open: 'model.onnx', files: [{ name: 'model.onnx', path: p, kind: 'onnx', weight: 1 }] });
        }
      }
      break;
    }
    case 'engine': {
      const tinyModel = await loadModel(write('tiny.bin', llama2cBytes({ ...tiny, dim: 32, hidden: 64, heads: 4, kvHeads: 2, layers: 1 }, rng)));
      const target = createTarget('lavapipe');
      seeds.push(await engineSeed('tiny', join(dir, 'tiny'), await compile(tinyModel, { target }), 3));
      seeds.push(await engineSeed('tiny-int8', join(dir, 'tiny-int8'), await compile(tinyModel, { target, quant: 'int8' }), 2));
      const p = shared('models/stories260K/stories260K.bin');
      if (have(p)) seeds.push(await engineSeed('stories260K', join(dir, 'stories260K'), await compile(await loadModel(p), { target }), 2));
      // the single-file container (engine.json and weights.bin in one file, as Engine.load reads from bytes or a URL)
      const single = join(dir, 'tiny.twengine');
      const tinyEngine = await compile(tinyModel, { target });
      await new Engine({ ...tinyEngine.manifest, created: { by: tinyEngine.manifest.created.by, at: '2026-01-01T00:00:00.000Z' } }, tinyEngine.weightBytes).saveSingleFile(single);
      seeds.push({ name: 'tiny-single-file', weight: 2, open: 'tiny.twengine', files: [{ name: 'tiny.twengine', path: single, kind: 'engine-container', weight: 1 }] });
      break;
    }
  }
  return seeds;
}
