/**
 * Symbolic shape arithmetic: evaluating ops over `constant` i32 tensors whose values may be symbolic dims.
 *
 * Model files compute shapes at run time: ONNX's `Shape → Gather → Unsqueeze → Concat → Reshape`, keras's
 * `ReduceProd` of a shape slice. The IR infers shapes when a node is built, so those chains must fold while the graph
 * is imported: `Shape` of a `[batch, seq, 64]` tensor is `constant i32 [3] values [batch, seq, 64]`, and the ops
 * below evaluate over such values with the dim algebra of `dim.ts`, giving new constants. Both the importers (as they
 * build) and the optimizer's `fold-constants` pass (so a graph built otherwise folds too) use it, which is why it lives
 * in the IR.
 *
 * | op | folds when |
 * | --- | --- |
 * | `reshape`, `transpose`, `expand` (to a static shape), `concat`, `slice`, `gather` (numeric indices) | always |
 * | `add`, `sub`, `mul`, `neg` | always (polynomials) |
 * | `div` | every quotient is provably exact |
 * | `maximum`, `minimum`, `equal`, `less`, `greater` | the comparison is decidable, symbols being sizes (≥ 0) |
 * | `where` | the condition is numeric |
 * | `cast` to i32 | always (identity); to another dtype only when every value is a number |
 * | `sum` (reduce) | always; `max` (reduce) when decidable |
 *
 * Everything else (and any result that would need a symbolic shape) is left alone: the caller decides whether that is
 * an error (an importer reports a data-dependent shape) or just no fold.
 * @module
 */
import { dimAdd, dimDivExact, dimMul, dimSub, isStaticShape, numel, stridesOf, SymDim, type Dim } from './dim.js';
import type { DType } from './dtype.js';
import { makeNode, type Node } from './node.js';
import { MAX_INLINE_CONSTANT } from './ops.js';

/**
 * The element values of a `constant` node (splats expanded), numbers or symbolic dims; `undefined` for other nodes.
 * @internal
 */
export function constantDims(n: Node): Dim[] | undefined {
  if (n.op !== 'constant' || !isStaticShape(n.shape)) return undefined;
  const vals = n.attrs.values as readonly Dim[];
  const size = numel(n.shape) as number;
  return vals.length === size ? [...vals] : new Array<Dim>(size).fill(vals[0]);
}

/**
 * Whether `n` is a `constant` holding at least one symbolic dim.
 * @internal
 */
export function isSymbolicConstant(n: Node): boolean {
  return n.op === 'constant' && (n.attrs.values as readonly Dim[]).some((v) => v instanceof SymDim);
}

/**
 * An i32 constant of these values (symbolic dims allowed); a splat when every value is the same.
 * @internal
 */
export function dimsConstant(values: readonly Dim[], shape: readonly number[]): Node {
  return makeNode('constant', [], { dtype: 'i32', shape: [...shape], values: [...values] });
}

/**
 * The sign of `a - b` (`-1`, `0`, `1`), or `undefined` when it depends on the symbols' values. Symbols are sizes, so
 * every monomial is ≥ 0: `seq + 1 > 0`, `-batch - 1 < 0`, but `seq - 4` is undecidable.
 * @internal
 */
export function compareDims(a: Dim, b: Dim): -1 | 0 | 1 | undefined {
  const d = dimSub(a, b);
  if (typeof d === 'number') return d < 0 ? -1 : d > 0 ? 1 : 0;
  const c = d.terms.get('') ?? 0;
  const coefs = [...d.terms].filter(([k]) => k !== '').map(([, v]) => v);
  if (coefs.every((v) => v >= 0) && c > 0) return 1;
  if (coefs.every((v) => v <= 0) && c < 0) return -1;
  return undefined;
}

/** For each element of `out` (row-major), the flat index of the element of `inShape` broadcast to it. */
function broadcastIndex(out: readonly number[], inShape: readonly number[]): number[] {
  const n = out.reduce((p, q) => p * q, 1);
  const st = stridesOf(inShape);
  const lead = out.length - inShape.length;
  const idx: number[] = [];
  for (let k = 0; k < n; k++) {
    let rem = k;
    let off = 0;
    for (let d = out.length - 1; d >= 0; d--) {
      const i = rem % out[d];
      rem = Math.floor(rem / out[d]);
      const j = d - lead;
      if (j >= 0 && inShape[j] !== 1) off += i * st[j];
    }
    idx.push(off);
  }
  return idx;
}

/** Multi-index of flat position `k` in `shape`. */
function unflatten(k: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = k % shape[d];
    k = Math.floor(k / shape[d]);
  }
  return out;
}

type Elementwise = (vals: Dim[]) => Dim | undefined;

const decided = (f: (c: -1 | 0 | 1) => boolean) => ([a, b]: Dim[]): Dim | undefined => {
  const c = compareDims(a, b);
  return c === undefined ? undefined : f(c) ? 1 : 0;
};

const ELEMENTWISE: Readonly<Record<string, Elementwise>> = {
  add: ([a, b]) => dimAdd(a, b),
  sub: ([a, b]) => dimSub(a, b),
  mul: ([a, b]) => dimMul(a, b),
  neg: ([a]) => dimMul(a, -1),
  div: ([a, b]) => (b === 0 ? undefined : dimDivExact(a, b)),
  maximum: ([a, b]) => {
    const c = compareDims(a, b);
    return c === undefined ? undefined : c >= 0 ? a : b;
  },
  minimum: ([a, b]) => {
    const c = compareDims(a, b);
    return c === undefined ? undefined : c <= 0 ? a : b;
  },
  equal: decided((c) => c === 0),
  less: decided((c) => c < 0),
  greater: decided((c) => c > 0),
  where: ([c, a, b]) => (typeof c === 'number' ? (c ? a : b) : undefined),
};

/** The values of `node` computed from its operands' values, or `undefined` when they do not fold. */
function evaluate(node: Node, args: Dim[][]): Dim[] | undefined {
  const out = node.shape as readonly number[];
  const size = out.reduce((p, q) => p * q, 1);
  const [x] = args;
  const xs = node.inputs[0].shape as readonly number[];
  const a = node.attrs;
  const fn = ELEMENTWISE[node.op];
  if (fn) {
    const maps = node.inputs.map((i) => broadcastIndex(out, i.shape as number[]));
    const vals: Dim[] = [];
    for (let k = 0; k < size; k++) {
      const v = fn(args.map((arg, j) => arg[maps[j][k]]));
      if (v === undefined) return undefined;
      vals.push(v);
    }
    return vals;
  }
  switch (node.op) {
    case 'reshape':
      return x;
    case 'expand': {
      const map = broadcastIndex(out, xs);
      return map.map((i) => x[i]);
    }
    case 'cast':
      // only i32 holds symbols; a cast to another dtype needs the numbers (fold-constants does numeric casts)
      return node.dtype === 'i32' ? x : undefined;
    case 'transpose': {
      const perm = a.perm as number[];
      const st = stridesOf(xs);
      return Array.from({ length: size }, (_v, k) => x[unflatten(k, out).reduce((off, i, d) => off + i * st[perm[d]], 0)]);
    }
    case 'concat': {
      const axis = a.axis as number;
      const vals: Dim[] = [];
      for (let k = 0; k < size; k++) {
        const idx = unflatten(k, out);
        let at = idx[axis];
        let j = 0;
        while (at >= (node.inputs[j].shape[axis] as number)) at -= node.inputs[j++].shape[axis] as number;
        const shape = node.inputs[j].shape as number[];
        idx[axis] = at;
        vals.push(args[j][idx.reduce((off, i, d) => off + i * stridesOf(shape)[d], 0)]);
      }
      return vals;
    }
    case 'slice': {
      const axes = a.axes as number[];
      const starts = a.starts as Dim[];
      const steps = a.steps as number[];
      if (!starts.every((v) => typeof v === 'number')) return undefined;
      const st = stridesOf(xs);
      return Array.from({ length: size }, (_v, k) => {
        const idx = unflatten(k, out);
        axes.forEach((ax, i) => (idx[ax] = (starts[i] as number) + idx[ax] * steps[i]));
        return x[idx.reduce((off, i, d) => off + i * st[d], 0)];
      });
    }
    case 'gather': {
      const indices = args[1];
      if (!indices.every((v) => typeof v === 'number')) return undefined;
      const axis = a.axis as number;
      const len = xs[axis];
      const inner = xs.slice(axis + 1).reduce((p, q) => p * q, 1);
      const outer = xs.slice(0, axis).reduce((p, q) => p * q, 1);
      const vals: Dim[] = [];
      for (let p = 0; p < outer; p++)
        for (const raw of indices as number[]) {
          const i = raw < 0 ? raw + len : raw;
          if (i < 0 || i >= len) return undefined; // an out-of-range index is the interpreter's error to report
          for (let q = 0; q < inner; q++) vals.push(x[(p * len + i) * inner + q]);
        }
      return vals;
    }
    case 'sum':
    case 'max': {
      const axes = a.axes as number[];
      const kept = xs.map((d, i) => (axes.includes(i) ? 1 : d));
      const st = stridesOf(kept);
      const acc: (Dim | undefined)[] = new Array<Dim | undefined>(size).fill(undefined);
      for (let k = 0; k < x.length; k++) {
        const slot = unflatten(k, xs).reduce((off, i, d) => off + (axes.includes(d) ? 0 : i * st[d]), 0);
        const prev = acc[slot];
        if (prev === undefined) acc[slot] = x[k];
        else if (node.op === 'sum') acc[slot] = dimAdd(prev, x[k]);
        else {
          const c = compareDims(prev, x[k]);
          if (c === undefined) return undefined;
          if (c < 0) acc[slot] = x[k];
        }
      }
      if (acc.some((v) => v === undefined)) return undefined; // an empty reduction: numeric, so not ours
      return acc as Dim[];
    }
    default:
      return undefined;
  }
}

/**
 * Folds `node` when every operand is a `constant`, at least one of them symbolic, and the op is one of the shape
 * arithmetic ops of the module comment: returns the `constant` holding the result (i32, or bool for comparisons), or
 * `undefined`.
 * @internal
 */
export function foldShapeArithmetic(node: Node): Node | undefined {
  if (node.inputs.length === 0 || !node.inputs.every((x) => x.op === 'constant') || !node.inputs.some(isSymbolicConstant)) return undefined;
  if (!isStaticShape(node.shape) || (numel(node.shape) as number) > MAX_INLINE_CONSTANT) return undefined;
  if (node.dtype !== 'i32' && node.dtype !== 'bool') return undefined;
  const values = evaluate(node, node.inputs.map((x) => constantDims(x)!));
  if (!values) return undefined;
  if (node.dtype === 'bool' && !values.every((v) => v === 0 || v === 1)) return undefined;
  return makeNode('constant', [], { dtype: node.dtype satisfies DType, shape: [...node.shape], values });
}
