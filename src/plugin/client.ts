/**
 * The browser side of a model import: what `import model from './model.bin?tensorwright'` gives — the URLs of the
 * compiled assets (one engine per target the build compiled for), the build's summary, and `load()` /
 * `loadTokenizer()` over the runtime. `load()` runs the first engine the adapter can run. It imports only the runtime
 * (`tensorwright/runtime`), never the compiler, so it adds little to an app's bundle.
 * @module
 */
import { DeviceError, InputError } from '../errors.js';
import { probeWebGPU, type DeviceInfo } from '../runtime/device.js';
import { Engine } from '../runtime/engine.js';
import { loadTokenizer, type RuntimeTokenizer } from '../runtime/tokenizer-loader.js';
import { unmetRequirements, type EngineRequirements } from './engine-requirements.js';
import type { ModelImportOptions } from './import-query.js';

/** The format of a tokenizer file shipped with an engine. */
export type TokenizerFormat = 'llama2c-bin' | 'hf-json';

/** What the build says about one compiled engine of a model import. */
export interface CompiledModelInfo {
  /** The input's format. */
  readonly format: 'llama2c' | 'safetensors' | 'gguf' | 'onnx';
  /** Model family (`llama`, `gpt2`, or the ONNX graph's). */
  readonly family: string;
  /** Parameter count (causal LMs). */
  readonly parameters?: number;
  /** The target compiled for (`portable`, `swiftshader`, `device`, …). */
  readonly target: string;
  /** The device the kernels were chosen for, in words. */
  readonly device: string;
  /** What a device needs to run this engine. */
  readonly requires: EngineRequirements;
  /** Distinct kernels (compute pipelines) the engine creates. */
  readonly kernels: number;
  /** Dispatches of one decode step (with the sampler, for causal LMs). */
  readonly dispatchesPerToken: number;
  /** Weight tensors in `weights.bin`. */
  readonly weights: number;
  /** Bytes of `weights.bin`. */
  readonly weightBytes: number;
  /** Bytes of `engine.json`. */
  readonly manifestBytes: number;
  /** The compile options (query parameters and plugin defaults; `target` is this engine's). */
  readonly options: ModelImportOptions;
  /** Vocabulary size (causal LMs). */
  readonly vocabSize?: number;
  /** Longest sequence the engine runs (causal LMs). */
  readonly maxPositions?: number;
  /** Begin-of-sequence token id (causal LMs). */
  readonly bosId?: number;
  /** Tokens that end generation (causal LMs). */
  readonly stopTokens?: readonly number[];
  /** The shipped tokenizer's format, when one was found. */
  readonly tokenizer?: TokenizerFormat;
  /** Bytes of the shipped tokenizer. */
  readonly tokenizerBytes?: number;
}

/** One compiled engine of a model import: for one target. */
export interface CompiledVariant {
  /** URL of its `engine.json`. */
  readonly manifestUrl: string;
  /** URL of its `weights.bin`. */
  readonly weightsUrl: string;
  /** What the build says about it. */
  readonly info: CompiledModelInfo;
}

/** The URLs and summaries a model import's module is built from. */
export interface CompiledModelAssets {
  /** The engines, one per target, in the order the targets were given (the first is preferred). */
  readonly variants: readonly CompiledVariant[];
  /** URL of the tokenizer file, when one was shipped. */
  readonly tokenizerUrl: string | undefined;
}

/** Options of {@link CompiledModel.load}: those of `Engine.load` (progress callbacks and the like), and which engine to take. */
export type CompiledModelLoadOptions = NonNullable<Parameters<typeof Engine.load>[1]> & {
  /** Load the engine compiled for this target (still only when the adapter can run it) rather than the first that fits. */
  readonly target?: string;
};

/**
 * A compiled model as an import gives it. Its own `manifestUrl`, `weightsUrl` and `info` are those of the first
 * variant; `load()` takes the first variant the adapter can run.
 */
export interface CompiledModel extends CompiledVariant, CompiledModelAssets {
  /**
   * The first variant (of those for `target`, when given) the device (default: this host's WebGPU adapter, from
   * `probeWebGPU`) can run.
   * @throws `DeviceError` `NO_ADAPTER` without WebGPU, `DEVICE_ERROR` when no variant fits (naming what each
   * lacks); `InputError` when no variant was compiled for `target`.
   */
  choose(device?: DeviceInfo, target?: string): Promise<CompiledVariant>;
  /** Fetches the chosen variant's manifest and weights and returns the engine (`Engine.load`); `options.onProgress` reports the bytes. */
  load(options?: CompiledModelLoadOptions): Promise<Engine>;
  /**
   * Fetches and reads the shipped tokenizer (a llama2.c `tokenizer.bin` or a `tokenizer.json`).
   * @throws `InputError` when the build found no tokenizer for the model.
   */
  loadTokenizer(): Promise<RuntimeTokenizer>;
}

/** The first of `variants` that `device` can run, or a `DeviceError` naming what each one lacks. */
export function chooseVariant(variants: readonly CompiledVariant[], device: DeviceInfo): CompiledVariant {
  const reasons: string[] = [];
  for (const v of variants) {
    const lacking = unmetRequirements(v.info.requires, device);
    if (lacking.length === 0) return v;
    reasons.push(`${v.info.target} needs ${lacking.join(', ')}`);
  }
  throw new DeviceError('DEVICE_ERROR', `no compiled engine of this model runs on ${[device.adapter.vendor, device.adapter.architecture, device.adapter.device].filter(Boolean).join(' ') || 'this adapter'}: ${reasons.join('; ')} (compile for target=portable too)`);
}

/** Builds the object a model import exports (the generated module calls this). */
export function compiledModel(assets: CompiledModelAssets): CompiledModel {
  if (assets.variants.length === 0) throw new InputError('a compiled model needs at least one variant');
  const first = assets.variants[0];
  const choose = async (device?: DeviceInfo, target?: string): Promise<CompiledVariant> => {
    const candidates = target === undefined ? assets.variants : assets.variants.filter((v) => v.info.target === target);
    if (candidates.length === 0) throw new InputError(`no engine of this model was compiled for target '${target}' (compiled: ${assets.variants.map((v) => v.info.target).join(', ')})`);
    if (!device) {
      const probe = await probeWebGPU();
      if ('available' in probe) throw new DeviceError('NO_ADAPTER', probe.reason);
      device = probe;
    }
    return chooseVariant(candidates, device);
  };
  return {
    ...first,
    ...assets,
    choose,
    load: async (options = {}) => {
      const { target, ...engineOptions } = options;
      const v = await choose(undefined, target);
      return Engine.load({ manifest: v.manifestUrl, weights: v.weightsUrl, ...(assets.tokenizerUrl ? { tokenizer: assets.tokenizerUrl } : {}) }, engineOptions);
    },
    loadTokenizer: async () => {
      if (!assets.tokenizerUrl) throw new InputError('the build found no tokenizer for this model (a llama2.c tokenizer.bin or tok<vocab>.bin beside the checkpoint, or a tokenizer.json in a Hugging Face folder)');
      const i = first.info;
      return loadTokenizer(assets.tokenizerUrl, { ...(i.vocabSize !== undefined ? { vocabSize: i.vocabSize } : {}), ...(i.bosId !== undefined ? { bosId: i.bosId } : {}), ...(i.stopTokens ? { eosIds: i.stopTokens } : {}) });
    },
  };
}
