/**
 * The rewrite engine, the pass manager and the basic passes (fold-constants, simplify, cse, dce): targeted
 * before/after tests, each differential (the graph runs on the CPU interpreter before and after on random inputs),
 * checking that the rule fired, and that it does not fire where it must not.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { UsageError, VerifyError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import type { Graph } from '../src/ir/graph.js';
import { makeNode } from '../src/ir/node.js';
import { verifyGraph } from '../src/ir/verifier.js';
import { quantizeWeight, WeightStore } from '../src/ir/weights.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { csePass } from '../src/passes/cse.js';
import { dcePass } from '../src/passes/dce.js';
import { discreteGpuProfile } from '../src/ir/device-profile.js';
import { foldConstantsPass } from '../src/passes/fold-constants.js';
import { rewritePass, type Pass } from '../src/passes/pass.js';
import { isSplatConstant, matchFirst, matchPattern, pat } from '../src/passes/pattern.js';
import { PASSES, PRESETS, resolvePipeline, runPasses } from '../src/passes/pipeline.js';
import { rewriteGraph, RewriteLimitError, type RewriteRule } from '../src/passes/rewrite.js';
import { simplifyPass } from '../src/passes/simplify.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { expectSameOutputs, randomInputs } from './support/differential.js';
import { arbGraphCase, compareTensors } from './support/random-graph.js';
import { expectThrown } from './support/expect-thrown.js';

// ---------------------------------------------------------------------------------------------------------------
// helpers

/** Runs one pass through the pass manager (verifying) and returns the result. */
function run(g: Graph, passes: readonly Pass[] | string, options: Record<string, unknown> = {}): ReturnType<typeof runPasses> {
  return runPasses(g, passes, { verify: true, options });
}

function opsOf(g: Graph): string[] {
  return g.nodes().map((n) => n.op);
}

function count(g: Graph, op: string): number {
  return opsOf(g).filter((o) => o === op).length;
}

const tinyLlama: LlamaConfig = { dim: 16, hiddenDim: 32, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 24, seqLen: 16, sharedClassifier: false };

function llamaInputs(): Record<string, Tensor> {
  const inputs: Record<string, Tensor> = {
    tokens: Tensor.from('i32', [1, 3], [1, 5, 7]),
    positions: Tensor.from('i32', [3], [0, 1, 2]),
  };
  for (let l = 0; l < tinyLlama.nLayers; l++) {
    inputs[`past_k.${l}`] = Tensor.zeros('f32', [1, 0, 2, 4]);
    inputs[`past_v.${l}`] = Tensor.zeros('f32', [1, 0, 2, 4]);
  }
  return inputs;
}

// ---------------------------------------------------------------------------------------------------------------

describe('patterns', () => {
  it('match commutative operands in either order, with captures', () => {
    const b = new GraphBuilder();
    const one = b.constant(1);
    const x = b.input('x', 'f32', [4]);
    const m1 = b.mul(x, one); // canonical order puts the older node (the constant) first
    expect(m1.inputs[0]).toBe(one);
    const caps = matchFirst(pat.op('mul', [pat.any('x'), pat.constant(1, 'c')]), m1);
    expect(caps).toEqual({ x, c: one });
    // a non-commutative op only matches positionally
    expect(matchFirst(pat.op('sub', [pat.any('x'), pat.constant(1)]), b.sub(one, x))).toBeUndefined();
    expect(matchFirst(pat.op('sub', [pat.any('x'), pat.constant(1)]), b.sub(x, one))).toEqual({ x });
  });

  it('require a name captured twice to bind the same node', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4]);
    const y = b.input('y', 'f32', [4]);
    const square = pat.op('mul', [pat.any('a'), pat.any('a')]);
    expect(matchFirst(square, b.mul(x, x))).toEqual({ a: x });
    expect(matchFirst(square, b.mul(x, y))).toBeUndefined();
  });

  it('backtrack through both orders of a commutative op', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4]);
    const y = b.input('y', 'f32', [4]);
    const node = b.add(x, y);
    const all = [...matchPattern(pat.op('add', [pat.any('p'), pat.any('q')]), node)];
    expect(all).toEqual([
      { p: x, q: y },
      { p: y, q: x },
    ]);
    // a predicate that only the second order satisfies
    const onlyY = pat.op('add', [pat.where((n) => n === y, 'first'), pat.any('second')]);
    expect(matchFirst(onlyY, node)).toEqual({ first: y, second: x });
  });

  it('match op sets, splat constants (0 matches -0, NaN matches NaN) and leaves', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2]);
    expect(matchFirst(pat.op(['exp', 'log']), b.log(x))).toEqual({});
    expect(matchFirst(pat.op(['exp', 'log']), b.sin(x))).toBeUndefined();
    expect(isSplatConstant(b.constant(-0), 0)).toBe(true);
    expect(isSplatConstant(b.constant(NaN), NaN)).toBe(true);
    expect(isSplatConstant(b.constant([1, 2], 'f32', [2]))).toBe(false);
    expect(isSplatConstant(b.constant([3, 3], 'f32', [2]), 3)).toBe(true);
    expect(matchFirst(pat.input('i'), x)).toEqual({ i: x });
    expect(matchFirst(pat.weight(), x)).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('rewriteGraph', () => {
  const negNeg: RewriteRule = { name: 'neg-neg', root: 'neg', pattern: pat.op('neg', [pat.op('neg', [pat.any('x')])]), apply: ({ captures }) => captures.x };

  it('returns the same graph when no rule fires', () => {
    const b = new GraphBuilder();
    const g = b.build({ y: b.exp(b.input('x', 'f32', [3])) });
    const r = rewriteGraph(g, [negNeg]);
    expect(r.graph).toBe(g);
    expect(r.matches).toEqual({});
    expect(r.sweeps).toBe(1);
  });

  it('rewrites to a fixpoint within a sweep, bottom-up', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3]);
    let h = x;
    for (let i = 0; i < 7; i++) h = b.neg(h);
    const g = b.build({ y: b.exp(h) });
    const r = rewriteGraph(g, [negNeg]);
    expect(opsOf(r.graph)).toEqual(['input', 'neg', 'exp']);
    expect(r.matches).toEqual({ 'neg-neg': 3 });
    expect(r.sweeps).toBe(2);
    expectSameOutputs(g, r.graph);
  });

  it('sweeps again when a replacement contains new rewritable nodes', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3]);
    const g = b.build({ y: b.relu(x) });
    // relu(x) -> sigmoid(neg(neg(x))): the inner neg(neg) is only visited on the next sweep
    const hide: RewriteRule = { name: 'hide', root: 'relu', apply: ({ node }) => makeNode('sigmoid', [makeNode('neg', [makeNode('neg', [node.inputs[0]])])]) };
    const r = rewriteGraph(g, [hide, negNeg]);
    expect(opsOf(r.graph)).toEqual(['input', 'sigmoid']);
    expect(r.matches).toEqual({ hide: 1, 'neg-neg': 1 });
    expect(r.sweeps).toBe(3);
  });

  it('tries rules by benefit, highest first (ties in list order)', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3]);
    const g = b.build({ y: b.exp(x) });
    const toSin: RewriteRule = { name: 'to-sin', root: 'exp', apply: ({ node }) => makeNode('sin', node.inputs) };
    const toCos: RewriteRule = { name: 'to-cos', root: ['exp', 'log'], benefit: 5, apply: ({ node }) => makeNode('cos', node.inputs) };
    expect(rewriteGraph(g, [toSin, toCos]).graph.outputNodes[0].op).toBe('cos');
    expect(rewriteGraph(g, [toSin, { ...toCos, benefit: 0 }]).graph.outputNodes[0].op).toBe('sin');
    expect(rewriteGraph(g, [toSin, { ...toCos, benefit: undefined }]).graph.outputNodes[0].op).toBe('sin');
  });

  it('stops a ping-pong between two rules with a RewriteLimitError naming both', () => {
    const b = new GraphBuilder();
    const g = b.build({ y: b.sin(b.input('x', 'f32', [3])) });
    const a: RewriteRule = { name: 'sin-to-cos', root: 'sin', apply: ({ node }) => makeNode('cos', node.inputs) };
    const c: RewriteRule = { name: 'cos-to-sin', root: 'cos', apply: ({ node }) => makeNode('sin', node.inputs) };
    const e = expectThrown(() => rewriteGraph(g, [a, c]), RewriteLimitError);
    expect(e.message).toMatch(/ping-pong/);
    expect(e.message).toContain('sin-to-cos -> cos-to-sin');
    expect(e.rules).toEqual(['sin-to-cos', 'cos-to-sin']);
  });

  it('stops a rule that keeps growing the graph at the per-node limit', () => {
    const b = new GraphBuilder();
    const g = b.build({ y: b.neg(b.input('x', 'f32', [3])) });
    const grow: RewriteRule = { name: 'grow', root: 'neg', apply: ({ node }) => makeNode('neg', [makeNode('neg', [node])]) };
    expect(() => rewriteGraph(g, [grow], { ruleLimit: 10 })).toThrow(/more than 10 rewrites at one node \(rules: grow\)/);
  });

  it('stops at the sweep limit when the graph keeps changing', () => {
    const b = new GraphBuilder();
    const g = b.build({ y: b.relu(b.input('x', 'f32', [3])) });
    const hide: RewriteRule = { name: 'hide', root: 'relu', apply: ({ node }) => makeNode('sigmoid', [makeNode('neg', [makeNode('neg', [node.inputs[0]])])]) };
    const negNeg2: RewriteRule = { ...negNeg };
    expect(() => rewriteGraph(g, [hide, negNeg2], { maxIterations: 1 })).toThrow(RewriteLimitError);
    expect(() => rewriteGraph(g, [hide, negNeg2], { maxIterations: 1 })).toThrow(/did not converge after 1 sweeps.*hide \(1x\)/);
  });

  it('catches an ill-typed rule with a VerifyError naming the rule and printing the node', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 3]);
    const g = b.build({ y: b.exp(b.mul(x, 2)) });
    const bad: RewriteRule = { name: 'bad-sum', root: 'mul', apply: ({ node }) => makeNode('sum', [node.inputs[0]], { axes: [1] }) };
    const msg = expectThrown(() => rewriteGraph(g, [bad]), VerifyError).message;
    expect(msg).toContain("rewrite rule 'bad-sum'");
    expect(msg).toContain('f32[2,3]');
    expect(msg).toContain('f32[2]');
    expect(msg).toMatch(/node:\n {2}%0 = input "x" : f32\[2,3\]\n(.*\n)*? {2}%2 = mul\(%0, %1\) : f32\[2,3\]\nreplacement:/);
    expect(msg).toMatch(/replacement:\n(.*\n)*? {2}%1 = sum\(%0\) \{axes=\[1\], keepDims=false\} : f32\[2\]$/);
  });

  it('names the rule when a rule tries to build an ill-typed node', () => {
    const b = new GraphBuilder();
    const g = b.build({ y: b.exp(b.input('x', 'f32', [2, 3])) });
    const bad: RewriteRule = { name: 'self-matmul', root: 'exp', apply: ({ node }) => makeNode('matmul', [node, node]) };
    expect(() => rewriteGraph(g, [bad])).toThrow(VerifyError);
    expect(() => rewriteGraph(g, [bad])).toThrow(/rewrite rule 'self-matmul' built an ill-typed node \(matmul: contracted dims differ.*\)\nnode:\n.*\n.*exp\(%0\)/);
  });

  it('gives rules use counts, output flags, options and a persistent weight store', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4]);
    const t = b.tanh(x);
    const g = b.build({ a: b.exp(t), c: b.sin(t), t });
    const seen: Record<string, unknown> = {};
    const probe: RewriteRule = {
      name: 'probe',
      root: 'exp',
      apply: ({ node }, ctx) => {
        seen.uses = ctx.useCount(node.inputs[0]);
        seen.usesX = ctx.useCount(x);
        seen.fresh = ctx.useCount(makeNode('cos', [x]));
        seen.output = ctx.isOutput(node.inputs[0]);
        seen.notOutput = ctx.isOutput(x);
        seen.option = ctx.options.flag;
        const entry = WeightStore.entry('fresh', 'f32', [4], { values: new Float32Array([1, 2, 3, 4]) });
        return makeNode('add', [makeNode('cos', node.inputs), ctx.addWeight(entry)]);
      },
    };
    const r = rewriteGraph(g, [probe], { options: { flag: 42 } });
    expect(seen).toEqual({ uses: 2, usesX: 1, fresh: Infinity, output: true, notOutput: false, option: 42 });
    expect(g.weights.size).toBe(0);
    expect(r.graph.weights.size).toBe(1);
    verifyGraph(r.graph);
  });

  it('counts the users of a node that replaced another', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4]);
    const m = b.mul(x, 1); // rewritten to x, so x inherits the users of m
    const g = b.build({ a: b.exp(m), c: b.sin(m), d: b.cos(x) });
    const counts: number[] = [];
    const dropOne: RewriteRule = { name: 'drop-one', root: 'mul', pattern: pat.op('mul', [pat.any('x'), pat.constant(1)]), apply: ({ captures }) => captures.x };
    const probe: RewriteRule = { name: 'probe', root: 'sin', apply: ({ node }, ctx) => void counts.push(ctx.useCount(node.inputs[0])) };
    rewriteGraph(g, [dropOne, probe]);
    expect(counts[0]).toBe(3); // exp, sin, cos
  });

  it('rewrites a 5000-node chain without overflowing the stack, one rewrite per removable node', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [8]);
    let h = x;
    for (let i = 0; i < 2500; i++) h = b.tanh(b.mul(h, 1));
    const g = b.build({ y: h });
    expect(g.size).toBeGreaterThan(5000);
    const r = runPasses(g, 'O1', { verify: true });
    expect(count(r.graph, 'mul')).toBe(0);
    expect(count(r.graph, 'tanh')).toBe(2500);
    expect(r.matches['mul-one']).toBe(2500);
    expectSameOutputs(g, r.graph);
  });

  it('collapses a 5000-deep chain of negations in one sweep', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [8]);
    let h = x;
    for (let i = 0; i < 5000; i++) h = b.neg(h);
    const g = b.build({ y: b.exp(h) });
    const r = rewriteGraph(g, [negNeg]);
    expect(opsOf(r.graph)).toEqual(['input', 'exp']);
    expect(r.matches['neg-neg']).toBe(2500);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('fold-constants', () => {
  it('folds f32 arithmetic on constants into a constant', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 3]);
    const c = b.add(b.constant([1, 2, 3, 4, 5, 6], 'f32', [2, 3]), b.exp(b.constant([0.5, 1, 1.5], 'f32', [3])));
    const g = b.build({ y: b.mul(x, c) });
    const r = run(g, [foldConstantsPass]);
    expect(r.matches['fold-constant']).toBe(2);
    expect(opsOf(r.graph).sort()).toEqual(['constant', 'input', 'mul']);
    expect(r.report.ofKind('folded')).toHaveLength(1);
    expectSameOutputs(g, r.graph);
  });

  it('folds to a splat constant when every element is equal', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3]);
    const g = b.build({ y: b.add(x, b.add(b.constant([2, 2, 2], 'f32', [3]), b.constant(3))) });
    const r = run(g, [foldConstantsPass]);
    const c = r.graph.outputNodes[0].inputs.find((n) => n.op === 'constant')!;
    expect(c.attrs.values).toEqual([5]);
    expect(c.shape).toEqual([3]);
    expectSameOutputs(g, r.graph);
  });

  it('folds f16 with half rounding, exactly as the interpreter computes it', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f16', [4]);
    const c = b.mul(b.constant([0.1, 0.2, 0.3, 1000.7], 'f16', [4]), b.constant(3.3, 'f16'));
    const g = b.build({ y: b.add(x, c), c });
    const r = run(g, [foldConstantsPass]);
    const folded = r.graph.output('c');
    expect(folded.op).toBe('constant');
    expect(folded.dtype).toBe('f16');
    expect(folded.attrs.values).toEqual(runGraph(g, randomInputs(g)).c.toArray());
    expectSameOutputs(g, r.graph);
  });

  it('folds i32 arithmetic, comparisons to bool, casts and where', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'i32', [4]);
    const ints = b.constant([1, -2, 7, 4], 'i32', [4]);
    const mask = b.less(ints, b.constant(3, 'i32'));
    const sel = b.where(mask, b.mul(ints, b.constant(10, 'i32')), b.neg(ints));
    const g = b.build({ y: b.add(x, sel), m: mask, k: b.cast(mask, 'i32'), f: b.cast(b.sub(ints, b.constant(1, 'i32')), 'f32') });
    const r = run(g, [foldConstantsPass]);
    expect(r.graph.output('m').op).toBe('constant');
    expect(r.graph.output('m').dtype).toBe('bool');
    expect(r.graph.output('m').attrs.values).toEqual([1, 1, 0, 0]);
    expect(r.graph.output('k').attrs.values).toEqual([1, 1, 0, 0]);
    expect(r.graph.output('f').attrs.values).toEqual([0, -3, 6, 3]);
    expect(r.graph.output('y').inputs.map((n) => n.op).sort()).toEqual(['constant', 'input']);
    expectSameOutputs(g, r.graph);
  });

  it('puts a large result in the weight store, and dce drops the weight it replaced', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 100]);
    const w = b.weight('w', [80, 100], new Rng(1).normals(8000));
    const g = b.build({ y: b.matmul(x, b.transpose(w)) });
    const r = run(g, [foldConstantsPass]);
    const mm = r.graph.outputNodes[0];
    expect(mm.inputs[1].op).toBe('weight');
    expect(mm.inputs[1].attrs.name).toBe('transpose(w)');
    expect(r.graph.weights.size).toBe(2);
    expect(g.weights.size).toBe(1); // the input graph's store is untouched
    expectSameOutputs(g, r.graph);
    const d = run(r.graph, [dcePass]);
    expect(d.graph.weights.size).toBe(1);
    expect(d.report.ofKind('removed')[0].message).toMatch(/dropped 1 unreferenced weight \(32000 bytes\)/);
    expectSameOutputs(g, d.graph);
  });

  it('keeps a large splat as a broadcast scalar, and folds through it', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [100, 100]);
    const big = b.add(b.expand(b.constant(2), [100, 100]), b.constant(3));
    const g = b.build({ y: b.mul(x, b.sqrt(big)) });
    const r = run(g, [foldConstantsPass]);
    const s = r.graph.outputNodes[0].inputs.find((n) => n.op !== 'input')!;
    expect(s.op).toBe('expand');
    expect(s.inputs[0].op).toBe('constant');
    expect(s.inputs[0].attrs.values).toEqual([Math.fround(Math.sqrt(5))]);
    expect(r.graph.weights.size).toBe(0);
    expectSameOutputs(g, r.graph);
    // a broadcast constant alone is already its cheapest form
    expect(run(b.build({ y: b.expand(b.constant(2), [100, 100]) }), [foldConstantsPass]).matches).toEqual({});
  });

  it('does not fold above the size cap', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 100]);
    const w = b.weight('w', [80, 100], new Rng(1).normals(8000));
    const g = b.build({ y: b.matmul(x, b.transpose(w)) });
    const r = run(g, [foldConstantsPass], { maxFoldElements: 5000 });
    expect(r.matches).toEqual({});
    expect(r.graph).toBe(g);
  });

  it('does not fold a node that reads a graph input', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4]);
    const g = b.build({ y: b.add(x, b.constant(2)), z: b.reshape(x, [2, 2]) });
    const r = run(g, [foldConstantsPass]);
    expect(r.matches).toEqual({});
    expect(r.graph).toBe(g);
  });

  it('does not decode quantized weights, duplicate shared weights, or fold symbolic shapes', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 64]);
    const q = b.weight(quantizeWeight('q', [64, 64], new Rng(2).normals(4096), { bits: 4, groupSize: 32 }));
    const w = b.weight('w', [96, 64], new Rng(3).normals(96 * 64));
    const s = b.input('s', 'f32', ['seq', 4]);
    const g = b.build({
      a: b.matmul(x, b.transpose(q)), // quantized: not decoded
      c: b.add(b.matmul(x, b.transpose(w)), b.matmul(x, w, { transB: true })), // w is shared: not copied
      e: b.add(s, b.expand(b.constant([1, 2, 3, 4], 'f32', [4]), ['seq', 4])), // symbolic result shape
    });
    const r = run(g, [foldConstantsPass]);
    expect(r.matches).toEqual({});
    expect(r.graph).toBe(g);
  });

  it('leaves a gather with an out-of-range constant index to run time', () => {
    const b = new GraphBuilder();
    const table = b.constant([1, 2, 3, 4, 5, 6], 'f32', [3, 2]);
    const g = b.build({ y: b.gather(table, b.constant([0, 5], 'i32', [2])) });
    expect(run(g, [foldConstantsPass]).graph).toBe(g);
  });

  it('folds gathers from small weights (an embedding lookup at a constant id)', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 4]);
    const emb = b.weight('emb', [10, 4], new Rng(4).normals(40));
    const g = b.build({ y: b.add(x, b.gather(emb, b.constant([3, 1], 'i32', [2]))) });
    const r = run(g, [foldConstantsPass, dcePass]);
    expect(r.graph.weights.size).toBe(0);
    expect(count(r.graph, 'constant')).toBe(1);
    expectSameOutputs(g, r.graph);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('simplify', () => {
  it('removes identity arithmetic: x*1, 1*x, x+0, x-0, x/1, neg(neg x)', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 3]);
    const one = b.constant(1);
    const y = b.div(b.sub(b.add(b.mul(one, b.mul(x, 1)), 0), 0), 1);
    const g = b.build({ y: b.exp(b.neg(b.neg(y))) });
    const r = run(g, [simplifyPass]);
    expect(opsOf(r.graph)).toEqual(['input', 'exp']);
    expect(r.matches).toEqual({ 'mul-one': 2, 'add-zero': 1, 'sub-zero': 1, 'div-one': 1, 'neg-neg': 1 });
    expectSameOutputs(g, r.graph);
  });

  it('does not drop a 1 or 0 that broadcasts x to a larger shape', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 4]);
    const ones = b.constant(1, 'f32', [2, 3, 4]);
    const zeros = b.constant(0, 'f32', [2, 1, 1]);
    const g = b.build({ y: b.mul(x, ones), z: b.add(zeros, x) });
    const r = run(g, [simplifyPass]);
    expect(r.matches).toEqual({});
    expect(r.graph).toBe(g);
    expect(r.graph.output('y').shape).toEqual([2, 3, 4]);
  });

  it('removes no-op and chained reshapes, transposes and expands', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 3, 4]);
    const r1 = b.reshape(b.reshape(b.reshape(x, [6, 4]), [4, 6]), [2, 12]);
    const same = b.reshape(x, [2, 3, 4]);
    const t = b.transpose(b.transpose(x, [1, 2, 0]), [2, 0, 1]); // composes to the identity
    const t2 = b.transpose(b.transpose(x, [1, 0, 2]), [0, 2, 1]);
    const id = b.transpose(x, [0, 1, 2]);
    const e = b.expand(b.expand(b.input('v', 'f32', [4]), [3, 4]), [2, 3, 4]);
    const g = b.build({ r1, same, t, t2, id, e, ee: b.expand(x, [2, 3, 4]) });
    const r = run(g, [simplifyPass]);
    expect(r.graph.output('r1').inputs[0]).toBe(x);
    expect(r.graph.output('same')).toBe(x);
    expect(r.graph.output('t')).toBe(x);
    expect(r.graph.output('t2').op).toBe('transpose');
    expect(r.graph.output('t2').attrs.perm).toEqual([1, 2, 0]);
    expect(r.graph.output('t2').inputs[0]).toBe(x);
    expect(r.graph.output('id')).toBe(x);
    expect(r.graph.output('e').inputs[0].op).toBe('input');
    expect(r.graph.output('ee')).toBe(x);
    expect(r.matches).toMatchObject({ 'reshape-reshape': 2, 'reshape-noop': 1, 'transpose-transpose': 2, 'transpose-identity': 1, 'expand-expand': 1, 'expand-noop': 1 });
    expectSameOutputs(g, r.graph);
  });

  it('removes no-op casts and exact cast chains, but not lossy ones', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4]);
    const h = b.input('h', 'f16', [4]);
    const m = b.input('m', 'bool', [4]);
    const g = b.build({
      same: b.cast(x, 'f32'),
      widen: b.cast(b.cast(h, 'f32'), 'i32'), // f16 -> f32 is exact: cast(h, i32)
      back: b.cast(b.cast(h, 'f32'), 'f16'), // -> h
      flags: b.cast(b.cast(m, 'i32'), 'f32'), // bool -> i32 is exact
      lossy: b.cast(b.cast(x, 'f16'), 'f32'), // f32 -> f16 rounds: must stay
      trunc: b.cast(b.cast(x, 'i32'), 'f32'), // truncation: must stay
    });
    const r = run(g, [simplifyPass]);
    expect(r.graph.output('same')).toBe(x);
    expect(r.graph.output('widen').inputs[0]).toBe(h);
    expect(r.graph.output('back')).toBe(h);
    expect(r.graph.output('flags').inputs[0]).toBe(m);
    expect(r.graph.output('lossy').inputs[0].op).toBe('cast');
    expect(r.graph.output('trunc').inputs[0].op).toBe('cast');
    expectSameOutputs(g, r.graph);
  });

  it('folds transposes of the last two axes into matmul operands', () => {
    const b = new GraphBuilder();
    const a = b.input('a', 'f32', [2, 4, 3]);
    const w = b.input('w', 'f32', [5, 4]);
    const y = b.matmul(b.transpose(a, [0, 2, 1]), b.transpose(w));
    const g = b.build({ y });
    const r = run(g, [simplifyPass]);
    const mm = r.graph.outputNodes[0];
    expect(mm.op).toBe('matmul');
    expect(mm.inputs).toEqual([a, w]);
    expect(mm.attrs).toEqual({ transA: true, transB: true });
    expect(r.matches).toEqual({ 'matmul-transpose': 1 });
    expectSameOutputs(g, r.graph, { rtol: 1e-6, atol: 1e-6 });
  });

  it('does not fold a transpose that is not of the last two axes into matmul', () => {
    const b = new GraphBuilder();
    const a = b.input('a', 'f32', [4, 2, 3]);
    const c = b.input('c', 'f32', [3, 5]);
    const g = b.build({ y: b.matmul(b.transpose(a, [1, 0, 2]), c) });
    const r = run(g, [simplifyPass]);
    expect(r.matches).toEqual({});
    expect(r.graph.outputNodes[0].inputs[0].op).toBe('transpose');
  });

  it('removes full slices (and full axes of partial ones) and single-operand concats', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4, 6]);
    const full = b.slice(x, { axes: [0, 1], starts: [0, 0], ends: [null, 6] });
    const part = b.slice(x, { axes: [0, 1], starts: [0, 2], ends: [4, 5] });
    const strided = b.slice(x, { axes: [1], starts: [0], ends: [6], steps: [2] }); // the whole axis, but strided: stays
    const g = b.build({ full, part, strided, cat: b.concat([b.exp(x)], 1) });
    const r = run(g, [simplifyPass]);
    expect(r.graph.output('full')).toBe(x);
    expect(r.graph.output('part').attrs.axes).toEqual([1]);
    expect(r.graph.output('strided').op).toBe('slice');
    expect(r.graph.output('cat').op).toBe('exp');
    expect(r.matches).toEqual({ 'slice-full': 2, 'concat-single': 1 });
    expectSameOutputs(g, r.graph);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('cse', () => {
  it('merges weights with identical content, so the nodes above them merge too', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 8]);
    const vals = new Rng(5).normals(64);
    const w1 = b.weight('w1', [8, 8], vals);
    const w2 = b.weight('w2', [8, 8], Float32Array.from(vals));
    const w3 = b.weight('w3', [8, 8], Float32Array.from(vals, (v, i) => (i === 63 ? v + 1 : v))); // differs in one element
    const w4 = b.weight('w4', [4, 16], Float32Array.from(vals)); // same bytes, other shape
    const g = b.build({ y: b.add(b.linear(x, w1), b.linear(x, w2)), z: b.linear(x, w3), u: b.reshape(w4, [8, 8]) });
    expect(g.nodes().filter((n) => n.op === 'matmul')).toHaveLength(3);
    const r = run(g, [csePass, dcePass]);
    const add = r.graph.output('y');
    expect(add.inputs[0]).toBe(add.inputs[1]);
    expect(r.graph.nodes().filter((n) => n.op === 'matmul')).toHaveLength(2);
    expect(r.graph.weights.size).toBe(3);
    expect(r.matches).toEqual({ 'merge-duplicate-weight': 1 });
    expect(r.report.ofPass('cse')[0].message).toBe('merged 1 duplicate weight (w2 = w1)');
    expectSameOutputs(g, r.graph);
  });

  it('leaves a graph without duplicates alone', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 8]);
    const g = b.build({ y: b.linear(x, b.weight('w', [8, 8], new Rng(6).normals(64))) });
    expect(run(g, [csePass]).graph).toBe(g);
  });
});

describe('dce', () => {
  it('keeps the signature: unused inputs stay and are reported', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2]);
    b.input('unused', 'f32', [2]);
    const g = b.build({ y: b.exp(x) });
    const r = run(g, [dcePass]);
    expect(r.graph).toBe(g);
    expect(r.graph.inputs.map((i) => i.attrs.name)).toEqual(['x', 'unused']);
    expect(r.report.ofKind('info')[0].message).toContain('unused');
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('pass manager', () => {
  function smallGraph(): Graph {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 4]);
    const v = b.input('v', 'f32', [4, 4]);
    const w = b.weight('w', [4, 4], new Rng(8).normals(16));
    return b.build({ y: b.add(b.mul(b.matmul(x, b.transpose(v)), b.add(b.constant(0.5), b.constant(0.5))), b.matmul(x, w)) });
  }

  it('resolves presets and comma-separated pass lists', () => {
    expect(resolvePipeline('O0')).toEqual([]);
    expect(resolvePipeline('O1').map((p) => p.name)).toEqual([...PRESETS.O1]);
    expect(resolvePipeline(' simplify , dce ').map((p) => p.name)).toEqual(['simplify', 'dce']);
    for (const level of ['O2', 'O3'] as const) for (const name of PRESETS[level]) expect(PASSES[name]).toBeDefined();
    for (const p of Object.values(PASSES)) expect(p.description.length).toBeGreaterThan(10);
  });

  it('rejects an unknown pass name with a UsageError listing the known ones', () => {
    expect(() => resolvePipeline('simplify,fuse-everything')).toThrow(UsageError);
    expect(() => resolvePipeline('simplify,fuse-everything')).toThrow(/unknown pass 'fuse-everything'; known passes: fold-constants, simplify, .*plan-memory/);
    expect(() => resolvePipeline('toString')).toThrow(UsageError);
    expect(() => runPasses(smallGraph(), 'O1', { printIrAfter: ['nope'] })).toThrow(UsageError);
  });

  it('times each pass and prints the IR after the passes asked for', () => {
    const printed: string[] = [];
    const r = runPasses(smallGraph(), 'O1', { printIrAfter: ['simplify'], print: (t) => printed.push(t) });
    expect(r.timings.map((t) => t.name)).toEqual([...PRESETS.O1]);
    for (const t of r.timings) expect(t.ms).toBeGreaterThanOrEqual(0);
    expect(printed).toHaveLength(1);
    expect(printed[0]).toContain('IR after simplify');
    expect(printed[0]).toMatch(/matmul\(%\d+, %\d+\) \{transA=false, transB=true\}/);
    const all: string[] = [];
    runPasses(smallGraph(), 'O1', { printIrAfter: 'all', print: (t) => all.push(t) });
    expect(all).toHaveLength(PRESETS.O1.length);
  });

  it('verifies the graph after every pass and names the pass that broke it', () => {
    const dropWeights: Pass = { name: 'drop-weights', description: 'a broken pass', run: (g) => g.withOutputs(g.outputs, new WeightStore()) };
    expect(() => runPasses(smallGraph(), [simplifyPass, dropWeights], { verify: true })).toThrow(/graph after pass 'drop-weights' failed verification:\n.*not in the weight store/);
    // verification on by default under vitest; off on request
    expect(() => runPasses(smallGraph(), [dropWeights])).toThrow(VerifyError);
    expect(() => runPasses(smallGraph(), [dropWeights], { verify: false })).not.toThrow();
  });

  it('names the pass when one of its rules is ill-typed', () => {
    const bad = rewritePass({ name: 'bad-pass', description: 'ill-typed', rules: [{ name: 'mul-to-sum', root: 'mul', apply: ({ node }) => makeNode('sum', [node], { axes: [0] }) }] });
    expect(() => runPasses(smallGraph(), [bad])).toThrow(/in pass 'bad-pass': rewrite rule 'mul-to-sum' replaced a f32\[2,4\] node with a f32\[4\] one/);
  });

  it('hands passes the device profile and options', () => {
    const seen: unknown[] = [];
    const probe: Pass = { name: 'probe', description: 'records its context', run: (g, ctx) => (seen.push(ctx.device.name, ctx.options.device, ctx.options.k), g) };
    runPasses(smallGraph(), [probe], { device: discreteGpuProfile, options: { k: 3 } });
    expect(seen).toEqual(['discrete-gpu', discreteGpuProfile, 3]);
    runPasses(smallGraph(), [probe]);
    expect(seen[3]).toBe('cpu');
  });

  it('O1 optimizes a small graph and is idempotent', () => {
    const g = smallGraph();
    const r1 = runPasses(g, 'O1');
    expect(r1.matches).toMatchObject({ 'fold-constant': 1, 'matmul-transpose': 1, 'mul-one': 1 });
    expect(opsOf(r1.graph).sort()).toEqual(['add', 'input', 'input', 'matmul', 'matmul', 'weight']);
    expectSameOutputs(g, r1.graph, { rtol: 1e-6, atol: 1e-6 });
    const r2 = runPasses(r1.graph, 'O1');
    expect(r2.graph).toBe(r1.graph);
    expect(r2.matches).toEqual({});
  });

  it('O1 on a Llama graph: merges the identical norm weights, keeps the outputs, and is idempotent', () => {
    const g = buildLlama(tinyLlama, randomLlamaWeights(tinyLlama, 3));
    const r1 = runPasses(g, 'O1');
    // every RMSNorm scale of a fresh model is all ones: one entry remains
    const norms = r1.graph.nodes().filter((n) => n.op === 'weight' && n.shape.length === 1);
    expect(norms).toHaveLength(1);
    expect(r1.graph.weights.size).toBe(g.weights.size - (2 * tinyLlama.nLayers + 1) + 1);
    expectSameOutputs(g, r1.graph, { rtol: 0, atol: 0 }, llamaInputs());
    const r2 = runPasses(r1.graph, 'O1');
    expect(r2.graph.outputNodes.every((n, i) => n === r1.graph.outputNodes[i])).toBe(true);
    expect(r2.graph).toBe(r1.graph);
  });

  it('O1 preserves the semantics of random graphs (differential, property)', () => {
    fc.assert(
      fc.property(arbGraphCase({ maxSteps: 12 }), (c) => {
        const r = runPasses(c.graph, 'O1', { verify: true });
        const before = runGraph(c.graph, c.inputs, { bindings: c.bindings });
        const after = runGraph(r.graph, c.inputs, { bindings: c.bindings });
        for (const o of c.graph.outputs) {
          const diff = compareTensors(after[o.name], before[o.name], { rtol: 1e-4, atol: 1e-5 });
          if (diff) throw new Error(`output ${o.name}: ${diff}`);
        }
        const again = runPasses(r.graph, 'O1', { verify: true });
        return again.graph.outputNodes.every((n, i) => n === r.graph.outputNodes[i]);
      }),
      { numRuns: 100, seed: 20240611 },
    );
  });
});
