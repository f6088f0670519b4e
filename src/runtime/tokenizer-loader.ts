/**
 * The runtime's tokenizer loader: reads a tokenizer from bytes, a `Response`, a URL or (in Node) a path, and tells the
 * two formats an engine may carry apart by their bytes: a llama2.c `.bin` vocabulary or a Hugging Face
 * `tokenizer.json`. The Hugging Face tokenizer (and the library it runs on) is imported only when a JSON file
 * arrives, so pages that use llama2.c tokenizers do not download it.
 * @module
 */
import { InputError } from '../errors.js';
import type { HfTokenizer } from '../tokenizers/hf.js';
import { Llama2cTokenizer } from '../tokenizers/llama2c.js';
import { isNode, nodeEngineFiles } from './node-access.js';

/** A tokenizer the runtime loads: llama2.c or Hugging Face (both implement `TextTokenizer`). */
export type RuntimeTokenizer = Llama2cTokenizer | HfTokenizer;

/** What {@link loadTokenizer} reads: the bytes, a `Response`, a URL, or (Node) a path. */
export type TokenizerSource = string | URL | Response | ArrayBuffer | Uint8Array;

/** Options of {@link loadTokenizer}. */
export interface LoadTokenizerOptions {
  /** The model's vocab size: checked against a llama2.c file (default: the number of entries the file holds). */
  readonly vocabSize?: number;
  /** The BOS id of a `tokenizer.json` model (its `tokenizer_config.json` is not at hand; an engine's manifest has it). */
  readonly bosId?: number;
  /** The stop ids of a `tokenizer.json` model. */
  readonly eosIds?: readonly number[];
  /** The model's `tokenizer_config.json`, parsed, for a `tokenizer.json` (special tokens by name). */
  readonly tokenizerConfig?: object;
  /** The `fetch` for URLs (default `globalThis.fetch`). */
  readonly fetch?: (input: string, init?: RequestInit) => Promise<Response>;
  /** Resolve to undefined instead of throwing when the file does not exist (HTTP 404, no such file). */
  readonly optional?: boolean;
}

/** Whether bytes look like JSON text (a `{` first, after an optional UTF-8 BOM and whitespace). */
function looksLikeJson(b: Uint8Array): boolean {
  let i = b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf ? 3 : 0;
  while (i < b.length && (b[i] === 0x20 || b[i] === 0x0a || b[i] === 0x0d || b[i] === 0x09)) i++;
  // a llama2.c file starts with its int32 max_token_length: 123 would read as `{` followed by three zero bytes
  return b[i] === 0x7b && !(i === 0 && b[1] === 0 && b[2] === 0 && b[3] === 0);
}

/**
 * A tokenizer from a file's bytes: a Hugging Face `tokenizer.json` (JSON text) or a llama2.c `.bin` vocabulary.
 * Throws `ModelFormatError` for a malformed file.
 */
export async function tokenizerFromBytes(bytes: Uint8Array, o: LoadTokenizerOptions = {}, file?: string): Promise<RuntimeTokenizer> {
  if (looksLikeJson(bytes)) {
    const { parseTokenizerJson, HfTokenizer } = await import('../tokenizers/hf.js');
    const json = parseTokenizerJson(new TextDecoder().decode(bytes), file);
    return HfTokenizer.fromJson(json, o.tokenizerConfig ?? {}, { bosId: o.bosId, eosIds: o.eosIds ? [...o.eosIds] : undefined }, file);
  }
  return Llama2cTokenizer.fromBytes(bytes, o.vocabSize ?? Llama2cTokenizer.entryCount(bytes, file), file);
}

/**
 * Loads a tokenizer (see {@link tokenizerFromBytes}) from bytes, a `Response`, a URL, or (in Node) a path. Throws
 * `InputError` when it cannot be read (or resolves to undefined with `optional`, when it does not exist).
 */
export async function loadTokenizer(source: TokenizerSource, o: LoadTokenizerOptions & { optional: true }): Promise<RuntimeTokenizer | undefined>;
export async function loadTokenizer(source: TokenizerSource, o?: LoadTokenizerOptions): Promise<RuntimeTokenizer>;
export async function loadTokenizer(source: TokenizerSource, o: LoadTokenizerOptions = {}): Promise<RuntimeTokenizer | undefined> {
  if (source instanceof Uint8Array) return tokenizerFromBytes(source, o);
  if (source instanceof ArrayBuffer) return tokenizerFromBytes(new Uint8Array(source), o);
  if (typeof Response !== 'undefined' && source instanceof Response) {
    if (!source.ok) {
      if (o.optional && source.status === 404) return undefined;
      throw new InputError(`${source.url || 'the tokenizer response'}: HTTP ${source.status} ${source.statusText}`.trim());
    }
    return tokenizerFromBytes(new Uint8Array(await source.arrayBuffer()), o, source.url || undefined);
  }
  const s = source instanceof URL ? source.href : source;
  if (typeof s !== 'string') throw new InputError(`loadTokenizer needs bytes, a Response, a URL or a path; got ${typeof source}`);
  const isUrl = /^[a-z][a-z0-9+.-]+:/i.test(s);
  if ((!isUrl && isNode()) || (s.startsWith('file:') && isNode())) {
    const files = await nodeEngineFiles(`reading the tokenizer ${s}`);
    if (o.optional && !(await files.localFileExists(s))) return undefined;
    return tokenizerFromBytes(await files.readLocalFile(s), o, files.toPath(s));
  }
  const g = globalThis as { location?: { href?: string }; document?: { baseURI?: string } };
  const base = g.document?.baseURI ?? g.location?.href;
  if (!isUrl && !base) throw new InputError(`the tokenizer path '${s}' is relative and there is no page URL to resolve it against`);
  const url = isUrl ? new URL(s) : new URL(s, base);
  const fetchFn = o.fetch ?? ((input: string, init?: RequestInit) => fetch(input, init));
  let r: Response;
  try {
    r = await fetchFn(url.href);
  } catch (e) {
    throw new InputError(`fetching ${url.href} failed: ${(e as Error).message}`);
  }
  if (!r.ok && o.optional && r.status === 404) return undefined;
  if (!r.ok) throw new InputError(`fetching ${url.href} failed: HTTP ${r.status} ${r.statusText}`.trim());
  return tokenizerFromBytes(new Uint8Array(await r.arrayBuffer()), o, url.href);
}
