/**
 * Reverse-mode autodiff (src/autodiff): gradients of random graphs and of tiny Llama, GPT-2 and BERT models against
 * finite differences, covering every differentiable op; the rules at the points the random graphs avoid (kinks and
 * ties); errors; Adam; and training a tiny Llama until it has learned a repeated sequence.
 * Set AUTODIFF_CASES to check more random graphs (e.g. 2000).
 */
import { describe, expect, it } from 'vitest';
import { Adam } from '../src/autodiff/adam.js';
import { gradientGraph, gradientName } from '../src/autodiff/gradient.js';
import { crossEntropy, withCrossEntropyLoss } from '../src/autodiff/losses.js';
import { Trainer } from '../src/autodiff/trainer.js';
import { VJP_RULES } from '../src/autodiff/vjp-rules.js';
import { InputError, UnsupportedOpError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { getOpDef, OP_NAMES, COMPARE_OPS } from '../src/ir/ops.js';
import { quantizeWeight } from '../src/ir/weights.js';
import { buildBert, randomBertWeights } from '../src/models/bert.js';
import { buildGpt2, randomGpt2Weights } from '../src/models/gpt2.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { checkGradients } from './support/gradient-check.js';
import { buildRandomGraph, type GraphCase } from './support/random-graph.js';
import { expectThrown } from './support/expect-thrown.js';

/** Expects `fn` to throw a `type` whose message matches `message`. */
function throwsMatching<E extends Error>(fn: () => unknown, type: abstract new (...args: never[]) => E, message: RegExp): void {
  expect(expectThrown(fn, type).message).toMatch(message);
}

const CASES = Number(process.env.AUTODIFF_CASES ?? 200);
/** Offset of the case seeds (FUZZ_SEED, as the fast-check properties use it); a failure names its case's seed. */
const SEED_BASE = Number(process.env.FUZZ_SEED ?? 0);

/** Ops with no derivative to take: leaves, comparisons (bool results), `range`, and `fused` (made after autodiff). */
// kv_quantize (what a quantized KV cache reads back) is piecewise constant, and only the CPU reference of an int8/int4
// KV cache introduces it
const NOT_DIFFERENTIABLE = new Set<string>(['input', 'weight', 'constant', 'range', ...COMPARE_OPS, 'fused', 'kv_quantize']);

describe('gradientGraph against finite differences', () => {
  it('has a rule for every op a front end can write that has a derivative', () => {
    expect(OP_NAMES.filter((op) => !NOT_DIFFERENTIABLE.has(op) && !VJP_RULES[op])).toEqual([]);
    expect(Object.keys(VJP_RULES).filter((op) => NOT_DIFFERENTIABLE.has(op))).toEqual([]);
    expect(getOpDef('fused').category).toBe('fused');
  });

  it(`matches on ${CASES} random graphs, covering every differentiable op`, () => {
    const covered = new Set<string>();
    let checked = 0;
    let rejected = 0;
    let symbolic = 0;
    const failures: string[] = [];
    for (let seed = 1; checked < CASES && seed <= CASES * 2; seed++) {
      const c = buildRandomGraph((SEED_BASE + seed * 7919) >>> 0, { f16Casts: false, maxElements: 256, maxSteps: 12 });
      const r = checkGradients(c);
      if (r.skipped) {
        if (r.skipped.startsWith('a kink')) rejected++;
        continue;
      }
      checked++;
      if (Object.keys(c.bindings).length) symbolic++;
      for (const op of r.covered) covered.add(op);
      for (const f of r.failures) failures.push(`buildRandomGraph(${c.seed}, { f16Casts: false, maxElements: 256, maxSteps: 12 }): ${f}`);
    }
    expect(failures).toEqual([]);
    expect(checked).toBe(CASES);
    // the input generator finds smooth points; a case it cannot is dropped, and that must stay rare
    expect(rejected).toBeLessThan(CASES / 20);
    expect(symbolic).toBeGreaterThan(CASES / 10);
    const variants = [
      'gelu:none', 'gelu:tanh', 'rope:interleaved', 'rope:half', 'slice:strided', 'gather:embedding',
      'matmul:batch-broadcast', 'matmul:transposed', 'attention:gqa', 'attention:causal', 'attention:mask-bool',
      'attention:mask-float', 'add:broadcast', 'mul:broadcast', 'sub:broadcast', 'div:broadcast', 'weight:dense', 'weight:encoded',
    ];
    expect([...Object.keys(VJP_RULES), ...variants].filter((op) => !covered.has(op))).toEqual([]);
  }, 120_000 * Math.max(1, CASES / 200)); // a guard against hangs, scaled for AUTODIFF_CASES (no timing is asserted)
});

/** A generated-case-shaped wrapper of a model graph, for checkGradients. */
function modelCase(graph: GraphCase['graph'], inputs: Record<string, Tensor>, seed: number): GraphCase {
  return { graph, inputs, seed, steps: 0, bindings: {} };
}

const i32 = (shape: number[], values: number[]): Tensor => Tensor.from('i32', shape, values);

describe('gradients of tiny models against finite differences', () => {
  it('Llama (GQA, RoPE, RMSNorm, SwiGLU, KV past)', () => {
    const c: LlamaConfig = { dim: 8, hiddenDim: 12, nLayers: 1, nHeads: 2, nKvHeads: 1, vocabSize: 10, seqLen: 16, sharedClassifier: false };
    const g = buildLlama(c, randomLlamaWeights(c, 3));
    const past = new Rng(5);
    const inputs = {
      tokens: i32([1, 3], [1, 4, 7]),
      positions: i32([3], [2, 3, 4]),
      'past_k.0': new Tensor('f32', [1, 2, 1, 4], past.uniforms(8, -1, 1)),
      'past_v.0': new Tensor('f32', [1, 2, 1, 4], past.uniforms(8, -1, 1)),
    };
    const r = checkGradients(modelCase(g, inputs, 11), { elementsPerLeaf: 3 });
    expect(r.skipped).toBeUndefined();
    expect(r.comparisons).toBeGreaterThan(4 * 13); // ≥ 3 elements and a direction of each of 13 leaves
    expect(r.failures).toEqual([]);
    expect(['rmsnorm', 'rope', 'attention', 'attention:gqa', 'silu', 'gather:embedding', 'concat'].filter((op) => !r.covered.has(op))).toEqual([]);
  });

  it('GPT-2 (LayerNorm, fused QKV, tanh GELU, tied head)', () => {
    const c = { vocabSize: 10, nPositions: 8, nEmbd: 8, nLayer: 1, nHead: 2 };
    const g = buildGpt2(c, randomGpt2Weights(c, 4), { kvCache: false });
    const r = checkGradients(modelCase(g, { tokens: i32([1, 3], [2, 5, 9]), positions: i32([3], [0, 1, 2]) }, 12), { elementsPerLeaf: 3 });
    expect(r.skipped).toBeUndefined();
    expect(r.failures).toEqual([]);
    expect(['layernorm', 'gelu:tanh', 'attention:causal', 'slice'].filter((op) => !r.covered.has(op))).toEqual([]);
  });

  it('BERT (padding mask, erf GELU, pooler)', () => {
    const c = { vocabSize: 10, hiddenSize: 8, numHiddenLayers: 1, numAttentionHeads: 2, intermediateSize: 12, maxPositionEmbeddings: 8 };
    const g = buildBert(c, randomBertWeights(c, 6));
    const inputs = { tokens: i32([1, 3], [3, 1, 8]), token_type_ids: i32([1, 3], [0, 1, 1]), attention_mask: i32([1, 3], [1, 1, 0]), positions: i32([3], [0, 1, 2]) };
    const r = checkGradients(modelCase(g, inputs, 13), { elementsPerLeaf: 3 });
    expect(r.skipped).toBeUndefined();
    expect(r.failures).toEqual([]);
    expect(['layernorm', 'gelu:none', 'attention:mask-bool', 'tanh'].filter((op) => !r.covered.has(op))).toEqual([]);
  });
});

/** d(sum(f(x)·1))/dx for a one-input graph, run on the interpreter. */
function gradOf(build: (b: GraphBuilder, x: ReturnType<GraphBuilder['input']>) => ReturnType<GraphBuilder['input']>, x: number[], shape = [x.length]): number[] {
  const b = new GraphBuilder();
  const xi = b.input('x', 'f32', shape);
  const g = gradientGraph(b.build({ y: build(b, xi) }), { wrt: ['x'], loss: 'y' });
  return runGraph(g, { x: Tensor.from('f32', shape, x) })[gradientName('x')].toArray();
}

describe('rules at kinks and ties (the points the random check avoids)', () => {
  it('relu and abs have derivative 0 at 0', () => {
    expect(gradOf((b, x) => b.relu(x), [-1, 0, 2])).toEqual([0, 0, 1]);
    expect(gradOf((b, x) => b.abs(x), [-1, 0, 2])).toEqual([-1, 0, 1]);
  });

  it('maximum, minimum and max split ties evenly, so maximum(x, x) is the identity', () => {
    expect(gradOf((b, x) => b.maximum(x, b.constant([1, 3], 'f32', [2])), [1, 2])).toEqual([0.5, 0]);
    expect(gradOf((b, x) => b.minimum(x, b.constant([1, 3], 'f32', [2])), [1, 2])).toEqual([0.5, 1]);
    expect(gradOf((b, x) => b.maximum(x, x), [1, -2])).toEqual([1, 1]);
    expect(gradOf((b, x) => b.max(x, [0]), [3, 1, 3])).toEqual([0.5, 0, 0.5]);
    expect(gradOf((b, x) => b.max(b.expand(b.reshape(x, [1, 2]), [3, 2]), [0]), [1, 2], [2])).toEqual([1, 1]);
  });

  it('nothing flows through comparisons and casts to integers; f32 ⇄ f16 casts pass the gradient through', () => {
    expect(gradOf((b, x) => b.add(b.where(b.greater(x, 0), 1, 2), b.cast(b.cast(x, 'i32'), 'f32')), [0.5, -1.5])).toEqual([0, 0]);
    expect(gradOf((b, x) => b.mul(b.cast(b.cast(x, 'f16'), 'f32'), 3), [0.1, 2])).toEqual([3, 3]);
  });

  it('attention rows with every key masked give zero gradients, not NaN', () => {
    const b = new GraphBuilder();
    const q = b.input('q', 'f32', [1, 2, 1, 2]);
    const k = b.input('k', 'f32', [1, 2, 1, 2]);
    const v = b.input('v', 'f32', [1, 2, 1, 2]);
    const mask = b.constant([1, 1, 0, 0], 'bool', [2, 2]); // query 1 sees nothing
    const out = b.attention(q, k, v, { mask }).out;
    const g = gradientGraph(b.build({ y: b.sum(out, [0, 1, 2, 3]) }), { wrt: ['q', 'k', 'v'], loss: 'y' });
    const t = (vals: number[]): Tensor => Tensor.from('f32', [1, 2, 1, 2], vals);
    const res = runGraph(g, { q: t([0.3, -0.2, 0.5, 0.1]), k: t([0.1, 0.4, -0.3, 0.2]), v: t([1, 2, 3, 4]) });
    for (const name of ['q', 'k', 'v']) for (const x of res[gradientName(name)].data) expect(Number.isFinite(x)).toBe(true);
    expect(res[gradientName('q')].toArray().slice(2)).toEqual([0, 0]);
    // only query 0 reads v: each key's value gets that key's probability, in every channel, summing to 1
    const dv = res[gradientName('v')].toArray();
    expect(dv[0]).toBe(dv[1]);
    expect(dv[2]).toBe(dv[3]);
    expect(dv[0] + dv[2]).toBeCloseTo(1, 6);
    expect(dv[0]).toBeGreaterThan(0.3);
  });

  it('keeps the other outputs when asked, after the loss and the gradients', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2]);
    const g = gradientGraph(b.build({ aux: b.neg(x), y: b.sum(b.mul(x, x), [0]) }), { wrt: ['x'], loss: 'y', keepOutputs: true });
    expect(g.outputs.map((o) => o.name)).toEqual(['y', 'grad:x', 'aux']);
    const res = runGraph(g, { x: Tensor.from('f32', [2], [3, -1]) });
    expect(res['grad:x'].toArray()).toEqual([6, -2]);
    expect(res.aux.toArray()).toEqual([-3, 1]);
  });

  it('gives a leaf the loss does not depend on a zero gradient', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2]);
    b.input('unused', 'f32', ['n', 3]);
    const g = gradientGraph(b.build({ y: b.sum(b.exp(x), [0]) }), { wrt: ['x', 'unused'], loss: 'y' });
    const res = runGraph(g, { x: Tensor.from('f32', [2], [0, 1]), unused: Tensor.zeros('f32', [2, 3]) });
    expect(res[gradientName('unused')].toArray()).toEqual([0, 0, 0, 0, 0, 0]);
    expect(res[gradientName('x')].toArray()).toEqual([1, Math.fround(Math.E)]);
  });
});

describe('gradientGraph errors', () => {
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', [2, 4]);
  const ids = b.input('ids', 'i32', [2]);
  const wq = b.weight(quantizeWeight('wq', [4, 4], new Rng(1).uniforms(16, -1, 1), { bits: 4, groupSize: 4 }));
  const y = b.sum(b.matmul(x, wq), [0, 1]);
  const g = b.build({ y, ids: b.add(ids, 1) });

  it('refuses unknown names, integer leaves, non-float losses, and repeated names with InputError', () => {
    throwsMatching(() => gradientGraph(g, { wrt: ['nope'], loss: 'y' }), InputError, /neither an input nor a weight/);
    throwsMatching(() => gradientGraph(g, { wrt: ['ids'], loss: 'y' }), InputError, /only float values have gradients/);
    throwsMatching(() => gradientGraph(g, { wrt: ['x'], loss: 'ids' }), InputError, /not a float tensor/);
    throwsMatching(() => gradientGraph(g, { wrt: ['x', 'x'], loss: 'y' }), InputError, /twice/);
    throwsMatching(() => gradientGraph(g, { wrt: ['x'], loss: 'nope' }), InputError, /no output 'nope'/);
  });

  it('refuses a quantized weight unless the straight-through estimator is asked for', () => {
    throwsMatching(() => gradientGraph(g, { wrt: ['wq'], loss: 'y' }), InputError, /quantized-encoded.*ste/);
    const res = runGraph(gradientGraph(g, { wrt: ['wq'], loss: 'y', encodedWeights: 'ste' }), { x: Tensor.from('f32', [2, 4], [1, 2, 3, 4, 5, 6, 7, 8]), ids: i32([2], [0, 0]) });
    // d sum(x·W)/dW[k, n] = Σ_m x[m, k]
    expect(res[gradientName('wq')].toArray()).toEqual([6, 6, 6, 6, 8, 8, 8, 8, 10, 10, 10, 10, 12, 12, 12, 12]);
  });

  it('refuses an op it has no rule for (a fused node) with UnsupportedOpError', () => {
    const fb = new GraphBuilder();
    const xi = fb.input('x', 'f32', [3]);
    const fused = fb.op('fused', [xi], { kind: 'elementwise', steps: [{ op: 'exp', args: [0], attrs: {} }] });
    throwsMatching(() => gradientGraph(fb.build({ y: fused }), { wrt: ['x'], loss: 'y' }), UnsupportedOpError, /no gradient rule for 'fused'/);
  });
});

describe('crossEntropy', () => {
  it('is the mean negative log-probability of the targets, and its gradient is softmax - onehot', () => {
    const b = new GraphBuilder();
    const logits = b.input('logits', 'f32', [2, 3]);
    const targets = b.input('targets', 'i32', [2]);
    const g = gradientGraph(b.build({ loss: crossEntropy(logits, targets) }), { wrt: ['logits'], loss: 'loss' });
    const z = [1, 2, 3, 0, 0, 0];
    const res = runGraph(g, { logits: Tensor.from('f32', [2, 3], z), targets: i32([2], [2, 0]) });
    const lse = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3));
    expect(res.loss.data[0]).toBeCloseTo((lse - 3 + Math.log(3)) / 2, 6);
    const p = [Math.exp(1 - lse), Math.exp(2 - lse), Math.exp(3 - lse), 1 / 3, 1 / 3, 1 / 3];
    const expected = p.map((v, i) => (v - (i === 2 || i === 3 ? 1 : 0)) / 2);
    res[gradientName('logits')].toArray().forEach((v, i) => expect(v).toBeCloseTo(expected[i], 6));
  });
});

describe('Adam', () => {
  it('takes the bias-corrected first step of lr·sign(g), and rejects bad hyper-parameters', () => {
    const p = { w: Float32Array.from([1, -2]) };
    const adam = new Adam({ lr: 0.1 });
    adam.step(p, { w: [4, -0.5] });
    expect(Array.from(p.w)).toEqual([Math.fround(1 - 0.1 * (4 / (4 + 1e-8))), Math.fround(-2 + 0.1 * (0.5 / (0.5 + 1e-8)))]);
    expect(adam.steps).toBe(1);
    throwsMatching(() => new Adam({ lr: 0 }), InputError, /lr = 0/);
    throwsMatching(() => new Adam({ beta2: 1 }), InputError, /beta2/);
    throwsMatching(() => adam.step(p, { w: [1] }), InputError, /gradient/);
  });

  it('minimizes a quadratic', () => {
    const p = { w: Float32Array.from([3, -4, 0.5]) };
    const adam = new Adam({ lr: 0.05 });
    for (let t = 0; t < 500; t++) adam.step(p, { w: Array.from(p.w, (v, i) => 2 * (v - i)) }); // min at [0, 1, 2]
    Array.from(p.w).forEach((v, i) => expect(Math.abs(v - i)).toBeLessThan(0.02));
  });
});

describe('training a tiny Llama', () => {
  it('learns a repeated token sequence: the loss falls far below its start, and greedy predictions follow it', () => {
    const c: LlamaConfig = { dim: 16, hiddenDim: 32, nLayers: 2, nHeads: 2, nKvHeads: 1, vocabSize: 16, seqLen: 16, sharedClassifier: false };
    const graph = withCrossEntropyLoss(buildLlama(c, randomLlamaWeights(c, 7), { kvCache: false }));
    const pattern = [3, 9, 1, 12, 6];
    const seq = Array.from({ length: 13 }, (_v, i) => pattern[i % pattern.length]);
    const tokens = i32([1, 12], seq.slice(0, 12));
    const targets = i32([1, 12], seq.slice(1));
    const positions = i32([12], Array.from({ length: 12 }, (_v, i) => i));
    const trainer = new Trainer(graph, { loss: 'loss', adam: { lr: 1e-2 } });
    const losses: number[] = [];
    for (let step = 0; step < 100; step++) losses.push(trainer.step({ tokens, targets, positions }));
    expect(losses[0]).toBeGreaterThan(1);
    expect(losses[99]).toBeLessThan(losses[0] / 10);
    // the trained weights, back in the original graph, predict every next token
    const out = runGraph(trainer.trainedGraph(), { tokens, targets, positions });
    const logits = out.logits.data;
    const argmax = Array.from({ length: 12 }, (_v, i) => {
      let best = 0;
      for (let j = 1; j < c.vocabSize; j++) if (logits[i * c.vocabSize + j] > logits[i * c.vocabSize + best]) best = j;
      return best;
    });
    expect(argmax).toEqual(seq.slice(1));
    expect(out.loss.data[0]).toBeCloseTo(trainer.step({ tokens, targets, positions }), 5);
  });
});
