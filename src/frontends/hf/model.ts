/**
 * Hugging Face model folders (`config.json` + `model.safetensors`, or shards + `model.safetensors.index.json`, and
 * optionally `tokenizer.json`) → a loaded model that builds the IR graph: the Llama family (`llama`, `mistral`,
 * `qwen2`) and GPT-2.
 * @module
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { InputError } from '../../errors.js';
import type { Graph } from '../../ir/graph.js';
import { buildGpt2, type Gpt2BuildOptions, type Gpt2Config, type Gpt2Weights } from '../../models/gpt2.js';
import { buildLlama, type LlamaBuildOptions, type LlamaConfig, type LlamaWeights } from '../../models/llama.js';
import { SafetensorsCheckpoint } from '../safetensors/checkpoint.js';
import { hfGpt2Config, hfLlamaConfig, hfModelType, parseHfConfig, type HfLlamaModelType } from './config.js';
import { hfGpt2Weights, hfLlamaWeights } from './weights.js';
import { hfW8A8Scheme } from './quantization.js';
import { UnsupportedModelError } from './errors.js';
import { hfSpecialTokenIds, hfTokenizerFromFolder, type HfTokenizer } from './tokenizer.js';
import { contextCap, type LoadModelOptions } from '../context.js';

/** What every loaded Hugging Face model has. */
export interface HfModelBase {
  /** Detected format: safetensors weights with a Hugging Face `config.json`. */
  readonly format: 'safetensors';
  /** The model folder. */
  readonly path: string;
  /** Parameter count (a tied classifier counted once). */
  readonly parameters: number;
  /** Bytes of tensor data as stored in the checkpoint. */
  readonly weightBytes: number;
  /** Longest sequence the model is compiled for: the declared context, capped by `maxContext`. */
  readonly maxPositions: number;
  /** The context the config declares (`max_position_embeddings`, `n_positions`). */
  readonly declaredContext: number;
  /** Begin-of-sequence token id (the first stop token when the model has no BOS, else 0). */
  readonly bosId: number;
  /** Tokens that end generation (`eos_token_id`s). */
  readonly stopTokens: readonly number[];
  /** The folder's `tokenizer.json` tokenizer, when there is one. */
  readonly tokenizer: HfTokenizer | undefined;
  /** The parsed `config.json`. */
  readonly hfConfig: Readonly<Record<string, unknown>>;
}

/** A loaded Llama-family model (Llama, Mistral, Qwen2). */
export interface HfLlamaModel extends HfModelBase {
  /** Model family. */
  readonly family: 'llama';
  /** The `model_type` it was loaded as. */
  readonly modelType: HfLlamaModelType;
  /** Hyper-parameters (with `ropeStyle: 'half'`). */
  readonly config: LlamaConfig;
  /** Weights, as float32. */
  readonly weights: LlamaWeights;
  /** Builds the IR graph (with KV-cache inputs/outputs). */
  build(opts?: LlamaBuildOptions): Graph;
}

/** A loaded GPT-2 model. */
export interface HfGpt2Model extends HfModelBase {
  /** Model family. */
  readonly family: 'gpt2';
  /** The `model_type` it was loaded as. */
  readonly modelType: 'gpt2';
  /** Hyper-parameters. */
  readonly config: Gpt2Config;
  /** Weights, as float32, projections transposed to `[out, in]`. */
  readonly weights: Gpt2Weights;
  /** Builds the IR graph (with KV-cache inputs/outputs). */
  build(opts?: Gpt2BuildOptions): Graph;
}

/** A loaded Hugging Face model. */
export type HfModel = HfLlamaModel | HfGpt2Model;

/** Options for {@link loadHfModel}. */
export interface HfLoadOptions extends LoadModelOptions {
  /** Load `tokenizer.json` when present. Default `true`. */
  tokenizer?: boolean;
}

/** Whether a folder (or a file inside one) looks like a Hugging Face model folder: a `config.json` beside safetensors. */
export function isHfModelFolder(path: string): boolean {
  const dir = existsSync(path) && statSync(path).isDirectory() ? path : dirname(path);
  return existsSync(join(dir, 'config.json')) && (existsSync(join(dir, 'model.safetensors')) || existsSync(join(dir, 'model.safetensors.index.json')));
}

/**
 * Loads a Hugging Face model folder. `path` is the folder, or a file in it (`config.json`, a `.safetensors` file or
 * the index, which is then the checkpoint read). Weights are read once, converted to float32 (F16 and BF16 exactly).
 * @throws `InputError` when the folder has no `config.json` or no safetensors weights; `ModelFormatError` for
 *   malformed files (naming the file, field or tensor and byte offset); `UnsupportedModelError` for architectures or
 *   options the builders do not implement.
 */
export async function loadHfModel(path: string, opts: HfLoadOptions = {}): Promise<HfModel> {
  return loadHfModelSync(path, opts);
}

/** {@link loadHfModel}, synchronously. */
export function loadHfModelSync(path: string, opts: HfLoadOptions = {}): HfModel {
  const maxContext = contextCap(opts);
  if (!existsSync(path)) throw new InputError(`model ${path} does not exist`);
  const isDir = statSync(path).isDirectory();
  const dir = isDir ? path : dirname(path);
  const cfgPath = join(dir, 'config.json');
  if (!existsSync(cfgPath)) throw new InputError(`${dir} has no config.json: a Hugging Face model folder needs one beside the weights`);
  const json = parseHfConfig(readFileSync(cfgPath, 'utf8'), cfgPath);
  const type = hfModelType(json, cfgPath);
  const weightsPath = !isDir && basename(path) !== 'config.json' ? path : dir;
  if (weightsPath === dir && !existsSync(join(dir, 'model.safetensors')) && !existsSync(join(dir, 'model.safetensors.index.json'))) {
    const hasBin = existsSync(join(dir, 'pytorch_model.bin')) || existsSync(join(dir, 'pytorch_model.bin.index.json'));
    throw new InputError(`${dir} has no model.safetensors or model.safetensors.index.json${hasBin ? ' (PyTorch .bin checkpoints are not read: convert them to safetensors)' : ''}`);
  }
  const tokenizer = opts.tokenizer === false ? undefined : hfTokenizerFromFolder(dir);
  const special = hfSpecialTokenIds(dir);
  const stopTokens = Object.freeze([...new Set([...special.eosIds, ...(tokenizer?.eosIds ?? [])])]);
  const bosId = tokenizer?.bosId ?? special.bosId ?? stopTokens[0] ?? 0;
  const w8a8 = hfW8A8Scheme(json, cfgPath);
  if (w8a8 && type === 'gpt2') throw new UnsupportedModelError('quantization_config', 'a quantized GPT-2 checkpoint is not read (W8A8 is read for the Llama family)', cfgPath);
  const ck = SafetensorsCheckpoint.open(weightsPath);
  try {
    const base = { format: 'safetensors' as const, path: dir, weightBytes: ck.dataBytes, bosId, stopTokens, tokenizer, hfConfig: json };
    if (type === 'gpt2') {
      const config = hfGpt2Config(json, cfgPath);
      const { weights, parameters } = hfGpt2Weights(ck, config);
      // the learned position table holds n_positions rows (bounded by the file); the context is capped all the same
      return { ...base, family: 'gpt2', modelType: 'gpt2', config, weights, parameters, maxPositions: Math.min(config.nPositions, maxContext), declaredContext: config.nPositions, build: (o) => buildGpt2(config, weights, o) };
    }
    const config = hfLlamaConfig(json, cfgPath);
    const declaredContext = config.seqLen;
    config.seqLen = Math.min(declaredContext, maxContext); // max_position_embeddings is capped, never trusted
    const { weights, qkvBias, parameters } = hfLlamaWeights(ck, config, w8a8);
    if (qkvBias) config.qkvBias = true;
    return { ...base, family: 'llama', modelType: type, config, weights, parameters, maxPositions: config.seqLen, declaredContext, build: (o) => buildLlama(config, weights, o) };
  } finally {
    ck.close();
  }
}
