/**
 * The random-graph arbitrary itself: generated graphs verify, run on the reference interpreter with outputs of the
 * declared types and finite values, are deterministic in their seed, and cover the whole op set.
 * Set RANDOM_GRAPH_RUNS to run more cases (e.g. 2000).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { evalShape } from '../src/ir/dim.js';
import { getOpDef, OP_NAMES } from '../src/ir/ops.js';
import { printGraph } from '../src/ir/printer.js';
import { verifyGraphProblems } from '../src/ir/verifier.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { arbGraphCase, buildRandomGraph, compareTensors, type GraphCase } from './support/random-graph.js';

const RUNS = Number(process.env.RANDOM_GRAPH_RUNS ?? 300);
/** Seeded so a failure reproduces (`FUZZ_SEED=<seed>`); fast-check prints the seed and path on failure. */
const SEED = Number(process.env.FUZZ_SEED ?? 20261205);

function checkCase(c: GraphCase): void {
  expect(verifyGraphProblems(c.graph)).toEqual([]);
  for (const i of c.graph.inputs) expect(c.inputs[String(i.attrs.name)], `input ${String(i.attrs.name)}`).toBeDefined();
  // a symbol may appear only in a `range` (no input carries it), so the case's bindings are passed as the fuzzers do
  const out = runGraph(c.graph, c.inputs, { bindings: c.bindings });
  for (const o of c.graph.outputs) {
    const t = out[o.name];
    expect(t.dtype).toBe(o.node.dtype);
    expect([...t.shape]).toEqual(evalShape(o.node.shape, c.bindings));
    for (let i = 0; i < t.data.length; i++) if (!Number.isFinite(t.data[i])) expect.fail(`${o.name}[${i}] = ${t.data[i]}\n${printGraph(c.graph)}`);
  }
}

describe('arbGraphCase', () => {
  it(`builds graphs that verify and run to finite outputs (${RUNS} cases)`, () => {
    fc.assert(fc.property(arbGraphCase(), checkCase), { numRuns: RUNS, seed: SEED });
  });

  it('also with symbolic dims in every case, and with long graphs', () => {
    fc.assert(fc.property(arbGraphCase({ symbolic: 1, maxSteps: 24 }), checkCase), { numRuns: Math.ceil(RUNS / 3), seed: SEED });
  });

  it('is deterministic in the seed', () => {
    for (const seed of [1, 42, 123456]) {
      const a = buildRandomGraph(seed, { steps: 10 });
      const b = buildRandomGraph(seed, { steps: 10 });
      expect(printGraph(b.graph)).toBe(printGraph(a.graph));
      expect(Object.keys(b.inputs)).toEqual(Object.keys(a.inputs));
      for (const k of Object.keys(a.inputs)) expect(compareTensors(b.inputs[k], a.inputs[k], { rtol: 0, atol: 0 })).toBeNull();
      expect(b.bindings).toEqual(a.bindings);
    }
  });

  it('covers every source op, symbolic dims, quantized weights, masks and KV past', () => {
    const seen = new Set<string>();
    let symbolic = 0;
    let quantized = 0;
    let pastAttention = 0;
    let maskedAttention = 0;
    const ropeStyles = new Set<string>();
    const gqa = new Set<number>();
    for (let seed = 0; seed < 400; seed++) {
      const c = buildRandomGraph(seed * 2654435761 >>> 1);
      if (Object.keys(c.bindings).length) symbolic++;
      if (c.graph.weights.all().some((e) => e.encoding.kind === 'quantized')) quantized++;
      for (const n of c.graph.nodes()) {
        seen.add(n.op);
        if (n.op === 'rope') ropeStyles.add(String(n.attrs.style));
        if (n.op === 'attention') {
          gqa.add((n.inputs[0].shape[2] as number) / (n.inputs[1].shape[2] as number));
          if (n.inputs[1].op === 'concat') pastAttention++;
          if (n.inputs.length === 4) maskedAttention++;
        }
      }
    }
    // every op a front end can write (ops only passes introduce, like `fused` and `kv_quantize`, are not generated)
    expect(OP_NAMES.filter((op) => getOpDef(op).category !== 'fused' && op !== 'kv_quantize' && !seen.has(op))).toEqual([]);
    expect(symbolic).toBeGreaterThan(50);
    expect(quantized).toBeGreaterThan(10);
    expect(pastAttention).toBeGreaterThan(5);
    expect(maskedAttention).toBeGreaterThan(5);
    expect([...ropeStyles].sort()).toEqual(['half', 'interleaved']);
    expect([...gqa].sort()).toEqual([1, 2, 4]);
  });
});

describe('compareTensors', () => {
  const t = (v: number[], dtype: 'f32' | 'i32' = 'f32', shape = [v.length]): Tensor => Tensor.from(dtype, shape, v);
  it('accepts equal tensors and values within tolerance; NaN equals NaN', () => {
    expect(compareTensors(t([1, 2, NaN, Infinity]), t([1, 2, NaN, Infinity]))).toBeNull();
    expect(compareTensors(t([1.00001]), t([1]), { rtol: 1e-4, atol: 0 })).toBeNull();
    expect(compareTensors(t([1e-7]), t([0]), { rtol: 0, atol: 1e-6 })).toBeNull();
  });
  it('describes the first mismatch', () => {
    expect(compareTensors(t([1, 2, 3, 4], 'f32', [2, 2]), t([1, 2, 3.5, 4], 'f32', [2, 2]))).toMatch(/^element 2 \(index \[1,0\]\) of f32\[2,2\]: 3 vs 3.5/);
    expect(compareTensors(t([1]), t([1], 'i32'))).toBe('dtype f32 vs i32');
    expect(compareTensors(t([1], 'f32'), t([1], 'i32'), { checkDType: false })).toBeNull();
    expect(compareTensors(t([1, 2]), t([1, 2], 'f32', [2, 1]))).toBe('shape [2] vs [2,1]');
    expect(compareTensors(t([Infinity]), t([-Infinity]))).not.toBeNull();
    expect(compareTensors(t([NaN]), t([0]))).not.toBeNull();
  });
});
