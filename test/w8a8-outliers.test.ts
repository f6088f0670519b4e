// W8A8 with outlier input channels kept in f32 (LLM.int8's mixed decomposition with static thresholds,
// `W8A8Options.outliers` in src/compress/w8a8.ts): which channels, the int8 weight without their columns and the f32
// side weight with them, calibration statistics of the other channels only, every channel taken out computes the f32
// function, and a W8A8 Llama with outlier channels on WebGPU against the CPU reference.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../src/compile.js';
import { applyW8A8, calibrateW8A8, captureInputHistograms, captureInputMaxima, planW8A8, selectMaxOutliers } from '../src/compress/w8a8.js';
import { weightMatmuls } from '../src/compress/capture.js';
import { InputError } from '../src/errors.js';
import type { LoadedModel } from '../src/frontends/load.js';
import { attrsOf, isOp } from '../src/ir/attrs.js';
import type { Graph } from '../src/ir/graph.js';
import { decodeWeight } from '../src/ir/weights.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { CpuCausalLM } from '../src/runtime/cpu/lm.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { acquireTestDevice, type TestGPU } from './helpers/webgpu.js';
import { expectDecodeMatchesCpu } from './support/encoded-weights.js';

const LONG = 300_000;

let gpu: TestGPU | null = null;
beforeAll(async () => {
  gpu = await acquireTestDevice();
});
afterAll(() => gpu?.destroy());

const C: LlamaConfig = { dim: 64, hiddenDim: 96, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 67, seqLen: 40, sharedClassifier: false };
const W = randomLlamaWeights(C, 5);
const MODEL: LoadedModel = { format: 'llama2c', family: 'llama', path: '-', config: C, parameters: 0, weightBytes: 0, maxPositions: C.seqLen, bosId: 1, stopTokens: [], build: (o) => buildLlama(C, W, o) };
const rng = new Rng(9);
const WINDOWS = [0, 1, 2].map(() => [1, ...Array.from({ length: 24 }, () => 2 + rng.int(C.vocabSize - 2))]);

const logitsOf = (g: Graph, tokens: number[]): Float32Array => {
  const out = runGraph(g, { tokens: Tensor.from('i32', [1, tokens.length], tokens), positions: Tensor.from('i32', [tokens.length], tokens.map((_t, i) => i)), ...Object.fromEntries(g.inputs.filter((i) => i.attrs.name.startsWith('past_')).map((i) => [i.attrs.name, Tensor.zeros('f32', i.shape.map((d) => (typeof d === 'number' ? d : 0)))])) });
  return out.logits.data as Float32Array;
};

describe('W8A8 outlier channels', () => {
  it('selects channels over T × the median channel max, at most maxCount, the largest first, in increasing order', () => {
    const m = [1, 1, 5, 1, 3, 1, 9, 1];
    expect(selectMaxOutliers(m, 2, 8)).toEqual([2, 4, 6]);
    expect(selectMaxOutliers(m, 2, 2)).toEqual([2, 6]);
    expect(selectMaxOutliers(m, 10, 8)).toEqual([]);
  });

  it('moves the outlier columns from the int8 weight to an f32 side weight; the statistics are of the other channels', () => {
    const f32 = MODEL.build({ lastTokenLogitsOnly: false });
    const maxima = captureInputMaxima(f32, WINDOWS);
    const plan = planW8A8(f32, maxima, { activations: 'static', outliers: { threshold: 1.5, maxFraction: 0.1 } });
    expect(plan.outliers.size).toBeGreaterThan(0);
    for (const { weight, input } of weightMatmuls(f32)) {
      const name = attrsOf(weight, 'weight').name;
      const side = plan.outliers.get(name);
      const layer = plan.layers.find((l) => l.name === name);
      if (!layer) continue;
      const m = maxima.byInput.get(input)!;
      const [n, k] = weight.shape as [number, number];
      const indices = side?.indices ?? [];
      expect(layer.outlierChannels).toEqual(indices);
      expect(indices.length).toBeLessThanOrEqual(Math.ceil(0.1 * k));
      // min-max over the channels left in the int8 path
      expect(layer.inputMax).toBe(Math.max(...Array.from(m).filter((_, j) => !indices.includes(j))));
      expect(layer.clip).toBe(layer.inputMax);
      if (!side) continue;
      const exact = decodeWeight(f32.weights.get(attrsOf(weight, 'weight').id));
      const q = decodeWeight(plan.weights.get(name)!);
      const s = decodeWeight(side.weight);
      expect(side.weight.shape).toEqual([n, indices.length]);
      for (let r = 0; r < n; r++)
        indices.forEach((c, j) => {
          expect(q[r * k + c]).toBe(0);
          expect(s[r * indices.length + j]).toBe(exact[r * k + c]);
        });
    }
    // the calibrators' histograms leave the outlier channels out
    const [{ input }] = weightMatmuls(f32);
    const k = input.shape[input.shape.length - 1] as number;
    const hists = captureInputHistograms(f32, WINDOWS, new Map([[input, { exclude: [0, 5], max: Math.max(...maxima.byInput.get(input)!) }]]));
    expect(hists.get(input)!.total).toBe(maxima.rows * (k - 2));
  });

  it('with every channel taken out of the int8 path the graph computes the f32 logits', () => {
    const f32 = MODEL.build({ lastTokenLogitsOnly: false });
    const plan = calibrateW8A8(f32, WINDOWS, { activations: 'static', calibrator: 'entropy', outliers: { threshold: 1e-9, maxFraction: 1 } });
    const g = applyW8A8(f32, plan);
    expect(g.nodes().filter((n) => isOp(n, 'gather') && n.inputs[0].shape.length === 3).length).toBe(4 * C.nLayers);
    const [want, got] = [logitsOf(f32, WINDOWS[0]), logitsOf(g, WINDOWS[0])];
    for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i], 4);
  });

  it('refuses a threshold that is not positive and a fraction outside (0, 1]', () => {
    const f32 = MODEL.build({ lastTokenLogitsOnly: false });
    const maxima = captureInputMaxima(f32, WINDOWS.slice(0, 1));
    expect(() => planW8A8(f32, maxima, { activations: 'static', outliers: { threshold: 0 } })).toThrow(InputError);
    expect(() => planW8A8(f32, maxima, { activations: 'static', outliers: { threshold: 3, maxFraction: 1.5 } })).toThrow(/fraction/);
  });

  it('a W8A8 Llama with outlier channels (per-token scales) decodes and prefills on WebGPU as on the CPU reference', async (ctx) => {
    if (!gpu) return ctx.skip();
    const plan = calibrateW8A8(MODEL.build({ lastTokenLogitsOnly: false }), WINDOWS, { activations: 'per-token', outliers: { threshold: 1.5, maxFraction: 0.1 } });
    expect(plan.outliers.size).toBeGreaterThan(0);
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
