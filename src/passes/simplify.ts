/**
 * Algebraic simplification: a list of facts, each a rewrite rule.
 *
 * | rule | fact |
 * | --- | --- |
 * | `mul-one` | `x * 1 → x` (either operand order) |
 * | `add-zero` | `x + 0 → x` (either operand order) |
 * | `sub-zero` | `x - 0 → x` |
 * | `div-one` | `x / 1 → x` |
 * | `neg-neg` | `-(-x) → x` |
 * | `reshape-noop` | reshape to the operand's own shape → operand |
 * | `reshape-reshape` | `reshape(reshape(x)) → reshape(x)` |
 * | `transpose-identity` | transpose by the identity permutation → operand |
 * | `transpose-transpose` | `transpose(transpose(x, p), q) → transpose(x, p∘q)` (the operand when that is the identity) |
 * | `cast-noop` | cast to the operand's own dtype → operand |
 * | `cast-cast` | `cast(cast(x, A), B) → cast(x, B)` when `x → A` is exact (bool → any, f16 → f32) |
 * | `matmul-transpose` | `matmul(transpose(a, swap last two), b) → matmul(a, b, transA = !transA)`, likewise for `b` |
 * | `expand-noop` | expand to the operand's own shape → operand |
 * | `expand-expand` | `expand(expand(x)) → expand(x)` |
 * | `slice-full` | slice axes covering the whole axis (start 0, end = dim, step 1) dropped; none left → operand |
 * | `concat-single` | concat of one operand → operand |
 *
 * Broadcasting caveat: `x * 1` and `x + 0` only drop the constant when the result has `x`'s shape; when the constant
 * broadcasts `x` to a larger shape they are left alone. `x + 0 → x` treats `-0 + 0` as `-0` (as every ML compiler
 * does); all other rules are exact.
 * @module
 */
import { shapeEquals } from '../ir/dim.js';
import type { DType } from '../ir/dtype.js';
import { attrsOf, isOp } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import { rewritePass, type Pass } from './pass.js';
import { pat } from './pattern.js';
import type { RewriteRule } from './rewrite.js';

/** `op(x, constant c) → x` when the result has x's type. */
function identityOperand(name: string, op: 'mul' | 'add' | 'sub' | 'div', c: number): RewriteRule {
  return {
    name,
    root: op,
    pattern: pat.op(op, [pat.any('x'), pat.constant(c)]),
    apply: ({ node, captures: { x } }) => (shapeEquals(x.shape, node.shape) ? x : undefined),
  };
}

function isIdentityPerm(perm: readonly number[]): boolean {
  return perm.every((p, i) => p === i);
}

/** Whether `n` is a transpose swapping exactly its last two axes. */
function swapsLastTwo(n: Node): boolean {
  if (!isOp(n, 'transpose')) return false;
  const { perm } = n.attrs;
  const r = perm.length;
  return r >= 2 && perm[r - 1] === r - 2 && perm[r - 2] === r - 1 && perm.slice(0, r - 2).every((p, i) => p === i);
}

/** Whether casting `from → to` keeps every value exactly. */
function exactCast(from: DType, to: DType): boolean {
  return from === to || from === 'bool' || (from === 'f16' && to === 'f32');
}

/**
 * The simplification rules.
 * @internal
 */
export const simplifyRules: readonly RewriteRule[] = [
  identityOperand('mul-one', 'mul', 1),
  identityOperand('add-zero', 'add', 0),
  identityOperand('sub-zero', 'sub', 0),
  identityOperand('div-one', 'div', 1),
  {
    name: 'neg-neg',
    root: 'neg',
    pattern: pat.op('neg', [pat.op('neg', [pat.any('x')])]),
    apply: ({ captures: { x } }) => x,
  },
  {
    name: 'reshape-noop',
    root: 'reshape',
    apply: ({ node }) => (shapeEquals(node.inputs[0].shape, node.shape) ? node.inputs[0] : undefined),
  },
  {
    name: 'reshape-reshape',
    root: 'reshape',
    pattern: pat.op('reshape', [pat.op('reshape', [pat.any('x')])]),
    apply: ({ node, captures: { x } }) => makeNode('reshape', [x], { shape: attrsOf(node, 'reshape').shape }),
  },
  {
    name: 'transpose-identity',
    root: 'transpose',
    apply: ({ node }) => (isIdentityPerm(attrsOf(node, 'transpose').perm) ? node.inputs[0] : undefined),
  },
  {
    name: 'transpose-transpose',
    root: 'transpose',
    pattern: pat.op('transpose', [pat.op('transpose', [pat.any('x')], { capture: 'inner' })]),
    apply: ({ node, captures: { x, inner } }) => {
      // out[i] = inner[q[i]] = x[p[q[i]]]
      const p = attrsOf(inner, 'transpose').perm;
      const perm = attrsOf(node, 'transpose').perm.map((q) => p[q]);
      return isIdentityPerm(perm) ? x : makeNode('transpose', [x], { perm });
    },
  },
  {
    name: 'cast-noop',
    root: 'cast',
    apply: ({ node }) => (node.inputs[0].dtype === node.dtype ? node.inputs[0] : undefined),
  },
  {
    name: 'cast-cast',
    root: 'cast',
    pattern: pat.op('cast', [pat.op('cast', [pat.any('x')], { capture: 'inner' })]),
    apply: ({ node, captures: { x, inner } }) => (exactCast(x.dtype, inner.dtype) ? makeNode('cast', [x], { to: node.dtype }) : undefined),
  },
  {
    name: 'matmul-transpose',
    root: 'matmul',
    apply: ({ node }) => {
      let [a, b] = node.inputs;
      let { transA, transB } = attrsOf(node, 'matmul');
      const quantized = attrsOf(node, 'matmul').actQuant !== undefined;
      // a W8A8 matmul quantizes the rows of an untransposed A: only B's transpose folds
      if (!(swapsLastTwo(a) && !quantized) && !swapsLastTwo(b)) return undefined;
      if (swapsLastTwo(a) && !quantized) [a, transA] = [a.inputs[0], !transA];
      if (swapsLastTwo(b)) [b, transB] = [b.inputs[0], !transB];
      return makeNode('matmul', [a, b], { ...node.attrs, transA, transB });
    },
  },
  {
    name: 'expand-noop',
    root: 'expand',
    apply: ({ node }) => (shapeEquals(node.inputs[0].shape, node.shape) ? node.inputs[0] : undefined),
  },
  {
    name: 'expand-expand',
    root: 'expand',
    pattern: pat.op('expand', [pat.op('expand', [pat.any('x')])]),
    apply: ({ node, captures: { x } }) => makeNode('expand', [x], { shape: [...node.shape] }),
  },
  {
    name: 'slice-full',
    root: 'slice',
    apply: ({ node }) => {
      const x = node.inputs[0];
      const a = attrsOf(node, 'slice');
      const keep = a.axes.map((_ax, i) => i).filter((i) => !(a.steps[i] === 1 && a.starts[i] === 0 && a.ends[i] === x.shape[a.axes[i]]));
      if (keep.length === a.axes.length) return undefined;
      if (keep.length === 0) return x;
      const pick = <T>(list: readonly T[]): T[] => keep.map((i) => list[i]);
      return makeNode('slice', [x], { axes: pick(a.axes), starts: pick(a.starts), ends: pick(a.ends), steps: pick(a.steps) });
    },
  },
  {
    name: 'concat-single',
    root: 'concat',
    apply: ({ node }) => (node.inputs.length === 1 ? node.inputs[0] : undefined),
  },
];

/** The `simplify` pass. */
export const simplifyPass: Pass = rewritePass({
  name: 'simplify',
  description: 'algebraic simplification: drop identity ops (x*1, x+0, no-op reshapes, casts, transposes, slices), merge chains',
  rules: simplifyRules,
  kind: 'removed',
});
