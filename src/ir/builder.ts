/**
 * The TypeScript builder API: a thin, typed layer over {@link makeNode} that turns numbers into constants, strings
 * into symbolic dims, and names weights as it adds them to a {@link WeightStore}.
 *
 * ```ts
 * const b = new GraphBuilder();
 * const x = b.input('x', 'f32', ['batch', 'seq', 64]);
 * const w = b.weight('proj', [32, 64], data);
 * const y = b.silu(b.linear(x, w));
 * const graph = b.build({ y });
 * ```
 * @module
 */
import { InputError, ShapeError } from '../errors.js';
import { sym, SymDim, type Dim } from './dim.js';
import type { DType } from './dtype.js';
import { Graph, type GraphMeta } from './graph.js';
import { makeNode, type AttrValue, type Attrs, type Node } from './node.js';
import type { BinaryOp, CompareOp, OpName, ReduceOp, UnaryOp } from './ops.js';
import type { ActivationQuant } from './attrs.js';
import { WeightStore, type WeightData, type WeightEncoding, type WeightEntry } from './weights.js';

/** A dim as the builder accepts it: a number, a symbol name, or a {@link SymDim}. */
export type DimLike = number | string | SymDim;

/**
 * Converts builder dims to IR dims.
 * @internal
 */
export function toDims(shape: readonly DimLike[]): Dim[] {
  return shape.map((d) => (typeof d === 'string' ? sym(d) : d));
}

/** Result of {@link GraphBuilder.attention}. */
export interface AttentionResult {
  /** Attention output `[B, S, Hq, Dv]`. */
  out: Node;
  /** Keys the next step should see as its past (`concat(pastK, k)` or `k`). */
  presentK: Node;
  /** Values likewise. */
  presentV: Node;
}

/** Builds graphs. One builder makes one graph; its weight store becomes the graph's. */
export class GraphBuilder {
  /** The store weights are added to. */
  readonly weights: WeightStore;
  private readonly inputList: Node[] = [];
  private readonly weightNames = new Set<string>();

  constructor(weights: WeightStore = new WeightStore()) {
    this.weights = weights;
  }

  /** Any op, by name (for code that dispatches on op names, e.g. importers). */
  op(op: OpName, inputs: readonly Node[], attrs: Attrs = {}): Node {
    return makeNode(op, inputs, attrs);
  }

  /** The i32 vector `[0, 1, …, length - 1]` (`length` may be symbolic). */
  range(length: DimLike): Node {
    return makeNode('range', [], { length: typeof length === 'string' ? sym(length) : length });
  }

  /** A graph input. Dims given as strings are symbolic. */
  input(name: string, dtype: DType, shape: readonly DimLike[]): Node {
    if (this.inputList.some((i) => i.attrs.name === name)) throw new InputError(`input '${name}' is declared twice`);
    const n = makeNode('input', [], { name, dtype, shape: toDims(shape) });
    this.inputList.push(n);
    return n;
  }

  /** Adds a dense f32 weight (or a pre-made entry) to the store and returns its node. */
  weight(name: string, shape: readonly number[], values: Float32Array): Node;
  weight(entry: WeightEntry): Node;
  weight(nameOrEntry: string | WeightEntry, shape?: readonly number[], values?: Float32Array): Node {
    const entry = typeof nameOrEntry === 'string' ? WeightStore.entry(nameOrEntry, 'f32', shape!, { values: values! }) : nameOrEntry;
    if (this.weightNames.has(entry.name)) throw new InputError(`weight '${entry.name}' is added twice`);
    this.weightNames.add(entry.name);
    this.weights.add(entry);
    return weightNode(entry);
  }

  /** Adds an encoded (quantized, codebook, sparse) weight. */
  encodedWeight(name: string, dtype: DType, shape: readonly number[], data: WeightData, encoding: WeightEncoding): Node {
    return this.weight(WeightStore.entry(name, dtype, shape, data, encoding));
  }

  /** A small constant tensor (or a scalar when `shape` is omitted). */
  constant(values: number | readonly number[], dtype: DType = 'f32', shape: readonly number[] = []): Node {
    const vals = typeof values === 'number' ? [values] : [...values];
    return makeNode('constant', [], { dtype, shape: [...shape], values: vals });
  }

  /** A scalar constant of `like`'s dtype. */
  scalarLike(like: Node, v: number): Node {
    return this.constant(v, like.dtype);
  }

  private operand(like: Node, v: Node | number): Node {
    return typeof v === 'number' ? this.scalarLike(like, v) : v;
  }

  /** Unary elementwise op by name. */
  unary(op: UnaryOp, x: Node, attrs: Attrs = {}): Node {
    return makeNode(op, [x], attrs);
  }
  /** `-x`. */
  neg(x: Node): Node { return this.unary('neg', x); }
  /** `|x|`. */
  abs(x: Node): Node { return this.unary('abs', x); }
  /** `e^x`. */
  exp(x: Node): Node { return this.unary('exp', x); }
  /** Natural log. */
  log(x: Node): Node { return this.unary('log', x); }
  /** Square root. */
  sqrt(x: Node): Node { return this.unary('sqrt', x); }
  /** `1/sqrt(x)`. */
  rsqrt(x: Node): Node { return this.unary('rsqrt', x); }
  /** `1/x`. */
  reciprocal(x: Node): Node { return this.unary('reciprocal', x); }
  /** Hyperbolic tangent. */
  tanh(x: Node): Node { return this.unary('tanh', x); }
  /** Error function. */
  erf(x: Node): Node { return this.unary('erf', x); }
  /** Sine. */
  sin(x: Node): Node { return this.unary('sin', x); }
  /** Cosine. */
  cos(x: Node): Node { return this.unary('cos', x); }
  /** `x * sigmoid(x)`. */
  silu(x: Node): Node { return this.unary('silu', x); }
  /** GELU, exact (erf) or the tanh approximation. */
  gelu(x: Node, approximate: 'none' | 'tanh' = 'none'): Node { return this.unary('gelu', x, { approximate }); }
  /** `max(x, 0)`. */
  relu(x: Node): Node { return this.unary('relu', x); }
  /** Logistic sigmoid. */
  sigmoid(x: Node): Node { return this.unary('sigmoid', x); }

  /** Binary op by name; a number operand becomes a scalar constant of the other operand's dtype. */
  binary(op: BinaryOp | CompareOp, a: Node | number, b: Node | number): Node {
    if (typeof a === 'number' && typeof b === 'number') throw new ShapeError(op, 'needs at least one tensor operand');
    const x = typeof a === 'number' ? this.operand(b as Node, a) : a;
    const y = this.operand(x, b);
    return makeNode(op, [x, y]);
  }
  /** `a + b`. */
  add(a: Node | number, b: Node | number): Node { return this.binary('add', a, b); }
  /** `a - b`. */
  sub(a: Node | number, b: Node | number): Node { return this.binary('sub', a, b); }
  /** `a * b`. */
  mul(a: Node | number, b: Node | number): Node { return this.binary('mul', a, b); }
  /** `a / b`. */
  div(a: Node | number, b: Node | number): Node { return this.binary('div', a, b); }
  /** `a ^ b`. */
  pow(a: Node | number, b: Node | number): Node { return this.binary('pow', a, b); }
  /** Elementwise maximum. */
  maximum(a: Node | number, b: Node | number): Node { return this.binary('maximum', a, b); }
  /** Elementwise minimum. */
  minimum(a: Node | number, b: Node | number): Node { return this.binary('minimum', a, b); }
  /** `a == b` (bool). */
  equal(a: Node | number, b: Node | number): Node { return this.binary('equal', a, b); }
  /** `a < b` (bool). */
  less(a: Node | number, b: Node | number): Node { return this.binary('less', a, b); }
  /** `a > b` (bool). */
  greater(a: Node | number, b: Node | number): Node { return this.binary('greater', a, b); }
  /** `cond ? a : b`, broadcasting. */
  where(cond: Node, a: Node | number, b: Node | number): Node {
    const x = typeof a === 'number' ? this.operand(b as Node, a) : a;
    return makeNode('where', [cond, x, this.operand(x, b)]);
  }
  /** Converts the element type. */
  cast(x: Node, to: DType): Node { return makeNode('cast', [x], { to }); }

  /** Batched matrix product with optional transposed operands (and W8A8 activation quantization, `actQuant`). */
  matmul(a: Node, b: Node, opts: { transA?: boolean; transB?: boolean; actQuant?: ActivationQuant } = {}): Node {
    return makeNode('matmul', [a, b], { transA: opts.transA ?? false, transB: opts.transB ?? false, ...(opts.actQuant ? { actQuant: opts.actQuant } : {}) });
  }
  /** `x · Wᵀ (+ bias)` for a weight stored `[out, in]`, as PyTorch's `nn.Linear` and llama2.c store them. */
  linear(x: Node, w: Node, bias?: Node): Node {
    const y = this.matmul(x, w, { transB: true });
    return bias ? this.add(y, bias) : y;
  }

  /** Reduction by name over `axes`. */
  reduce(op: ReduceOp, x: Node, axes: readonly number[], keepDims = false): Node {
    return makeNode(op, [x], { axes: [...axes], keepDims });
  }
  /** Sum over axes. */
  sum(x: Node, axes: readonly number[], keepDims = false): Node { return this.reduce('sum', x, axes, keepDims); }
  /** Mean over axes. */
  mean(x: Node, axes: readonly number[], keepDims = false): Node { return this.reduce('mean', x, axes, keepDims); }
  /** Max over axes. */
  max(x: Node, axes: readonly number[], keepDims = false): Node { return this.reduce('max', x, axes, keepDims); }
  /** Softmax along `axis`. */
  softmax(x: Node, axis = -1): Node { return makeNode('softmax', [x], { axis }); }
  /** `w * x / sqrt(mean(x²) + eps)` over the last axis. */
  rmsnorm(x: Node, w: Node, eps = 1e-5): Node { return makeNode('rmsnorm', [x, w], { eps }); }
  /** Layer normalization over the last axis. */
  layernorm(x: Node, w: Node, b?: Node, eps = 1e-5): Node { return makeNode('layernorm', b ? [x, w, b] : [x, w], { eps }); }
  /** Rotary position embedding of `x` `[B, S, H, D]` at `positions` (`[S]` or `[B, S]`, i32). */
  rope(x: Node, positions: Node, opts: { theta?: number; style?: 'interleaved' | 'half'; rotaryDim?: number } = {}): Node {
    const attrs: Record<string, AttrValue> = { theta: opts.theta ?? 10000, style: opts.style ?? 'interleaved' };
    if (opts.rotaryDim !== undefined) attrs.rotaryDim = opts.rotaryDim;
    return makeNode('rope', [x, positions], attrs);
  }

  /** Reshape; `-1` infers one dim, `0` copies the input dim, strings are symbolic dims. */
  reshape(x: Node, shape: readonly (DimLike | -1)[]): Node {
    return makeNode('reshape', [x], { shape: shape.map((d) => (typeof d === 'string' ? sym(d) : d)) });
  }
  /** Permutes axes (reverses them when `perm` is omitted). */
  transpose(x: Node, perm?: readonly number[]): Node { return makeNode('transpose', [x], perm ? { perm: [...perm] } : {}); }
  /** Concatenates along `axis`. */
  concat(xs: readonly Node[], axis: number): Node { return makeNode('concat', xs, { axis }); }
  /** Multi-axis slice (ONNX semantics on static axes; `null` end = to the end). */
  slice(x: Node, spec: { axes: readonly number[]; starts: readonly (number | SymDim)[]; ends: readonly (number | SymDim | null)[]; steps?: readonly number[] }): Node {
    const attrs: Record<string, AttrValue> = { axes: [...spec.axes], starts: [...spec.starts], ends: [...spec.ends] };
    if (spec.steps) attrs.steps = [...spec.steps];
    return makeNode('slice', [x], attrs);
  }
  /** `x[start:end]` along one axis. */
  sliceAxis(x: Node, axis: number, start: number | SymDim, end: number | SymDim | null): Node {
    return this.slice(x, { axes: [axis], starts: [start], ends: [end] });
  }
  /** Splits along `axis` into pieces of the given sizes; each piece is its own `slice` node (every node has one output). */
  split(x: Node, axis: number, sizes: readonly number[]): Node[] {
    let at = 0;
    return sizes.map((n) => {
      const piece = this.sliceAxis(x, axis, at, at + n);
      at += n;
      return piece;
    });
  }
  /** Gathers slices of `x` along `axis` at `indices`. */
  gather(x: Node, indices: Node, axis = 0): Node { return makeNode('gather', [x, indices], { axis }); }
  /** Embedding lookup: rows of `table` `[vocab, dim]` at `ids`. */
  embedding(table: Node, ids: Node): Node { return this.gather(table, ids, 0); }
  /** Broadcasts to `shape`. */
  expand(x: Node, shape: readonly DimLike[]): Node { return makeNode('expand', [x], { shape: toDims(shape) }); }

  /**
   * Attention over `[B, S, H, D]` tensors with GQA/MQA head grouping. With `pastK`/`pastV` (`[B, P, Hkv, D]`) the new
   * keys and values are appended to them, and the result's `presentK`/`presentV` are what the next step passes back
   * in: the KV-cache inputs of a graph-level decode loop.
   */
  attention(q: Node, k: Node, v: Node, opts: { causal?: boolean; scale?: number; mask?: Node; pastK?: Node; pastV?: Node } = {}): AttentionResult {
    if (!opts.pastK !== !opts.pastV) throw new ShapeError('attention', 'pastK and pastV must be given together');
    const presentK = opts.pastK ? this.concat([opts.pastK, k], 1) : k;
    const presentV = opts.pastV ? this.concat([opts.pastV, v], 1) : v;
    const attrs: Record<string, AttrValue> = { causal: opts.causal ?? false };
    if (opts.scale !== undefined) attrs.scale = opts.scale;
    const out = makeNode('attention', opts.mask ? [q, presentK, presentV, opts.mask] : [q, presentK, presentV], attrs);
    return { out, presentK, presentV };
  }

  /** Finishes the graph with named outputs (in the given order). */
  build(outputs: Record<string, Node> | readonly { name: string; node: Node }[], meta: GraphMeta = {}): Graph {
    const list = Array.isArray(outputs) ? outputs : Object.entries(outputs).map(([name, node]) => ({ name, node }));
    return new Graph(this.inputList, list, this.weights, meta);
  }
}

/**
 * The `weight` node for a store entry.
 * @internal
 */
export function weightNode(entry: WeightEntry): Node {
  return makeNode('weight', [], { id: entry.id, name: entry.name, dtype: entry.dtype, shape: [...entry.shape] });
}
