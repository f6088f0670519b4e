/**
 * Attention recognition: scaled dot-product attention written as primitive ops becomes an `attention` node.
 *
 * | rule | fact |
 * | --- | --- |
 * | `attention` | `softmax(q·kᵀ · scale [+ mask]) · v → transpose(attention(q', k', v', mask?))` |
 *
 * What it reads, all in the exporters' `[B, H, S, D]` layout:
 * - **scores**: `matmul(q, transpose(k, [0, 1, 3, 2]))`, `matmul(q, k) {transB}`, or `matmul(q, kᵀ)` for any `kᵀ`
 *   `[B, H, D, T]` (GPT-2's `permute(0, 2, 3, 1)` included);
 * - **scale**: splat constants (or `sqrt` of one) multiplying or dividing the scores, `q` or `k` (before or after the
 *   transpose), multiplied together: `/ sqrt(d)`, `* d^-0.5`, `q * d^-0.25` and `k * d^-0.25`. No scale at all is scale 1;
 * - **masks**, any number of layers between the scores and the softmax: `+ mask` (additive, float),
 *   `where(mask, s, fill)` (bool, true = attend) and `where(mask, fill, s)` (masked_fill, true = masked), `fill` a splat
 *   ≤ -1e4 (`-inf`, `-1e4`, `finfo.min`, all read as -inf);
 * - **softmax** over the last axis (another axis is not attention), optionally in f32 between casts;
 * - **GQA**: `k`/`v` repeated per group as HF `repeat_kv` writes it (`reshape` to `[B, Hkv, 1, T, D]`, `expand` to
 *   `[B, Hkv, n, T, D]`, `reshape` to `[B, Hkv·n, T, D]`) are passed un-repeated; `attention` groups heads itself.
 *
 * A mask that provably is the bottom-right-aligned causal mask becomes `causal: true` and disappears: a constant or
 * weight (through casts to bool, reshapes of leading axes and unit-step slices of the last two axes, GPT-2's
 * `bias[:, :, past:past+seq, :past+seq]`) whose every entry is kept exactly when `col <= row + offset`, the offset
 * making the sliced `[S, T]` window keep key `j` for query `i` iff `j <= i + (T - S)`. Other masks stay explicit
 * (masked_fill's as `equal(mask, false)`); at most one explicit mask is supported.
 *
 * Operands move to `[B, S, H, D]` by `transpose(·, [0, 2, 1, 3])`, which unwraps when the operand already is such a
 * transpose (the usual `transpose(reshape(x, [B, S, H, D]), [0, 2, 1, 3])`); the result is transposed back, and that
 * transpose cancels with the consumer's in `simplify`. Rows whose keys are all masked differ from the primitive form
 * (which averages them uniformly when `fill` is finite): `attention` yields zeros there.
 * @module
 */
import { ShapeError } from '../errors.js';
import { dimAdd, dimSub, shapeEquals, type Dim } from '../ir/dim.js';
import { isFloat } from '../ir/dtype.js';
import { isOp } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import { decodeWeight } from '../ir/weights.js';
import { rewritePass, type Pass } from './pass.js';
import { pat, splatValue } from './pattern.js';
import type { RewriteContext, RewriteRule } from './rewrite.js';

/** `[B, S, H, D] ↔ [B, H, S, D]` (its own inverse). */
const SWAP_SEQ_HEADS = [0, 2, 1, 3];
/** Scores or masks at most this large are read to prove causality. */
const MAX_MASK_ELEMENTS = 1 << 24;

/** How a mask layer treats a mask value. */
type MaskKind = 'additive' | 'bool' | 'masked-fill';

interface Scores {
  /** Queries `[B, H, S, D]`. */
  q: Node;
  /** Keys `[B, H, T, D]`. */
  k: Node;
  /** Product of every constant factor. */
  scale: number;
}

// ---------------------------------------------------------------------------------------------------------------
// helpers

function hasPerm(n: Node, perm: readonly number[]): boolean {
  return isOp(n, 'transpose') && n.attrs.perm.every((p, i) => p === perm[i]);
}

/** `transpose(x, perm)`, or `x`'s operand when `x` is the transpose by the (self-inverse) `perm` already. */
function transposeBy(x: Node, perm: readonly number[]): Node {
  return hasPerm(x, perm) ? x.inputs[0] : makeNode('transpose', [x], { perm: [...perm] });
}

/** The value of a scale operand: a splat constant or the `sqrt` of one. */
function constantFactor(n: Node): number | undefined {
  const c = splatValue(n.op === 'sqrt' ? n.inputs[0] : n);
  return c === undefined ? undefined : n.op === 'sqrt' ? Math.sqrt(c) : c;
}

/** Peels `x * c`, `c * x` and `x / c` (c a constant factor, x's shape kept): returns `x` and the product of factors. */
function peelScale(n: Node): [Node, number] {
  let x = n;
  let scale = 1;
  for (;;) {
    if (x.op !== 'mul' && x.op !== 'div') return [x, scale];
    const [a, b] = x.inputs;
    const cb = constantFactor(b);
    const ca = x.op === 'mul' ? constantFactor(a) : undefined;
    if (cb !== undefined && shapeEquals(a.shape, x.shape)) [x, scale] = [a, x.op === 'mul' ? scale * cb : scale / cb];
    else if (ca !== undefined && shapeEquals(b.shape, x.shape)) [x, scale] = [b, scale * ca];
    else return [x, scale];
  }
}

/** `q·kᵀ` times constants, with q `[B, H, S, D]` and k `[B, H, T, D]`. */
function scoresOf(n: Node): Scores | undefined {
  const [mm, outer] = peelScale(n);
  if (mm.op !== 'matmul' || mm.rank !== 4 || mm.attrs.transA) return undefined;
  const [q, sq] = peelScale(mm.inputs[0]);
  let [k, sk] = peelScale(mm.inputs[1]);
  if (!mm.attrs.transB) {
    const inner = hasPerm(k, [0, 1, 3, 2]) ? peelScale(k.inputs[0]) : undefined;
    [k, sk] = inner ? [inner[0], sk * inner[1]] : [makeNode('transpose', [k], { perm: [0, 1, 3, 2] }), sk];
  }
  return q.rank === 4 && k.rank === 4 ? { q, k, scale: outer * sq * sk } : undefined;
}

/** Whether `n` is a splat fill value that masks a score (≤ -1e4, `-inf` included). */
function isFill(n: Node): boolean {
  const v = splatValue(n);
  return v !== undefined && v <= -1e4;
}

/** The scores under the mask layers of a softmax operand, with the masks (outermost last). */
function parseScores(n: Node): { scores: Scores; masks: { mask: Node; kind: MaskKind }[] } | undefined {
  const scores = scoresOf(n);
  if (scores) return { scores, masks: [] };
  const layer = (inner: Node, mask: Node, kind: MaskKind): ReturnType<typeof parseScores> => {
    const p = shapeEquals(inner.shape, n.shape) ? parseScores(inner) : undefined;
    return p && { scores: p.scores, masks: [...p.masks, { mask, kind }] };
  };
  const [a, b, c] = n.inputs;
  if (n.op === 'add') return layer(a, b, 'additive') ?? layer(b, a, 'additive');
  if (n.op === 'where' && isFill(c)) return layer(b, a, 'bool');
  if (n.op === 'where' && isFill(b)) return layer(c, a, 'masked-fill');
  return undefined;
}

/** `k` `[B, Hkv·n, T, D]` as HF `repeat_kv` makes it from `[B, Hkv, T, D]`: that un-repeated tensor, else `k`. */
function unrepeated(k: Node): Node {
  const expanded = k.op === 'reshape' ? k.inputs[0] : undefined;
  if (expanded?.op !== 'expand' || expanded.rank !== 5) return k;
  const unit = expanded.inputs[0];
  const [b, hkv, , t, d] = expanded.shape;
  const ok = unit.rank === 5 && unit.shape[2] === 1 && [0, 1, 3, 4].every((i) => unit.shape[i] === expanded.shape[i]);
  if (!ok || k.shape[0] !== b || k.shape[2] !== t || k.shape[3] !== d) return k;
  return unit.op === 'reshape' && unit.inputs[0].rank === 4 ? unit.inputs[0] : makeNode('reshape', [unit], { shape: [b, hkv, t, d] });
}

/** The values of a constant or dense weight leaf, when small enough to read. */
function leafValues(n: Node, ctx: RewriteContext): ArrayLike<number> | undefined {
  const size = n.shape.reduce((a: number, d) => a * (typeof d === 'number' ? d : Infinity), 1);
  if (size > MAX_MASK_ELEMENTS) return undefined;
  if (isOp(n, 'constant')) {
    const vals = n.attrs.values;
    if (!vals.every((x) => typeof x === 'number')) return undefined;
    return vals.length === size ? vals : new Array<number>(size).fill(vals[0]);
  }
  if (!isOp(n, 'weight')) return undefined;
  const e = ctx.weights.get(n.attrs.id);
  return e.encoding.kind === 'dense' ? decodeWeight(e) : undefined;
}

/**
 * Whether `mask` (of one {@link MaskKind}) provably keeps exactly the scores of bottom-right-aligned causal attention
 * over `s` queries and `t` keys (see the module comment).
 */
function isCausalMask(mask: Node, kind: MaskKind, s: Dim, t: Dim, ctx: RewriteContext): boolean {
  if (mask.rank < 2 || mask.shape[mask.rank - 2] !== s || mask.shape[mask.rank - 1] !== t) return false;
  let m = mask;
  let row: Dim = 0;
  let col: Dim = 0;
  for (;;) {
    const src = m.inputs[0];
    if (isOp(m, 'slice')) {
      const { axes, starts, steps } = m.attrs;
      for (let i = 0; i < axes.length; i++) {
        if (axes[i] < m.rank - 2) continue;
        if (steps[i] !== 1) return false;
        if (axes[i] === m.rank - 2) row = dimAdd(row, starts[i]);
        else col = dimAdd(col, starts[i]);
      }
    } else if (m.op === 'reshape') {
      if (src.rank < 2 || src.shape[src.rank - 2] !== m.shape[m.rank - 2] || src.shape[src.rank - 1] !== m.shape[m.rank - 1]) return false;
    } else if (!(m.op === 'cast' && m.dtype === 'bool' && kind !== 'additive')) break;
    m = src;
  }
  // the table must keep (r, c) exactly when c <= r + offset, so that the window keeps j <= i + (t - s)
  const offset = dimAdd(dimSub(dimSub(t, s), row), col);
  const values = m.rank >= 2 ? leafValues(m, ctx) : undefined;
  if (!values || typeof offset !== 'number') return false;
  const [rows, cols] = m.shape.slice(-2) as number[];
  for (let idx = 0; idx < values.length; idx++) {
    const v = values[idx];
    const keep = kind === 'bool' ? v !== 0 : v === 0;
    if (kind === 'additive' && !keep && !(v <= -1e4)) return false;
    const r = Math.floor(idx / cols) % rows;
    if (keep !== (idx % cols <= r + offset)) return false;
  }
  return true;
}

/** The mask operand `attention` takes for a mask layer kept explicit. */
function explicitMask(mask: Node, kind: MaskKind): Node {
  return kind === 'masked-fill' ? makeNode('equal', [mask, makeNode('constant', [], { dtype: 'bool', shape: [], values: [0] })]) : mask;
}

// ---------------------------------------------------------------------------------------------------------------
// rule

/** Recognizes attention at the `probs · v` matmul. */
function recognize(node: Node, ctx: RewriteContext): Node | undefined {
  const [p, v0] = node.inputs;
  if (node.attrs.transA || node.rank !== 4 || v0.rank !== 4 || !isFloat(node.dtype)) return undefined;
  // softmax, possibly computed in f32 between casts
  const castBack = p.op === 'cast' && p.inputs[0].op === 'softmax';
  const softmax = castBack ? p.inputs[0] : p;
  if (softmax.op !== 'softmax' || softmax.attrs.axis !== softmax.rank - 1) return undefined;
  let logits = softmax.inputs[0];
  if (castBack) {
    if (logits.op !== 'cast' || logits.inputs[0].dtype !== node.dtype) return undefined;
    logits = logits.inputs[0];
  }
  const parsed = parseScores(logits);
  if (!parsed) return undefined;
  const { scores, masks } = parsed;
  const [, , s, t] = logits.shape;
  let causal = false;
  const explicit: Node[] = [];
  for (const { mask, kind } of masks) {
    if (isCausalMask(mask, kind, s, t, ctx)) causal = true;
    else explicit.push(explicitMask(mask, kind));
  }
  if (explicit.length > 1) return undefined;
  // v as [B, H, T, Dv]; GQA repeats undone on k and v together
  const v1 = node.attrs.transB ? makeNode('transpose', [v0], { perm: [0, 1, 3, 2] }) : v0;
  let [k, v] = [unrepeated(scores.k), unrepeated(v1)];
  if (k.shape[1] !== v.shape[1]) [k, v] = [scores.k, v1];
  try {
    const operands = [scores.q, k, v].map((x) => transposeBy(x, SWAP_SEQ_HEADS));
    const att = makeNode('attention', [...operands, ...explicit], { causal, scale: scores.scale });
    return makeNode('transpose', [att], { perm: SWAP_SEQ_HEADS });
  } catch (e) {
    if (e instanceof ShapeError) return undefined; // batch dims that only broadcast, mismatched heads, …
    throw e;
  }
}

/**
 * The attention recognition rules (see the module comment).
 * @internal
 */
export const recognizeAttentionRules: readonly RewriteRule[] = [
  {
    name: 'attention',
    root: 'matmul',
    pattern: pat.op('matmul', [pat.op(['softmax', 'cast']), pat.any()]),
    apply: ({ node }, ctx) => recognize(node, ctx),
  },
];

/** The `recognize-attention` pass: scaled dot-product attention from primitive ops. */
export const recognizeAttentionPass: Pass = rewritePass({
  name: 'recognize-attention',
  description: 'recognize scaled dot-product attention (masks, causal masks, GQA repeats, folded scales) written as primitive ops',
  rules: recognizeAttentionRules,
  kind: 'fused',
});
