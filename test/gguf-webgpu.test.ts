// Quantized GGUF models on WebGPU: greedy generation gives the same ids as the CPU reference, with every projection
// run by the dequantizing matmul on the file's packed blocks (no dense copy of a quantized tensor in the engine):
// - stories260K-Q8_0.gguf and -Q4_0.gguf (../shared, written by llama.cpp's gguf library);
// - a Llama written here with Q4_K projections and embedding table and Q6_K ffn_down and classifier (rows of 256).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compileModel } from '../src/compile.js';
import { GgufFile, ggufTensorToWeight, loadGgufModel } from '../src/frontends/gguf/index.js';
import { decodeWeight, type WeightEntry } from '../src/ir/weights.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice } from './helpers/webgpu.js';
import { runCli } from './support/cli.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';
import { f32Bytes, G, ggufBytes, kv, quantizeQ4_K, quantizeQ6_K, type GgufTensor } from './support/write-gguf.js';

noteMissingShared('stories260K Q8_0/Q4_0 GGUF on WebGPU');
const gpu = await acquireTestDevice();
afterAll(async () => gpu?.destroy());
const tmp = mkdtempSync(path.join(os.tmpdir(), 'tw-gguf-webgpu-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const LONG = 600_000;

/** Greedy generation through the CLI on one backend: prompt and generated ids. */
async function generate(model: string, backend: 'cpu' | 'webgpu', extra: string[]): Promise<{ prompt_ids: number[]; generated_ids: number[] }> {
  const r = await runCli(['generate', '--model', model, '--temperature', '0', '--backend', backend, '--json', ...extra]);
  expect(r.code, r.stderr).toBe(0);
  const out = JSON.parse(r.stdout);
  expect(out.backend).toBe(backend);
  return out;
}

/** Compiles the model for the test device: the engine's kernel families and its weights' encodings by name. */
async function engineOf(file: string): Promise<{ families: string[]; encodings: Map<string, string> }> {
  const { manifest } = compileModel(await loadGgufModel(file), { device: gpu!.info });
  return { families: manifest.kernels.map((k) => k.family), encodings: new Map(manifest.weights.map((w) => [w.name, w.encoding.kind])) };
}

describe.skipIf(!hasShared || !gpu)('stories260K Q8_0 / Q4_0 GGUF on WebGPU', () => {
  for (const type of ['Q8_0', 'Q4_0'])
    it(
      `stories260K-${type}.gguf: the same ids as the CPU reference, through the dequantizing kernels`,
      async () => {
        const file = sharedPath(`models/gguf/stories260K-${type}.gguf`);
        const gold = JSON.parse(readFileSync(sharedPath('golden/stories260K/stories260K-1.json'), 'utf8'));
        const args = ['--prompt', gold.prompt, '--steps', String(gold.steps)];
        const cpu = await generate(file, 'cpu', args);
        const webgpu = await generate(file, 'webgpu', args);
        expect(webgpu.prompt_ids).toEqual(cpu.prompt_ids);
        expect(webgpu.generated_ids).toEqual(cpu.generated_ids);
        expect(cpu.generated_ids.length).toBeGreaterThan(10);
        const e = await engineOf(file);
        expect(e.families).toContain('dequant-matmul');
        expect(e.encodings.get('blk.0.attn_q.weight')).toBe('quantized');
      },
      LONG,
    );
});

// ---------------------------------------------------------------------------------------------------------------
// K-quants

const K_SPEC = { dim: 256, hidden: 512, layers: 2, heads: 4, kvHeads: 2, vocab: 64, ctx: 64 };

/** A Llama GGUF with random weights: Q4_K attention and gate/up projections and embedding table, Q6_K ffn_down and classifier, F32 norms. */
function kQuantLlama(seed: number): Uint8Array {
  const s = K_SPEC;
  const r = new Rng(seed);
  const hd = s.dim / s.heads;
  const tensors: GgufTensor[] = [];
  const add = (name: string, shape: number[], type: number, std: number, mean = 0): void => {
    const x = r.normals(shape.reduce((a, b) => a * b, 1), std).map((v) => v + mean);
    const data = type === G.Q4_K ? quantizeQ4_K(x) : type === G.Q6_K ? quantizeQ6_K(x) : f32Bytes(x);
    tensors.push({ name, dims: [...shape].reverse(), type, data });
  };
  add('token_embd.weight', [s.vocab, s.dim], G.Q4_K, 1);
  for (let l = 0; l < s.layers; l++) {
    const p = `blk.${l}.`;
    add(`${p}attn_norm.weight`, [s.dim], G.F32, 0.1, 1);
    add(`${p}attn_q.weight`, [s.heads * hd, s.dim], G.Q4_K, 0.1);
    add(`${p}attn_k.weight`, [s.kvHeads * hd, s.dim], G.Q4_K, 0.1);
    add(`${p}attn_v.weight`, [s.kvHeads * hd, s.dim], G.Q4_K, 0.1);
    add(`${p}attn_output.weight`, [s.dim, s.heads * hd], G.Q4_K, 0.1);
    add(`${p}ffn_norm.weight`, [s.dim], G.F32, 0.1, 1);
    add(`${p}ffn_gate.weight`, [s.hidden, s.dim], G.Q4_K, 0.1);
    add(`${p}ffn_up.weight`, [s.hidden, s.dim], G.Q4_K, 0.1);
    add(`${p}ffn_down.weight`, [s.dim, s.hidden], G.Q6_K, 0.1);
  }
  add('output_norm.weight', [s.dim], G.F32, 0.1, 1);
  add('output.weight', [s.vocab, s.dim], G.Q6_K, 0.2);
  const meta = [
    kv.str('general.architecture', 'llama'),
    kv.u32('llama.context_length', s.ctx),
    kv.u32('llama.embedding_length', s.dim),
    kv.u32('llama.block_count', s.layers),
    kv.u32('llama.feed_forward_length', s.hidden),
    kv.u32('llama.rope.dimension_count', hd),
    kv.u32('llama.attention.head_count', s.heads),
    kv.u32('llama.attention.head_count_kv', s.kvHeads),
    kv.f32('llama.attention.layer_norm_rms_epsilon', 1e-5),
    kv.f32('llama.rope.freq_base', 10000),
  ];
  return ggufBytes(meta, tensors);
}

describe('the test quantizers write valid Q4_K / Q6_K blocks', () => {
  it('the loader decodes them to within one quantization step of the input', () => {
    const x = new Rng(5).normals(1024, 0.3);
    for (const [type, quantize] of [
      [G.Q4_K, quantizeQ4_K],
      [G.Q6_K, quantizeQ6_K],
    ] as const) {
      const f = GgufFile.fromBytes(ggufBytes([], [{ name: 't', dims: [256, 4], type, data: quantize(x) }]));
      const w = ggufTensorToWeight(f.info('t'), f.bytes('t')) as WeightEntry;
      expect(w.encoding.kind).toBe('quantized');
      const y = decodeWeight(w);
      // a step is at most a sub-block's range / 15 (Q4_K) or its max / 31 (Q6_K), plus the 6/8-bit scale rounding
      const step = type === G.Q4_K ? 0.3 : 0.06;
      for (let i = 0; i < x.length; i++) expect(Math.abs(y[i] - x[i]), `${type} element ${i}`).toBeLessThan(step);
    }
  });
});

describe.skipIf(!gpu)('a Q4_K / Q6_K Llama written here, on WebGPU', () => {
  it(
    'generates the same ids as the CPU reference, every projection and the embedding lookup reading the packed blocks',
    async () => {
      const file = path.join(tmp, 'kquant.gguf');
      writeFileSync(file, kQuantLlama(11));
      const args = ['--steps', '24'];
      const cpu = await generate(file, 'cpu', args);
      const webgpu = await generate(file, 'webgpu', args);
      expect(webgpu.generated_ids).toEqual(cpu.generated_ids);
      expect(cpu.generated_ids.length).toBeGreaterThan(10);
      const e = await engineOf(file);
      expect(e.families).toContain('dequant-matmul');
      expect(e.families).toContain('dequant-gather');
      for (const name of ['token_embd.weight', 'blk.0.attn_q.weight', 'blk.1.ffn_down.weight', 'output.weight']) expect(e.encodings.get(name), name).toBe('quantized');
    },
    LONG,
  );
});
