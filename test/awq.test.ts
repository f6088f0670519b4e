// AWQ on a small seeded Llama (GQA, untied classifier, uneven norm weights so some channels are salient): the scales
// fold into every place the module names (norms, SwiGLU's up projection, the value projection under GQA, the final
// norm), and the folded graph computes the same function: at 8 bits its logits are as close to f32 as RTN's. The
// search itself picks a scale that lowers a layer's output error on inputs with a few large channels.
import { describe, expect, it } from 'vitest';
import { awqSearch, clippedRoundToNearest, findAwqFold } from '../src/compress/awq.js';
import { captureMatmulInputs, windowInputs, type CapturedMatmul } from '../src/compress/capture.js';
import { compressGraph } from '../src/compress/compress-graph.js';
import { dequantizeGridWeight, roundToNearest, type GridSpec } from '../src/compress/grid.js';
import { outputSquaredError } from '../src/compress/layer-error.js';
import type { Graph } from '../src/ir/graph.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Rng } from '../src/util/random.js';

const config: LlamaConfig = { dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 64, seqLen: 48, sharedClassifier: false };

function model(): Graph {
  const w = randomLlamaWeights(config, 7);
  const rng = new Rng(8);
  const uneven = (n: number): Float32Array => Float32Array.from({ length: n }, () => Math.exp(1.2 * rng.normal()));
  for (const l of w.layers) [l.rmsAtt, l.rmsFfn] = [uneven(config.dim), uneven(config.dim)];
  w.rmsFinal = uneven(config.dim);
  return buildLlama(config, w, { lastTokenLogitsOnly: false });
}

function windows(seed: number, count: number, length: number): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => [1, ...Array.from({ length: length - 1 }, () => rng.int(config.vocabSize))]);
}

function logits(g: Graph, tokens: number[]): Float32Array {
  return runGraph(g, windowInputs(g, tokens)).logits.data as Float32Array;
}

function distance(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return Math.sqrt(s);
}

describe('AWQ', () => {
  const g = model();
  const calib = windows(1, 3, 40);

  it('finds a fold for every group of matmuls of the Llama graph', () => {
    const captured = captureMatmulInputs(g, calib);
    const users = g.users();
    const groups = new Map<unknown, CapturedMatmul[]>();
    for (const m of captured.values()) groups.set(m.input, [...(groups.get(m.input) ?? []), m]);
    const kinds = [...groups.values()].map((group) => {
      const f = findAwqFold(group[0].input, group, users);
      return `${group.map((m) => m.weight.attrs.name).join('+')}:${f?.kind ?? 'none'}`;
    });
    expect(kinds.sort()).toEqual(
      [
        'layers.0.wq+layers.0.wk+layers.0.wv:norm', 'layers.0.wo:rows', 'layers.0.w1+layers.0.w3:norm', 'layers.0.w2:rows',
        'layers.1.wq+layers.1.wk+layers.1.wv:norm', 'layers.1.wo:rows', 'layers.1.w1+layers.1.w3:norm', 'layers.1.w2:rows', 'output:norm',
      ].sort(),
    );
  });

  it('folds its scales without changing the function (unrounded: the same logits; at 8 bits: as close to f32 as RTN\'s within 2x)', () => {
    const spec: GridSpec = { bits: 8, groupSize: 32, symmetric: true };
    const awq = compressGraph(g, calib, { method: 'awq', spec });
    const rtn = compressGraph(g, calib, { method: 'rtn', spec });
    // scales were applied (not all alpha 0) in each kind of fold
    for (const name of ['layers.0.wq', 'layers.1.wo', 'layers.0.w2', 'output'])
      expect(awq.layers.find((l) => l.name === name)!.alpha, name).toBeGreaterThan(0);
    const test = windows(2, 1, 40)[0];
    const f32 = logits(g, test);
    const dAwq = distance(logits(awq.graph, test), f32);
    const dRtn = distance(logits(rtn.graph, test), f32);
    expect(dAwq).toBeLessThan(2 * dRtn);
    // this random model amplifies weight errors (RTN int8: 7% of the logits' norm); the scales alone change nothing
    expect(dAwq).toBeGreaterThan(0);
    const folded = compressGraph(g, calib, { method: 'awq', spec, scaleOnly: true });
    expect(distance(logits(folded.graph, test), f32) / Math.sqrt(f32.reduce((a, x) => a + x * x, 0))).toBeLessThan(1e-5);
  });

  it('lowers a layer\'s output error on inputs with a few large channels, and the clipping search lowers it further', () => {
    const rng = new Rng(9);
    const [rows, cols, m] = [32, 64, 300];
    const w = rng.normals(rows * cols, 0.1);
    const big = new Set([3, 17, 40, 41]);
    const x = Float64Array.from({ length: m * cols }, (_v, i) => rng.normal() * (big.has(i % cols) ? 20 : 1));
    const h = new Float64Array(cols * cols);
    const absSum = new Float64Array(cols);
    for (let r = 0; r < m; r++)
      for (let i = 0; i < cols; i++) {
        absSum[i] += Math.abs(x[r * cols + i]);
        for (let j = 0; j < cols; j++) h[i * cols + j] += x[r * cols + i] * x[r * cols + j];
      }
    const layer = { rows, cols, stats: { channels: cols, rows: m, hessian: h, absSum } } as unknown as CapturedMatmul;
    const spec: GridSpec = { bits: 3, groupSize: 32, symmetric: false };
    const choice = awqSearch([layer], [w], spec);
    expect(choice.alpha).toBeGreaterThan(0);
    expect(choice.error).toBeLessThan(0.9 * choice.rtnError);
    expect(choice.rtnError).toBeCloseTo(outputSquaredError(w, dequantizeGridWeight(roundToNearest(w, rows, cols, spec)), rows, cols, h), 6);
    const clipped = outputSquaredError(w, dequantizeGridWeight(clippedRoundToNearest(w, rows, cols, spec, h)), rows, cols, h);
    expect(clipped).toBeLessThanOrEqual(choice.rtnError);
  });
});
