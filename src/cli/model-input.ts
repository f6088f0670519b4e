/**
 * What the model-running commands (`generate`, `eval`, `bench`) share: opening a model file with its tokenizer (an
 * explicit `--tokenizer`, the model's own, or a `tok<vocab>.bin` / `tokenizer.bin` beside it), and picking the
 * backend.
 * @module
 */
import { findTokenizerFor, loadModel, type LoadedModel } from '../frontends/load.js';
import type { LoadModelOptions } from '../frontends/context.js';
import { Llama2cTokenizer } from '../tokenizers/llama2c.js';
import { describeDevice, probeWebGPU } from '../runtime/device.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import { log } from './output.js';
import { UsageError } from '../errors.js';
import { chooseBackendFor, type BackendChoiceModel } from './backend-choice.js';

/** The tokenizer file for a model: the one given, else one found beside the model (none when the model has its own). */
export function tokenizerPathFor(model: LoadedModel, modelPath: string, given?: string): string | undefined {
  return given ?? (model.tokenizer ? undefined : findTokenizerFor(modelPath, model.config.vocabSize));
}

/** Opens a model file and its tokenizer (`undefined` when there is none). */
export async function openModel(modelPath: string, tokenizerPath?: string, opts: LoadModelOptions = {}): Promise<{ model: LoadedModel; tokenizer?: TextTokenizer }> {
  const model = await loadModel(modelPath, opts);
  const path = tokenizerPathFor(model, modelPath, tokenizerPath);
  const tokenizer: TextTokenizer | undefined = path ? await Llama2cTokenizer.fromFile(path, model.config.vocabSize) : model.tokenizer;
  return { model, tokenizer };
}

/**
 * Resolves `auto` to the backend that will run, logging which and why: the CPU without a WebGPU adapter; with one,
 * for a model, the backend that decodes it faster on this machine (measured once per model shape and adapter, then
 * read from the user cache directory: `backend-choice.ts`); without a model, WebGPU. `TENSORWRIGHT_AUTO_BACKEND=webgpu`
 * skips the measurement (WebGPU whenever there is an adapter), as the test suite does so that what it tests does not
 * depend on the machine's speed.
 */
export async function pickBackend(b: 'cpu' | 'webgpu' | 'auto', forModel?: BackendChoiceModel): Promise<'cpu' | 'webgpu'> {
  if (b === 'cpu' || b === 'webgpu') return b;
  const probe = await probeWebGPU();
  if ('available' in probe) {
    log(`backend: cpu (no WebGPU adapter: ${probe.reason})`);
    return 'cpu';
  }
  const mode = process.env.TENSORWRIGHT_AUTO_BACKEND ?? 'measure';
  if (mode !== 'measure' && mode !== 'webgpu') throw new UsageError(`TENSORWRIGHT_AUTO_BACKEND must be 'measure' or 'webgpu', got '${mode}'`);
  if (forModel && mode === 'measure') return (await chooseBackendFor(probe, forModel)).backend;
  log(`backend: webgpu (${describeDevice(probe)})`);
  return 'webgpu';
}
