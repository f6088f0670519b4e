/**
 * Checks on a `tokenizer.json` (and its `tokenizer_config.json`) before `@huggingface/tokenizers` reads them. The
 * library trusts its input: token ids size arrays it walks from 0 to the largest id (an id of 2^31 in a 1 KB file
 * made it loop for minutes), and many component fields are read only when text is encoded or decoded (a template
 * item that is not an object threw a `TypeError` at the first `encode`). So the model's ids are bounded by the number
 * of tokens the file holds, and every component the library builds (normalizer, pre-tokenizer, post-processor,
 * decoder, and `Sequence`s of them) must be of a type it implements, with each field it reads of the kind it expects.
 * Every complaint is a {@link ModelFormatError} naming the key path.
 * @module
 */
import { ModelFormatError } from '../errors.js';

/** What a component field must hold. */
type FieldKind = 'string' | 'bool' | 'int' | 'count' | 'number' | 'pattern' | 'template' | 'token-pair' | 'list' | 'object';

/** A component type's fields: kind, and whether the library needs it present. */
type ComponentSchema = Readonly<Record<string, readonly [FieldKind, 'required' | 'optional']>>;

const o = (kind: FieldKind): readonly [FieldKind, 'optional'] => [kind, 'optional'];
const r = (kind: FieldKind): readonly [FieldKind, 'required'] => [kind, 'required'];

/** The component types of each section the library implements, with the fields each reads. */
const COMPONENTS: Readonly<Record<string, { readonly list: string; readonly types: Readonly<Record<string, ComponentSchema>> }>> = {
  normalizer: {
    list: 'normalizers',
    types: {
      BertNormalizer: { clean_text: o('bool'), handle_chinese_chars: o('bool'), lowercase: o('bool'), strip_accents: o('bool') },
      Precompiled: { precompiled_charsmap: o('string') },
      Sequence: { normalizers: r('list') },
      Replace: { pattern: r('pattern'), content: o('string') },
      NFC: {},
      NFD: {},
      NFKC: {},
      NFKD: {},
      Strip: { strip_left: o('bool'), strip_right: o('bool') },
      StripAccents: {},
      Lowercase: {},
      Prepend: { prepend: r('string') },
    },
  },
  pre_tokenizer: {
    list: 'pretokenizers',
    types: {
      BertPreTokenizer: {},
      Sequence: { pretokenizers: r('list') },
      Whitespace: {},
      WhitespaceSplit: {},
      Metaspace: { replacement: o('string'), prepend_scheme: o('string'), str_rep: o('string'), add_prefix_space: o('bool') },
      ByteLevel: { add_prefix_space: o('bool'), trim_offsets: o('bool'), use_regex: o('bool') },
      Split: { pattern: r('pattern'), behavior: o('string'), invert: o('bool') },
      Punctuation: { behavior: o('string') },
      Digits: { individual_digits: o('bool') },
      Replace: { pattern: r('pattern'), content: o('string') },
      FixedLength: { length: o('count') },
    },
  },
  post_processor: {
    list: 'processors',
    types: {
      TemplateProcessing: { single: r('template'), pair: r('template'), special_tokens: o('object') },
      ByteLevel: { add_prefix_space: o('bool'), trim_offsets: o('bool'), use_regex: o('bool') },
      BertProcessing: { cls: r('token-pair'), sep: r('token-pair') },
      RobertaProcessing: { cls: r('token-pair'), sep: r('token-pair'), trim_offsets: o('bool'), add_prefix_space: o('bool') },
      Sequence: { processors: r('list') },
    },
  },
  decoder: {
    list: 'decoders',
    types: {
      ByteLevel: { add_prefix_space: o('bool'), trim_offsets: o('bool'), use_regex: o('bool') },
      WordPiece: { prefix: o('string'), cleanup: o('bool') },
      Metaspace: { replacement: o('string'), prepend_scheme: o('string'), add_prefix_space: o('bool') },
      BPEDecoder: { suffix: o('string') },
      CTC: { pad_token: o('string'), word_delimiter_token: o('string'), cleanup: o('bool') },
      Sequence: { decoders: r('list') },
      Replace: { pattern: r('pattern'), content: o('string') },
      Fuse: {},
      Strip: { content: o('string'), start: o('int'), stop: o('int') },
      ByteFallback: {},
    },
  },
};

/** The token-model types the library implements, with their fields. */
const MODELS: Readonly<Record<string, ComponentSchema>> = {
  BPE: { unk_token: o('string'), byte_fallback: o('bool'), ignore_merges: o('bool'), fuse_unk: o('bool'), continuing_subword_prefix: o('string'), end_of_word_suffix: o('string'), dropout: o('number') },
  WordPiece: { unk_token: o('string'), continuing_subword_prefix: o('string'), max_input_chars_per_word: o('count') },
  Unigram: { unk_id: o('int') },
  // no `type` the library switches on: it reads a vocabulary without merges or a subword prefix as its `Legacy` model
  WordLevel: { unk_token: o('string') },
};

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isId = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Checks a tokenizer.json object; `file` names it in errors. */
export function checkTokenizerJson(json: unknown, file?: string): void {
  function fail(path: string, msg: string): never {
    throw new ModelFormatError(path, 0, msg, file);
  }
  if (!isObj(json)) fail('tokenizer', 'must be a JSON object');
  const t = json as Record<string, unknown>;

  const field = (path: string, kind: FieldKind, v: unknown, section: string): void => {
    const ok = ((): boolean => {
      switch (kind) {
        case 'string':
          return typeof v === 'string';
        case 'bool':
          return typeof v === 'boolean';
        case 'int':
          return typeof v === 'number' && Number.isSafeInteger(v);
        case 'count':
          return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;
        case 'number':
          return typeof v === 'number' && Number.isFinite(v);
        case 'object':
          return isObj(v);
        case 'pattern':
          return isObj(v) && (typeof v.String === 'string' || typeof v.Regex === 'string');
        case 'token-pair':
          return Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && isId(v[1]);
        case 'template':
          if (!Array.isArray(v)) return false;
          v.forEach((item, i) => {
            const special = isObj(item) && isObj(item.SpecialToken) && typeof item.SpecialToken.id === 'string' && Number.isSafeInteger(item.SpecialToken.type_id);
            const seq = isObj(item) && isObj(item.Sequence) && (item.Sequence.id === 'A' || item.Sequence.id === 'B') && Number.isSafeInteger(item.Sequence.type_id);
            if (!special && !seq) fail(`${path}[${i}]`, `must be {"SpecialToken": {"id": string, "type_id": integer}} or {"Sequence": {"id": "A" | "B", "type_id": integer}}, got ${JSON.stringify(item)}`);
          });
          return true;
        case 'list':
          if (!Array.isArray(v)) return false;
          v.forEach((c, i) => component(`${path}[${i}]`, c, section, false));
          return true;
      }
    })();
    if (!ok) fail(path, `must be ${kind === 'count' ? 'a positive integer' : kind === 'pattern' ? '{"String": string} or {"Regex": string}' : kind === 'token-pair' ? '[token, id]' : `a ${kind}`}, got ${JSON.stringify(v)}`);
  };
  const fields = (path: string, obj: Record<string, unknown>, schema: ComponentSchema, section: string): void => {
    for (const [name, [kind, need]] of Object.entries(schema)) {
      const v = obj[name];
      if (v === undefined || v === null) {
        if (need === 'required') fail(`${path}.${name}`, 'is missing');
        continue;
      }
      field(`${path}.${name}`, kind, v, section);
    }
  };
  const component = (path: string, v: unknown, section: string, nullable: boolean): void => {
    if (v === null && nullable) return;
    if (!isObj(v)) return fail(path, `must be an object${nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`);
    const { types } = COMPONENTS[section];
    const type = v.type;
    if (typeof type !== 'string' || !Object.prototype.hasOwnProperty.call(types, type)) fail(`${path}.type`, `${JSON.stringify(type)} is not a ${section} type (known: ${Object.keys(types).join(', ')})`);
    fields(path, v, types[type as string], section);
  };
  for (const section of Object.keys(COMPONENTS)) {
    if (!(section in t)) fail(section, 'is missing (null when the tokenizer has none)');
    component(section, t[section], section, true);
  }

  // the model: ids are bounded by the tokens the file holds, since the library walks arrays up to the largest id
  const m = t.model;
  if (!isObj(m)) return fail('model', `must be an object, got ${JSON.stringify(m)}`);
  const type = m.type ?? (Array.isArray(m.vocab) ? 'Unigram' : 'BPE');
  if (typeof type !== 'string' || !Object.prototype.hasOwnProperty.call(MODELS, type)) fail('model.type', `${JSON.stringify(type)} is not a model type (known: ${Object.keys(MODELS).join(', ')})`);
  fields('model', m, MODELS[type as string], 'model');
  let count = 0;
  let maxId = -1;
  if (type === 'Unigram') {
    if (!Array.isArray(m.vocab)) fail('model.vocab', 'a Unigram vocabulary must be an array of [piece, score] pairs');
    (m.vocab as unknown[]).forEach((e, i) => {
      if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== 'string' || typeof e[1] !== 'number') fail(`model.vocab[${i}]`, `must be a [piece, score] pair, got ${JSON.stringify(e)}`);
    });
    count = maxId = (m.vocab as unknown[]).length;
    if (m.unk_id !== undefined && m.unk_id !== null && !(isId(m.unk_id) && m.unk_id < count)) fail('model.unk_id', `must name one of the ${count} pieces, got ${JSON.stringify(m.unk_id)}`);
  } else {
    if (!isObj(m.vocab)) fail('model.vocab', `must be an object mapping tokens to ids, got ${JSON.stringify(m.vocab)?.slice(0, 40)}`);
    for (const [tok, id] of Object.entries(m.vocab as Record<string, unknown>)) {
      if (!isId(id)) fail(`model.vocab[${JSON.stringify(tok)}]`, `token id must be a non-negative integer, got ${JSON.stringify(id)}`);
      maxId = Math.max(maxId, id);
      count++;
    }
  }
  if (type === 'BPE') {
    if (!Array.isArray(m.merges)) fail('model.merges', `must be an array, got ${JSON.stringify(m.merges)?.slice(0, 40)}`);
    (m.merges as unknown[]).forEach((x, i) => {
      const ok = (typeof x === 'string' && x.includes(' ')) || (Array.isArray(x) && x.length === 2 && typeof x[0] === 'string' && typeof x[1] === 'string');
      if (!ok) fail(`model.merges[${i}]`, `must be "a b" or ["a", "b"], got ${JSON.stringify(x)}`);
    });
  }
  const added = t.added_tokens ?? [];
  if (!Array.isArray(added)) fail('added_tokens', `must be an array, got ${JSON.stringify(added)?.slice(0, 40)}`);
  (added as unknown[]).forEach((a, i) => {
    if (!isObj(a) || !isId(a.id) || typeof a.content !== 'string') fail(`added_tokens[${i}]`, `must be {"id": non-negative integer, "content": string, …}, got ${JSON.stringify(a)?.slice(0, 60)}`);
    for (const k of ['special', 'normalized', 'lstrip', 'rstrip', 'single_word']) if (a[k] !== undefined && typeof a[k] !== 'boolean') fail(`added_tokens[${i}].${k}`, `must be a boolean, got ${JSON.stringify(a[k])}`);
    maxId = Math.max(maxId, a.id as number);
    count++;
  });
  const bound = 2 * count + 1024;
  if (maxId >= bound) fail('model.vocab', `token id ${maxId} is far beyond the ${count} tokens the file holds (ids must stay below ${bound})`);
}

/** Checks the fields of a `tokenizer_config.json` the library reads. */
export function checkTokenizerConfig(cfg: unknown, file?: string): void {
  function fail(path: string, msg: string): never {
    throw new ModelFormatError(path, 0, msg, file);
  }
  if (!isObj(cfg)) return fail('tokenizer_config', 'must be a JSON object');
  const extra = cfg.additional_special_tokens;
  if (extra !== undefined && extra !== null && !(Array.isArray(extra) && extra.every((x) => typeof x === 'string' || (isObj(x) && typeof x.content === 'string'))))
    fail('additional_special_tokens', `must be an array of tokens, got ${JSON.stringify(extra)?.slice(0, 40)}`);
  for (const k of ['remove_space', 'clean_up_tokenization_spaces', 'do_lowercase_and_remove_accent'])
    if (cfg[k] !== undefined && cfg[k] !== null && typeof cfg[k] !== 'boolean') fail(k, `must be a boolean, got ${JSON.stringify(cfg[k])}`);
  for (const k of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
    const v = cfg[k];
    if (v !== undefined && v !== null && typeof v !== 'string' && !(isObj(v) && typeof v.content === 'string')) fail(k, `must be a token (a string or {"content": string}), got ${JSON.stringify(v)?.slice(0, 40)}`);
  }
}
