// SmoothQuant and W8A8 of whole models (src/compress/smoothquant.ts, w8a8.ts): the smoothing factors, folds that keep
// the function, a plan that applies to every build of a model, a W8A8 Llama on WebGPU against the CPU reference, and
// on stories260K (calibrated on the calibration text, scored on the public eval text) SmoothQuant no worse than plain
// W8A8 with static scales.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../src/compile.js';
import { tokenWindows } from '../src/compress/capture.js';
import { smoothingFactors } from '../src/compress/smoothquant.js';
import { applyW8A8, calibrateW8A8, captureInputMaxima, planW8A8 } from '../src/compress/w8a8.js';
import { evalGraphs } from '../src/cli/eval.js';
import { openModel } from '../src/cli/model-input.js';
import type { LoadedModel } from '../src/frontends/load.js';
import { attrsOf, isOp } from '../src/ir/attrs.js';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { expectClose, expectDecodeMatchesCpu } from './support/encoded-weights.js';
import { sharedPath, sharedPresent } from './support/shared.js';

const LONG = 300_000;

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

// grouped KV heads (a row of W_v feeds two query heads) and a separate classifier
const C: LlamaConfig = { dim: 64, hiddenDim: 96, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 67, seqLen: 40, sharedClassifier: false };
const W = randomLlamaWeights(C, 5);
const MODEL: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: C, parameters: 0, weightBytes: 0, maxPositions: C.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(C, W, o) };
const rng = new Rng(9);
const WINDOWS = [0, 1, 2].map(() => [1, ...Array.from({ length: 24 }, () => 2 + rng.int(C.vocabSize - 2))]);

const logitsOf = (g: Graph, tokens: number[]): Float32Array => {
  const out = runGraph(g, { tokens: Tensor.from('i32', [1, tokens.length], tokens), positions: Tensor.from('i32', [tokens.length], tokens.map((_t, i) => i)), ...Object.fromEntries(g.inputs.filter((i) => i.attrs.name.startsWith('past_')).map((i) => [i.attrs.name, Tensor.zeros('f32', i.shape.map((d) => (typeof d === 'number' ? d : 0)))])) });
  return out.logits.data as Float32Array;
};
const w8a8Matmuls = (g: Graph): number => g.nodes().filter((n) => isOp(n, 'matmul') && attrsOf(n, 'matmul').actQuant).length;

describe('SmoothQuant', () => {
  it('s_j = max|X_j|^α / max|W_j|^(1−α); tied channels share their joint maxima; dead channels get 1', () => {
    const s = smoothingFactors({ activationMax: [4, 1, 0, 9], weightMax: [1, 4, 2, 1], alpha: 0.5 });
    expect([...s]).toEqual([2, 0.5, 1, 3]);
    const tied = smoothingFactors({ activationMax: [4, 16, 1, 1], weightMax: [1, 1, 1, 4], alpha: 0.5, rowOf: Int32Array.from([0, 0, 1, 1]) });
    expect([...tied]).toEqual([4, 4, 0.5, 0.5]);
  });

  it('folded into the norms, the up projection and W_v (grouped heads), smoothing keeps the function', () => {
    const f32 = MODEL.build({ lastTokenLogitsOnly: false });
    const plan = calibrateW8A8(f32, WINDOWS, { activations: 'static', smoothQuantAlpha: 0.5, smoothOnly: true });
    expect(plan.layers.map((l) => l.smoothing)).toEqual(Array(C.nLayers).fill(['norm', 'norm', 'norm', 'rows', 'norm', 'norm', 'rows']).flat());
    expect(plan.inputScales.size).toBe(0);
    const smoothed = applyW8A8(f32, plan);
    const tokens = [1, 7, 20, 33, 4, 50];
    expectClose(logitsOf(smoothed, tokens), logitsOf(f32, tokens), 'smoothed logits');
  });

  it('without a producer to fold into, 1/s is an explicit per-channel multiply, and the function is kept', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 16]);
    const y = b.relu(b.linear(x, b.weight('w', [8, 16], new Rng(2).normals(128, 1))));
    const g = b.build({ y });
    const xs = new Rng(3).normals(48, 1).map((v, i) => (i % 16 === 5 ? v * 30 : v)); // an outlier channel
    const maxima = captureInputMaximaOf(g, xs);
    const plan = planW8A8(g, maxima, { activations: 'static', smoothQuantAlpha: 0.5, smoothOnly: true });
    expect(plan.layers[0].smoothing).toBe('explicit');
    const smoothed = applyW8A8(g, plan);
    expect(smoothed.nodes().filter((n) => n.op === 'mul')).toHaveLength(1);
    const inputs = { x: Tensor.from('f32', [3, 16], xs) };
    expectClose(runGraph(smoothed, inputs).y.data as Float32Array, runGraph(g, inputs).y.data as Float32Array, 'explicit smoothing');
    // and W8A8 on top: the smoothed input's range is flatter than the raw one's
    const q = planW8A8(g, maxima, { activations: 'static', smoothQuantAlpha: 0.5 });
    const plain = planW8A8(g, maxima, { activations: 'static' });
    expect(q.layers[0].outlierRatio).toBeLessThan(plain.layers[0].outlierRatio);
  });
});

/** The maxima of a one-matmul graph whose input is `x` itself (no windows: its input is no token stream). */
function captureInputMaximaOf(g: Graph, xs: Float32Array) {
  const input = g.inputs[0];
  const m = new Float64Array(16);
  for (let i = 0; i < xs.length; i++) m[i % 16] = Math.max(m[i % 16], Math.abs(xs[i]));
  return { byInput: new Map([[input, m]]), rows: 3 };
}

describe('W8A8 plans', () => {
  it('apply by weight name to every build of the model; the classifier stays f32', () => {
    const plan = calibrateW8A8(MODEL.build({ lastTokenLogitsOnly: false }), WINDOWS, { activations: 'per-token' });
    expect(plan.kept).toEqual([{ name: 'output', why: 'classifier (stays f32)' }]);
    for (const opts of [{ lastTokenLogitsOnly: false }, { lastTokenLogitsOnly: true }, { logitRows: true }]) expect(w8a8Matmuls(applyW8A8(MODEL.build(opts), plan)), JSON.stringify(opts)).toBe(7 * C.nLayers);
  });

  // per-token scales: the layers share their kernels (static scales are constants of each layer's kernel, and
  // test/w8a8-matmul.test.ts runs them), which keeps lavapipe's compile time down
  it('a W8A8 Llama (SmoothQuant, per-token scales) decodes and prefills on WebGPU as on the CPU reference', async (ctx) => {
    if (!gpu) return ctx.skip();
    const plan = calibrateW8A8(MODEL.build({ lastTokenLogitsOnly: false }), WINDOWS, { activations: 'per-token', smoothQuantAlpha: 0.5 });
    const model: LoadedModel = { ...MODEL, build: (o) => applyW8A8(MODEL.build(o), plan) };
    const engine = await compile(model, { device: gpu.info, prefillChunk: 8, kv: { blockSize: 4 } });
    expect(engine.manifest.kernels.filter((k) => k.family === 'w8a8-matmul').length).toBeGreaterThan(0);
    const session = await engine.createSession({ device: gpu });
    try {
      await expectDecodeMatchesCpu(session, new CpuCausalLM(model.build({ lastTokenLogitsOnly: true }), C.seqLen));
    } finally {
      await session.destroy();
    }
  }, LONG);
});

describe.runIf(sharedPresent('models', 'stories260K', 'stories260K.bin') && sharedPresent('data', 'stories260K-calib.txt'))('stories260K W8A8', () => {
  it('SmoothQuant (alpha 0.5) with static scales is no worse than plain static W8A8 on the public eval text (first 800 tokens)', async () => {
    const { model, tokenizer } = await openModel(sharedPath('models', 'stories260K', 'stories260K.bin'), sharedPath('models', 'stories260K', 'tok512.bin'));
    const f32 = model.build({ lastTokenLogitsOnly: false });
    const calib = tokenizer!.encode(readFileSync(sharedPath('data', 'stories260K-calib.txt'), 'utf8'));
    const maxima = captureInputMaxima(f32, tokenWindows(calib, model.bosId, model.maxPositions));
    const ids = tokenizer!.encode(readFileSync(sharedPath('data', 'stories260K-eval-public.txt'), 'utf8'));
    const score = (alpha?: number) => evalGraphs(model, ids, f32, applyW8A8(f32, planW8A8(f32, maxima, { activations: 'static', smoothQuantAlpha: alpha })), 800);
    const [plain, smooth] = [await score(), await score(0.5)];
    expect(smooth.kl_mean).toBeLessThanOrEqual(plain.kl_mean);
    expect(smooth.top1_agreement).toBeGreaterThanOrEqual(plain.top1_agreement);
  }, LONG);
});
