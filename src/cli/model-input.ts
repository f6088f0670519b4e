/**
 * What the model-running commands (`generate`, `eval`, `bench`) share: opening a model file with its tokenizer (an
 * explicit `--tokenizer`, the model's own, or a `tok<vocab>.bin` / `tokenizer.bin` beside it), and picking the
 * backend.
 * @module
 */
import { findTokenizerFor, loadModel, type LoadedModel } from '../frontends/load.js';
import { Llama2cTokenizer } from '../tokenizers/llama2c.js';
import { describeDevice, probeWebGPU } from '../runtime/device.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import { log } from './output.js';

/** The tokenizer file for a model: the one given, else one found beside the model (none when the model has its own). */
export function tokenizerPathFor(model: LoadedModel, modelPath: string, given?: string): string | undefined {
  return given ?? (model.tokenizer ? undefined : findTokenizerFor(modelPath, model.config.vocabSize));
}

/** Opens a model file and its tokenizer (`undefined` when there is none). */
export async function openModel(modelPath: string, tokenizerPath?: string): Promise<{ model: LoadedModel; tokenizer?: TextTokenizer }> {
  const model = await loadModel(modelPath);
  const path = tokenizerPathFor(model, modelPath, tokenizerPath);
  const tokenizer: TextTokenizer | undefined = path ? await Llama2cTokenizer.fromFile(path, model.config.vocabSize) : model.tokenizer;
  return { model, tokenizer };
}

/** Resolves `auto` to the backend that will run, logging which and why. */
export async function pickBackend(b: 'cpu' | 'webgpu' | 'auto'): Promise<'cpu' | 'webgpu'> {
  if (b === 'cpu' || b === 'webgpu') return b;
  const probe = await probeWebGPU();
  if ('available' in probe) {
    log(`backend: cpu (no WebGPU adapter: ${probe.reason})`);
    return 'cpu';
  }
  log(`backend: webgpu (${describeDevice(probe)})`);
  return 'webgpu';
}
