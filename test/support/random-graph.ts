/**
 * Random well-typed graphs for property and differential tests.
 *
 * `arbGraphCase()` is a fast-check arbitrary of `{ graph, inputs }`: a graph built procedurally by a {@link GraphBuilder}
 * from a seeded {@link Rng} (the arbitrary draws the seed and the number of generation steps, so shrinking reduces the
 * step count and the seed), plus host tensors for every declared input. The generator covers every op of the IR:
 * elementwise unary/binary ops with numpy broadcasting, comparisons + where, casts, batched/transposed matmul,
 * reductions, softmax, norms, layout ops (reshape with -1/0, transpose, concat, strided slices, gather, expand), rope,
 * attention (GQA, causal, masks, KV past via concat), constants (including the 0/1 splats algebraic simplification
 * looks for) and dense or quantized weights, over static and (optionally) symbolic dims.
 *
 * Numerical design, so that a differential test (optimized graph vs reference) can use tight tolerances:
 * - every value carries a conservative bound on its magnitude; operands whose bound grows past a limit are squashed
 *   (`tanh`, or a multiply by `1/bound`) before they reach ops that amplify, so outputs are always finite;
 * - ops that need positive operands get `abs(x) + 0.5` (log, sqrt, rsqrt, reciprocal, pow bases, denominators);
 * - discontinuous ops (comparisons, float→int/bool/f16 casts) only see *exact* values: leaves, layout ops of exact
 *   values, integer arithmetic, comparisons and casts of exact values. A valid rewrite of floating-point arithmetic
 *   can change last bits, and a comparison on such a value could flip; on exact values it cannot.
 * @module
 */
import fc from 'fast-check';
import { GraphBuilder } from '../../src/ir/builder.js';
import { dimAdd, dimDivExact, dimMul, dimProduct, dimSub, evalDim, evalShape, numel, shapeToString, sym, type Dim, type SymDim } from '../../src/ir/dim.js';
import type { DType } from '../../src/ir/dtype.js';
import { topoOrder, type Graph } from '../../src/ir/graph.js';
import type { Node } from '../../src/ir/node.js';
import { UNARY_OPS, type UnaryOp } from '../../src/ir/ops.js';
import { printGraph } from '../../src/ir/printer.js';
import { quantizeWeight } from '../../src/ir/weights.js';
import { Tensor } from '../../src/runtime/cpu/tensor.js';
import { Rng } from '../../src/util/random.js';

/** A generated test case. */
export interface GraphCase {
  /** The graph (built with a GraphBuilder, so it verifies). */
  graph: Graph;
  /** A tensor for every declared graph input. */
  inputs: Record<string, Tensor>;
  /** Seed the graph was built from (with `steps`, reproduces it: `buildRandomGraph(seed, { steps })`). */
  seed: number;
  /** Number of generation steps. */
  steps: number;
  /** Values of the symbolic dims the inputs were made with (empty for a static case). */
  bindings: Record<string, number>;
}

/** Options of the generator. */
export interface RandomGraphOptions {
  /** Generation steps (each adds one op, or a small pattern of ops); default: drawn in [1, maxSteps]. */
  steps?: number;
  /** Upper bound of drawn step counts (default 16). */
  maxSteps?: number;
  /** Probability that a case uses symbolic dims (`batch`, `seq`, `past`); default 0.3. */
  symbolic?: number;
  /** Largest tensor (elements) a generated value may have (default 4096). */
  maxElements?: number;
  /** Whether new weights may be quantized (via quantizeWeight); default true. */
  quantized?: boolean;
  /**
   * Also make negative-step slices that run to the front of an axis (end `null`, or a start/end before `-dim`).
   * Default true.
   */
  sliceToFront?: boolean;
  /**
   * Whether casts may round through f16 (`cast(cast(x, f16), f32)`); default true. Gradient checks turn it off: the
   * rounding is a staircase that finite differences cannot see through.
   */
  f16Casts?: boolean;
  /** Relative weights of the op families (missing = default weight). */
  weights?: Partial<Record<OpFamily, number>>;
}

/** The families of ops the generator chooses from. */
export type OpFamily =
  | 'unary'
  | 'binary'
  | 'compare'
  | 'cast'
  | 'matmul'
  | 'reduce'
  | 'softmax'
  | 'rmsnorm'
  | 'layernorm'
  | 'reshape'
  | 'transpose'
  | 'concat'
  | 'slice'
  | 'gather'
  | 'expand'
  | 'rope'
  | 'attention'
  | 'identity'
  | 'integer';

const DEFAULT_WEIGHTS: Record<OpFamily, number> = {
  unary: 8,
  binary: 10,
  compare: 4,
  cast: 3,
  matmul: 6,
  reduce: 5,
  softmax: 3,
  rmsnorm: 3,
  layernorm: 3,
  reshape: 5,
  transpose: 4,
  concat: 4,
  slice: 5,
  gather: 4,
  expand: 3,
  rope: 3,
  attention: 4,
  identity: 8,
  integer: 3,
};

/** A fast-check arbitrary of random graphs with inputs. */
export function arbGraphCase(opts: RandomGraphOptions = {}): fc.Arbitrary<GraphCase> {
  const maxSteps = opts.maxSteps ?? 16;
  const steps = opts.steps !== undefined ? fc.constant(opts.steps) : fc.integer({ min: 1, max: maxSteps });
  return fc.record({ seed: fc.integer({ min: 0, max: 0x7fffffff }), steps }).map(({ seed, steps: n }) => buildRandomGraph(seed, { ...opts, steps: n }));
}

/** Builds the random graph for a seed (deterministic: same seed and options, same graph and inputs). */
export function buildRandomGraph(seed: number, opts: RandomGraphOptions = {}): GraphCase {
  const rng = new Rng(seed);
  const steps = opts.steps ?? 1 + Math.floor(rng.next() * (opts.maxSteps ?? 16));
  const gen = new Gen(rng, opts);
  for (let i = 0; i < steps; i++) gen.step();
  const graph = gen.finish();
  const c: GraphCase = { graph, inputs: gen.inputs, seed, steps, bindings: gen.env };
  Object.defineProperty(c, fc.toStringMethod, {
    enumerable: false,
    value: () => `GraphCase(seed=${seed}, steps=${steps}, bindings=${JSON.stringify(gen.env)})\n${printGraph(graph)}`,
  });
  return c;
}

/**
 * Compares two tensors: dtype (unless `checkDType` is false), shape, then every element with
 * `|a - b| <= atol + rtol * |b|` (NaNs equal each other, infinities must match exactly). Returns a description of the
 * first mismatch, or null when they agree.
 */
export function compareTensors(a: Tensor, b: Tensor, tol: { rtol?: number; atol?: number; checkDType?: boolean } = {}): string | null {
  const rtol = tol.rtol ?? 1e-5;
  const atol = tol.atol ?? 1e-6;
  if ((tol.checkDType ?? true) && a.dtype !== b.dtype) return `dtype ${a.dtype} vs ${b.dtype}`;
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) return `shape [${a.shape}] vs [${b.shape}]`;
  for (let i = 0; i < a.numbers.length; i++) {
    const x = a.numbers[i];
    const y = b.numbers[i];
    if (Number.isNaN(x) && Number.isNaN(y)) continue;
    let ok: boolean;
    if (!Number.isFinite(x) || !Number.isFinite(y)) ok = x === y;
    else ok = Math.abs(x - y) <= atol + rtol * Math.abs(y);
    if (!ok) {
      const idx: number[] = [];
      let r = i;
      for (let d = a.shape.length - 1; d >= 0; d--) {
        idx.unshift(r % a.shape[d]);
        r = Math.floor(r / a.shape[d]);
      }
      return `element ${i} (index [${idx}]) of ${a.dtype}[${a.shape}]: ${x} vs ${y} (|diff| ${Math.abs(x - y)} > ${atol} + ${rtol}*|${y}|)`;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------------------

/** A value in the generator's pool. */
interface Val {
  readonly node: Node;
  /** Conservative bound on |element|. */
  readonly bound: number;
  /** Whether every valid rewrite of the graph must reproduce the value bit for bit (see the module comment). */
  readonly exact: boolean;
}

const STATIC_DIMS = [1, 2, 2, 3, 3, 4, 4, 5, 6, 8];
/** Magnitude past which operands are squashed before amplifying ops. */
const LIMIT = 8;

function inversePerm(p: readonly number[]): number[] {
  const inv = new Array<number>(p.length);
  p.forEach((x, i) => (inv[x] = i));
  return inv;
}

function product(xs: readonly number[]): number {
  return xs.reduce((a, b) => a * b, 1);
}

class Gen {
  readonly b = new GraphBuilder();
  readonly pool: Val[] = [];
  readonly inputs: Record<string, Tensor> = {};
  readonly env: Record<string, number> = {};
  private readonly syms: SymDim[] = [];
  private nIn = 0;
  private nW = 0;
  private readonly maxEl: number;
  private readonly families: [OpFamily, number][];
  private readonly totalWeight: number;

  constructor(
    private readonly rng: Rng,
    private readonly o: RandomGraphOptions,
  ) {
    this.maxEl = o.maxElements ?? 4096;
    this.families = (Object.keys(DEFAULT_WEIGHTS) as OpFamily[]).map((f) => [f, o.weights?.[f] ?? DEFAULT_WEIGHTS[f]]);
    this.totalWeight = this.families.reduce((a, [, w]) => a + w, 0);
    if (rng.next() < (o.symbolic ?? 0.3)) {
      this.env.batch = this.int(1, 2);
      this.env.seq = this.int(2, 5);
      this.env.past = this.int(1, 4);
      this.syms.push(sym('batch'), sym('seq'), sym('past'));
    }
  }

  // --- random helpers ------------------------------------------------------------------------------------------

  private r(): number {
    return this.rng.next();
  }
  private chance(p: number): boolean {
    return this.rng.next() < p;
  }
  /** Integer in [lo, hi]. */
  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.rng.next() * (hi - lo + 1));
  }
  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rng.next() * xs.length)];
  }
  private shuffle<T>(xs: readonly T[]): T[] {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.rng.next() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }

  // --- shapes --------------------------------------------------------------------------------------------------

  private conc(d: Dim): number {
    return evalDim(d, this.env);
  }
  private concShape(s: readonly Dim[]): number[] {
    return evalShape(s, this.env);
  }
  private size(s: readonly Dim[]): number {
    return product(this.concShape(s));
  }
  private fits(s: readonly Dim[], max = this.maxEl): boolean {
    const c = this.concShape(s);
    return c.every((d) => d >= 1) && product(c) <= max && s.length <= 5;
  }
  /** A random dim: static, or (in a symbolic case) sometimes a symbol. */
  private dim(allowSym = true): Dim {
    if (allowSym && this.syms.length && this.chance(0.25)) return this.pick(this.syms);
    return this.pick(STATIC_DIMS);
  }
  private shape(rank: number, max = 256): Dim[] {
    for (let t = 0; t < 10; t++) {
      const s = Array.from({ length: rank }, () => this.dim());
      if (this.fits(s, max)) return s;
    }
    return Array.from({ length: rank }, () => this.pick([1, 2]));
  }
  /** A shape that broadcasts with `s` to `s` (drop leading dims, replace dims by 1). */
  private reducedPartner(s: readonly Dim[]): Dim[] {
    let out = [...s];
    if (out.length && this.chance(0.35)) out = out.slice(this.int(1, out.length));
    return out.map((d) => (this.chance(0.3) ? 1 : d));
  }
  /** A shape that broadcasts with `s` (possibly to something bigger). */
  private broadcastPartner(s: readonly Dim[]): Dim[] {
    if (this.chance(0.3)) return [...s];
    let out = this.reducedPartner(s);
    // expand x's 1-dims
    if (out.length === s.length) out = out.map((d, i) => (s[i] === 1 && d === 1 && this.chance(0.5) ? this.dim() : d));
    if (out.length >= s.length && out.length < 4 && this.chance(0.2)) out = [this.dim(), ...out];
    return out;
  }
  private bshape(shapes: readonly (readonly Dim[])[]): Dim[] {
    const rank = Math.max(...shapes.map((x) => x.length));
    const out: Dim[] = [];
    for (let i = 0; i < rank; i++) {
      let d: Dim = 1;
      for (const s of shapes) {
        const j = i - (rank - s.length);
        if (j >= 0 && s[j] !== 1) d = s[j];
      }
      out.push(d);
    }
    return out;
  }

  // --- leaves --------------------------------------------------------------------------------------------------

  private addInput(dtype: DType, shape: readonly Dim[], fill: (n: number) => ArrayLike<number>): Val {
    const name = `x${this.nIn++}`;
    const node = this.b.input(name, dtype, shape);
    const cs = this.concShape(shape);
    const data = fill(product(cs));
    this.inputs[name] = Tensor.from(dtype, cs, data);
    let bound = 0;
    for (let i = 0; i < data.length; i++) bound = Math.max(bound, Math.abs(data[i]));
    return { node, bound: Math.max(bound, 1e-3), exact: true };
  }
  /** A new f32 input with values in [-2, 2). */
  private floatInput(shape: readonly Dim[], lo = -2, hi = 2): Val {
    return this.addInput('f32', shape, (n) => this.rng.uniforms(n, lo, hi));
  }
  private intInput(shape: readonly Dim[], lo: number, hi: number, dtype: DType = 'i32'): Val {
    return this.addInput(dtype, shape, (n) => Array.from({ length: n }, () => this.int(lo, hi)));
  }
  private boolInput(shape: readonly Dim[]): Val {
    return this.addInput('bool', shape, (n) => Array.from({ length: n }, () => (this.chance(0.6) ? 1 : 0)));
  }
  /** A new dense (or sometimes quantized) f32 weight with values in [-1, 1). */
  private weight(shape: readonly number[]): Val {
    const n = product(shape);
    const values = this.rng.uniforms(n, -1, 1);
    const name = `w${this.nW++}`;
    if ((this.o.quantized ?? true) && n >= 2 && shape.length >= 1 && this.chance(0.2)) {
      const last = shape[shape.length - 1];
      const divisors = [n, ...Array.from({ length: last }, (_v, i) => i + 1).filter((g) => last % g === 0 && g > 1)];
      const entry = quantizeWeight(name, shape, values, { bits: this.pick([8, 4, 2] as const), groupSize: this.pick(divisors), hasZeroPoint: this.chance(0.5) });
      return { node: this.b.weight(entry), bound: 1.01, exact: true };
    }
    return { node: this.b.weight(name, shape, values), bound: 1, exact: true };
  }
  /** A fresh f32 leaf of the shape: an input, a weight, or (small, static) an inline constant. */
  private fresh(shape: readonly Dim[]): Val {
    const isStatic = shape.every((d) => typeof d === 'number');
    const u = this.r();
    if (isStatic && u < 0.3) return this.weight(shape as number[]);
    if (isStatic && u < 0.38 && this.size(shape) <= 64) {
      const n = this.size(shape);
      const vals = Array.from({ length: n }, () => Math.round((this.r() * 4 - 2) * 8) / 8);
      return { node: this.b.constant(vals, 'f32', shape as number[]), bound: Math.max(1e-3, ...vals.map(Math.abs)), exact: true };
    }
    return this.floatInput(shape);
  }
  private splat(v: number, dtype: DType = 'f32', shape: readonly number[] = []): Val {
    return { node: this.b.constant(v, dtype, shape), bound: Math.abs(v), exact: true };
  }

  // --- the pool ------------------------------------------------------------------------------------------------

  private pickVal(pred: (v: Val) => boolean): Val | undefined {
    const c = this.pool.filter(pred);
    if (!c.length) return undefined;
    // prefer recent values so graphs grow deep as well as wide
    return this.chance(0.5) ? c[c.length - 1] : this.pick(c);
  }
  private isF32 = (v: Val): boolean => v.node.dtype === 'f32';
  /** An f32 value from the pool (or a fresh input). */
  private floatVal(pred: (v: Val) => boolean = () => true, rank?: number): Val {
    const v = this.chance(0.85) ? this.pickVal((x) => this.isF32(x) && pred(x)) : undefined;
    return v ?? this.fresh(this.shape(rank ?? this.int(0, 3)));
  }
  /** An f32 value of exactly this shape: a pool value, a reshape of one with as many elements, or a fresh leaf. */
  private obtain(shape: readonly Dim[], allowFresh = true): Val {
    const same = this.pool.filter((v) => this.isF32(v) && v.node.rank === shape.length && v.node.shape.every((d, i) => d === shape[i]));
    if (same.length && this.chance(0.6)) return this.pick(same);
    const n = numel(shape);
    const re = this.pool.filter((v) => this.isF32(v) && numel(v.node.shape) === n);
    if (re.length && this.chance(0.6)) {
      const v = this.pick(re);
      return { ...v, node: this.reshapeTo(v.node, shape) };
    }
    if (!allowFresh && same.length) return this.pick(same);
    return this.fresh(shape);
  }
  /** reshape(x, shape), sometimes spelled with a -1 or 0s. */
  private reshapeTo(x: Node, shape: readonly Dim[]): Node {
    const target: (Dim | -1)[] = [...shape];
    if (target.length && this.chance(0.4)) {
      const i = this.int(0, target.length - 1);
      const others = shape.filter((_d, j) => j !== i);
      if (dimDivExact(numel(x.shape), dimProduct(others)) === shape[i]) target[i] = -1;
    }
    if (this.chance(0.25)) for (let i = 0; i < target.length; i++) if (i < x.rank && target[i] === x.shape[i] && target[i] !== 0 && this.chance(0.5)) target[i] = 0;
    return this.b.reshape(x, target);
  }
  /** Squashes a value whose bound exceeds `limit`. */
  private tame(v: Val, limit = LIMIT): Val {
    if (v.bound <= limit) return v;
    if (this.chance(0.5)) return { node: this.b.tanh(v.node), bound: 1, exact: false };
    return { node: this.b.mul(v.node, 1 / v.bound), bound: 1.0001, exact: false };
  }
  /** Positive version `abs(x) + 0.5` (bound b + 0.5, values >= 0.5). */
  private positive(v: Val): Val {
    return { node: this.b.add(this.b.abs(v.node), 0.5), bound: v.bound + 0.5, exact: false };
  }

  // --- driving -------------------------------------------------------------------------------------------------

  step(): void {
    for (let attempt = 0; attempt < 8; attempt++) {
      let u = this.r() * this.totalWeight;
      let fam: OpFamily = this.families[0][0];
      for (const [f, w] of this.families) {
        if (u < w) {
          fam = f;
          break;
        }
        u -= w;
      }
      const v = this.gen(fam);
      if (v && this.fits(v.node.shape)) {
        this.pool.push(v);
        return;
      }
    }
  }

  finish(): Graph {
    const ops = this.pool.filter((v) => v.node.op !== 'input' && v.node.op !== 'weight' && v.node.op !== 'constant');
    if (!ops.length) {
      const x = this.floatInput(this.shape(2));
      ops.push({ node: this.b.add(x.node, 1), bound: x.bound + 1, exact: false });
    }
    // the last value, then (most of the time) values nothing else reached, so little generated work is dead
    const outs: Node[] = [ops[ops.length - 1].node];
    const maxOuts = this.int(1, 4);
    let reached = new Set(topoOrder(outs));
    for (let i = ops.length - 2; i >= 0 && outs.length < maxOuts; i--) {
      if (reached.has(ops[i].node) || this.chance(0.15)) continue;
      outs.push(ops[i].node);
      reached = new Set(topoOrder(outs));
    }
    // occasionally a leaf or an already-reached value as an output too
    if (this.chance(0.1)) {
      const v = this.pick(this.pool);
      if (!outs.includes(v.node)) outs.push(v.node);
    }
    return this.b.build(outs.map((node, i) => ({ name: `out${i}`, node })));
  }

  private gen(f: OpFamily): Val | undefined {
    switch (f) {
      case 'unary': return this.genUnary();
      case 'binary': return this.genBinary();
      case 'compare': return this.genCompare();
      case 'cast': return this.genCast();
      case 'matmul': return this.genMatmul();
      case 'reduce': return this.genReduce();
      case 'softmax': return this.genSoftmax();
      case 'rmsnorm': return this.genNorm(false);
      case 'layernorm': return this.genNorm(true);
      case 'reshape': return this.genReshape();
      case 'transpose': return this.genTranspose();
      case 'concat': return this.genConcat();
      case 'slice': return this.genSlice();
      case 'gather': return this.genGather();
      case 'expand': return this.genExpand();
      case 'rope': return this.genRope();
      case 'attention': return this.genAttention();
      case 'identity': return this.genIdentity();
      case 'integer': return this.genInteger();
    }
  }

  // --- op families ---------------------------------------------------------------------------------------------

  private genUnary(): Val {
    const op = this.pick(UNARY_OPS) as UnaryOp;
    let x = this.floatVal();
    const b = this.b;
    switch (op) {
      case 'neg':
      case 'abs':
        return { node: b.unary(op, x.node), bound: x.bound, exact: x.exact };
      case 'exp':
        x = this.tame(x, 3);
        return { node: b.exp(x.node), bound: Math.exp(x.bound), exact: false };
      case 'log': {
        const p = this.positive(x);
        return { node: b.log(p.node), bound: Math.max(Math.LN2, Math.log(p.bound)), exact: false };
      }
      case 'sqrt': {
        const p = this.positive(x);
        return { node: b.sqrt(p.node), bound: Math.sqrt(p.bound), exact: false };
      }
      case 'rsqrt':
        return { node: b.rsqrt(this.positive(x).node), bound: Math.SQRT2, exact: false };
      case 'reciprocal':
        return { node: b.reciprocal(this.positive(x).node), bound: 2, exact: false };
      case 'tanh':
      case 'erf':
      case 'sigmoid':
        return { node: b.unary(op, x.node), bound: 1, exact: false };
      case 'sin':
      case 'cos':
        x = this.tame(x);
        return { node: b.unary(op, x.node), bound: 1, exact: false };
      case 'gelu':
        return { node: b.gelu(x.node, this.chance(0.5) ? 'tanh' : 'none'), bound: x.bound + 0.2, exact: false };
      case 'silu':
      case 'relu':
        return { node: b.unary(op, x.node), bound: x.bound + 0.3, exact: false };
    }
  }

  private genBinary(): Val | undefined {
    const op = this.pick(['add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum'] as const);
    let x = this.floatVal();
    const ys = this.broadcastPartner(x.node.shape);
    if (!this.fits(this.bshape([x.node.shape, ys]))) return undefined;
    let y = this.obtain(ys);
    const b = this.b;
    const swap = this.chance(0.5);
    const bin = (op2: 'add' | 'sub' | 'mul' | 'maximum' | 'minimum', p: Node, q: Node): Node => (swap ? b.binary(op2, q, p) : b.binary(op2, p, q));
    switch (op) {
      case 'add':
      case 'sub':
        return { node: bin(op, x.node, y.node), bound: x.bound + y.bound, exact: false };
      case 'mul':
        x = this.tame(x);
        y = this.tame(y);
        return { node: bin('mul', x.node, y.node), bound: x.bound * y.bound, exact: false };
      case 'maximum':
      case 'minimum':
        return { node: bin(op, x.node, y.node), bound: Math.max(x.bound, y.bound), exact: x.exact && y.exact };
      case 'div': {
        // numerator tamed, denominator abs(.) + 0.5
        const [num, den] = swap ? [this.tame(y), x] : [this.tame(x), y];
        return { node: b.div(num.node, this.positive(den).node), bound: 2 * num.bound, exact: false };
      }
      case 'pow': {
        const base = this.positive(this.tame(x));
        if (this.chance(0.5)) {
          const e = this.pick([2, 3, 0.5, -1, -0.5, 1.5]);
          return { node: b.pow(base.node, e), bound: Math.max(base.bound ** e, 0.5 ** e), exact: false };
        }
        const e = this.tame(y, 1);
        return { node: b.pow(base.node, e.node), bound: Math.max(base.bound, 2), exact: false };
      }
    }
  }

  /** An exact f32 value from the pool, or a fresh input. */
  private exactVal(): Val {
    return this.pickVal((v) => v.exact && this.isF32(v)) ?? this.floatInput(this.shape(this.int(0, 3)));
  }

  private boolVal(): Val {
    const u = this.r();
    const pooled = this.pickVal((v) => v.node.dtype === 'bool');
    if (pooled && u < 0.4) return pooled;
    if (u < 0.55) return this.boolInput(this.shape(this.int(0, 3)));
    const x = this.exactVal();
    const op = this.pick(['less', 'greater', 'equal'] as const);
    let y: Node;
    if (this.chance(0.5)) y = this.b.constant(this.pick([0, 0.5, -0.5]), 'f32');
    else {
      const ys = this.reducedPartner(x.node.shape);
      const pooledY = this.pool.filter((v) => v.exact && this.isF32(v) && v.node.rank === ys.length && v.node.shape.every((d, i) => d === ys[i]));
      y = pooledY.length ? this.pick(pooledY).node : this.floatInput(ys).node;
    }
    // `equal` on random floats is nearly always false: compare a value with a permuted copy of itself sometimes
    if (op === 'equal' && this.chance(0.5) && x.node.rank >= 1) y = this.b.maximum(x.node, this.b.constant(0, 'f32'));
    return { node: this.chance(0.5) ? this.b.binary(op, x.node, y) : this.b.binary(op, y, x.node), bound: 1, exact: true };
  }

  private genCompare(): Val | undefined {
    const cond = this.boolVal();
    if (this.chance(0.25)) return cond;
    const cs = cond.node.shape;
    const a = this.chance(0.2) ? this.splat(this.pick([0, 1, -1])) : this.obtain(this.reducedPartner(cs));
    const bshape = this.chance(0.2) ? this.broadcastPartner(cs) : this.reducedPartner(cs);
    if (!this.fits(this.bshape([cs, a.node.shape, bshape]))) return undefined;
    const bv = this.obtain(bshape);
    const [p, q] = this.chance(0.5) ? [a, bv] : [bv, a];
    return { node: this.b.where(cond.node, p.node, q.node), bound: Math.max(p.bound, q.bound), exact: p.exact && q.exact };
  }

  private genCast(): Val | undefined {
    const b = this.b;
    switch (this.int(0, 5)) {
      case 0: {
        const c = this.boolVal();
        return { node: b.cast(c.node, 'f32'), bound: 1, exact: true };
      }
      case 1: {
        const i = this.intVal();
        return { node: b.cast(i.node, 'f32'), bound: i.bound, exact: true };
      }
      case 2: {
        const x = this.exactVal();
        return { node: b.cast(x.node, 'i32'), bound: Math.floor(x.bound), exact: true };
      }
      case 3: {
        if (this.o.f16Casts === false) return undefined;
        const x = this.exactVal();
        if (x.bound > 60000) return undefined;
        return { node: b.cast(b.cast(x.node, 'f16'), 'f32'), bound: x.bound * 1.001, exact: true };
      }
      case 4: {
        const x = this.exactVal();
        return { node: b.cast(x.node, 'bool'), bound: 1, exact: true };
      }
      default: {
        const x = this.floatVal();
        return { node: b.cast(x.node, 'f32'), bound: x.bound, exact: x.exact };
      }
    }
  }

  private genMatmul(): Val | undefined {
    let A = this.chance(0.7) ? this.pickVal((v) => this.isF32(v) && v.node.rank >= 2) : undefined;
    const transA = this.chance(0.3);
    const transB = this.chance(0.4);
    let M: Dim;
    let K: Dim;
    let batchA: Dim[];
    if (A) {
      const s = A.node.shape;
      batchA = s.slice(0, -2);
      [M, K] = transA ? [s[s.length - 1], s[s.length - 2]] : [s[s.length - 2], s[s.length - 1]];
    } else {
      batchA = this.shape(this.int(0, 2), 8);
      M = this.dim();
      K = this.dim();
    }
    const N = this.dim();
    let batchB = this.reducedPartner(batchA);
    if (this.chance(0.25)) [batchA, batchB] = [batchB, batchA];
    if (!A) A = this.fresh(transA ? [...batchA, K, M] : [...batchA, M, K]);
    else if (A.node.shape.slice(0, -2).some((d, i) => d !== batchA[i]) || A.node.rank - 2 !== batchA.length) {
      // batch dims were swapped: the pooled A now needs the reduced batch shape; use a fresh one instead
      A = this.fresh(transA ? [...batchA, K, M] : [...batchA, M, K]);
    }
    const out = [...this.bshape([batchA, batchB]), M, N];
    if (!this.fits(out) || this.size(out) * this.conc(K) > 65536) return undefined;
    A = this.tame(A, 4);
    const bShape = transB ? [...batchB, N, K] : [...batchB, K, N];
    const B = this.tame(this.obtain(bShape), 4);
    if (transB && !transA && batchB.length === 0 && this.chance(0.5)) {
      return { node: this.b.linear(A.node, B.node), bound: this.conc(K) * A.bound * B.bound, exact: false };
    }
    return { node: this.b.matmul(A.node, B.node, { transA, transB }), bound: this.conc(K) * A.bound * B.bound, exact: false };
  }

  private genReduce(): Val {
    const useInt = this.chance(0.15);
    const x = useInt ? this.intVal() : this.floatVal();
    const rank = x.node.rank;
    const op = useInt ? this.pick(['sum', 'max'] as const) : this.pick(['sum', 'mean', 'max'] as const);
    let axes = Array.from({ length: rank }, (_v, i) => i).filter(() => this.chance(0.5));
    if (!axes.length && rank && this.chance(0.9)) axes = [this.int(0, rank - 1)];
    const spelled = this.shuffle(axes.map((a) => (this.chance(0.3) ? a - rank : a)));
    const keepDims = this.chance(0.5);
    const count = product(axes.map((a) => this.conc(x.node.shape[a])));
    const bound = op === 'sum' ? count * x.bound : x.bound;
    return { node: this.b.reduce(op, x.node, spelled, keepDims), bound, exact: op === 'max' ? x.exact : useInt };
  }

  private genSoftmax(): Val {
    const x = this.floatVal((v) => v.node.rank >= 1, this.int(1, 3));
    const rank = x.node.rank;
    if (rank === 0) return { node: this.b.softmax(this.b.reshape(x.node, [1]), 0), bound: 1, exact: false };
    const axis = this.chance(0.6) ? -1 : this.int(-rank, rank - 1);
    return { node: this.b.softmax(x.node, axis), bound: 1, exact: false };
  }

  private vector(d: Dim): Val {
    if (typeof d === 'number' && this.chance(0.7)) return this.chance(0.85) ? this.weight([d]) : this.splatVector(d);
    return this.obtain([d]);
  }
  private splatVector(d: number): Val {
    return this.splat(this.pick([1, 0, 0.5]), 'f32', [d]);
  }

  private genNorm(layer: boolean): Val {
    const x = this.floatVal((v) => v.node.rank >= 1, this.int(1, 3));
    const xn = x.node.rank ? x.node : this.b.reshape(x.node, [1]);
    const d = xn.shape[xn.rank - 1];
    const w = this.vector(d);
    const eps = this.pick([1e-5, 1e-6, 1e-3]);
    const amp = Math.sqrt(this.conc(d));
    if (!layer) return { node: this.b.rmsnorm(xn, w.node, eps), bound: amp * w.bound, exact: false };
    const bias = this.chance(0.6) ? this.vector(d) : undefined;
    return { node: this.b.layernorm(xn, w.node, bias?.node, eps), bound: amp * w.bound + (bias?.bound ?? 0), exact: false };
  }

  private anyVal(): Val {
    const u = this.r();
    if (u < 0.15) return this.intVal();
    return this.floatVal();
  }

  private genReshape(): Val | undefined {
    const x = this.anyVal();
    let dims: Dim[] = [...x.node.shape];
    const moves = this.int(1, 2);
    for (let m = 0; m < moves; m++) {
      const k = this.int(0, 4);
      if (k === 0 && dims.length >= 2) {
        const i = this.int(0, dims.length - 2);
        dims.splice(i, 2, dimMul(dims[i], dims[i + 1]));
      } else if (k === 1) {
        const cands = dims.map((d, i) => [d, i] as const).filter(([d]) => typeof d === 'number' && d > 3);
        if (!cands.length) continue;
        const [d, i] = this.pick(cands) as [number, number];
        const fs = Array.from({ length: d }, (_v, j) => j + 1).filter((f) => f > 1 && f < d && d % f === 0);
        if (!fs.length) continue;
        const f = this.pick(fs);
        dims.splice(i, 1, f, d / f);
      } else if (k === 2 && dims.length < 5) dims.splice(this.int(0, dims.length), 0, 1);
      else if (k === 3 && dims.includes(1)) dims.splice(dims.indexOf(1), 1);
      else if (k === 4) dims = [numel(dims)];
    }
    if (dims.length > 5) return undefined;
    return { node: this.reshapeTo(x.node, dims), bound: x.bound, exact: x.exact };
  }

  private genTranspose(): Val {
    const x = this.anyVal();
    const r = x.node.rank;
    if (this.chance(0.2)) return { node: this.b.transpose(x.node), bound: x.bound, exact: x.exact };
    const perm = this.shuffle(Array.from({ length: r }, (_v, i) => i));
    return { node: this.b.transpose(x.node, perm), bound: x.bound, exact: x.exact };
  }

  private genConcat(): Val | undefined {
    const x = this.floatVal((v) => v.node.rank >= 1, this.int(1, 3));
    if (x.node.rank === 0) return undefined;
    const r = x.node.rank;
    const axis = this.int(0, r - 1);
    const parts: Val[] = [x];
    const k = this.int(1, 3);
    for (let i = 0; i < k; i++) {
      const s = [...x.node.shape];
      s[axis] = this.chance(0.3) ? s[axis] : this.dim();
      parts.push(this.obtain(s));
    }
    const total = [...x.node.shape];
    total[axis] = parts.reduce((a, p) => a + this.conc(p.node.shape[axis]), 0);
    if (!this.fits(total)) return undefined;
    const order = this.shuffle(parts);
    return {
      node: this.b.concat(order.map((p) => p.node), this.chance(0.3) ? axis - r : axis),
      bound: Math.max(...parts.map((p) => p.bound)),
      exact: parts.every((p) => p.exact),
    };
  }

  /** A random slice spec for one axis, or undefined when none with a non-empty result was found. */
  private sliceSpec(d: Dim): { start: number | SymDim; end: number | SymDim | null; step: number } | undefined {
    const n = this.conc(d);
    const front = this.o.sliceToFront ?? true;
    if (typeof d === 'number') {
      for (let t = 0; t < 12; t++) {
        const step = this.pick([1, 1, 1, 2, 3, -1, -1, -2]);
        let start: number;
        let end: number | null;
        if (step > 0) {
          start = this.int(-n - 1, n);
          end = this.chance(0.3) ? null : this.int(-n - 1, n + 2);
        } else {
          start = front ? this.int(-n - 2, n + 1) : this.int(-n, n + 1);
          end = front && this.chance(0.3) ? null : front ? this.int(-n - 2, n + 1) : this.int(-n, n + 1);
        }
        if (sliceLength(n, start, end, step) >= 1) return { start, end, step };
      }
      return undefined;
    }
    // symbolic axis: step 1 and non-negative or symbolic bounds
    const k = this.int(0, 3);
    if (k === 0) return { start: dimSub(d, 1) as SymDim, end: null, step: 1 }; // the last element
    const start = this.int(0, Math.min(1, n - 1));
    if (k === 1) return { start, end: null, step: 1 };
    if (k === 2 && n - 1 - start >= 1) return { start, end: dimSub(d, 1) as SymDim, step: 1 };
    const end = this.int(start + 1, n);
    return { start, end, step: 1 };
  }

  private genSlice(): Val | undefined {
    const x = this.chance(0.15) ? this.intVal() : this.floatVal((v) => v.node.rank >= 1, this.int(1, 3));
    const r = x.node.rank;
    if (r === 0) return undefined;
    const axes = this.shuffle(Array.from({ length: r }, (_v, i) => i)).slice(0, this.int(1, Math.min(2, r)));
    const starts: (number | SymDim)[] = [];
    const ends: (number | SymDim | null)[] = [];
    const steps: number[] = [];
    for (const ax of axes) {
      const spec = this.sliceSpec(x.node.shape[ax]);
      if (!spec) return undefined;
      starts.push(spec.start);
      ends.push(spec.end);
      steps.push(spec.step);
    }
    const spelledAxes = axes.map((a) => (this.chance(0.3) ? a - r : a));
    const withSteps = steps.some((s) => s !== 1) || this.chance(0.3);
    const node = this.b.slice(x.node, withSteps ? { axes: spelledAxes, starts, ends, steps } : { axes: spelledAxes, starts, ends });
    return { node, bound: x.bound, exact: x.exact };
  }

  private genGather(): Val | undefined {
    if (this.chance(0.25)) {
      // embedding lookup: table [V, D] at token ids [B, S]
      const V = this.int(3, 12);
      const D = this.pick([2, 4, 8]);
      const table = this.chance(0.8) ? this.weight([V, D]) : this.fresh([V, D]);
      const ids = this.intInput([this.dim(), this.dim()], -V, V - 1);
      const node = this.b.embedding(table.node, ids.node);
      return { node, bound: table.bound, exact: table.exact };
    }
    const x = this.chance(0.1) ? this.intVal() : this.floatVal((v) => v.node.rank >= 1, this.int(1, 3));
    const r = x.node.rank;
    if (r === 0) return undefined;
    const axis = this.int(0, r - 1);
    const len = this.conc(x.node.shape[axis]);
    const ishape = Array.from({ length: this.int(0, 2) }, () => this.int(1, 4));
    const out = [...x.node.shape.slice(0, axis), ...ishape, ...x.node.shape.slice(axis + 1)];
    if (!this.fits(out)) return undefined;
    const unsigned = this.chance(0.15);
    const lo = unsigned ? 0 : -len;
    let idx: Node;
    if (this.chance(0.4) && typeof x.node.shape[axis] === 'number') {
      const vals = Array.from({ length: product(ishape) }, () => this.int(lo, len - 1));
      idx = this.b.constant(vals, unsigned ? 'u32' : 'i32', ishape);
    } else idx = this.intInput(ishape, lo, len - 1, unsigned ? 'u32' : 'i32').node;
    return { node: this.b.gather(x.node, idx, this.chance(0.3) ? axis - r : axis), bound: x.bound, exact: x.exact };
  }

  private genExpand(): Val | undefined {
    const x = this.chance(0.1) ? this.intVal() : this.floatVal((v) => v.node.rank <= 4);
    // new dims are static: a symbol that only an expand target mentions would be bound by no input
    let target: Dim[] = x.node.shape.map((d) => (d === 1 && this.chance(0.6) ? this.dim(false) : this.chance(0.1) ? 1 : d));
    if (target.length < 4 && this.chance(0.4)) target = [this.dim(false), ...target];
    if (!this.fits(this.bshape([x.node.shape, target]))) return undefined;
    return { node: this.b.expand(x.node, target), bound: x.bound, exact: x.exact };
  }

  private small(): Dim {
    if (this.syms.length && this.chance(0.3)) return this.pick(this.syms.slice(0, 2));
    return this.int(1, 3);
  }

  private genRope(): Val | undefined {
    const B = this.chance(0.5) ? 1 : this.small();
    const S = this.small();
    const H = this.int(1, 3);
    const D = this.pick([2, 4, 6, 8]);
    const shape = [B, S, H, D];
    if (!this.fits(shape)) return undefined;
    const x = this.obtain(shape);
    let pos: Node;
    const k = this.int(0, 2);
    if (k === 0 && typeof S === 'number') {
      const off = this.int(0, 20);
      pos = this.b.constant(Array.from({ length: S }, (_v, i) => off + i), 'i32', [S]);
    } else if (k === 1) pos = this.intInput([this.chance(0.5) ? 1 : B, S], 0, 40).node;
    else pos = this.intInput([S], 0, 40).node;
    const rotaryDim = this.chance(0.3) && D > 2 ? this.pick([2, D - 2].filter((v) => v > 0 && v % 2 === 0)) : undefined;
    const node = this.b.rope(x.node, pos, {
      theta: this.pick([10000, 500000, 100]),
      style: this.chance(0.5) ? 'interleaved' : 'half',
      ...(rotaryDim !== undefined ? { rotaryDim } : {}),
    });
    return { node, bound: x.bound * Math.SQRT2, exact: false };
  }

  private genAttention(): Val | undefined {
    const B = this.chance(0.6) ? 1 : this.small();
    const S = this.syms.length && this.chance(0.4) ? this.syms[1] : this.int(1, 4);
    const Hkv = this.int(1, 2);
    const Hq = Hkv * this.pick([1, 2, 4]);
    const D = this.pick([2, 4, 8]);
    const Dv = this.chance(0.7) ? D : this.pick([2, 4]);
    const causal = this.chance(0.6);
    const usePast = this.chance(0.4);
    const Tn: Dim = usePast || causal || this.chance(0.5) ? S : this.int(1, 5);
    const P: Dim = this.syms.length && this.chance(0.5) ? this.syms[2] : this.int(1, 3);
    const T = usePast ? this.conc(P) + this.conc(Tn) : this.conc(Tn);
    const work = this.conc(B) * this.conc(S) * Hq * T * Math.max(D, Dv);
    if (work > 8192 || !this.fits([B, S, Hq, Math.max(D, Dv)]) || !this.fits([B, T, Hkv, Math.max(D, Dv)])) return undefined;
    const q = this.tame(this.obtain([B, S, Hq, D]), 2);
    const k = this.tame(this.obtain([B, Tn, Hkv, D]), 2);
    const v = this.tame(this.obtain([B, Tn, Hkv, Dv]), 4);
    const opts: { causal?: boolean; scale?: number; mask?: Node; pastK?: Node; pastV?: Node } = { causal };
    if (usePast) {
      opts.pastK = this.floatInput([B, P, Hkv, D]).node;
      opts.pastV = this.floatInput([B, P, Hkv, Dv]).node;
    }
    if (this.chance(0.3)) opts.scale = this.pick([0.5, 0.25, 1]);
    const Tdim = usePast ? dimAdd(P, Tn) : Tn;
    const mk = this.int(0, 3);
    if (mk > 0) {
      const mshape: Dim[] = this.chance(0.3) ? [S, Tdim] : [this.chance(0.5) ? 1 : B, this.chance(0.5) ? 1 : Hq, S, Tdim];
      if (mk === 1) opts.mask = this.floatInput(mshape, -2, 0).node;
      else if (mk === 2) opts.mask = this.boolInput(mshape).node;
      else opts.mask = this.b.greater(this.floatInput(mshape).node, this.b.constant(-1, 'f32'));
    }
    const res = this.b.attention(q.node, k.node, v.node, opts);
    if (this.chance(0.2)) this.pool.push({ node: res.presentK, bound: Math.max(k.bound, 2), exact: false });
    return { node: res.out, bound: v.bound, exact: false };
  }

  /** Patterns an algebraic simplifier should see through (and some it must not fold away). */
  private genIdentity(): Val | undefined {
    const x = this.floatVal();
    const b = this.b;
    const n = x.node;
    const s = n.shape;
    const keep = (node: Node, bound = x.bound, exact = false): Val => ({ node, bound, exact });
    switch (this.int(0, 21)) {
      case 0: return keep(this.chance(0.5) ? b.add(n, 0) : b.add(0, n));
      case 1: return keep(this.chance(0.5) ? b.mul(n, 1) : b.mul(1, n));
      case 2: return keep(b.sub(n, 0));
      case 3: return keep(b.div(n, 1));
      case 4: return keep(b.mul(n, 0), 0);
      case 5: return keep(b.sub(n, n), 0);
      case 6: return keep(b.pow(n, this.pick([1, 2])), Math.max(x.bound, x.bound ** 2));
      case 7: return keep(this.chance(0.5) ? b.maximum(n, n) : b.minimum(n, n), x.bound, x.exact);
      case 8: return keep(b.neg(b.neg(n)), x.bound, x.exact);
      case 9: {
        // a splat constant whose shape broadcasts x to something bigger: must not be dropped
        const cs = this.broadcastPartner(s).map((d) => (typeof d === 'number' ? d : 1));
        if (!this.fits(this.bshape([s, cs]))) return undefined;
        return keep(this.chance(0.5) ? b.add(n, b.constant(0, 'f32', cs)) : b.mul(b.constant(1, 'f32', cs), n));
      }
      case 10: {
        const p = this.shuffle(Array.from({ length: n.rank }, (_v, i) => i));
        return keep(b.transpose(b.transpose(n, p), inversePerm(p)), x.bound, x.exact);
      }
      case 11: return keep(b.reshape(b.reshape(n, [-1]), [...s]), x.bound, x.exact);
      case 12: return keep(b.cast(n, 'f32'), x.bound, x.exact);
      case 13: return keep(b.expand(n, [...s]), x.bound, x.exact);
      case 14: {
        if (!n.rank) return undefined;
        const ax = this.int(0, n.rank - 1);
        return keep(b.slice(n, { axes: [ax], starts: [0], ends: [null] }), x.bound, x.exact);
      }
      case 15: return n.rank ? keep(b.concat([n], this.int(0, n.rank - 1)), x.bound, x.exact) : undefined;
      case 16: {
        const other = this.obtain(this.reducedPartner(s));
        return keep(b.where(b.constant(this.chance(0.5) ? 1 : 0, 'bool'), n, other.node), Math.max(x.bound, other.bound));
      }
      case 17: return keep(b.add(b.mul(n, 2), b.mul(n, 3)), 5 * x.bound);
      case 18: return keep(b.mul(b.mul(n, 2), 0.5));
      case 19: return keep(b.add(n, b.add(b.constant(2), b.constant(-2))));
      case 20: return keep(b.reduce(this.pick(['sum', 'max'] as const), n, []), x.bound, x.exact);
      default: {
        const p = this.positive(x);
        return keep(b.exp(b.log(p.node)), p.bound);
      }
    }
  }

  /** An i32 value from the pool, or a fresh i32 input with values in [-4, 4]. */
  private intVal(): Val {
    return (this.chance(0.7) ? this.pickVal((v) => v.node.dtype === 'i32') : undefined) ?? this.intInput(this.shape(this.int(0, 3)), -4, 4);
  }

  private genInteger(): Val | undefined {
    const b = this.b;
    if (this.chance(0.1)) {
      // an index vector over a dim (symbolic ones are how Trilu masks and position ids are built)
      const d = this.dim();
      return { node: b.range(d), bound: Math.max(this.conc(d) - 1, 0), exact: true };
    }
    // one in five computes in i64 (widened from i32, narrowed back below: i64 stays inside the graph)
    const wide = this.chance(0.2);
    const widen = (v: Val): Val => (wide ? { ...v, node: b.cast(v.node, 'i64') } : v);
    const x = widen(this.intVal());
    const op = this.pick(['add', 'sub', 'mul', 'maximum', 'minimum', 'neg', 'abs', 'div'] as const);
    let r: Val;
    if (op === 'neg' || op === 'abs') r = { node: b.unary(op, x.node), bound: x.bound, exact: true };
    else {
      const ys = this.broadcastPartner(x.node.shape);
      if (!this.fits(this.bshape([x.node.shape, ys]))) return undefined;
      const pooled = this.pool.filter((v) => v.node.dtype === 'i32' && v.node.rank === ys.length && v.node.shape.every((d, i) => d === ys[i]));
      const y = widen(pooled.length && this.chance(0.5) ? this.pick(pooled) : this.chance(0.2) ? this.splat(this.int(-3, 3), 'i32') : this.intInput(ys, -4, 4));
      if (op === 'div') {
        const den = b.add(b.abs(y.node), 1);
        r = { node: b.div(x.node, den), bound: x.bound, exact: true };
      } else if (op === 'mul') {
        if (x.bound * y.bound > 1e6) return undefined;
        r = { node: b.mul(x.node, y.node), bound: x.bound * y.bound, exact: true };
      } else r = { node: b.binary(op, x.node, y.node), bound: op === 'add' || op === 'sub' ? x.bound + y.bound : Math.max(x.bound, y.bound), exact: true };
    }
    if (this.chance(0.5)) return { node: b.cast(r.node, 'f32'), bound: r.bound, exact: true };
    return wide ? { ...r, node: b.cast(r.node, 'i32') } : r;
  }
}

/** Length of an ONNX-style slice of a static axis of length `n` (the rule `slice` implements). */
export function sliceLength(n: number, start: number, end: number | null, step: number): number {
  if (step > 0) {
    const s = start < 0 ? Math.max(start + n, 0) : Math.min(start, n);
    const e = end === null ? n : end < 0 ? Math.max(end + n, 0) : Math.min(end, n);
    return Math.max(0, Math.ceil((e - s) / step));
  }
  const s = start < 0 ? Math.max(start + n, -1) : Math.min(start, n - 1);
  const e = end === null ? -1 : end < 0 ? Math.max(end + n, -1) : Math.min(end, n - 1);
  return Math.max(0, Math.ceil((s - e) / -step));
}

/** Text of a case's shapes, for messages. */
export function describeCase(c: GraphCase): string {
  return `seed=${c.seed} steps=${c.steps} inputs: ${c.graph.inputs.map((i) => `${String(i.attrs.name)}${shapeToString(i.shape)}`).join(' ')}`;
}
