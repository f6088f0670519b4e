/**
 * A Llama-family IR graph (as `buildLlama` makes it, from a llama2.c checkpoint, a GGUF `llama` file or anything
 * with the same weights) written as a GGUF `llama` model: metadata from the graph's config, tensors under llama.cpp's
 * names, and each weight in the ggml type its encoding is:
 *
 * | weight | ggml type |
 * | --- | --- |
 * | dense f32 / f16 | F32 |
 * | 8-bit signed, groups of 32, no zero point or offset | Q8_0 |
 * | 4-bit unsigned, groups of 32, zero point 8 | Q4_0 |
 * | 4-bit unsigned, groups of 32, offset (`mins`), no zero point | Q4_1 |
 *
 * A linear layer with outlier channels (`src/ir/outlier-linear.ts`: `matmul(x, W) + matmul(gather(x, I), W_out)`)
 * adds two tensors beside its weight `<name>`: `<name>.outlier_idx` (I32 `[n]`, the constant `I`) and
 * `<name>.outlier_weight` (F32 `[N, n]`); readers that know nothing of them still read the file, and the GGUF importer
 * rebuilds the decomposition from them.
 *
 * Scales and offsets must be f16 values (GGUF stores them as f16), so that the file decodes to exactly the graph's
 * weights; `src/compress` produces such weights. Anything else is an {@link InputError} naming the weight.
 *
 * Only interleaved-RoPE models (llama2.c, GGUF `llama`) are written: llama.cpp's `llama` architecture rotates adjacent
 * pairs, and a half-split (Hugging Face) model would need its q/k rows permuted, which this writer does not do.
 * @module
 */
import { InputError } from '../../errors.js';
import { attrsOf, isOp } from '../../ir/attrs.js';
import type { Graph } from '../../ir/graph.js';
import type { Node } from '../../ir/node.js';
import { decodeWeight, floatToHalf, halfToFloat, unpackBits, type WeightEntry } from '../../ir/weights.js';
import { GgufValueType as T, type GgufKeyValue, type GgufTensorToWrite } from './writer.js';

/** ggml type ids written here. */
const GGML = { F32: 0, Q4_0: 2, Q4_1: 3, Q8_0: 8, I32: 26 } as const;

/** Suffixes of the tensors of a linear layer's outlier channels (`src/ir/outlier-linear.ts`). */
const OUTLIER_SUFFIXES = ['.outlier_weight', '.outlier_idx'] as const;

/** The config fields read from `graph.meta.config` (what `buildLlama` records). */
interface LlamaMetaConfig {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  seqLen: number;
  ropeTheta?: number;
  ropeStyle?: 'interleaved' | 'half';
  normEps?: number;
  headDim?: number;
  ropeScaling?: unknown;
}

/** llama.cpp's name of a weight named by the Llama builder (`layers.3.wq`) or already by llama.cpp. */
export function ggufLlamaTensorName(name: string): string | undefined {
  const suffix = OUTLIER_SUFFIXES.find((x) => name.endsWith(x));
  if (suffix) {
    const base = ggufLlamaTensorName(name.slice(0, -suffix.length));
    return base && !OUTLIER_SUFFIXES.some((x) => base.endsWith(x)) ? base + suffix : undefined;
  }
  if (/^(token_embd|output_norm|output)\.weight$/.test(name) || /^blk\.\d+\.(attn_(norm|q|k|v|output)|ffn_(norm|gate|down|up))\.(weight|bias)$/.test(name)) return name;
  const top: Record<string, string> = { tok_embeddings: 'token_embd.weight', norm: 'output_norm.weight', output: 'output.weight' };
  if (Object.hasOwn(top, name)) return top[name];
  const m = /^layers\.(\d+)\.(\w+)$/.exec(name);
  const per: Record<string, string> = {
    attention_norm: 'attn_norm.weight', wq: 'attn_q.weight', wk: 'attn_k.weight', wv: 'attn_v.weight', wo: 'attn_output.weight',
    ffn_norm: 'ffn_norm.weight', w1: 'ffn_gate.weight', w2: 'ffn_down.weight', w3: 'ffn_up.weight', bq: 'attn_q.bias', bk: 'attn_k.bias', bv: 'attn_v.bias',
  };
  return m && Object.hasOwn(per, m[2]) ? `blk.${m[1]}.${per[m[2]]}` : undefined;
}

function f16Bits(v: number, what: string): number {
  const h = floatToHalf(v);
  if (halfToFloat(h) !== v && !(Number.isNaN(v) && Number.isNaN(halfToFloat(h)))) throw new InputError(`${what} ${v} is no f16 value, which GGUF blocks store`);
  return h;
}

/**
 * A weight's GGUF type and bytes (see the module table).
 * @throws InputError for an encoding with no ggml equivalent, naming the weight.
 */
export function ggufTensorBytes(e: WeightEntry): { type: number; data: Uint8Array } {
  const enc = e.encoding;
  const n = e.shape.reduce((a, b) => a * b, 1);
  if (enc.kind === 'dense') {
    if (e.dtype !== 'f32' && e.dtype !== 'f16') throw new InputError(`weight '${e.name}' is ${e.dtype}; GGUF output takes float weights`);
    return { type: GGML.F32, data: new Uint8Array(Float32Array.from(decodeWeight(e)).buffer) };
  }
  const bad = (why: string): InputError => new InputError(`weight '${e.name}' (${enc.kind}${enc.kind === 'quantized' ? ` ${enc.bits}-bit, group ${enc.groupSize}` : ''}) maps onto no GGUF type: ${why}`);
  if (enc.kind !== 'quantized') throw bad('only dense and integer-quantized weights are written');
  if (enc.groupSize !== 32) throw bad('GGUF blocks hold 32 elements');
  const last = e.shape[e.shape.length - 1];
  if (last % 32 !== 0) throw bad(`rows of ${last} are no multiple of 32`);
  const packed = e.data.packed as Uint8Array;
  const scales = e.data.scales;
  const zps = e.data.zeroPoints;
  const mins = e.data.mins;
  const blocks = n / 32;
  if (enc.bits === 8 && enc.signed && !enc.hasZeroPoint && !enc.hasMin) {
    const out = new Uint8Array(blocks * 34);
    const dv = new DataView(out.buffer);
    for (let b = 0; b < blocks; b++) {
      dv.setUint16(b * 34, f16Bits(scales[b], `weight '${e.name}': scale`), true);
      out.set(packed.subarray(b * 32, b * 32 + 32), b * 34 + 2);
    }
    return { type: GGML.Q8_0, data: out };
  }
  if (enc.bits !== 4 || enc.signed) throw bad('GGUF output takes 8-bit signed (Q8_0) or 4-bit unsigned (Q4_0, Q4_1) integers');
  const q1 = !!enc.hasMin;
  if (q1 ? enc.hasZeroPoint && zps!.some((z) => z !== 0) : !enc.hasZeroPoint || zps!.some((z) => z !== 8))
    throw bad(q1 ? 'Q4_1 has no zero point' : 'Q4_0 needs zero point 8 in every group (or an offset: Q4_1)');
  const size = q1 ? 20 : 18;
  const out = new Uint8Array(blocks * size);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const o = b * size;
    dv.setUint16(o, f16Bits(scales[b], `weight '${e.name}': scale`), true);
    if (q1) dv.setUint16(o + 2, f16Bits(-mins![b] + 0, `weight '${e.name}': offset`), true);
    const qs = o + (q1 ? 4 : 2);
    for (let j = 0; j < 16; j++) out[qs + j] = unpackBits(packed, b * 32 + j, 4) | (unpackBits(packed, b * 32 + 16 + j, 4) << 4);
  }
  return { type: q1 ? GGML.Q4_1 : GGML.Q4_0, data: out };
}

/** What {@link llamaGguf} needs besides the graph. */
export interface LlamaGgufOptions {
  /** `general.name`. */
  readonly name?: string;
  /** `llama.context_length` (default: the graph's `seqLen`). */
  readonly contextLength?: number;
  /** More metadata (a tokenizer's `tokenizer.ggml.*` entries), written after the model's. */
  readonly extra?: readonly GgufKeyValue[];
}

/**
 * The metadata and tensors of a Llama-family graph as a GGUF `llama` model (pass them to `ggufFileBytes`).
 * @throws InputError for a graph that is not a Llama model, a half-split RoPE or scaled RoPE model, a weight with no
 *   llama.cpp name, or a weight whose encoding maps onto no GGUF type.
 */
export function llamaGguf(graph: Graph, opts: LlamaGgufOptions = {}): { metadata: GgufKeyValue[]; tensors: GgufTensorToWrite[] } {
  const c = graph.meta.config as LlamaMetaConfig | undefined;
  if (graph.meta.family !== 'llama' || !c) throw new InputError(`GGUF output needs a Llama-family model (this graph is ${String(graph.meta.family ?? 'of no known family')})`);
  if ((c.ropeStyle ?? 'interleaved') !== 'interleaved') throw new InputError('GGUF output supports interleaved-RoPE Llama models (llama2.c, GGUF llama); this one rotates half-split pairs (Hugging Face layout)');
  if (c.ropeScaling) throw new InputError('GGUF output does not write RoPE scaling');
  const hs = c.headDim ?? c.dim / c.nHeads;
  const u32 = (key: string, value: number): GgufKeyValue => ({ key, type: T.UINT32, value });
  const f32 = (key: string, value: number): GgufKeyValue => ({ key, type: T.FLOAT32, value });
  const metadata: GgufKeyValue[] = [
    { key: 'general.architecture', type: T.STRING, value: 'llama' },
    ...(opts.name ? [{ key: 'general.name', type: T.STRING, value: opts.name }] : []),
    u32('llama.context_length', opts.contextLength ?? c.seqLen),
    u32('llama.embedding_length', c.dim),
    u32('llama.feed_forward_length', c.hiddenDim),
    u32('llama.block_count', c.nLayers),
    u32('llama.attention.head_count', c.nHeads),
    u32('llama.attention.head_count_kv', c.nKvHeads),
    u32('llama.rope.dimension_count', hs),
    f32('llama.rope.freq_base', c.ropeTheta ?? 10000),
    f32('llama.attention.layer_norm_rms_epsilon', c.normEps ?? 1e-5),
    ...(c.headDim !== undefined ? [u32('llama.attention.key_length', hs), u32('llama.attention.value_length', hs)] : []),
    ...(opts.extra ?? []),
  ];
  const tensors: GgufTensorToWrite[] = [];
  const written = new Set<string>();
  for (const n of graph.nodes()) {
    const side = outlierIndexTensor(n);
    if (side) tensors.push(side);
    if (!isOp(n, 'weight')) continue;
    const id = attrsOf(n, 'weight').id;
    if (written.has(id)) continue;
    written.add(id);
    const e = graph.weights.get(id);
    const name = ggufLlamaTensorName(e.name);
    if (!name) throw new InputError(`weight '${e.name}' has no llama.cpp tensor name (GGUF output writes the Llama builder's weights)`);
    tensors.push({ name, shape: e.shape, ...ggufTensorBytes(e) });
  }
  return { metadata, tensors };
}

/**
 * The I32 tensor `<name>.outlier_idx` of an outlier matmul `matmul(gather(x, constant indices), <name>.outlier_weight)`
 * (`outlierLinear`), or undefined for any other node.
 */
function outlierIndexTensor(n: Node): GgufTensorToWrite | undefined {
  if (!isOp(n, 'matmul') || !isOp(n.inputs[1], 'weight')) return undefined;
  const wname = attrsOf(n.inputs[1], 'weight').name;
  if (!wname.endsWith(OUTLIER_SUFFIXES[0])) return undefined;
  const g = n.inputs[0];
  const idx = isOp(g, 'gather') ? g.inputs[1] : undefined;
  if (!idx || !isOp(idx, 'constant') || idx.dtype !== 'i32') throw new InputError(`weight '${wname}' is not read through a gather of constant i32 indices (outlier channels)`);
  const name = ggufLlamaTensorName(wname.slice(0, -OUTLIER_SUFFIXES[0].length) + OUTLIER_SUFFIXES[1]);
  if (!name) throw new InputError(`weight '${wname}' has no llama.cpp tensor name (GGUF output writes the Llama builder's weights)`);
  const values = attrsOf(idx, 'constant').values as readonly number[];
  return { name, shape: [values.length], type: GGML.I32, data: new Uint8Array(Int32Array.from(values).buffer) };
}
