/**
 * Norm recognition: LayerNorm and RMSNorm written as primitive ops, the way PyTorch, ONNX and TF/keras exporters
 * write them, become `layernorm` and `rmsnorm` nodes.
 *
 * The export forms are recognized in small steps that compose, so each rule is one fact:
 *
 * | rule | fact |
 * | --- | --- |
 * | `rmsnorm` | `y * rsqrt(mean(y², -1, keep) + eps) → rmsnorm(y, 1)`; also `y / sqrt(…)`, `y * reciprocal(sqrt(…))`, `y * (1 / sqrt(…))`, with `y²` as `pow(y, 2)` or `y * y` |
 * | `layernorm-from-rmsnorm` | `rmsnorm(x - mean(x, -1, keep), w) → layernorm(x, w)` (PyTorch/ONNX: the centred value over the root of its mean square) |
 * | `layernorm-keras` | `x * s + (beta - mean * s)` or `x * s - mean * s`, `s = rsqrt(var + eps) [* gamma]`, `var = mean((x - mean)²)` → `layernorm(x, gamma, beta)` (TF/keras2onnx) |
 * | `norm-cast` | `cast(norm(cast(x, f32), 1), x.dtype) → norm(x, 1)` (HF computes norms in f32 around f16 activations; the norm kernels accumulate in f32 anyway) |
 * | `norm-scale` | `rmsnorm(x, 1) * g → rmsnorm(x, g)`, `layernorm(x, 1) * g → layernorm(x, g)` |
 * | `layernorm-bias` | `layernorm(x, w) + b → layernorm(x, w, b)` |
 *
 * So HF Llama's `w * cast(cast(x, f32) * rsqrt(mean(pow(cast(x, f32), 2)) + eps), f16)` becomes `rmsnorm(x, 1)` in f32,
 * then `rmsnorm(x, 1)` in f16, then `rmsnorm(x, w)`, all within one sweep of the rewrite driver.
 *
 * `eps` must be a splat constant. `gamma`/`beta` must run along the last axis: shape `[D]` or a broadcastable
 * equivalent such as `[1, 1, D]` (reshaped to `[D]`). Where a form has no `gamma`, the weight is ones: an inline
 * constant up to {@link MAX_INLINE_CONSTANT} elements, otherwise a new weight.
 * @module
 */
import { shapeEquals } from '../ir/dim.js';
import { isFloat, type DType } from '../ir/dtype.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import { MAX_INLINE_CONSTANT } from '../ir/ops.js';
import { decodeWeight, floatToHalf, WeightStore } from '../ir/weights.js';
import { rewritePass, type Pass } from './pass.js';
import { isSplatConstant, pat, splatValue, type Captures, type Pattern } from './pattern.js';
import type { RewriteContext, RewriteRule } from './rewrite.js';

// ---------------------------------------------------------------------------------------------------------------
// helpers

function sameType(a: Node, b: Node): boolean {
  return a.dtype === b.dtype && shapeEquals(a.shape, b.shape);
}

/** The static size of the last axis, or `undefined`. */
function lastDim(x: Node): number | undefined {
  const d = x.shape[x.rank - 1];
  return x.rank >= 1 && typeof d === 'number' ? d : undefined;
}

/** A ones vector `[d]`: an inline splat constant when small enough, else a new weight. */
function ones(d: number, dtype: DType, ctx: RewriteContext): Node {
  if (d <= MAX_INLINE_CONSTANT) return makeNode('constant', [], { dtype, shape: [d], values: [1] });
  const values = dtype === 'f16' ? new Uint16Array(d).fill(floatToHalf(1)) : new Float32Array(d).fill(1);
  return ctx.addWeight(WeightStore.entry('ones', dtype, [d], { values }));
}

/** Whether `w` holds only ones (a splat constant, or a dense weight such as those {@link ones} adds). */
function isOnes(w: Node, ctx: RewriteContext): boolean {
  if (w.op === 'constant') return isSplatConstant(w, 1);
  if (!isOp(w, 'weight')) return false;
  const e = ctx.weights.get(w.attrs.id);
  return e.encoding.kind === 'dense' && decodeWeight(e).every((v) => v === 1);
}

/** `g` as a `[d]` vector of `dtype` when its shape is `[d]` or a broadcastable equivalent (`[1, 1, d]`), else undefined. */
function asVector(g: Node, d: number, dtype: DType): Node | undefined {
  if (g.dtype !== dtype || g.rank < 1 || g.shape[g.rank - 1] !== d || g.shape.slice(0, -1).some((x) => x !== 1)) return undefined;
  return g.rank === 1 ? g : makeNode('reshape', [g], { shape: [d] });
}

/** A mean over the last axis keeping it (`mean(x, -1, keepdim=True)`). */
function meanLast(input: Pattern, capture?: string): Pattern {
  return pat.op('mean', [input], {
    capture,
    where: (n) => {
      const { keepDims, axes } = attrsOf(n, 'mean');
      return keepDims && axes.length === 1 && axes[0] === n.rank - 1;
    },
  });
}

/** `p²` as exporters write it. */
function squares(p: Pattern): Pattern[] {
  return [pat.op('pow', [p, pat.constant(2)]), pat.op('mul', [p, p])];
}

/** `1 / sqrt(p)` as exporters write it. */
function inverseRoots(p: Pattern): Pattern[] {
  return [pat.op('rsqrt', [p]), pat.op('reciprocal', [pat.op('sqrt', [p])]), pat.op('div', [pat.constant(1), pat.op('sqrt', [p])])];
}

/** `mean(sq) + eps` with `eps` a splat constant (captured as `eps`). */
function plusEps(sq: Pattern): Pattern {
  return pat.op('add', [meanLast(sq), pat.constant(undefined, 'eps')]);
}

/** Builds every rule of one name from a list of patterns (the export variants), sharing one `apply`. */
function variants(name: string, patterns: readonly Pattern[], apply: (node: Node, c: Captures, ctx: RewriteContext) => Node | undefined): RewriteRule[] {
  return patterns.map((pattern) => ({
    name,
    root: pattern.op as RewriteRule['root'],
    pattern,
    apply: ({ node, captures }, ctx) => {
      const r = apply(node, captures, ctx);
      return r && sameType(r, node) ? r : undefined;
    },
  }));
}

// ---------------------------------------------------------------------------------------------------------------
// patterns

/** `y * rsqrt(mean(y²) + eps)` and its spellings; captures `y`, `eps`. */
const RMS_PATTERNS: Pattern[] = squares(pat.any('y')).flatMap((sq) => [
  ...inverseRoots(plusEps(sq)).map((inv) => pat.op('mul', [pat.any('y'), inv])),
  pat.op('div', [pat.any('y'), pat.op('sqrt', [plusEps(sq)])]),
]);

/**
 * The keras form `x * s + (beta - mean * s)` (or `x * s - mean * s` without beta), `s = rsqrt(var + eps) [* gamma]`;
 * captures `x`, `m` (the mean), `s`, `eps`, and `gamma`/`beta` when present.
 */
const KERAS_PATTERNS: Pattern[] = (() => {
  const mean = meanLast(pat.any('x'), 'm');
  const centred = pat.op('sub', [pat.any('x'), mean]);
  const scales = squares(centred).flatMap((sq) =>
    inverseRoots(plusEps(sq)).flatMap((inv) => [
      { ...inv, capture: 's' },
      pat.op('mul', [inv, pat.any('gamma')], { capture: 's' }),
    ]),
  );
  const shifted = pat.op('mul', [pat.any('m'), pat.any('s')]);
  return scales.flatMap((s) => [
    pat.op('add', [pat.op('mul', [pat.any('x'), s]), pat.op('sub', [pat.any('beta'), shifted])]),
    pat.op('sub', [pat.op('mul', [pat.any('x'), s]), shifted]),
  ]);
})();

// ---------------------------------------------------------------------------------------------------------------
// rules

/**
 * The norm recognition rules (see the module comment).
 * @internal
 */
export const recognizeNormsRules: readonly RewriteRule[] = [
  ...variants('rmsnorm', RMS_PATTERNS, (_node, { y, eps }, ctx) => {
    const d = lastDim(y);
    return d === undefined || !isFloat(y.dtype) ? undefined : makeNode('rmsnorm', [y, ones(d, y.dtype, ctx)], { eps: splatValue(eps)! });
  }),
  ...variants(
    'layernorm-from-rmsnorm',
    [pat.op('rmsnorm', [pat.op('sub', [pat.any('x'), meanLast(pat.any('x'))]), pat.any('w')])],
    (node, { x, w }) => makeNode('layernorm', [x, w], node.attrs),
  ),
  ...variants('layernorm-keras', KERAS_PATTERNS, (_node, { x, eps, gamma, beta }, ctx) => {
    const d = lastDim(x);
    if (d === undefined || !isFloat(x.dtype)) return undefined;
    const w = gamma ? asVector(gamma, d, x.dtype) : ones(d, x.dtype, ctx);
    const b = beta && asVector(beta, d, x.dtype);
    if (!w || (beta && !b)) return undefined;
    return makeNode('layernorm', b ? [x, w, b] : [x, w], { eps: splatValue(eps)! });
  }),
  ...variants(
    'norm-cast',
    [pat.op('cast', [pat.op(['rmsnorm', 'layernorm'], [pat.op('cast', [pat.any('x')]), pat.any('w')], { capture: 'n' })])],
    (node, { x, w, n }, ctx) => {
      const d = lastDim(x);
      if (d === undefined || node.dtype !== x.dtype || !isFloat(x.dtype) || n.dtype !== 'f32' || !isOnes(w, ctx)) return undefined;
      return makeNode(n.op, [x, ones(d, x.dtype, ctx)], n.attrs);
    },
  ),
  ...variants('norm-scale', [pat.op('mul', [pat.op(['rmsnorm', 'layernorm'], [pat.any('x'), pat.any('w')], { capture: 'n' }), pat.any('g')])], (node, { x, w, n, g }, ctx) => {
    const d = lastDim(x);
    const v = d === undefined ? undefined : asVector(g, d, x.dtype);
    return v && sameType(node, n) && isOnes(w, ctx) ? makeNode(n.op, [x, v], n.attrs) : undefined;
  }),
  ...variants('layernorm-bias', [pat.op('add', [pat.op('layernorm', [pat.any('x'), pat.any('w')], { capture: 'n' }), pat.any('b')])], (node, { x, w, n, b }) => {
    const d = lastDim(x);
    const v = d === undefined ? undefined : asVector(b, d, x.dtype);
    return v && sameType(node, n) ? makeNode('layernorm', [x, w, v], n.attrs) : undefined;
  }),
];

/** The `recognize-norms` pass: LayerNorm and RMSNorm from primitive ops. */
export const recognizeNormsPass: Pass = rewritePass({
  name: 'recognize-norms',
  description: 'recognize LayerNorm and RMSNorm written as primitive ops (PyTorch/ONNX, TF/keras and HF Llama export forms)',
  rules: recognizeNormsRules,
  kind: 'fused',
});
