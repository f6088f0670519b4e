/**
 * A W8A8 model as a Hugging Face folder in the compressed-tensors layout (what `llm-compressor` writes and vLLM
 * reads for INT8 W8A8): `model.safetensors` with, per quantized projection, `*.weight` (I8 `[out, in]`),
 * `*.weight_scale` (F32 `[out, 1]`, per output channel, symmetric) and, for static activation scales,
 * `*.input_scale` (F32 `[1]`); everything else F32 (SmoothQuant's `1/s` already folded into the norm gains and the
 * producers' rows). `config.json` is a Llama config with
 *
 * ```json
 * "quantization_config": { "quant_method": "compressed-tensors", "format": "int-quantized",
 *   "quantization_status": "compressed", "ignore": ["lm_head"],
 *   "config_groups": { "group_0": { "targets": ["Linear"],
 *     "weights": { "num_bits": 8, "type": "int", "symmetric": true, "strategy": "channel", "dynamic": false },
 *     "input_activations": { "num_bits": 8, "type": "int", "symmetric": true, "strategy": "tensor", "dynamic": false } } } }
 * ```
 *
 * (`strategy: "token", dynamic: true` for per-token scales). The Hugging Face importer reads it back into the same
 * W8A8 IR (`src/frontends/hf/quantization.ts`). A llama2.c model's interleaved RoPE is written in Hugging Face's
 * half-split order: the rows of `q_proj` and `k_proj` (and their scales) are permuted per head, which leaves the
 * attention scores equal up to the order of the sums in `q·k`.
 * @module
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../errors.js';
import { applyW8A8, type W8A8Plan } from '../compress/w8a8.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { decodeWeight, type WeightEntry } from '../ir/weights.js';
import type { LoadedModel } from '../frontends/load.js';
import { llamaHeadSize, type LlamaConfig } from '../models/llama.js';

/** One tensor of the file. */
interface OutTensor {
  readonly name: string;
  readonly dtype: 'F32' | 'I8';
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
}

/** Serializes tensors as a safetensors file (8-byte LE header length, JSON header padded to 8, data in order). */
export function safetensorsBytes(tensors: readonly OutTensor[]): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', producer: 'tensorwright' } };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const t of tensors) {
    out.set(t.bytes, at);
    at += t.bytes.length;
  }
  return out;
}

const f32 = (name: string, shape: readonly number[], v: Float32Array): OutTensor => ({ name, dtype: 'F32', shape, bytes: new Uint8Array(Float32Array.from(v).buffer) });

/** Hugging Face names of the Llama builder's weights (`layers.0.wq` → `model.layers.0.self_attn.q_proj`). */
export function hfLlamaName(name: string): string {
  const m = /^layers\.(\d+)\.(\w+)$/.exec(name);
  if (m) {
    const map: Record<string, string> = {
      attention_norm: 'input_layernorm.weight',
      wq: 'self_attn.q_proj.weight',
      wk: 'self_attn.k_proj.weight',
      wv: 'self_attn.v_proj.weight',
      wo: 'self_attn.o_proj.weight',
      bq: 'self_attn.q_proj.bias',
      bk: 'self_attn.k_proj.bias',
      bv: 'self_attn.v_proj.bias',
      ffn_norm: 'post_attention_layernorm.weight',
      w1: 'mlp.gate_proj.weight',
      w2: 'mlp.down_proj.weight',
      w3: 'mlp.up_proj.weight',
    };
    if (map[m[2]]) return `model.layers.${m[1]}.${map[m[2]]}`;
  }
  const top: Record<string, string> = { tok_embeddings: 'model.embed_tokens.weight', norm: 'model.norm.weight', output: 'lm_head.weight' };
  if (top[name]) return top[name];
  throw new UsageError(`W8A8 file: no Hugging Face name for the weight '${name}'`);
}

/** Row order taking interleaved RoPE pairs (2i, 2i+1) to Hugging Face's half split (i, i + hs/2), per head. */
function halfSplitRows(heads: number, hs: number): Int32Array {
  const from = new Int32Array(heads * hs);
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < hs / 2; i++) {
      from[h * hs + i] = h * hs + 2 * i;
      from[h * hs + hs / 2 + i] = h * hs + 2 * i + 1;
    }
  return from;
}

function permuteRows<T extends Float32Array | Int8Array>(v: T, rows: Int32Array, cols: number): T {
  const out = new (v.constructor as new (n: number) => T)(v.length);
  for (let r = 0; r < rows.length; r++) out.set(v.subarray(rows[r] * cols, (rows[r] + 1) * cols), r * cols);
  return out;
}

/** The result of {@link writeW8A8Folder}. */
export interface W8A8FolderResult {
  /** Bytes of `model.safetensors`. */
  readonly fileBytes: number;
  /** Tensors by safetensors dtype. */
  readonly tensorTypes: Record<string, number>;
}

/**
 * Writes `model` with `plan` applied as a compressed-tensors W8A8 Hugging Face folder `dir` (see the module comment).
 * @throws UsageError for a model that is not of the Llama family, has RoPE scaling, or a plan with explicit
 *   smoothing multiplies (no producer to fold `1/s` into) or outlier channels: the format has no place for them.
 */
export function writeW8A8Folder(dir: string, model: LoadedModel, plan: W8A8Plan): W8A8FolderResult {
  if (model.family !== 'llama') throw new UsageError(`-o writes W8A8 Llama-family models; this is a ${model.family} model`);
  const c = model.config as LlamaConfig;
  if (c.ropeScaling) throw new UsageError('-o: RoPE scaling is not written to W8A8 folders yet');
  if (plan.outliers.size) throw new UsageError(`-o: the compressed-tensors layout has no place for the f32 outlier channels of ${[...plan.outliers.keys()].join(', ')}`);
  if (plan.inputScales.size) throw new UsageError(`-o: SmoothQuant found no producer to fold 1/s into for ${[...plan.inputScales.keys()].join(', ')}; the compressed-tensors layout has no place for an explicit multiply`);
  const graph = applyW8A8(model.build({ lastTokenLogitsOnly: false }), plan);
  const entries = new Map<string, WeightEntry>();
  for (const n of graph.nodes()) if (isOp(n, 'weight')) entries.set(attrsOf(n, 'weight').name, graph.weights.get(attrsOf(n, 'weight').id));
  const hs = llamaHeadSize(c);
  const interleaved = (c.ropeStyle ?? 'interleaved') === 'interleaved';
  const rowsOf = (name: string): Int32Array | undefined => {
    if (!interleaved) return undefined;
    if (/\.(wq|bq)$/.test(name)) return halfSplitRows(c.nHeads, hs);
    if (/\.(wk|bk)$/.test(name)) return halfSplitRows(c.nKvHeads, hs);
    return undefined;
  };
  const tensors: OutTensor[] = [];
  for (const [name, e] of entries) {
    const hf = hfLlamaName(name);
    const rows = rowsOf(name);
    const values = decodeWeight(e);
    const q = plan.actQuant.get(name);
    if (!q) {
      const cols = e.shape.length === 2 ? (e.shape[1] as number) : 1;
      tensors.push(f32(hf, e.shape, rows ? permuteRows(values, rows, cols) : values));
      continue;
    }
    const enc = e.encoding;
    const [n, k] = e.shape as [number, number];
    if (enc.kind !== 'quantized' || enc.bits !== 8 || !enc.signed || enc.hasZeroPoint || enc.groupSize !== k) throw new Error(`internal: W8A8 weight '${name}' is not int8 per output channel`);
    const scales = e.data.scales as Float32Array;
    let ints = new Int8Array(n * k);
    for (let r = 0; r < n; r++) for (let j = 0; j < k; j++) ints[r * k + j] = Math.round(values[r * k + j] / scales[r]);
    let s = Float32Array.from(scales);
    if (rows) [ints, s] = [permuteRows(ints, rows, k), permuteRows(s, rows, 1)];
    const base = hf.replace(/\.weight$/, '');
    tensors.push({ name: hf, dtype: 'I8', shape: [n, k], bytes: new Uint8Array(ints.buffer) }, f32(`${base}.weight_scale`, [n, 1], s));
    if (q.scale !== 'per-token') tensors.push(f32(`${base}.input_scale`, [1], Float32Array.of(q.scale)));
  }
  const staticScales = [...plan.actQuant.values()].some((q) => q.scale !== 'per-token');
  const arg = (strategy: string, dynamic: boolean): Record<string, unknown> => ({ num_bits: 8, type: 'int', symmetric: true, strategy, dynamic, group_size: null, block_structure: null, actorder: null, observer: null, observer_kwargs: {} });
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: hs,
    vocab_size: c.vocabSize,
    max_position_embeddings: model.declaredContext ?? model.maxPositions,
    rms_norm_eps: c.normEps ?? 1e-5,
    rope_theta: c.ropeTheta ?? 10000,
    hidden_act: 'silu',
    tie_word_embeddings: c.sharedClassifier,
    attention_bias: !!c.qkvBias,
    bos_token_id: model.bosId,
    ...(model.stopTokens?.length ? { eos_token_id: model.stopTokens.length === 1 ? model.stopTokens[0] : [...model.stopTokens] } : {}),
    torch_dtype: 'float32',
    quantization_config: {
      quant_method: 'compressed-tensors',
      format: 'int-quantized',
      quantization_status: 'compressed',
      ignore: plan.kept.map((k) => (k.name === 'tok_embeddings' || k.name === 'output' ? 'lm_head' : hfLlamaName(k.name).replace(/\.weight$/, ''))),
      kv_cache_scheme: null,
      config_groups: {
        group_0: {
          targets: ['Linear'],
          weights: arg('channel', false),
          input_activations: staticScales ? arg('tensor', false) : arg('token', true),
          output_activations: null,
        },
      },
    },
  };
  mkdirSync(dir, { recursive: true });
  const bytes = safetensorsBytes(tensors);
  writeFileSync(join(dir, 'model.safetensors'), bytes);
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  const tensorTypes: Record<string, number> = {};
  for (const t of tensors) tensorTypes[t.dtype] = (tensorTypes[t.dtype] ?? 0) + 1;
  return { fileBytes: bytes.length, tensorTypes };
}
