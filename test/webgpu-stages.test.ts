// The WebGPU lowering stages as passes, checked as every pass is: the graph before and after, run by the CPU
// reference on the same random inputs, must agree. legalize-webgpu and materialize-outputs are exact rewrites;
// lower-paged-kv changes what the graph reads (the paged cache), so its result is checked for structure here and for
// numbers by the engine goldens on WebGPU.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createTarget } from '../src/codegen/target.js';
import { GraphBuilder } from '../src/ir/builder.js';
import { pagedAttentionOf } from '../src/ir/paged-kv.js';
import { buildLlama, randomLlamaWeights, type LlamaConfig } from '../src/models/llama.js';
import { legalizeWebGPUPass } from '../src/passes/legalize-webgpu.js';
import { lowerPagedKvPass } from '../src/passes/lower-paged-kv.js';
import { materializeOutputsPass } from '../src/passes/materialize-outputs.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { webgpuGraphStages } from '../src/webgpu-pipeline.js';
import { arbGraphCase, compareTensors } from './support/random-graph.js';

const TOL = { rtol: 1e-4, atol: 1e-5 };

function randomTensor(rng: Rng, shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.from('f32', shape, Float32Array.from({ length: n }, () => rng.normal()));
}

describe('WebGPU lowering stages (differential against the CPU reference)', () => {
  it('legalize-webgpu: softmax over an inner axis, an empty reduction and a partly broadcast matmul batch keep their values', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 5, 3]);
    const e = b.input('e', 'f32', [2, 0, 3]);
    const a = b.input('a', 'f32', [2, 3, 4, 6]);
    const w = b.input('w', 'f32', [1, 3, 6, 5]);
    const g = b.build({ soft: b.softmax(x, 1), empty: b.sum(e, [1]), emptyMax: b.max(e, [1]), mm: b.matmul(a, w) });
    const r = runPasses(g, [legalizeWebGPUPass], { verify: true, target: createTarget('lavapipe') });
    expect(r.matches).toMatchObject({ 'softmax-last-axis': 1, 'empty-reduction': 2, 'expand-matmul-batch': 1 });
    const rng = new Rng(7);
    const inputs = { x: randomTensor(rng, [2, 5, 3]), e: randomTensor(rng, [2, 0, 3]), a: randomTensor(rng, [2, 3, 4, 6]), w: randomTensor(rng, [1, 3, 6, 5]) };
    const before = runGraph(g, inputs);
    const after = runGraph(r.graph, inputs);
    for (const o of g.outputs) expect(compareTensors(after[o.name], before[o.name], TOL), o.name).toBeNull();
  });

  it('materialize-outputs: an output that is an input, a weight or a view gets its own copy with the same values', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 4]);
    const w = b.weight('w', [4], Float32Array.from([1, 2, 3, 4]));
    const g = b.build({ same: x, weight: w, view: b.reshape(x, [12]), sum: b.add(x, w) });
    const r = runPasses(g, [materializeOutputsPass], { verify: true });
    expect(r.graph.outputs.map((o) => o.node.op)).toEqual(['expand', 'expand', 'expand', 'add']);
    const inputs = { x: randomTensor(new Rng(3), [3, 4]) };
    const before = runGraph(g, inputs);
    const after = runGraph(r.graph, inputs);
    for (const o of g.outputs) expect(compareTensors(after[o.name], before[o.name], TOL), o.name).toBeNull();
  });

  it('the graph stages of the WebGPU pipeline preserve the semantics of random graphs for both device classes (property)', () => {
    const targets = [createTarget('lavapipe'), createTarget('discrete')];
    fc.assert(
      fc.property(arbGraphCase({ maxSteps: 12 }), fc.integer({ min: 0, max: 1 }), (c, t) => {
        const r = runPasses(c.graph, webgpuGraphStages('O3'), { verify: true, target: targets[t], options: { bindings: c.bindings } });
        const before = runGraph(c.graph, c.inputs, { bindings: c.bindings });
        const after = runGraph(r.graph, c.inputs, { bindings: c.bindings });
        for (const o of c.graph.outputs) {
          // the discrete profile stores in f16 where the precision rules allow: compare loosely there
          const diff = compareTensors(after[o.name], before[o.name], t === 0 ? TOL : { rtol: 2e-2, atol: 2e-2, checkDType: false });
          if (diff) throw new Error(`output ${o.name} (${targets[t].name}): ${diff}`);
        }
        // fusion formed only what the target's families accept
        for (const n of r.graph.nodes()) if (n.op === 'fused' && !targets[t].fusion.accepts(n)) throw new Error(`fused ${String(n.attrs.kind)} not accepted by ${targets[t].name}`);
      }),
      { numRuns: 150, seed: 20261204 },
    );
  });

  it('lower-paged-kv: every layer attention reads the paged cache, present_* outputs go, and a graph without past keys is untouched', () => {
    const cfg: LlamaConfig = { dim: 32, hiddenDim: 64, nLayers: 3, nHeads: 4, nKvHeads: 2, vocabSize: 40, seqLen: 32, sharedClassifier: true };
    const g = buildLlama(cfg, randomLlamaWeights(cfg, 11));
    const r = runPasses(g, [...webgpuGraphStages('O3')], { verify: true, target: createTarget('lavapipe'), options: { bindings: { seq: 4, past: 0, batch: 1 } } });
    const paged = pagedAttentionOf(r.graph);
    expect([...paged.values()].map((p) => p.layer).sort()).toEqual([0, 1, 2]);
    expect(r.graph.outputs.map((o) => o.name)).toEqual(['logits']);
    for (const n of paged.keys()) expect(r.graph.nodes()).toContain(n);
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2]);
    const plain = b.build({ y: b.add(x, x) });
    expect(runPasses(plain, [lowerPagedKvPass]).graph).toBe(plain);
  });
});
