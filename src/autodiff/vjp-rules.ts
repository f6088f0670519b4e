/**
 * The vector-Jacobian product rule of every differentiable op, in one table ({@link VJP_RULES}). A rule gets a node,
 * the cotangent `g` of its result (same shape and dtype), and returns the cotangent of each operand, built from IR ops:
 * broadcasting is undone by sums ({@link unbroadcast}), a matmul's gradient is two matmuls with flipped transposes, a
 * slice's is a gather from `[g, 0]` (or a concat with zeros), a gather's is a one-hot matmul (scatter-add), and
 * attention's is the reverse pass through its decomposition into matmuls and a masked softmax.
 *
 * Conventions at points where an op has no derivative (they are a measure-zero set; tests keep clear of them):
 * - `relu` and `abs` at 0: derivative 0 (`abs` uses `sign(0) = 0`);
 * - ties of `maximum`/`minimum`, and of `max` reduction: the gradient is split evenly among the tied operands (so
 *   `maximum(x, x)` and a max over broadcast copies differentiate as the identity);
 * - comparisons, casts to integers or bool, `range` and integer arithmetic are piecewise constant: their derivative is
 *   0 almost everywhere, so nothing flows back through them (the engine never asks for their rules);
 * - a cast between float types (f32 ⇄ f16) passes the gradient through (straight-through rounding).
 * @module
 */
import { UnsupportedOpError } from '../errors.js';
import { GraphBuilder } from '../ir/builder.js';
import { dimAdd, dimProduct, dimSub, type Dim, type Shape } from '../ir/dim.js';
import { isFloat } from '../ir/dtype.js';
import { attrsOf } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import type { OpName } from '../ir/ops.js';

/**
 * What a rule may call besides building nodes.
 * @internal
 */
export interface VjpContext {
  /** Which operands need a cotangent (rules may skip building the others). */
  readonly needs: readonly boolean[];
  /**
   * Reverse pass from `out` (whose cotangent is `g`) to `leaves`, which it treats as opaque: the cotangent of each
   * leaf, or undefined when none reaches it. Rules that differentiate an op through a decomposition call it.
   */
  backprop(out: Node, g: Node, leaves: readonly Node[]): (Node | undefined)[];
}

/**
 * A vector-Jacobian product rule: the cotangents of a node's operands (undefined for none) given its own.
 * @internal
 */
export type VjpRule = (node: Node, g: Node, ctx: VjpContext) => readonly (Node | undefined)[];

/** Node factory (its input list and weight store are never used: rules only combine existing nodes). */
const b = new GraphBuilder();

/** A constant of `like`'s dtype, broadcast to `shape` (static or symbolic). */
function filled(like: Node, v: number, shape: Shape): Node {
  const c = b.scalarLike(like, v);
  return shape.length === 0 ? c : b.expand(c, shape);
}

/** A dim (maybe symbolic) as a float scalar node of `like`'s dtype. */
function dimScalar(like: Node, d: Dim): Node {
  if (typeof d === 'number') return b.scalarLike(like, d);
  return b.cast(makeNode('constant', [], { dtype: 'i32', shape: [], values: [d] }), like.dtype);
}

/** A bool node as 0/1 in `like`'s dtype. */
function indicator(cond: Node, like: Node): Node {
  return b.cast(cond, like.dtype);
}

/**
 * Sums `g` (a cotangent of a broadcast result) down to `shape`: over the leading axes `shape` lacks and over the axes
 * where `shape` has 1 and `g` does not. The inverse of numpy broadcasting, for cotangents.
 * @internal
 */
export function unbroadcast(g: Node, shape: Shape): Node {
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  let out = axes.length ? b.sum(g, axes, true) : g;
  if (lead > 0) out = b.reshape(out, shape);
  return out;
}

/** `x`'s shape with the reduced `axes` set to 1. */
function keptShape(x: Node, axes: readonly number[]): Dim[] {
  return x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

/** The cotangent of a reduction's result reshaped so that it broadcasts against the operand. */
function keptCotangent(node: Node, g: Node): Node {
  const a = attrsOf(node, node.op as 'sum');
  return a.keepDims ? g : b.reshape(g, keptShape(node.inputs[0], a.axes));
}

function inversePerm(p: readonly number[]): number[] {
  const inv = new Array<number>(p.length);
  p.forEach((x, i) => (inv[x] = i));
  return inv;
}

const SQRT_2_OVER_PI = 0.7978845608028654; // √(2/π), the tanh-GELU constant
const INV_SQRT_2PI = 0.3989422804014327; // 1/√(2π)
const TWO_OVER_SQRT_PI = 1.1283791670955126; // 2/√π

/** Elementwise unary rules: `g · f'(x)` with `f'` written from `x` and the result `y`. */
function unaryRule(derivative: (x: Node, y: Node, node: Node) => Node): VjpRule {
  return (node, g) => [b.mul(g, derivative(node.inputs[0], node, node))];
}

/** `cast(x > 0) - cast(x < 0)`. */
function sign(x: Node): Node {
  return b.sub(indicator(b.greater(x, 0), x), indicator(b.less(x, 0), x));
}

/**
 * The rule of `maximum` (`pick` = greater) or `minimum` (`pick` = less): the selected operand gets `g`, ties split it
 * evenly.
 */
function extremumRule(pick: 'greater' | 'less'): VjpRule {
  return (node, g, { needs }) => {
    const [x, y] = node.inputs;
    const tie = b.mul(indicator(b.equal(x, y), x), 0.5);
    const toX = b.add(indicator(b.binary(pick, x, y), x), tie);
    const toY = b.add(indicator(b.binary(pick, y, x), x), tie);
    return [needs[0] ? unbroadcast(b.mul(g, toX), x.shape) : undefined, needs[1] ? unbroadcast(b.mul(g, toY), y.shape) : undefined];
  };
}

/**
 * `g` scattered back into a zero tensor with `n` along `axis`, at the positions one slice axis selected. Symbolic
 * bounds are taken as they are: the kernels clamp them at run time, so the rule is right only for bounds that need no
 * clamping (those front ends write: `past:past+seq`, `seq-1:`).
 */
function padSliceAxis(g: Node, n: Dim, axis: number, start: Dim, end: Dim | null, step: number): Node {
  const len = g.shape[axis];
  if (typeof n === 'number' && typeof start === 'number' && typeof len === 'number' && (end === null || typeof end === 'number')) {
    // any step: gather from [g, 0] along the axis, position j reading g's element i when j = start + i·step
    const idx = new Array<number>(n).fill(len);
    for (let i = 0; i < len; i++) idx[start + i * step] = i;
    const zeroShape = g.shape.map((d, i) => (i === axis ? 1 : d));
    const padded = b.concat([g, filled(g, 0, zeroShape)], axis);
    return b.gather(padded, b.constant(idx, 'i32', [n]), axis);
  }
  // symbolic bounds (step 1): zeros before and after
  if (step !== 1 || end === null) throw new UnsupportedOpError(['slice'], `autodiff: slice with step ${step} over symbolic bounds`);
  const pieces: Node[] = [];
  const zeros = (d: Dim): Node => filled(g, 0, g.shape.map((e, i) => (i === axis ? d : e)));
  if (start !== 0) pieces.push(zeros(start));
  pieces.push(g);
  const after = dimSub(n, end);
  if (after !== 0) pieces.push(zeros(after));
  return pieces.length === 1 ? g : b.concat(pieces, axis);
}

/**
 * Attention as primitive ops, for its reverse pass: `softmax(q·kᵀ·scale + mask)·v` per head, with KV heads repeated
 * for GQA, causal and bool masks as `where(allowed, s, -inf)`, and fully masked rows giving 0 as the kernel does.
 */
function attentionDecomposition(node: Node): Node {
  const [q, k, v, mask] = node.inputs;
  const { causal, scale } = attrsOf(node, 'attention');
  const [B, S, Hq, D] = q.shape;
  const [, T, Hkv] = k.shape;
  const Dv = v.shape[3];
  const group = (Hq as number) / (Hkv as number);
  const heads = (t: Node, d: Dim): Node => {
    const th = b.transpose(t, [0, 2, 1, 3]); // [B, Hkv, T, d]
    if (group === 1) return th;
    const rep = b.expand(b.reshape(th, [B, Hkv, 1, T, d]), [B, Hkv, group, T, d]);
    return b.reshape(rep, [B, Hq, T, d]);
  };
  const qh = b.transpose(q, [0, 2, 1, 3]); // [B, Hq, S, D]
  let s = b.mul(b.matmul(qh, heads(k, D), { transB: true }), scale); // [B, Hq, S, T]
  const minusInf = b.scalarLike(s, -Infinity);
  if (causal) {
    // key j is visible to query i when j < i + (T - S) + 1
    const i = b.reshape(b.range(S), [S, 1]);
    const offset = makeNode('constant', [], { dtype: 'i32', shape: [], values: [dimAdd(dimSub(T, S), 1)] });
    s = b.where(b.less(b.range(T), b.add(i, offset)), s, minusInf);
  }
  if (mask) s = mask.dtype === 'bool' ? b.where(mask, s, minusInf) : b.add(s, mask);
  const p = b.where(b.greater(s, minusInf), b.softmax(s, -1), 0);
  const o = b.matmul(p, heads(v, Dv)); // [B, Hq, S, Dv]
  return b.transpose(o, [0, 2, 1, 3]);
}

/**
 * The rule of every differentiable op, by op name.
 * @internal
 */
export const VJP_RULES: Readonly<Partial<Record<OpName, VjpRule>>> = {
  // --- elementwise unary
  neg: (_n, g) => [b.neg(g)],
  abs: unaryRule((x) => sign(x)),
  exp: unaryRule((_x, y) => y),
  log: (node, g) => [b.div(g, node.inputs[0])],
  sqrt: (node, g) => [b.div(b.mul(g, 0.5), node)],
  rsqrt: unaryRule((_x, y) => b.mul(b.mul(y, b.mul(y, y)), -0.5)),
  reciprocal: unaryRule((_x, y) => b.neg(b.mul(y, y))),
  tanh: unaryRule((_x, y) => b.sub(1, b.mul(y, y))),
  erf: unaryRule((x) => b.mul(b.exp(b.neg(b.mul(x, x))), TWO_OVER_SQRT_PI)),
  sin: unaryRule((x) => b.cos(x)),
  cos: unaryRule((x) => b.neg(b.sin(x))),
  sigmoid: unaryRule((_x, y) => b.mul(y, b.sub(1, y))),
  silu: unaryRule((x) => {
    const s = b.sigmoid(x);
    return b.mul(s, b.add(1, b.mul(x, b.sub(1, s))));
  }),
  gelu: unaryRule((x, _y, node) => {
    if (attrsOf(node, 'gelu').approximate === 'tanh') {
      // y = x·σ(2u), u = √(2/π)(x + 0.044715x³): y' = σ + x·σ(1-σ)·2√(2/π)(1 + 3·0.044715x²)
      const x2 = b.mul(x, x);
      const u2 = b.mul(b.add(x, b.mul(b.mul(x2, x), 0.044715)), 2 * SQRT_2_OVER_PI);
      const s = b.sigmoid(u2);
      const du2 = b.mul(b.add(1, b.mul(x2, 3 * 0.044715)), 2 * SQRT_2_OVER_PI);
      return b.add(s, b.mul(b.mul(x, b.mul(s, b.sub(1, s))), du2));
    }
    // y = x·Φ(x): y' = Φ(x) + x·φ(x), Φ(x) = (1 + erf(x/√2))/2
    const cdf = b.mul(b.add(1, b.erf(b.mul(x, Math.SQRT1_2))), 0.5);
    const pdf = b.mul(b.exp(b.mul(b.mul(x, x), -0.5)), INV_SQRT_2PI);
    return b.add(cdf, b.mul(x, pdf));
  }),
  relu: unaryRule((x) => indicator(b.greater(x, 0), x)),

  // --- elementwise binary (cotangents summed back over broadcast axes)
  add: (node, g) => [unbroadcast(g, node.inputs[0].shape), unbroadcast(g, node.inputs[1].shape)],
  sub: (node, g, { needs }) => [unbroadcast(g, node.inputs[0].shape), needs[1] ? unbroadcast(b.neg(g), node.inputs[1].shape) : undefined],
  mul: (node, g, { needs }) => {
    const [x, y] = node.inputs;
    return [needs[0] ? unbroadcast(b.mul(g, y), x.shape) : undefined, needs[1] ? unbroadcast(b.mul(g, x), y.shape) : undefined];
  },
  div: (node, g, { needs }) => {
    const [x, y] = node.inputs;
    // d(x/y)/dy = -x/y² = -(x/y)/y
    return [needs[0] ? unbroadcast(b.div(g, y), x.shape) : undefined, needs[1] ? unbroadcast(b.neg(b.div(b.mul(g, node), y)), y.shape) : undefined];
  },
  pow: (node, g, { needs }) => {
    const [x, e] = node.inputs;
    // d(x^e)/dx = e·x^(e-1); d(x^e)/de = x^e·ln x (x > 0)
    const dx = needs[0] ? unbroadcast(b.mul(g, b.mul(e, b.pow(x, b.sub(e, 1)))), x.shape) : undefined;
    const de = needs[1] ? unbroadcast(b.mul(g, b.mul(node, b.log(x))), e.shape) : undefined;
    return [dx, de];
  },
  maximum: extremumRule('greater'),
  minimum: extremumRule('less'),
  where: (node, g, { needs }) => {
    const [c, x, y] = node.inputs;
    return [
      undefined,
      needs[1] ? unbroadcast(b.where(c, g, 0), x.shape) : undefined,
      needs[2] ? unbroadcast(b.where(c, 0, g), y.shape) : undefined,
    ];
  },
  cast: (node, g) => {
    const x = node.inputs[0];
    return [isFloat(x.dtype) && isFloat(node.dtype) ? b.cast(g, x.dtype) : undefined];
  },

  // --- matmul: C = op(A)·op(B) (op = optional transpose of the last two axes), batch dims broadcast
  matmul: (node, g, { needs }) => {
    const [A, B] = node.inputs;
    const { transA, transB } = attrsOf(node, 'matmul');
    // dA = g·op(B)ᵀ (stored transposed when transA); dB = op(A)ᵀ·g (likewise)
    const dA = transA ? b.matmul(B, g, { transA: transB, transB: true }) : b.matmul(g, B, { transB: !transB });
    const dB = transB ? b.matmul(g, A, { transA: true, transB: transA }) : b.matmul(A, g, { transA: !transA });
    return [needs[0] ? unbroadcast(dA, A.shape) : undefined, needs[1] ? unbroadcast(dB, B.shape) : undefined];
  },

  // --- reductions, softmax, norms
  sum: (node, g) => [b.expand(keptCotangent(node, g), node.inputs[0].shape)],
  mean: (node, g) => {
    const x = node.inputs[0];
    const count = dimProduct(attrsOf(node, 'mean').axes.map((a) => x.shape[a]));
    return [b.expand(b.div(keptCotangent(node, g), dimScalar(g, count)), x.shape)];
  },
  max: (node, g) => {
    const x = node.inputs[0];
    const { axes } = attrsOf(node, 'max');
    const yk = attrsOf(node, 'max').keepDims ? node : b.reshape(node, keptShape(x, axes));
    // every element equal to the maximum shares the gradient evenly
    const hit = indicator(b.equal(x, yk), x);
    const share = b.div(keptCotangent(node, g), b.sum(hit, axes, true));
    return [b.mul(hit, share)];
  },
  softmax: (node, g) => {
    const { axis } = attrsOf(node, 'softmax');
    return [b.mul(node, b.sub(g, b.sum(b.mul(g, node), [axis], true)))];
  },
  rmsnorm: (node, g, { needs }) => {
    const [x, w] = node.inputs;
    const { eps } = attrsOf(node, 'rmsnorm');
    const r = b.rsqrt(b.add(b.mean(b.mul(x, x), [-1], true), eps));
    const xhat = b.mul(x, r);
    const gh = b.mul(g, w);
    const dx = needs[0] ? b.mul(r, b.sub(gh, b.mul(xhat, b.mean(b.mul(gh, xhat), [-1], true)))) : undefined;
    return [dx, needs[1] ? unbroadcast(b.mul(g, xhat), w.shape) : undefined];
  },
  layernorm: (node, g, { needs }) => {
    const [x, w, bias] = node.inputs;
    const { eps } = attrsOf(node, 'layernorm');
    const xc = b.sub(x, b.mean(x, [-1], true));
    const r = b.rsqrt(b.add(b.mean(b.mul(xc, xc), [-1], true), eps));
    const xhat = b.mul(xc, r);
    const gh = b.mul(g, w);
    const dx = needs[0] ? b.mul(r, b.sub(b.sub(gh, b.mean(gh, [-1], true)), b.mul(xhat, b.mean(b.mul(gh, xhat), [-1], true)))) : undefined;
    return [dx, needs[1] ? unbroadcast(b.mul(g, xhat), w.shape) : undefined, bias && needs[2] ? unbroadcast(g, bias.shape) : undefined];
  },

  // rotations are orthogonal: the transpose rotates by the negated angles (float32 angles are odd in the position)
  rope: (node, g) => [makeNode('rope', [g, b.neg(node.inputs[1])], node.attrs), undefined],

  // --- layout
  reshape: (node, g) => [b.reshape(g, node.inputs[0].shape)],
  transpose: (node, g) => [b.transpose(g, inversePerm(attrsOf(node, 'transpose').perm))],
  expand: (node, g) => [unbroadcast(g, node.inputs[0].shape)],
  concat: (node, g, { needs }) => {
    const { axis } = attrsOf(node, 'concat');
    let at: Dim = 0;
    return node.inputs.map((x, i) => {
      const start = at;
      at = dimAdd(at, x.shape[axis]);
      return needs[i] ? b.slice(g, { axes: [axis], starts: [start], ends: [at] }) : undefined;
    });
  },
  slice: (node, g) => {
    const x = node.inputs[0];
    const a = attrsOf(node, 'slice');
    let out = g;
    a.axes.forEach((axis, i) => (out = padSliceAxis(out, x.shape[axis], axis, a.starts[i], a.ends[i], a.steps[i])));
    return [out];
  },
  gather: (node, g) => {
    // scatter-add as a matmul with the one-hot matrix of the indices: dx[p, j, q] = Σ_i [idx_i = j] g[p, i, q]
    // (the IR has no scatter op; the one-hot matrix is indices × axis length, fine for the CPU backend's model sizes)
    const [x, idx] = node.inputs;
    const { axis } = attrsOf(node, 'gather');
    const len = x.shape[axis];
    const pre = dimProduct(x.shape.slice(0, axis));
    const post = dimProduct(x.shape.slice(axis + 1));
    const count = dimProduct(idx.shape);
    let flat = b.reshape(idx.dtype === 'i32' ? idx : b.cast(idx, 'i32'), [count, 1]);
    const lenI32 = makeNode('constant', [], { dtype: 'i32', shape: [], values: [len] });
    flat = b.where(b.less(flat, 0), b.add(flat, lenI32), flat); // negative indices count from the end
    const oneHot = indicator(b.equal(flat, b.range(len)), x); // [count, len]
    const dx = b.matmul(oneHot, b.reshape(g, [pre, count, post]), { transA: true }); // [pre, len, post]
    return [b.reshape(dx, x.shape), undefined];
  },

  // --- attention: the reverse pass through its decomposition
  attention: (node, g, { needs, backprop }) => {
    // backprop gives each distinct operand its total cotangent: give it to the first position that holds it
    const leaves = [...new Set(node.inputs.filter((_x, i) => needs[i]))];
    const grads = backprop(attentionDecomposition(node), g, leaves);
    return node.inputs.map((x, i) => (needs[i] && node.inputs.indexOf(x) === i ? grads[leaves.indexOf(x)] : undefined));
  },
};
