// The quantized KV cache end to end: compile({ kv: { dtype: 'int8' } }) sizes the pools by the integer layout, saved
// manifests keep the type and hostile ones are typed errors, the CPU reference runs the same semantics (the
// quantize-kv-cache pass), the batched WebGPU engine matches it on ragged batches (prompt lengths that are not
// multiples of the block size, GQA, prefill chunks mixed with decode rows), and eval's quality figures hold on a
// prefix of the public stories260K text.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile, compileModel } from '../src/compile.js';
import { createTarget } from '../src/codegen/target.js';
import { ModelFormatError, UsageError } from '../src/errors.js';
import { loadModel, type LoadedModel } from '../src/frontends/load.js';
import { cpuProfile } from '../src/ir/device-profile.js';
import { kvCacheBytes } from '../src/ir/kv-cache-quant.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { runPasses } from '../src/passes/pipeline.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { validateEngineManifest } from '../src/runtime/engine-manifest-schema.js';
import type { BatchEntry, SequenceHandle } from '../src/runtime/engine.js';
import { evalGraphs } from '../src/cli/eval.js';
import { loadTokenizer } from '../src/runtime/tokenizer-loader.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('quantized KV cache tests on stories260K');

const GREEDY = { temperature: 0, topp: 1, coin: 0 } as const;

function tinyLlama(): LoadedModel {
  const c: LlamaConfig = { dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 40, seqLen: 32, sharedClassifier: false };
  const w = randomLlamaWeights(c, 3);
  return { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [2], build: (o) => buildLlama(c, w, o) };
}

describe('quantized KV cache: compile, manifest and CPU reference (no device)', () => {
  it('compile records kv.dtype int8/int4 and sizes the pools by the integer layout; hostile dtypes are typed errors', () => {
    const model = tinyLlama();
    const bytes: Record<string, number> = {};
    for (const dtype of ['f32', 'f16', 'int8', 'int4'] as const) {
      const c = compileModel(model, { target: createTarget('lavapipe', { kv: { dtype } }), prefillChunk: 8 });
      expect(c.manifest.kv!.dtype).toBe(dtype);
      expect(validateEngineManifest(JSON.parse(JSON.stringify(c.manifest)), c.weights.byteLength)).toBeTruthy();
      bytes[dtype] = kvCacheBytes(c.manifest.kv!, model.maxPositions);
      if (dtype === 'int8') {
        const bad = (edit: (kv: Record<string, unknown>) => void): ModelFormatError => {
          const m = JSON.parse(JSON.stringify(c.manifest));
          edit(m.kv);
          try {
            validateEngineManifest(m, c.weights.byteLength);
          } catch (e) {
            expect(e).toBeInstanceOf(ModelFormatError);
            return e as ModelFormatError;
          }
          throw new Error('passed');
        };
        expect(bad((kv) => (kv.dtype = 'int3')).field).toBe('kv.dtype');
        // 2^24 blocks of 256 tokens x 1024 heads x 8: the int8 layout's size (2^40 + scales) is over the bound
        expect(bad((kv) => Object.assign(kv, { numBlocks: 2 ** 24, blockSize: 256, numKvHeads: 1024 })).message).toMatch(/a KV pool of 16777216 blocks x 256 tokens x 1024 heads x 8 \(int8\) is \d+ bytes, more than/);
      }
    }
    // head dim 8, 2 KV heads: int8 stores 8 + 2 bytes per (token, head) where f16 stores 16, int4 4 + 2
    expect(bytes).toEqual({ f32: 2 * 2 * 2 * 16 * 2 * 8 * 4, f16: 2 * 2 * 2 * 16 * 2 * 8 * 2, int8: 2 * 2 * 2 * 16 * 2 * 10, int4: 2 * 2 * 2 * 16 * 2 * 6 });
    expect(() => createTarget('lavapipe', { kv: { dtype: 'int2' as never } })).toThrow(/kv.dtype must be one of 'f32', 'f16', 'int8', 'int4'/);
  });

  it('the quantize-kv-cache pass puts kv_quantize on every appended key and value; a pipeline without it is a usage error', () => {
    const g = tinyLlama().build({});
    const r = runPasses(g, 'O3', { device: cpuProfile, options: { kvCache: 'int8' } });
    const q = r.graph.nodes().filter((n) => n.op === 'kv_quantize');
    expect(q).toHaveLength(4);
    expect(q.every((n) => n.attrs.dtype === 'int8')).toBe(true);
    expect(r.report.ofPass('quantize-kv-cache')[0].message).toMatch(/4 cached key\/value tensor\(s\) stored as int8/);
    expect(runPasses(g, 'O3', { device: cpuProfile, options: { kvCache: 'f16' } }).graph.nodes().some((n) => n.op === 'kv_quantize')).toBe(false);
    expect(() => runPasses(g, 'cse,dce', { device: cpuProfile, options: { kvCache: 'int4' } })).toThrow(UsageError);
  });
});

describe.skipIf(!hasShared)('quantized KV cache on stories260K', () => {
  let model: LoadedModel;
  let ids: number[];
  beforeAll(async () => {
    model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    const tok = await loadTokenizer(sharedPath('models/stories260K/tok512.bin'), { vocabSize: model.config.vocabSize, bosId: model.bosId, eosIds: model.stopTokens });
    ids = tok.encode(readFileSync(sharedPath('data/stories260K-eval-public.txt'), 'utf8'));
    if (ids[0] !== model.bosId) ids.unshift(model.bosId);
  });

  it('eval on the CPU reference over the first 1024 tokens: int8 top-1 agreement >= 0.97 and KL < 4e-3; int4 far worse', async () => {
    const f32 = model.build({ lastTokenLogitsOnly: false });
    const figures: Record<string, { kl: number; top1: number }> = {};
    for (const kv of ['int8', 'int4'] as const) {
      const underTest = runPasses(f32, 'quantize-kv-cache', { options: { kvCache: kv } }).graph;
      const r = await evalGraphs(model, ids, f32, underTest, 1024);
      figures[kv] = { kl: r.kl_mean, top1: r.top1_agreement };
    }
    expect(figures.int8.top1).toBeGreaterThanOrEqual(0.97);
    expect(figures.int8.kl).toBeLessThan(4e-3);
    expect(figures.int4.kl).toBeGreaterThan(20 * figures.int8.kl);
  });

  describe('on WebGPU (batched engine, int8 pools)', () => {
    let gpu: TestGPU | null = null;
    beforeAll(async () => {
      gpu = await acquireTestDevice();
    });
    afterAll(() => gpu?.destroy());

    it('ragged batches of three sequences match the CPU reference with the same int8 semantics', async (ctx) => {
      if (!gpu) return ctx.skip();
      const engine = await compile(model, { device: gpu.info, precision: 'f32', batchInvariant: true, prefillChunk: 32, kv: { dtype: 'int8' } });
      expect(engine.manifest.kv!.dtype).toBe('int8');
      // head dim 8: 10 bytes per (token, head) against f16's 16
      expect(kvCacheBytes(engine.manifest.kv!, 512) / kvCacheBytes({ ...engine.manifest.kv!, dtype: 'f16' }, 512)).toBe(0.625);
      const session = await engine.createSession({ device: gpu, kvBlocks: 24 });
      try {
        const graphOf = (kvCache?: string) => runPasses(model.build({ lastTokenLogitsOnly: false }), 'O3', { device: cpuProfile, options: { kvCache } }).graph;
        const qGraph = graphOf('int8');
        const fGraph = graphOf();
        // prompts of 5, 19 and 2 tokens (not multiples of the block size 16), from the text
        const prompts = [ids.slice(0, 5), ids.slice(40, 59), ids.slice(100, 102)];
        const cpu = prompts.map(() => ({ q: new CpuCausalLM(qGraph, model.maxPositions), f: new CpuCausalLM(fGraph, model.maxPositions) }));
        const seqs: SequenceHandle[] = prompts.map(() => session.createSequence());
        let worst = 0;
        let quantEffect = 0;
        const compare = (gpuRow: Float32Array, i: number, tokens: number[]): number => {
          const vocab = model.config.vocabSize;
          const q = cpu[i].q.stepAll(tokens).subarray((tokens.length - 1) * vocab);
          const f = cpu[i].f.stepAll(tokens).subarray((tokens.length - 1) * vocab);
          for (let v = 0; v < vocab; v++) {
            worst = Math.max(worst, Math.abs(gpuRow[v] - q[v]));
            quantEffect = Math.max(quantEffect, Math.abs(q[v] - f[v]));
          }
          let best = 0;
          for (let v = 1; v < vocab; v++) if (q[v] > q[best]) best = v;
          return best;
        };
        // step 1: sequence 0's prompt, sequence 1's first chunk (no sample); step 2: 0 decodes, 1's rest, 2's prompt;
        // then three decode steps of all three, in rotated row orders
        const next: number[] = [-1, -1, -1];
        const runStep = async (entries: { i: number; tokens: number[]; sample: boolean }[]): Promise<void> => {
          const batch: BatchEntry[] = entries.map((e) => ({ seq: seqs[e.i], tokens: e.tokens, ...(e.sample ? { sampling: GREEDY } : {}) }));
          await session.stepBatch(batch);
          const rows = await session.lastBatchLogits();
          entries.forEach((e, j) => {
            if (e.sample) next[e.i] = compare(rows[j][0], e.i, e.tokens);
            else {
              cpu[e.i].q.stepAll(e.tokens);
              cpu[e.i].f.stepAll(e.tokens);
            }
          });
        };
        await runStep([
          { i: 0, tokens: prompts[0], sample: true },
          { i: 1, tokens: prompts[1].slice(0, 11), sample: false },
        ]);
        await runStep([
          { i: 1, tokens: prompts[1].slice(11), sample: true },
          { i: 0, tokens: [next[0]], sample: true },
          { i: 2, tokens: prompts[2], sample: true },
        ]);
        for (let s = 0; s < 3; s++) await runStep([0, 1, 2].map((k) => (k + s) % 3).map((i) => ({ i, tokens: [next[i]], sample: true })));
        console.log(`int8 KV on WebGPU: logits within ${worst.toExponential(2)} of the CPU reference (int8 vs f32 cache: ${quantEffect.toExponential(2)})`);
        expect(worst).toBeLessThan(2e-3);
        // the reference's int8 cache visibly differs from f32 (the engine is not simply storing floats)
        expect(quantEffect).toBeGreaterThan(10 * worst);
      } finally {
        await session.destroy();
      }
    }, 300_000);
  });
});
