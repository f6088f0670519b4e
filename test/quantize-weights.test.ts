// The quantize-weights pass (--quant) on the CPU reference: schemes parse as documented, every quantized weight
// decodes to within half a step of the f32 weight it replaces, the quantized graph computes exactly what the f32
// graph computes on those decoded weights, and impossible requests are typed errors naming the weight.
import { describe, expect, it } from 'vitest';
import { InputError, UsageError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import { parseQuantScheme, type IntQuantScheme, type QuantScheme } from '../src/ir/quant-scheme.js';
import { decodeWeight, quantizeWeight, type QuantizedEncoding, type WeightEntry } from '../src/ir/weights.js';
import { isOp } from '../src/ir/attrs.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';

function quantize(g: Graph, spec: string, passes = 'quantize-weights') {
  return runPasses(g, passes, { options: { quant: parseQuantScheme(spec) } });
}

function weightsOf(g: Graph): WeightEntry[] {
  const seen = new Map<string, WeightEntry>();
  for (const n of g.nodes()) if (isOp(n, 'weight')) seen.set(n.attrs.id, g.weights.get(n.attrs.id));
  return [...seen.values()];
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

describe('quantization scheme names', () => {
  it('parse with groups of 32 and zero points by default, -g<N>, -ch and -sym as documented', () => {
    const s = (x: string): QuantScheme | undefined => parseQuantScheme(x);
    expect(s('none')).toBeUndefined();
    expect(s('int8')).toEqual({ name: 'int8', bits: 8, groupSize: 32, asymmetric: true });
    expect(s('int4')).toEqual({ name: 'int4', bits: 4, groupSize: 32, asymmetric: true });
    expect(s('int4-g128')).toEqual({ name: 'int4-g128', bits: 4, groupSize: 128, asymmetric: true });
    expect(s('int2-g32')).toEqual({ name: 'int2-g32', bits: 2, groupSize: 32, asymmetric: true });
    expect(s('int8-ch-sym')).toEqual({ name: 'int8-ch-sym', bits: 8, groupSize: 'channel', asymmetric: false });
    expect(s('INT4-G64-SYM')).toEqual({ name: 'int4-g64-sym', bits: 4, groupSize: 64, asymmetric: false });
  });
  it('reject unknown names and group sizes with a typed error listing the schemes', () => {
    for (const bad of ['int3', 'int4-g33', 'int4-g4', 'fp8', 'int4-g32-ch', 'nf5'])
      expect(() => parseQuantScheme(bad), bad).toThrow(InputError);
    expect(() => parseQuantScheme('int4-g48')).toThrow(/group size 48.*int4-g32/);
  });
});

describe('quantize-weights on a Llama', () => {
  const c: LlamaConfig = { dim: 64, hiddenDim: 96, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 67, seqLen: 16, sharedClassifier: true };
  const graph = buildLlama(c, randomLlamaWeights(c, 5), { lastTokenLogitsOnly: false });
  const inputs = (g: Graph): Record<string, Tensor> => {
    const t: Record<string, Tensor> = { tokens: Tensor.from('i32', [1, 5], [1, 7, 3, 66, 20]), positions: Tensor.from('i32', [5], [0, 1, 2, 3, 4]) };
    for (const n of g.inputs) if (n.attrs.name.startsWith('past_')) t[n.attrs.name] = Tensor.zeros(n.dtype, n.shape.map((d) => (typeof d === 'number' ? d : 0)));
    return t;
  };

  for (const spec of ['int8', 'int4-g32', 'int4-ch-sym', 'int2-g32', 'int8-g16-sym']) {
    it(`${spec}: every matmul weight and the tied embedding become one quantized entry each, within half a step of f32`, () => {
      const scheme = parseQuantScheme(spec) as IntQuantScheme;
      const r = quantize(graph, spec);
      const before = new Map(weightsOf(graph).map((e) => [e.name, e]));
      const q = weightsOf(r.graph).filter((e) => e.encoding.kind === 'quantized');
      // 7 projections per layer (wq, wk, wv, wo, w1, w2, w3) and the tied embedding/classifier, quantized once
      expect(q).toHaveLength(2 * 7 + 1);
      expect(q.filter((e) => e.name.startsWith('tok_embeddings'))).toHaveLength(1);
      for (const e of q) {
        const enc = e.encoding as QuantizedEncoding;
        expect(enc.bits).toBe(scheme.bits);
        expect(enc.hasZeroPoint).toBe(scheme.asymmetric);
        expect(enc.groupSize).toBe(scheme.groupSize === 'channel' ? e.shape[1] : scheme.groupSize);
        const src = before.get(e.name.slice(0, e.name.indexOf('@')))!;
        const want = decodeWeight(src);
        const got = decodeWeight(e);
        const scales = e.data.scales as Float32Array;
        for (let i = 0; i < want.length; i++) {
          const step = scales[Math.floor(i / enc.groupSize)];
          if (!(Math.abs(got[i] - want[i]) <= step / 2 + 1e-6)) expect.fail(`${e.name}[${i}]: ${got[i]} vs ${want[i]} (step ${step})`);
        }
      }
      expect(r.report.ofPass('quantize-weights')[0].message).toMatch(new RegExp(`15 weight\\(s\\) quantized to ${spec}`));
    });
  }

  it('the quantized graph computes what the f32 graph computes on the decoded weights; int8 stays close to f32', () => {
    const r = quantize(graph, 'int8');
    const got = runGraph(r.graph, inputs(r.graph)).logits.data as Float32Array;
    const f32 = runGraph(graph, inputs(graph)).logits.data as Float32Array;
    let scale = 0;
    for (const v of f32) scale = Math.max(scale, Math.abs(v));
    expect(maxAbsDiff(got, f32) / scale).toBeLessThan(0.02);
    expect(maxAbsDiff(got, f32)).toBeGreaterThan(0); // it did quantize
  });

  it('runs inside O3 after merge-projections (merged projections are quantized as one weight)', () => {
    const r = runPasses(graph, 'O3', { options: { quant: parseQuantScheme('int4') } });
    const names = weightsOf(r.graph).filter((e) => e.encoding.kind === 'quantized').map((e) => e.name);
    expect(names.some((n) => n.startsWith('merged('))).toBe(true);
    const got = runGraph(r.graph, inputs(r.graph)).logits.data as Float32Array;
    const ref = runGraph(quantize(graph, 'int4').graph, inputs(graph)).logits.data as Float32Array;
    // O3 on the same quantized values (merged rows quantize the same way: groups never cross rows)
    expect(maxAbsDiff(got, ref)).toBeLessThan(1e-4);
  });
});

describe('quantize-weights on other layouts', () => {
  it('a [K, N] matmul weight (ONNX layout) gets a transposed [N, K] quantized copy read with transB', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 64]);
    const values = new Rng(9).normals(64 * 40, 0.3);
    const w = b.weight('w_kn', [64, 40], values);
    const g = b.build({ y: b.matmul(x, w) });
    const r = quantize(g, 'int8-g32');
    const mm = r.graph.nodes().find((n) => n.op === 'matmul')!;
    expect(mm.attrs.transB).toBe(true);
    const q = weightsOf(r.graph)[0];
    expect(q.shape).toEqual([40, 64]);
    expect(q.name).toBe('w_kn^T@int8-g32');
    const xs = Tensor.from('f32', [3, 64], Array.from(new Rng(10).normals(3 * 64, 1)));
    const got = runGraph(r.graph, { x: xs }).y.data as Float32Array;
    // reference: x · decode(q)ᵀ
    const d = decodeWeight(q);
    const want = new Float32Array(3 * 40);
    for (let i = 0; i < 3; i++) for (let n = 0; n < 40; n++) for (let k = 0; k < 64; k++) want[i * 40 + n] += xs.numbers[i * 64 + k] * d[n * 64 + k];
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-4);
  });

  it('keeps a weight whose rows are no multiple of the group, and says so', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 64]);
    const h = b.linear(x, b.weight('up', [172, 64], new Rng(1).normals(172 * 64, 0.1)));
    const y = b.linear(h, b.weight('down', [64, 172], new Rng(2).normals(64 * 172, 0.1)));
    const r = quantize(b.build({ y }), 'int4-g32');
    const enc = Object.fromEntries(weightsOf(r.graph).map((e) => [e.name.split('@')[0], e.encoding.kind]));
    expect(enc).toEqual({ up: 'quantized', down: 'dense' });
    expect(r.report.ofPass('quantize-weights')[0].message).toMatch(/kept as they were: 'down' \(rows of 172 are no multiple of group 32\)/);
  });

  it('a scheme no weight can take is an InputError naming the weight and the constraint', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 48]);
    const g = b.build({ y: b.linear(x, b.weight('proj', [8, 48], new Rng(1).normals(8 * 48, 0.1))) });
    expect(() => quantize(g, 'int4-g32')).toThrow(InputError);
    expect(() => quantize(g, 'int4-g32')).toThrow(/int4-g32: no weight can be quantized: 'proj' \(rows of 48 are no multiple of group 32\)/);
  });

  it('a model with no matmul weights is an InputError', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 8]);
    const g = b.build({ y: b.add(x, b.weight('bias', [8], new Rng(1).normals(8, 0.1))) });
    expect(() => quantize(g, 'int8')).toThrow(/--quant int8: the model has no matmul weights or embedding tables to quantize/);
  });

  it('weights already in the scheme stay as they are; a pipeline without the pass refuses a scheme', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 64]);
    const w = b.weight(quantizeWeight('q', [16, 64], new Rng(4).normals(16 * 64, 0.1), { bits: 4, groupSize: 32, hasZeroPoint: true }));
    const g = b.build({ y: b.linear(x, w) });
    const r = quantize(g, 'int4');
    expect(weightsOf(r.graph)[0]).toBe(weightsOf(g)[0]);
    expect(() => quantize(g, 'int4', 'O0')).toThrow(UsageError);
    expect(() => quantize(g, 'int4', 'cse,dce')).toThrow(/no 'quantize-weights' pass/);
  });
});
