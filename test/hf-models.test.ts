// Hugging Face model folders written here (random weights, configs shaped like real Llama 3, Mistral, Qwen2 and
// GPT-2 checkpoints, in F32, F16 and BF16) are loaded back and run; logits are compared (1) exactly against the
// builders run on the same weights, rounded as stored, and (2) against a float64 reimplementation of the
// `transformers` forward pass that reads the Hugging Face tensors directly (rotate_half RoPE, repeat_kv GQA, Conv1D).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError, ModelFormatError } from '../src/errors.js';
import { UnsupportedModelError } from '../src/frontends/hf/errors.js';
import { hfLlamaConfig, loadHfModel, type HfModel } from '../src/frontends/hf/index.js';
import type { Graph } from '../src/ir/graph.js';
import { buildGpt2, type Gpt2Config, type Gpt2Weights } from '../src/models/gpt2.js';
import { buildLlama, llamaRopeInvFrequencies, type LlamaConfig, type LlamaWeights } from '../src/models/llama.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { DEFAULT_MAX_CONTEXT } from '../src/frontends/context.js';
import { Rng } from '../src/util/random.js';
import { roundAs, writeHfFolder, type TensorToWrite, type WriteDType } from './support/write-safetensors.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'tw-hf-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let dirCount = 0;
const newDir = (name: string): string => path.join(tmp, `${dirCount++}-${name}`);

type Json = Record<string, unknown>;
type Hf = Map<string, { shape: number[]; values: Float32Array }>;

// ---------------------------------------------------------------------------------------------------------------
// random Hugging Face tensors

function hfLlamaTensors(cfg: Json, seed: number, opts: { bias?: boolean; prefix?: string } = {}): Hf {
  const r = new Rng(seed);
  const d = cfg.hidden_size as number;
  const H = cfg.num_attention_heads as number;
  const Hkv = (cfg.num_key_value_heads as number | undefined) ?? H;
  const hd = (cfg.head_dim as number | undefined) ?? d / H;
  const inter = cfg.intermediate_size as number;
  const V = cfg.vocab_size as number;
  const pre = opts.prefix ?? 'model.';
  const m: Hf = new Map();
  const put = (name: string, shape: number[], std: number, mean = 0): void => {
    m.set(name, { shape, values: r.normals(shape.reduce((a, b) => a * b, 1), std).map((v) => v + mean) });
  };
  put(`${pre}embed_tokens.weight`, [V, d], 1);
  for (let l = 0; l < (cfg.num_hidden_layers as number); l++) {
    const p = `${pre}layers.${l}.`;
    put(`${p}input_layernorm.weight`, [d], 0.1, 1);
    put(`${p}self_attn.q_proj.weight`, [H * hd, d], 0.15);
    put(`${p}self_attn.k_proj.weight`, [Hkv * hd, d], 0.15);
    put(`${p}self_attn.v_proj.weight`, [Hkv * hd, d], 0.15);
    if (opts.bias) {
      put(`${p}self_attn.q_proj.bias`, [H * hd], 0.1);
      put(`${p}self_attn.k_proj.bias`, [Hkv * hd], 0.1);
      put(`${p}self_attn.v_proj.bias`, [Hkv * hd], 0.1);
    }
    put(`${p}self_attn.o_proj.weight`, [d, H * hd], 0.15);
    put(`${p}post_attention_layernorm.weight`, [d], 0.1, 1);
    put(`${p}mlp.gate_proj.weight`, [inter, d], 0.15);
    put(`${p}mlp.up_proj.weight`, [inter, d], 0.15);
    put(`${p}mlp.down_proj.weight`, [d, inter], 0.15);
  }
  put(`${pre}norm.weight`, [d], 0.1, 1);
  if (!cfg.tie_word_embeddings) put('lm_head.weight', [V, d], 0.15);
  return m;
}

function hfGpt2Tensors(cfg: Json, seed: number, prefix = ''): Hf {
  const r = new Rng(seed);
  const d = cfg.n_embd as number;
  const inner = (cfg.n_inner as number | null) ?? 4 * d;
  const m: Hf = new Map();
  const put = (name: string, shape: number[], std: number, mean = 0): void => {
    m.set(name, { shape, values: r.normals(shape.reduce((a, b) => a * b, 1), std).map((v) => v + mean) });
  };
  put(`${prefix}wte.weight`, [cfg.vocab_size as number, d], 0.4);
  put(`${prefix}wpe.weight`, [cfg.n_positions as number, d], 0.1);
  for (let l = 0; l < (cfg.n_layer as number); l++) {
    const p = `${prefix}h.${l}.`;
    put(`${p}ln_1.weight`, [d], 0.05, 1);
    put(`${p}ln_1.bias`, [d], 0.05);
    put(`${p}attn.c_attn.weight`, [d, 3 * d], 0.2); // Conv1D: [in, out]
    put(`${p}attn.c_attn.bias`, [3 * d], 0.05);
    put(`${p}attn.c_proj.weight`, [d, d], 0.2);
    put(`${p}attn.c_proj.bias`, [d], 0.05);
    put(`${p}ln_2.weight`, [d], 0.05, 1);
    put(`${p}ln_2.bias`, [d], 0.05);
    put(`${p}mlp.c_fc.weight`, [d, inner], 0.2);
    put(`${p}mlp.c_fc.bias`, [inner], 0.05);
    put(`${p}mlp.c_proj.weight`, [inner, d], 0.1);
    put(`${p}mlp.c_proj.bias`, [d], 0.05);
  }
  put(`${prefix}ln_f.weight`, [d], 0.05, 1);
  put(`${prefix}ln_f.bias`, [d], 0.05);
  return m;
}

function toWrite(m: Hf, dtype: WriteDType): TensorToWrite[] {
  return [...m].map(([name, t]) => ({ name, shape: t.shape, values: t.values, dtype }));
}

/** The tensors as a reader must see them after storage in `dtype`. */
function rounded(m: Hf, dtype: WriteDType): Hf {
  return new Map([...m].map(([name, t]) => [name, { shape: t.shape, values: roundAs(t.values, dtype) }]));
}

// ---------------------------------------------------------------------------------------------------------------
// a float64 reimplementation of the transformers forward passes, on Hugging Face tensors

type Rows = Float64Array[];
const get = (m: Hf, name: string): Float32Array => {
  const t = m.get(name);
  if (!t) throw new Error(`reference: no tensor ${name}`);
  return t.values;
};

/** `x @ W^T (+ b)` for nn.Linear weights `[out, in]`. */
function linearT(x: Rows, w: Float32Array, out: number, b?: Float32Array): Rows {
  return x.map((row) => {
    const inn = row.length;
    const o = new Float64Array(out);
    for (let i = 0; i < out; i++) {
      let s = b ? b[i] : 0;
      for (let j = 0; j < inn; j++) s += w[i * inn + j] * row[j];
      o[i] = s;
    }
    return o;
  });
}

/** `x @ W + b` for Conv1D weights `[in, out]`. */
function conv1d(x: Rows, w: Float32Array, out: number, b: Float32Array): Rows {
  return x.map((row) => {
    const o = Float64Array.from(b);
    for (let j = 0; j < row.length; j++) for (let i = 0; i < out; i++) o[i] += row[j] * w[j * out + i];
    return o;
  });
}

const add = (a: Rows, b: Rows): Rows => a.map((r, i) => r.map((v, j) => v + b[i][j]));
const rms = (x: Rows, w: Float32Array, eps: number): Rows =>
  x.map((r) => {
    const ms = r.reduce((s, v) => s + v * v, 0) / r.length;
    const inv = 1 / Math.sqrt(ms + eps);
    return r.map((v, i) => v * inv * w[i]);
  });
const layerNorm = (x: Rows, w: Float32Array, b: Float32Array, eps: number): Rows =>
  x.map((r) => {
    const mean = r.reduce((s, v) => s + v, 0) / r.length;
    const vr = r.reduce((s, v) => s + (v - mean) ** 2, 0) / r.length;
    return r.map((v, i) => ((v - mean) / Math.sqrt(vr + eps)) * w[i] + b[i]);
  });

/** Causal attention; query head h reads key/value head floor(h / (H / Hkv)) (transformers' repeat_kv). */
function attention(q: Rows, k: Rows, v: Rows, H: number, Hkv: number, hd: number): Rows {
  const S = q.length;
  const rep = H / Hkv;
  return q.map((qr, i) => {
    const o = new Float64Array(H * hd);
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / rep);
      const scores: number[] = [];
      for (let j = 0; j <= i && j < S; j++) {
        let s = 0;
        for (let e = 0; e < hd; e++) s += qr[h * hd + e] * k[j][kh * hd + e];
        scores.push(s / Math.sqrt(hd));
      }
      const mx = Math.max(...scores);
      const ex = scores.map((s) => Math.exp(s - mx));
      const z = ex.reduce((a, b) => a + b, 0);
      for (let j = 0; j < ex.length; j++) for (let e = 0; e < hd; e++) o[h * hd + e] += (ex[j] / z) * v[j][kh * hd + e];
    }
    return o;
  });
}

/** transformers' `apply_rotary_pos_emb` with `rotate_half`, frequencies `inv` (already scaled). */
function ropeHalf(x: Rows, heads: number, hd: number, inv: ArrayLike<number>, positions: readonly number[]): Rows {
  return x.map((row, t) => {
    const o = Float64Array.from(row);
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < hd / 2; i++) {
        const ang = positions[t] * inv[i];
        const a = row[h * hd + i];
        const b = row[h * hd + i + hd / 2];
        o[h * hd + i] = a * Math.cos(ang) - b * Math.sin(ang);
        o[h * hd + i + hd / 2] = b * Math.cos(ang) + a * Math.sin(ang);
      }
    return o;
  });
}

/** Independent transcription of transformers' default and llama3 inverse-frequency computations (float64). */
function hfInvFreq(cfg: Json, hd: number): number[] {
  const base = (cfg.rope_theta as number | undefined) ?? 10000;
  const inv = Array.from({ length: hd / 2 }, (_x, i) => 1 / base ** ((2 * i) / hd));
  const rs = cfg.rope_scaling as Json | null | undefined;
  if (!rs) return inv;
  const type = rs.rope_type ?? rs.type;
  const factor = rs.factor as number;
  if (type === 'linear') return inv.map((f) => f / factor);
  if (type !== 'llama3') throw new Error(`reference: rope type ${String(type)}`);
  const low = rs.low_freq_factor as number;
  const high = rs.high_freq_factor as number;
  const old = rs.original_max_position_embeddings as number;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < old / high) return f;
    if (wavelen > old / low) return f / factor;
    const smooth = (old / wavelen - low) / (high - low);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}

function llamaReference(cfg: Json, m: Hf, tokens: readonly number[], prefix = 'model.'): Rows {
  const d = cfg.hidden_size as number;
  const H = cfg.num_attention_heads as number;
  const Hkv = (cfg.num_key_value_heads as number | undefined) ?? H;
  const hd = (cfg.head_dim as number | undefined) ?? d / H;
  const inter = cfg.intermediate_size as number;
  const eps = (cfg.rms_norm_eps as number | undefined) ?? 1e-6;
  const inv = hfInvFreq(cfg, hd);
  const positions = tokens.map((_t, i) => i);
  const emb = get(m, `${prefix}embed_tokens.weight`);
  let x: Rows = tokens.map((t) => Float64Array.from(emb.subarray(t * d, (t + 1) * d)));
  for (let l = 0; l < (cfg.num_hidden_layers as number); l++) {
    const p = `${prefix}layers.${l}.`;
    const bias = (n: string): Float32Array | undefined => m.get(`${p}self_attn.${n}_proj.bias`)?.values;
    const h = rms(x, get(m, `${p}input_layernorm.weight`), eps);
    const q = ropeHalf(linearT(h, get(m, `${p}self_attn.q_proj.weight`), H * hd, bias('q')), H, hd, inv, positions);
    const k = ropeHalf(linearT(h, get(m, `${p}self_attn.k_proj.weight`), Hkv * hd, bias('k')), Hkv, hd, inv, positions);
    const v = linearT(h, get(m, `${p}self_attn.v_proj.weight`), Hkv * hd, bias('v'));
    x = add(x, linearT(attention(q, k, v, H, Hkv, hd), get(m, `${p}self_attn.o_proj.weight`), d));
    const h2 = rms(x, get(m, `${p}post_attention_layernorm.weight`), eps);
    const g = linearT(h2, get(m, `${p}mlp.gate_proj.weight`), inter);
    const u = linearT(h2, get(m, `${p}mlp.up_proj.weight`), inter);
    const act = g.map((r, t) => r.map((z, i) => (z / (1 + Math.exp(-z))) * u[t][i]));
    x = add(x, linearT(act, get(m, `${p}mlp.down_proj.weight`), d));
  }
  x = rms(x, get(m, `${prefix}norm.weight`), eps);
  const head = cfg.tie_word_embeddings ? emb : get(m, 'lm_head.weight');
  return linearT(x, head, cfg.vocab_size as number);
}

function gpt2Reference(cfg: Json, m: Hf, tokens: readonly number[], prefix = ''): Rows {
  const d = cfg.n_embd as number;
  const H = cfg.n_head as number;
  const hd = d / H;
  const inner = (cfg.n_inner as number | null) ?? 4 * d;
  const eps = (cfg.layer_norm_epsilon as number | undefined) ?? 1e-5;
  const wte = get(m, `${prefix}wte.weight`);
  const wpe = get(m, `${prefix}wpe.weight`);
  const geluNew = (z: number): number => 0.5 * z * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (z + 0.044715 * z ** 3)));
  let x: Rows = tokens.map((t, i) => Float64Array.from({ length: d }, (_x, j) => wte[t * d + j] + wpe[i * d + j]));
  for (let l = 0; l < (cfg.n_layer as number); l++) {
    const p = `${prefix}h.${l}.`;
    const a = layerNorm(x, get(m, `${p}ln_1.weight`), get(m, `${p}ln_1.bias`), eps);
    const qkv = conv1d(a, get(m, `${p}attn.c_attn.weight`), 3 * d, get(m, `${p}attn.c_attn.bias`));
    const att = attention(
      qkv.map((r) => r.slice(0, d)),
      qkv.map((r) => r.slice(d, 2 * d)),
      qkv.map((r) => r.slice(2 * d)),
      H,
      H,
      hd,
    );
    x = add(x, conv1d(att, get(m, `${p}attn.c_proj.weight`), d, get(m, `${p}attn.c_proj.bias`)));
    const h2 = layerNorm(x, get(m, `${p}ln_2.weight`), get(m, `${p}ln_2.bias`), eps);
    const f = conv1d(h2, get(m, `${p}mlp.c_fc.weight`), inner, get(m, `${p}mlp.c_fc.bias`)).map((r) => r.map(geluNew));
    x = add(x, conv1d(f, get(m, `${p}mlp.c_proj.weight`), d, get(m, `${p}mlp.c_proj.bias`)));
  }
  x = layerNorm(x, get(m, `${prefix}ln_f.weight`), get(m, `${prefix}ln_f.bias`), eps);
  return linearT(x, wte, cfg.vocab_size as number);
}

// ---------------------------------------------------------------------------------------------------------------
// running graphs

function logits(g: Graph, tokens: readonly number[], positions?: readonly number[]): Float32Array {
  const pos = positions ?? tokens.map((_t, i) => i);
  const out = runGraph(g, { tokens: Tensor.from('i32', [1, tokens.length], tokens), positions: Tensor.from('i32', [tokens.length], pos) });
  return out.logits.data as Float32Array;
}

function maxRelDiff(a: ArrayLike<number>, ref: Rows): number {
  const flat = ref.flatMap((r) => Array.from(r));
  expect(a.length).toBe(flat.length);
  const scale = Math.max(...flat.map(Math.abs));
  let m = 0;
  for (let i = 0; i < flat.length; i++) m = Math.max(m, Math.abs(a[i] - flat[i]) / scale);
  return m;
}

/** The builder's Llama weights from Hugging Face tensors (written independently of the loader). */
function llamaWeightsOf(cfg: Json, m: Hf, prefix = 'model.'): LlamaWeights {
  const g = (n: string): Float32Array => get(m, n);
  return {
    tokenEmbedding: g(`${prefix}embed_tokens.weight`),
    rmsFinal: g(`${prefix}norm.weight`),
    wcls: cfg.tie_word_embeddings ? undefined : g('lm_head.weight'),
    layers: Array.from({ length: cfg.num_hidden_layers as number }, (_x, l) => {
      const p = `${prefix}layers.${l}.`;
      const bias = (n: string): Float32Array | undefined => m.get(`${p}self_attn.${n}_proj.bias`)?.values;
      return {
        rmsAtt: g(`${p}input_layernorm.weight`),
        wq: g(`${p}self_attn.q_proj.weight`),
        wk: g(`${p}self_attn.k_proj.weight`),
        wv: g(`${p}self_attn.v_proj.weight`),
        wo: g(`${p}self_attn.o_proj.weight`),
        rmsFfn: g(`${p}post_attention_layernorm.weight`),
        w1: g(`${p}mlp.gate_proj.weight`),
        w2: g(`${p}mlp.down_proj.weight`),
        w3: g(`${p}mlp.up_proj.weight`),
        ...(bias('q') ? { bq: bias('q'), bk: bias('k'), bv: bias('v') } : {}),
      };
    }),
  };
}

function gpt2WeightsOf(cfg: Json, m: Hf): Gpt2Weights {
  const d = cfg.n_embd as number;
  const inner = (cfg.n_inner as number | null) ?? 4 * d;
  const T = (n: string, rows: number, cols: number): Float32Array => {
    const a = get(m, n);
    const o = new Float32Array(a.length);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) o[c * rows + r] = a[r * cols + c];
    return o;
  };
  return {
    wte: get(m, 'wte.weight'),
    wpe: get(m, 'wpe.weight'),
    lnFWeight: get(m, 'ln_f.weight'),
    lnFBias: get(m, 'ln_f.bias'),
    layers: Array.from({ length: cfg.n_layer as number }, (_x, l) => {
      const p = `h.${l}.`;
      return {
        ln1Weight: get(m, `${p}ln_1.weight`),
        ln1Bias: get(m, `${p}ln_1.bias`),
        attnW: T(`${p}attn.c_attn.weight`, d, 3 * d),
        attnB: get(m, `${p}attn.c_attn.bias`),
        attnProjW: T(`${p}attn.c_proj.weight`, d, d),
        attnProjB: get(m, `${p}attn.c_proj.bias`),
        ln2Weight: get(m, `${p}ln_2.weight`),
        ln2Bias: get(m, `${p}ln_2.bias`),
        fcW: T(`${p}mlp.c_fc.weight`, d, inner),
        fcB: get(m, `${p}mlp.c_fc.bias`),
        mlpProjW: T(`${p}mlp.c_proj.weight`, inner, d),
        mlpProjB: get(m, `${p}mlp.c_proj.bias`),
      };
    }),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// configs shaped like real checkpoints (sizes shrunk)

/** Llama 3.1: GQA 8/2, rope_theta 500000, llama3 RoPE scaling, separate lm_head, eos list. */
const llama3: Json = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 160,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  num_key_value_heads: 2,
  vocab_size: 96,
  max_position_embeddings: 48,
  rope_theta: 500000,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rms_norm_eps: 1e-5,
  hidden_act: 'silu',
  attention_bias: false,
  mlp_bias: false,
  tie_word_embeddings: false,
  bos_token_id: 90,
  eos_token_id: [91, 92, 93],
  torch_dtype: 'bfloat16',
};

/** Mistral 7B v0.1: GQA 4/1 here, rope_theta 1e6 (v0.2+), a sliding window shorter than max_position_embeddings. */
const mistral: Json = {
  architectures: ['MistralForCausalLM'],
  model_type: 'mistral',
  hidden_size: 48,
  intermediate_size: 112,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  vocab_size: 80,
  max_position_embeddings: 256,
  sliding_window: 24,
  rope_theta: 1000000.0,
  rms_norm_eps: 1e-5,
  hidden_act: 'silu',
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: 2,
};

/** Qwen2: q/k/v biases, tied embeddings, use_sliding_window false, rms_norm_eps 1e-6. */
const qwen2: Json = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_size: 32,
  intermediate_size: 88,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 72,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  sliding_window: 32768,
  use_sliding_window: false,
  rope_theta: 1000000.0,
  rope_scaling: null,
  rms_norm_eps: 1e-6,
  hidden_act: 'silu',
  tie_word_embeddings: true,
  bos_token_id: 70,
  eos_token_id: 71,
};

/** GPT-2 (the 124M config, shrunk). */
const gpt2: Json = {
  architectures: ['GPT2LMHeadModel'],
  model_type: 'gpt2',
  activation_function: 'gelu_new',
  vocab_size: 60,
  n_positions: 24,
  n_ctx: 24,
  n_embd: 32,
  n_head: 4,
  n_layer: 2,
  n_inner: null,
  layer_norm_epsilon: 1e-5,
  resid_pdrop: 0.1,
  scale_attn_weights: true,
  bos_token_id: 59,
  eos_token_id: 59,
};

const expectedLlama3: LlamaConfig = {
  dim: 64,
  hiddenDim: 160,
  nLayers: 2,
  nHeads: 8,
  nKvHeads: 2,
  vocabSize: 96,
  seqLen: 48,
  ropeTheta: 500000,
  ropeStyle: 'half',
  normEps: 1e-5,
  sharedClassifier: false,
  ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
};
const expectedMistral: LlamaConfig = {
  dim: 48,
  hiddenDim: 112,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 1,
  vocabSize: 80,
  seqLen: 24,
  ropeTheta: 1e6,
  ropeStyle: 'half',
  normEps: 1e-5,
  sharedClassifier: false,
};
const expectedQwen2: LlamaConfig = {
  dim: 32,
  hiddenDim: 88,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  vocabSize: 72,
  seqLen: 32768,
  ropeTheta: 1e6,
  ropeStyle: 'half',
  normEps: 1e-6,
  sharedClassifier: true,
  qkvBias: true,
};
const expectedGpt2: Gpt2Config = { vocabSize: 60, nPositions: 24, nEmbd: 32, nLayer: 2, nHead: 4, layerNormEpsilon: 1e-5, activation: 'gelu_new' };

const tokensFor = (vocab: number, n: number, seed: number): number[] => {
  const r = new Rng(seed);
  return Array.from({ length: n }, () => r.int(vocab));
};

async function load(cfg: Json, m: Hf, dtype: WriteDType, opts: { shards?: number; files?: Record<string, unknown> } = {}): Promise<HfModel> {
  const dir = newDir(String(cfg.model_type));
  writeHfFolder(dir, cfg, toWrite(m, dtype), opts);
  return loadHfModel(dir);
}

// ---------------------------------------------------------------------------------------------------------------

const llamaCases = [
  { name: 'Llama 3 (GQA 8/2, theta 500000, llama3 rope scaling)', cfg: llama3, expected: expectedLlama3, bias: false, seed: 1 },
  { name: 'Mistral (GQA 4/1, theta 1e6, sliding window)', cfg: mistral, expected: expectedMistral, bias: false, seed: 2 },
  { name: 'Qwen2 (q/k/v biases, tied embeddings)', cfg: qwen2, expected: expectedQwen2, bias: true, seed: 3 },
];

describe('Hugging Face Llama family', () => {
  for (const { name, cfg, expected, bias, seed } of llamaCases) {
    const m = hfLlamaTensors(cfg, seed, { bias });
    const tokens = tokensFor(cfg.vocab_size as number, 9, seed + 10);

    it(`${name}: config maps to the Llama builder's`, async () => {
      const model = await load(cfg, m, 'F32');
      expect(model.family).toBe('llama');
      expect(model.format).toBe('safetensors');
      expect(model.modelType).toBe(cfg.model_type);
      // the declared context is kept; the compiled one is capped at DEFAULT_MAX_CONTEXT (Qwen2 declares 32768)
      const compiledContext = Math.min(expected.seqLen, DEFAULT_MAX_CONTEXT);
      expect(model.config).toEqual({ ...expected, seqLen: compiledContext });
      expect(model.maxPositions).toBe(compiledContext);
      expect(model.declaredContext).toBe(expected.seqLen);
      const nParams = [...m.values()].reduce((n, t) => n + t.values.length, 0);
      expect(model.parameters).toBe(nParams);
      expect(model.weightBytes).toBe(nParams * 4);
    });

    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      it(`${name}, ${dtype}: logits equal the builder's on the same (rounded) weights`, async () => {
        const model = await load(cfg, m, dtype);
        const r = rounded(m, dtype);
        const want = logits(buildLlama(expected, llamaWeightsOf(cfg, r), { kvCache: false }), tokens);
        const got = logits(model.build({ kvCache: false }), tokens);
        expect(Array.from(got)).toEqual(Array.from(want));
        // and the transformers forward pass in float64 on the same tensors
        expect(maxRelDiff(got, llamaReference(cfg, r, tokens))).toBeLessThan(2e-5);
      });
    }
  }

  it('sharded checkpoints (index + 3 shards) load the same model', async () => {
    const m = hfLlamaTensors(llama3, 4);
    const tokens = tokensFor(96, 6, 4);
    const single = await load(llama3, m, 'BF16');
    const sharded = await load(llama3, m, 'BF16', { shards: 3 });
    expect(sharded.parameters).toBe(single.parameters);
    // a file inside the folder names it too
    const viaIndex = await loadHfModel(path.join(sharded.path, 'model.safetensors.index.json'));
    const viaConfig = await loadHfModel(path.join(single.path, 'config.json'));
    expect(viaIndex.parameters).toBe(single.parameters);
    expect(viaConfig.parameters).toBe(single.parameters);
    expect(Array.from(logits(sharded.build({ kvCache: false }), tokens))).toEqual(Array.from(logits(single.build({ kvCache: false }), tokens)));
  });

  it('the KV-cache graph decodes step by step to the full-sequence logits', async () => {
    const m = hfLlamaTensors(qwen2, 5, { bias: true });
    const model = await load(qwen2, m, 'F32');
    const tokens = tokensFor(72, 5, 9);
    const full = logits(model.build({ kvCache: false }), tokens);
    const g = model.build();
    const c = model.config as LlamaConfig;
    const hd = c.dim / c.nHeads;
    const inputs: Record<string, Tensor> = {};
    for (let l = 0; l < c.nLayers; l++) {
      inputs[`past_k.${l}`] = Tensor.zeros('f32', [1, 0, c.nKvHeads, hd]);
      inputs[`past_v.${l}`] = Tensor.zeros('f32', [1, 0, c.nKvHeads, hd]);
    }
    for (let t = 0; t < tokens.length; t++) {
      const out = runGraph(g, { ...inputs, tokens: Tensor.from('i32', [1, 1], [tokens[t]]), positions: Tensor.from('i32', [1], [t]) });
      const row = out.logits.data as Float32Array;
      const want = full.subarray(t * c.vocabSize, (t + 1) * c.vocabSize);
      for (let i = 0; i < row.length; i++) expect(row[i]).toBeCloseTo(want[i], 4);
      for (let l = 0; l < c.nLayers; l++) {
        inputs[`past_k.${l}`] = out[`present_k.${l}`];
        inputs[`past_v.${l}`] = out[`present_v.${l}`];
      }
    }
  });

  it('head_dim different from hidden_size / num_attention_heads (Mistral Nemo style)', async () => {
    const cfg: Json = { ...mistral, hidden_size: 40, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, sliding_window: null };
    const m = hfLlamaTensors(cfg, 6);
    const model = await load(cfg, m, 'F32');
    expect(model.config).toMatchObject({ dim: 40, headDim: 16, seqLen: 256 });
    const tokens = tokensFor(80, 6, 6);
    expect(maxRelDiff(logits(model.build({ kvCache: false }), tokens), llamaReference(cfg, m, tokens))).toBeLessThan(2e-5);
  });

  it('linear RoPE scaling divides the positions (factor 0.5 at p equals no scaling at 2p)', async () => {
    const base: Json = { ...llama3, rope_scaling: null };
    const m = hfLlamaTensors(base, 7);
    const plain = await load(base, m, 'F32');
    const scaled = await load({ ...base, rope_scaling: { rope_type: 'linear', factor: 0.5 } }, m, 'F32');
    expect(scaled.config).toMatchObject({ ropeScaling: { type: 'linear', factor: 0.5 } });
    const tokens = tokensFor(96, 6, 7);
    const a = logits(scaled.build({ kvCache: false }), tokens);
    const b = logits(plain.build({ kvCache: false }), tokens, tokens.map((_t, i) => 2 * i));
    for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i], 5);
    // and with a factor > 1 against the float64 reference
    const cfg4 = { ...base, rope_scaling: { type: 'linear', factor: 4 } };
    const s4 = await load(cfg4, m, 'F32');
    expect(maxRelDiff(logits(s4.build({ kvCache: false }), tokens), llamaReference(cfg4, m, tokens))).toBeLessThan(2e-5);
  });

  it('llama3 inverse frequencies match transformers (all three bands are exercised)', () => {
    const c = hfLlamaConfig(llama3);
    const inv = llamaRopeInvFrequencies({ ...c, headDim: 8 });
    const want = hfInvFreq(llama3, 8);
    expect(want[0]).toBe(1); // high frequency: kept
    for (let i = 0; i < 4; i++) expect(inv[i]).toBeCloseTo(want[i], 6);
    const unscaled = hfInvFreq({ ...llama3, rope_scaling: null }, 8);
    expect(want[3]).toBeCloseTo(unscaled[3] / 8, 10); // low frequency: divided by factor
    expect(want[2]).toBeLessThan(unscaled[2]); // medium: blended
    expect(want[2]).toBeGreaterThan(unscaled[2] / 8);
  });

  it('the O3 pipeline keeps the logits of loaded models (scaled RoPE tables, biases, GQA, KV cache)', async () => {
    for (const [cfg, seed, bias] of [[llama3, 1, false], [qwen2, 3, true]] as const) {
      const model = await load(cfg, hfLlamaTensors(cfg, seed, { bias }), 'BF16');
      const tokens = tokensFor(cfg.vocab_size as number, 7, seed);
      const g = model.build({ kvCache: false });
      const opt = runPasses(g, 'O3').graph;
      const a = logits(g, tokens);
      const b = logits(opt, tokens);
      for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i], 4);
      expect(() => runPasses(model.build({ lastTokenLogitsOnly: true }), 'O3')).not.toThrow();
    }
  });

  it('sliding windows cap seqLen (Mistral default 4096, null = none; Qwen2 only with use_sliding_window on windowed layers)', () => {
    const { sliding_window: _w, ...noWindow } = mistral;
    expect(hfLlamaConfig({ ...noWindow, max_position_embeddings: 32768 }).seqLen).toBe(4096);
    expect(hfLlamaConfig({ ...mistral, max_position_embeddings: 32768, sliding_window: null }).seqLen).toBe(32768);
    expect(hfLlamaConfig({ ...qwen2, sliding_window: 64 }).seqLen).toBe(32768);
    expect(hfLlamaConfig({ ...qwen2, sliding_window: 64, use_sliding_window: true, max_window_layers: 2 }).seqLen).toBe(32768);
    expect(hfLlamaConfig({ ...qwen2, sliding_window: 64, use_sliding_window: true, max_window_layers: 1 }).seqLen).toBe(64);
  });

  it('transformers 5 rope_parameters are read like rope_theta + rope_scaling', () => {
    const { rope_scaling: rs, rope_theta: theta, ...rest } = llama3;
    const c = hfLlamaConfig({ ...rest, rope_parameters: { ...(rs as Json), rope_theta: theta } });
    expect(c.ropeTheta).toBe(500000);
    expect(c.ropeScaling).toEqual(expectedLlama3.ropeScaling);
  });

  it('names without the model. prefix (a bare LlamaModel checkpoint)', async () => {
    const cfg = { ...qwen2 };
    const m = hfLlamaTensors(cfg, 8, { bias: true, prefix: '' });
    const model = await load(cfg, m, 'F32');
    const tokens = tokensFor(72, 5, 8);
    expect(maxRelDiff(logits(model.build({ kvCache: false }), tokens), llamaReference(cfg, m, tokens, ''))).toBeLessThan(2e-5);
  });
});

describe('Hugging Face GPT-2', () => {
  const m = hfGpt2Tensors(gpt2, 11);
  const tokens = tokensFor(60, 8, 12);

  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    it(`${dtype}: Conv1D weights are transposed; logits equal the builder's and transformers'`, async () => {
      const model = await load(gpt2, m, dtype);
      expect(model.family).toBe('gpt2');
      expect(model.config).toEqual(expectedGpt2);
      expect(model.bosId).toBe(59);
      expect(model.stopTokens).toEqual([59]);
      const r = rounded(m, dtype);
      const got = logits(model.build({ kvCache: false }), tokens);
      expect(Array.from(got)).toEqual(Array.from(logits(buildGpt2(expectedGpt2, gpt2WeightsOf(gpt2, r), { kvCache: false }), tokens)));
      expect(maxRelDiff(got, gpt2Reference(gpt2, r, tokens))).toBeLessThan(2e-5);
    });
  }

  it('a GPT2LMHeadModel checkpoint (transformer. prefix, causal-mask buffers, tied lm_head)', async () => {
    const p = hfGpt2Tensors(gpt2, 13, 'transformer.');
    const withBuffers = new Map(p);
    for (let l = 0; l < 2; l++) withBuffers.set(`transformer.h.${l}.attn.bias`, { shape: [1, 1, 24, 24], values: new Float32Array(576).fill(1) });
    withBuffers.set('lm_head.weight', p.get('transformer.wte.weight')!);
    const model = await load(gpt2, withBuffers, 'F32');
    expect(maxRelDiff(logits(model.build({ kvCache: false }), tokens), gpt2Reference(gpt2, p, tokens, 'transformer.'))).toBeLessThan(2e-5);
  });
});

describe('Hugging Face folders that cannot be loaded', () => {
  const m = hfLlamaTensors(mistral, 21);

  const loadErr = async (cfg: Json, tensors: Hf = m, edit?: (dir: string) => void): Promise<unknown> => {
    const dir = newDir('bad');
    writeHfFolder(dir, cfg, toWrite(tensors, 'F32'));
    edit?.(dir);
    return loadHfModel(dir).then(
      () => undefined,
      (e: unknown) => e,
    );
  };

  it('unsupported RoPE scaling types, activations and architectures are typed errors naming the key', async () => {
    for (const [cfg, feature] of [
      [{ ...mistral, rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'rope_scaling.rope_type'],
      [{ ...mistral, rope_scaling: { type: 'dynamic', factor: 2 } }, 'rope_scaling.rope_type'],
      [{ ...mistral, hidden_act: 'gelu' }, 'hidden_act'],
      [{ ...mistral, model_type: 'phi3' }, 'model_type'],
      [{ ...mistral, partial_rotary_factor: 0.5 }, 'partial_rotary_factor'],
      [{ ...gpt2, activation_function: 'relu' }, 'activation_function'],
    ] as [Json, string][]) {
      const e = await loadErr(cfg, cfg.model_type === 'gpt2' ? hfGpt2Tensors(gpt2, 1) : m);
      expect(e).toBeInstanceOf(UnsupportedModelError);
      expect((e as UnsupportedModelError).feature).toBe(feature);
      expect((e as UnsupportedModelError).code).toBe('UNSUPPORTED_MODEL');
    }
  });

  it('missing or ill-typed config fields, wrong tensor shapes, missing and unknown tensors', async () => {
    const { hidden_size: _h, ...noHidden } = mistral;
    let e = await loadErr(noHidden);
    expect(e).toBeInstanceOf(ModelFormatError);
    expect((e as ModelFormatError).field).toBe('hidden_size');
    e = await loadErr({ ...mistral, num_key_value_heads: 3 });
    expect((e as ModelFormatError).field).toBe('num_key_value_heads');
    e = await loadErr({ ...mistral, intermediate_size: 100 });
    expect(e).toBeInstanceOf(ModelFormatError);
    expect((e as ModelFormatError).message).toMatch(/mlp\.gate_proj\.weight.*shape \[112,48\] does not match the config's \[100,48\]/);
    const fewer = new Map(m);
    fewer.delete('model.layers.1.mlp.up_proj.weight');
    e = await loadErr(mistral, fewer);
    expect((e as ModelFormatError).field).toBe("tensor 'model.layers.1.mlp.up_proj.weight'");
    const more = new Map(m);
    more.set('model.layers.0.self_attn.o_proj.bias', { shape: [48], values: new Float32Array(48) });
    e = await loadErr(mistral, more);
    expect(e).toBeInstanceOf(UnsupportedModelError);
    expect((e as UnsupportedModelError).feature).toContain('o_proj.bias');
    e = await loadErr(mistral, m, (dir) => writeFileSync(path.join(dir, 'config.json'), '{"model_type": "llama",'));
    expect(e).toBeInstanceOf(ModelFormatError);
    e = await loadErr(mistral, m, (dir) => rmSync(path.join(dir, 'model.safetensors')));
    expect(e).toBeInstanceOf(InputError);
  });
});
