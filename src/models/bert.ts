/**
 * The BERT encoder (Hugging Face `BertModel` semantics) written with the builder: word + position + token-type
 * embeddings and an embedding LayerNorm, then post-LayerNorm blocks (bidirectional multi-head self-attention with a
 * padding mask, residual, LayerNorm; GELU feed-forward, residual, LayerNorm), and an optional pooler.
 *
 * Graph signature: inputs `tokens: i32[1, seq]`, `token_type_ids: i32[1, seq]` (segment ids, 0 or 1 for BERT),
 * `attention_mask: i32[1, seq]` (1 = attend, 0 = padding) and `positions: i32[seq]` (indices into the position
 * embedding, normally `0 … seq-1`; an input because `seq` is symbolic); outputs `last_hidden_state: f32[1, seq, d]`
 * and, when pooler weights are given, `pooler_output: f32[1, d]` (`tanh(dense(hidden[:, 0]))`).
 *
 * **Masking.** The attention mask becomes a boolean mask (`attention_mask > 0`, broadcast over heads and query
 * positions) on the `attention` op, so padded keys get exactly zero weight. Hugging Face adds `finfo(f32).min`
 * instead; the two agree whenever a query can see at least one key. For a row whose keys are all masked (an
 * all-zero `attention_mask`) Hugging Face averages every value uniformly while this graph's attention yields zeros.
 * Outputs at padded query positions are computed but meaningless, as in Hugging Face.
 *
 * All dense weights are stored `[out, in]`, as `nn.Linear` keeps them (Hugging Face checkpoints load unchanged).
 * @module
 */
import { InputError } from '../errors.js';
import { GraphBuilder } from '../ir/builder.js';
import type { Graph } from '../ir/graph.js';
import type { Node } from '../ir/node.js';
import { sym } from '../ir/dim.js';
import { WeightStore } from '../ir/weights.js';
import { Rng } from '../util/random.js';
import type { WeightSource } from './llama.js';

/** Hyper-parameters of a BERT model (Hugging Face `BertConfig` field names in camelCase). */
export interface BertConfig {
  /** Vocabulary size (`vocab_size`, 30522 for bert-base-uncased). */
  vocabSize: number;
  /** Model width (`hidden_size`). */
  hiddenSize: number;
  /** Encoder layers (`num_hidden_layers`). */
  numHiddenLayers: number;
  /** Attention heads (`num_attention_heads`); must divide `hiddenSize`. */
  numAttentionHeads: number;
  /** Feed-forward width (`intermediate_size`, usually `4 * hiddenSize`). */
  intermediateSize: number;
  /** Rows of the position embedding (`max_position_embeddings`, 512 for BERT). */
  maxPositionEmbeddings: number;
  /** Rows of the token-type embedding (`type_vocab_size`); default 2. */
  typeVocabSize?: number;
  /** LayerNorm epsilon (`layer_norm_eps`); default 1e-12. */
  layerNormEps?: number;
  /** Feed-forward activation (`hidden_act`): exact erf `gelu` (the default) or the tanh approximation `gelu_new`. */
  hiddenAct?: 'gelu' | 'gelu_new';
}

/** Per-layer weights; dense weights `[out, in]`. */
export interface BertLayerWeights {
  /** `attention.self.query.weight` `[d, d]`. */
  queryW: WeightSource;
  /** `attention.self.query.bias` `[d]`. */
  queryB: WeightSource;
  /** `attention.self.key.weight` `[d, d]`. */
  keyW: WeightSource;
  /** `attention.self.key.bias` `[d]`. */
  keyB: WeightSource;
  /** `attention.self.value.weight` `[d, d]`. */
  valueW: WeightSource;
  /** `attention.self.value.bias` `[d]`. */
  valueB: WeightSource;
  /** `attention.output.dense.weight` `[d, d]`. */
  attnOutW: WeightSource;
  /** `attention.output.dense.bias` `[d]`. */
  attnOutB: WeightSource;
  /** `attention.output.LayerNorm.weight` `[d]`. */
  attnLnW: WeightSource;
  /** `attention.output.LayerNorm.bias` `[d]`. */
  attnLnB: WeightSource;
  /** `intermediate.dense.weight` `[intermediate, d]`. */
  interW: WeightSource;
  /** `intermediate.dense.bias` `[intermediate]`. */
  interB: WeightSource;
  /** `output.dense.weight` `[d, intermediate]`. */
  outW: WeightSource;
  /** `output.dense.bias` `[d]`. */
  outB: WeightSource;
  /** `output.LayerNorm.weight` `[d]`. */
  outLnW: WeightSource;
  /** `output.LayerNorm.bias` `[d]`. */
  outLnB: WeightSource;
}

/** Pooler weights (`pooler.dense`). */
export interface BertPoolerWeights {
  /** `pooler.dense.weight` `[d, d]`. */
  weight: WeightSource;
  /** `pooler.dense.bias` `[d]`. */
  bias: WeightSource;
}

/** All weights of a BERT model. */
export interface BertWeights {
  /** `embeddings.word_embeddings.weight` `[vocab, d]`. */
  wordEmbeddings: WeightSource;
  /** `embeddings.position_embeddings.weight` `[maxPositionEmbeddings, d]`. */
  positionEmbeddings: WeightSource;
  /** `embeddings.token_type_embeddings.weight` `[typeVocabSize, d]`. */
  tokenTypeEmbeddings: WeightSource;
  /** `embeddings.LayerNorm.weight` `[d]`. */
  embLnW: WeightSource;
  /** `embeddings.LayerNorm.bias` `[d]`. */
  embLnB: WeightSource;
  /** `encoder.layer.0 …`. */
  layers: BertLayerWeights[];
  /** Pooler; when present the graph also outputs `pooler_output`. */
  pooler?: BertPoolerWeights;
}

/** Head size `hiddenSize / numAttentionHeads`. */
export function bertHeadSize(c: BertConfig): number {
  return c.hiddenSize / c.numAttentionHeads;
}

/** Checks a config's internal consistency; throws {@link InputError} naming the field. */
export function validateBertConfig(c: BertConfig): void {
  for (const k of ['vocabSize', 'hiddenSize', 'numHiddenLayers', 'numAttentionHeads', 'intermediateSize', 'maxPositionEmbeddings'] as const)
    if (!Number.isInteger(c[k]) || c[k] <= 0) throw new InputError(`bert config: ${k} must be a positive integer, got ${c[k]}`);
  if (c.typeVocabSize !== undefined && (!Number.isInteger(c.typeVocabSize) || c.typeVocabSize <= 0))
    throw new InputError(`bert config: typeVocabSize must be a positive integer, got ${c.typeVocabSize}`);
  if (c.hiddenSize % c.numAttentionHeads !== 0) throw new InputError(`bert config: hiddenSize ${c.hiddenSize} is not divisible by numAttentionHeads ${c.numAttentionHeads}`);
  if (c.hiddenAct !== undefined && c.hiddenAct !== 'gelu' && c.hiddenAct !== 'gelu_new')
    throw new InputError(`bert config: hiddenAct must be 'gelu' or 'gelu_new', got ${JSON.stringify(c.hiddenAct)}`);
  if (c.layerNormEps !== undefined && !(c.layerNormEps > 0)) throw new InputError(`bert config: layerNormEps must be positive, got ${c.layerNormEps}`);
}

/** Builds the BERT graph (see the module comment for its signature). */
export function buildBert(config: BertConfig, weights: BertWeights): Graph {
  validateBertConfig(config);
  const c = config;
  const d = c.hiddenSize;
  const nh = c.numAttentionHeads;
  const hs = bertHeadSize(c);
  const types = c.typeVocabSize ?? 2;
  const eps = c.layerNormEps ?? 1e-12;
  const approximate = (c.hiddenAct ?? 'gelu') === 'gelu_new' ? 'tanh' : 'none';
  const b = new GraphBuilder(new WeightStore());
  const w = (name: string, shape: number[], src: WeightSource | undefined): Node => {
    if (src === undefined) throw new InputError(`bert: weight ${name} is missing`);
    if (src instanceof Float32Array) {
      const n = shape.reduce((p, q) => p * q, 1);
      if (src.length !== n) throw new InputError(`bert weight ${name}: expected ${n} values for [${shape}], got ${src.length}`);
      return b.weight(name, shape, src);
    }
    if (src.shape.join(',') !== shape.join(',')) throw new InputError(`bert weight ${name}: expected shape [${shape}], got [${src.shape}]`);
    return b.weight(src);
  };
  if (weights.layers.length !== c.numHiddenLayers) throw new InputError(`bert: config has ${c.numHiddenLayers} layers, weights have ${weights.layers.length}`);
  const seq = sym('seq');
  const tokens = b.input('tokens', 'i32', [1, seq]);
  const tokenTypes = b.input('token_type_ids', 'i32', [1, seq]);
  const attentionMask = b.input('attention_mask', 'i32', [1, seq]);
  const positions = b.input('positions', 'i32', [seq]);

  const e = 'embeddings.';
  let x = b.add(
    b.add(b.embedding(w(`${e}word_embeddings.weight`, [c.vocabSize, d], weights.wordEmbeddings), tokens), b.embedding(w(`${e}token_type_embeddings.weight`, [types, d], weights.tokenTypeEmbeddings), tokenTypes)),
    b.embedding(w(`${e}position_embeddings.weight`, [c.maxPositionEmbeddings, d], weights.positionEmbeddings), positions),
  );
  x = b.layernorm(x, w(`${e}LayerNorm.weight`, [d], weights.embLnW), w(`${e}LayerNorm.bias`, [d], weights.embLnB), eps);

  // [1, seq] i32 -> [1, 1, 1, seq] bool, broadcast over heads and query positions
  const mask = b.reshape(b.greater(attentionMask, 0), [1, 1, 1, seq]);
  const scale = 1 / Math.sqrt(hs);

  weights.layers.forEach((L, l) => {
    const p = `encoder.layer.${l}.`;
    const heads = (t: Node): Node => b.reshape(t, [1, seq, nh, hs]);
    const q = heads(b.linear(x, w(`${p}attention.self.query.weight`, [d, d], L.queryW), w(`${p}attention.self.query.bias`, [d], L.queryB)));
    const k = heads(b.linear(x, w(`${p}attention.self.key.weight`, [d, d], L.keyW), w(`${p}attention.self.key.bias`, [d], L.keyB)));
    const v = heads(b.linear(x, w(`${p}attention.self.value.weight`, [d, d], L.valueW), w(`${p}attention.self.value.bias`, [d], L.valueB)));
    const att = b.attention(q, k, v, { causal: false, scale, mask });
    const o = b.linear(b.reshape(att.out, [1, seq, d]), w(`${p}attention.output.dense.weight`, [d, d], L.attnOutW), w(`${p}attention.output.dense.bias`, [d], L.attnOutB));
    x = b.layernorm(b.add(o, x), w(`${p}attention.output.LayerNorm.weight`, [d], L.attnLnW), w(`${p}attention.output.LayerNorm.bias`, [d], L.attnLnB), eps);
    const hmid = b.gelu(b.linear(x, w(`${p}intermediate.dense.weight`, [c.intermediateSize, d], L.interW), w(`${p}intermediate.dense.bias`, [c.intermediateSize], L.interB)), approximate);
    const f = b.linear(hmid, w(`${p}output.dense.weight`, [d, c.intermediateSize], L.outW), w(`${p}output.dense.bias`, [d], L.outB));
    x = b.layernorm(b.add(f, x), w(`${p}output.LayerNorm.weight`, [d], L.outLnW), w(`${p}output.LayerNorm.bias`, [d], L.outLnB), eps);
  });

  const outputs: { name: string; node: Node }[] = [{ name: 'last_hidden_state', node: x }];
  if (weights.pooler) {
    const first = b.reshape(b.sliceAxis(x, 1, 0, 1), [1, d]);
    const pooled = b.tanh(b.linear(first, w('pooler.dense.weight', [d, d], weights.pooler.weight), w('pooler.dense.bias', [d], weights.pooler.bias)));
    outputs.push({ name: 'pooler_output', node: pooled });
  }
  return b.build(outputs, { family: 'bert', config: { ...c } });
}

/** Options for {@link randomBertWeights}. */
export interface RandomBertOptions {
  /** Include pooler weights. Default true. */
  pooler?: boolean;
}

/**
 * Seeded random weights for a config, for demos, tests and benchmarks: projections and embeddings normal with std
 * 0.1–0.2, biases std 0.05, LayerNorm scales `1 + N(0, 0.05)` and shifts std 0.05 (so every parameter matters).
 */
export function randomBertWeights(c: BertConfig, seed = 1, opts: RandomBertOptions = {}): BertWeights {
  validateBertConfig(c);
  const r = new Rng(seed);
  const d = c.hiddenSize;
  const I = c.intermediateSize;
  const std = 0.1;
  const small = 0.05;
  const scale = (n: number): Float32Array => r.normals(n, small).map((v) => 1 + v);
  const weights: BertWeights = {
    wordEmbeddings: r.normals(c.vocabSize * d, std * 4),
    positionEmbeddings: r.normals(c.maxPositionEmbeddings * d, std * 2),
    tokenTypeEmbeddings: r.normals((c.typeVocabSize ?? 2) * d, std * 2),
    embLnW: scale(d),
    embLnB: r.normals(d, small),
    layers: Array.from({ length: c.numHiddenLayers }, () => ({
      queryW: r.normals(d * d, std * 2),
      queryB: r.normals(d, small),
      keyW: r.normals(d * d, std * 2),
      keyB: r.normals(d, small),
      valueW: r.normals(d * d, std * 2),
      valueB: r.normals(d, small),
      attnOutW: r.normals(d * d, std * 2),
      attnOutB: r.normals(d, small),
      attnLnW: scale(d),
      attnLnB: r.normals(d, small),
      interW: r.normals(I * d, std * 2),
      interB: r.normals(I, small),
      outW: r.normals(d * I, std),
      outB: r.normals(d, small),
      outLnW: scale(d),
      outLnB: r.normals(d, small),
    })),
  };
  if (opts.pooler ?? true) weights.pooler = { weight: r.normals(d * d, std * 2), bias: r.normals(d, small) };
  return weights;
}
