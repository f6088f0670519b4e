/**
 * The GPT-2 family decoder (Hugging Face `GPT2LMHeadModel` semantics) written with the builder: learned token and
 * position embeddings, pre-LayerNorm blocks with fused-QKV causal multi-head attention and a GELU MLP, a final
 * LayerNorm and a language-model head tied to the token embedding.
 *
 * Graph signature (the same convention as `buildLlama`): inputs `tokens: i32[1, seq]`, `positions: i32[seq]`
 * (indices into the position embedding, so a decode step passes `past, past+1, …`), and per layer `past_k.L`,
 * `past_v.L`: `f32[1, past, nHead, headDim]`; outputs `logits: f32[1, seq, vocab]` (or `[1, 1, vocab]` with
 * `lastTokenLogitsOnly`) and per layer `present_k.L`, `present_v.L`.
 *
 * **Weight layout.** Every projection here is stored `[out, in]` as `nn.Linear` keeps it. Hugging Face's GPT-2 uses
 * `Conv1D` modules, which store their weights `[in, out]`: an importer must transpose `c_attn`, `c_proj`, `c_fc` and
 * `mlp.c_proj` weights (biases are unaffected).
 * @module
 */
import { InputError } from '../errors.js';
import { GraphBuilder } from '../ir/builder.js';
import type { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import { dimSub, sym, type SymDim } from '../ir/dim.js';
import { WeightStore } from '../ir/weights.js';
import { Rng } from '../util/random.js';
import type { WeightSource } from './llama.js';

/** Hyper-parameters of a GPT-2 family model (Hugging Face `GPT2Config` field names in camelCase). */
export interface Gpt2Config {
  /** Vocabulary size (`vocab_size`, 50257 for GPT-2). */
  vocabSize: number;
  /** Maximum sequence length: rows of the position embedding (`n_positions`, 1024 for GPT-2). */
  nPositions: number;
  /** Model width (`n_embd`). */
  nEmbd: number;
  /** Decoder blocks (`n_layer`). */
  nLayer: number;
  /** Attention heads (`n_head`); must divide `nEmbd`. */
  nHead: number;
  /** MLP hidden width (`n_inner`); default `4 * nEmbd`. */
  nInner?: number;
  /** LayerNorm epsilon (`layer_norm_epsilon`); default 1e-5. */
  layerNormEpsilon?: number;
  /**
   * MLP activation (`activation_function`): `gelu_new` (the tanh approximation, what GPT-2 uses; the default) or
   * `gelu` (exact, erf-based).
   */
  activation?: 'gelu_new' | 'gelu';
}

/**
 * Per-block weights, stored `[out, in]`. Hugging Face's `Conv1D` keeps `[in, out]`; transpose when importing.
 */
export interface Gpt2LayerWeights {
  /** `ln_1.weight` `[d]`. */
  ln1Weight: WeightSource;
  /** `ln_1.bias` `[d]`. */
  ln1Bias: WeightSource;
  /** `attn.c_attn.weight`ᵀ `[3d, d]`: query, key and value projections stacked in that order along the out axis. */
  attnW: WeightSource;
  /** `attn.c_attn.bias` `[3d]`. */
  attnB: WeightSource;
  /** `attn.c_proj.weight`ᵀ `[d, d]`. */
  attnProjW: WeightSource;
  /** `attn.c_proj.bias` `[d]`. */
  attnProjB: WeightSource;
  /** `ln_2.weight` `[d]`. */
  ln2Weight: WeightSource;
  /** `ln_2.bias` `[d]`. */
  ln2Bias: WeightSource;
  /** `mlp.c_fc.weight`ᵀ `[inner, d]`. */
  fcW: WeightSource;
  /** `mlp.c_fc.bias` `[inner]`. */
  fcB: WeightSource;
  /** `mlp.c_proj.weight`ᵀ `[d, inner]`. */
  mlpProjW: WeightSource;
  /** `mlp.c_proj.bias` `[d]`. */
  mlpProjB: WeightSource;
}

/** All weights of a GPT-2 family model. The LM head is tied to {@link Gpt2Weights.wte}. */
export interface Gpt2Weights {
  /** Token embedding `wte` `[vocab, d]` (also the LM head). */
  wte: WeightSource;
  /** Position embedding `wpe` `[nPositions, d]`. */
  wpe: WeightSource;
  /** Blocks `h.0 … h.{nLayer-1}`. */
  layers: Gpt2LayerWeights[];
  /** `ln_f.weight` `[d]`. */
  lnFWeight: WeightSource;
  /** `ln_f.bias` `[d]`. */
  lnFBias: WeightSource;
}

/** Options for {@link buildGpt2}. */
export interface Gpt2BuildOptions {
  /** Compute logits only for the last position (what generation needs). Default false. */
  lastTokenLogitsOnly?: boolean;
  /**
   * Compute logits for the last `logitRowsDim` positions, a symbolic dim bound at run time (1 for generation, the
   * chunk's length to verify a speculative draft). Overrides `lastTokenLogitsOnly`.
   */
  logitRowsDim?: string;
  /** Include KV-cache inputs/outputs. Default true. */
  kvCache?: boolean;
}

/** Head size `nEmbd / nHead`. */
export function gpt2HeadSize(c: Gpt2Config): number {
  return c.nEmbd / c.nHead;
}

/** MLP hidden width (`nInner`, default `4 * nEmbd`). */
export function gpt2InnerSize(c: Gpt2Config): number {
  return c.nInner ?? 4 * c.nEmbd;
}

/** Checks a config's internal consistency; throws {@link InputError} naming the field. */
export function validateGpt2Config(c: Gpt2Config): void {
  for (const k of ['vocabSize', 'nPositions', 'nEmbd', 'nLayer', 'nHead'] as const)
    if (!Number.isInteger(c[k]) || c[k] <= 0) throw new InputError(`gpt2 config: ${k} must be a positive integer, got ${c[k]}`);
  if (c.nInner !== undefined && (!Number.isInteger(c.nInner) || c.nInner <= 0)) throw new InputError(`gpt2 config: nInner must be a positive integer, got ${c.nInner}`);
  if (c.nEmbd % c.nHead !== 0) throw new InputError(`gpt2 config: nEmbd ${c.nEmbd} is not divisible by nHead ${c.nHead}`);
  if (c.activation !== undefined && c.activation !== 'gelu_new' && c.activation !== 'gelu')
    throw new InputError(`gpt2 config: activation must be 'gelu_new' or 'gelu', got ${JSON.stringify(c.activation)}`);
  if (c.layerNormEpsilon !== undefined && !(c.layerNormEpsilon > 0)) throw new InputError(`gpt2 config: layerNormEpsilon must be positive, got ${c.layerNormEpsilon}`);
}

/** Builds the GPT-2 graph (see the module comment for its signature). */
export function buildGpt2(config: Gpt2Config, weights: Gpt2Weights, opts: Gpt2BuildOptions = {}): Graph {
  validateGpt2Config(config);
  const c = config;
  const d = c.nEmbd;
  const hs = gpt2HeadSize(c);
  const inner = gpt2InnerSize(c);
  const eps = c.layerNormEpsilon ?? 1e-5;
  const approximate = (c.activation ?? 'gelu_new') === 'gelu_new' ? 'tanh' : 'none';
  const b = new GraphBuilder(new WeightStore());
  const w = (name: string, shape: number[], src: WeightSource | undefined): Node => {
    if (src === undefined) throw new InputError(`gpt2: weight ${name} is missing`);
    if (src instanceof Float32Array) {
      const n = shape.reduce((p, q) => p * q, 1);
      if (src.length !== n) throw new InputError(`gpt2 weight ${name}: expected ${n} values for [${shape}], got ${src.length}`);
      return b.weight(name, shape, src);
    }
    if (src.shape.join(',') !== shape.join(',')) throw new InputError(`gpt2 weight ${name}: expected shape [${shape}], got [${src.shape}]`);
    return b.weight(src);
  };
  if (weights.layers.length !== c.nLayer) throw new InputError(`gpt2: config has ${c.nLayer} layers, weights have ${weights.layers.length}`);
  const kvCache = opts.kvCache ?? true;
  const seq = sym('seq');
  const past = sym('past');
  const tokens = b.input('tokens', 'i32', [1, seq]);
  const positions = b.input('positions', 'i32', [seq]);
  const wte = w('wte', [c.vocabSize, d], weights.wte);
  const wpe = w('wpe', [c.nPositions, d], weights.wpe);
  // [1, seq, d] + [seq, d]
  let x = b.add(b.embedding(wte, tokens), b.embedding(wpe, positions));
  const presents: { name: string; node: Node }[] = [];
  weights.layers.forEach((L, l) => {
    const p = `h.${l}.`;
    const h = b.layernorm(x, w(`${p}ln_1.weight`, [d], L.ln1Weight), w(`${p}ln_1.bias`, [d], L.ln1Bias), eps);
    const qkv = b.linear(h, w(`${p}attn.c_attn.weight`, [3 * d, d], L.attnW), w(`${p}attn.c_attn.bias`, [3 * d], L.attnB));
    const [q, k, v] = b.split(qkv, 2, [d, d, d]).map((t) => b.reshape(t, [1, seq, c.nHead, hs]));
    const cache = kvCache
      ? { pastK: b.input(`past_k.${l}`, 'f32', [1, past, c.nHead, hs]), pastV: b.input(`past_v.${l}`, 'f32', [1, past, c.nHead, hs]) }
      : {};
    const att = b.attention(q, k, v, { causal: true, scale: 1 / Math.sqrt(hs), ...cache });
    if (kvCache) presents.push({ name: `present_k.${l}`, node: att.presentK }, { name: `present_v.${l}`, node: att.presentV });
    const o = b.linear(b.reshape(att.out, [1, seq, d]), w(`${p}attn.c_proj.weight`, [d, d], L.attnProjW), w(`${p}attn.c_proj.bias`, [d], L.attnProjB));
    x = b.add(x, o);
    const h2 = b.layernorm(x, w(`${p}ln_2.weight`, [d], L.ln2Weight), w(`${p}ln_2.bias`, [d], L.ln2Bias), eps);
    const f = b.gelu(b.linear(h2, w(`${p}mlp.c_fc.weight`, [inner, d], L.fcW), w(`${p}mlp.c_fc.bias`, [inner], L.fcB)), approximate);
    x = b.add(x, b.linear(f, w(`${p}mlp.c_proj.weight`, [d, inner], L.mlpProjW), w(`${p}mlp.c_proj.bias`, [d], L.mlpProjB)));
  });
  if (opts.logitRowsDim !== undefined) x = b.sliceAxis(x, 1, dimSub(seq, sym(opts.logitRowsDim)) as SymDim, null);
  else if (opts.lastTokenLogitsOnly) x = b.sliceAxis(x, 1, dimSub(seq, 1) as SymDim, null);
  x = b.layernorm(x, w('ln_f.weight', [d], weights.lnFWeight), w('ln_f.bias', [d], weights.lnFBias), eps);
  const logits = b.linear(x, wte);
  return b.build([{ name: 'logits', node: logits }, ...presents], { family: 'gpt2', config: { ...c } });
}

/**
 * Seeded random weights for a config, for demos, tests and benchmarks: projections and embeddings normal with std
 * 0.1, biases std 0.05, LayerNorm scales `1 + N(0, 0.05)` and shifts std 0.05 (so every parameter matters).
 */
export function randomGpt2Weights(c: Gpt2Config, seed = 1): Gpt2Weights {
  validateGpt2Config(c);
  const r = new Rng(seed);
  const d = c.nEmbd;
  const inner = gpt2InnerSize(c);
  const std = 0.1;
  const small = 0.05;
  const scale = (n: number): Float32Array => r.normals(n, small).map((v) => 1 + v);
  return {
    wte: r.normals(c.vocabSize * d, std * 4),
    wpe: r.normals(c.nPositions * d, std),
    layers: Array.from({ length: c.nLayer }, () => ({
      ln1Weight: scale(d),
      ln1Bias: r.normals(d, small),
      attnW: r.normals(3 * d * d, std * 2),
      attnB: r.normals(3 * d, small),
      attnProjW: r.normals(d * d, std * 2),
      attnProjB: r.normals(d, small),
      ln2Weight: scale(d),
      ln2Bias: r.normals(d, small),
      fcW: r.normals(inner * d, std * 2),
      fcB: r.normals(inner, small),
      mlpProjW: r.normals(d * inner, std),
      mlpProjB: r.normals(d, small),
    })),
    lnFWeight: scale(d),
    lnFBias: r.normals(d, small),
  };
}
