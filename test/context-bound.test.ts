// Bounded allocation from a model file's declared context: a GGUF `context_length` or a config.json
// `max_position_embeddings` of 2^31 is capped by `maxContext` (default 8192), never used to size RoPE tables or a KV
// cache; a tiny file claiming it fails with a typed error after little work and no large allocation.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TensorwrightError, UsageError } from '../src/errors.js';
import { DEFAULT_MAX_CONTEXT } from '../src/frontends/context.js';
import { loadModel } from '../src/frontends/load.js';
import { Rng } from '../src/util/random.js';
import { ggufBytes, kv } from './support/write-gguf.js';
import { writeHfFolder, type TensorToWrite } from './support/write-safetensors.js';

const tmp = mkdtempSync(join(tmpdir(), 'tw-context-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Loads `path`, expecting a typed error, and reports the error and how many bytes of ArrayBuffers it left allocated. */
async function failedLoad(path: string): Promise<{ error: unknown; grewBy: number }> {
  const before = process.memoryUsage().arrayBuffers;
  let error: unknown;
  let grewBy = 0;
  try {
    await loadModel(path);
  } catch (e) {
    error = e;
  } finally {
    grewBy = process.memoryUsage().arrayBuffers - before;
  }
  return { error, grewBy };
}

/** A tiny Llama in Hugging Face form (dim 16, one layer) whose config declares `context` positions. */
function tinyLlamaFolder(name: string, context: number): string {
  const dir = join(tmp, name);
  const cfg = { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 20, max_position_embeddings: context, rope_theta: 10000, rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 64, rope_type: 'llama3' }, rms_norm_eps: 1e-5, hidden_act: 'silu', tie_word_embeddings: true, bos_token_id: 1, eos_token_id: 2 };
  const r = new Rng(3);
  const t = (tensorName: string, shape: number[]): TensorToWrite => ({ name: tensorName, dtype: 'F32', shape, values: r.normals(shape.reduce((a, b) => a * b, 1), 0.1) });
  const p = 'model.layers.0.';
  writeHfFolder(dir, cfg, [
    t('model.embed_tokens.weight', [20, 16]),
    t(`${p}input_layernorm.weight`, [16]),
    t(`${p}self_attn.q_proj.weight`, [16, 16]),
    t(`${p}self_attn.k_proj.weight`, [8, 16]),
    t(`${p}self_attn.v_proj.weight`, [8, 16]),
    t(`${p}self_attn.o_proj.weight`, [16, 16]),
    t(`${p}post_attention_layernorm.weight`, [16]),
    t(`${p}mlp.gate_proj.weight`, [24, 16]),
    t(`${p}mlp.up_proj.weight`, [24, 16]),
    t(`${p}mlp.down_proj.weight`, [16, 24]),
    t('model.norm.weight', [16]),
  ]);
  return dir;
}

describe('a file cannot size allocations by the context it declares', () => {
  it('a ~200-byte GGUF claiming a 2^31 context: typed error, no large allocation', async () => {
    const bytes = ggufBytes(
      [
        kv.str('general.architecture', 'llama'),
        kv.u32('llama.context_length', 2 ** 31),
        kv.u32('llama.embedding_length', 4096),
        kv.u32('llama.block_count', 32),
        kv.u32('llama.feed_forward_length', 11008),
        kv.u32('llama.attention.head_count', 32),
      ],
      [],
    );
    expect(bytes.length).toBeLessThan(300);
    const path = join(tmp, 'huge-context.gguf');
    writeFileSync(path, bytes);
    const { error, grewBy } = await failedLoad(path);
    expect(error).toBeInstanceOf(TensorwrightError);
    expect(String(error)).not.toMatch(/RangeError|INTERNAL/);
    expect(grewBy).toBeLessThan(1 << 20);
  });

  it('a config.json claiming a 2^31 context beside a weightless safetensors file: typed error, no large allocation', async () => {
    const dir = join(tmp, 'hf-empty');
    writeHfFolder(dir, { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, vocab_size: 32000, max_position_embeddings: 2 ** 31 }, []);
    expect(statSync(join(dir, 'config.json')).size + statSync(join(dir, 'model.safetensors')).size).toBeLessThan(600);
    const { error, grewBy } = await failedLoad(dir);
    expect(error).toBeInstanceOf(TensorwrightError);
    expect(grewBy).toBeLessThan(1 << 20);
  });

  it('a real (tiny) model declaring 2^31 positions is compiled for the cap: the default, or maxContext', async () => {
    const dir = tinyLlamaFolder('hf-tiny', 2 ** 31);
    const before = process.memoryUsage().arrayBuffers;
    const m = await loadModel(dir);
    expect(m.declaredContext).toBe(2 ** 31);
    expect(m.maxPositions).toBe(DEFAULT_MAX_CONTEXT);
    const small = await loadModel(dir, { maxContext: 40 });
    expect(small.maxPositions).toBe(40);
    expect(small.config).toMatchObject({ seqLen: 40 });
    // the llama3-scaled RoPE tables are built from the capped length: 40 rows of cos and sin, not 2^31
    const g = small.build();
    const tables = g.weights.all().filter((e) => /rope|cos|sin/.test(e.name));
    expect(tables.length).toBeGreaterThan(0);
    for (const e of tables) expect(e.shape[0]).toBe(40);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 << 20);
  });

  it('maxContext itself is checked', async () => {
    const dir = tinyLlamaFolder('hf-tiny-2', 64);
    for (const bad of [0, -1, 1.5, 2 ** 25, Number.NaN]) await expect(loadModel(dir, { maxContext: bad })).rejects.toBeInstanceOf(UsageError);
    expect((await loadModel(dir, { maxContext: 1000 })).maxPositions).toBe(64); // a smaller declared context stays
  });
});
