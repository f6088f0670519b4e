/**
 * The fusion passes (merge-projections, fuse-epilogues, fuse-elementwise): targeted before/after tests, each
 * differential (the graph runs on the CPU interpreter before and after on random inputs), checking what fired and
 * what must not, then the whole pipeline on a stories260K-shaped Llama and a small GPT-2, with kernel counts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import type { Node } from '../src/ir/node.js';
import type { FusedStep } from '../src/ir/ops.js';
import { countKernels, opHistogram } from '../src/ir/stats.js';
import { quantizeWeight } from '../src/ir/weights.js';
import { buildGpt2, randomGpt2Weights, type Gpt2Config } from '../src/models/gpt2.js';
import { buildLlama, llamaHeadSize, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { csePass } from '../src/passes/cse.js';
import { dcePass } from '../src/passes/dce.js';
import { foldConstantsPass } from '../src/passes/fold-constants.js';
import { elementwiseRegions, fuseElementwisePass } from '../src/passes/fuse-elementwise.js';
import { epilogueRegions, fuseEpiloguesPass } from '../src/passes/fuse-epilogues.js';
import { findProjectionGroups, mergeProjectionsPass } from '../src/passes/merge-projections.js';
import type { Pass } from '../src/passes/pass.js';
import { runPasses, type PipelineResult } from '../src/passes/pipeline.js';
import { simplifyPass } from '../src/passes/simplify.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { expectSameOutputs } from './support/differential.js';
import { arbGraphCase, compareTensors } from './support/random-graph.js';

// ---------------------------------------------------------------------------------------------------------------
// helpers

const TOL = { rtol: 1e-5, atol: 1e-5 };

/** Runs passes through the pass manager, verifying after each. */
function run(g: Graph, passes: readonly Pass[]): PipelineResult {
  return runPasses(g, passes, { verify: true });
}

function count(g: Graph, op: string): number {
  return g.nodes().filter((n) => n.op === op).length;
}

function fusedNodes(g: Graph, kind?: string): Node[] {
  return g.nodes().filter((n) => n.op === 'fused' && (kind === undefined || n.attrs.kind === kind));
}

function stepsOf(n: Node): FusedStep[] {
  return n.attrs.steps as unknown as FusedStep[];
}

function stepOps(n: Node): string[] {
  return stepsOf(n).map((s) => s.op);
}

function randWeight(b: GraphBuilder, name: string, shape: number[], seed: number): Node {
  return b.weight(name, shape, new Rng(seed).normals(shape.reduce((p, q) => p * q, 1), 0.5));
}

// ---------------------------------------------------------------------------------------------------------------

describe('merge-projections', () => {
  it('merges q/k/v projections ([out, in] weights, transB) into one matmul and three slices', () => {
    const b = new GraphBuilder();
    const h = b.input('h', 'f32', [1, 3, 8]);
    const q = b.linear(h, randWeight(b, 'wq', [8, 8], 1));
    const k = b.linear(h, randWeight(b, 'wk', [4, 8], 2));
    const v = b.linear(h, randWeight(b, 'wv', [4, 8], 3));
    const g = b.build({ q, k, v });
    const plan = findProjectionGroups(g);
    expect(plan.groups).toHaveLength(1);
    expect(plan.groups[0].branches.map((br) => [br.offset, br.columns])).toEqual([[0, 8], [8, 4], [12, 4]]);
    const r = run(g, [mergeProjectionsPass, dcePass]);
    expect(count(r.graph, 'matmul')).toBe(1);
    expect(count(r.graph, 'slice')).toBe(3);
    const w = r.graph.nodes().find((n) => n.op === 'weight')!;
    expect(w.shape).toEqual([16, 8]);
    expect(r.graph.weights.size).toBe(1);
    expect(r.report.ofPass('merge-projections')[0].message).toMatch(/merged 3 projections \(wq, wk, wv\)/);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('merges [in, out] weights (no transB) along their last axis', () => {
    const b = new GraphBuilder();
    const h = b.input('h', 'f32', [2, 5, 6]);
    const y1 = b.matmul(h, randWeight(b, 'a', [6, 3], 4));
    const y2 = b.matmul(h, randWeight(b, 'b', [6, 7], 5));
    const g = b.build({ y: b.add(b.relu(y1), b.sum(y2, [2], true)) });
    const r = run(g, [mergeProjectionsPass]);
    expect(count(r.graph, 'matmul')).toBe(1);
    expect(r.graph.nodes().find((n) => n.op === 'matmul')!.inputs[1].shape).toEqual([6, 10]);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('merges biases when every branch has its own (concatenated at compile time)', () => {
    const b = new GraphBuilder();
    const h = b.input('h', 'f32', [1, 4, 8]);
    const q = b.linear(h, randWeight(b, 'wq', [8, 8], 1), randWeight(b, 'bq', [8], 11));
    const k = b.linear(h, randWeight(b, 'wk', [4, 8], 2), randWeight(b, 'bk', [4], 12));
    const v = b.linear(h, randWeight(b, 'wv', [4, 8], 3), randWeight(b, 'bv', [4], 13));
    const g = b.build({ q, k, v });
    const r = run(g, [mergeProjectionsPass, dcePass]);
    expect(count(r.graph, 'matmul')).toBe(1);
    expect(count(r.graph, 'add')).toBe(1);
    const add = r.graph.nodes().find((n) => n.op === 'add')!;
    expect(add.inputs.map((x) => x.shape)).toContainEqual([16]);
    expect(r.matches['merge-biased-projection']).toBe(3);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('merges the biases when only some branches have one (zeros for the others)', () => {
    const b = new GraphBuilder();
    const h = b.input('h', 'f32', [1, 4, 8]);
    const q = b.linear(h, randWeight(b, 'wq', [8, 8], 1));
    const k = b.linear(h, randWeight(b, 'wk', [4, 8], 2));
    const v = b.linear(h, randWeight(b, 'wv', [4, 8], 3), randWeight(b, 'bv', [4], 13));
    const g = b.build({ q, k, v });
    const r = run(g, [mergeProjectionsPass, dcePass]);
    expect(count(r.graph, 'matmul')).toBe(1);
    expect(count(r.graph, 'add')).toBe(1);
    expect(r.graph.output('q').op).toBe('slice');
    expect(r.graph.output('v').op).toBe('slice');
    expect(r.report.ofPass('merge-projections')[0].message).toMatch(/with biases/);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('does not merge matmuls whose B is an activation, or with different transB, A or transA', () => {
    const b = new GraphBuilder();
    const h = b.input('h', 'f32', [3, 8]);
    const x1 = b.input('x1', 'f32', [8, 4]);
    const x2 = b.input('x2', 'f32', [8, 4]);
    const wT = randWeight(b, 'wT', [4, 8], 1); // used with transB
    const wN = randWeight(b, 'wN', [8, 4], 2); // used without
    const other = b.input('other', 'f32', [3, 8]);
    const wO = randWeight(b, 'wO', [4, 8], 3);
    const wA = randWeight(b, 'wA', [3, 4], 4);
    const outs = {
      a1: b.matmul(h, x1),
      a2: b.matmul(h, x2),
      t1: b.matmul(h, wT, { transB: true }),
      t2: b.matmul(h, wN),
      o: b.matmul(other, wO, { transB: true }),
      ta: b.matmul(h, wA, { transA: true }),
    };
    const g = b.build(outs);
    expect(findProjectionGroups(g).groups).toHaveLength(0);
    const r = run(g, [mergeProjectionsPass]);
    expect(r.graph).toBe(g);
  });

  it('leaves out quantized weights and weights used elsewhere, and reports the latter', () => {
    const b = new GraphBuilder();
    const h = b.input('h', 'f32', [2, 8]);
    const qw = b.weight(quantizeWeight('wq8', [4, 8], new Rng(1).normals(32, 0.5), { bits: 8, groupSize: 8 }));
    const shared = randWeight(b, 'shared', [4, 8], 2);
    const y1 = b.linear(h, qw);
    const y2 = b.linear(h, shared);
    const y3 = b.linear(h, randWeight(b, 'w3', [4, 8], 3));
    const elsewhere = b.sum(shared, [0]); // keeps `shared` alive on its own
    const g = b.build({ y1, y2, y3, elsewhere });
    const plan = findProjectionGroups(g);
    expect(plan.groups).toHaveLength(0); // only w3 is left: a group of one
    expect(plan.sharedWeightSkipped).toEqual([y2]);
    const r = run(g, [mergeProjectionsPass]);
    expect(r.graph).toBe(g);
    expect(r.report.ofPass('merge-projections')[0].message).toMatch(/used elsewhere.*shared/);
  });

  it('merges the two dense branches of a group and leaves the shared one as it was', () => {
    const b = new GraphBuilder();
    const h = b.input('h', 'f32', [2, 8]);
    const shared = randWeight(b, 'shared', [4, 8], 2);
    const g = b.build({
      y1: b.linear(h, shared),
      y2: b.linear(h, randWeight(b, 'w2', [4, 8], 3)),
      y3: b.linear(h, randWeight(b, 'w3', [6, 8], 4)),
      t: b.transpose(shared),
    });
    const r = run(g, [mergeProjectionsPass]);
    expect(count(r.graph, 'matmul')).toBe(2);
    expect(count(r.graph, 'slice')).toBe(2);
    expectSameOutputs(g, r.graph, TOL);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('fuse-elementwise', () => {
  it('fuses a tree of elementwise ops into one kernel, with splat constants as constant steps', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 5]);
    const y = b.input('y', 'f32', [5]);
    const z = b.input('z', 'f32', [2, 5]);
    const out = b.mul(b.tanh(b.add(b.mul(x, 0.5), y)), b.exp(z));
    const g = b.build({ out });
    expect(countKernels(g)).toBe(5);
    const r = run(g, [fuseElementwisePass]);
    expect(countKernels(r.graph)).toBe(1);
    const [f] = fusedNodes(r.graph, 'elementwise');
    expect(f.inputs).toEqual([x, y, z]);
    expect(stepOps(f).sort()).toEqual(['add', 'constant', 'exp', 'mul', 'mul', 'tanh']);
    expect(stepsOf(f).find((s) => s.op === 'constant')!.attrs.values).toEqual([0.5]);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('does not absorb an intermediate with two users: it is materialized and read by the fused kernel', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4, 3]);
    const t = b.exp(x);
    const out = b.sub(b.mul(t, 2), b.add(t, 1));
    const g = b.build({ out });
    const r = run(g, [fuseElementwisePass]);
    expect(r.graph.nodes()).toContain(t);
    const [f] = fusedNodes(r.graph);
    expect(f.inputs).toEqual([t]);
    expect(stepOps(f).filter((op) => op !== 'constant').sort()).toEqual(['add', 'mul', 'sub']);
    expect(countKernels(r.graph)).toBe(2);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('does not absorb a graph output', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [6]);
    const mid = b.sigmoid(b.neg(x));
    const out = b.mul(mid, x);
    const g = b.build({ mid, out });
    const r = run(g, [fuseElementwisePass]);
    expect(r.graph.output('mid').op).toBe('fused');
    expect(r.graph.output('out').op).toBe('mul');
    expect(r.graph.output('out').inputs).toContain(r.graph.output('mid'));
    expectSameOutputs(g, r.graph, TOL);
  });

  it('does not absorb a value its user broadcasts (it is loaded, not recomputed per element)', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 8]);
    const inv = b.rsqrt(b.add(b.mean(b.mul(x, x), [1], true), 1e-5)); // [3, 1]
    const out = b.mul(x, inv); // [3, 8]
    const g = b.build({ out });
    const regions = elementwiseRegions(g);
    expect(regions.map((rg) => rg.nodes.map((n) => n.op))).toEqual([['add', 'rsqrt']]);
    const r = run(g, [fuseElementwisePass]);
    expect(r.graph.output('out').op).toBe('mul');
    expect(fusedNodes(r.graph)).toHaveLength(1);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('leaves single ops alone (no one-step fused nodes)', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4]);
    const m = b.matmul(b.reshape(b.exp(x), [2, 2]), b.reshape(x, [2, 2]));
    const g = b.build({ y: b.relu(m) });
    const r = run(g, [fuseElementwisePass]);
    expect(r.graph).toBe(g);
  });

  it('fuses comparisons, where and casts', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 4]);
    const out = b.cast(b.where(b.less(x, 0), b.neg(x), b.mul(x, x)), 'f16');
    const g = b.build({ out });
    const r = run(g, [fuseElementwisePass]);
    expect(countKernels(r.graph)).toBe(1);
    expect(stepOps(fusedNodes(r.graph)[0])).toContain('where');
    expectSameOutputs(g, r.graph, TOL);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('fuse-epilogues', () => {
  it('fuses matmul + bias + activation + residual into one matmul kernel', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [1, 4, 8]);
    const y = b.add(x, b.gelu(b.linear(x, randWeight(b, 'w', [8, 8], 1), randWeight(b, 'bias', [8], 2)), 'tanh'));
    const g = b.build({ y });
    expect(countKernels(g)).toBe(4);
    const r = run(g, [fuseEpiloguesPass]);
    expect(countKernels(r.graph)).toBe(1);
    const [f] = fusedNodes(r.graph, 'matmul');
    expect(stepOps(f)).toEqual(['matmul', 'add', 'gelu', 'add']);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('fuses the SwiGLU gate on a merged w1/w3 matmul (the slices become steps)', () => {
    const b = new GraphBuilder();
    const h = b.input('h', 'f32', [1, 3, 8]);
    const gate = b.silu(b.linear(h, randWeight(b, 'w1', [12, 8], 1)));
    const up = b.linear(h, randWeight(b, 'w3', [12, 8], 2));
    const g = b.build({ y: b.linear(b.mul(gate, up), randWeight(b, 'w2', [8, 12], 3)) });
    expect(countKernels(g)).toBe(5);
    const r = run(g, [mergeProjectionsPass, fuseEpiloguesPass]);
    expect(countKernels(r.graph)).toBe(2);
    const [gated] = fusedNodes(r.graph, 'matmul');
    expect(stepOps(gated)).toEqual(['matmul', 'slice', 'silu', 'slice', 'mul']);
    expect(stepsOf(gated).filter((s) => s.op === 'slice').map((s) => [s.attrs.starts, s.attrs.ends])).toEqual([[[0], [12]], [[12], [24]]]);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('fuses the GeGLU gate the same way, with the operand order of the product either way round', () => {
    const b = new GraphBuilder();
    const h = b.input('h', 'f32', [2, 8]);
    const up = b.linear(h, randWeight(b, 'up', [6, 8], 2));
    const gate = b.gelu(b.linear(h, randWeight(b, 'gate', [6, 8], 1)));
    const g = b.build({ y: b.mul(up, gate) });
    const r = run(g, [mergeProjectionsPass, fuseEpiloguesPass]);
    expect(countKernels(r.graph)).toBe(1);
    expect(stepOps(fusedNodes(r.graph)[0]).sort()).toEqual(['gelu', 'matmul', 'mul', 'slice', 'slice']);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('anchors norms, softmax and attention', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [1, 4, 2, 8]);
    const rms = b.mul(b.rmsnorm(x, randWeight(b, 'g', [8], 1)), 2);
    const ln = b.relu(b.layernorm(x, randWeight(b, 'lg', [8], 2), randWeight(b, 'lb', [8], 3)));
    const sm = b.cast(b.softmax(x), 'f16');
    const att = b.attention(x, x, x, { causal: true }).out;
    const g = b.build({ rms, ln, sm, att: b.add(b.tanh(att), x) });
    const r = run(g, [fuseEpiloguesPass]);
    expect(fusedNodes(r.graph).map((n) => n.attrs.kind).sort()).toEqual(['attention', 'layernorm', 'rmsnorm', 'softmax']);
    expect(stepOps(fusedNodes(r.graph, 'attention')[0])).toEqual(['attention', 'tanh', 'add']);
    expect(countKernels(r.graph)).toBe(4);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('stops at an intermediate with two users, and does not fuse a matmul whose result is read twice', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 8]);
    const mm = b.linear(x, randWeight(b, 'w', [8, 8], 1));
    const biased = b.add(mm, randWeight(b, 'bias', [8], 2));
    const y = b.mul(b.relu(biased), biased); // `biased` has two users: the region ends there
    const mm2 = b.linear(x, randWeight(b, 'w2', [8, 8], 3));
    const z = b.add(b.exp(mm2), b.matmul(mm2, randWeight(b, 'w4', [8, 8], 4))); // mm2 read by exp and by a matmul
    const g = b.build({ y, z });
    const regions = epilogueRegions(g);
    expect(regions.map((rg) => [rg.root, rg.nodes.map((n) => n.op)])).toEqual([
      [biased, ['matmul', 'add']],
      [z, ['matmul', 'add']], // the w4 matmul and the add; exp(mm2) is an operand
    ]);
    const r = run(g, [fuseEpiloguesPass, fuseElementwisePass]);
    expect(r.graph.nodes()).toContain(mm2);
    // what is left of y is an elementwise kernel reading the materialized matmul + bias
    const y2 = r.graph.output('y');
    expect([y2.attrs.kind, stepOps(y2)]).toEqual(['elementwise', ['relu', 'mul']]);
    expect(y2.inputs.map((n) => [n.op, n.attrs.kind])).toEqual([['fused', 'matmul']]);
    expectSameOutputs(g, r.graph, TOL);
  });

  it('does not absorb a graph output or an epilogue that broadcasts the matmul result', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 1]);
    const w = randWeight(b, 'w', [1, 1], 1);
    const mm = b.matmul(x, w); // [3, 1]
    const wide = b.add(mm, b.input('row', 'f32', [3, 5])); // [3, 5]: broadcasts mm
    const out2 = b.relu(b.matmul(x, randWeight(b, 'w2', [1, 4], 2)));
    const g = b.build({ wide, out2, mmOut: b.matmul(x, randWeight(b, 'w3', [1, 2], 3)), relu3: b.relu(b.matmul(b.neg(x), w)) });
    const r = run(g, [fuseEpiloguesPass]);
    expect(r.graph.output('wide').op).toBe('add');
    expect(r.graph.output('out2').op).toBe('fused');
    expect(r.graph.output('mmOut').op).toBe('matmul');
    expectSameOutputs(g, r.graph, TOL);
  });

  it('takes slice views feeding an anchor as a prologue, but not reshapes alone', () => {
    const b = new GraphBuilder();
    const qkv = b.input('qkv', 'f32', [1, 3, 24]);
    const pos = b.input('pos', 'i32', [3]);
    const q = b.rope(b.reshape(b.sliceAxis(qkv, 2, 0, 16), [1, 3, 4, 4]), pos);
    const k = b.rope(b.reshape(b.input('kk', 'f32', [1, 3, 8]), [1, 3, 2, 4]), pos);
    const v = b.reshape(b.sliceAxis(qkv, 2, 16, 24), [1, 3, 2, 4]);
    const odd = b.reshape(b.sliceAxis(qkv, 2, 1, 7), [1, 3, 2, 3]); // 3 does not divide 1: no head split
    const g = b.build({ out: b.attention(q, k, v, { causal: true }).out, odd: b.softmax(odd) });
    const r = run(g, [fuseEpiloguesPass]);
    // the slices are moved after a head-splitting reshape of qkv (a view), then join their readers
    expect(r.matches['split-heads-before-slice']).toBe(2);
    const kinds = fusedNodes(r.graph).map((n) => [n.attrs.kind, stepOps(n)]);
    expect(kinds).toContainEqual(['rope', ['slice', 'rope']]);
    expect(kinds).toContainEqual(['attention', ['slice', 'attention']]);
    expect(kinds).toContainEqual(['softmax', ['slice', 'reshape', 'softmax']]);
    expect(fusedNodes(r.graph, 'rope')[0].inputs[0].shape).toEqual([1, 3, 6, 4]);
    expect(count(r.graph, 'rope')).toBe(1); // the k rope reads through a reshape only
    expect(count(r.graph, 'slice')).toBe(0);
    expectSameOutputs(g, r.graph, TOL);
  });
});

// ---------------------------------------------------------------------------------------------------------------

const FUSION_PIPELINE: readonly Pass[] = [foldConstantsPass, simplifyPass, mergeProjectionsPass, fuseEpiloguesPass, fuseElementwisePass, csePass, dcePass];

/** Inputs of a decoder graph with a KV cache: `seq` new tokens after `past` cached ones. */
function decoderInputs(g: Graph, seq: number, past: number, vocab: number, seed = 3): Record<string, Tensor> {
  const rng = new Rng(seed);
  const inputs: Record<string, Tensor> = {
    tokens: Tensor.from('i32', [1, seq], Array.from({ length: seq }, () => rng.int(vocab))),
    positions: Tensor.from('i32', [seq], Array.from({ length: seq }, (_v, i) => past + i)),
  };
  for (const i of g.inputs) {
    const name = String(i.attrs.name);
    if (!name.startsWith('past_')) continue;
    const shape = [1, past, i.shape[2] as number, i.shape[3] as number];
    inputs[name] = Tensor.from('f32', shape, rng.normals(shape.reduce((a, b2) => a * b2, 1), 0.5));
  }
  return inputs;
}

function fusedKinds(g: Graph): Record<string, number> {
  const h: Record<string, number> = {};
  for (const n of fusedNodes(g)) h[String(n.attrs.kind)] = (h[String(n.attrs.kind)] ?? 0) + 1;
  return h;
}

function kernelReport(name: string, before: Graph, after: Graph, layers: number, globals: number): string {
  const b = countKernels(before);
  const a = countKernels(after);
  return [
    `${name}: ${b} kernels -> ${a} (per layer ${(b - globals) / layers} -> ${(a - globals) / layers}, ${globals} outside the layers)`,
    `  ops after: ${JSON.stringify(opHistogram(after))}`,
    `  fused kinds: ${JSON.stringify(fusedKinds(after))}`,
  ].join('\n');
}

describe('fusion pipeline on models', () => {
  const stories: LlamaConfig = { dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512, sharedClassifier: true };

  it('stories260K-shaped Llama: 18 -> 11 kernels per layer, same outputs with a KV cache', () => {
    const g = buildLlama(stories, randomLlamaWeights(stories));
    const r = run(g, FUSION_PIPELINE);
    const after = r.graph;
    // outside the layers: the embedding gather, the final rmsnorm and the classifier matmul
    expect(countKernels(g)).toBe(18 * stories.nLayers + 3);
    expect(countKernels(after)).toBe(11 * stories.nLayers + 3);
    const L = stories.nLayers;
    expect(opHistogram(after)).toMatchObject({ attention: L, concat: L, fused: 6 * L, gather: 1, matmul: L + 1, rmsnorm: 2 * L + 1, reshape: 2 * L });
    expect(Object.keys(opHistogram(after)).sort()).toEqual(['attention', 'concat', 'fused', 'gather', 'input', 'matmul', 'reshape', 'rmsnorm', 'weight']);
    const kinds = fusedNodes(after).map((n) => `${String(n.attrs.kind)}:${stepOps(n).join(',')}`);
    const per = (s: string): number => kinds.filter((k) => k === s).length;
    expect(per('matmul:matmul,add')).toBe(2 * L); // wo + residual, w2 + residual
    expect(per('matmul:matmul,slice,silu,slice,mul')).toBe(L); // w1/w3 with the SwiGLU gate
    expect(per('rope:slice,rope')).toBe(2 * L); // q and k read their heads of the merged qkv output
    expect(per('concat:slice,concat')).toBe(L); // v appended to the cache straight from the qkv output
    const qkvWidth = stories.dim + 2 * llamaHeadSize(stories) * stories.nKvHeads;
    expect(after.nodes().filter((n) => n.op === 'matmul' && n.inputs[1].shape[0] === qkvWidth)).toHaveLength(L);
    console.log(kernelReport('stories260K-shaped llama', g, after, L, 3));
    const inputs = decoderInputs(g, 3, 2, stories.vocabSize);
    expectSameOutputs(g, after, TOL, inputs);
    // a prompt with an empty cache too
    expectSameOutputs(g, after, TOL, decoderInputs(g, 4, 0, stories.vocabSize, 9));
    // the pipeline is idempotent on its own output
    expect(run(after, FUSION_PIPELINE).graph.outputNodes).toEqual(after.outputNodes);
  });

  it('Llama with q/k/v biases (Qwen2) merges the biases into the qkv matmul kernel', () => {
    const c: LlamaConfig = { ...stories, nLayers: 2, vocabSize: 64, qkvBias: true };
    const w = randomLlamaWeights(c);
    const rng = new Rng(5);
    const kv = llamaHeadSize(c) * c.nKvHeads;
    for (const L of w.layers) Object.assign(L, { bq: rng.normals(c.dim, 0.1), bk: rng.normals(kv, 0.1), bv: rng.normals(kv, 0.1) });
    const g = buildLlama(c, w);
    const r = run(g, FUSION_PIPELINE);
    expect(countKernels(r.graph)).toBe(11 * c.nLayers + 3);
    expect(fusedNodes(r.graph).filter((n) => stepOps(n).join(',') === 'matmul,add' && n.shape[2] === c.dim + 2 * kv)).toHaveLength(c.nLayers);
    expectSameOutputs(g, r.graph, TOL, decoderInputs(g, 3, 2, c.vocabSize));
  });

  it('GPT-2: 19 -> 9 kernels per layer, same outputs with a KV cache', () => {
    const c: Gpt2Config = { vocabSize: 256, nPositions: 64, nEmbd: 32, nLayer: 3, nHead: 4 };
    const g = buildGpt2(c, randomGpt2Weights(c));
    const r = run(g, FUSION_PIPELINE);
    // outside the blocks: two embedding gathers, their add, the final layernorm, the LM head
    expect(countKernels(g)).toBe(19 * c.nLayer + 5);
    expect(countKernels(r.graph)).toBe(9 * c.nLayer + 5);
    const kinds = fusedNodes(r.graph).map((n) => `${String(n.attrs.kind)}:${stepOps(n).join(',')}`);
    const per = (s: string): number => kinds.filter((k) => k === s).length;
    expect(per('matmul:matmul,add')).toBe(c.nLayer); // c_attn + bias
    expect(per('matmul:matmul,add,add')).toBe(2 * c.nLayer); // c_proj / mlp.c_proj + bias + residual
    expect(per('matmul:matmul,add,gelu')).toBe(c.nLayer); // c_fc + bias + gelu
    expect(per('attention:slice,attention')).toBe(c.nLayer);
    expect(per('concat:slice,concat')).toBe(2 * c.nLayer);
    console.log(kernelReport('gpt2 (3 layers)', g, r.graph, c.nLayer, 5));
    expectSameOutputs(g, r.graph, TOL, decoderInputs(g, 3, 2, c.vocabSize));
  });

  it('without a KV cache and with last-token logits only', () => {
    const c: LlamaConfig = { ...stories, nLayers: 2 };
    const g = buildLlama(c, randomLlamaWeights(c), { kvCache: false, lastTokenLogitsOnly: true });
    const r = run(g, FUSION_PIPELINE);
    // the last-token slice ends at `seq`: symbolic bounds stay outside fused programs, so it is its own kernel
    expect(count(r.graph, 'slice')).toBe(1);
    const inputs = { tokens: Tensor.from('i32', [1, 5], [1, 2, 3, 4, 5]), positions: Tensor.from('i32', [5], [0, 1, 2, 3, 4]) };
    expectSameOutputs(g, r.graph, TOL, inputs);
  });

  it('merges random projection groups (shapes, transposes, biases, activations) without changing outputs (property)', () => {
    const branch = fc.record({ n: fc.integer({ min: 1, max: 9 }), bias: fc.boolean(), act: fc.constantFrom('none', 'silu', 'gelu', 'relu') });
    fc.assert(
      fc.property(
        fc.record({
          m: fc.integer({ min: 1, max: 4 }),
          k: fc.integer({ min: 1, max: 8 }),
          transB: fc.boolean(),
          branches: fc.array(branch, { minLength: 1, maxLength: 4 }),
          gate: fc.boolean(),
          seed: fc.nat(),
        }),
        ({ m, k, transB, branches, gate, seed }) => {
          const b = new GraphBuilder();
          const x = b.input('x', 'f32', [2, m, k]);
          const outs = branches.map((br, i) => {
            const w = randWeight(b, `w${i}`, transB ? [br.n, k] : [k, br.n], seed + i);
            let y = b.matmul(x, w, { transB });
            if (br.bias) y = b.add(y, randWeight(b, `b${i}`, [br.n], seed + 100 + i));
            return br.act === 'none' ? y : b.unary(br.act as 'silu', y);
          });
          // optionally multiply the first two branches (a gate) when their widths agree
          const list = gate && outs.length >= 2 && branches[0].n === branches[1].n ? [b.mul(outs[0], outs[1]), ...outs.slice(2)] : outs;
          const g = b.build(Object.fromEntries(list.map((o, i) => [`y${i}`, o])));
          const r = run(g, FUSION_PIPELINE);
          expect(count(r.graph, 'matmul') + fusedNodes(r.graph, 'matmul').length).toBe(1);
          expectSameOutputs(g, r.graph, TOL);
        },
      ),
      { numRuns: 150, seed: 424242 },
    );
  });

  it('the whole pipeline preserves the semantics of random graphs (differential, property)', () => {
    fc.assert(
      fc.property(arbGraphCase({ maxSteps: 12 }), (c) => {
        const r = runPasses(c.graph, FUSION_PIPELINE, { verify: true });
        const before = runGraph(c.graph, c.inputs, { bindings: c.bindings });
        const after = runGraph(r.graph, c.inputs, { bindings: c.bindings });
        for (const o of c.graph.outputs) {
          const diff = compareTensors(after[o.name], before[o.name], { rtol: 1e-4, atol: 1e-5 });
          if (diff) throw new Error(`output ${o.name}: ${diff}`);
        }
      }),
      { numRuns: 200, seed: 77 },
    );
  });

  it('the fusion passes preserve the semantics of random graphs (differential, property)', () => {
    fc.assert(
      fc.property(arbGraphCase({ maxSteps: 14 }), (c) => {
        const r = runPasses(c.graph, [mergeProjectionsPass, fuseEpiloguesPass, fuseElementwisePass], { verify: true });
        const before = runGraph(c.graph, c.inputs, { bindings: c.bindings });
        const after = runGraph(r.graph, c.inputs, { bindings: c.bindings });
        for (const o of c.graph.outputs) {
          const diff = compareTensors(after[o.name], before[o.name], TOL);
          if (diff) throw new Error(`output ${o.name}: ${diff}`);
        }
        return countKernels(r.graph) <= countKernels(c.graph);
      }),
      { numRuns: 400, seed: 20240612 },
    );
  });
});
