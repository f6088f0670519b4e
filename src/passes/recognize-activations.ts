/**
 * Activation recognition: GELU (erf and tanh forms), SiLU and sigmoid written as primitive ops become `gelu`, `silu`
 * and `sigmoid` nodes.
 *
 * | rule | fact |
 * | --- | --- |
 * | `sigmoid` | `1 / (1 + exp(-x)) → sigmoid(x)` (also `reciprocal(1 + exp(-x))`; `-x` as `neg(x)`, `x * -1` or `0 - x`) |
 * | `silu` | `x * sigmoid(x) → silu(x)` |
 * | `silu-div` | `x / (1 + exp(-x)) → silu(x)` |
 * | `gelu-erf` | `0.5 * x * (1 + erf(x / √2)) → gelu(x)` in any association (`x * 0.5 * …`, ONNX's `(x * (erf(…) + 1)) * 0.5`), with `x * 0.7071…` for `x / 1.4142…` |
 * | `gelu-tanh` | `0.5 * x * (1 + tanh(√(2/π) * (x + 0.044715 * x³))) → gelu(x, tanh)`, `x³` as `pow(x, 3)` or `x * x * x`, also with `√(2/π)` multiplied through, or factored as Megatron writes it: `(√(2/π) x) * (1 + 0.044715 x²)` |
 *
 * Constants are accepted within 1e-4 relative of their exact values (exporters print them with few digits). Sigmoid
 * is recognized before SiLU within the same sweep (bottom-up), so `x * (1 / (1 + exp(-x)))` becomes `silu(x)`.
 * @module
 */
import { shapeEquals } from '../ir/dim.js';
import { makeNode, type Node } from '../ir/node.js';
import { rewritePass, type Pass } from './pass.js';
import { pat, splatValue, type Captures, type Pattern } from './pattern.js';
import type { RewriteRule } from './rewrite.js';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const GELU_CUBIC = 0.044715;

// ---------------------------------------------------------------------------------------------------------------
// helpers

/** Whether `n` is a splat constant within `rtol` (relative) of `v`. */
function isSplatNear(n: Node, v: number, rtol = 1e-4): boolean {
  const c = splatValue(n);
  return c !== undefined && Math.abs(c - v) <= rtol * Math.abs(v);
}

/** Pattern: a splat constant within 1e-4 relative of `v`. */
function near(v: number): Pattern {
  return pat.where((n) => isSplatNear(n, v));
}

/** The `x` of `x * k` / `k * x` / `x / (1/k)` (k a splat constant ≈ `k`), or `undefined`. */
function scaledOperand(n: Node, k: number): Node | undefined {
  const [a, b] = n.inputs;
  if (n.op === 'mul') return isSplatNear(b, k) ? a : isSplatNear(a, k) ? b : undefined;
  if (n.op === 'div') return isSplatNear(b, 1 / k) ? a : undefined;
  return undefined;
}

/** The `x` of `-x` written as `neg(x)`, `x * -1` or `0 - x`, or `undefined`. */
function negatedOperand(n: Node): Node | undefined {
  if (n.op === 'neg') return n.inputs[0];
  if (n.op === 'sub' && splatValue(n.inputs[0]) === 0) return n.inputs[1];
  return n.op === 'mul' ? scaledOperand(n, -1) : undefined;
}

/** Whether `n` is `x³`: `pow(x, 3)`, `(x * x) * x` or `x * (x * x)`. */
function isCubeOf(n: Node, x: Node): boolean {
  if (n.op === 'pow') return n.inputs[0] === x && isSplatNear(n.inputs[1], 3);
  if (n.op !== 'mul') return false;
  const square = (m: Node): boolean => m.op === 'mul' && m.inputs[0] === x && m.inputs[1] === x;
  const [a, b] = n.inputs;
  return (a === x && square(b)) || (b === x && square(a));
}

/** Whether `t` is `k * x³`. */
function isScaledCube(t: Node, x: Node, k: number): boolean {
  const c = scaledOperand(t, k);
  return c !== undefined && isCubeOf(c, x);
}

/** Whether `t` is `k * x²`: `k * (x * x)`, or `x * (k * x)` (either order). */
function isScaledSquare(t: Node, x: Node, k: number): boolean {
  const sq = scaledOperand(t, k);
  if (sq?.op === 'mul' && sq.inputs[0] === x && sq.inputs[1] === x) return true;
  if (t.op !== 'mul') return false;
  const [a, b] = t.inputs;
  return (a === x && scaledOperand(b, k) === x) || (b === x && scaledOperand(a, k) === x);
}

/**
 * Whether `arg` is `√(2/π) * (x + 0.044715 x³)`, `√(2/π) x + √(2/π)·0.044715 x³`, or Megatron's factored
 * `(√(2/π) x) * (1 + 0.044715 x²)`.
 */
function isGeluTanhArgument(arg: Node, x: Node): boolean {
  const sum = (n: Node | undefined, left: (a: Node) => boolean, right: (b: Node) => boolean): boolean =>
    n?.op === 'add' && ((left(n.inputs[0]) && right(n.inputs[1])) || (left(n.inputs[1]) && right(n.inputs[0])));
  const product = (n: Node, left: (a: Node) => boolean, right: (b: Node) => boolean): boolean =>
    n.op === 'mul' && ((left(n.inputs[0]) && right(n.inputs[1])) || (left(n.inputs[1]) && right(n.inputs[0])));
  const inner = scaledOperand(arg, SQRT_2_OVER_PI);
  return (
    sum(inner, (a) => a === x, (b) => isScaledCube(b, x, GELU_CUBIC)) ||
    sum(arg, (a) => scaledOperand(a, SQRT_2_OVER_PI) === x, (b) => isScaledCube(b, x, SQRT_2_OVER_PI * GELU_CUBIC)) ||
    product(arg, (a) => scaledOperand(a, SQRT_2_OVER_PI) === x, (b) => sum(b, (one) => isSplatNear(one, 1), (sq) => isScaledSquare(sq, x, GELU_CUBIC)))
  );
}

/** `a * b * c` in each association (operand order within a `mul` is free: it is commutative). */
function product3(a: Pattern, b: Pattern, c: Pattern): Pattern[] {
  const mul = (p: Pattern, q: Pattern): Pattern => pat.op('mul', [p, q]);
  return [mul(mul(a, b), c), mul(mul(a, c), b), mul(mul(b, c), a)];
}

/** `0.5 * x * (1 + f(arg))`, capturing `x` and `arg`. */
function halfXOnePlus(f: 'erf' | 'tanh'): Pattern[] {
  return product3(near(0.5), pat.any('x'), pat.op('add', [near(1), pat.op(f, [pat.any('arg')])]));
}

/** `1 + exp(e)`, capturing `e`. */
const ONE_PLUS_EXP = pat.op('add', [near(1), pat.op('exp', [pat.any('e')])]);

/** Rules of one name from a list of patterns (the export variants) sharing one `apply`; results of another type decline. */
function variants(name: string, patterns: readonly Pattern[], apply: (node: Node, c: Captures) => Node | undefined): RewriteRule[] {
  return patterns.map((pattern) => ({
    name,
    root: pattern.op as RewriteRule['root'],
    pattern,
    apply: ({ node, captures }) => {
      const r = apply(node, captures);
      return r && r.dtype === node.dtype && shapeEquals(r.shape, node.shape) ? r : undefined;
    },
  }));
}

// ---------------------------------------------------------------------------------------------------------------
// rules

/**
 * The activation recognition rules (see the module comment).
 * @internal
 */
export const recognizeActivationsRules: readonly RewriteRule[] = [
  ...variants('sigmoid', [pat.op('div', [near(1), ONE_PLUS_EXP]), pat.op('reciprocal', [ONE_PLUS_EXP])], (_n, { e }) => {
    const x = negatedOperand(e);
    return x && makeNode('sigmoid', [x]);
  }),
  ...variants('silu', [pat.op('mul', [pat.any('x'), pat.op('sigmoid', [pat.any('x')])])], (_n, { x }) => makeNode('silu', [x])),
  ...variants('silu-div', [pat.op('div', [pat.any('x'), ONE_PLUS_EXP])], (_n, { x, e }) => (negatedOperand(e) === x ? makeNode('silu', [x]) : undefined)),
  ...variants('gelu-erf', halfXOnePlus('erf'), (_n, { x, arg }) =>
    scaledOperand(arg, Math.SQRT1_2) === x ? makeNode('gelu', [x], { approximate: 'none' }) : undefined,
  ),
  ...variants('gelu-tanh', halfXOnePlus('tanh'), (_n, { x, arg }) =>
    isGeluTanhArgument(arg, x) ? makeNode('gelu', [x], { approximate: 'tanh' }) : undefined,
  ),
];

/** The `recognize-activations` pass: GELU, SiLU and sigmoid from primitive ops. */
export const recognizeActivationsPass: Pass = rewritePass({
  name: 'recognize-activations',
  description: 'recognize GELU (erf and tanh forms), SiLU and sigmoid written as primitive ops',
  rules: recognizeActivationsRules,
  kind: 'fused',
});
