// The LLM benchmark's GGUF files (bench/llama2c-gguf.ts) hold the llama2.c model they were written from, for our
// engine and for llama.cpp alike: stories260K rewritten as F32 GGUF gives run.c's logits on our CPU reference and
// run.c's greedy tokens on llama.cpp (node-llama-cpp's prebuilt CPU binary, where it loads); the Q4_0 file quantizes
// exactly the matrices whose rows split into blocks of 32.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeLlama2cAsGguf, llama2cVocabSize } from '../bench/llama2c-gguf.js';
import { loadLlamaCpp, type LlamaCppHandle } from '../bench/llama-cpp.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('the LLM benchmark GGUF files');

describe.skipIf(!hasShared)('stories260K as the LLM benchmark writes it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tw-llm-gguf-'));
  const checkpoint = hasShared ? sharedPath('models/stories260K/stories260K.bin') : '';
  const gold = hasShared ? JSON.parse(readFileSync(sharedPath('golden/stories260K/stories260K-1.json'), 'utf8')) : undefined;
  let f32 = '';
  let llama: LlamaCppHandle | undefined;
  beforeAll(async () => {
    f32 = writeLlama2cAsGguf(checkpoint, join(dir, 'stories260K-F32.gguf'), 'F32');
  });
  afterAll(async () => {
    if (llama?.ok) await llama.llama.dispose();
  });

  it('F32: our CPU reference gives run.c\'s logits after the prompt (within 1e-4)', async () => {
    const { loadModel } = await import('../src/frontends/load.js');
    const { CpuCausalLM } = await import('../src/runtime/cpu/lm.js');
    const model = await loadModel(f32);
    expect(model.config.vocabSize).toBe(llama2cVocabSize(checkpoint));
    const lm = new CpuCausalLM(model.build(), model.maxPositions);
    const logits = lm.step(gold.prompt_ids);
    let maxDiff = 0;
    for (let i = 0; i < logits.length; i++) maxDiff = Math.max(maxDiff, Math.abs(logits[i] - gold.next_token_logits[i]));
    expect(maxDiff).toBeLessThan(1e-4);
  });

  it('Q4_0: the matrices with rows in blocks of 32 are Q4_0, the rest (ffn_down, K = 172) and the norms F32', async () => {
    const { GgufFile } = await import('../src/frontends/gguf/reader.js');
    const q4 = writeLlama2cAsGguf(checkpoint, join(dir, 'stories260K-Q4_0.gguf'), 'Q4_0');
    const f = GgufFile.fromBytes(new Uint8Array(readFileSync(q4)), q4);
    const types = Object.fromEntries(f.tensors.map((t) => [t.name, t.typeInfo.name]));
    expect(types['token_embd.weight']).toBe('Q4_0');
    expect(types['blk.0.attn_q.weight']).toBe('Q4_0');
    expect(types['blk.4.ffn_up.weight']).toBe('Q4_0');
    expect(types['blk.0.ffn_down.weight']).toBe('F32');
    expect(types['blk.0.attn_norm.weight']).toBe('F32');
    expect(types['output.weight']).toBeUndefined(); // the classifier is the embedding, as in the checkpoint
    const { loadModel } = await import('../src/frontends/load.js');
    const model = await loadModel(q4);
    expect(model.config.vocabSize).toBe(512);
  });

  it('F32: llama.cpp generates run.c\'s greedy tokens (where node-llama-cpp\'s prebuilt binary loads)', async (ctx) => {
    llama = await loadLlamaCpp(1);
    if (!llama.ok) {
      console.warn(`llama.cpp is unavailable here, so this check did not run: ${llama.reason}`);
      return ctx.skip();
    }
    const m = await llama.llama.loadModel({ modelPath: f32, gpuLayers: 0 });
    const context = await m.createContext({ contextSize: 64, batchSize: 16, threads: 1 });
    try {
      const want = gold.generated_ids.slice(0, 24);
      const got: number[] = [];
      for await (const t of context.getSequence().evaluate(gold.prompt_ids, { temperature: 0, yieldEogToken: true })) {
        got.push(t);
        if (got.length >= want.length) break;
      }
      expect(got).toEqual(want);
    } finally {
      await context.dispose();
      await m.dispose();
    }
  });
});
