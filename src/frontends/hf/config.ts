/**
 * Hugging Face `config.json` → model configs: the Llama family (`model_type` `llama`, `mistral`, `qwen2`) and GPT-2.
 *
 * Every hyper-parameter that changes the maths is read or refused: a value tensorwright cannot honour (an activation
 * other than SiLU, a RoPE scaling type other than `linear`/`llama3`, partial rotary, …) raises
 * {@link UnsupportedModelError} naming the key; a missing or ill-typed required value raises {@link ModelFormatError}.
 * @module
 */
import { ModelFormatError } from '../../errors.js';
import type { Gpt2Config } from '../../models/gpt2.js';
import type { LlamaConfig, LlamaRopeScaling } from '../../models/llama.js';
import { UnsupportedModelError } from './errors.js';

/** A parsed `config.json`. */
export type HfConfigJson = Readonly<Record<string, unknown>>;

/** `model_type`s read as the Llama family. */
export const HF_LLAMA_MODEL_TYPES = ['llama', 'mistral', 'qwen2'] as const;

/** A `model_type` of the Llama family. */
export type HfLlamaModelType = (typeof HF_LLAMA_MODEL_TYPES)[number];

/** Every `model_type` the Hugging Face loader reads. */
export type HfModelType = HfLlamaModelType | 'gpt2';

/**
 * Parses `config.json` text; throws {@link ModelFormatError} unless it is a JSON object.
 * @internal
 */
export function parseHfConfig(text: string, file?: string): HfConfigJson {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ModelFormatError('config', 0, `not valid JSON: ${(e as Error).message}`, file);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ModelFormatError('config', 0, 'must be a JSON object', file);
  return json as HfConfigJson;
}

/**
 * The config's `model_type`, checked to be one tensorwright reads.
 * @internal
 */
export function hfModelType(json: HfConfigJson, file?: string): HfModelType {
  const t = json.model_type;
  if (typeof t !== 'string') throw new ModelFormatError('model_type', 0, `model_type must be a string, got ${JSON.stringify(t)}`, file);
  if ((HF_LLAMA_MODEL_TYPES as readonly string[]).includes(t) || t === 'gpt2') return t as HfModelType;
  throw new UnsupportedModelError('model_type', `model_type '${t}' is not supported (supported: ${[...HF_LLAMA_MODEL_TYPES, 'gpt2'].join(', ')})`, file);
}

function present(json: HfConfigJson, key: string): boolean {
  return json[key] !== undefined && json[key] !== null;
}

/** A positive integer field (or its default when absent/null). */
function posInt(json: HfConfigJson, key: string, file: string | undefined, dflt?: number): number {
  const v = present(json, key) ? json[key] : dflt;
  if (v === undefined) throw new ModelFormatError(key, 0, `required field ${key} is missing`, file);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new ModelFormatError(key, 0, `${key} must be a positive integer, got ${JSON.stringify(v)}`, file);
  return v;
}

/** A positive finite number field (or its default). */
function posNum(json: HfConfigJson, key: string, file: string | undefined, dflt: number): number {
  const v = present(json, key) ? json[key] : dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ModelFormatError(key, 0, `${key} must be a positive number, got ${JSON.stringify(v)}`, file);
  return v;
}

function bool(json: HfConfigJson, key: string, file: string | undefined, dflt: boolean): boolean {
  const v = present(json, key) ? json[key] : dflt;
  if (typeof v !== 'boolean') throw new ModelFormatError(key, 0, `${key} must be true or false, got ${JSON.stringify(v)}`, file);
  return v;
}

/** Defaults of the `transformers` config classes, by model type. */
const LLAMA_DEFAULTS: Record<HfLlamaModelType, { maxPositions: number; ropeTheta: number; eps: number }> = {
  llama: { maxPositions: 2048, ropeTheta: 10000, eps: 1e-6 },
  mistral: { maxPositions: 4096 * 32, ropeTheta: 10000, eps: 1e-6 },
  qwen2: { maxPositions: 32768, ropeTheta: 10000, eps: 1e-6 },
};

/** RoPE parameters read from a config. */
export interface HfRopeParameters {
  /** The base (`rope_theta`). */
  theta: number;
  /** The scaling, when the config asks for one. */
  scaling: LlamaRopeScaling | undefined;
}

/**
 * RoPE base and scaling from `rope_theta` + `rope_scaling` (transformers 4.x) or `rope_parameters` (5.x).
 * Supported scaling types: none/`default`, `linear`, `llama3`; anything else raises {@link UnsupportedModelError}.
 * @internal
 */
export function hfRope(json: HfConfigJson, file?: string, defaultTheta = 10000): HfRopeParameters {
  const params = json.rope_parameters;
  const fromParams = typeof params === 'object' && params !== null && !Array.isArray(params);
  const key = fromParams ? 'rope_parameters' : 'rope_scaling';
  const rs = (fromParams ? params : json.rope_scaling) as Record<string, unknown> | null | undefined;
  let theta = posNum(json, 'rope_theta', file, defaultTheta);
  if (rs === undefined || rs === null) return { theta, scaling: undefined };
  if (typeof rs !== 'object' || Array.isArray(rs)) throw new ModelFormatError(key, 0, `${key} must be an object or null, got ${JSON.stringify(rs)}`, file);
  const sub = rs as HfConfigJson;
  if (fromParams && present(sub, 'rope_theta')) theta = posNum(sub, 'rope_theta', file, defaultTheta);
  const type = sub.rope_type ?? sub.type ?? 'default';
  if (type === 'default') return { theta, scaling: undefined };
  const factor = (): number => {
    const f = sub.factor;
    if (typeof f !== 'number' || !(f > 0) || !Number.isFinite(f)) throw new ModelFormatError(`${key}.factor`, 0, `factor must be a positive number, got ${JSON.stringify(f)}`, file);
    return f;
  };
  if (type === 'linear') return { theta, scaling: { type: 'linear', factor: factor() } };
  if (type === 'llama3') {
    const f = factor();
    const lowFreqFactor = posNum(sub, 'low_freq_factor', file, NaN);
    const highFreqFactor = posNum(sub, 'high_freq_factor', file, NaN);
    const originalMaxPositions = posInt(sub, 'original_max_position_embeddings', file);
    if (!(highFreqFactor > lowFreqFactor)) throw new ModelFormatError(`${key}.high_freq_factor`, 0, `high_freq_factor ${highFreqFactor} must exceed low_freq_factor ${lowFreqFactor}`, file);
    return { theta, scaling: { type: 'llama3', factor: f, lowFreqFactor, highFreqFactor, originalMaxPositions } };
  }
  throw new UnsupportedModelError(`${key}.rope_type`, `RoPE scaling type ${JSON.stringify(type)} is not supported (supported: default, linear, llama3)`, file);
}

/**
 * The {@link LlamaConfig} of a Llama/Mistral/Qwen2 `config.json`. `ropeStyle` is `half` (Hugging Face's
 * `rotate_half`). A sliding attention window shorter than `max_position_embeddings` (Mistral; Qwen2 with
 * `use_sliding_window`) caps `seqLen` at the window, where full causal attention computes the same thing. `qkvBias` is left to the weight loader, which sees
 * whether the biases exist.
 * @internal
 */
export function hfLlamaConfig(json: HfConfigJson, file?: string): LlamaConfig {
  const type = hfModelType(json, file);
  if (type === 'gpt2') throw new ModelFormatError('model_type', 0, 'a gpt2 config is not a Llama-family config', file);
  const d = LLAMA_DEFAULTS[type];
  const act = json.hidden_act ?? 'silu';
  if (act !== 'silu' && act !== 'swish') throw new UnsupportedModelError('hidden_act', `activation ${JSON.stringify(act)} is not supported (the Llama builder uses SiLU)`, file);
  if (bool(json, 'mlp_bias', file, false)) throw new UnsupportedModelError('mlp_bias', 'MLP biases are not supported', file);
  const prf = json.partial_rotary_factor;
  if (prf !== undefined && prf !== null && prf !== 1) throw new UnsupportedModelError('partial_rotary_factor', `partial rotary (${JSON.stringify(prf)}) is not supported`, file);
  const dim = posInt(json, 'hidden_size', file);
  const nHeads = posInt(json, 'num_attention_heads', file);
  const nKvHeads = posInt(json, 'num_key_value_heads', file, nHeads);
  if (nHeads % nKvHeads !== 0) throw new ModelFormatError('num_key_value_heads', 0, `num_attention_heads ${nHeads} is not divisible by num_key_value_heads ${nKvHeads}`, file);
  let headDim = present(json, 'head_dim') ? posInt(json, 'head_dim', file) : undefined;
  if (headDim === undefined && dim % nHeads !== 0) throw new ModelFormatError('num_attention_heads', 0, `hidden_size ${dim} is not divisible by num_attention_heads ${nHeads} (and no head_dim)`, file);
  if (headDim === dim / nHeads) headDim = undefined;
  const hs = headDim ?? dim / nHeads;
  if (hs % 2 !== 0) throw new ModelFormatError(present(json, 'head_dim') ? 'head_dim' : 'num_attention_heads', 0, `head size ${hs} must be even for RoPE`, file);
  let seqLen = posInt(json, 'max_position_embeddings', file, d.maxPositions);
  // Qwen2 windows the layers from max_window_layers on (default 28), and only with use_sliding_window
  const qwenWindowed = type === 'qwen2' && bool(json, 'use_sliding_window', file, false) && (present(json, 'max_window_layers') ? (json.max_window_layers as number) : 28) < posInt(json, 'num_hidden_layers', file);
  // transformers' MistralConfig defaults sliding_window to 4096 when the key is absent; null means no window
  const window = json.sliding_window === undefined ? 4096 : json.sliding_window;
  if ((type === 'mistral' || qwenWindowed) && window !== null) seqLen = Math.min(seqLen, posInt({ sliding_window: window }, 'sliding_window', file));
  const { theta, scaling } = hfRope(json, file, d.ropeTheta);
  const config: LlamaConfig = {
    dim,
    hiddenDim: posInt(json, 'intermediate_size', file),
    nLayers: posInt(json, 'num_hidden_layers', file),
    nHeads,
    nKvHeads,
    vocabSize: posInt(json, 'vocab_size', file),
    seqLen,
    ropeTheta: theta,
    ropeStyle: 'half',
    normEps: posNum(json, 'rms_norm_eps', file, d.eps),
    sharedClassifier: bool(json, 'tie_word_embeddings', file, false),
  };
  if (headDim !== undefined) config.headDim = headDim;
  if (scaling) config.ropeScaling = scaling;
  return config;
}

/**
 * The {@link Gpt2Config} of a GPT-2 `config.json`.
 * @internal
 */
export function hfGpt2Config(json: HfConfigJson, file?: string): Gpt2Config {
  if (hfModelType(json, file) !== 'gpt2') throw new ModelFormatError('model_type', 0, `model_type ${JSON.stringify(json.model_type)} is not gpt2`, file);
  const act = json.activation_function ?? 'gelu_new';
  let activation: 'gelu_new' | 'gelu';
  if (act === 'gelu_new' || act === 'gelu_pytorch_tanh' || act === 'gelu_fast') activation = 'gelu_new';
  else if (act === 'gelu') activation = 'gelu';
  else throw new UnsupportedModelError('activation_function', `activation ${JSON.stringify(act)} is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast, gelu)`, file);
  if (!bool(json, 'scale_attn_weights', file, true)) throw new UnsupportedModelError('scale_attn_weights', 'unscaled attention is not supported', file);
  if (bool(json, 'scale_attn_by_inverse_layer_idx', file, false)) throw new UnsupportedModelError('scale_attn_by_inverse_layer_idx', 'per-layer attention scaling is not supported', file);
  if (bool(json, 'add_cross_attention', file, false)) throw new UnsupportedModelError('add_cross_attention', 'cross-attention is not supported', file);
  if (!bool(json, 'tie_word_embeddings', file, true)) throw new UnsupportedModelError('tie_word_embeddings', 'an untied GPT-2 LM head is not supported', file);
  const config: Gpt2Config = {
    vocabSize: posInt(json, 'vocab_size', file),
    nPositions: posInt(json, 'n_positions', file, 1024),
    nEmbd: posInt(json, 'n_embd', file),
    nLayer: posInt(json, 'n_layer', file),
    nHead: posInt(json, 'n_head', file),
    layerNormEpsilon: posNum(json, 'layer_norm_epsilon', file, 1e-5),
    activation,
  };
  if (present(json, 'n_inner')) config.nInner = posInt(json, 'n_inner', file);
  if (config.nEmbd % config.nHead !== 0) throw new ModelFormatError('n_head', 0, `n_embd ${config.nEmbd} is not divisible by n_head ${config.nHead}`, file);
  return config;
}
