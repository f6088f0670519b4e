/**
 * The Llama-family decoder (llama2.c, Llama 2/3, Mistral, Qwen2 shapes) written with the builder: RMSNorm, rotary
 * embeddings, grouped-query attention with a KV cache, SwiGLU feed-forward, tied or separate classifier.
 *
 * Graph signature: inputs `tokens: i32[1, seq]`, `positions: i32[seq]`, and per layer `past_k.L`, `past_v.L`:
 * `f32[1, past, nKvHeads, headDim]`; outputs `logits: f32[1, seq, vocab]` (or `[1, 1, vocab]` with
 * `lastTokenLogitsOnly`) and per layer `present_k.L`, `present_v.L` (past and new keys/values together).
 * @module
 */
import { InputError } from '../errors.js';
import { attrsOf, type ActivationQuant } from '../ir/attrs.js';
import { GraphBuilder } from '../ir/builder.js';
import type { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import { outlierLinear } from '../ir/outlier-linear.js';
import { dimSub, sym, type SymDim } from '../ir/dim.js';
import { ropeFrequency } from '../ir/rope.js';
import { WeightStore, type WeightEntry } from '../ir/weights.js';
import { Rng } from '../util/random.js';

/** Hyper-parameters of a Llama-family model. */
export interface LlamaConfig {
  /** Model width. */
  dim: number;
  /** Feed-forward hidden width. */
  hiddenDim: number;
  /** Decoder layers. */
  nLayers: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads (GQA when fewer than `nHeads`, MQA when 1). */
  nKvHeads: number;
  /** Vocabulary size. */
  vocabSize: number;
  /** Maximum sequence length. */
  seqLen: number;
  /** RoPE base (10000 for llama2.c). */
  ropeTheta?: number;
  /** RoPE pairing: llama2.c's adjacent pairs (`interleaved`) or Hugging Face/NeoX's half split (`half`). */
  ropeStyle?: 'interleaved' | 'half';
  /** RMSNorm epsilon (1e-5 for llama2.c). */
  normEps?: number;
  /** Whether the classifier is the token embedding matrix. */
  sharedClassifier: boolean;
  /** Whether q/k/v projections have biases (Qwen2). */
  qkvBias?: boolean;
  /** Per-head width (Hugging Face `head_dim`); default `dim / nHeads`. */
  headDim?: number;
  /** RoPE frequency scaling; absent for plain RoPE. */
  ropeScaling?: LlamaRopeScaling;
}

/**
 * RoPE frequency scaling, applied to the inverse frequencies `theta^(-2i/headDim)`:
 * - `linear` (Hugging Face `rope_type: "linear"`, position interpolation): every frequency divided by `factor`;
 * - `llama3` (Llama 3.1): low frequencies divided by `factor`, high ones kept, a smooth blend between;
 * - `frequency-factors` (llama.cpp's `rope_freqs` tensor): frequency `i` divided by `factors[i]`.
 *
 * A scaled model computes its rotary embedding from cos/sin tables of `seqLen` rows with primitive ops (the `rope`
 * op has no scaling); {@link llamaRopeInvFrequencies} gives the frequencies.
 */
export type LlamaRopeScaling = RopeScalingLinear | RopeScalingLlama3 | RopeScalingFactors;

/** Linear RoPE scaling (position interpolation): every frequency divided by `factor`. */
export interface RopeScalingLinear {
  /** Discriminant. */
  readonly type: 'linear';
  /** The divisor (`rope_scaling.factor`). */
  readonly factor: number;
}

/** Llama 3.1 RoPE scaling (`rope_type: "llama3"`), with `transformers`' field meanings. */
export interface RopeScalingLlama3 {
  /** Discriminant. */
  readonly type: 'llama3';
  /** Divisor of the low frequencies (`factor`). */
  readonly factor: number;
  /** Wavelengths above `originalMaxPositions / lowFreqFactor` are divided by `factor` (`low_freq_factor`). */
  readonly lowFreqFactor: number;
  /** Wavelengths below `originalMaxPositions / highFreqFactor` are kept (`high_freq_factor`). */
  readonly highFreqFactor: number;
  /** The pre-training context (`original_max_position_embeddings`). */
  readonly originalMaxPositions: number;
}

/** Per-frequency divisors (llama.cpp's `rope_freqs` tensor): frequency `i` divided by `factors[i]`. */
export interface RopeScalingFactors {
  /** Discriminant. */
  readonly type: 'frequency-factors';
  /** One positive divisor per rotary pair (`headDim / 2`). */
  readonly factors: readonly number[];
}

/** A weight given as dense f32 data or as a store entry (which may be quantized or sparse). */
export type WeightSource = Float32Array | WeightEntry;

/** Per-layer weights, stored `[out, in]` as llama2.c and PyTorch keep them. */
export interface LlamaLayerWeights {
  /** Attention RMSNorm scale `[dim]`. */
  rmsAtt: WeightSource;
  /** Query projection `[nHeads*headDim, dim]`. */
  wq: WeightSource;
  /** Key projection `[nKvHeads*headDim, dim]`. */
  wk: WeightSource;
  /** Value projection `[nKvHeads*headDim, dim]`. */
  wv: WeightSource;
  /** Output projection `[dim, nHeads*headDim]`. */
  wo: WeightSource;
  /** FFN RMSNorm scale `[dim]`. */
  rmsFfn: WeightSource;
  /** Gate projection `[hidden, dim]`. */
  w1: WeightSource;
  /** Down projection `[dim, hidden]`. */
  w2: WeightSource;
  /** Up projection `[hidden, dim]`. */
  w3: WeightSource;
  /** Optional q/k/v biases. */
  bq?: WeightSource;
  /** Key bias. */
  bk?: WeightSource;
  /** Value bias. */
  bv?: WeightSource;
}

/** All weights of a Llama-family model. */
export interface LlamaWeights {
  /** Token embedding `[vocab, dim]`. */
  tokenEmbedding: WeightSource;
  /** Layers. */
  layers: LlamaLayerWeights[];
  /** Final RMSNorm scale `[dim]`. */
  rmsFinal: WeightSource;
  /** Classifier `[vocab, dim]` (absent or ignored when shared). */
  wcls?: WeightSource;
  /**
   * Outlier input channels kept in f32 beside a (quantized) matmul weight, by the builder's weight name
   * (`layers.3.wq`, `output`, or `tok_embeddings` for a shared classifier): see {@link OutlierChannels}.
   */
  outliers?: Readonly<Record<string, OutlierChannels>>;
  /**
   * W8A8: the `actQuant` of the matmul reading each weight, by the builder's weight name (`layers.0.wq`, …), as a
   * W8A8 file (compressed-tensors `int-quantized`) declares it; the weights themselves are then int8 entries.
   */
  actQuant?: Readonly<Record<string, ActivationQuant>>;
}

/**
 * A mixed decomposition of one linear layer (LLM.int8-style): `y = x·Wᵀ + x[:, indices]·W_outᵀ`, where `W` is the
 * layer's stored (typically quantized) weight `[N, K]` and `W_out` is `[N, indices.length]` in f32. The graph gathers
 * the outlier channels of the activations along their last axis and adds a small f32 matmul to the main one (before
 * any bias). `W_out` is built as the weight `<name>.outlier_weight`.
 */
export interface OutlierChannels {
  /** Input channels (K indices), strictly increasing. */
  readonly indices: readonly number[];
  /** `[N, indices.length]`, row-major. */
  readonly weight: WeightSource;
}

/** Options for {@link buildLlama}. */
export interface LlamaBuildOptions {
  /** Compute logits only for the last position (what generation needs). Default false. */
  lastTokenLogitsOnly?: boolean;
  /**
   * Compute logits only at the rows listed by an i32 input `logit_rows` of shape `[outs]` (indices into the `seq`
   * rows): a batch of sequences asks for each one's last row, speculative decoding for several rows of one. Logits
   * are then `[1, outs, vocab]`. Ignored with `lastTokenLogitsOnly`. Default false.
   */
  logitRows?: boolean;
  /** Include KV-cache inputs/outputs. Default true. */
  kvCache?: boolean;
}

/** Head size (`headDim`, default `dim / nHeads`). */
export function llamaHeadSize(c: LlamaConfig): number {
  return c.headDim ?? c.dim / c.nHeads;
}

/**
 * The rotary inverse frequencies `theta^(-2i/headDim)`, `i < headDim/2`, in float32 as Hugging Face computes them,
 * after {@link LlamaConfig.ropeScaling} (the llama3 blend follows `transformers`' `_compute_llama3_parameters`).
 */
export function llamaRopeInvFrequencies(c: LlamaConfig): Float32Array {
  const hs = llamaHeadSize(c);
  const theta = c.ropeTheta ?? 10000;
  const inv = new Float32Array(hs / 2);
  for (let i = 0; i < hs / 2; i++) inv[i] = ropeFrequency(theta, i, hs);
  const s = c.ropeScaling;
  if (!s) return inv;
  for (let i = 0; i < inv.length; i++) {
    if (s.type === 'linear') inv[i] = inv[i] / s.factor;
    else if (s.type === 'frequency-factors') inv[i] = inv[i] / s.factors[i];
    else {
      const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
      const highWavelen = s.originalMaxPositions / s.highFreqFactor;
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen > lowWavelen) inv[i] = inv[i] / s.factor;
      else if (wavelen >= highWavelen) {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
      }
    }
  }
  return inv;
}

/** Checks a config's internal consistency; throws {@link InputError} naming the field. */
export function validateLlamaConfig(c: LlamaConfig): void {
  for (const k of ['dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'vocabSize', 'seqLen'] as const)
    if (!Number.isInteger(c[k]) || c[k] <= 0) throw new InputError(`llama config: ${k} must be a positive integer, got ${c[k]}`);
  if (c.headDim !== undefined && (!Number.isInteger(c.headDim) || c.headDim <= 0)) throw new InputError(`llama config: headDim must be a positive integer, got ${c.headDim}`);
  if (c.headDim === undefined && c.dim % c.nHeads !== 0) throw new InputError(`llama config: dim ${c.dim} is not divisible by nHeads ${c.nHeads}`);
  if (c.nHeads % c.nKvHeads !== 0) throw new InputError(`llama config: nHeads ${c.nHeads} is not divisible by nKvHeads ${c.nKvHeads}`);
  if (llamaHeadSize(c) % 2 !== 0) throw new InputError(`llama config: head size ${llamaHeadSize(c)} must be even for RoPE`);
  const s = c.ropeScaling;
  const bad = (why: string): never => {
    throw new InputError(`llama config: ropeScaling (${s?.type}) ${why}`);
  };
  if (s?.type === 'linear' && !(s.factor > 0)) bad(`factor must be positive, got ${s.factor}`);
  if (s?.type === 'llama3') {
    if (!(s.factor > 0 && s.lowFreqFactor > 0 && s.highFreqFactor > s.lowFreqFactor && s.originalMaxPositions > 0))
      bad('needs factor > 0, 0 < lowFreqFactor < highFreqFactor and originalMaxPositions > 0');
  }
  if (s?.type === 'frequency-factors' && (s.factors.length !== llamaHeadSize(c) / 2 || !s.factors.every((f) => f > 0)))
    bad(`needs ${llamaHeadSize(c) / 2} positive factors, got ${s.factors.length}`);
}

/** Builds the Llama graph. */
export function buildLlama(config: LlamaConfig, weights: LlamaWeights, opts: LlamaBuildOptions = {}): Graph {
  validateLlamaConfig(config);
  const c = config;
  const hs = llamaHeadSize(c);
  const kvDim = hs * c.nKvHeads;
  const qDim = hs * c.nHeads;
  const b = new GraphBuilder(new WeightStore());
  const builderNames = new Map<Node, string>();
  const w = (name: string, shape: number[], src: WeightSource): Node => {
    const node = weightOf(name, shape, src);
    builderNames.set(node, name);
    return node;
  };
  const weightOf = (name: string, shape: number[], src: WeightSource): Node => {
    if (src instanceof Float32Array) {
      const n = shape.reduce((p, q) => p * q, 1);
      if (src.length !== n) throw new InputError(`llama weight ${name}: expected ${n} values for [${shape}], got ${src.length}`);
      return b.weight(name, shape, src);
    }
    if (src.shape.join(',') !== shape.join(',')) throw new InputError(`llama weight ${name}: expected shape [${shape}], got [${src.shape}]`);
    return b.weight(src);
  };
  // x · Wᵀ (+ bias): W8A8 where the weights declare an activation quantization for W, a mixed decomposition where
  // they declare outlier channels
  const linear = (x: Node, weight: Node, bias?: Node): Node => {
    const name = builderNames.get(weight) ?? '';
    const out = weights.outliers && Object.hasOwn(weights.outliers, name) ? weights.outliers[name] : undefined;
    const q = weights.actQuant?.[attrsOf(weight, 'weight').name];
    if (out && q) throw new InputError(`llama weight ${name}: outlier channels and W8A8 activations are not combined`);
    if (q) {
      const y = b.matmul(x, weight, { transB: true, actQuant: q });
      return bias ? b.add(y, bias) : y;
    }
    if (!out) return b.linear(x, weight, bias);
    const [n, k] = weight.shape as number[];
    if (!out.indices.length || out.indices.some((i, j) => !Number.isInteger(i) || i < 0 || i >= k || (j > 0 && i <= out.indices[j - 1])))
      throw new InputError(`llama weight ${name}: outlier indices must be strictly increasing channels in [0, ${k}), got [${out.indices.slice(0, 8)}${out.indices.length > 8 ? ', …' : ''}]`);
    const side = w(`${name}.outlier_weight`, [n, out.indices.length], out.weight);
    const y = outlierLinear(x, weight, side, out.indices);
    return bias ? b.add(y, bias) : y;
  };
  const kvCache = opts.kvCache ?? true;
  const seq = sym('seq');
  const past = sym('past');
  const tokens = b.input('tokens', 'i32', [1, seq]);
  const positions = b.input('positions', 'i32', [seq]);
  const emb = w('tok_embeddings', [c.vocabSize, c.dim], weights.tokenEmbedding);
  let x = b.embedding(emb, tokens); // [1, seq, dim]
  const outputs: { name: string; node: Node }[] = [];
  const presents: { name: string; node: Node }[] = [];
  const theta = c.ropeTheta ?? 10000;
  const style = c.ropeStyle ?? 'interleaved';
  const eps = c.normEps ?? 1e-5;
  const rotary = c.ropeScaling ? scaledRope(b, c, positions, style) : (t: Node): Node => b.rope(t, positions, { theta, style });
  if (weights.layers.length !== c.nLayers) throw new InputError(`llama: config has ${c.nLayers} layers, weights have ${weights.layers.length}`);
  weights.layers.forEach((L, l) => {
    const p = `layers.${l}.`;
    const h = b.rmsnorm(x, w(`${p}attention_norm`, [c.dim], L.rmsAtt), eps);
    let q = linear(h, w(`${p}wq`, [qDim, c.dim], L.wq), L.bq ? w(`${p}bq`, [qDim], L.bq) : undefined);
    let k = linear(h, w(`${p}wk`, [kvDim, c.dim], L.wk), L.bk ? w(`${p}bk`, [kvDim], L.bk) : undefined);
    const v0 = linear(h, w(`${p}wv`, [kvDim, c.dim], L.wv), L.bv ? w(`${p}bv`, [kvDim], L.bv) : undefined);
    q = rotary(b.reshape(q, [1, seq, c.nHeads, hs]));
    k = rotary(b.reshape(k, [1, seq, c.nKvHeads, hs]));
    const v = b.reshape(v0, [1, seq, c.nKvHeads, hs]);
    const cache = kvCache
      ? { pastK: b.input(`past_k.${l}`, 'f32', [1, past, c.nKvHeads, hs]), pastV: b.input(`past_v.${l}`, 'f32', [1, past, c.nKvHeads, hs]) }
      : {};
    const att = b.attention(q, k, v, { causal: true, ...cache });
    if (kvCache) presents.push({ name: `present_k.${l}`, node: att.presentK }, { name: `present_v.${l}`, node: att.presentV });
    const o = linear(b.reshape(att.out, [1, seq, qDim]), w(`${p}wo`, [c.dim, qDim], L.wo));
    x = b.add(x, o);
    const h2 = b.rmsnorm(x, w(`${p}ffn_norm`, [c.dim], L.rmsFfn), eps);
    const gate = b.silu(linear(h2, w(`${p}w1`, [c.hiddenDim, c.dim], L.w1)));
    const up = linear(h2, w(`${p}w3`, [c.hiddenDim, c.dim], L.w3));
    x = b.add(x, linear(b.mul(gate, up), w(`${p}w2`, [c.dim, c.hiddenDim], L.w2)));
  });
  if (opts.lastTokenLogitsOnly) x = b.sliceAxis(x, 1, dimSub(seq, 1) as SymDim, null);
  else if (opts.logitRows) x = b.gather(x, b.input('logit_rows', 'i32', [sym('outs')]), 1);
  x = b.rmsnorm(x, w('norm', [c.dim], weights.rmsFinal), eps);
  const cls = c.sharedClassifier ? emb : w('output', [c.vocabSize, c.dim], weights.wcls ?? missing('output (classifier)'));
  outputs.push({ name: 'logits', node: linear(x, cls) });
  return b.build([...outputs, ...presents], { family: 'llama', config: { ...c } });
}

/**
 * Rotary embedding with scaled frequencies, from `[seqLen, headDim]` cos/sin tables gathered at the positions:
 * `x * cos + rotate(x) * sin`, `rotate` being NeoX's `rotate_half` or GPT-J's `rotate_every_two` (the forms
 * `recognize-rope` knows, which leaves these tables alone as they hold no plain `theta`). Angles are float32
 * `position * frequency`, as the `rope` op computes them.
 */
function scaledRope(b: GraphBuilder, c: LlamaConfig, positions: Node, style: 'interleaved' | 'half'): (x: Node) => Node {
  const hs = llamaHeadSize(c);
  const half = hs / 2;
  const inv = llamaRopeInvFrequencies(c);
  const cos = new Float32Array(c.seqLen * hs);
  const sin = new Float32Array(c.seqLen * hs);
  for (let p = 0; p < c.seqLen; p++)
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * inv[i]);
      const cols = style === 'half' ? [i, i + half] : [2 * i, 2 * i + 1];
      for (const j of cols) {
        cos[p * hs + j] = Math.cos(angle);
        sin[p * hs + j] = Math.sin(angle);
      }
    }
  const seq = positions.shape[0];
  const table = (name: string, values: Float32Array): Node => b.reshape(b.gather(b.weight(name, [c.seqLen, hs], values), positions), [1, seq, 1, hs]);
  const cosT = table('rope.cos', cos);
  const sinT = table('rope.sin', sin);
  return (x: Node): Node => {
    let rot: Node;
    if (style === 'half') rot = b.concat([b.neg(b.sliceAxis(x, 3, half, hs)), b.sliceAxis(x, 3, 0, half)], 3);
    else {
      const [, s, h] = x.shape;
      const odd = b.slice(x, { axes: [3], starts: [1], ends: [hs], steps: [2] });
      const even = b.slice(x, { axes: [3], starts: [0], ends: [hs], steps: [2] });
      rot = b.reshape(b.concat([b.reshape(b.neg(odd), [1, s, h, half, 1]), b.reshape(even, [1, s, h, half, 1])], 4), [1, s, h, hs]);
    }
    return b.add(b.mul(x, cosT), b.mul(rot, sinT));
  };
}

function missing(what: string): never {
  throw new InputError(`llama: weight ${what} is missing`);
}

/** Seeded random weights for a config (normal, std 0.02, norms at 1): for demos, tests and benchmarks. */
export function randomLlamaWeights(c: LlamaConfig, seed = 1): LlamaWeights {
  validateLlamaConfig(c);
  const r = new Rng(seed);
  const kvDim = llamaHeadSize(c) * c.nKvHeads;
  const ones = (n: number): Float32Array => new Float32Array(n).fill(1);
  const std = 0.02;
  return {
    tokenEmbedding: r.normals(c.vocabSize * c.dim, 1),
    layers: Array.from({ length: c.nLayers }, () => ({
      rmsAtt: ones(c.dim),
      wq: r.normals(llamaHeadSize(c) * c.nHeads * c.dim, std * 8),
      wk: r.normals(kvDim * c.dim, std * 8),
      wv: r.normals(kvDim * c.dim, std * 8),
      wo: r.normals(c.dim * llamaHeadSize(c) * c.nHeads, std * 8),
      rmsFfn: ones(c.dim),
      w1: r.normals(c.hiddenDim * c.dim, std * 8),
      w2: r.normals(c.dim * c.hiddenDim, std * 8),
      w3: r.normals(c.hiddenDim * c.dim, std * 8),
    })),
    rmsFinal: ones(c.dim),
    wcls: c.sharedClassifier ? undefined : r.normals(c.vocabSize * c.dim, std * 8),
  };
}
