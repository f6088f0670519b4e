/**
 * The build step itself: one model file or folder compiled, in Node, into the assets a model import emits — the
 * engine manifest (`engine.json`), its weights in kernel layout (`weights.bin`) and the model's tokenizer when one is
 * found — plus the summary the import exposes as `info`.
 * @module
 */
import { open, readFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { DeviceError, InputError } from '../errors.js';
import { compile, compileGraph, type CompileOptions } from '../compile.js';
import { createTarget, profileDevice } from '../codegen/target.js';
import { findTokenizerFor, loadModel } from '../frontends/load.js';
import { looksLikeOnnx, readOnnx } from '../frontends/onnx/index.js';
import { requestGPUDevice, type DeviceInfo } from '../runtime/device.js';
import type { EngineManifest } from '../runtime/engine-manifest.js';
import type { Target } from '../ir/target.js';
import type { ModelImportOptions, ModelTargetName } from './import-query.js';
import type { CompiledModelInfo, TokenizerFormat } from './client.js';
import { requirementsOf } from './engine-requirements.js';

/** The device a model import is compiled for, resolved: its name, the device facts, and a stable key for the cache. */
export interface ResolvedTarget {
  /** The target name the import asked for. */
  readonly name: ModelTargetName;
  /** The device the kernels are chosen for. */
  readonly device: DeviceInfo;
  /** What distinguishes this device for the build cache (the profile name, or the adapter's facts). */
  readonly key: string;
}

/** The tokenizer file shipped next to an engine. */
export interface TokenizerAsset {
  /** Its format: llama2.c's `tokenizer.bin` or a Hugging Face `tokenizer.json`. */
  readonly format: TokenizerFormat;
  /** The file it came from. */
  readonly path: string;
  /** Its bytes. */
  readonly bytes: Uint8Array;
}

/** What a model import emits. */
export interface CompiledAssets {
  /** `engine.json`, UTF-8. */
  readonly manifest: Uint8Array;
  /** `weights.bin`. */
  readonly weights: Uint8Array;
  /** The tokenizer, when one was found. */
  readonly tokenizer?: TokenizerAsset;
  /** The summary the import exposes. */
  readonly info: CompiledModelInfo;
}

let localDevice: Promise<DeviceInfo> | undefined;

/**
 * The device for a target name: a named profile, or (`device`) the build machine's WebGPU adapter, asked once per
 * process through `requestGPUDevice`.
 * @throws {@link DeviceError} `NO_ADAPTER` for `device` on a machine without an adapter (its message names the profiles to use instead).
 */
export async function resolveTarget(name: ModelTargetName): Promise<ResolvedTarget> {
  if (name !== 'device') return { name, device: profileDevice(name), key: `profile:${name}` };
  localDevice ??= (async () => {
    const handle = await requestGPUDevice();
    const info = handle.info;
    await handle.destroy();
    return info;
  })();
  let device: DeviceInfo;
  try {
    device = await localDevice;
  } catch (e) {
    localDevice = undefined;
    const why = e instanceof Error ? e.message : String(e);
    throw new DeviceError(e instanceof DeviceError && e.code === 'DEVICE_ERROR' ? 'DEVICE_ERROR' : 'NO_ADAPTER', `target=device compiles for this machine's WebGPU adapter, and there is none usable (${why}); compile for a named profile instead (target=portable, swiftshader, lavapipe or discrete)`, { cause: e });
  }
  const { backend: _backend, ...facts } = device;
  return { name, device, key: `device:${JSON.stringify(facts)}` };
}

/** The tokenizer to ship with a model: its own `tokenizer.json` (Hugging Face folders), or a llama2.c `tokenizer.bin` beside a checkpoint. */
export async function findTokenizerAsset(path: string, format: CompiledModelInfo['format'], vocabSize: number | undefined): Promise<TokenizerAsset | undefined> {
  const st = await stat(path);
  if (format === 'safetensors') {
    const json = join(st.isDirectory() ? path : join(path, '..'), 'tokenizer.json');
    return existsSync(json) ? { format: 'hf-json', path: json, bytes: new Uint8Array(await readFile(json)) } : undefined;
  }
  if (format === 'llama2c' && vocabSize !== undefined) {
    const bin = findTokenizerFor(path, vocabSize);
    return bin ? { format: 'llama2c-bin', path: bin, bytes: new Uint8Array(await readFile(bin)) } : undefined;
  }
  return undefined;
}

/** Whether `path` is an ONNX graph (read from its first bytes, not its name). */
async function isOnnxFile(path: string): Promise<boolean> {
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) return false;
  const fh = await open(path, 'r');
  try {
    const head = new Uint8Array(Math.min(st.size, 64));
    await fh.read(head, 0, head.length, 0);
    return looksLikeOnnx(head);
  } finally {
    await fh.close();
  }
}

function compileOptionsOf(o: ModelImportOptions, target: Target): CompileOptions {
  return {
    target,
    ...(o.quant !== undefined ? { quant: o.quant } : {}),
    ...(o.sparsity !== undefined ? { sparsity: o.sparsity } : {}),
    ...(o.passes !== undefined ? { passes: o.passes } : {}),
    ...(o.prefillChunk !== undefined ? { prefillChunk: o.prefillChunk } : {}),
  };
}

function summary(manifest: EngineManifest, weights: Uint8Array, manifestBytes: number, base: Pick<CompiledModelInfo, 'format' | 'family' | 'parameters' | 'options'>, target: ResolvedTarget, tokenizer: TokenizerAsset | undefined): CompiledModelInfo {
  const lm = manifest.lm;
  const decode = manifest.plans[0];
  return {
    ...base,
    target: target.name,
    device: manifest.device.description,
    requires: requirementsOf(manifest, target.device),
    kernels: manifest.kernels.length,
    dispatchesPerToken: decode.dispatches.length + (lm ? 1 : 0),
    weights: manifest.weights.length,
    weightBytes: weights.byteLength,
    manifestBytes,
    ...(lm ? { vocabSize: lm.vocabSize, maxPositions: lm.maxPositions, bosId: lm.bosId, stopTokens: [...lm.stopTokens] } : {}),
    ...(tokenizer ? { tokenizer: tokenizer.format, tokenizerBytes: tokenizer.bytes.byteLength } : {}),
  };
}

/**
 * Compiles the model at `path` (options with one target: `options.target` is `target.name`) (a llama2.c checkpoint, a GGUF file, a Hugging Face folder or safetensors file, or an
 * ONNX graph) for `target` with the import's options, into the assets a model import emits. Causal LMs get a paged
 * KV cache and GPU sampling; an ONNX graph is compiled for the input dims `options.dims` gives.
 */
export async function compileModelAssets(path: string, options: ModelImportOptions, target: ResolvedTarget): Promise<CompiledAssets> {
  const t = createTarget(target.device, { ...(options.precision ? { precision: options.precision } : {}), kv: { ...(options.kvBlockSize !== undefined ? { blockSize: options.kvBlockSize } : {}), ...(options.kvDtype ? { dtype: options.kvDtype } : {}) } });
  const co = compileOptionsOf(options, t);
  const encoder = new TextEncoder();
  if (await isOnnxFile(path)) {
    const onnx = await readOnnx(path);
    const engine = await compileGraph(onnx.graph, { ...(options.dims ?? {}) }, co);
    const manifest = encoder.encode(JSON.stringify(engine.manifest));
    const info = summary(engine.manifest, engine.weightBytes, manifest.byteLength, { format: 'onnx', family: engine.manifest.model.family, options }, target, undefined);
    return { manifest, weights: engine.weightBytes, info };
  }
  if (options.dims) throw new InputError(`?tensorwright option dims applies to ONNX graphs; ${basename(path)} is a causal LM (its engine plans its own shapes)`);
  const model = await loadModel(path);
  // compile() fills in the weights' length and SHA-256, which the runtime checks the downloaded bytes against
  const engine = await compile(model, co);
  const manifest = encoder.encode(JSON.stringify(engine.manifest));
  const tokenizer = await findTokenizerAsset(path, model.format, engine.manifest.lm?.vocabSize);
  const info = summary(engine.manifest, engine.weightBytes, manifest.byteLength, { format: model.format, family: model.family, parameters: model.parameters, options }, target, tokenizer);
  return { manifest, weights: engine.weightBytes, ...(tokenizer ? { tokenizer } : {}), info };
}
