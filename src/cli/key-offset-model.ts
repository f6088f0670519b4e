/**
 * `--kv-calib FILE` for the commands that run a model with an integer KV cache: measure the per-layer means and
 * key-channel spreads of what the cache stores on a text (`src/compress/key-offsets.ts`) and give the model whose
 * every build caches centered values and centered, channel-balanced keys (attention's result is unchanged in exact
 * arithmetic; an int8/int4 cache loses less).
 * @module
 */
import { readFile } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { tokenWindows } from '../compress/capture.js';
import { calibrateKvOffsets, centerCachedKv } from '../compress/key-offsets.js';
import type { LoadedModel } from '../frontends/load.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import { requireFile } from './file-arguments.js';
import { log } from './output.js';

/**
 * `model` with centered cached keys and values and balanced key channels, the statistics measured on the text at `path` (never an evaluation text) through the
 * CPU reference. Throws `UsageError` without a tokenizer or when the text has no tokens.
 */
export async function keyOffsetModel(model: LoadedModel, tokenizer: TextTokenizer | undefined, path: string, maxTokens = Infinity): Promise<LoadedModel> {
  requireFile('--kv-calib', path);
  if (!tokenizer) throw new UsageError('--kv-calib needs a tokenizer to read the calibration text: pass --tokenizer <file>');
  const ids = tokenizer.encode(await readFile(path, 'utf8'));
  const windows = tokenWindows(ids, model.bosId, model.maxPositions, maxTokens);
  if (!windows.length || windows[0].length < 2) throw new UsageError(`--kv-calib ${path} has no tokens to calibrate on`);
  const t0 = performance.now();
  const offsets = calibrateKvOffsets(model.build({ lastTokenLogitsOnly: true }), windows);
  log(`kv: keys and values centered, key channels balanced (means and spreads per layer and KV head from ${offsets.tokens} tokens of ${path}, ${(performance.now() - t0).toFixed(0)} ms)`);
  return { ...model, build: (opts) => centerCachedKv(model.build(opts), offsets, { values: true, scaleKeys: true }) };
}
