/**
 * ONNX op semantics the backend node tests do not reach: Softmax before opset 13 (flatten-based), RotaryEmbedding
 * with constant caches (becomes the IR `rope` op) against the composed form, DequantizeLinear of initializers
 * (quantized weights, per-axis and blocked, stored transposed for MatMul) and Q→DQ fake quantization, Round's
 * half-to-even, Mod's two signs, Tile, Pad and Attention with a KV cache. References are computed here in plain
 * JavaScript.
 */
import { describe, expect, it } from 'vitest';
import { importOnnx } from '../src/frontends/onnx/index.js';
import type { Graph } from '../src/ir/graph.js';
import type { QuantizedEncoding } from '../src/ir/weights.js';
import { runPasses } from '../src/passes/pipeline.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { modelBytes, node, T, tensor, valueInfo, type AttrSpec } from './support/onnx.js';

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) expect(Math.abs(actual[i] - expected[i]), `element ${i}: ${actual[i]} vs ${expected[i]}`).toBeLessThanOrEqual(tol * (1 + Math.abs(expected[i])));
}

/** A one-node model over float inputs. */
function oneNode(op: string, inputs: [string, number, number[]][], outShape: number[], attrs: Record<string, AttrSpec> = {}, opset = 17, initializers: object[] = []): Graph {
  return importOnnx(
    modelBytes({
      opset,
      inputs: inputs.map(([n, t, d]) => valueInfo(n, t, d)),
      outputs: [valueInfo('y', T.FLOAT, outShape)],
      initializers,
      nodes: [node(op, [...inputs.map(([n]) => n), ...initializers.map((t) => (t as { name: string }).name)], ['y'], attrs)],
    }),
  ).graph;
}

const ops = (g: Graph): string[] => g.nodes().map((n) => n.op);

describe('ONNX op semantics', () => {
  it('Softmax before opset 13 normalizes over everything from the axis on (flattened)', () => {
    const g = oneNode('Softmax', [['x', T.FLOAT, [2, 3, 4]]], [2, 3, 4], { axis: { i: 1 } }, 11);
    const x = Tensor.from('f32', [2, 3, 4], new Rng(1).normals(24));
    const y = runGraph(g, { x }).y.toArray();
    for (let b = 0; b < 2; b++) {
      const row = x.toArray().slice(b * 12, b * 12 + 12);
      const m = Math.max(...row);
      const e = row.map((v) => Math.exp(v - m));
      const s = e.reduce((p, q) => p + q, 0);
      close(y.slice(b * 12, b * 12 + 12), e.map((v) => v / s));
    }
  });

  it('RotaryEmbedding with constant standard caches becomes the rope op, and agrees with the composed form', () => {
    const [b, h, s, d, maxPos] = [1, 2, 3, 8, 16];
    const cos: number[] = [];
    const sin: number[] = [];
    for (let p = 0; p < maxPos; p++)
      for (let i = 0; i < d / 2; i++) {
        const angle = Math.fround(p * Math.fround(1 / Math.fround(Math.pow(10000, Math.fround((2 * i) / d)))));
        cos.push(Math.cos(angle));
        sin.push(Math.sin(angle));
      }
    const model = (constantCaches: boolean, interleaved: number): Graph =>
      importOnnx(
        modelBytes({
          opset: 23,
          inputs: [
            valueInfo('x', T.FLOAT, [b, h, s, d]),
            valueInfo('pos', T.INT64, [b, s]),
            ...(constantCaches ? [] : [valueInfo('cos', T.FLOAT, [maxPos, d / 2]), valueInfo('sin', T.FLOAT, [maxPos, d / 2])]),
          ],
          outputs: [valueInfo('y', T.FLOAT, [b, h, s, d])],
          initializers: constantCaches ? [tensor('cos', T.FLOAT, [maxPos, d / 2], cos), tensor('sin', T.FLOAT, [maxPos, d / 2], sin)] : [],
          nodes: [node('RotaryEmbedding', ['x', 'cos', 'sin', 'pos'], ['y'], { interleaved: { i: interleaved } })],
        }),
      ).graph;
    const x = Tensor.from('f32', [b, h, s, d], new Rng(2).normals(b * h * s * d));
    const pos = Tensor.from('i32', [b, s], [3, 7, 11]);
    for (const interleaved of [0, 1]) {
      const fast = model(true, interleaved);
      expect(ops(fast)).toContain('rope');
      const slow = model(false, interleaved);
      expect(ops(slow)).not.toContain('rope');
      const tables = { cos: Tensor.from('f32', [maxPos, d / 2], cos), sin: Tensor.from('f32', [maxPos, d / 2], sin) };
      close(runGraph(fast, { x, pos }).y.toArray(), runGraph(slow, { x, pos, ...tables }).y.toArray(), 1e-5);
    }
  });

  it('DequantizeLinear of an int8 initializer is a quantized weight (per-column scales stored transposed), exact after O3', () => {
    const [k, n] = [4, 3];
    const q = [1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12];
    const scales = [0.5, 0.25, 2];
    const zps = [0, 1, -1];
    const g = importOnnx(
      modelBytes({
        opset: 21,
        inputs: [valueInfo('x', T.FLOAT, [2, k])],
        outputs: [valueInfo('y', T.FLOAT, [2, n])],
        initializers: [tensor('w', T.INT8, [k, n], q), tensor('s', T.FLOAT, [n], scales), tensor('z', T.INT8, [n], zps)],
        nodes: [node('DequantizeLinear', ['w', 's', 'z'], ['wf'], { axis: { i: 1 } }), node('MatMul', ['x', 'wf'], ['y'])],
      }),
    ).graph;
    const weights = g.weights.all();
    expect(weights).toHaveLength(1);
    const enc = weights[0].encoding as QuantizedEncoding;
    expect(enc).toMatchObject({ kind: 'quantized', bits: 8, signed: true, groupSize: k, hasZeroPoint: true });
    expect(weights[0].shape).toEqual([n, k]);
    const optimized = runPasses(g, 'O3', { verify: true }).graph;
    expect(ops(optimized)).not.toContain('transpose');
    const x = Tensor.from('f32', [2, k], [1, 2, 3, 4, -1, 0.5, 0, 2]);
    const want: number[] = [];
    for (let r = 0; r < 2; r++)
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let i = 0; i < k; i++) acc += x.numbers[r * k + i] * (q[i * n + j] - zps[j]) * scales[j];
        want.push(acc);
      }
    close(runGraph(g, { x }).y.toArray(), want);
    close(runGraph(optimized, { x }).y.toArray(), want);
  });

  it('blocked uint4 DequantizeLinear along the last axis keeps its blocks as quantization groups', () => {
    const q = [0, 15, 7, 8, 1, 2, 3, 4];
    const packed = new Uint8Array(q.length / 2).map((_v, i) => q[2 * i] | (q[2 * i + 1] << 4));
    const g = importOnnx(
      modelBytes({
        opset: 21,
        inputs: [valueInfo('x', T.FLOAT, [1])],
        outputs: [valueInfo('y', T.FLOAT, [2, 4])],
        initializers: [tensor('w', 21, [2, 4], packed), tensor('s', T.FLOAT, [2, 2], [1, 2, 3, 4]), tensor('z', 21, [2, 2], new Uint8Array([0x80, 0x21]))],
        nodes: [node('DequantizeLinear', ['w', 's', 'z'], ['wf'], { axis: { i: 1 }, block_size: { i: 2 } }), node('Mul', ['wf', 'x'], ['y'])],
      }),
    ).graph;
    expect((g.weights.all()[0].encoding as QuantizedEncoding).groupSize).toBe(2);
    const zp = [0, 8, 1, 2];
    const want = q.map((v, i) => (v - zp[Math.floor(i / 2)]) * [1, 2, 3, 4][Math.floor(i / 2)]);
    close(runGraph(g, { x: Tensor.from('f32', [1], [1]) }).y.toArray(), want);
  });

  it('QuantizeLinear → DequantizeLinear on an activation is a float fake-quant (no integer tensors), rounding half to even', () => {
    const g = importOnnx(
      modelBytes({
        opset: 19,
        inputs: [valueInfo('x', T.FLOAT, [6])],
        outputs: [valueInfo('y', T.FLOAT, [6])],
        initializers: [tensor('s', T.FLOAT, [], [0.5]), tensor('z', T.UINT8, [], [10])],
        nodes: [node('QuantizeLinear', ['x', 's', 'z'], ['q']), node('DequantizeLinear', ['q', 's', 'z'], ['y'])],
      }),
    ).graph;
    expect(g.nodes().some((n) => n.op === 'cast' && n.dtype === 'u32')).toBe(false);
    const x = Tensor.from('f32', [6], [0.25, 0.75, -1.25, 200, -20, 1.1]);
    // x / 0.5 = 0.5 → 0 (even), 1.5 → 2, -2.5 → -2, 400 → clamp 245, -40 → clamp -10, 2.2 → 2
    expect(runGraph(g, { x }).y.toArray()).toEqual([0, 1, -1, 122.5, -5, 1]);
  });

  it('Round is half to even; Mod follows the divisor (fmod 0) or the dividend (fmod 1)', () => {
    const r = oneNode('Round', [['x', T.FLOAT, [8]]], [8]);
    expect(runGraph(r, { x: Tensor.from('f32', [8], [0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 1e9 + 0.5, -3.7]) }).y.toArray()).toEqual([0, 2, 2, -0, -2, 2, 1e9, -4]);
    const mod = (fmod: number, type: number): number[] => {
      const g = importOnnx(
        modelBytes({
          opset: 13,
          inputs: [valueInfo('a', type, [4]), valueInfo('b', type, [4])],
          outputs: [valueInfo('y', type, [4])],
          nodes: [node('Mod', ['a', 'b'], ['y'], { fmod: { i: fmod } })],
        }),
      ).graph;
      const dt = type === T.FLOAT ? 'f32' : 'i32';
      return runGraph(g, { a: Tensor.from(dt, [4], [7, -7, 7, -7]), b: Tensor.from(dt, [4], [3, 3, -3, -3]) }).y.toArray();
    };
    expect(mod(0, T.INT64)).toEqual([1, 2, -2, -1]);
    expect(mod(1, T.INT64)).toEqual([1, -1, 1, -1]);
    expect(mod(1, T.FLOAT)).toEqual([1, -1, 1, -1]);
  });

  it('Tile and constant Pad', () => {
    const reps = tensor('reps', T.INT64, [2], [2, 3]);
    const tile = oneNode('Tile', [['x', T.FLOAT, [1, 2]]], [2, 6], {}, 13, [reps]);
    expect(runGraph(tile, { x: Tensor.from('f32', [1, 2], [1, 2]) }).y.toArray()).toEqual([1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2]);
    const pads = tensor('pads', T.INT64, [4], [1, -1, 0, 2]);
    const pad = oneNode('Pad', [['x', T.FLOAT, [2, 3]]], [3, 4], {}, 13, [pads]);
    expect(runGraph(pad, { x: Tensor.from('f32', [2, 3], [1, 2, 3, 4, 5, 6]) }).y.toArray()).toEqual([0, 0, 0, 0, 2, 3, 0, 0, 5, 6, 0, 0]);
  });

  it('Attention with a KV cache (3-D, GQA) is the IR attention op; is_causal sees past keys', () => {
    const [bt, s, p, hq, hkv, d] = [1, 2, 3, 4, 2, 4];
    const g = importOnnx(
      modelBytes({
        opset: 23,
        inputs: [
          valueInfo('q', T.FLOAT, [bt, s, hq * d]),
          valueInfo('k', T.FLOAT, [bt, s, hkv * d]),
          valueInfo('v', T.FLOAT, [bt, s, hkv * d]),
          valueInfo('pk', T.FLOAT, [bt, hkv, p, d]),
          valueInfo('pv', T.FLOAT, [bt, hkv, p, d]),
        ],
        outputs: [valueInfo('y', T.FLOAT, []), valueInfo('ck', T.FLOAT, []), valueInfo('cv', T.FLOAT, [])],
        nodes: [node('Attention', ['q', 'k', 'v', '', 'pk', 'pv'], ['y', 'ck', 'cv'], { q_num_heads: { i: hq }, kv_num_heads: { i: hkv }, is_causal: { i: 1 } })],
      }),
    ).graph;
    expect(ops(g)).toContain('attention');
    const rng = new Rng(5);
    const t = (shape: number[]): Tensor => Tensor.from('f32', shape, rng.normals(shape.reduce((a, c) => a * c, 1)));
    const inputs = { q: t([bt, s, hq * d]), k: t([bt, s, hkv * d]), v: t([bt, s, hkv * d]), pk: t([bt, hkv, p, d]), pv: t([bt, hkv, p, d]) };
    const out = runGraph(g, inputs);
    expect(out.ck.shape).toEqual([bt, hkv, p + s, d]);
    // reference: query i (of s) sees keys j <= p + i of the p + s; query head h reads KV head floor(h / 2)
    const key = (hk: number, j: number, c: number, which: 'k' | 'v'): number =>
      j < p ? inputs[which === 'k' ? 'pk' : 'pv'].numbers[(hk * p + j) * d + c] : inputs[which].numbers[(j - p) * hkv * d + hk * d + c];
    const want: number[] = [];
    for (let i = 0; i < s; i++)
      for (let h = 0; h < hq; h++) {
        const hk = Math.floor(h / (hq / hkv));
        const scores: number[] = [];
        for (let j = 0; j <= p + i; j++) {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += inputs.q.numbers[i * hq * d + h * d + c] * key(hk, j, c, 'k');
          scores.push(dot / Math.sqrt(d));
        }
        const m = Math.max(...scores);
        const e = scores.map((x) => Math.exp(x - m));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let c = 0; c < d; c++) want.push(e.reduce((acc, w, j) => acc + (w / sum) * key(hk, j, c, 'v'), 0));
      }
    close(out.y.toArray(), want, 1e-5);
  });
});
