/**
 * RoPE recognition: rotary position embedding written as primitive ops over cos/sin cache tables becomes a `rope` node.
 *
 * | rule | fact |
 * | --- | --- |
 * | `rope` | `x * cos + rotate(x) * sin → rope(x, positions) {theta, style}` |
 *
 * where
 * - `rotate(x)` is NeoX/HF `rotate_half`, `cat(-x[..., D/2:], x[..., :D/2])` (style `half`), or GPT-J
 *   `rotate_every_two`, `flatten(stack(-x[..., 1::2], x[..., ::2]))` written as unsqueezing reshapes, a concat and a
 *   reshape (style `interleaved`); `-y` is `neg(y)` or `y * -1`;
 * - `cos`/`sin` are `gather(cache, positions)` (through float casts and unsqueezing reshapes) with `cache` a
 *   `[maxPos, D]` weight or constant, `positions` i32 `[S]` or `[B, S]`, broadcast along the sequence (and batch) axis
 *   of `x`;
 * - `x` is `[B, S, H, D]`, or `[B, H, S, D]` (HF's layout), in which case the result is
 *   `transpose(rope(transpose(x)))` and the transposes cancel with those around it (here, or in `simplify`).
 *
 * The rule fires only when the caches provably hold the rotary tables: `theta` is solved from row 1 (whose angles are
 * the frequencies themselves), snapped to an integer when within 1e-5 relative of one, and every entry of both caches
 * is then checked against `cos/sin(p · theta^(-2i/D))` (duplicated across the halves, or across adjacent pairs)
 * within 1e-5 plus the float32 rounding of the angle, as exporters compute it in float32. Tables that do not match
 * (scaled or NTK-aware frequencies, another layout) leave the graph alone.
 * @module
 */
import { shapeEquals, type Dim } from '../ir/dim.js';
import { isFloat } from '../ir/dtype.js';
import { makeNode, type Node } from '../ir/node.js';
import { decodeWeight } from '../ir/weights.js';
import { solveTheta, type RopeStyle } from '../ir/rope.js';
import { rewritePass, type Pass } from './pass.js';
import { pat, splatValue } from './pattern.js';
import type { RewriteContext, RewriteRule } from './rewrite.js';

/** `[B, S, H, D] ↔ [B, H, S, D]` (its own inverse). */
const SWAP_SEQ_HEADS = [0, 2, 1, 3];

// ---------------------------------------------------------------------------------------------------------------
// helpers

/** `transpose(x, [0, 2, 1, 3])`, or `x`'s operand when `x` is that transpose already. */
function swapSeqHeads(x: Node): Node {
  if (x.op === 'transpose' && (x.attrs.perm as number[]).every((p, i) => p === SWAP_SEQ_HEADS[i])) return x.inputs[0];
  return makeNode('transpose', [x], { perm: SWAP_SEQ_HEADS });
}

/** The `y` of `neg(y)` or `y * -1`. */
function negatedOperand(n: Node): Node | undefined {
  if (n.op === 'neg') return n.inputs[0];
  if (n.op !== 'mul') return undefined;
  const [a, b] = n.inputs;
  return splatValue(b) === -1 ? a : splatValue(a) === -1 ? b : undefined;
}

/** The `y` of `reshape(y)` that only appends a unit axis (`y[..., None]`). */
function unsqueezedOperand(n: Node | undefined): Node | undefined {
  if (n?.op !== 'reshape') return undefined;
  const y = n.inputs[0];
  return n.rank === y.rank + 1 && n.shape[n.rank - 1] === 1 && y.shape.every((d, i) => d === n.shape[i]) ? y : undefined;
}

/** A slice of the last axis only: source, start, step and length. */
function lastAxisSlice(n: Node | undefined): { src: Node; start: Dim; step: number; length: Dim } | undefined {
  if (n?.op !== 'slice') return undefined;
  const src = n.inputs[0];
  const { axes, starts, steps } = n.attrs as { axes: number[]; starts: Dim[]; steps: number[] };
  if (axes.length !== 1 || axes[0] !== src.rank - 1) return undefined;
  return { src, start: starts[0], step: steps[0], length: n.shape[n.rank - 1] };
}

/** The `x` and style of `rotate_half(x)` (NeoX) or `rotate_every_two(x)` (GPT-J). */
function rotationOf(n: Node): { x: Node; style: RopeStyle } | undefined {
  const d = n.shape[n.rank - 1];
  if (typeof d !== 'number' || d % 2 !== 0) return undefined;
  if (n.op === 'concat' && n.inputs.length === 2 && n.attrs.axis === n.rank - 1) {
    const hi = lastAxisSlice(negatedOperand(n.inputs[0]));
    const lo = lastAxisSlice(n.inputs[1]);
    const ok = hi && lo && hi.src === lo.src && hi.step === 1 && lo.step === 1 && hi.start === d / 2 && hi.length === d / 2 && lo.start === 0 && lo.length === d / 2;
    return ok ? { x: hi.src, style: 'half' } : undefined;
  }
  const stacked = n.op === 'reshape' ? n.inputs[0] : undefined;
  if (stacked?.op !== 'concat' || stacked.inputs.length !== 2 || stacked.attrs.axis !== stacked.rank - 1) return undefined;
  const [a, b] = stacked.inputs;
  // the negation may sit inside or outside the unsqueeze
  const u = unsqueezedOperand(a);
  const odd = lastAxisSlice(u ? negatedOperand(u) : unsqueezedOperand(negatedOperand(a)));
  const even = lastAxisSlice(unsqueezedOperand(b));
  const ok = odd && even && odd.src === even.src && shapeEquals(odd.src.shape, n.shape) && odd.step === 2 && even.step === 2 && odd.start === 1 && even.start === 0 && odd.length === d / 2 && even.length === d / 2;
  return ok ? { x: odd.src, style: 'interleaved' } : undefined;
}

/** A cos/sin operand `gather(cache, positions)`, seen through float casts and reshapes. */
function tableOf(n: Node): { cache: Node; positions: Node } | undefined {
  let m = n;
  while (m.op === 'reshape' || (m.op === 'cast' && isFloat(m.dtype) && isFloat(m.inputs[0].dtype))) m = m.inputs[0];
  if (m.op !== 'gather' || m.attrs.axis !== 0) return undefined;
  const [cache, positions] = m.inputs;
  const leaf = cache.op === 'weight' || cache.op === 'constant';
  return leaf && cache.rank === 2 && positions.dtype === 'i32' && (positions.rank === 1 || positions.rank === 2) ? { cache, positions } : undefined;
}

/**
 * Whether the table operand `t` (values `cache[positions]`, `[…positions, D]`, reshaped) broadcasts against `x` with
 * its positions on `x`'s sequence axis `seqAxis` (and batch axis, for `[B, S]` positions): right-aligned, `t` must be
 * `[B or 1, S, 1, D]` (seqAxis 1) or `[B or 1, 1, S, D]` (seqAxis 2). Reshapes keep row-major order, so a reshape
 * chain reaching that shape from `[…positions, D]` only inserted unit axes.
 */
function alignsWith(t: Node, x: Node, positions: Node, seqAxis: 1 | 2): boolean {
  const seq = positions.shape[positions.rank - 1];
  const batch = positions.rank === 2 ? positions.shape[0] : 1;
  const want: Dim[] = [batch, 1, 1, x.shape[3]];
  want[seqAxis] = seq;
  if (t.rank > 4 || x.shape[seqAxis] !== seq || (batch !== 1 && x.shape[0] !== batch)) return false;
  const padded = [...new Array<Dim>(4 - t.rank).fill(1), ...t.shape];
  return padded.every((d, i) => d === want[i]);
}

/** The values of a constant or weight, as numbers. */
function leafValues(n: Node, ctx: RewriteContext): ArrayLike<number> {
  if (n.op === 'weight') return decodeWeight(ctx.weights.get(String(n.attrs.id)));
  const vals = n.attrs.values as number[];
  const size = (n.shape as number[]).reduce((a, b) => a * b, 1);
  return vals.length === size ? vals : new Array<number>(size).fill(vals[0]);
}

/** Solved thetas by cos cache node, then sin cache and style (caches are immutable; checking one is O(rows × D)). */
const thetaCache = new WeakMap<Node, Map<string, number | null>>();

function ropeTheta(cos: Node, sin: Node, style: RopeStyle, ctx: RewriteContext): number | undefined {
  let bySin = thetaCache.get(cos);
  if (!bySin) thetaCache.set(cos, (bySin = new Map()));
  const key = `${sin.key}|${style}`;
  if (!bySin.has(key)) {
    const [rows, d] = cos.shape as number[];
    const same = sin.shape[0] === rows && sin.shape[1] === d;
    bySin.set(key, (same ? solveTheta(leafValues(cos, ctx), leafValues(sin, ctx), rows, d, style) : undefined) ?? null);
  }
  return bySin.get(key) ?? undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// rules

/**
 * The RoPE recognition rules (see the module comment).
 * @internal
 */
export const recognizeRopeRules: readonly RewriteRule[] = [
  {
    name: 'rope',
    root: 'add',
    pattern: pat.op('add', [pat.op('mul', [pat.any('x'), pat.any('cos')]), pat.op('mul', [pat.any('rot'), pat.any('sin')])]),
    apply: ({ node, captures: { x, cos, rot, sin } }, ctx) => {
      const r = rotationOf(rot);
      if (!r || r.x !== x || x.rank !== 4 || !isFloat(x.dtype) || node.dtype !== x.dtype || !shapeEquals(node.shape, x.shape)) return undefined;
      const c = tableOf(cos);
      const s = tableOf(sin);
      if (!c || !s || c.positions !== s.positions || c.cache.shape[1] !== x.shape[3]) return undefined;
      const positions = c.positions;
      const seqAxis = ([1, 2] as const).find((a) => alignsWith(cos, x, positions, a) && alignsWith(sin, x, positions, a));
      if (seqAxis === undefined) return undefined;
      const theta = ropeTheta(c.cache, s.cache, r.style, ctx);
      if (theta === undefined) return undefined;
      const attrs = { theta, style: r.style, rotaryDim: x.shape[3] as number };
      if (seqAxis === 1) return makeNode('rope', [x, positions], attrs);
      return makeNode('transpose', [makeNode('rope', [swapSeqHeads(x), positions], attrs)], { perm: SWAP_SEQ_HEADS });
    },
  },
];

/** The `recognize-rope` pass: rotary embeddings over cos/sin caches from primitive ops. */
export const recognizeRopePass: Pass = rewritePass({
  name: 'recognize-rope',
  description: 'recognize rotary position embeddings (NeoX rotate_half and GPT-J interleaved forms over cos/sin caches)',
  rules: recognizeRopeRules,
  kind: 'fused',
});
