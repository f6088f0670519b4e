// Tiny llama / qwen2 GGUF models written here, loaded back and run: logits equal the Llama builder's on the same
// (dequantized) weights, and a GGUF converted from a Hugging Face checkpoint the way convert_hf_to_gguf.py does it
// (Q/K rows permuted for llama) gives the Hugging Face model's logits.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelFormatError } from '../src/errors.js';
import { loadGgufModel, loadGgufModelFromBytes } from '../src/frontends/gguf/index.js';
import { UnsupportedModelError } from '../src/frontends/hf/errors.js';
import { loadHfModel } from '../src/frontends/hf/index.js';
import type { Graph } from '../src/ir/graph.js';
import { buildLlama, type LlamaConfig, type LlamaWeights } from '../src/models/llama.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { f16Bytes, f32Bytes, fp16ToFp32, G, ggufBytes, kv, quantizeQ4_0, quantizeQ8_0, T, type GgufTensor, type Kv } from './support/write-gguf.js';
import { writeHfFolder } from './support/write-safetensors.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'tw-gguf-model-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const fr = Math.fround;

/** Reference dequantizers (llama.cpp's, as in gguf-quant.test.ts). */
function dequant(type: number, b: Uint8Array, k: number): Float32Array {
  const y = new Float32Array(k);
  const h = (o: number): number => fp16ToFp32(b[o] | (b[o + 1] << 8));
  if (type === G.Q8_0)
    for (let i = 0; i < k / 32; i++) for (let j = 0; j < 32; j++) y[i * 32 + j] = fr(((b[i * 34 + 2 + j] << 24) >> 24) * h(i * 34));
  else if (type === G.Q4_0)
    for (let i = 0; i < k / 32; i++)
      for (let j = 0; j < 16; j++) {
        y[i * 32 + j] = fr(((b[i * 18 + 2 + j] & 15) - 8) * h(i * 18));
        y[i * 32 + j + 16] = fr(((b[i * 18 + 2 + j] >> 4) - 8) * h(i * 18));
      }
  else if (type === G.F16) for (let i = 0; i < k; i++) y[i] = h(2 * i);
  else y.set(new Float32Array(b.slice().buffer));
  return y;
}

interface Spec {
  arch: 'llama' | 'qwen2';
  dim: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  ctx: number;
  theta: number;
  eps: number;
  tied: boolean;
  bias: boolean;
}

/** A GGUF model with random weights; `types` picks each matrix's ggml type. Returns the file and the weights as llama.cpp would dequantize them. */
function makeModel(s: Spec, seed: number, types: (name: string) => number, extraKv: Kv[] = [], extraTensors: GgufTensor[] = []): { bytes: Uint8Array; weights: LlamaWeights } {
  const r = new Rng(seed);
  const hd = s.dim / s.heads;
  const tensors: GgufTensor[] = [];
  const add = (name: string, shape: number[], std: number, mean = 0, type: number = G.F32): Float32Array => {
    const n = shape.reduce((a, b) => a * b, 1);
    const x = r.normals(n, std).map((v) => v + mean);
    const data = type === G.Q8_0 ? quantizeQ8_0(x) : type === G.Q4_0 ? quantizeQ4_0(x) : type === G.F16 ? f16Bytes(x) : f32Bytes(x);
    tensors.push({ name, dims: [...shape].reverse(), type, data });
    return dequant(type, data, n);
  };
  const mat = (name: string, shape: number[]): Float32Array => add(name, shape, 0.15, 0, types(name));
  const tokenEmbedding = add('token_embd.weight', [s.vocab, s.dim], 1, 0, types('token_embd.weight'));
  const layers = Array.from({ length: s.layers }, (_x, l) => {
    const p = `blk.${l}.`;
    return {
      rmsAtt: add(`${p}attn_norm.weight`, [s.dim], 0.1, 1),
      wq: mat(`${p}attn_q.weight`, [s.heads * hd, s.dim]),
      wk: mat(`${p}attn_k.weight`, [s.kvHeads * hd, s.dim]),
      wv: mat(`${p}attn_v.weight`, [s.kvHeads * hd, s.dim]),
      ...(s.bias ? { bq: add(`${p}attn_q.bias`, [s.heads * hd], 0.1), bk: add(`${p}attn_k.bias`, [s.kvHeads * hd], 0.1), bv: add(`${p}attn_v.bias`, [s.kvHeads * hd], 0.1) } : {}),
      wo: mat(`${p}attn_output.weight`, [s.dim, s.heads * hd]),
      rmsFfn: add(`${p}ffn_norm.weight`, [s.dim], 0.1, 1),
      w1: mat(`${p}ffn_gate.weight`, [s.hidden, s.dim]),
      w3: mat(`${p}ffn_up.weight`, [s.hidden, s.dim]),
      w2: mat(`${p}ffn_down.weight`, [s.dim, s.hidden]),
    };
  });
  const rmsFinal = add('output_norm.weight', [s.dim], 0.1, 1);
  const wcls = s.tied ? undefined : mat('output.weight', [s.vocab, s.dim]);
  const a = s.arch;
  const meta: Kv[] = [
    kv.str('general.architecture', a),
    kv.str('general.name', 'tiny'),
    kv.u32(`${a}.context_length`, s.ctx),
    kv.u32(`${a}.embedding_length`, s.dim),
    kv.u32(`${a}.block_count`, s.layers),
    kv.u32(`${a}.feed_forward_length`, s.hidden),
    kv.u32(`${a}.rope.dimension_count`, hd),
    kv.u32(`${a}.attention.head_count`, s.heads),
    kv.u32(`${a}.attention.head_count_kv`, s.kvHeads),
    kv.f32(`${a}.attention.layer_norm_rms_epsilon`, s.eps),
    kv.f32(`${a}.rope.freq_base`, s.theta),
    kv.u32('general.file_type', 7),
    kv.str('tokenizer.ggml.model', 'gpt2'),
    kv.strs('tokenizer.ggml.tokens', Array.from({ length: s.vocab }, (_x, i) => `t${i}`)),
    kv.u32('tokenizer.ggml.bos_token_id', 3),
    kv.u32('tokenizer.ggml.eos_token_id', 4),
    { key: 'tokenizer.ggml.eot_token_id', type: T.UINT32, value: 5 },
    ...extraKv,
  ];
  return { bytes: ggufBytes(meta, [...tensors, ...extraTensors]), weights: { tokenEmbedding, layers, rmsFinal, wcls } };
}

function logits(g: Graph, tokens: readonly number[]): Float32Array {
  return runGraph(g, { tokens: Tensor.from('i32', [1, tokens.length], tokens), positions: Tensor.from('i32', [tokens.length], tokens.map((_t, i) => i)) }).logits.data as Float32Array;
}

const llamaSpec: Spec = { arch: 'llama', dim: 64, hidden: 96, layers: 2, heads: 4, kvHeads: 2, vocab: 40, ctx: 32, theta: 500000, eps: 1e-5, tied: false, bias: false };

describe('GGUF llama models', () => {
  const tokens = [1, 7, 22, 39, 0, 13];

  it('Q4_0 / Q8_0 / F16 / F32 tensors: config from metadata, logits equal the builder on the dequantized weights', async () => {
    const types = (n: string): number => (n.includes('attn_') ? G.Q4_0 : n.includes('ffn_') ? G.Q8_0 : n === 'token_embd.weight' ? G.Q8_0 : G.F16);
    const { bytes, weights } = makeModel(llamaSpec, 1, types);
    const p = path.join(tmp, 'tiny.gguf');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(p, bytes);
    const model = await loadGgufModel(p);
    const expected: LlamaConfig = {
      dim: 64,
      hiddenDim: 96,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 2,
      vocabSize: 40,
      seqLen: 32,
      ropeTheta: 500000,
      ropeStyle: 'interleaved',
      normEps: fr(1e-5),
      sharedClassifier: false,
    };
    expect(model.config).toEqual(expected);
    expect(model).toMatchObject({ format: 'gguf', family: 'llama', architecture: 'llama', maxPositions: 32, bosId: 3, stopTokens: [4, 5] });
    expect(model.typeCounts).toEqual({ Q8_0: 7, Q4_0: 8, F16: 1, F32: 5 });
    // quantized tensors stay quantized
    const wq = model.weights.layers[0].wq;
    expect(wq).not.toBeInstanceOf(Float32Array);
    expect(wq).toMatchObject({ shape: [64, 64], encoding: { kind: 'quantized', bits: 4, groupSize: 32, hasZeroPoint: true } });
    expect(model.weights.layers[0].w1).toMatchObject({ shape: [96, 64], encoding: { kind: 'quantized', bits: 8, signed: true } });
    const got = logits(model.build({ kvCache: false }), tokens);
    const want = logits(buildLlama(expected, weights, { kvCache: false }), tokens);
    expect(Array.from(got)).toEqual(Array.from(want));
    // the optimizer keeps quantized weights (and the logits)
    const opt = runPasses(model.build({ kvCache: false }), 'O3').graph;
    expect(opt.weights.all().some((w) => w.encoding.kind === 'quantized')).toBe(true);
    const o = logits(opt, tokens);
    for (let i = 0; i < o.length; i++) expect(o[i]).toBeCloseTo(got[i], 4);
  });

  it('tied output (no output.weight), GQA 4/1, an in-memory file', () => {
    const s = { ...llamaSpec, kvHeads: 1, tied: true };
    const { bytes, weights } = makeModel(s, 2, () => G.Q8_0);
    const model = loadGgufModelFromBytes(bytes);
    expect(model.config.sharedClassifier).toBe(true);
    expect(model.config.nKvHeads).toBe(1);
    expect(Array.from(logits(model.build({ kvCache: false }), tokens))).toEqual(Array.from(logits(buildLlama(model.config, weights, { kvCache: false }), tokens)));
  });

  it('linear RoPE scaling and rope_freqs factors from metadata', () => {
    const lin = loadGgufModelFromBytes(makeModel(llamaSpec, 3, () => G.F32, [kv.str('llama.rope.scaling.type', 'linear'), kv.f32('llama.rope.scaling.factor', 4)]).bytes);
    expect(lin.config.ropeScaling).toEqual({ type: 'linear', factor: 4 });
    const yarn = makeModel(llamaSpec, 3, () => G.F32, [kv.str('llama.rope.scaling.type', 'yarn'), kv.f32('llama.rope.scaling.factor', 4)]).bytes;
    expect(() => loadGgufModelFromBytes(yarn)).toThrow(UnsupportedModelError);
  });

  for (const scaled of [false, true]) {
    it(`a GGUF converted from a Hugging Face Llama (Q/K permuted as convert_hf_to_gguf does) matches the HF model${scaled ? ' (llama3 RoPE scaling → rope_freqs)' : ''}`, async () => {
      // Hugging Face side: half-split rotary pairs
      const s = { ...llamaSpec, dim: 32, heads: 2, kvHeads: 1 };
      const hd = s.dim / s.heads;
      const r = new Rng(9);
      const hfT: { name: string; shape: number[]; values: Float32Array }[] = [];
      const ggT: GgufTensor[] = [];
      /** convert_hf_to_gguf.py LlamaModel.permute: rows (h, t, i) → (h, i, t) within each head. */
      const permute = (w: Float32Array, nHead: number, cols: number): Float32Array => {
        const out = new Float32Array(w.length);
        for (let h = 0; h < nHead; h++)
          for (let t = 0; t < 2; t++)
            for (let i = 0; i < hd / 2; i++) out.set(w.subarray((h * hd + t * (hd / 2) + i) * cols, (h * hd + t * (hd / 2) + i + 1) * cols), (h * hd + 2 * i + t) * cols);
        return out;
      };
      const unpermuted: GgufTensor[] = [];
      const both = (hfName: string, ggName: string, shape: number[], std: number, mean = 0, perm?: number): void => {
        const v = r.normals(shape.reduce((a, b) => a * b, 1), std).map((x) => x + mean);
        hfT.push({ name: hfName, shape, values: v });
        ggT.push({ name: ggName, dims: [...shape].reverse(), type: G.F32, data: f32Bytes(perm ? permute(v, perm, shape[1]) : v) });
        unpermuted.push({ name: ggName, dims: [...shape].reverse(), type: G.F32, data: f32Bytes(v) });
      };
      both('model.embed_tokens.weight', 'token_embd.weight', [s.vocab, s.dim], 1);
      for (let l = 0; l < s.layers; l++) {
        const p = `model.layers.${l}.`;
        const g = `blk.${l}.`;
        both(`${p}input_layernorm.weight`, `${g}attn_norm.weight`, [s.dim], 0.1, 1);
        both(`${p}self_attn.q_proj.weight`, `${g}attn_q.weight`, [s.heads * hd, s.dim], 0.15, 0, s.heads);
        both(`${p}self_attn.k_proj.weight`, `${g}attn_k.weight`, [s.kvHeads * hd, s.dim], 0.15, 0, s.kvHeads);
        both(`${p}self_attn.v_proj.weight`, `${g}attn_v.weight`, [s.kvHeads * hd, s.dim], 0.15);
        both(`${p}self_attn.o_proj.weight`, `${g}attn_output.weight`, [s.dim, s.heads * hd], 0.15);
        both(`${p}post_attention_layernorm.weight`, `${g}ffn_norm.weight`, [s.dim], 0.1, 1);
        both(`${p}mlp.gate_proj.weight`, `${g}ffn_gate.weight`, [s.hidden, s.dim], 0.15);
        both(`${p}mlp.up_proj.weight`, `${g}ffn_up.weight`, [s.hidden, s.dim], 0.15);
        both(`${p}mlp.down_proj.weight`, `${g}ffn_down.weight`, [s.dim, s.hidden], 0.15);
      }
      both('model.norm.weight', 'output_norm.weight', [s.dim], 0.1, 1);
      both('lm_head.weight', 'output.weight', [s.vocab, s.dim], 0.15);
      const ropeScaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
      if (scaled) {
        // convert_hf_to_gguf.py LlamaModel.generate_extra_tensors
        const factors = Array.from({ length: hd / 2 }, (_x, i) => {
          const freq = 1 / s.theta ** ((2 * i) / hd);
          const wavelen = (2 * Math.PI) / freq;
          if (wavelen < 8192 / 4) return 1;
          if (wavelen > 8192 / 1) return 8;
          const smooth = (8192 / wavelen - 1) / (4 - 1);
          return 1 / ((1 - smooth) / 8 + smooth);
        });
        expect(new Set(factors.map((f) => (f === 1 ? 'keep' : f === 8 ? 'divide' : 'blend'))).size).toBe(3);
        ggT.push({ name: 'rope_freqs.weight', dims: [hd / 2], type: G.F32, data: f32Bytes(factors) });
        unpermuted.push(ggT[ggT.length - 1]);
      }
      const dir = path.join(tmp, `hf-llama-${scaled}`);
      writeHfFolder(dir, {
        model_type: 'llama',
        hidden_size: s.dim,
        intermediate_size: s.hidden,
        num_hidden_layers: s.layers,
        num_attention_heads: s.heads,
        num_key_value_heads: s.kvHeads,
        vocab_size: s.vocab,
        max_position_embeddings: s.ctx,
        rope_theta: s.theta,
        rope_scaling: scaled ? ropeScaling : null,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: false,
      }, hfT);
      const hf = await loadHfModel(dir);
      const a = s.arch;
      const meta = [
        kv.str('general.architecture', a),
        kv.u32(`${a}.context_length`, s.ctx),
        kv.u32(`${a}.embedding_length`, s.dim),
        kv.u32(`${a}.block_count`, s.layers),
        kv.u32(`${a}.feed_forward_length`, s.hidden),
        kv.u32(`${a}.attention.head_count`, s.heads),
        kv.u32(`${a}.attention.head_count_kv`, s.kvHeads),
        kv.f32(`${a}.attention.layer_norm_rms_epsilon`, 1e-5),
        kv.f32(`${a}.rope.freq_base`, s.theta),
      ];
      const gg = loadGgufModelFromBytes(ggufBytes(meta, ggT));
      expect(gg.config.ropeStyle).toBe('interleaved');
      expect(gg.config.ropeScaling?.type).toBe(scaled ? 'frequency-factors' : undefined);
      expect(hf.config).toMatchObject({ ropeStyle: 'half' });
      const x = logits(gg.build({ kvCache: false }), tokens);
      const y = logits(hf.build({ kvCache: false }), tokens);
      const scale = Math.max(...Array.from(y, Math.abs));
      for (let i = 0; i < x.length; i++) expect(Math.abs(x[i] - y[i]) / scale).toBeLessThan(1e-5);
      // without the permutation the two disagree: the layouts really differ
      const z = logits(loadGgufModelFromBytes(ggufBytes(meta, unpermuted)).build({ kvCache: false }), tokens);
      let worst = 0;
      for (let i = 0; i < z.length; i++) worst = Math.max(worst, Math.abs(z[i] - y[i]) / scale);
      expect(worst).toBeGreaterThan(1e-2);
    });
  }

  it('qwen2 architecture: q/k/v biases, NeoX rotary (half), tied output', () => {
    const s: Spec = { ...llamaSpec, arch: 'qwen2', tied: true, bias: true, theta: 1e6, eps: 1e-6 };
    const { bytes, weights } = makeModel(s, 4, (n) => (n.includes('ffn') ? G.Q4_0 : G.F32));
    const model = loadGgufModelFromBytes(bytes);
    expect(model.config).toMatchObject({ ropeStyle: 'half', qkvBias: true, sharedClassifier: true, ropeTheta: 1e6 });
    expect(Array.from(logits(model.build({ kvCache: false }), tokens))).toEqual(Array.from(logits(buildLlama(model.config, weights, { kvCache: false }), tokens)));
  });
});

describe('GGUF models that cannot be loaded', () => {
  it('unknown architectures, unsupported tensor types, extra tensors, missing metadata and tensors', () => {
    const base = makeModel(llamaSpec, 5, () => G.F32);
    const swap = (bytes: Uint8Array, from: string, to: string): Uint8Array => {
      const s = Buffer.from(bytes).toString('latin1');
      return new Uint8Array(Buffer.from(s.replace(from, to), 'latin1'));
    };
    let e: unknown;
    const catchErr = (fn: () => unknown): unknown => {
      try {
        fn();
      } catch (x) {
        return x;
      }
      return undefined;
    };
    // same-length renames keep the file consistent
    e = catchErr(() => loadGgufModelFromBytes(swap(base.bytes, '\x05\x00\x00\x00\x00\x00\x00\x00llama', '\x05\x00\x00\x00\x00\x00\x00\x00bloom')));
    expect(e).toBeInstanceOf(UnsupportedModelError);
    expect((e as UnsupportedModelError).feature).toBe('general.architecture');
    e = catchErr(() => loadGgufModelFromBytes(swap(base.bytes, 'llama.block_count', 'llama.block_cnt__')));
    expect(e).toBeInstanceOf(ModelFormatError);
    expect((e as ModelFormatError).field).toBe('llama.block_count');
    e = catchErr(() => loadGgufModelFromBytes(swap(base.bytes, 'blk.1.ffn_up.weight', 'blk.1.ffn_xx.weight')));
    expect(e).toBeInstanceOf(ModelFormatError);
    expect((e as ModelFormatError).field).toBe("tensor 'blk.1.ffn_up.weight'");
    const q2 = makeModel(llamaSpec, 5, (n) => (n === 'blk.0.attn_v.weight' ? G.Q8_0 : G.F32));
    const asQ2 = new Uint8Array(q2.bytes);
    // turn the Q8_0 tensor into IQ4_NL (type 20, 32-element blocks of 18 bytes), a type the loader does not map
    const s = Buffer.from(asQ2).toString('latin1');
    const at = s.indexOf('blk.0.attn_v.weight') + 'blk.0.attn_v.weight'.length + 4 + 16;
    expect(new DataView(asQ2.buffer).getUint32(at, true)).toBe(G.Q8_0);
    new DataView(asQ2.buffer).setUint32(at, 20, true);
    e = catchErr(() => loadGgufModelFromBytes(asQ2));
    expect(e).toBeInstanceOf(UnsupportedModelError);
    expect((e as UnsupportedModelError).feature).toBe("tensor 'blk.0.attn_v.weight'");
    expect((e as UnsupportedModelError).message).toMatch(/IQ4_NL is not supported/);
  });

  it('a tensor the llama builder has no place for', () => {
    const { bytes } = makeModel(llamaSpec, 6, () => G.F32, [], [{ name: 'blk.0.attn_output.bias', dims: [64], type: G.F32, data: new Uint8Array(256) }]);
    let e: unknown;
    try {
      loadGgufModelFromBytes(bytes);
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(UnsupportedModelError);
    expect((e as UnsupportedModelError).feature).toBe("tensor 'blk.0.attn_output.bias'");
  });
});
