/**
 * The recognition passes (norms, activations, RoPE, attention): each builds a primitive subgraph the way an exporter
 * writes it, runs the pass (then `simplify`), checks that the high-level op appeared and the primitives went, and
 * compares the graph before and after on the CPU interpreter with random inputs. Must-not-fire cases check that
 * look-alikes (wrong constants, non-causal masks, foreign tables, another softmax axis) are left alone.
 */
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/ir/builder.js';
import { isStaticShape } from '../src/ir/dim.js';
import type { DType } from '../src/ir/dtype.js';
import type { Graph } from '../src/ir/graph.js';
import type { Node } from '../src/ir/node.js';
import type { OpName } from '../src/ir/ops.js';
import { floatToHalf, WeightStore } from '../src/ir/weights.js';
import type { Pass } from '../src/passes/pass.js';
import { runPasses } from '../src/passes/pipeline.js';
import { recognizeActivationsPass } from '../src/passes/recognize-activations.js';
import { recognizeAttentionPass } from '../src/passes/recognize-attention.js';
import { recognizeNormsPass } from '../src/passes/recognize-norms.js';
import { recognizeRopePass } from '../src/passes/recognize-rope.js';
import { simplifyPass } from '../src/passes/simplify.js';
import { runGraph } from '../src/runtime/cpu/interpreter.js';
import { Tensor } from '../src/runtime/cpu/tensor.js';
import { Rng } from '../src/util/random.js';
import { compareTensors } from './support/random-graph.js';

// ---------------------------------------------------------------------------------------------------------------
// helpers

type Tol = { rtol?: number; atol?: number };

/** Random inputs for a graph's static inputs (normals); `given` overrides (positions, masks). */
function inputsFor(g: Graph, given: Record<string, Tensor> = {}, seed = 11): Record<string, Tensor> {
  const rng = new Rng(seed);
  const out: Record<string, Tensor> = { ...given };
  for (const i of g.inputs) {
    const name = String(i.attrs.name);
    if (out[name]) continue;
    if (!isStaticShape(i.shape)) throw new Error('inputsFor: static shapes only');
    const n = i.shape.reduce((a, b) => a * b, 1);
    out[name] = Tensor.from(i.dtype, i.shape, i.dtype === 'bool' ? Array.from({ length: n }, () => rng.int(2)) : Array.from(rng.normals(n)));
  }
  return out;
}

function opsOf(g: Graph): OpName[] {
  return g.nodes().map((n) => n.op);
}

function nodesOf(g: Graph, op: OpName): Node[] {
  return g.nodes().filter((n) => n.op === op);
}

interface Expect {
  /** Ops the result must contain. */
  has?: readonly OpName[];
  /** Ops the result must not contain. */
  gone?: readonly OpName[];
  /** Inputs overriding the random ones. */
  inputs?: Record<string, Tensor>;
  /** Differential tolerance (default 1e-5 relative, 1e-6 absolute). */
  tol?: Tol;
}

/** Runs `pass` then `simplify` (verifying), checks the ops, and compares outputs before and after. */
function recognize(g: Graph, pass: Pass, want: Expect = {}): Graph {
  const after = runPasses(g, [pass, simplifyPass], { verify: true }).graph;
  const ops = opsOf(after);
  for (const op of want.has ?? []) expect(ops, `expected '${op}' in the result`).toContain(op);
  for (const op of want.gone ?? []) expect(ops, `expected no '${op}' in the result`).not.toContain(op);
  const inputs = inputsFor(g, want.inputs);
  const a = runGraph(g, inputs);
  const b = runGraph(after, inputs);
  for (const o of g.outputs) expect(compareTensors(b[o.name], a[o.name], { rtol: 1e-5, atol: 1e-6, ...want.tol }), `output '${o.name}'`).toBeNull();
  return after;
}

/** Expects `pass` (then simplify) to leave these ops in place. */
function expectUnchanged(g: Graph, pass: Pass, kept: readonly OpName[], absent: readonly OpName[]): void {
  const after = runPasses(g, [pass, simplifyPass], { verify: true }).graph;
  const ops = opsOf(after);
  for (const op of kept) expect(ops).toContain(op);
  for (const op of absent) expect(ops).not.toContain(op);
}

function f32Weight(b: GraphBuilder, name: string, shape: number[], seed: number, offset = 0): Node {
  const rng = new Rng(seed);
  const n = shape.reduce((x, y) => x * y, 1);
  return b.weight(name, shape, Float32Array.from(rng.normals(n), (v) => v * 0.5 + offset));
}

// ---------------------------------------------------------------------------------------------------------------
// norms

describe('recognize-norms', () => {
  const D = 16;
  const NORM_PRIMITIVES: OpName[] = ['mean', 'pow', 'sqrt', 'rsqrt', 'div', 'reciprocal'];

  /** PyTorch/ONNX: mean → sub → pow (or mul self) → mean → add eps → sqrt → div [→ mul gamma] [→ add beta]. */
  function torchLayerNorm(opts: { square?: 'pow' | 'mul'; gamma?: number[]; beta?: number[]; eps?: 'const' | 'input' } = {}): Graph {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [2, 3, D]);
    const mean = b.mean(x, [-1], true);
    const d = b.sub(x, mean);
    const sq = opts.square === 'mul' ? b.mul(d, d) : b.pow(d, 2);
    const eps = opts.eps === 'input' ? b.input('eps', 'f32', [1]) : b.constant(1e-5);
    let y = b.div(d, b.sqrt(b.add(b.mean(sq, [-1], true), eps)));
    if (opts.gamma) y = b.mul(y, f32Weight(b, 'ln.weight', opts.gamma, 1, 1));
    if (opts.beta) y = b.add(y, f32Weight(b, 'ln.bias', opts.beta, 2));
    return b.build({ y });
  }

  it('PyTorch LayerNorm with gamma and beta', () => {
    const g = recognize(torchLayerNorm({ gamma: [D], beta: [D] }), recognizeNormsPass, { has: ['layernorm'], gone: [...NORM_PRIMITIVES, 'mul', 'add', 'sub'] });
    const [ln] = nodesOf(g, 'layernorm');
    expect(ln.inputs.map((n) => n.op)).toEqual(['input', 'weight', 'weight']);
    expect(ln.attrs.eps).toBeCloseTo(1e-5, 10);
  });

  it('PyTorch LayerNorm with mul(d, d), no gamma or beta: ones weight', () => {
    const g = recognize(torchLayerNorm({ square: 'mul' }), recognizeNormsPass, { has: ['layernorm'], gone: NORM_PRIMITIVES });
    const [ln] = nodesOf(g, 'layernorm');
    expect(ln.inputs).toHaveLength(2);
    expect(ln.inputs[1].op).toBe('constant');
  });

  it('LayerNorm with [1, 1, D] gamma and beta (reshaped to [D])', () => {
    recognize(torchLayerNorm({ gamma: [1, 1, D], beta: [1, 1, D] }), recognizeNormsPass, { has: ['layernorm'], gone: [...NORM_PRIMITIVES, 'mul', 'add'] });
  });

  /** TF/keras2onnx: x * (gamma * rsqrt(var + eps)) + (beta - mean * gamma * rsqrt(var + eps)). */
  function kerasLayerNorm(opts: { gamma?: boolean; beta?: boolean; inv?: 'rsqrt' | 'reciprocal' } = {}): Graph {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4, D]);
    const mean = b.mean(x, [-1], true);
    const diff = b.sub(x, mean);
    const variance = b.mean(b.mul(diff, diff), [-1], true);
    const ve = b.add(variance, 1e-3);
    let s = opts.inv === 'reciprocal' ? b.reciprocal(b.sqrt(ve)) : b.rsqrt(ve);
    if (opts.gamma) s = b.mul(s, f32Weight(b, 'gamma', [D], 3, 1));
    const scaled = b.mul(x, s);
    const shift = b.mul(mean, s);
    const y = opts.beta ? b.add(scaled, b.sub(f32Weight(b, 'beta', [D], 4), shift)) : b.sub(scaled, shift);
    return b.build({ y });
  }

  it('keras LayerNorm with gamma and beta', () => {
    const g = recognize(kerasLayerNorm({ gamma: true, beta: true }), recognizeNormsPass, { has: ['layernorm'], gone: [...NORM_PRIMITIVES, 'mul', 'sub'] });
    expect(nodesOf(g, 'layernorm')[0].inputs.map((n) => n.op)).toEqual(['input', 'weight', 'weight']);
  });

  it('keras LayerNorm without gamma or beta, reciprocal(sqrt)', () => {
    recognize(kerasLayerNorm({ inv: 'reciprocal' }), recognizeNormsPass, { has: ['layernorm'], gone: [...NORM_PRIMITIVES, 'mul', 'sub'] });
  });

  /** HF Llama RMSNorm: w * (x * rsqrt(mean(pow(x, 2)) + eps)), optionally in f32 between casts. */
  function llamaRmsNorm(opts: { dtype?: DType; inv?: 'rsqrt' | 'sqrt-div' | 'reciprocal'; weight?: 'plain' | 'none'; d?: number } = {}): Graph {
    const dtype = opts.dtype ?? 'f32';
    const d = opts.d ?? D;
    const b = new GraphBuilder();
    const x = b.input('x', dtype, [2, 3, d]);
    const h = dtype === 'f32' ? x : b.cast(x, 'f32');
    const ve = b.add(b.mean(b.pow(h, 2), [-1], true), 1e-6);
    let y = opts.inv === 'sqrt-div' ? b.div(h, b.sqrt(ve)) : b.mul(h, opts.inv === 'reciprocal' ? b.reciprocal(b.sqrt(ve)) : b.rsqrt(ve));
    if (dtype !== 'f32') y = b.cast(y, dtype);
    if (opts.weight !== 'none') {
      const rng = new Rng(5);
      const vals = Array.from({ length: d }, () => 1 + rng.normal() * 0.1);
      const w =
        dtype === 'f16'
          ? b.weight(WeightStore.entry('norm.weight', 'f16', [d], { values: Uint16Array.from(vals, floatToHalf) }))
          : b.weight('norm.weight', [d], Float32Array.from(vals));
      y = b.mul(w, y);
    }
    return b.build({ y });
  }

  it('HF Llama RMSNorm (rsqrt, sqrt + div, reciprocal)', () => {
    for (const inv of ['rsqrt', 'sqrt-div', 'reciprocal'] as const) {
      const g = recognize(llamaRmsNorm({ inv }), recognizeNormsPass, { has: ['rmsnorm'], gone: [...NORM_PRIMITIVES, 'mul'] });
      expect(nodesOf(g, 'rmsnorm')[0].inputs[1].op).toBe('weight');
    }
  });

  it('HF Llama RMSNorm in f32 between casts around f16 activations', () => {
    const g = recognize(llamaRmsNorm({ dtype: 'f16' }), recognizeNormsPass, { has: ['rmsnorm'], gone: [...NORM_PRIMITIVES, 'mul', 'cast'], tol: { rtol: 2e-3, atol: 1e-3 } });
    const [n] = nodesOf(g, 'rmsnorm');
    expect(n.dtype).toBe('f16');
    expect(n.inputs[1].op).toBe('weight');
  });

  it('Gemma RMSNorm: the (1 + w) scale becomes the weight', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, D]);
    const w = f32Weight(b, 'w', [D], 6);
    const y = b.mul(b.mul(x, b.rsqrt(b.add(b.mean(b.mul(x, x), [-1], true), 1e-6))), b.add(w, 1));
    const g = recognize(b.build({ y }), recognizeNormsPass, { has: ['rmsnorm'], gone: ['mean', 'rsqrt'] });
    expect(nodesOf(g, 'rmsnorm')[0].inputs[1].op).toBe('add');
  });

  it('RMSNorm without weight over D > 4096 adds a ones weight', () => {
    const g = recognize(llamaRmsNorm({ weight: 'none', d: 4100 }), recognizeNormsPass, { has: ['rmsnorm'], gone: NORM_PRIMITIVES });
    const w = nodesOf(g, 'rmsnorm')[0].inputs[1];
    expect(w.op).toBe('weight');
    expect(g.weights.get(String(w.attrs.id)).data.values.every((v) => v === 1)).toBe(true);
  });

  it('does not fire when eps is not a constant', () => {
    expectUnchanged(torchLayerNorm({ gamma: [D], eps: 'input' }), recognizeNormsPass, ['mean', 'sqrt', 'div'], ['layernorm', 'rmsnorm']);
  });

  it('does not fire on a mean over another axis, and keeps a non-vector gamma out of the norm', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4, D]);
    const y = b.mul(x, b.rsqrt(b.add(b.mean(b.pow(x, 2), [0], true), 1e-6)));
    expectUnchanged(b.build({ y }), recognizeNormsPass, ['mean', 'rsqrt'], ['rmsnorm']);
    const g = recognize(torchLayerNorm({ gamma: [3, D] }), recognizeNormsPass, { has: ['layernorm', 'mul'] });
    expect(nodesOf(g, 'layernorm')[0].inputs[1].op).toBe('constant');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// activations

describe('recognize-activations', () => {
  const loose: Tol = { rtol: 1e-4, atol: 1e-5 }; // exporters' constants carry 5-8 digits

  function unary(f: (b: GraphBuilder, x: Node) => Node): Graph {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [3, 17]);
    return b.build({ y: f(b, x) });
  }

  it('GELU erf form, as torch, HF and ONNX write it', () => {
    const forms: ((b: GraphBuilder, x: Node) => Node)[] = [
      (b, x) => b.mul(b.mul(0.5, x), b.add(1, b.erf(b.div(x, Math.SQRT2)))),
      (b, x) => b.mul(b.mul(x, 0.5), b.add(1, b.erf(b.div(x, 1.4142135)))),
      (b, x) => b.mul(b.mul(x, b.add(b.erf(b.div(x, 1.41421)), 1)), 0.5), // ONNX export of nn.GELU
      (b, x) => b.mul(x, b.mul(0.5, b.add(1, b.erf(b.mul(x, 0.70710678))))),
    ];
    for (const f of forms) {
      const g = recognize(unary(f), recognizeActivationsPass, { has: ['gelu'], gone: ['erf', 'mul', 'add', 'div'], tol: loose });
      expect(nodesOf(g, 'gelu')[0].attrs.approximate).toBe('none');
    }
  });

  it('GELU tanh form (pow, x*x*x, and the constant multiplied through)', () => {
    const c0 = Math.sqrt(2 / Math.PI);
    const forms: ((b: GraphBuilder, x: Node) => Node)[] = [
      (b, x) => b.mul(b.mul(0.5, x), b.add(1, b.tanh(b.mul(c0, b.add(x, b.mul(0.044715, b.pow(x, 3))))))),
      (b, x) => b.mul(b.mul(x, b.add(b.tanh(b.mul(b.add(x, b.mul(b.mul(b.mul(x, x), x), 0.044715)), 0.7978845608)), 1)), 0.5),
      (b, x) => b.mul(b.mul(x, 0.5), b.add(1, b.tanh(b.add(b.mul(x, 0.7978846), b.mul(0.0356774, b.mul(x, b.mul(x, x))))))),
    ];
    for (const f of forms) {
      const g = recognize(unary(f), recognizeActivationsPass, { has: ['gelu'], gone: ['tanh', 'pow', 'mul', 'add'], tol: loose });
      expect(nodesOf(g, 'gelu')[0].attrs.approximate).toBe('tanh');
    }
  });

  it('sigmoid from 1 / (1 + exp(-x)), and SiLU', () => {
    const sig = (b: GraphBuilder, x: Node): Node => b.div(1, b.add(1, b.exp(b.neg(x))));
    recognize(unary(sig), recognizeActivationsPass, { has: ['sigmoid'], gone: ['exp', 'div', 'neg'] });
    recognize(unary((b, x) => b.reciprocal(b.add(b.exp(b.mul(x, -1)), 1))), recognizeActivationsPass, { has: ['sigmoid'], gone: ['exp', 'reciprocal'] });
    recognize(unary((b, x) => b.mul(x, b.sigmoid(x))), recognizeActivationsPass, { has: ['silu'], gone: ['sigmoid', 'mul'] });
    recognize(unary((b, x) => b.mul(sig(b, x), x)), recognizeActivationsPass, { has: ['silu'], gone: ['sigmoid', 'exp', 'mul'] });
    recognize(unary((b, x) => b.div(x, b.add(1, b.exp(b.neg(x))))), recognizeActivationsPass, { has: ['silu'], gone: ['exp', 'div'] });
  });

  it('does not fire on wrong constants or mismatched operands', () => {
    const c0 = Math.sqrt(2 / Math.PI);
    const wrong: ((b: GraphBuilder, x: Node) => Node)[] = [
      (b, x) => b.mul(b.mul(0.6, x), b.add(1, b.erf(b.div(x, Math.SQRT2)))),
      (b, x) => b.mul(b.mul(0.5, x), b.add(1, b.erf(b.div(x, 2)))),
      (b, x) => b.mul(b.mul(0.5, x), b.add(1, b.erf(b.div(x, 1.4145)))), // 2e-4 from √2: outside the 1e-4 tolerance
      (b, x) => b.mul(b.mul(0.5, x), b.add(1, b.tanh(b.mul(c0, b.add(x, b.mul(0.05, b.pow(x, 3))))))),
      (b, x) => b.mul(b.mul(0.5, x), b.add(1, b.tanh(b.mul(c0, b.add(x, b.mul(0.044715, b.pow(x, 2))))))),
      (b, x) => b.mul(b.mul(0.5, b.neg(x)), b.add(1, b.erf(b.div(x, Math.SQRT2)))),
    ];
    wrong.forEach((f, i) => expect(opsOf(runPasses(unary(f), [recognizeActivationsPass], { verify: true }).graph), `form ${i}`).not.toContain('gelu'));
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [4]);
    const z = b.input('z', 'f32', [4]);
    expectUnchanged(b.build({ y: b.mul(x, b.sigmoid(z)) }), recognizeActivationsPass, ['sigmoid', 'mul'], ['silu']);
    expectUnchanged(unary((b2, x2) => b2.div(1, b2.add(2, b2.exp(b2.neg(x2))))), recognizeActivationsPass, ['exp'], ['sigmoid']);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// RoPE

describe('recognize-rope', () => {
  const MAX_POS = 32;

  /** HF-style caches `[maxPos, d]`: float32 inv_freq and angles, each frequency duplicated per style. */
  function ropeCaches(d: number, theta: number, style: 'half' | 'interleaved', opts: { f64?: boolean; positionScale?: number; maxPos?: number } = {}): [Float32Array, Float32Array] {
    const maxPos = opts.maxPos ?? MAX_POS;
    const r = opts.f64 ? (v: number): number => v : Math.fround;
    const cos = new Float32Array(maxPos * d);
    const sin = new Float32Array(maxPos * d);
    for (let p = 0; p < maxPos; p++)
      for (let i = 0; i < d / 2; i++) {
        const inv = r(1 / r(Math.pow(theta, r((2 * i) / d))));
        const angle = r(p * (opts.positionScale ?? 1) * inv);
        for (const j of style === 'half' ? [i, i + d / 2] : [2 * i, 2 * i + 1]) {
          cos[p * d + j] = Math.cos(angle);
          sin[p * d + j] = Math.sin(angle);
        }
      }
    return [cos, sin];
  }

  const positions = (n: number, start = 3): Tensor => Tensor.from('i32', [n], Array.from({ length: n }, (_v, i) => start + i));

  /** NeoX rotate_half: cat(-x[..., D/2:], x[..., :D/2]). */
  function rotateHalf(b: GraphBuilder, x: Node, d: number, negate: 'neg' | 'mul' = 'neg'): Node {
    const hi = b.sliceAxis(x, -1, d / 2, null);
    return b.concat([negate === 'neg' ? b.neg(hi) : b.mul(hi, -1), b.sliceAxis(x, -1, 0, d / 2)], -1);
  }

  /** GPT-J rotate_every_two: flatten(stack((-x[..., 1::2], x[..., ::2]), -1)). */
  function rotateEveryTwo(b: GraphBuilder, x: Node, d: number): Node {
    const lead = x.shape.slice(0, -1) as number[];
    const odd = b.slice(x, { axes: [-1], starts: [1], ends: [null], steps: [2] });
    const even = b.slice(x, { axes: [-1], starts: [0], ends: [null], steps: [2] });
    const un = (y: Node): Node => b.reshape(y, [...lead, d / 2, 1]);
    return b.reshape(b.concat([un(b.mul(odd, -1)), un(even)], -1), [...lead, d]);
  }

  /** x [B, S, H, D] rotated with caches gathered at positions [S] and unsqueezed to [S, 1, D]. */
  function bshdRope(opts: { theta?: number; style?: 'half' | 'interleaved'; caches?: [Float32Array, Float32Array]; constantCaches?: boolean; maxPos?: number } = {}): Graph {
    const [B, S, H, D] = [2, 5, 3, 8];
    const style = opts.style ?? 'half';
    const maxPos = opts.maxPos ?? MAX_POS;
    const [cv, sv] = opts.caches ?? ropeCaches(D, opts.theta ?? 10000, style, { maxPos });
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [B, S, H, D]);
    const pos = b.input('positions', 'i32', [S]);
    const table = (name: string, v: Float32Array): Node => (opts.constantCaches ? b.constant([...v], 'f32', [maxPos, D]) : b.weight(name, [maxPos, D], v));
    const cos = b.reshape(b.gather(table('cos_cached', cv), pos), [S, 1, D]);
    const sin = b.reshape(b.gather(table('sin_cached', sv), pos), [S, 1, D]);
    const rot = style === 'half' ? rotateHalf(b, x, D) : rotateEveryTwo(b, x, D);
    return b.build({ y: b.add(b.mul(x, cos), b.mul(rot, sin)) });
  }

  it('NeoX rotate_half on [B, S, H, D] with weight caches', () => {
    const g = recognize(bshdRope(), recognizeRopePass, { has: ['rope'], gone: ['concat', 'gather', 'slice', 'neg', 'mul'], inputs: { positions: positions(5) } });
    const [r] = nodesOf(g, 'rope');
    expect(r.attrs).toMatchObject({ theta: 10000, style: 'half', rotaryDim: 8 });
  });

  it('HF Llama layout: q [B, H, S, D] from a transpose, position_ids [B, S], cos unsqueezed to [B, 1, S, D]', () => {
    const [B, S, H, D] = [2, 4, 3, 16];
    const [cv, sv] = ropeCaches(D, 500000, 'half');
    const b = new GraphBuilder();
    const h = b.input('h', 'f32', [B, S, H * D]);
    const pos = b.input('position_ids', 'i32', [B, S]);
    const q = b.transpose(b.reshape(b.linear(h, f32Weight(b, 'q_proj', [H * D, H * D], 9)), [B, S, H, D]), [0, 2, 1, 3]);
    const cos = b.reshape(b.gather(b.weight('cos', [MAX_POS, D], cv), pos), [B, 1, S, D]);
    const sin = b.reshape(b.gather(b.weight('sin', [MAX_POS, D], sv), pos), [B, 1, S, D]);
    const y = b.transpose(b.add(b.mul(q, cos), b.mul(rotateHalf(b, q, D, 'mul'), sin)), [0, 2, 1, 3]);
    const ids = Tensor.from('i32', [B, S], [0, 1, 2, 3, 7, 8, 9, 10]);
    const g = recognize(b.build({ y }), recognizeRopePass, { has: ['rope'], gone: ['concat', 'gather', 'transpose'], inputs: { position_ids: ids } });
    expect(nodesOf(g, 'rope')[0].attrs).toMatchObject({ theta: 500000, style: 'half' });
  });

  it('[B, H, S, D] input with [S, D] tables used as gathered (they broadcast over batch and heads)', () => {
    const [B, S, H, D] = [2, 6, 3, 8];
    const [cv, sv] = ropeCaches(D, 10000, 'half');
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [B, H, S, D]);
    const pos = b.input('positions', 'i32', [S]);
    const cos = b.gather(b.weight('cos', [MAX_POS, D], cv), pos);
    const sin = b.gather(b.weight('sin', [MAX_POS, D], sv), pos);
    const g = recognize(b.build({ y: b.add(b.mul(x, cos), b.mul(rotateHalf(b, x, D), sin)) }), recognizeRopePass, {
      has: ['rope', 'transpose'],
      gone: ['concat', 'gather'],
      inputs: { positions: positions(S, 0) },
    });
    expect(nodesOf(g, 'rope')[0].inputs[0].shape).toEqual([B, S, H, D]);
  });

  it('GPT-J interleaved form, constant caches, and float64-computed caches', () => {
    const inputs = { positions: positions(5, 20) };
    let g = recognize(bshdRope({ style: 'interleaved' }), recognizeRopePass, { has: ['rope'], gone: ['concat', 'slice', 'gather'], inputs });
    expect(nodesOf(g, 'rope')[0].attrs.style).toBe('interleaved');
    recognize(bshdRope({ constantCaches: true, maxPos: 25 }), recognizeRopePass, { has: ['rope'], gone: ['gather'], inputs });
    g = recognize(bshdRope({ caches: ropeCaches(8, 10000, 'half', { f64: true, maxPos: 2048 }), maxPos: 2048 }), recognizeRopePass, {
      has: ['rope'],
      inputs: { positions: positions(5, 2040) },
      tol: { rtol: 1e-3, atol: 2e-3 }, // the caches hold float64 angles at positions ~2040; rope computes them in float32
    });
    expect(nodesOf(g, 'rope')[0].attrs.theta).toBe(10000);
  });

  it('does not fire when the tables do not match the formula', () => {
    const kept: OpName[] = ['gather', 'concat'];
    expectUnchanged(bshdRope({ caches: ropeCaches(8, 10000, 'half', { positionScale: 0.5 }) }), recognizeRopePass, kept, ['rope']);
    expectUnchanged(bshdRope({ caches: ropeCaches(8, 10000, 'interleaved') }), recognizeRopePass, kept, ['rope']);
    const [cv, sv] = ropeCaches(8, 10000, 'half');
    cv[5 * 8 + 3] += 1e-3;
    expectUnchanged(bshdRope({ caches: [cv, sv] }), recognizeRopePass, kept, ['rope']);
    expectUnchanged(bshdRope({ caches: [sv, cv] }), recognizeRopePass, kept, ['rope']);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// attention

describe('recognize-attention', () => {
  const [B, S, H, D] = [2, 5, 4, 8];
  const ATTENTION_PRIMITIVES: OpName[] = ['softmax', 'transpose'];
  /** Only the q/k/v projections' matmuls are left. */
  const expectProjectionsOnly = (g: Graph): void => expect(nodesOf(g, 'matmul').every((m) => m.inputs[1].op === 'weight')).toBe(true);

  /** `transpose(reshape(linear(x, W), [B, S, H, D]), [0, 2, 1, 3])`: a projection to heads, [B, H, S, D]. */
  function heads(b: GraphBuilder, x: Node, name: string, h = H, s = S): Node {
    return b.transpose(b.reshape(b.linear(x, f32Weight(b, name, [h * D, H * D], name.charCodeAt(0))), [B, s, h, D]), [0, 2, 1, 3]);
  }

  /** Merges heads back: transpose(·, [0, 2, 1, 3]) then reshape to [B, S, H·D]. */
  function merge(b: GraphBuilder, o: Node): Node {
    return b.reshape(b.transpose(o, [0, 2, 1, 3]), [B, S, H * D]);
  }

  it('BERT: scores / sqrt(d) + additive padding mask', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [B, S, H * D]);
    const mask = b.input('mask', 'f32', [B, 1, 1, S]);
    const [q, k, v] = ['q', 'k', 'v'].map((n) => heads(b, x, n));
    const scores = b.add(b.div(b.matmul(q, b.transpose(k, [0, 1, 3, 2])), Math.sqrt(D)), mask);
    const g = recognize(b.build({ y: merge(b, b.matmul(b.softmax(scores, -1), v)) }), recognizeAttentionPass, { has: ['attention'], gone: ATTENTION_PRIMITIVES });
    expectProjectionsOnly(g);
    const [att] = nodesOf(g, 'attention');
    expect(att.attrs).toMatchObject({ causal: false, scale: Math.fround(1 / Math.sqrt(D)) });
    expect(att.inputs).toHaveLength(4);
  });

  it('causal from a constant lower-triangular additive mask, scale on q, transB', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [B, S, H * D]);
    const [q, k, v] = ['q', 'k', 'v'].map((n) => heads(b, x, n));
    const tril = Array.from({ length: S * S }, (_v, i) => (i % S <= Math.floor(i / S) ? 0 : -Infinity));
    const scores = b.add(b.matmul(b.mul(q, 0.125), k, { transB: true }), b.constant(tril, 'f32', [S, S]));
    const g = recognize(b.build({ y: merge(b, b.matmul(b.softmax(scores, -1), v)) }), recognizeAttentionPass, { has: ['attention'], gone: [...ATTENTION_PRIMITIVES, 'add'] });
    expectProjectionsOnly(g);
    const [att] = nodesOf(g, 'attention');
    expect(att.attrs).toMatchObject({ causal: true, scale: 0.125 });
    expect(att.inputs).toHaveLength(3);
  });

  it('GPT-2: where(slice(bias, past:past+seq, :past+seq), s, finfo.min) + attention_mask, kᵀ by permute(0, 2, 3, 1)', () => {
    const [past, maxPos] = [3, 16];
    const T = past + S;
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [B, S, H * D]);
    const pastK = b.input('past_k', 'f32', [B, past, H, D]);
    const pastV = b.input('past_v', 'f32', [B, H, past, D]);
    const attnMask = b.input('attention_mask', 'f32', [B, 1, 1, T]);
    const q = heads(b, x, 'q');
    const kNew = b.reshape(b.linear(x, f32Weight(b, 'k', [H * D, H * D], 3)), [B, S, H, D]);
    const kT = b.transpose(b.concat([pastK, kNew], 1), [0, 2, 3, 1]); // [B, H, D, T]
    const v = b.concat([pastV, heads(b, x, 'v')], 2);
    const bias = Uint8Array.from({ length: maxPos * maxPos }, (_v, i) => (i % maxPos <= Math.floor(i / maxPos) ? 1 : 0));
    const biasW = b.weight(WeightStore.entry('attn.bias', 'bool', [1, 1, maxPos, maxPos], { values: bias }));
    const causal = b.slice(biasW, { axes: [2, 3], starts: [past, 0], ends: [past + S, past + S] });
    const scores = b.div(b.matmul(q, kT), b.constant(Math.sqrt(D)));
    const masked = b.add(b.where(causal, scores, -3.4028234663852886e38), attnMask);
    const g = recognize(b.build({ y: merge(b, b.matmul(b.softmax(masked, -1), v)) }), recognizeAttentionPass, { has: ['attention'], gone: ['softmax', 'where', 'slice'] });
    const [att] = nodesOf(g, 'attention');
    expect(att.attrs.causal).toBe(true);
    expect(att.inputs[3]).toBe(attnMask);
  });

  it('causal from where(tril, s, -inf) and masked_fill(triu, -inf); GQA repeat_kv; q and k each scaled by d^-1/4', () => {
    const hkv = 2;
    const b = new GraphBuilder();
    const x = b.input('x', 'f32', [B, S, H * D]);
    const q = b.mul(heads(b, x, 'q'), D ** -0.25);
    const repeat = (t: Node): Node => b.reshape(b.expand(b.reshape(t, [B, hkv, 1, S, D]), [B, hkv, H / hkv, S, D]), [B, H, S, D]);
    const k = repeat(heads(b, x, 'k', hkv));
    const v = repeat(heads(b, x, 'v', hkv));
    const raw = b.matmul(q, b.mul(b.transpose(k, [0, 1, 3, 2]), D ** -0.25));
    const tril = b.constant(Array.from({ length: S * S }, (_v, i) => (i % S <= Math.floor(i / S) ? 1 : 0)), 'bool', [S, S]);
    const triu = b.constant(Array.from({ length: S * S }, (_v, i) => (i % S > Math.floor(i / S) ? 1 : 0)), 'bool', [1, 1, S, S]);
    for (const scores of [b.where(tril, raw, -Infinity), b.where(triu, -Infinity, raw)]) {
      const g = recognize(b.build({ y: merge(b, b.matmul(b.softmax(scores, -1), v)) }), recognizeAttentionPass, { has: ['attention'], gone: ['softmax', 'where', 'expand'] });
      const [att] = nodesOf(g, 'attention');
      expect(att.attrs.causal).toBe(true);
      expect(att.attrs.scale).toBeCloseTo(1 / Math.sqrt(D), 6);
      expect(att.inputs[1].shape).toEqual([B, S, hkv, D]);
    }
  });

  it('softmax in f32 between casts around f16 scores', () => {
    const b = new GraphBuilder();
    const [q, k, v] = ['q', 'k', 'v'].map((n) => b.input(n, 'f16', [B, H, S, D]));
    const p = b.cast(b.softmax(b.cast(b.mul(b.matmul(q, b.transpose(k, [0, 1, 3, 2])), 0.35), 'f32'), -1), 'f16');
    const g = recognize(b.build({ y: b.matmul(p, v) }), recognizeAttentionPass, { has: ['attention'], gone: ['softmax', 'cast'], tol: { rtol: 5e-3, atol: 2e-3 } });
    expect(nodesOf(g, 'attention')[0].attrs.scale).toBe(Math.fround(0.35));
  });

  it('keeps a non-causal mask explicit (strictly lower, top-left aligned, input masks)', () => {
    const T = S + 2;
    const b = new GraphBuilder();
    const q = b.input('q', 'f32', [B, H, S, D]);
    const k = b.input('k', 'f32', [B, H, T, D]);
    const v = b.input('v', 'f32', [B, H, T, D]);
    const boolMask = b.input('bool_mask', 'bool', [B, 1, S, T]);
    const raw = b.mul(b.matmul(q, b.transpose(k, [0, 1, 3, 2])), 0.3);
    const topLeft = b.constant(Array.from({ length: S * T }, (_v, i) => (i % T <= Math.floor(i / T) ? 0 : -1e9)), 'f32', [S, T]);
    const notKeep = b.constant(Array.from({ length: S * T }, (_v, i) => (i % T <= Math.floor(i / T) + 1 ? 0 : -1)), 'f32', [S, T]);
    const allTrue = Tensor.from('bool', [B, 1, S, T], new Array(B * S * T).fill(1).map((_x, i) => (i % 3 === 0 ? 0 : 1)));
    for (const scores of [b.add(raw, topLeft), b.add(raw, notKeep), b.where(boolMask, raw, -1e4), b.where(boolMask, -1e4, raw)]) {
      const g = recognize(b.build({ y: b.matmul(b.softmax(scores, -1), v) }), recognizeAttentionPass, { has: ['attention'], gone: ['softmax'], inputs: { bool_mask: allTrue } });
      const [att] = nodesOf(g, 'attention');
      expect(att.attrs.causal).toBe(false);
      expect(att.inputs).toHaveLength(4);
    }
  });

  it('does not fire on a softmax over another axis', () => {
    const b = new GraphBuilder();
    const [q, k, v] = ['q', 'k', 'v'].map((n) => b.input(n, 'f32', [B, H, S, S]));
    const y = b.matmul(b.softmax(b.mul(b.matmul(q, b.transpose(k, [0, 1, 3, 2])), 0.3), 2), v);
    expectUnchanged(b.build({ y }), recognizeAttentionPass, ['softmax', 'matmul'], ['attention']);
  });
});
