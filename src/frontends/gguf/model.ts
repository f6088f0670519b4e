/**
 * GGUF (llama.cpp) models → the Llama builder: architectures `llama` (Llama, Mistral, … as llama.cpp converts them)
 * and `qwen2`.
 *
 * **RoPE layout.** llama.cpp's converter permutes the rows of each head of Q and K for `llama` (its
 * `LlamaModel.permute`), turning Hugging Face's half-split rotary pairs into adjacent pairs, and rotates adjacent
 * pairs at run time (`LLAMA_ROPE_TYPE_NORM`): so `llama` GGUF models build with `ropeStyle: 'interleaved'`. `qwen2` is
 * converted without the permutation and rotated NeoX-style: `ropeStyle: 'half'`.
 * @module
 */
import { ModelFormatError } from '../../errors.js';
import type { Graph } from '../../ir/graph.js';
import { decodeWeight } from '../../ir/weights.js';
import { buildLlama, type LlamaBuildOptions, type LlamaConfig, type LlamaLayerWeights, type LlamaRopeScaling, type LlamaWeights, type OutlierChannels, type WeightSource } from '../../models/llama.js';
import { UnsupportedModelError } from '../hf/errors.js';
import { GgufFile, type GgufTensorInfo } from './reader.js';
import { ggufTensorToWeight } from './quant.js';
import { GgufTokenizer } from './tokenizer.js';
import { contextCap, type LoadModelOptions } from '../context.js';

/** GGUF architectures read as the Llama family, with the RoPE pairing each uses. */
export const GGUF_LLAMA_ARCHITECTURES: Readonly<Record<string, 'interleaved' | 'half'>> = Object.freeze({ llama: 'interleaved', qwen2: 'half' });

/**
 * The {@link LlamaConfig} of a GGUF file's `{arch}.*` metadata (`vocabSize` from `token_embd.weight`).
 * @internal
 */
export function ggufLlamaConfig(f: GgufFile): LlamaConfig {
  const arch = f.getString('general.architecture');
  if (arch === undefined) throw new ModelFormatError('general.architecture', 0, 'missing', f.file);
  const style = Object.prototype.hasOwnProperty.call(GGUF_LLAMA_ARCHITECTURES, arch) ? GGUF_LLAMA_ARCHITECTURES[arch] : undefined;
  if (!style) throw new UnsupportedModelError('general.architecture', `architecture '${arch}' is not supported (supported: ${Object.keys(GGUF_LLAMA_ARCHITECTURES).join(', ')})`, f.file);
  const need = (key: string): number => {
    const v = f.getUint(`${arch}.${key}`);
    if (v === undefined || v <= 0) throw new ModelFormatError(`${arch}.${key}`, f.entry(`${arch}.${key}`)?.offset ?? 0, v === undefined ? 'missing' : 'must be positive', f.file);
    return v;
  };
  const dim = need('embedding_length');
  const nHeads = need('attention.head_count');
  const nKvHeads = f.getUint(`${arch}.attention.head_count_kv`) ?? nHeads;
  if (nKvHeads <= 0 || nHeads % nKvHeads !== 0)
    throw new ModelFormatError(`${arch}.attention.head_count_kv`, f.entry(`${arch}.attention.head_count_kv`)?.offset ?? 0, `head_count ${nHeads} is not divisible by head_count_kv ${nKvHeads}`, f.file);
  const keyLength = f.getUint(`${arch}.attention.key_length`);
  const valueLength = f.getUint(`${arch}.attention.value_length`);
  if (keyLength === undefined && dim % nHeads !== 0) throw new ModelFormatError(`${arch}.attention.head_count`, f.entry(`${arch}.attention.head_count`)!.offset, `embedding_length ${dim} is not divisible by head_count ${nHeads}`, f.file);
  const hs = keyLength ?? dim / nHeads;
  if (valueLength !== undefined && valueLength !== hs) throw new UnsupportedModelError(`${arch}.attention.value_length`, `value length ${valueLength} differs from key length ${hs}`, f.file);
  if (hs % 2 !== 0) throw new ModelFormatError(`${arch}.attention.key_length`, 0, `head size ${hs} must be even for RoPE`, f.file);
  const ropeDims = f.getUint(`${arch}.rope.dimension_count`);
  if (ropeDims !== undefined && ropeDims !== hs) throw new UnsupportedModelError(`${arch}.rope.dimension_count`, `partial rotary (${ropeDims} of ${hs} dims) is not supported`, f.file);
  if (!f.has('token_embd.weight')) throw new ModelFormatError("tensor 'token_embd.weight'", 0, 'missing', f.file);
  const emb = f.info('token_embd.weight');
  if (emb.shape.length !== 2 || emb.shape[1] !== dim) throw new ModelFormatError("tensor 'token_embd.weight'", emb.infoOffset, `shape [${emb.shape}] is not [vocab, ${dim}]`, f.file);
  const config: LlamaConfig = {
    dim,
    hiddenDim: need('feed_forward_length'),
    nLayers: need('block_count'),
    nHeads,
    nKvHeads,
    vocabSize: emb.shape[0],
    seqLen: need('context_length'),
    ropeTheta: f.getNumber(`${arch}.rope.freq_base`) ?? 10000,
    ropeStyle: style,
    normEps: f.getNumber(`${arch}.attention.layer_norm_rms_epsilon`) ?? 1e-5,
    sharedClassifier: !f.has('output.weight'),
  };
  if (keyLength !== undefined && keyLength !== dim / nHeads) config.headDim = keyLength;
  const scaling = ggufRopeScaling(f, arch, hs);
  if (scaling) config.ropeScaling = scaling;
  return config;
}

/** RoPE scaling from `{arch}.rope.scaling.type`/`.factor` (or the older `rope.scale_linear`) and `rope_freqs.weight`. */
function ggufRopeScaling(f: GgufFile, arch: string, hs: number): LlamaRopeScaling | undefined {
  const type = f.getString(`${arch}.rope.scaling.type`) ?? 'none';
  const factor = f.getNumber(`${arch}.rope.scaling.factor`) ?? f.getNumber(`${arch}.rope.scale_linear`);
  if (f.has('rope_freqs.weight')) {
    if (type !== 'none' && !(type === 'linear' && (factor === undefined || factor === 1)))
      throw new UnsupportedModelError(`${arch}.rope.scaling.type`, `rope_freqs combined with '${type}' scaling is not supported`, f.file);
    const t = f.info('rope_freqs.weight');
    if (t.numel !== hs / 2) throw new ModelFormatError("tensor 'rope_freqs.weight'", t.infoOffset, `has ${t.numel} factors, expected ${hs / 2}`, f.file);
    const w = ggufTensorToWeight(t, f.bytes(t.name), f.file);
    const factors = Array.from(w instanceof Float32Array ? w : decodeWeight(w));
    if (!factors.every((x) => x > 0)) throw new ModelFormatError("tensor 'rope_freqs.weight'", t.byteOffset, 'factors must be positive', f.file);
    return { type: 'frequency-factors', factors };
  }
  if (type === 'none' || factor === undefined || factor === 1) {
    if (type !== 'none' && type !== 'linear') throw new UnsupportedModelError(`${arch}.rope.scaling.type`, `RoPE scaling type '${type}' is not supported (supported: none, linear)`, f.file);
    return undefined;
  }
  if (type !== 'linear' && f.getString(`${arch}.rope.scaling.type`) !== undefined)
    throw new UnsupportedModelError(`${arch}.rope.scaling.type`, `RoPE scaling type '${type}' is not supported (supported: none, linear)`, f.file);
  if (!(factor > 0)) throw new ModelFormatError(`${arch}.rope.scaling.factor`, f.entry(`${arch}.rope.scaling.factor`)?.offset ?? 0, `must be positive, got ${factor}`, f.file);
  return { type: 'linear', factor };
}

/**
 * Weights of a GGUF Llama-family model and what was read.
 * @internal
 */
export interface GgufLlamaWeightsResult {
  /** The builder's weights: quantized tensors as quantized entries, the rest as float32. */
  weights: LlamaWeights;
  /** Whether q/k/v biases were found (qwen2). */
  qkvBias: boolean;
  /** Parameters read. */
  parameters: number;
  /** Bytes of tensor data read. */
  weightBytes: number;
  /** Tensors read, by ggml type name. */
  typeCounts: Record<string, number>;
}

/**
 * Maps a GGUF file's `token_embd`, `blk.N.*`, `output_norm` and `output` tensors onto {@link LlamaWeights}.
 * @internal
 */
export function ggufLlamaWeights(f: GgufFile, c: LlamaConfig): GgufLlamaWeightsResult {
  const used = new Set<string>();
  let parameters = 0;
  let weightBytes = 0;
  const typeCounts: Record<string, number> = {};
  const hs = c.headDim ?? c.dim / c.nHeads;
  const take = (name: string, shape: readonly number[]): WeightSource => {
    if (!f.has(name)) throw new ModelFormatError(`tensor '${name}'`, 0, `missing tensor (expected shape [${shape}])`, f.file);
    const t: GgufTensorInfo = f.info(name);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      throw new ModelFormatError(`tensor '${name}'`, t.infoOffset, `shape [${t.shape}] (ne [${t.dims}]) does not match the config's [${shape}]`, f.file);
    used.add(name);
    parameters += t.numel;
    weightBytes += t.byteLength;
    typeCounts[t.typeInfo.name] = (typeCounts[t.typeInfo.name] ?? 0) + 1;
    return ggufTensorToWeight(t, f.bytes(name), f.file);
  };
  const qDim = hs * c.nHeads;
  const kvDim = hs * c.nKvHeads;
  const qkvBias = f.has('blk.0.attn_q.bias');
  const layers: LlamaLayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    const L: LlamaLayerWeights = {
      rmsAtt: take(`${p}attn_norm.weight`, [c.dim]),
      wq: take(`${p}attn_q.weight`, [qDim, c.dim]),
      wk: take(`${p}attn_k.weight`, [kvDim, c.dim]),
      wv: take(`${p}attn_v.weight`, [kvDim, c.dim]),
      wo: take(`${p}attn_output.weight`, [c.dim, qDim]),
      rmsFfn: take(`${p}ffn_norm.weight`, [c.dim]),
      w1: take(`${p}ffn_gate.weight`, [c.hiddenDim, c.dim]),
      w2: take(`${p}ffn_down.weight`, [c.dim, c.hiddenDim]),
      w3: take(`${p}ffn_up.weight`, [c.hiddenDim, c.dim]),
    };
    if (qkvBias) {
      L.bq = take(`${p}attn_q.bias`, [qDim]);
      L.bk = take(`${p}attn_k.bias`, [kvDim]);
      L.bv = take(`${p}attn_v.bias`, [kvDim]);
    }
    layers.push(L);
  }
  const weights: LlamaWeights = { tokenEmbedding: take('token_embd.weight', [c.vocabSize, c.dim]), layers, rmsFinal: take('output_norm.weight', [c.dim]) };
  if (!c.sharedClassifier) weights.wcls = take('output.weight', [c.vocabSize, c.dim]);
  if (f.has('rope_freqs.weight')) used.add('rope_freqs.weight');
  const outliers = ggufOutlierChannels(f, c, (t) => {
    used.add(t.name);
    parameters += t.numel;
    weightBytes += t.byteLength;
    typeCounts[t.typeInfo.name] = (typeCounts[t.typeInfo.name] ?? 0) + 1;
  });
  if (Object.keys(outliers).length) weights.outliers = outliers;
  const extra = f.tensors.filter((t) => !used.has(t.name) && !/^blk\.\d+\.attn_rot_embd$/.test(t.name));
  if (extra.length)
    throw new UnsupportedModelError(`tensor '${extra[0].name}'`, `${extra.length} tensor(s) the llama builder has no place for (${extra.slice(0, 5).map((t) => t.name).join(', ')})`, f.file);
  return { weights, qkvBias, parameters, weightBytes, typeCounts };
}

/** The builder's name of a llama.cpp matmul tensor that may carry outlier channels. */
function builderLinearName(name: string, c: LlamaConfig): string | undefined {
  if (name === 'output.weight' && !c.sharedClassifier) return 'output';
  if (name === 'token_embd.weight' && c.sharedClassifier) return 'tok_embeddings';
  const m = /^blk\.(\d+)\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_down|ffn_up)\.weight$/.exec(name);
  const per: Record<string, string> = { attn_q: 'wq', attn_k: 'wk', attn_v: 'wv', attn_output: 'wo', ffn_gate: 'w1', ffn_down: 'w2', ffn_up: 'w3' };
  return m && Number(m[1]) < c.nLayers ? `layers.${m[1]}.${per[m[2]]}` : undefined;
}

/**
 * The outlier channels of the file's linear layers: for a matmul tensor `X`, `X.outlier_idx` (I32 `[n]`, strictly
 * increasing input channels) and `X.outlier_weight` (F32 `[N, n]` in our shape order, ggml `ne = [n, N]`), which the
 * builder adds as `x·Wᵀ + x[…, idx]·W_outᵀ` (`src/ir/outlier-linear.ts`). `onRead` is called for every tensor read.
 * @throws ModelFormatError naming the tensor and what is wrong with it (a partner missing, a type, a shape, an index).
 */
function ggufOutlierChannels(f: GgufFile, c: LlamaConfig, onRead: (t: GgufTensorInfo) => void): Record<string, OutlierChannels> {
  const out: Record<string, OutlierChannels> = {};
  const bases = new Set<string>();
  for (const t of f.tensors) {
    const m = /^(.+)\.outlier_(idx|weight)$/.exec(t.name);
    if (m) bases.add(m[1]);
  }
  for (const base of bases) {
    const [iname, wname] = [`${base}.outlier_idx`, `${base}.outlier_weight`];
    const bad = (name: string, field: string, why: string): ModelFormatError =>
      new ModelFormatError(`tensor '${name}' ${field}`, f.has(name) ? f.info(name).infoOffset : 0, why, f.file);
    const key = builderLinearName(base, c);
    if (!key || !f.has(base)) throw bad(f.has(iname) ? iname : wname, 'name', `'${base}' is no linear layer of this model that outlier channels can belong to`);
    for (const n of [iname, wname]) if (!f.has(n)) throw bad(n, 'presence', `missing: outlier channels need both ${iname} and ${wname}`);
    const main = f.info(base);
    const [rows, cols] = main.shape;
    const ti = f.info(iname);
    const tw = f.info(wname);
    if (ti.typeInfo.name !== 'I32') throw bad(iname, 'type', `is ${ti.typeInfo.name}, expected I32`);
    if (ti.shape.length !== 1 || ti.shape[0] < 1 || ti.shape[0] > cols) throw bad(iname, 'shape', `[${ti.shape}] must be [n] with 1 ≤ n ≤ ${cols} (the input channels of ${base})`);
    if (tw.typeInfo.name !== 'F32') throw bad(wname, 'type', `is ${tw.typeInfo.name}, expected F32`);
    const n = ti.shape[0];
    if (tw.shape.length !== 2 || tw.shape[0] !== rows || tw.shape[1] !== n) throw bad(wname, 'shape', `[${tw.shape}] does not match [${rows}, ${n}] (rows of ${base}, entries of ${iname})`);
    const ib = f.bytes(iname);
    if (ib.byteLength !== 4 * n) throw bad(iname, 'data', `has ${ib.byteLength} bytes, expected ${4 * n}`);
    const dv = new DataView(ib.buffer, ib.byteOffset, ib.byteLength);
    const indices = Array.from({ length: n }, (_, j) => dv.getInt32(4 * j, true));
    indices.forEach((v, j) => {
      if (v < 0 || v >= cols) throw bad(iname, `value ${j}`, `channel ${v} is outside [0, ${cols})`);
      if (j > 0 && v <= indices[j - 1]) throw bad(iname, `value ${j}`, `channel ${v} does not follow ${indices[j - 1]} (indices must be strictly increasing)`);
    });
    onRead(ti);
    onRead(tw);
    out[key] = { indices, weight: ggufTensorToWeight(tw, f.bytes(wname), f.file) };
  }
  return out;
}

/** A loaded GGUF Llama-family model (compatible with `LoadedModel`). */
export interface GgufLlamaModel {
  /** Detected format. */
  readonly format: 'gguf';
  /** Model family. */
  readonly family: 'llama';
  /** `general.architecture`. */
  readonly architecture: string;
  /** The file. */
  readonly path: string;
  /** Hyper-parameters. */
  readonly config: LlamaConfig;
  /** Weights (quantized tensors kept quantized). */
  readonly weights: LlamaWeights;
  /** Parameter count. */
  readonly parameters: number;
  /** Bytes of tensor data as stored. */
  readonly weightBytes: number;
  /** Tensors by ggml type name. */
  readonly typeCounts: Readonly<Record<string, number>>;
  /** Longest sequence the model is compiled for: `context_length`, capped by `maxContext`. */
  readonly maxPositions: number;
  /** The file's `context_length`. */
  readonly declaredContext: number;
  /** Begin-of-sequence id (`tokenizer.ggml.bos_token_id`, default 1). */
  readonly bosId: number;
  /** Tokens that end generation (`eos_token_id`, `eot_token_id`, `eom_token_id`). */
  readonly stopTokens: readonly number[];
  /**
   * The file's own tokenizer (`tokenizer.ggml.*`), built on first use; `undefined` when the file has none.
   * @throws `ModelFormatError` for malformed tokenizer metadata or a token count other than the model's vocab size,
   *   `UnsupportedModelError` for a tokenizer model that is not implemented.
   */
  readonly tokenizer: GgufTokenizer | undefined;
  /** The parsed file (metadata and tensor infos; tensor data is no longer readable). */
  readonly gguf: GgufFile;
  /** Builds the IR graph. */
  build(opts?: LlamaBuildOptions): Graph;
}

/**
 * Loads a GGUF model file (read once; quantized tensors stay quantized).
 * @throws `ModelFormatError` for malformed files, `UnsupportedModelError` for architectures, tensor types or options
 *   the Llama builder does not implement.
 */
export async function loadGgufModel(path: string, opts: LoadModelOptions = {}): Promise<GgufLlamaModel> {
  const maxContext = contextCap(opts);
  return ggufModel(GgufFile.open(path), path, maxContext);
}

/** Loads a GGUF model held in memory. */
export function loadGgufModelFromBytes(bytes: Uint8Array, file = 'model.gguf', opts: LoadModelOptions = {}): GgufLlamaModel {
  const maxContext = contextCap(opts);
  return ggufModel(GgufFile.fromBytes(bytes, file), file, maxContext);
}

function ggufModel(f: GgufFile, path: string, maxContext: number): GgufLlamaModel {
  try {
    const config = ggufLlamaConfig(f);
    const declaredContext = config.seqLen;
    config.seqLen = Math.min(declaredContext, maxContext); // a file's context_length is capped, never trusted
    const { weights, qkvBias, parameters, weightBytes, typeCounts } = ggufLlamaWeights(f, config);
    if (qkvBias) config.qkvBias = true;
    let tokenizer: GgufTokenizer | undefined | null = null;
    const stop = ['eos_token_id', 'eot_token_id', 'eom_token_id'].map((k) => f.getUint(`tokenizer.ggml.${k}`)).filter((x): x is number => x !== undefined);
    return {
      format: 'gguf',
      family: 'llama',
      architecture: f.getString('general.architecture')!,
      path,
      config,
      weights,
      parameters,
      weightBytes,
      typeCounts,
      maxPositions: config.seqLen,
      declaredContext,
      bosId: f.getUint('tokenizer.ggml.bos_token_id') ?? 1,
      stopTokens: Object.freeze([...new Set(stop)]),
      // built when first asked for, so a model used without text (or with another tokenizer) does not pay for it
      get tokenizer(): GgufTokenizer | undefined {
        if (tokenizer === null) tokenizer = ggufModelTokenizer(f, config);
        return tokenizer;
      },
      gguf: f,
      build: (o) => buildLlama(config, weights, o),
    };
  } finally {
    f.close();
  }
}

/** The file's tokenizer, which must cover the model's vocabulary exactly (as llama.cpp requires). */
function ggufModelTokenizer(f: GgufFile, config: LlamaConfig): GgufTokenizer | undefined {
  const tok = GgufTokenizer.fromGguf(f);
  if (tok && tok.vocabSize !== config.vocabSize)
    throw new ModelFormatError('tokenizer.ggml.tokens', f.entry('tokenizer.ggml.tokens')?.offset ?? 0, `holds ${tok.vocabSize} tokens but token_embd.weight has ${config.vocabSize} rows`, f.file);
  return tok;
}
