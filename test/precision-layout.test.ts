/**
 * The mixed-precision and layout passes: differential tests (the graph runs on the CPU interpreter before and after;
 * loose tolerance where f16 is used, exact equality for layout changes), report contents, user overrides, the dtypes
 * of graph inputs and outputs, idempotence, and cases where the passes must not fire.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../src/errors.js';
import { GraphBuilder } from '../src/ir/builder.js';
import type { DType } from '../src/ir/dtype.js';
import type { Graph } from '../src/ir/graph.js';
import { makeNode, type AttrValue, type Node } from '../src/ir/node.js';
import { decodeWeight, quantizeWeight, type WeightEntry } from '../src/ir/weights.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { cpuProfile, discreteGpuProfile, lavapipeProfile, type DeviceProfile } from '../src/ir/device-profile.js';
import { dcePass } from '../src/passes/dce.js';
import { layoutPass, preferredWeightLayout, transposeWeightEntry, weightLayoutOrigin } from '../src/passes/layout.js';
import { F32_SENSITIVE_OPS, mixedPrecisionPass, weightInLayer, type PrecisionOptions } from '../src/passes/mixed-precision.js';
import type { Pass } from '../src/passes/pass.js';
import { runPasses, type PipelineResult } from '../src/passes/pipeline.js';
import { simplifyPass } from '../src/passes/simplify.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { expectSameOutputs, randomInputs } from './support/differential.js';
import { arbGraphCase, compareTensors } from './support/random-graph.js';

// ---------------------------------------------------------------------------------------------------------------
// helpers

/** Random inputs: every element uniform in [-1, 1). */
function inputsFor(g: Graph): Record<string, Tensor> {
  return randomInputs(g, 7, (_dtype, rng) => rng.next() * 2 - 1);
}

function run(g: Graph, passes: readonly Pass[], device: DeviceProfile, options: Record<string, unknown> = {}): PipelineResult {
  return runPasses(g, passes, { verify: true, device, options });
}

function precision(p: PrecisionOptions): Record<string, unknown> {
  return { precision: p };
}

/** Largest |a - b| over the largest |b|, per output; asserts dtypes and shapes are equal. */
function relativeError(before: Graph, after: Graph, inputs: Record<string, Tensor>): number {
  const a = runGraph(before, inputs);
  const b = runGraph(after, inputs);
  let worst = 0;
  for (const o of before.outputs) {
    const x = b[o.name];
    const y = a[o.name];
    expect(x.dtype, `output '${o.name}' dtype`).toBe(y.dtype);
    expect(x.shape).toEqual(y.shape);
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < y.data.length; i++) {
      diff = Math.max(diff, Math.abs(x.numbers[i] - y.numbers[i]));
      scale = Math.max(scale, Math.abs(y.numbers[i]));
    }
    worst = Math.max(worst, scale ? diff / scale : diff);
  }
  return worst;
}

/** Runs both graphs on the same inputs and expects bit-identical outputs. */
function expectExact(before: Graph, after: Graph, inputs: Record<string, Tensor> = inputsFor(before)): void {
  expectSameOutputs(before, after, { rtol: 0, atol: 0 }, inputs);
}

function nodesOf(g: Graph, op: string): Node[] {
  return g.nodes().filter((n) => n.op === op);
}

function entryOf(g: Graph, w: Node): WeightEntry {
  return g.weights.get(String(w.attrs.id));
}

/** The weight a matmul reads as B (through a cast, if any). */
function weightOperand(g: Graph, mm: Node): WeightEntry | undefined {
  let b = mm.inputs[1];
  if (b.op === 'cast') b = b.inputs[0];
  return b.op === 'weight' ? entryOf(g, b) : undefined;
}

function messages(r: PipelineResult, pass: string): string[] {
  return r.report.ofPass(pass).map((e) => e.message);
}

function signature(g: Graph): { inputs: [string, DType][]; outputs: [string, DType, string][] } {
  return {
    inputs: g.inputs.map((i) => [String(i.attrs.name), i.dtype]),
    outputs: g.outputs.map((o) => [o.name, o.node.dtype, o.node.shape.join(',')]),
  };
}

/**
 * New `cast(cast(x: f32, f16), f32)` pairs in `after` (not already in `before`): the lossy pair simplify must not
 * remove, so the pass must not create it.
 */
function lossyCastPairs(after: Graph, before?: Graph): Node[] {
  const old = new Set(before?.nodes() ?? []);
  return after
    .nodes()
    .filter((n) => !old.has(n) && n.op === 'cast' && n.dtype === 'f32' && n.inputs[0].op === 'cast' && n.inputs[0].dtype === 'f16' && n.inputs[0].inputs[0].dtype === 'f32');
}

/** A small MLP: `gelu(x·W1 + b1)·W2 + b2`, weights stored [K, N] (transB = false). */
function mlp(seed = 3): Graph {
  const r = new Rng(seed);
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', [4, 16]);
  const w1 = b.weight('fc1.weight', [16, 32], r.normals(16 * 32, 0.25));
  const b1 = b.weight('fc1.bias', [32], r.normals(32, 0.1));
  const w2 = b.weight('fc2.weight', [32, 8], r.normals(32 * 8, 0.25));
  const b2 = b.weight('fc2.bias', [8], r.normals(8, 0.1));
  const h = b.gelu(b.add(b.matmul(x, w1), b1));
  return b.build({ y: b.add(b.matmul(h, w2), b2) });
}

const tinyLlama: LlamaConfig = { dim: 16, hiddenDim: 32, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 24, seqLen: 16, sharedClassifier: false };

function llamaInputs(c: LlamaConfig = tinyLlama): Record<string, Tensor> {
  const hs = c.dim / c.nHeads;
  const inputs: Record<string, Tensor> = { tokens: Tensor.from('i32', [1, 3], [1, 5, 7]), positions: Tensor.from('i32', [3], [0, 1, 2]) };
  for (let l = 0; l < c.nLayers; l++) {
    inputs[`past_k.${l}`] = Tensor.zeros('f32', [1, 0, c.nKvHeads, hs]);
    inputs[`past_v.${l}`] = Tensor.zeros('f32', [1, 0, c.nKvHeads, hs]);
  }
  return inputs;
}

function llama(c: LlamaConfig = tinyLlama): Graph {
  return buildLlama(c, randomLlamaWeights(c, 5));
}

// ---------------------------------------------------------------------------------------------------------------
// mixed precision

describe('mixed-precision: driven by the device profile', () => {
  it('keeps everything f32 on a device without f16, and says so', () => {
    const g = mlp();
    const r = run(g, [mixedPrecisionPass], cpuProfile);
    expect(r.graph).toBe(g);
    expect(r.report.ofKind('precision')).toHaveLength(1);
    expect(messages(r, 'mixed-precision')[0]).toMatch(/f16 unavailable on cpu/);
  });

  it('keeps everything f32 where f16 is slower (lavapipe), and says so', () => {
    const g = mlp();
    const r = run(g, [mixedPrecisionPass], lavapipeProfile);
    expect(r.graph).toBe(g);
    expect(messages(r, 'mixed-precision')).toEqual([expect.stringMatching(/f16 slower on this device \(lavapipe/)]);
  });

  it('ignores f16 overrides where f16 is unavailable', () => {
    const g = mlp();
    const r = run(g, [mixedPrecisionPass], cpuProfile, precision({ default: 'f16', ops: { matmul: 'f16' } }));
    expect(r.graph).toBe(g);
    expect(messages(r, 'mixed-precision')[0]).toMatch(/f16 unavailable.*ignored/);
  });

  it('runs a small MLP in f16 on a fast-f16 device: matmuls, weights, bias add and gelu go f16; the output stays f32', () => {
    const g = mlp();
    const r = run(g, [mixedPrecisionPass], discreteGpuProfile);
    const out = r.graph;
    expect(signature(out)).toEqual(signature(g));
    const mms = nodesOf(out, 'matmul');
    expect(mms.map((n) => n.dtype)).toEqual(['f16', 'f16']);
    // weights converted at compile time: new f16 entries holding half bits, no run-time cast of a weight
    for (const mm of mms) {
      expect(mm.inputs[1].op).toBe('weight');
      const e = weightOperand(out, mm)!;
      expect(e.dtype).toBe('f16');
      expect(e.name).toMatch(/@f16$/);
      expect(e.data.values).toBeInstanceOf(Uint16Array);
    }
    expect(nodesOf(out, 'gelu')[0].dtype).toBe('f16');
    // the last add feeds the graph output: residual-stream rule keeps it f32, the first (bias) add goes f16
    expect(nodesOf(out, 'add').map((n) => n.dtype).sort()).toEqual(['f16', 'f32']);
    expect(out.outputs[0].node.dtype).toBe('f32');
    expect(lossyCastPairs(out)).toEqual([]);
    const err = relativeError(g, out, inputsFor(g));
    expect(err).toBeGreaterThan(0);
    expect(err).toBeLessThan(2e-2);
    const msgs = messages(r, 'mixed-precision');
    expect(msgs).toContainEqual(expect.stringMatching(/^matmul → f16: f16 is faster on discrete-gpu \(2 nodes\)/));
    expect(msgs).toContainEqual(expect.stringMatching(/^add \(residual stream\) → f32/));
    expect(msgs).toContainEqual(expect.stringMatching(/converted 3 weights to f16 at compile time/));
    expect(msgs).toContainEqual(expect.stringMatching(/inserted \d+ casts? at f32\/f16 boundaries/));
  });

  it('keeps softmax, norms, reductions, exp/log/pow and attention f32 under auto, each with its reason', () => {
    const r0 = new Rng(11);
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 8]);
    const w = b.weight('proj', [8, 8], r0.normals(64, 0.3));
    const y = b.matmul(x, w);
    const s = b.softmax(y);
    const ln = b.layernorm(y, b.weight('ln.w', [8], new Float32Array(8).fill(1)), b.weight('ln.b', [8], new Float32Array(8)));
    const rn = b.rmsnorm(b.tanh(y), b.weight('rn.w', [8], new Float32Array(8).fill(1)));
    const e = b.exp(b.mul(y, 0.5));
    const lg = b.log(b.add(b.abs(y), 1));
    const pw = b.pow(b.add(b.abs(y), 1), 1.5);
    const sm = b.sum(y, [1]);
    const mn = b.mean(y, [1]);
    const q = b.reshape(y, [1, 2, 2, 4]);
    const att = b.attention(q, q, q, { causal: true }).out;
    const g = b.build({ s, ln, rn, e, lg, pw, sm, mn, att });
    const r = run(g, [mixedPrecisionPass], discreteGpuProfile);
    const out = r.graph;
    expect(signature(out)).toEqual(signature(g));
    for (const op of ['softmax', 'layernorm', 'rmsnorm', 'exp', 'log', 'pow', 'sum', 'mean', 'attention']) {
      const ns = nodesOf(out, op);
      expect(ns.length, op).toBeGreaterThan(0);
      for (const n of ns) expect(n.dtype, op).toBe('f32');
      expect(messages(r, 'mixed-precision')).toContainEqual(`${op} → f32: ${F32_SENSITIVE_OPS[op as 'softmax']} (1 node)`);
    }
    expect(nodesOf(out, 'matmul')[0].dtype).toBe('f16');
    expect(nodesOf(out, 'tanh')[0].dtype).toBe('f16');
    // the f16 matmul result is cast up once and shared by every f32 consumer; no lossy cast pairs
    const up = nodesOf(out, 'cast').filter((c) => c.dtype === 'f32' && c.inputs[0].op === 'matmul');
    expect(up).toHaveLength(1);
    expect(lossyCastPairs(out)).toEqual([]);
    expect(relativeError(g, out, inputsFor(g))).toBeLessThan(2e-2);
  });

  it('converts constants read in f16 at compile time instead of casting them', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4, 8]);
    const w = b.weight('w', [8, 8], new Rng(2).normals(64, 0.3));
    const y = b.mul(b.matmul(x, w), 0.1);
    const g = b.build({ y: b.add(y, b.input('res', 'f32', [4, 8])) });
    const out = run(g, [mixedPrecisionPass], discreteGpuProfile).graph;
    const mul = nodesOf(out, 'mul')[0];
    expect(mul.dtype).toBe('f16');
    const c = mul.inputs.find((n) => n.op === 'constant')!;
    expect(c.dtype).toBe('f16');
    expect(c.attrs.values).toEqual([0.0999755859375]); // 0.1 rounded to half
    expect(relativeError(g, out, inputsFor(g))).toBeLessThan(2e-2);
  });

  it('runs a Llama in mixed precision: residual stream, norms and attention f32, projections f16, within tolerance', () => {
    const g = llama();
    const r = run(g, [mixedPrecisionPass], discreteGpuProfile);
    const out = r.graph;
    expect(signature(out)).toEqual(signature(g));
    out.inputs.forEach((n, i) => expect(n).toBe(g.inputs[i]));
    for (const n of nodesOf(out, 'matmul')) expect(n.dtype).toBe('f16');
    for (const op of ['rmsnorm', 'attention', 'concat']) for (const n of nodesOf(out, op)) expect(n.dtype, op).toBe('f32');
    // every add of a Llama is on the residual stream
    const adds = nodesOf(out, 'add');
    expect(adds).toHaveLength(2 * tinyLlama.nLayers);
    for (const n of adds) expect(n.dtype).toBe('f32');
    for (const op of ['silu', 'rope']) for (const n of nodesOf(out, op)) expect(n.dtype, op).toBe('f16');
    // the embedding gather feeds the f32 residual stream: the table stays f32, no f16 copy of it
    expect(entryOf(out, nodesOf(out, 'gather')[0].inputs[0]).dtype).toBe('f32');
    expect(lossyCastPairs(out)).toEqual([]);
    expect(relativeError(g, out, llamaInputs())).toBeLessThan(2e-2);
  });

  it('gives a GPT-style bias add (not on the residual stream) f16 while the residual add stays f32', () => {
    const r0 = new Rng(4);
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 8]);
    const h = b.layernorm(x, b.weight('ln.w', [8], new Float32Array(8).fill(1)));
    const proj = b.linear(h, b.weight('proj.w', [8, 8], r0.normals(64, 0.3)), b.weight('proj.b', [8], r0.normals(8, 0.1)));
    const x2 = b.add(x, proj);
    const g = b.build({ y: b.layernorm(x2, b.weight('ln2.w', [8], new Float32Array(8).fill(1))) });
    const out = run(g, [mixedPrecisionPass], discreteGpuProfile).graph;
    const adds = nodesOf(out, 'add');
    const residual = adds.find((n) => n.inputs.includes(x))!;
    expect(residual.dtype).toBe('f32');
    expect(adds.filter((n) => n !== residual).map((n) => n.dtype)).toEqual(['f16']);
    expect(relativeError(g, out, inputsFor(g))).toBeLessThan(2e-2);
  });

  it('keeps a weight read by f32 and f16 ops in both dtypes and reports it (tied embedding)', () => {
    const c = { ...tinyLlama, sharedClassifier: true };
    const g = llama(c);
    const r = run(g, [mixedPrecisionPass, dcePass], discreteGpuProfile);
    const names = r.graph.weights.all().map((e) => e.name);
    expect(names).toContain('tok_embeddings');
    expect(names).toContain('tok_embeddings@f16');
    expect(messages(r, 'mixed-precision')).toContainEqual(expect.stringMatching(/weight 'tok_embeddings' is kept in both f32 and f16/));
    expect(relativeError(g, r.graph, llamaInputs(c))).toBeLessThan(2e-2);
  });

  it('is idempotent: running it twice gives the same output nodes as once', () => {
    for (const g of [mlp(), llama()]) {
      const once = run(g, [mixedPrecisionPass], discreteGpuProfile).graph;
      const twice = run(once, [mixedPrecisionPass], discreteGpuProfile).graph;
      expect(twice.outputNodes).toEqual(once.outputNodes);
      twice.outputNodes.forEach((n, i) => expect(n).toBe(once.outputNodes[i]));
      expect(twice).toBe(once);
      // and compiling the same graph again yields the very same nodes (converted weights are cached per entry)
      const again = run(g, [mixedPrecisionPass], discreteGpuProfile).graph;
      again.outputNodes.forEach((n, i) => expect(n).toBe(once.outputNodes[i]));
    }
  });
});

describe('mixed-precision: user overrides', () => {
  it("forces f16 on lavapipe with default: 'f16' (sensitivity rules still apply)", () => {
    const g = mlp();
    const r = run(g, [mixedPrecisionPass], lavapipeProfile, precision({ default: 'f16' }));
    expect(nodesOf(r.graph, 'matmul').map((n) => n.dtype)).toEqual(['f16', 'f16']);
    expect(nodesOf(r.graph, 'gelu')[0].dtype).toBe('f16');
    const msgs = messages(r, 'mixed-precision');
    expect(msgs[0]).toMatch(/f16 slower on this device \(lavapipe.*but options\.precision asks for f16/);
    expect(msgs).toContainEqual(expect.stringMatching(/^matmul → f16: forced by options\.precision\.default = 'f16'/));
    expect(signature(r.graph)).toEqual(signature(g));
    expect(relativeError(g, r.graph, inputsFor(g))).toBeLessThan(2e-2);
  });

  it('forces only the overridden ops on lavapipe with ops: { matmul: f16 }', () => {
    const g = mlp();
    const r = run(g, [mixedPrecisionPass], lavapipeProfile, precision({ ops: { matmul: 'f16' } }));
    expect(nodesOf(r.graph, 'matmul').map((n) => n.dtype)).toEqual(['f16', 'f16']);
    expect(nodesOf(r.graph, 'gelu')[0].dtype).toBe('f32');
    for (const n of nodesOf(r.graph, 'add')) expect(n.dtype).toBe('f32');
    const msgs = messages(r, 'mixed-precision');
    expect(msgs).toContainEqual('matmul → f16: user override (options.precision.ops.matmul) (2 nodes)');
    expect(msgs).toContainEqual(expect.stringMatching(/^gelu → f32: f16 slower on this device/));
    expect(relativeError(g, r.graph, inputsFor(g))).toBeLessThan(2e-2);
  });

  it('keeps a layer f32 while the others go f16 on a discrete GPU', () => {
    const g = llama();
    const r = run(g, [mixedPrecisionPass], discreteGpuProfile, precision({ layers: { 'layers.1': 'f32' } }));
    const out = r.graph;
    const mms = nodesOf(out, 'matmul');
    const layerOf = (mm: Node): string => weightOperand(out, mm)!.name;
    const inLayer1 = mms.filter((mm) => layerOf(mm).startsWith('layers.1.'));
    const inLayer0 = mms.filter((mm) => layerOf(mm).startsWith('layers.0.'));
    expect(inLayer1).toHaveLength(7);
    expect(inLayer0).toHaveLength(7);
    for (const mm of inLayer1) expect(mm.dtype, layerOf(mm)).toBe('f32');
    for (const mm of inLayer0) expect(mm.dtype, layerOf(mm)).toBe('f16');
    // the layer's activations follow its projections; layer 0's stay f16
    const silus = nodesOf(out, 'silu').map((n) => n.dtype).sort();
    expect(silus).toEqual(['f16', 'f32']);
    // layer 1's weights are not converted
    expect(out.weights.all().some((e) => e.name.startsWith('layers.1.') && e.dtype === 'f16')).toBe(false);
    const msgs = messages(r, 'mixed-precision');
    expect(msgs).toContainEqual(expect.stringMatching(/^layer 'layers\.1' → f32: user override \(options\.precision\.layers\)/));
    expect(lossyCastPairs(out)).toEqual([]);
    expect(signature(out)).toEqual(signature(g));
    expect(relativeError(g, out, llamaInputs())).toBeLessThan(2e-2);
  });

  it('forces a sensitive op to f16 with ops, and single nodes with nodes', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 8]);
    const y = b.matmul(x, b.weight('w', [8, 8], new Rng(9).normals(64, 0.3)));
    const s = b.softmax(y);
    const t = b.tanh(y);
    const g = b.build({ s, t });
    const r1 = run(g, [mixedPrecisionPass], discreteGpuProfile, precision({ ops: { softmax: 'f16' } }));
    expect(nodesOf(r1.graph, 'softmax')[0].dtype).toBe('f16');
    expect(r1.graph.output('s').dtype).toBe('f32');
    const r2 = run(g, [mixedPrecisionPass], discreteGpuProfile, precision({ nodes: new Map([[t, 'f32']]) }));
    expect(nodesOf(r2.graph, 'tanh')[0].dtype).toBe('f32');
    expect(nodesOf(r2.graph, 'matmul')[0].dtype).toBe('f16');
    expect(messages(r2, 'mixed-precision')).toContainEqual(`node tanh#${t.id} → f32: user override (options.precision.nodes) (1 node)`);
    const r3 = run(g, [mixedPrecisionPass], discreteGpuProfile, precision({ nodes: { [y.id]: 'f32' } }));
    expect(nodesOf(r3.graph, 'matmul')[0].dtype).toBe('f32');
  });

  it("with default: 'f32' nothing changes unless an override asks for f16", () => {
    const g = mlp();
    const r = run(g, [mixedPrecisionPass], discreteGpuProfile, precision({ default: 'f32' }));
    expect(r.graph).toBe(g);
    expect(messages(r, 'mixed-precision')).toEqual(["options.precision.default is 'f32': every op stays f32"]);
    const r2 = run(g, [mixedPrecisionPass], discreteGpuProfile, precision({ default: 'f32', ops: { gelu: 'f16' } }));
    expect(nodesOf(r2.graph, 'gelu')[0].dtype).toBe('f16');
    expect(nodesOf(r2.graph, 'matmul').map((n) => n.dtype)).toEqual(['f32', 'f32']);
  });

  it('rejects malformed options with a UsageError naming the field', () => {
    const g = mlp();
    expect(() => run(g, [mixedPrecisionPass], discreteGpuProfile, precision({ default: 'bf16' as 'f16' }))).toThrow(UsageError);
    expect(() => run(g, [mixedPrecisionPass], discreteGpuProfile, precision({ ops: { matmull: 'f16' } as PrecisionOptions['ops'] }))).toThrow(/unknown op 'matmull'/);
    expect(() => run(g, [mixedPrecisionPass], discreteGpuProfile, precision({ layers: { 'layers.0': 'fp16' as 'f16' } }))).toThrow(/layers\['layers\.0'\]/);
  });

  it('matches layer keys at segment boundaries', () => {
    expect(weightInLayer('layers.3.wq', 'layers.3')).toBe(true);
    expect(weightInLayer('model.layers.3.mlp.w1', 'layers.3')).toBe(true);
    expect(weightInLayer('layers.3.wq@f16', 'layers.3.wq')).toBe(true);
    expect(weightInLayer('layers.30.wq', 'layers.3')).toBe(false);
    expect(weightInLayer('xlayers.3.wq', 'layers.3')).toBe(false);
  });
});

describe('mixed-precision on random graphs', () => {
  it('keeps graphs valid and their signatures unchanged, and is idempotent', () => {
    fc.assert(
      fc.property(arbGraphCase({ maxSteps: 12 }), (c) => {
        const r = run(c.graph, [mixedPrecisionPass], discreteGpuProfile);
        expect(signature(r.graph)).toEqual(signature(c.graph));
        expect(lossyCastPairs(r.graph, c.graph)).toEqual([]);
        const out = runGraph(r.graph, c.inputs, { bindings: c.bindings });
        for (const o of c.graph.outputs) expect(out[o.name].dtype).toBe(o.node.dtype);
        const again = run(r.graph, [mixedPrecisionPass], discreteGpuProfile).graph;
        again.outputNodes.forEach((n, i) => expect(n).toBe(r.graph.outputNodes[i]));
      }),
      { numRuns: 60 },
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// layout

function kn(seed = 1): { g: Graph; w: Node; x: Node } {
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', [3, 8]);
  const w = b.weight('proj', [8, 5], new Rng(seed).normals(40, 0.5));
  return { g: b.build({ y: b.matmul(x, w) }), w, x };
}

describe('layout', () => {
  it('stores a [K, N] matmul weight as [N, K] with transB (exact), recording the layout in the name and the report', () => {
    const { g, w } = kn();
    const r = run(g, [layoutPass], discreteGpuProfile);
    const mm = r.graph.output('y');
    expect(mm.op).toBe('matmul');
    expect(mm.attrs.transB).toBe(true);
    const e = entryOf(r.graph, mm.inputs[1]);
    expect(e.name).toBe('proj^T');
    expect(e.shape).toEqual([5, 8]);
    const src = entryOf(g, w);
    expect(weightLayoutOrigin(e)).toEqual({ source: src, perm: [1, 0] });
    const a = decodeWeight(src);
    const t = decodeWeight(e);
    for (let k = 0; k < 8; k++) for (let n = 0; n < 5; n++) expect(t[n * 8 + k]).toBe(a[k * 5 + n]);
    expectExact(g, r.graph);
    expect(r.matches['weight-layout-matmul']).toBe(1);
    const msgs = messages(r, 'layout');
    expect(msgs).toHaveLength(1);
    expect(msgs[0]).toMatch(/^weight 'proj' \[8,5\] → 'proj\^T' \[5,8\]: stored \[N, K\].*3\.6x faster/);
    expect(r.report.ofKind('layout')).toHaveLength(1);
    // dce drops the replaced entry
    const d = run(r.graph, [dcePass], discreteGpuProfile).graph;
    expect(d.weights.all().map((x) => x.name)).toEqual(['proj^T']);
  });

  it('leaves a Llama (weights already [N, K] with transB) unchanged', () => {
    const g = llama();
    const r = run(g, [layoutPass], discreteGpuProfile);
    expect(r.graph).toBe(g);
    expect(r.report.ofPass('layout')).toEqual([]);
  });

  it("does the opposite when options or the device profile prefer 'KN'", () => {
    const g = llama();
    const viaOptions = run(g, [layoutPass], discreteGpuProfile, { preferredWeightLayout: 'KN' }).graph;
    const profile = { ...discreteGpuProfile, preferredWeightLayout: 'KN' } as DeviceProfile;
    const viaProfile = run(g, [layoutPass], profile).graph;
    for (const out of [viaOptions, viaProfile]) {
      const mms = nodesOf(out, 'matmul').filter((n) => n.inputs[1].op === 'weight');
      expect(mms.length).toBe(7 * tinyLlama.nLayers + 1);
      for (const mm of mms) {
        expect(mm.attrs.transB).toBe(false);
        expect(entryOf(out, mm.inputs[1]).name).toMatch(/\^T$/);
      }
      expectExact(g, out, llamaInputs());
    }
    viaProfile.outputNodes.forEach((n, i) => expect(n).toBe(viaOptions.outputNodes[i]));
    // options beat the profile
    expect(preferredWeightLayout({ preferredWeightLayout: 'NK' }, profile)).toBe('NK');
    expect(preferredWeightLayout({}, profile)).toBe('KN');
    expect(preferredWeightLayout({}, discreteGpuProfile)).toBe('NK');
    expect(() => preferredWeightLayout({ preferredWeightLayout: 'kn' }, profile)).toThrow(UsageError);
  });

  it('turns a transpose of a weight into a transposed weight (2-D and 3-D), exactly', () => {
    const b = new GraphBuilder();
    const r0 = new Rng(6);
    const w2 = b.weight('w2', [4, 6], r0.normals(24));
    const w3 = b.weight('w3', [2, 3, 4], r0.normals(24));
    const x = b.input('x', 'f32', [4, 6]);
    const g = b.build({ a: b.add(b.transpose(w2), b.transpose(x)), c: b.transpose(w3, [2, 0, 1]) });
    const r = run(g, [layoutPass], discreteGpuProfile);
    expect(nodesOf(r.graph, 'transpose')).toHaveLength(1); // the one of the input stays
    const c = r.graph.output('c');
    expect(c.op).toBe('weight');
    expect(entryOf(r.graph, c).name).toBe('w3^T(2,0,1)');
    expect(c.shape).toEqual([4, 2, 3]);
    expectExact(g, r.graph);
    expect(messages(r, 'layout')).toContainEqual(expect.stringMatching(/transpose \[1,0\] of the weight done at compile time/));
  });

  it('reads matmul(x, transpose(W)) of an [N, K] weight as W with transB: no copy at all', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 8]);
    const w = b.weight('w', [5, 8], new Rng(8).normals(40));
    const g = b.build({ y: b.matmul(x, b.transpose(w)) });
    const r = run(g, [layoutPass, dcePass], discreteGpuProfile);
    const mm = r.graph.output('y');
    expect(mm.inputs[1]).toBe(w);
    expect(mm.attrs.transB).toBe(true);
    expect(r.graph.weights.all().map((e) => e.name)).toEqual(['w']);
    expectExact(g, r.graph);
  });

  it('keeps both layouts of a weight that two matmuls need differently, and reports the duplication', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 8]);
    const z = b.input('z', 'f32', [3, 5]);
    const w = b.weight('shared', [8, 5], new Rng(12).normals(40));
    const g = b.build({ y: b.matmul(x, w), u: b.matmul(z, w, { transB: true }) });
    const r = run(g, [layoutPass, dcePass], discreteGpuProfile);
    expect(r.graph.output('u').inputs[1]).toBe(w);
    expect(entryOf(r.graph, r.graph.output('y').inputs[1]).name).toBe('shared^T');
    expect(r.graph.weights.size).toBe(2);
    expect(messages(r, 'layout')).toContainEqual(expect.stringMatching(/weight 'shared' is kept in two layouts, \[8,5\] .* and \[5,8\] .*: 160 extra bytes/));
    expectExact(g, r.graph);
  });

  it('re-lays out the weight of a matmul inside a fused node (replacing the operand, or adding one when shared)', () => {
    const b = new GraphBuilder();
    const r0 = new Rng(13);
    const x = b.input('x', 'f32', [8, 8]);
    const w = b.weight('fw', [8, 8], r0.normals(64, 0.4));
    const bias = b.weight('fb', [8], r0.normals(8));
    const steps = (extra: boolean): AttrValue =>
      [
        { op: 'matmul', args: [0, 1], attrs: {} },
        { op: 'add', args: [-1, 2], attrs: {} },
        ...(extra ? [{ op: 'add', args: [-2, 1], attrs: {} }] : []),
      ] as unknown as AttrValue;
    const f1 = makeNode('fused', [x, w, bias], { kind: 'matmul', steps: steps(false) });
    const f2 = makeNode('fused', [x, w, bias], { kind: 'matmul', steps: steps(true) });
    const g = b.build({ f1, f2 });
    const r = run(g, [layoutPass], discreteGpuProfile);
    const n1 = r.graph.output('f1');
    const n2 = r.graph.output('f2');
    expect(n1.inputs.map((n) => n.op)).toEqual(['input', 'weight', 'weight']);
    expect(entryOf(r.graph, n1.inputs[1]).name).toBe('fw^T');
    const s1 = n1.attrs.steps as unknown as { args: number[]; attrs: { transB: boolean } }[];
    expect(s1[0].attrs.transB).toBe(true);
    // f2 reads the [K, N] weight again in its last step: the operand stays and the transposed one is added
    expect(n2.inputs).toHaveLength(4);
    expect(n2.inputs[1]).toBe(w);
    expect(entryOf(r.graph, n2.inputs[3]).name).toBe('fw^T');
    const s2 = n2.attrs.steps as unknown as { args: number[]; attrs: { transB: boolean } }[];
    expect(s2[0].args).toEqual([0, 3]);
    expect(s2[2].args).toEqual([-2, 1]);
    expectExact(g, r.graph);
    expect(r.matches['weight-layout-fused']).toBe(2);
  });

  it('does not fire on a non-weight B operand, a 3-D weight or a quantized weight', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 3, 8]);
    const bIn = b.input('b', 'f32', [8, 5]);
    const w3 = b.weight('batched', [2, 8, 5], new Rng(14).normals(80));
    const q = b.weight(quantizeWeight('q', [8, 8], new Rng(15).normals(64), { bits: 8, groupSize: 8 }));
    const g = b.build({ a: b.matmul(x, bIn), c: b.matmul(x, w3), d: b.matmul(x, q), e: b.transpose(q) });
    const r = run(g, [layoutPass], discreteGpuProfile);
    expect(r.graph).toBe(g);
    expect(r.matches).toEqual({});
    const msgs = messages(r, 'layout');
    expect(msgs).toContainEqual("weight 'batched' left in its stored layout: rank-3 (batched) weights are read as they are stored");
    expect(msgs).toContainEqual(expect.stringMatching(/^weight 'q' left in its stored layout: quantized encoding fixes its layout/));
    expect(() => transposeWeightEntry(entryOf(g, q), [1, 0])).toThrow(UsageError);
  });

  it('is idempotent: running it twice gives the same output nodes as once', () => {
    for (const [g, opts] of [
      [kn().g, {}],
      [llama(), { preferredWeightLayout: 'KN' }],
    ] as const) {
      const once = run(g, [layoutPass], discreteGpuProfile, opts).graph;
      expect(once).not.toBe(g);
      const twice = run(once, [layoutPass], discreteGpuProfile, opts);
      expect(twice.graph).toBe(once);
      expect(twice.matches).toEqual({});
      const again = run(g, [layoutPass], discreteGpuProfile, opts).graph;
      again.outputNodes.forEach((n, i) => expect(n).toBe(once.outputNodes[i]));
    }
  });

  it('is exact on random graphs', () => {
    fc.assert(
      fc.property(arbGraphCase({ maxSteps: 12 }), fc.constantFrom('NK', 'KN'), (c, layout) => {
        const r = run(c.graph, [layoutPass], discreteGpuProfile, { preferredWeightLayout: layout });
        const before = runGraph(c.graph, c.inputs, { bindings: c.bindings });
        const after = runGraph(r.graph, c.inputs, { bindings: c.bindings });
        for (const o of c.graph.outputs) {
          const diff = compareTensors(after[o.name], before[o.name], { rtol: 0, atol: 0 });
          if (diff) throw new Error(`output ${o.name}: ${diff}`);
        }
        expect(run(r.graph, [layoutPass], discreteGpuProfile, { preferredWeightLayout: layout }).graph).toBe(r.graph);
      }),
      { numRuns: 60 },
    );
  });
});

describe('mixed-precision and layout together', () => {
  it('compose: layout after mixed precision is exact, f16 weights get transposed, simplify keeps the casts', () => {
    const g = mlp();
    const mixed = run(g, [mixedPrecisionPass], discreteGpuProfile).graph;
    const r = run(g, [mixedPrecisionPass, layoutPass, simplifyPass, dcePass], discreteGpuProfile);
    for (const mm of nodesOf(r.graph, 'matmul')) {
      expect(mm.attrs.transB).toBe(true);
      const e = weightOperand(r.graph, mm)!;
      expect(e.name).toMatch(/@f16\^T$/);
      expect(e.data.values).toBeInstanceOf(Uint16Array);
    }
    expect(nodesOf(r.graph, 'cast').length).toBe(nodesOf(mixed, 'cast').length);
    expectExact(mixed, r.graph);
    expect(signature(r.graph)).toEqual(signature(g));
  });
});
