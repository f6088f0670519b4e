// The sparsify-weights pass (--sparsity) on the CPU reference: patterns parse as documented, pruning keeps the
// largest magnitudes in the N:M or block pattern, the pruned graph computes what the f32 graph computes on the
// decoded (pruned) weights, and impossible patterns are typed errors naming the weight and the constraint.
import { describe, expect, it } from 'vitest';
import { InputError, UsageError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import { parseSparsityScheme } from '../src/ir/sparsity-scheme.js';
import { parseQuantScheme } from '../src/ir/quant-scheme.js';
import { decodeWeight, type WeightEntry } from '../src/ir/weights.js';
import { isOp } from '../src/ir/attrs.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';

function sparsify(g: Graph, spec: string, passes = 'sparsify-weights') {
  return runPasses(g, passes, { options: { sparsity: parseSparsityScheme(spec) } });
}

function weightsOf(g: Graph): WeightEntry[] {
  const seen = new Map<string, WeightEntry>();
  for (const n of g.nodes()) if (isOp(n, 'weight')) seen.set(n.attrs.id, g.weights.get(n.attrs.id));
  return [...seen.values()];
}

describe('sparsity pattern names', () => {
  it('parse N:M and block<B>-<density> (fraction or percent)', () => {
    expect(parseSparsityScheme('none')).toBeUndefined();
    expect(parseSparsityScheme('2:4')).toEqual({ kind: 'nm', name: '2:4', n: 2, m: 4 });
    expect(parseSparsityScheme('4:8')).toEqual({ kind: 'nm', name: '4:8', n: 4, m: 8 });
    expect(parseSparsityScheme('block32-0.1')).toEqual({ kind: 'block', name: 'block32-0.1', block: 32, density: 0.1 });
    expect(parseSparsityScheme('block16-25%')).toEqual({ kind: 'block', name: 'block16-25%', block: 16, density: 0.25 });
  });
  it('reject bad patterns with a typed error', () => {
    for (const bad of ['4:4', '0:4', '2:1', 'block0-0.5', 'block16-0', 'block16-1.5', 'block16', '50%', 'dense'])
      expect(() => parseSparsityScheme(bad), bad).toThrow(InputError);
  });
});

describe('sparsify-weights', () => {
  const c: LlamaConfig = { dim: 64, hiddenDim: 96, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 67, seqLen: 16, sharedClassifier: false };
  const graph = buildLlama(c, randomLlamaWeights(c, 5), { lastTokenLogitsOnly: false });

  it('2:4: every matmul weight keeps the 2 largest magnitudes of each 4 along K; embeddings stay dense', () => {
    const r = sparsify(graph, '2:4');
    const before = new Map(weightsOf(graph).map((e) => [e.name, decodeWeight(e)]));
    const sparse = weightsOf(r.graph).filter((e) => e.encoding.kind === 'sparse-nm');
    expect(sparse).toHaveLength(2 * 7 + 1); // 7 projections per layer and the classifier
    expect(weightsOf(r.graph).find((e) => e.name === 'tok_embeddings')!.encoding.kind).toBe('dense');
    for (const e of sparse) {
      const want = before.get(e.name.split('@')[0])!;
      const got = decodeWeight(e);
      for (let g = 0; g < got.length / 4; g++) {
        const grp = [0, 1, 2, 3].map((j) => g * 4 + j);
        const kept = grp.filter((i) => got[i] !== 0);
        expect(kept.length).toBeLessThanOrEqual(2);
        for (const i of kept) expect(got[i]).toBe(want[i]);
        const dropped = grp.filter((i) => got[i] === 0).map((i) => Math.abs(want[i]));
        for (const i of kept) for (const d of dropped) expect(Math.abs(want[i])).toBeGreaterThanOrEqual(d);
      }
    }
    expect(r.report.ofPass('sparsify-weights')[0].message).toMatch(/15 weight\(s\) pruned to 2:4/);
  });

  it('block8-0.25 keeps a quarter of the 8x8 blocks of each weight; the graph runs on the CPU reference', () => {
    const c8 = { ...c, vocabSize: 72 }; // every dim a multiple of 8
    const r = sparsify(buildLlama(c8, randomLlamaWeights(c8, 6), { lastTokenLogitsOnly: false }), 'block8-0.25');
    expect(weightsOf(r.graph).filter((x) => x.encoding.kind === 'sparse-block')).toHaveLength(2 * 7 + 1);
    for (const e of weightsOf(r.graph).filter((x) => x.encoding.kind === 'sparse-block')) {
      const blocks = (e.shape[0] / 8) * (e.shape[1] / 8);
      const stored = (e.data.rowPtr as Int32Array)[e.shape[0] / 8];
      expect(stored, e.name).toBeLessThanOrEqual(Math.ceil(0.25 * blocks));
    }
    const inputs: Record<string, Tensor> = { tokens: Tensor.from('i32', [1, 3], [1, 7, 3]), positions: Tensor.from('i32', [3], [0, 1, 2]) };
    for (const n of r.graph.inputs) if (n.attrs.name.startsWith('past_')) inputs[n.attrs.name] = Tensor.zeros(n.dtype, n.shape.map((d) => (typeof d === 'number' ? d : 0)));
    const out = runGraph(r.graph, inputs).logits.data as Float32Array;
    expect(out.every(Number.isFinite)).toBe(true);
  });

  it('a [K, N] weight is pruned along K of its transpose and read with transB; the result equals x · decode(W)ᵀ', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 16]);
    const g = b.build({ y: b.matmul(x, b.weight('w_kn', [16, 12], new Rng(3).normals(16 * 12, 1))) });
    const r = sparsify(g, '1:4');
    const mm = r.graph.nodes().find((n) => n.op === 'matmul')!;
    expect(mm.attrs.transB).toBe(true);
    const q = weightsOf(r.graph)[0];
    expect(q.shape).toEqual([12, 16]);
    const xs = Tensor.from('f32', [2, 16], Array.from(new Rng(4).normals(32, 1)));
    const got = runGraph(r.graph, { x: xs }).y.data as Float32Array;
    const d = decodeWeight(q);
    for (let i = 0; i < 2; i++)
      for (let n = 0; n < 12; n++) {
        let want = 0;
        for (let k = 0; k < 16; k++) want += xs.numbers[i * 16 + k] * d[n * 16 + k];
        expect(got[i * 12 + n]).toBeCloseTo(want, 4);
      }
  });

  it('with --quant int4 (and int8-ch-sym): each pruned weight keeps its positions and gets its kept values quantized; a group not dividing the kept rows keeps them f32', () => {
    const passes = 'sparsify-weights,quantize-weights';
    const options = (quant: string) => ({ sparsity: parseSparsityScheme('2:4'), quant: parseQuantScheme(quant) });
    const pruned = new Map(weightsOf(sparsify(graph, '2:4').graph).map((e) => [e.name, e]));
    for (const quant of ['int4', 'int8-ch-sym']) {
      const r = runPasses(graph, passes, { options: options(quant) });
      const sparse = weightsOf(r.graph).filter((e) => e.encoding.kind === 'sparse-nm');
      expect(sparse).toHaveLength(2 * 7 + 1);
      // int4 (groups of 32): w2's rows of 96 keep 48 values, no multiple of 32, so they stay f32
      const kept = quant === 'int4' ? sparse.filter((e) => e.name.includes('w2')) : [];
      for (const e of sparse) {
        const enc = e.encoding as Extract<WeightEntry['encoding'], { kind: 'sparse-nm' }>;
        const source = pruned.get(e.name.replace(/@int.*$/, ''))!;
        expect(e.data.indices, e.name).toEqual(source.data.indices);
        if (kept.includes(e)) {
          expect(enc.quantizedValues, e.name).toBeUndefined();
          continue;
        }
        expect(enc.quantizedValues, e.name).toMatchObject({ kind: 'quantized', bits: quant === 'int4' ? 4 : 8 });
        expect(e.data.values, e.name).toBeUndefined();
        // where the pruned weight is zero the result is; elsewhere within one quantization step
        const want = decodeWeight(source);
        const got = decodeWeight(e);
        const step = Math.max(...(e.data.scales as Float32Array));
        for (let i = 0; i < want.length; i++) {
          if (want[i] === 0) expect(got[i]).toBe(0);
          else expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(step);
        }
      }
      const message = r.report.ofPass('quantize-weights')[0].message;
      if (quant === 'int4') expect(message).toMatch(/kept as they were: 'layers\.0\.w2@2:4' \(2:4-sparse rows of 48 kept values are no multiple of group 32\)/);
      else expect(message).not.toMatch(/kept/);
    }
  });

  it('impossible patterns are InputErrors naming the weight and the constraint', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 172]);
    const g = b.build({ y: b.linear(x, b.weight('w2', [64, 172], new Rng(1).normals(64 * 172, 0.1))) });
    expect(() => sparsify(g, '4:8')).toThrow(/--sparsity 4:8: weight 'w2' has rows of 172 \(K\), not a multiple of M = 8/);
    expect(() => sparsify(g, 'block16-0.5')).toThrow(/weight 'w2' is \[64, 172\] \(N, K\), not divisible into 16x16 blocks/);
    const nb = new GraphBuilder();
    const y = nb.input('y', 'f32', [2, 8]);
    expect(() => sparsify(nb.build({ z: nb.add(y, nb.weight('bias', [8], new Rng(1).normals(8, 0.1))) }), '2:4')).toThrow(/no dense matmul weights to prune/);
    // with --quant: codebook schemes cannot store N:M values, nor can any scheme store block-sparse blocks
    const both = (sparsity: string, quant: string) => () => runPasses(g, 'sparsify-weights,quantize-weights', { options: { sparsity: parseSparsityScheme(sparsity), quant: parseQuantScheme(quant) } });
    expect(both('2:4', 'nf4')).toThrow(/--quant nf4: weight 'w2@2:4' is 2:4-sparse, and codebook schemes cannot store sparse values/);
    expect(both('2:4', 'nf4')).toThrow(InputError);
    const square = new GraphBuilder();
    const sx = square.input('x', 'f32', [2, 64]);
    const sg = square.build({ y: square.linear(sx, square.weight('w3', [64, 64], new Rng(1).normals(64 * 64, 0.1))) });
    expect(() => runPasses(sg, 'sparsify-weights,quantize-weights', { options: { sparsity: parseSparsityScheme('block16-0.5'), quant: parseQuantScheme('int8') } })).toThrow(/--quant int8: weight 'w3@block16-0.5' is block-sparse, whose blocks cannot be quantized/);
    expect(() => sparsify(g, '2:4', 'cse,dce')).toThrow(UsageError);
  });
});
