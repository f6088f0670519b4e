/**
 * The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata, as llama.cpp reads it:
 *
 * - `tokenizer.ggml.model = "llama"`: SentencePiece BPE (llama.cpp's `llm_tokenizer_spm`, which is also what
 *   llama2.c's `run.c` does), through the shared {@link SentencePieceBpe} encoder: pieces from `tokenizer.ggml.tokens`
 *   with U+2581 (`▁`) for spaces, merge scores from `.scores`, byte-fallback pieces `<0xHH>`, a `▁` prefix before the
 *   text when `add_space_prefix` (default true);
 * - `tokenizer.ggml.model = "gpt2"`: byte-level BPE with ranked merges (`tokenizer.ggml.merges`), run by
 *   `@huggingface/tokenizers` on a `tokenizer.json` built in memory, with the pre-tokenizer regex that
 *   `tokenizer.ggml.pre` names (`gpt-2`/`default`, `llama-bpe`, `qwen2`).
 *
 * Text is taken literally, as llama.cpp does by default (control tokens such as `<s>` written in the prompt are not
 * parsed as tokens). Decoding renders control, unknown and unused tokens as nothing, byte tokens as their byte, and
 * (SentencePiece) drops the leading space of the piece right after BOS, as SentencePiece and run.c print text.
 *
 * All metadata is validated before use; a malformed tokenizer is a {@link ModelFormatError} naming the key (and the
 * element), an unimplemented one an `UnsupportedModelError`.
 * @module
 */
import { InputError, ModelFormatError } from '../../errors.js';
import { UnsupportedModelError } from '../hf/errors.js';
import { HfTokenizer } from '../../tokenizers/hf.js';
import { concatBytes, SentencePieceBpe } from '../../tokenizers/sentencepiece-bpe.js';
import type { TextTokenizer } from '../../tokenizers/text-tokenizer.js';
import type { GgufFile } from './reader.js';
import { GgufValueType } from './types.js';

/** GGUF token types (`tokenizer.ggml.token_type`), as llama.cpp's `llama_token_type`. */
export const GgufTokenType = {
  /** Not set (llama.cpp renders it as nothing). */
  UNDEFINED: 0,
  /** An ordinary piece. */
  NORMAL: 1,
  /** The unknown token. */
  UNKNOWN: 2,
  /** A control token (BOS, EOS, …). */
  CONTROL: 3,
  /** A user-defined piece, rendered as stored. */
  USER_DEFINED: 4,
  /** An unused slot. */
  UNUSED: 5,
  /** A byte-fallback piece `<0xHH>`. */
  BYTE: 6,
} as const;

/** The tokenizer models this reader implements (`tokenizer.ggml.model`). */
export const GGUF_TOKENIZER_MODELS: readonly string[] = Object.freeze(['llama', 'gpt2']);

/** Options for {@link GgufTokenizer.encode}. */
export interface GgufEncodeOptions {
  /** Prepend BOS. Default: the file's `tokenizer.ggml.add_bos_token` (true for `llama`, false for `gpt2` when absent). */
  bos?: boolean;
  /** Append EOS. Default: the file's `tokenizer.ggml.add_eos_token` (false when absent). */
  eos?: boolean;
}

const SPACE_MARK = '\u2581';
const utf8Encoder = new TextEncoder();

/** The pre-tokenizer regexes of Llama 3 (`llama-bpe`) and Qwen2 (`qwen2`), as in their tokenizer.json files. */
const LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** `tokenizer.ggml.pre` values → the Hugging Face pre-tokenizer (and `ignore_merges`) each stands for. */
function preTokenizer(pre: string): { preTokenizer: object; ignoreMerges: boolean } | undefined {
  const byteLevel = (useRegex: boolean): object => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: useRegex });
  const split = (regex: string): object => ({ type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false }, byteLevel(false)] });
  if (pre === 'default' || pre === 'gpt-2' || pre === 'gpt2') return { preTokenizer: byteLevel(true), ignoreMerges: false };
  if (pre === 'llama-bpe' || pre === 'llama3') return { preTokenizer: split(LLAMA3_REGEX), ignoreMerges: true };
  if (pre === 'qwen2') return { preTokenizer: split(QWEN2_REGEX), ignoreMerges: false };
  return undefined;
}

/** GPT-2's byte → printable character map (`bytes_to_unicode`), as a string indexed by byte. */
function byteLevelChars(): string[] {
  const out: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = String.fromCodePoint(printable ? b : 256 + n++);
  }
  return out;
}

/** Typed access to the `tokenizer.ggml.*` keys, every failure a {@link ModelFormatError} naming the key. */
class TokenizerMetadata {
  constructor(private readonly f: GgufFile) {}
  fail(key: string, msg: string): never {
    throw new ModelFormatError(key, this.f.entry(key)?.offset ?? 0, msg, this.f.file);
  }
  /** An array of `elemType` (or, when `elemTypes` lists several, of any of them), or `undefined` when absent. */
  array(key: string, elemTypes: readonly number[], what: string): readonly unknown[] | undefined {
    const e = this.f.entry(key);
    if (!e) return undefined;
    if (e.type !== GgufValueType.ARRAY || !Array.isArray(e.value)) this.fail(key, `must be an array of ${what}, got value type ${e.type}`);
    if (e.value.length > 0 && !elemTypes.includes(e.arrayType!)) this.fail(key, `must be an array of ${what}, got element type ${e.arrayType}`);
    return e.value;
  }
  bool(key: string, fallback: boolean): boolean {
    const e = this.f.entry(key);
    if (!e) return fallback;
    if (typeof e.value !== 'boolean') this.fail(key, `must be a bool, got ${String(e.value)}`);
    return e.value;
  }
  /** A token id that must name one of `n` tokens. */
  id(key: string, n: number, fallback: number | undefined): number | undefined {
    const e = this.f.entry(key);
    if (!e) return fallback;
    const v = e.value;
    // llama.cpp writes -1 (as uint32 0xFFFFFFFF or int32 -1) for "no such token"
    if (v === -1 || v === 0xffffffff) return undefined;
    const id = this.f.getUint(key)!;
    if (id >= n) this.fail(key, `token id ${id} is out of range for the ${n} tokens of tokenizer.ggml.tokens`);
    return id;
  }
}

/** A SentencePiece vocabulary's decoding tables. */
interface SpmTables {
  readonly bpe: SentencePieceBpe;
  /** Each token's rendered bytes (▁ → space; a byte token's byte; nothing for control, unknown and unused tokens). */
  readonly rendered: Uint8Array[];
  /** Prepend `▁` to non-empty text. */
  readonly addSpacePrefix: boolean;
}

/** A GPT-2 style vocabulary's tables. */
interface BpeTables {
  readonly hf: HfTokenizer;
  /** The id the library knows each token by (the first of duplicates). */
  readonly canonical: Int32Array;
}

/**
 * A GGUF file's own tokenizer (see the module notes). Build it with {@link GgufTokenizer.fromGguf}.
 */
export class GgufTokenizer implements TextTokenizer {
  /** `tokenizer.ggml.model`: `llama` (SentencePiece) or `gpt2` (byte-level BPE). */
  readonly model: 'llama' | 'gpt2';
  /** `tokenizer.ggml.pre` (gpt2 only). */
  readonly pre: string | undefined;
  /** Number of tokens. */
  readonly vocabSize: number;
  /** Begin-of-sequence id (`tokenizer.ggml.bos_token_id`; `llama` default 1). */
  readonly bosId: number | undefined;
  /** End-of-sequence id (`tokenizer.ggml.eos_token_id`; `llama` default 2). */
  readonly eosId: number | undefined;
  /** Whether {@link GgufTokenizer.encode} adds BOS by default (`tokenizer.ggml.add_bos_token`). */
  readonly addBos: boolean;
  /** Whether {@link GgufTokenizer.encode} adds EOS by default (`tokenizer.ggml.add_eos_token`). */
  readonly addEos: boolean;

  private readonly tokens: readonly string[];
  private readonly types: Uint8Array;
  private readonly spm: SpmTables | undefined;
  private readonly bpe: BpeTables | undefined;
  private readonly decoder = new TextDecoder('utf-8');

  private constructor(
    fields: Pick<GgufTokenizer, 'model' | 'pre' | 'bosId' | 'eosId' | 'addBos' | 'addEos'>,
    tokens: readonly string[],
    types: Uint8Array,
    tables: { spm?: SpmTables; bpe?: BpeTables },
  ) {
    this.model = fields.model;
    this.pre = fields.pre;
    this.bosId = fields.bosId;
    this.eosId = fields.eosId;
    this.addBos = fields.addBos;
    this.addEos = fields.addEos;
    this.vocabSize = tokens.length;
    this.tokens = tokens;
    this.types = types;
    this.spm = tables.spm;
    this.bpe = tables.bpe;
  }

  /**
   * The tokenizer of a GGUF file, or `undefined` when it has none (no `tokenizer.ggml.model`, or `none`/`no_vocab`).
   * @throws `ModelFormatError` for malformed `tokenizer.ggml.*` metadata (naming the key), `UnsupportedModelError`
   *   for a tokenizer model or pre-tokenizer that is not implemented.
   */
  static fromGguf(f: GgufFile): GgufTokenizer | undefined {
    const m: TokenizerMetadata = new TokenizerMetadata(f);
    const model = f.getString('tokenizer.ggml.model');
    if (model === undefined || model === 'none' || model === 'no_vocab') return undefined;
    if (model !== 'llama' && model !== 'gpt2')
      throw new UnsupportedModelError('tokenizer.ggml.model', `tokenizer model '${model}' is not supported (supported: ${GGUF_TOKENIZER_MODELS.join(', ')})`, f.file);
    const tokens = m.array('tokenizer.ggml.tokens', [GgufValueType.STRING], 'strings');
    if (tokens === undefined) m.fail('tokenizer.ggml.tokens', `missing (tokenizer.ggml.model is '${model}')`);
    if (tokens.length === 0) m.fail('tokenizer.ggml.tokens', 'is empty');
    const n = tokens.length;
    const texts = tokens as readonly string[];
    const rawTypes = m.array('tokenizer.ggml.token_type', [GgufValueType.INT32, GgufValueType.UINT32, GgufValueType.INT8, GgufValueType.UINT8, GgufValueType.INT16, GgufValueType.UINT16], 'integers');
    const types = new Uint8Array(n).fill(GgufTokenType.NORMAL);
    if (rawTypes !== undefined) {
      if (rawTypes.length !== n) m.fail('tokenizer.ggml.token_type', `has ${rawTypes.length} entries but tokenizer.ggml.tokens has ${n}`);
      for (let i = 0; i < n; i++) {
        const t = rawTypes[i] as number;
        if (!(t >= 0 && t <= 6)) m.fail('tokenizer.ggml.token_type', `entry ${i} is ${t}, not a token type (0..6)`);
        types[i] = t;
      }
    }
    const llama = model === 'llama';
    const fields = {
      model: model as 'llama' | 'gpt2',
      pre: llama ? undefined : (f.getString('tokenizer.ggml.pre') ?? 'default'),
      bosId: m.id('tokenizer.ggml.bos_token_id', n, llama ? 1 : undefined),
      eosId: m.id('tokenizer.ggml.eos_token_id', n, llama ? 2 : undefined),
      addBos: m.bool('tokenizer.ggml.add_bos_token', llama),
      addEos: m.bool('tokenizer.ggml.add_eos_token', false),
    };
    if (llama && fields.bosId !== undefined && fields.bosId >= n) m.fail('tokenizer.ggml.bos_token_id', `default BOS id 1 is out of range for ${n} tokens`);
    if (llama && fields.eosId !== undefined && fields.eosId >= n) m.fail('tokenizer.ggml.eos_token_id', `default EOS id 2 is out of range for ${n} tokens`);
    if (fields.addBos && fields.bosId === undefined) m.fail('tokenizer.ggml.bos_token_id', 'missing, but tokenizer.ggml.add_bos_token asks for BOS');
    if (fields.addEos && fields.eosId === undefined) m.fail('tokenizer.ggml.eos_token_id', 'missing, but tokenizer.ggml.add_eos_token asks for EOS');
    const tables = llama ? { spm: spmTables(m, texts, types) } : { bpe: bpeTables(f, m, texts, types, fields.pre!) };
    return new GgufTokenizer(fields, texts, types, tables);
  }

  /**
   * Token ids of a text.
   * @param text - Taken literally (control-token text is not parsed); lone surrogates are encoded as U+FFFD.
   * @param opts - Whether to add BOS and EOS (defaults: the file's `add_bos_token` / `add_eos_token`).
   */
  encode(text: string, opts: GgufEncodeOptions = {}): number[] {
    const out: number[] = [];
    if ((opts.bos ?? this.addBos) && this.bosId !== undefined) out.push(this.bosId);
    if (this.spm) {
      if (text.length > 0) {
        const escaped = `${this.spm.addSpacePrefix ? ' ' : ''}${text}`.replaceAll(' ', SPACE_MARK);
        out.push(...this.spm.bpe.encode(utf8Encoder.encode(escaped)));
      }
    } else if (text.length > 0) {
      out.push(...this.bpe!.hf.encode(text, { addSpecialTokens: false }));
    }
    if ((opts.eos ?? this.addEos) && this.eosId !== undefined) out.push(this.eosId);
    return out;
  }

  /**
   * Text of a token sequence: control, unknown and unused tokens give nothing; with SentencePiece the first token, and
   * any token right after BOS, loses its leading space.
   * @throws `InputError` if an id is out of range.
   */
  decode(ids: readonly number[]): string {
    for (const id of ids) this.checkId(id);
    if (this.bpe) return this.decodeBpe(ids);
    const parts: Uint8Array[] = [];
    let total = 0;
    let prev = -1;
    for (const id of ids) {
      const b = this.spmPieceBytes(prev, id, prev === -1);
      parts.push(b);
      total += b.length;
      prev = id;
    }
    return this.decoder.decode(concatBytes(parts, total));
  }

  /**
   * The text `token` adds after `prev`. A byte token that is part of a multi-byte character comes out as U+FFFD: use
   * {@link GgufTokenizer.decode} on whole sequences.
   * @throws `InputError` if an id is out of range.
   */
  decodePiece(prev: number, token: number): string {
    this.checkId(token);
    if (this.bpe) return this.decodeBpe([token]);
    return this.decoder.decode(this.spmPieceBytes(prev, token, false));
  }

  /**
   * A token's text as stored (`▁the`, `<0x0A>`, `Ġthe`, `<s>`).
   * @throws `InputError` if `id` is out of range.
   */
  piece(id: number): string {
    this.checkId(id);
    return this.tokens[id];
  }

  /**
   * A token's type (see {@link GgufTokenType}).
   * @throws `InputError` if `id` is out of range.
   */
  tokenType(id: number): number {
    this.checkId(id);
    return this.types[id];
  }

  private spmPieceBytes(prev: number, id: number, first: boolean): Uint8Array {
    const b = this.spm!.rendered[id];
    const stripSpace = (first || prev === this.bosId) && this.types[id] !== GgufTokenType.BYTE;
    return stripSpace && b.length > 0 && b[0] === 0x20 ? b.subarray(1) : b;
  }

  private decodeBpe(ids: readonly number[]): string {
    const t = this.bpe!;
    const keep: number[] = [];
    for (const id of ids) {
      const ty = this.types[id];
      if (ty !== GgufTokenType.CONTROL && ty !== GgufTokenType.UNKNOWN && ty !== GgufTokenType.UNUSED) keep.push(t.canonical[id]);
    }
    return keep.length ? t.hf.decode(keep) : '';
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new InputError(`token id ${id} is out of range for a vocab of ${this.vocabSize}`);
  }
}

/** The SentencePiece encoder and rendered pieces of a `llama` vocabulary. */
function spmTables(m: TokenizerMetadata, texts: readonly string[], types: Uint8Array): SpmTables {
  const n = texts.length;
  const rawScores = m.array('tokenizer.ggml.scores', [GgufValueType.FLOAT32, GgufValueType.FLOAT64], 'floats');
  // llama.cpp reads a missing score as 0
  const scores = new Float32Array(n);
  if (rawScores !== undefined) {
    if (rawScores.length !== n) m.fail('tokenizer.ggml.scores', `has ${rawScores.length} entries but tokenizer.ggml.tokens has ${n}`);
    for (let i = 0; i < n; i++) scores[i] = rawScores[i] as number;
  }
  const pieces = texts.map((t) => utf8Encoder.encode(t));
  const firstId = new Map<string, number>();
  for (let i = 0; i < n; i++) if (!firstId.has(texts[i])) firstId.set(texts[i], i);
  // byte fallback: the token whose text is `<0xHH>`, as llama.cpp's byte_to_token
  const byteIds = Array.from({ length: 256 }, (_x, b) => firstId.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`) ?? -1);
  // llama.cpp's SentencePiece default is 0, also when the file says -1
  const unknownId = m.id('tokenizer.ggml.unknown_token_id', n, 0) ?? 0;
  const rendered = texts.map((t, i): Uint8Array => {
    switch (types[i]) {
      case GgufTokenType.NORMAL:
        return utf8Encoder.encode(t.replaceAll(SPACE_MARK, ' '));
      case GgufTokenType.USER_DEFINED:
        return pieces[i];
      case GgufTokenType.BYTE: {
        const match = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
        if (!match) m.fail('tokenizer.ggml.tokens', `token ${i} has type BYTE but its text '${t}' is not <0xHH>`);
        return Uint8Array.of(parseInt(match[1], 16));
      }
      default:
        return new Uint8Array(0);
    }
  });
  const bpe = new SentencePieceBpe({ pieces, scores, byteIds, unknownId, fallback: 'after-merge' });
  return { bpe, rendered, addSpacePrefix: m.bool('tokenizer.ggml.add_space_prefix', true) };
}

/** The byte-level BPE tokenizer of a `gpt2` vocabulary, as a Hugging Face tokenizer built from an in-memory tokenizer.json. */
function bpeTables(f: GgufFile, m: TokenizerMetadata, texts: readonly string[], types: Uint8Array, pre: string): BpeTables {
  const n = texts.length;
  const split = preTokenizer(pre);
  if (!split) throw new UnsupportedModelError('tokenizer.ggml.pre', `pre-tokenizer '${pre}' is not supported (supported: default, gpt-2, llama-bpe, qwen2)`, f.file);
  // a null-prototype object: a token such as "__proto__" is an ordinary key
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  const canonical = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const first = vocab[texts[i]];
    if (first === undefined) vocab[texts[i]] = i;
    canonical[i] = first ?? i;
  }
  const chars = byteLevelChars();
  for (let b = 0; b < 256; b++) {
    if (vocab[chars[b]] === undefined) m.fail('tokenizer.ggml.tokens', `lacks the byte-level token '${chars[b]}' for byte 0x${b.toString(16).padStart(2, '0')}: a gpt2 vocabulary must hold all 256`);
  }
  const rawMerges = m.array('tokenizer.ggml.merges', [GgufValueType.STRING], 'strings');
  if (rawMerges === undefined) m.fail('tokenizer.ggml.merges', "missing (tokenizer.ggml.model is 'gpt2')");
  const merges: [string, string][] = new Array(rawMerges.length);
  for (let i = 0; i < rawMerges.length; i++) {
    const s = rawMerges[i] as string;
    // llama.cpp splits at the first space after the first character
    const at = s.indexOf(' ', 1);
    if (at < 0) m.fail('tokenizer.ggml.merges', `merge ${i} '${s}' is not two tokens separated by a space`);
    const a = s.slice(0, at);
    const b = s.slice(at + 1);
    if (vocab[a + b] === undefined) m.fail('tokenizer.ggml.merges', `merge ${i} '${s}' makes '${a + b}', which is not in tokenizer.ggml.tokens`);
    merges[i] = [a, b];
  }
  // user-defined tokens are matched in text as llama.cpp does; control tokens are not (text is taken literally)
  const addedTokens = [];
  for (let i = 0; i < n; i++) {
    if (types[i] === GgufTokenType.USER_DEFINED && canonical[i] === i) addedTokens.push({ id: i, content: texts[i], single_word: false, lstrip: false, rstrip: false, normalized: false, special: false });
  }
  const json = {
    version: '1.0',
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: split.preTokenizer,
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: split.ignoreMerges, vocab, merges },
  };
  // decoding is lossless: no clean-up of spaces before punctuation (llama.cpp cleans them for the `default`/`gpt-2`
  // pre-tokenizers only)
  return { hf: HfTokenizer.fromJson(json, { clean_up_tokenization_spaces: false }, {}, f.file), canonical };
}
