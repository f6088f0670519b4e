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
import { GraphBuilder } from '../ir/builder.js';
import type { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import { dimSub, sym, type SymDim } from '../ir/dim.js';
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
}

/** Options for {@link buildLlama}. */
export interface LlamaBuildOptions {
  /** Compute logits only for the last position (what generation needs). Default false. */
  lastTokenLogitsOnly?: boolean;
  /** Include KV-cache inputs/outputs. Default true. */
  kvCache?: boolean;
}

/** Head size. */
export function llamaHeadSize(c: LlamaConfig): number {
  return c.dim / c.nHeads;
}

/** Checks a config's internal consistency; throws {@link InputError} naming the field. */
export function validateLlamaConfig(c: LlamaConfig): void {
  for (const k of ['dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'vocabSize', 'seqLen'] as const)
    if (!Number.isInteger(c[k]) || c[k] <= 0) throw new InputError(`llama config: ${k} must be a positive integer, got ${c[k]}`);
  if (c.dim % c.nHeads !== 0) throw new InputError(`llama config: dim ${c.dim} is not divisible by nHeads ${c.nHeads}`);
  if (c.nHeads % c.nKvHeads !== 0) throw new InputError(`llama config: nHeads ${c.nHeads} is not divisible by nKvHeads ${c.nKvHeads}`);
  if (llamaHeadSize(c) % 2 !== 0) throw new InputError(`llama config: head size ${llamaHeadSize(c)} must be even for RoPE`);
}

/** Builds the Llama graph. */
export function buildLlama(config: LlamaConfig, weights: LlamaWeights, opts: LlamaBuildOptions = {}): Graph {
  validateLlamaConfig(config);
  const c = config;
  const hs = llamaHeadSize(c);
  const kvDim = hs * c.nKvHeads;
  const b = new GraphBuilder(new WeightStore());
  const w = (name: string, shape: number[], src: WeightSource): Node => {
    if (src instanceof Float32Array) {
      const n = shape.reduce((p, q) => p * q, 1);
      if (src.length !== n) throw new InputError(`llama weight ${name}: expected ${n} values for [${shape}], got ${src.length}`);
      return b.weight(name, shape, src);
    }
    if (src.shape.join(',') !== shape.join(',')) throw new InputError(`llama weight ${name}: expected shape [${shape}], got [${src.shape}]`);
    return b.weight(src);
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
  if (weights.layers.length !== c.nLayers) throw new InputError(`llama: config has ${c.nLayers} layers, weights have ${weights.layers.length}`);
  weights.layers.forEach((L, l) => {
    const p = `layers.${l}.`;
    const h = b.rmsnorm(x, w(`${p}attention_norm`, [c.dim], L.rmsAtt), eps);
    let q = b.linear(h, w(`${p}wq`, [c.dim, c.dim], L.wq), L.bq ? w(`${p}bq`, [c.dim], L.bq) : undefined);
    let k = b.linear(h, w(`${p}wk`, [kvDim, c.dim], L.wk), L.bk ? w(`${p}bk`, [kvDim], L.bk) : undefined);
    const v0 = b.linear(h, w(`${p}wv`, [kvDim, c.dim], L.wv), L.bv ? w(`${p}bv`, [kvDim], L.bv) : undefined);
    q = b.rope(b.reshape(q, [1, seq, c.nHeads, hs]), positions, { theta, style });
    k = b.rope(b.reshape(k, [1, seq, c.nKvHeads, hs]), positions, { theta, style });
    const v = b.reshape(v0, [1, seq, c.nKvHeads, hs]);
    const cache = kvCache
      ? { pastK: b.input(`past_k.${l}`, 'f32', [1, past, c.nKvHeads, hs]), pastV: b.input(`past_v.${l}`, 'f32', [1, past, c.nKvHeads, hs]) }
      : {};
    const att = b.attention(q, k, v, { causal: true, ...cache });
    if (kvCache) presents.push({ name: `present_k.${l}`, node: att.presentK }, { name: `present_v.${l}`, node: att.presentV });
    const o = b.linear(b.reshape(att.out, [1, seq, c.dim]), w(`${p}wo`, [c.dim, c.dim], L.wo));
    x = b.add(x, o);
    const h2 = b.rmsnorm(x, w(`${p}ffn_norm`, [c.dim], L.rmsFfn), eps);
    const gate = b.silu(b.linear(h2, w(`${p}w1`, [c.hiddenDim, c.dim], L.w1)));
    const up = b.linear(h2, w(`${p}w3`, [c.hiddenDim, c.dim], L.w3));
    x = b.add(x, b.linear(b.mul(gate, up), w(`${p}w2`, [c.dim, c.hiddenDim], L.w2)));
  });
  if (opts.lastTokenLogitsOnly) x = b.sliceAxis(x, 1, dimSub(seq, 1) as SymDim, null);
  x = b.rmsnorm(x, w('norm', [c.dim], weights.rmsFinal), eps);
  const cls = c.sharedClassifier ? emb : w('output', [c.vocabSize, c.dim], weights.wcls ?? missing('output (classifier)'));
  outputs.push({ name: 'logits', node: b.linear(x, cls) });
  return b.build([...outputs, ...presents], { family: 'llama', config: { ...c } });
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
      wq: r.normals(c.dim * c.dim, std * 8),
      wk: r.normals(kvDim * c.dim, std * 8),
      wv: r.normals(kvDim * c.dim, std * 8),
      wo: r.normals(c.dim * c.dim, std * 8),
      rmsFfn: ones(c.dim),
      w1: r.normals(c.hiddenDim * c.dim, std * 8),
      w2: r.normals(c.dim * c.hiddenDim, std * 8),
      w3: r.normals(c.hiddenDim * c.dim, std * 8),
    })),
    rmsFinal: ones(c.dim),
    wcls: c.sharedClassifier ? undefined : r.normals(c.vocabSize * c.dim, std * 8),
  };
}
