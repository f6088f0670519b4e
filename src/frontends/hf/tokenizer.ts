/**
 * Hugging Face tokenizers of model folders: `tokenizer.json` with the special-token ids of `tokenizer_config.json`,
 * `config.json` and `generation_config.json`. The tokenizer itself lives in `src/tokenizers/hf.ts` (usable from
 * the runtime); this module reads the folder.
 * @module
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelFormatError } from '../../errors.js';
import { HfTokenizer, type HfSpecialTokens } from '../../tokenizers/hf.js';

export { HfTokenizer, HfTokenStream, type HfDecodeOptions, type HfEncodeOptions, type HfSpecialTokens } from '../../tokenizers/hf.js';

function readJson(path: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ModelFormatError('json', 0, `not valid JSON: ${(e as Error).message}`, path);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ModelFormatError('json', 0, 'must be a JSON object', path);
  return json as Record<string, unknown>;
}

function ids(v: unknown): number[] {
  const list = Array.isArray(v) ? v : [v];
  return list.filter((x): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0);
}

/**
 * The tokenizer of a model folder (`tokenizer.json`, with `tokenizer_config.json`, `config.json` and
 * `generation_config.json` for special ids), or `undefined` when the folder has no `tokenizer.json`.
 * @throws `ModelFormatError` for malformed files.
 */
export function hfTokenizerFromFolder(dir: string): HfTokenizer | undefined {
  const tokPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokPath)) return undefined;
  const tokJson = readJson(tokPath);
  const cfgPath = join(dir, 'tokenizer_config.json');
  const tokCfg = existsSync(cfgPath) ? readJson(cfgPath) : {};
  const special = hfSpecialTokenIds(dir);
  return HfTokenizer.fromJson(tokJson, tokCfg, special, tokPath);
}

/**
 * `bos_token_id` and `eos_token_id` (a number or a list) from a model folder's `generation_config.json` and
 * `config.json`, the former first.
 */
export function hfSpecialTokenIds(dir: string): HfSpecialTokens {
  const out: HfSpecialTokens = { bosId: undefined, eosIds: [] };
  for (const name of ['generation_config.json', 'config.json']) {
    const p = join(dir, name);
    if (!existsSync(p)) continue;
    const j = readJson(p);
    out.bosId ??= ids(j.bos_token_id)[0];
    out.eosIds.push(...ids(j.eos_token_id));
  }
  out.eosIds = [...new Set(out.eosIds)];
  return out;
}
