/**
 * Hugging Face checkpoint tensors → the builders' weights: Llama-family names (`model.layers.N.self_attn.q_proj.weight`,
 * …) and GPT-2 names (`h.N.attn.c_attn.weight`, …, whose `Conv1D` weights are `[in, out]` and are transposed here to
 * the builders' `[out, in]`). Every tensor is checked against the shape the config implies, and a tensor the mapping
 * does not use (other than known buffers such as `rotary_emb.inv_freq`) raises {@link UnsupportedModelError}: an
 * unknown bias or extra projection would otherwise be silently dropped.
 * @module
 */
import { ModelFormatError } from '../../errors.js';
import type { ActivationQuant } from '../../ir/attrs.js';
import { packBits, WeightStore, type WeightEntry } from '../../ir/weights.js';
import { gpt2InnerSize, type Gpt2Config, type Gpt2LayerWeights, type Gpt2Weights } from '../../models/gpt2.js';
import { llamaHeadSize, type LlamaConfig, type LlamaLayerWeights, type LlamaWeights } from '../../models/llama.js';
import type { SafetensorsCheckpoint } from '../safetensors/checkpoint.js';
import { UnsupportedModelError } from './errors.js';
import type { HfW8A8Scheme } from './quantization.js';

/** Reads tensors by name, checking shapes and recording which were used. */
class TensorTaker {
  readonly used = new Set<string>();
  parameters = 0;
  constructor(readonly ck: SafetensorsCheckpoint) {}
  has(name: string): boolean {
    return this.ck.has(name);
  }
  take(name: string, shape: readonly number[]): Float32Array {
    if (!this.ck.has(name)) throw new ModelFormatError(`tensor '${name}'`, 0, `missing tensor (expected shape [${shape}])`, this.ck.path);
    const info = this.ck.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
      throw new ModelFormatError(`tensor '${name}'`, info.byteOffset, `shape [${info.shape}] does not match the config's [${shape}]`, this.ck.path);
    this.used.add(name);
    this.parameters += info.numel;
    return this.ck.float32(name);
  }
  /**
   * A compressed-tensors INT8 projection `base` (`base.weight` I8 `[n, k]`, `base.weight_scale` `[n, 1]` or `[n]`,
   * and for static activations `base.input_scale` with one value) as an int8-per-channel weight entry named `name`,
   * and its activation quantization.
   */
  takeW8A8(base: string, name: string, shape: readonly [number, number], activations: HfW8A8Scheme['activations']): { entry: WeightEntry; actQuant: ActivationQuant } {
    const [n, k] = shape;
    const wName = `${base}.weight`;
    if (!this.ck.has(wName)) throw new ModelFormatError(`tensor '${wName}'`, 0, `missing tensor (expected I8 [${shape}])`, this.ck.path);
    const info = this.ck.info(wName);
    if (info.dtype !== 'I8') throw new ModelFormatError(`tensor '${wName}'`, info.byteOffset, `a compressed-tensors int-quantized weight must be I8, got ${info.dtype}`, this.ck.path);
    if (info.shape.length !== 2 || info.shape[0] !== n || info.shape[1] !== k) throw new ModelFormatError(`tensor '${wName}'`, info.byteOffset, `shape [${info.shape}] does not match the config's [${shape}]`, this.ck.path);
    const ints = this.ck.values(wName) as Int8Array;
    this.used.add(wName);
    this.parameters += info.numel;
    const scaleOf = (tensor: string, count: number, shapes: readonly (readonly number[])[]): Float32Array => {
      if (!this.ck.has(tensor)) throw new ModelFormatError(`tensor '${tensor}'`, 0, `missing tensor (the quantization_config needs it: ${count} value${count > 1 ? 's' : ''})`, this.ck.path);
      const si = this.ck.info(tensor);
      if (!shapes.some((sh) => sh.length === si.shape.length && sh.every((d, i) => d === si.shape[i])))
        throw new ModelFormatError(`tensor '${tensor}'`, si.byteOffset, `shape [${si.shape}] is not one of ${shapes.map((sh) => `[${sh}]`).join(', ')}`, this.ck.path);
      this.used.add(tensor);
      const v = this.ck.float32(tensor);
      if (!v.every((x) => x > 0 && Number.isFinite(x))) throw new ModelFormatError(`tensor '${tensor}'`, si.byteOffset, 'scales must be positive and finite', this.ck.path);
      return Float32Array.from(v);
    };
    const scales = scaleOf(`${base}.weight_scale`, n, [[n, 1], [n]]);
    if (ints.some((q) => q === -128)) throw new ModelFormatError(`tensor '${wName}'`, info.byteOffset, 'symmetric int8 weights lie in [-127, 127]; -128 found', this.ck.path);
    const entry = WeightStore.entry(name, 'f32', [n, k], { packed: packBits(ints, 8), scales }, { kind: 'quantized', bits: 8, signed: true, groupSize: k, hasZeroPoint: false, scaleDType: 'f32' });
    const actQuant: ActivationQuant = activations === 'per-token' ? { scale: 'per-token' } : { scale: scaleOf(`${base}.input_scale`, 1, [[1], []])[0] };
    return { entry, actQuant };
  }
  /** Throws for any tensor neither used nor matched by `ignore`. */
  checkAllUsed(ignore: RegExp, family: string): void {
    const extra = this.ck.names().filter((n) => !this.used.has(n) && !ignore.test(n));
    if (extra.length)
      throw new UnsupportedModelError(
        `tensor '${extra[0]}'`,
        `${extra.length} tensor${extra.length > 1 ? 's' : ''} the ${family} builder has no place for (${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', …' : ''})`,
        this.ck.path,
      );
  }
}

/** `[rows, cols]` → `[cols, rows]`. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

/**
 * Weights of a Llama-family checkpoint and what was read.
 * @internal
 */
export interface HfLlamaWeightsResult {
  /** The builder's weights. */
  weights: LlamaWeights;
  /** Whether q/k/v biases were found (Qwen2; Llama with `attention_bias`). */
  qkvBias: boolean;
  /** Parameters read (a tied classifier counted once). */
  parameters: number;
}

/**
 * Maps a Llama/Mistral/Qwen2 checkpoint onto {@link LlamaWeights} (names with or without the `model.` prefix).
 * With `config.sharedClassifier` (`tie_word_embeddings`) any `lm_head.weight` is ignored, as `transformers` ties it.
 * @internal
 */
export function hfLlamaWeights(ck: SafetensorsCheckpoint, c: LlamaConfig, w8a8?: HfW8A8Scheme): HfLlamaWeightsResult {
  const t = new TensorTaker(ck);
  const actQuant: Record<string, ActivationQuant> = {};
  // a projection: f32, or with a W8A8 quantization_config (and not in its ignore list) int8 with its activation scale
  const proj = (hf: string, name: string, shape: [number, number]): Float32Array | WeightEntry => {
    const base = hf.replace(/\.weight$/, '');
    if (!w8a8 || w8a8.ignore.some((m) => m === base || m === base.replace(/^model\./, ''))) return t.take(hf, shape);
    const { entry, actQuant: q } = t.takeW8A8(base, name, shape, w8a8.activations);
    actQuant[name] = q;
    return entry;
  };
  const pre = t.has('model.embed_tokens.weight') || !t.has('embed_tokens.weight') ? 'model.' : '';
  const hs = llamaHeadSize(c);
  const qDim = hs * c.nHeads;
  const kvDim = hs * c.nKvHeads;
  const qkvBias = t.has(`${pre}layers.0.self_attn.q_proj.bias`);
  const layers: LlamaLayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `${pre}layers.${l}.`;
    const L: LlamaLayerWeights = {
      rmsAtt: t.take(`${p}input_layernorm.weight`, [c.dim]),
      wq: proj(`${p}self_attn.q_proj.weight`, `layers.${l}.wq`, [qDim, c.dim]),
      wk: proj(`${p}self_attn.k_proj.weight`, `layers.${l}.wk`, [kvDim, c.dim]),
      wv: proj(`${p}self_attn.v_proj.weight`, `layers.${l}.wv`, [kvDim, c.dim]),
      wo: proj(`${p}self_attn.o_proj.weight`, `layers.${l}.wo`, [c.dim, qDim]),
      rmsFfn: t.take(`${p}post_attention_layernorm.weight`, [c.dim]),
      w1: proj(`${p}mlp.gate_proj.weight`, `layers.${l}.w1`, [c.hiddenDim, c.dim]),
      w2: proj(`${p}mlp.down_proj.weight`, `layers.${l}.w2`, [c.dim, c.hiddenDim]),
      w3: proj(`${p}mlp.up_proj.weight`, `layers.${l}.w3`, [c.hiddenDim, c.dim]),
    };
    if (qkvBias) {
      L.bq = t.take(`${p}self_attn.q_proj.bias`, [qDim]);
      L.bk = t.take(`${p}self_attn.k_proj.bias`, [kvDim]);
      L.bv = t.take(`${p}self_attn.v_proj.bias`, [kvDim]);
    }
    layers.push(L);
  }
  const weights: LlamaWeights = {
    tokenEmbedding: t.take(`${pre}embed_tokens.weight`, [c.vocabSize, c.dim]),
    layers,
    rmsFinal: t.take(`${pre}norm.weight`, [c.dim]),
  };
  if (!c.sharedClassifier) weights.wcls = w8a8 && !w8a8.ignore.includes('lm_head') ? proj('lm_head.weight', 'output', [c.vocabSize, c.dim]) : t.take('lm_head.weight', [c.vocabSize, c.dim]);
  if (Object.keys(actQuant).length) weights.actQuant = actQuant;
  t.checkAllUsed(c.sharedClassifier ? /(^|\.)rotary_emb\.inv_freq$|^lm_head\.weight$/ : /(^|\.)rotary_emb\.inv_freq$/, 'llama');
  return { weights, qkvBias, parameters: t.parameters };
}

/**
 * Weights of a GPT-2 checkpoint and the parameter count.
 * @internal
 */
export interface HfGpt2WeightsResult {
  /** The builder's weights (projections transposed to `[out, in]`). */
  weights: Gpt2Weights;
  /** Parameters read. */
  parameters: number;
}

/**
 * Maps a GPT-2 checkpoint (names with or without the `transformer.` prefix) onto {@link Gpt2Weights}.
 * @internal
 */
export function hfGpt2Weights(ck: SafetensorsCheckpoint, c: Gpt2Config): HfGpt2WeightsResult {
  const t = new TensorTaker(ck);
  const pre = t.has('transformer.wte.weight') || !t.has('wte.weight') ? 'transformer.' : '';
  const d = c.nEmbd;
  const inner = gpt2InnerSize(c);
  // Conv1D stores [in, out]
  const conv = (name: string, nIn: number, nOut: number): Float32Array => transpose(t.take(name, [nIn, nOut]), nIn, nOut);
  const layers: Gpt2LayerWeights[] = [];
  for (let l = 0; l < c.nLayer; l++) {
    const p = `${pre}h.${l}.`;
    layers.push({
      ln1Weight: t.take(`${p}ln_1.weight`, [d]),
      ln1Bias: t.take(`${p}ln_1.bias`, [d]),
      attnW: conv(`${p}attn.c_attn.weight`, d, 3 * d),
      attnB: t.take(`${p}attn.c_attn.bias`, [3 * d]),
      attnProjW: conv(`${p}attn.c_proj.weight`, d, d),
      attnProjB: t.take(`${p}attn.c_proj.bias`, [d]),
      ln2Weight: t.take(`${p}ln_2.weight`, [d]),
      ln2Bias: t.take(`${p}ln_2.bias`, [d]),
      fcW: conv(`${p}mlp.c_fc.weight`, d, inner),
      fcB: t.take(`${p}mlp.c_fc.bias`, [inner]),
      mlpProjW: conv(`${p}mlp.c_proj.weight`, inner, d),
      mlpProjB: t.take(`${p}mlp.c_proj.bias`, [d]),
    });
  }
  const weights: Gpt2Weights = {
    wte: t.take(`${pre}wte.weight`, [c.vocabSize, d]),
    wpe: t.take(`${pre}wpe.weight`, [c.nPositions, d]),
    layers,
    lnFWeight: t.take(`${pre}ln_f.weight`, [d]),
    lnFBias: t.take(`${pre}ln_f.bias`, [d]),
  };
  // the causal-mask buffers of older checkpoints, and the (tied) LM head
  t.checkAllUsed(/(^|\.)attn\.(masked_)?bias$|^lm_head\.weight$/, 'gpt2');
  return { weights, parameters: t.parameters };
}
