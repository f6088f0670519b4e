/**
 * Hugging Face `tokenizer.json` tokenizers, run by `@huggingface/tokenizers` (the pure-JS port of the `tokenizers`
 * library that transformers.js uses): BPE, WordPiece, Unigram and their normalizers, pre-tokenizers, post-processors
 * and decoders, as the file describes them. Built from the parsed JSON, so it runs in browsers too (the frontend
 * reads model folders: `hfTokenizerFromFolder`). The runtime imports this module lazily: it carries the library.
 * @module
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { InputError, ModelFormatError } from '../errors.js';
import { checkTokenizerConfig, checkTokenizerJson } from './tokenizer-json.js';

/** Options for {@link HfTokenizer.encode}. */
export interface HfEncodeOptions {
  /** Add the special tokens the tokenizer's post-processor adds (e.g. BOS). Default `true`, as `transformers`. */
  addSpecialTokens?: boolean;
}

/** Options for {@link HfTokenizer.decode}. */
export interface HfDecodeOptions {
  /** Leave special tokens (BOS, EOS, …) out of the text. Default `false`. */
  skipSpecialTokens?: boolean;
}

/** Special-token ids, wherever the model folder gives them. */
export interface HfSpecialTokens {
  /** Begin-of-sequence id, when the model has one. */
  bosId: number | undefined;
  /** End-of-sequence ids (generation stops at any of them; several for e.g. Llama 3 instruct models). */
  eosIds: number[];
}

/** Parses the text of a `tokenizer.json` (`ModelFormatError` when it is not a JSON object). */
export function parseTokenizerJson(text: string, file?: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ModelFormatError('json', 0, `not valid JSON: ${(e as Error).message}`, file);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ModelFormatError('json', 0, 'must be a JSON object', file);
  return json as Record<string, unknown>;
}

/** The text of a special-token entry: a string or an `AddedToken` object `{content, …}`. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** A Hugging Face tokenizer with the model's special-token ids. */
export class HfTokenizer {
  /** Begin-of-sequence id, when the model has one. */
  readonly bosId: number | undefined;
  /** First end-of-sequence id, when the model has one. */
  readonly eosId: number | undefined;
  /** Every end-of-sequence id. */
  readonly eosIds: readonly number[];
  /** Vocabulary size, added tokens included. */
  readonly vocabSize: number;
  private readonly tok: Tokenizer;

  private constructor(tok: Tokenizer, special: HfSpecialTokens) {
    this.tok = tok;
    this.bosId = special.bosId;
    this.eosIds = Object.freeze([...new Set(special.eosIds)]);
    this.eosId = this.eosIds[0];
    let max = -1;
    for (const id of tok.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
  }

  /**
   * A tokenizer from parsed `tokenizer.json` and `tokenizer_config.json` objects. Special tokens named in the
   * config (`bos_token`, `eos_token`) are looked up in the vocabulary; `special` overrides or adds ids.
   * @throws `ModelFormatError` when the description breaks the checks of `tokenizer-json.ts` (ids beyond the tokens the
   *   file holds, a component type the library does not implement or a field of the wrong kind) or the library
   *   rejects it.
   */
  static fromJson(tokenizerJson: object, tokenizerConfig: object = {}, special: Partial<HfSpecialTokens> = {}, file?: string): HfTokenizer {
    // the library trusts its input: ids and component fields are checked before it sees them
    checkTokenizerJson(tokenizerJson, file);
    checkTokenizerConfig(tokenizerConfig, file);
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (e) {
      throw new ModelFormatError('tokenizer', 0, `the tokenizer description is not usable: ${(e as Error).message}`, file);
    }
    const cfg = tokenizerConfig as Record<string, unknown>;
    const lookup = (v: unknown): number | undefined => {
      const text = tokenText(v);
      return text === undefined ? undefined : tok.token_to_id(text);
    };
    const eos = lookup(cfg.eos_token);
    return new HfTokenizer(tok, {
      bosId: special.bosId ?? lookup(cfg.bos_token),
      eosIds: [...(special.eosIds ?? []), ...(eos === undefined ? [] : [eos])],
    });
  }

  /** Token ids of a text (with the post-processor's special tokens unless `addSpecialTokens` is false). */
  encode(text: string, opts: HfEncodeOptions = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  /** Text of token ids. @throws `InputError` for an id outside the vocabulary. */
  decode(ids: readonly number[], opts: HfDecodeOptions = {}): string {
    for (const id of ids) this.checkId(id);
    if (ids.length === 0) return '';
    return this.tok.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  /**
   * The text `token` adds after `prev` (the difference of the two decodings, special tokens skipped, so a decoder
   * that strips the first token's leading space is honoured). A character split over several byte tokens comes out
   * as U+FFFD here: use {@link HfTokenizer.stream} to print generated text.
   */
  decodePiece(prev: number, token: number): string {
    const skip = { skipSpecialTokens: true };
    const before = this.decode([prev], skip);
    const both = this.decode([prev, token], skip);
    return both.startsWith(before) ? both.slice(before.length) : this.decode([token], skip);
  }

  /** An incremental decoder for generated tokens (see {@link HfTokenStream}). */
  stream(opts: HfDecodeOptions = { skipSpecialTokens: true }): HfTokenStream {
    return new HfTokenStream(this, opts);
  }

  /** A token's id, or `undefined` when it is not in the vocabulary. */
  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  /** A token's text, or `undefined` for an id outside the vocabulary. */
  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  private checkId(id: number): void {
    if (!Number.isSafeInteger(id) || id < 0 || id >= this.vocabSize) throw new InputError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
  }
}

/**
 * Incremental detokenization, as text-generation servers do it: each {@link HfTokenStream.push} returns the text the
 * new token completes, holding back a character whose UTF-8 bytes are still arriving (byte-fallback and byte-level
 * tokens), and decoding only a short window of recent tokens so the cost per token stays constant.
 */
export class HfTokenStream {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  constructor(
    private readonly tokenizer: HfTokenizer,
    private readonly opts: HfDecodeOptions,
  ) {}

  /** Adds a token; returns the newly completed text (possibly empty). */
  push(id: number): string {
    this.ids.push(id);
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.opts);
    const text = this.tokenizer.decode(this.ids.slice(this.prefixOffset), this.opts);
    if (text.length > prefix.length && !text.endsWith('\uFFFD')) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return text.slice(prefix.length);
    }
    return '';
  }

  /** The text still held back (an incomplete character at the end), when generation stops. */
  flush(): string {
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.opts);
    const text = this.tokenizer.decode(this.ids.slice(this.prefixOffset), this.opts);
    this.prefixOffset = this.readOffset = this.ids.length;
    return text.slice(prefix.length);
  }
}
