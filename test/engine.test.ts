// compile() → Engine on the WebGPU device (lavapipe in CI): stories260K reproduces run.c's greedy output exactly,
// logits match the reference, saved engines reload, and device loss surfaces as a typed error.
import { readdirSync, readFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile, compileGraph, runGraphOnWebGPU } from '../src/compile.js';
import { loadModel, type LoadedModel } from '../src/frontends/load.js';
import { Engine } from '../src/runtime/engine.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { requestGPUDevice } from '../src/runtime/device.js';
import { DeviceError, InputError } from '../src/errors.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { buildGpt2, randomGpt2Weights } from '../src/models/gpt2.js';
import { buildBert, randomBertWeights } from '../src/models/bert.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('WebGPU engine golden tests');

// lavapipe JIT-compiles each pipeline on its first dispatch (seconds for the large unrolled GEMMs), per session
const LONG = 600_000;

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe.skipIf(!hasShared)('stories260K on WebGPU', () => {
  let model: LoadedModel;
  let engine: Engine;
  beforeAll(async () => {
    if (!gpu) return;
    model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
    engine = await compile(model, { device: gpu.info });
  }, LONG);
  const files = hasShared ? readdirSync(sharedPath('golden/stories260K')).filter((f) => f.endsWith('.json')) : [];
  it('reproduces every golden sequence exactly (f32, temperature 0) and the logits after the prompt', async (ctx) => {
    if (!gpu) return ctx.skip();
    const session = await engine.createSession({ device: gpu });
    try {
      for (const f of files) {
        const gold = JSON.parse(readFileSync(sharedPath('golden/stories260K', f), 'utf8'));
        session.reset();
        await session.step(gold.prompt_ids, { temperature: 0, topp: 0.9, coin: 0 });
        expect(maxAbsDiff(await session.lastLogits(), gold.next_token_logits), f).toBeLessThan(1e-4);
        const r = await session.generate(gold.prompt_ids, { steps: gold.steps, temperature: 0, topp: 0.9, seed: 1 });
        expect(r.generated, f).toEqual(gold.generated_ids);
      }
    } finally {
      await session.destroy();
    }
  }, LONG);

  for (const blockSize of [8, 32])
    it(`with ${blockSize}-token KV-cache blocks reproduces every golden sequence exactly`, async (ctx) => {
      if (!gpu) return ctx.skip();
      const e = await compile(model, { device: gpu.info, kv: { blockSize } });
      expect(e.manifest.kv).toMatchObject({ blockSize, numBlocks: Math.ceil(model.maxPositions / blockSize) });
      const session = await e.createSession({ device: gpu });
      try {
        for (const f of files) {
          const gold = JSON.parse(readFileSync(sharedPath('golden/stories260K', f), 'utf8'));
          session.reset();
          const r = await session.generate(gold.prompt_ids, { steps: gold.steps, temperature: 0, topp: 0.9, seed: 1 });
          expect(r.generated, `${f}, block size ${blockSize}`).toEqual(gold.generated_ids);
        }
      } finally {
        await session.destroy();
      }
    }, LONG);

  it('with an f16 KV cache stays within f16 rounding of the golden logits and keeps the greedy sequence', async (ctx) => {
    if (!gpu) return ctx.skip();
    const e = await compile(model, { device: gpu.info, kv: { dtype: 'f16' } });
    expect(e.manifest.kv?.dtype).toBe('f16');
    expect(e.manifest.requiredFeatures).toContain('shader-f16');
    const session = await e.createSession({ device: gpu });
    try {
      for (const f of files.slice(0, 2)) {
        const gold = JSON.parse(readFileSync(sharedPath('golden/stories260K', f), 'utf8'));
        session.reset();
        await session.step(gold.prompt_ids, { temperature: 0, topp: 0.9, coin: 0 });
        // keys and values rounded to f16 (11-bit mantissa): logits move by ~1e-3..1e-2, far less than the gaps greedy decoding sees here
        expect(maxAbsDiff(await session.lastLogits(), gold.next_token_logits), f).toBeLessThan(0.05);
        const r = await session.generate(gold.prompt_ids, { steps: gold.steps, temperature: 0, topp: 0.9, seed: 1 });
        expect(r.generated, f).toEqual(gold.generated_ids);
      }
    } finally {
      await session.destroy();
    }
  }, LONG);

  it('reads q, k and v heads in place from the merged QKV projection: no slice copies', (ctx) => {
    if (!gpu) return ctx.skip();
    const m = engine.manifest;
    const layers = (model.config as LlamaConfig).nLayers;
    // a decode plan that is the one whole-step kernel (test/decoder-step.test.ts) has no separate rope or KV writes
    const whole = (p: (typeof m.plans)[number]): boolean => p.dispatches.length === 1 && m.kernels[p.dispatches[0].kernel].family === 'decoder-step';
    expect(m.plans.filter((p) => !whole(p)).map((p) => p.name)).toContain('prefill');
    for (const plan of m.plans.filter((p) => !whole(p))) {
      const kernels = plan.dispatches.map((d) => `${m.kernels[d.kernel].family}/${m.kernels[d.kernel].variant} ${d.label}`);
      expect(kernels.filter((k) => k.startsWith('rope/') && k.includes('window')), plan.name).toHaveLength(2 * layers);
      // rope reads q's and k's heads, the KV-cache write reads v's: no head-slice copies at all
      expect(kernels.filter((k) => k.startsWith('kv-cache-write/') && k.includes('window')), plan.name).toHaveLength(layers);
      expect(kernels.filter((k) => k.startsWith('slice/') && k.includes('axes=[2]')), plan.name).toHaveLength(0);
    }
  });

  it('holds each distinct kernel once: layers share kernels, no node ids in WGSL, features declared', (ctx) => {
    if (!gpu) return ctx.skip();
    const m = engine.manifest;
    // kernels differing only in comments, and launched with the same params, would be the same pipeline twice (the
    // final norm's rows are the logit rows, `outs`, the layers' are `seq`: same code, other params)
    const code = m.kernels.map((k) => JSON.stringify([k.wgsl.replace(/\/\/.*$/gm, '').replace(/\s+/g, ' '), k.params]));
    expect(new Set(code).size).toBe(m.kernels.length);
    const dispatches = m.plans.reduce((a, p) => a + p.dispatches.length, 0) + 2;
    console.log(`stories260K: ${m.kernels.length} distinct kernels for ${dispatches} dispatches`);
    // 5 layers of ~10 kernels each collapse to one set per plan (decode and prefill) plus the samplers
    expect(m.kernels.length).toBeLessThanOrEqual(25);
    for (const k of m.kernels) {
      expect(k.wgsl, `${k.family}/${k.variant}`).not.toMatch(/%\d/);
      expect(k.wgsl).not.toMatch(/layers\.\d|tok_embeddings|@"/);
      expect(k.nodes.length, `${k.family}/${k.variant}`).toBeGreaterThan(0);
      expect(k.features, `${k.family}/${k.variant}`).toBeDefined();
    }
    // model-file names (the weights') never reach WGSL
    const token = (name: string): RegExp => new RegExp(`(?<![\\w.])${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![\\w.])`);
    for (const w of m.weights) expect(m.kernels.filter((k) => token(w.name).test(k.wgsl)).map((k) => k.family), w.name).toEqual([]);
    const layers = (model.config as LlamaConfig).nLayers;
    expect(m.kernels.some((k) => k.family === 'rmsnorm' && k.nodes.length >= layers), 'one rmsnorm kernel serves every layer').toBe(true);
    expect(m.requiredFeatures).toEqual([...new Set(m.kernels.flatMap((k) => k.features ?? []))].sort());
  });

  it('reports load time per stage; engines saved without kernel features still load', async (ctx) => {
    if (!gpu) return ctx.skip();
    const old = new Engine({ ...engine.manifest, kernels: engine.manifest.kernels.map(({ features: _f, ...k }) => k) }, engine.weightBytes);
    const stages: string[] = [];
    const session = await old.createSession({ device: gpu, onProgress: (p) => stages.push(p.stage) });
    try {
      // the shader modules and pipelines compile while the weights upload: those stages may finish in either order
      expect(stages.slice(0, 2)).toEqual(['device', 'buffers']);
      expect([...stages.slice(2, 5)].sort()).toEqual(['pipelines', 'shader-modules', 'weights']);
      expect(stages.indexOf('shader-modules')).toBeLessThan(stages.indexOf('pipelines'));
      expect(stages.slice(5)).toEqual(['bind-groups', 'done']);
      const t = session.loadTimings;
      expect(t.pipelines).toBe(engine.manifest.kernels.length);
      expect(t.bindGroups).toBe(engine.manifest.plans.reduce((a, p) => a + p.dispatches.length, 0) + 2);
      const parts = t.deviceMs + t.buffersMs + Math.max(t.weightsMs, t.shaderModulesMs + t.pipelinesMs) + t.bindGroupsMs;
      expect(parts).toBeLessThanOrEqual(t.totalMs + 1e-6);
      expect(parts).toBeGreaterThan(0.5 * t.totalMs);
      const r = await session.generate([1, 403, 407], { steps: 6, temperature: 0, topp: 0.9, seed: 1 });
      expect(r.generated.length).toBeGreaterThan(0);
    } finally {
      await session.destroy();
    }
  }, LONG);

  it('prefill in chunks (chunked prefill) gives the same logits as the CPU reference', async (ctx) => {
    if (!gpu) return ctx.skip();
    const small = await compile(model, { device: gpu.info, prefillChunk: 3 });
    const session = await small.createSession({ device: gpu });
    const cpu = new CpuCausalLM(model.build({ lastTokenLogitsOnly: true }), model.maxPositions);
    const prompt = [1, 403, 407, 261, 378, 432, 383, 286];
    await session.step(prompt, { temperature: 0, topp: 0.9, coin: 0 });
    expect(maxAbsDiff(await session.lastLogits(), cpu.step(prompt))).toBeLessThan(1e-4);
    await session.destroy();
  }, LONG);

  it('one engine samples on the GPU with any temperature, top-p and top-k like the host sampler (same seed, same ids)', async (ctx) => {
    if (!gpu) return ctx.skip();
    // the engine was compiled with no sampling settings: they are run-time params of its sampler
    const session = await engine.createSession({ device: gpu });
    const { generateTokens } = await import('../src/runtime/generate.js');
    const cpu = (): CpuCausalLM => new CpuCausalLM(model.build({ lastTokenLogitsOnly: true }), 512);
    for (const s of [
      { temperature: 0.8, topp: 0.9, seed: 42 },
      { temperature: 1.2, topp: 1, topk: 5, seed: 7 },
      { temperature: 1, topp: 0.7, topk: 20, seed: 3 },
    ]) {
      const r = await session.generate([1, 403, 407], { steps: 30, ...s });
      const host = await generateTokens(cpu(), [1, 403, 407], { steps: 30, ...s, stopTokens: [1] });
      expect(r.generated, JSON.stringify(s)).toEqual(host.generated);
    }
    // bad settings fail before anything runs
    await expect(session.generate([1], { steps: 5, temperature: 0.5, topp: 1.5, seed: 1 })).rejects.toThrow(InputError);
    await expect(session.step([1], { temperature: 0.5, topp: 0.9, topk: -1, coin: 0.5 })).rejects.toThrow(/topk/);
    await session.destroy();
  }, LONG);

  it('an engine saved by compile loads in a fresh process and produces the same ids', async (ctx) => {
    if (!gpu) return ctx.skip();
    const dir = mkdtempSync(join(tmpdir(), 'tw-engine-'));
    await engine.save(dir);
    const gold = JSON.parse(readFileSync(sharedPath('golden/stories260K', files[0]), 'utf8'));
    const { spawnSync } = await import('node:child_process');
    const script = `
      import { Engine } from ${JSON.stringify(new URL('../src/runtime/index.ts', import.meta.url).pathname)};
      const e = await Engine.load(${JSON.stringify(dir)});
      const s = await e.createSession();
      const r = await s.generate(${JSON.stringify(gold.prompt_ids)}, { steps: ${gold.steps}, temperature: 0, topp: 0.9, seed: 1 });
      process.stdout.write(JSON.stringify(r.generated));
      await s.destroy();`;
    const p = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' }, timeout: 120_000 });
    expect(p.status, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout)).toEqual(gold.generated_ids);
  }, LONG);
});

describe('engines for other graphs', () => {
  it('GPT-2 and BERT (no KV cache) match the reference through compileGraph', async (ctx) => {
    if (!gpu) return ctx.skip();
    const cfg = { vocabSize: 50, nPositions: 32, nEmbd: 32, nLayer: 2, nHead: 4 };
    const g = buildGpt2(cfg, randomGpt2Weights(cfg, 3), { kvCache: false });
    const S = 7;
    const inputs = { tokens: Tensor.from('i32', [1, S], [1, 5, 9, 3, 44, 2, 8]), positions: Tensor.from('i32', [S], [0, 1, 2, 3, 4, 5, 6]) };
    const ref = runGraph(g, inputs).logits;
    const got = (await runGraphOnWebGPU(g, inputs, { device: gpu })).logits;
    expect(maxAbsDiff(got.numbers, ref.numbers)).toBeLessThan(1e-3);
    const bcfg = { vocabSize: 40, hiddenSize: 32, numHiddenLayers: 2, numAttentionHeads: 4, intermediateSize: 64, maxPositionEmbeddings: 16 };
    const bg = buildBert(bcfg, randomBertWeights(bcfg, 5));
    const bin = {
      tokens: Tensor.from('i32', [1, 6], [2, 7, 9, 11, 0, 0]),
      token_type_ids: Tensor.from('i32', [1, 6], [0, 0, 0, 1, 1, 1]),
      attention_mask: Tensor.from('i32', [1, 6], [1, 1, 1, 1, 0, 0]),
      positions: Tensor.from('i32', [6], [0, 1, 2, 3, 4, 5]),
    };
    const bref = runGraph(bg, bin);
    const bgot = await runGraphOnWebGPU(bg, bin, { device: gpu });
    expect(maxAbsDiff(bgot.last_hidden_state.numbers, bref.last_hidden_state.numbers)).toBeLessThan(1e-3);
  }, LONG);

  it('run takes the values of symbolic dims no input binds (a range over seq), as runGraph does', async (ctx) => {
    if (!gpu) return ctx.skip();
    // found by the compiled-graph differential (FUZZ_SEED=1, case seed 1737106420): range(seq) with no input of seq
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3]);
    const g = b.build({ r: b.range('seq'), y: b.add(x, 1) });
    const inputs = { x: Tensor.from('f32', [3], [1, 2, 3]) };
    const want = runGraph(g, inputs, { bindings: { seq: 5 } });
    const engine = await compileGraph(g, { seq: 5 }, { device: gpu.info });
    const s = await engine.createSession({ device: gpu });
    try {
      const got = await s.run(inputs, { bindings: { seq: 5 } });
      expect(Array.from(got.r.numbers)).toEqual(Array.from(want.r.numbers));
      expect(Array.from(got.y.numbers)).toEqual(Array.from(want.y.numbers));
      await expect(s.run(inputs)).rejects.toThrow(InputError);
    } finally {
      await s.destroy();
    }
  }, LONG);

  it('GQA ratios 1, 2, 4 and 8 through the paged-KV engine match the reference', async (ctx) => {
    if (!gpu) return ctx.skip();
    for (const nKvHeads of [8, 4, 2, 1]) {
      const c: LlamaConfig = { dim: 64, hiddenDim: 96, nLayers: 2, nHeads: 8, nKvHeads, vocabSize: 67, seqLen: 40, sharedClassifier: false };
      const w = randomLlamaWeights(c, nKvHeads);
      const model: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(c, w, o) };
      const engine = await compile(model, { device: gpu.info, prefillChunk: 8, kv: { blockSize: 4 } });
      const session = await engine.createSession({ device: gpu });
      const cpu = new CpuCausalLM(model.build({ lastTokenLogitsOnly: true }), c.seqLen);
      for (const chunk of [[1, 5, 9, 13, 17], [3], [4, 8], [60]]) {
        await session.step(chunk, { temperature: 0, topp: 0.9, coin: 0 });
        expect(maxAbsDiff(await session.lastLogits(), cpu.step(chunk)), `GQA ${8 / nKvHeads}`).toBeLessThan(2e-4);
      }
      await session.destroy();
    }
  }, LONG);
});

describe('failures are typed errors', () => {
  it('a lost device fails generate with DEVICE_LOST, and a new session works', async (ctx) => {
    if (!gpu) return ctx.skip();
    const c: LlamaConfig = { dim: 32, hiddenDim: 48, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 30, seqLen: 16, sharedClassifier: true };
    const w = randomLlamaWeights(c, 9);
    const model: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(c, w, o) };
    const engine = await compile(model, { device: gpu.info });
    const own = await requestGPUDevice();
    const session = await engine.createSession({ device: own });
    const first = await session.generate([1, 2], { steps: 6, temperature: 0, topp: 0.9, seed: 1 });
    await own.destroy();
    await expect(session.generate([1, 2], { steps: 6, temperature: 0, topp: 0.9, seed: 1 })).rejects.toBeInstanceOf(DeviceError);
    const again = await engine.createSession({ device: gpu });
    expect((await again.generate([1, 2], { steps: 6, temperature: 0, topp: 0.9, seed: 1 })).generated).toEqual(first.generated);
    await again.destroy();
  }, LONG);

  it('a full KV cache and out-of-vocabulary ids are typed errors', async (ctx) => {
    if (!gpu) return ctx.skip();
    const c: LlamaConfig = { dim: 32, hiddenDim: 48, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 30, seqLen: 8, sharedClassifier: true };
    const w = randomLlamaWeights(c, 9);
    const model: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(c, w, o) };
    const session = await (await compile(model, { device: gpu.info })).createSession({ device: gpu });
    await expect(session.step([1, 99], { temperature: 0, topp: 0.9, coin: 0 })).rejects.toThrow(InputError);
    session.reset();
    await session.step([1, 2, 3, 4, 5, 6, 7, 8], { temperature: 0, topp: 0.9, coin: 0 });
    await expect(session.step([1], { temperature: 0, topp: 0.9, coin: 0 })).rejects.toMatchObject({ code: 'KV_CACHE_FULL' });
    await session.destroy();
  }, LONG);

  it('a tampered or unknown-version manifest is a typed error', async () => {
    const fake = { format: 'tensorwright-engine', version: 999 } as never;
    expect(() => new Engine(fake, new Uint8Array())).toThrow(/version 999/);
    await expect(Engine.load('/nonexistent/engine')).rejects.toThrow(InputError);
  }, LONG);

  it('compileGraph fails naming the node when no kernel covers an op', async (ctx) => {
    if (!gpu) return ctx.skip();
    const { GraphBuilder } = await import('../src/ir/builder.js');
    const b = new GraphBuilder();
    // the rope kernel needs static heads and head size ([B, S, H, D]); symbolic heads have no kernel
    const x = b.input('x', 'f32', [1, 3, 'heads', 8]);
    const pos = b.input('pos', 'i32', [3]);
    const g = b.build({ y: b.rope(x, pos) });
    await expect(compileGraph(g, { heads: 2 }, { device: gpu.info, passes: 'O0' })).rejects.toThrow(/rope/);
  }, LONG);
});

describe('device limits', () => {
  it('weights larger than one storage binding are split, and the engine still matches the reference', async (ctx) => {
    if (!gpu) return ctx.skip();
    const c: LlamaConfig = { dim: 64, hiddenDim: 96, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 67, seqLen: 16, sharedClassifier: false };
    const w = randomLlamaWeights(c, 11);
    const model: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(c, w, o) };
    const limit = 8192;
    const engine = await compile(model, { device: gpu.info, maxStorageBufferBindingSize: limit, prefillChunk: 4 });
    for (const wm of engine.manifest.weights) for (const p of wm.parts) expect(p.byteLength, wm.name).toBeLessThanOrEqual(limit);
    expect(engine.manifest.weights.some((x) => x.name.startsWith('tok_embeddings['))).toBe(true);
    const session = await engine.createSession({ device: gpu });
    const cpu = new CpuCausalLM(model.build({ lastTokenLogitsOnly: true }), c.seqLen);
    for (const chunk of [[1, 66, 30], [12]]) {
      await session.step(chunk, { temperature: 0, topp: 0.9, coin: 0 });
      expect(maxAbsDiff(await session.lastLogits(), cpu.step(chunk))).toBeLessThan(2e-4);
    }
    await session.destroy();
  }, LONG);

  it('a weight whose rows cannot fit fails at compile time naming the tensor and the limit', async (ctx) => {
    if (!gpu) return ctx.skip();
    const c: LlamaConfig = { dim: 64, hiddenDim: 96, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 67, seqLen: 16, sharedClassifier: true };
    const w = randomLlamaWeights(c, 11);
    const model: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: c, parameters: 0, weightBytes: 0, maxPositions: c.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(c, w, o) };
    await expect(compile(model, { device: gpu.info, maxStorageBufferBindingSize: 200 })).rejects.toThrow(/maxStorageBufferBindingSize 200/);
  }, LONG);
});
