/**
 * The op set and each op's type rule. An op definition normalizes attributes (defaults filled in, negative axes
 * made positive) so equal computations intern to the same node, and infers the output type, throwing
 * {@link ShapeError} when the operands do not fit.
 *
 * Layout conventions: activations of attention-family ops are `[batch, seq, heads, headDim]`; norms normalize over the
 * last axis; `matmul` contracts the last axis of A with the second-to-last of B (transposes as attributes).
 * @module
 */
import { ShapeError, UnsupportedOpError } from '../errors.js';
import { isDType, isFloat, type DType } from './dtype.js';
import { dimAdd, dimDivExact, dimMul, dimProduct, dimSub, dimToString, numel, SymDim, shapeToString, type Dim, type Shape } from './dim.js';
import type { Attrs, AttrValue, Node, TensorType } from './node.js';
import type { ActivationQuant, AttrsOf } from './attrs.js';

/** Unary elementwise ops on floats. */
export const UNARY_OPS = ['neg', 'abs', 'exp', 'log', 'sqrt', 'rsqrt', 'reciprocal', 'tanh', 'erf', 'sin', 'cos', 'silu', 'gelu', 'relu', 'sigmoid'] as const;
/** Binary arithmetic elementwise ops (broadcasting, same dtype). */
export const BINARY_OPS = ['add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum'] as const;
/** Binary comparisons (broadcasting, bool result). */
export const COMPARE_OPS = ['equal', 'less', 'greater'] as const;
/**
 * Ops computed independently per output element (with broadcasting): the unary, binary and comparison ops, `where`,
 * `cast`, and `expand` (a broadcast read). Fusion passes may chain them into one elementwise program.
 */
export const POINTWISE_OPS: ReadonlySet<string> = new Set<string>([...UNARY_OPS, ...BINARY_OPS, ...COMPARE_OPS, 'where', 'cast', 'expand']);
/** Reductions over axes. */
export const REDUCE_OPS = ['sum', 'mean', 'max'] as const;

/** Every op name. */
export const OP_NAMES = [
  'input',
  'weight',
  'constant',
  'range',
  ...UNARY_OPS,
  ...BINARY_OPS,
  ...COMPARE_OPS,
  'where',
  'cast',
  'matmul',
  ...REDUCE_OPS,
  'softmax',
  'rmsnorm',
  'layernorm',
  'rope',
  'kv_quantize',
  'reshape',
  'transpose',
  'concat',
  'slice',
  'gather',
  'expand',
  'attention',
  'fused',
] as const;

/** Name of an op. */
export type OpName = (typeof OP_NAMES)[number];
/** Name of a unary elementwise op. */
export type UnaryOp = (typeof UNARY_OPS)[number];
/** Name of a binary arithmetic op. */
export type BinaryOp = (typeof BINARY_OPS)[number];
/** Name of a comparison op. */
export type CompareOp = (typeof COMPARE_OPS)[number];
/** Name of a reduction op. */
export type ReduceOp = (typeof REDUCE_OPS)[number];

/** Broad family of an op, used by printers, reports and fusion. */
export type OpCategory = 'leaf' | 'elementwise' | 'matmul' | 'reduce' | 'normalization' | 'layout' | 'gather' | 'attention' | 'fused';

/** Definition of one op. */
export interface OpDef {
  /** Op name. */
  readonly name: OpName;
  /** Family. */
  readonly category: OpCategory;
  /** Whether `op(a, b) == op(b, a)`. */
  readonly commutative?: boolean;
  /** Throws when the operand count is wrong. */
  checkArity(n: number): void;
  /** Canonical attributes (defaults filled, axes normalized); may throw {@link ShapeError}. */
  normalize?(inputs: readonly TensorType[], attrs: Attrs): Attrs;
  /** Output type; throws {@link ShapeError} naming the op and shapes when operands do not fit. */
  infer(inputs: readonly TensorType[], attrs: Attrs): TensorType;
}

const defs = new Map<string, OpDef>();

/** Looks up an op definition; throws {@link UnsupportedOpError} for unknown names. */
export function getOpDef(op: string): OpDef {
  const d = defs.get(op);
  if (!d) throw new UnsupportedOpError([op], `unknown op '${op}'`);
  return d;
}

/** True when `op` names a known op. */
export function isOpName(op: string): op is OpName {
  return defs.has(op);
}

function arity(name: string, min: number, max = min): (n: number) => void {
  return (n) => {
    if (n < min || n > max) throw new ShapeError(name, `takes ${min === max ? min : `${min}..${max === Infinity ? 'n' : max}`} operands, got ${n}`);
  };
}

/** An op's rules as written below: `normalize` must produce, and `infer` receives, the op's typed attributes. */
interface OpRules<O extends OpName> {
  commutative?: boolean;
  normalize?(inputs: readonly TensorType[], attrs: Attrs): AttrsOf<O>;
  infer(inputs: readonly TensorType[], attrs: AttrsOf<O>): TensorType;
}

function define<O extends OpName>(name: O, category: OpCategory, ar: [number, number?], rest: OpRules<O>): void {
  // sound: a node's attributes are always its op's normalized ones, so `infer` gets what `normalize` made
  defs.set(name, { name, category, checkArity: arity(name, ar[0], ar[1] ?? ar[0]), ...(rest as Omit<OpDef, 'name' | 'category' | 'checkArity'>) });
}

const s = shapeToString;

/** Normalizes an axis against a rank (negative counts from the end); throws naming the op. */
export function normAxis(op: string, axis: number, rank: number): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) throw new ShapeError(op, `axis ${axis} is out of range for rank ${rank}`);
  return axis < 0 ? axis + rank : axis;
}

/** Numpy-style broadcast of shapes; throws naming the op and every shape. */
export function broadcastShapes(op: string, shapes: readonly Shape[]): Dim[] {
  const rank = Math.max(...shapes.map((x) => x.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const sh of shapes) {
      const j = i - (rank - sh.length);
      if (j < 0) continue;
      const e = sh[j];
      if (e === 1) continue;
      if (d === 1) d = e;
      else if (d !== e) throw new ShapeError(op, `shapes ${shapes.map(s).join(' and ')} do not broadcast (dim ${i}: ${dimToString(d)} vs ${dimToString(e)})`);
    }
    out.push(d);
  }
  return out;
}

function sameDType(op: string, inputs: readonly TensorType[]): DType {
  const dt = inputs[0].dtype;
  for (const x of inputs) if (x.dtype !== dt) throw new ShapeError(op, `operand dtypes differ: ${inputs.map((i) => `${i.dtype}${s(i.shape)}`).join(', ')}`);
  return dt;
}

function requireFloat(op: string, t: TensorType, what = 'operand'): void {
  if (!isFloat(t.dtype)) throw new ShapeError(op, `${what} must be f32 or f16, got ${t.dtype}${s(t.shape)}`);
}

function num(a: Attrs, k: string, def?: number): number {
  const v = a[k] ?? def;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ShapeError('attrs', `attribute '${k}' must be a finite number, got ${JSON.stringify(v)}`);
  return v;
}

function bool(a: Attrs, k: string, def: boolean): boolean {
  const v = a[k] ?? def;
  if (typeof v !== 'boolean') throw new ShapeError('attrs', `attribute '${k}' must be a boolean`);
  return v;
}

function ints(op: string, a: Attrs, k: string): number[] {
  const v = a[k];
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x))) throw new ShapeError(op, `attribute '${k}' must be an array of integers, got ${JSON.stringify(v)}`);
  return v as number[];
}

/** Reads a shape attribute (numbers and symbolic dims). */
export function shapeAttr(op: string, a: Attrs, k: string): Dim[] {
  const v = a[k];
  if (!Array.isArray(v) || !v.every((x: AttrValue) => (typeof x === 'number' && Number.isInteger(x) && x >= 0) || x instanceof SymDim))
    throw new ShapeError(op, `attribute '${k}' must be a shape (non-negative integers or symbolic dims), got ${JSON.stringify(v)}`);
  return v as Dim[];
}

// ---------------------------------------------------------------------------------------------------------------
// leaves

define('input', 'leaf', [0], {
  normalize: (_i, a) => {
    if (typeof a.name !== 'string' || !a.name) throw new ShapeError('input', 'needs a name');
    if (!isDType(a.dtype)) throw new ShapeError('input', `'${a.name}' has bad dtype ${JSON.stringify(a.dtype)}`);
    return { name: a.name, dtype: a.dtype, shape: shapeAttr('input', a, 'shape') };
  },
  infer: (_i, a) => ({ dtype: a.dtype, shape: a.shape }),
});

define('weight', 'leaf', [0], {
  normalize: (_i, a) => {
    if (typeof a.id !== 'string') throw new ShapeError('weight', 'needs an id');
    if (!isDType(a.dtype)) throw new ShapeError('weight', `'${a.id}' has bad dtype`);
    return { id: a.id, name: typeof a.name === 'string' ? a.name : a.id, dtype: a.dtype, shape: shapeAttr('weight', a, 'shape') };
  },
  infer: (_i, a) => ({ dtype: a.dtype, shape: a.shape }),
});

/** Largest constant (in elements) kept inline in a node; larger ones belong in the weight store. */
export const MAX_INLINE_CONSTANT = 4096;

define('constant', 'leaf', [0], {
  normalize: (_i, a) => {
    if (!isDType(a.dtype)) throw new ShapeError('constant', `bad dtype ${JSON.stringify(a.dtype)}`);
    const shape = shapeAttr('constant', a, 'shape');
    if (!shape.every((d) => typeof d === 'number')) throw new ShapeError('constant', `constants need a static shape, got ${s(shape)}`);
    const n = shape.reduce((x: number, y) => x * (y as number), 1);
    const values = a.values;
    // i32 constants may hold symbolic dims: shape arithmetic (an ONNX `Shape` of a `[batch, seq, 64]` tensor is
    // `constant i32 [3] values [batch, seq, 64]`); the interpreter evaluates them with the run's bindings
    const legal = (v: AttrValue): boolean => typeof v === 'number' || (v instanceof SymDim && a.dtype === 'i32');
    if (!Array.isArray(values) || !values.every(legal)) throw new ShapeError('constant', 'values must be an array of numbers (or, for i32, symbolic dims)');
    if (values.length !== 1 && values.length !== n) throw new ShapeError('constant', `${values.length} values for shape ${s(shape)}`);
    if (n > MAX_INLINE_CONSTANT) throw new ShapeError('constant', `${n} elements is too large to inline (max ${MAX_INLINE_CONSTANT}); put it in the weight store`);
    // one value means "splat": keep it that way so splats intern regardless of how they were written
    const splat = values.length === 1 || values.every((v) => Object.is(v, values[0]));
    const vals = splat ? [canonValue(a.dtype, values[0] as number | SymDim)] : (values as (number | SymDim)[]).map((v) => canonValue(a.dtype as DType, v));
    return { dtype: a.dtype, shape, values: vals };
  },
  infer: (_i, a) => ({ dtype: a.dtype, shape: a.shape }),
});

/**
 * `range`: the i32 vector `[0, 1, …, length - 1]`, `length` a static or symbolic dim (index grids over dims known only
 * at run time: Trilu masks, position ids). A static one folds to a constant.
 */
define('range', 'leaf', [0], {
  normalize: (_i, a) => {
    const length = a.length;
    if (!((typeof length === 'number' && Number.isInteger(length) && length >= 0) || length instanceof SymDim))
      throw new ShapeError('range', `length must be a non-negative integer or a symbolic dim, got ${JSON.stringify(length)}`);
    return { length };
  },
  infer: (_i, a) => ({ dtype: 'i32', shape: [a.length] }),
});

function canonValue(dtype: DType, v: number | SymDim): number | SymDim {
  if (v instanceof SymDim) return v;
  switch (dtype) {
    case 'f32':
      return Math.fround(v);
    case 'i32':
      return v | 0;
    case 'u32':
      return v >>> 0;
    case 'bool':
      return v ? 1 : 0;
    case 'i64':
      // inline i64 values are exact doubles: beyond ±2^53 they go to the weight store (two words per element)
      if (!Number.isSafeInteger(v)) throw new ShapeError('constant', `i64 value ${v} is not an integer within ±2^53 (put wider values in the weight store)`);
      return v === 0 ? 0 : v;
    default:
      return v;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// elementwise

for (const op of UNARY_OPS) {
  define(op, 'elementwise', [1], {
    normalize: (_i, a): Attrs => (op === 'gelu' ? { approximate: a.approximate === 'tanh' ? 'tanh' : 'none' } : {}),
    infer: ([x]) => {
      if (op === 'neg' || op === 'abs') {
        if (x.dtype === 'bool' || x.dtype === 'u32') throw new ShapeError(op, `needs a signed numeric operand, got ${x.dtype}${s(x.shape)}`);
      } else requireFloat(op, x);
      return { dtype: x.dtype, shape: x.shape };
    },
  });
}

for (const op of BINARY_OPS) {
  define(op, 'elementwise', [2], {
    commutative: op === 'add' || op === 'mul' || op === 'maximum' || op === 'minimum',
    infer: (inputs) => {
      const dt = sameDType(op, inputs);
      if (dt === 'bool') throw new ShapeError(op, 'arithmetic on bool');
      if (op === 'pow') requireFloat(op, inputs[0]);
      return { dtype: dt, shape: broadcastShapes(op, inputs.map((x) => x.shape)) };
    },
  });
}

for (const op of COMPARE_OPS) {
  define(op, 'elementwise', [2], {
    commutative: op === 'equal',
    infer: (inputs) => {
      sameDType(op, inputs);
      return { dtype: 'bool', shape: broadcastShapes(op, inputs.map((x) => x.shape)) };
    },
  });
}

define('where', 'elementwise', [3], {
  infer: ([c, a, b]) => {
    if (c.dtype !== 'bool') throw new ShapeError('where', `condition must be bool, got ${c.dtype}${s(c.shape)}`);
    const dt = sameDType('where', [a, b]);
    return { dtype: dt, shape: broadcastShapes('where', [c.shape, a.shape, b.shape]) };
  },
});

define('cast', 'elementwise', [1], {
  normalize: (_i, a) => {
    if (!isDType(a.to)) throw new ShapeError('cast', `target dtype ${JSON.stringify(a.to)} is not a dtype`);
    return { to: a.to };
  },
  infer: ([x], a) => ({ dtype: a.to, shape: x.shape }),
});

// ---------------------------------------------------------------------------------------------------------------
// matmul

/** The canonical `actQuant` of a matmul: absent, `{scale: 'per-token'}`, or `{scale}` with a positive f32 scale. */
function activationQuant(a: Attrs): ActivationQuant | undefined {
  const q = a.actQuant;
  if (q === undefined || q === null) return undefined;
  const scale = typeof q === 'object' && !Array.isArray(q) ? (q as { scale?: unknown }).scale : undefined;
  if (scale === 'per-token') return { scale };
  if (typeof scale === 'number' && Number.isFinite(scale) && scale > 0) return { scale: Math.fround(scale) };
  throw new ShapeError('matmul', `attribute 'actQuant' must be {scale: 'per-token'} or {scale: <positive number>}, got ${JSON.stringify(q)}`);
}

define('matmul', 'matmul', [2], {
  normalize: (_i, a) => {
    const actQuant = activationQuant(a);
    return { transA: bool(a, 'transA', false), transB: bool(a, 'transB', false), ...(actQuant ? { actQuant } : {}) };
  },
  infer: ([A, B], a) => {
    const dt = sameDType('matmul', [A, B]);
    if (a.actQuant) {
      if (!isFloat(dt)) throw new ShapeError('matmul', `a W8A8 matmul (actQuant) takes float operands, got ${dt}${s(A.shape)} x ${dt}${s(B.shape)}`);
      if (B.shape.length !== 2 || a.transA) throw new ShapeError('matmul', `a W8A8 matmul (actQuant) takes a 2-D B and an untransposed A, got ${s(A.shape)}${a.transA ? 'ᵀ' : ''} x ${s(B.shape)}`);
    }
    if (dt === 'bool') throw new ShapeError('matmul', 'bool operands');
    if (dt === 'i64') throw new ShapeError('matmul', `int64 operands are not supported (${A.dtype}${s(A.shape)} x ${B.dtype}${s(B.shape)})`);
    if (A.shape.length < 2 || B.shape.length < 2) throw new ShapeError('matmul', `operands need rank >= 2, got ${s(A.shape)} and ${s(B.shape)}`);
    const { m, k: ka, kB: kb, n } = matmulMNK(A.shape, B.shape, !!a.transA, !!a.transB);
    if (ka !== kb)
      throw new ShapeError('matmul', `contracted dims differ: ${s(A.shape)}${a.transA ? 'ᵀ' : ''} x ${s(B.shape)}${a.transB ? 'ᵀ' : ''} (${dimToString(ka)} vs ${dimToString(kb)})`);
    const batch = broadcastShapes('matmul', [A.shape.slice(0, -2), B.shape.slice(0, -2)]);
    return { dtype: dt, shape: [...batch, m, n] };
  },
});

// ---------------------------------------------------------------------------------------------------------------
// reductions, softmax, norms

for (const op of REDUCE_OPS) {
  define(op, 'reduce', [1], {
    normalize: ([x], a) => {
      const axes = [...new Set(ints(op, a, 'axes').map((ax) => normAxis(op, ax, x.shape.length)))].sort((p, q) => p - q);
      return { axes, keepDims: bool(a, 'keepDims', false) };
    },
    infer: ([x], a) => {
      if (x.dtype === 'bool') throw new ShapeError(op, 'cannot reduce bool');
      if (op === 'mean') requireFloat(op, x);
      const axes = a.axes;
      const shape = a.keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_d, i) => !axes.includes(i));
      return { dtype: x.dtype, shape };
    },
  });
}

define('softmax', 'normalization', [1], {
  normalize: ([x], a) => ({ axis: normAxis('softmax', num(a, 'axis', -1), x.shape.length) }),
  infer: ([x]) => {
    requireFloat('softmax', x);
    return x;
  },
});

define('rmsnorm', 'normalization', [2], {
  normalize: (_i, a) => ({ eps: num(a, 'eps', 1e-5) }),
  infer: ([x, w]) => {
    requireFloat('rmsnorm', x);
    sameDType('rmsnorm', [x, w]);
    const d = x.shape[x.shape.length - 1];
    if (x.shape.length < 1 || w.shape.length !== 1 || w.shape[0] !== d) throw new ShapeError('rmsnorm', `weight ${s(w.shape)} must be [${dimToString(d)}] for input ${s(x.shape)}`);
    return x;
  },
});

define('layernorm', 'normalization', [2, 3], {
  normalize: (_i, a) => ({ eps: num(a, 'eps', 1e-5) }),
  infer: (inputs) => {
    const [x, w, b] = inputs;
    requireFloat('layernorm', x);
    sameDType('layernorm', inputs);
    const d = x.shape[x.shape.length - 1];
    for (const p of b ? [w, b] : [w])
      if (x.shape.length < 1 || p.shape.length !== 1 || p.shape[0] !== d) throw new ShapeError('layernorm', `scale/bias ${s(p.shape)} must be [${dimToString(d)}] for input ${s(x.shape)}`);
    return x;
  },
});

// ---------------------------------------------------------------------------------------------------------------
// rope

define('rope', 'elementwise', [2], {
  normalize: ([x], a) => {
    const style = a.style ?? 'interleaved';
    if (style !== 'interleaved' && style !== 'half') throw new ShapeError('rope', `style must be 'interleaved' (llama2.c adjacent pairs) or 'half' (NeoX), got ${JSON.stringify(style)}`);
    const d = x.shape[x.shape.length - 1];
    const rotaryDim = num(a, 'rotaryDim', typeof d === 'number' ? d : 0);
    return { theta: num(a, 'theta', 10000), style, rotaryDim };
  },
  infer: ([x, pos], a) => {
    requireFloat('rope', x);
    if (x.shape.length !== 4) throw new ShapeError('rope', `input must be [batch, seq, heads, headDim], got ${s(x.shape)}`);
    const [b, seq, , d] = x.shape;
    if (typeof d !== 'number') throw new ShapeError('rope', `head dim must be static, got ${s(x.shape)}`);
    const rd = a.rotaryDim;
    if (rd <= 0 || rd > d || rd % 2 !== 0) throw new ShapeError('rope', `rotaryDim ${rd} must be even and in (0, ${d}]`);
    if (pos.dtype !== 'i32') throw new ShapeError('rope', `positions must be i32, got ${pos.dtype}${s(pos.shape)}`);
    const okPos = (pos.shape.length === 1 && pos.shape[0] === seq) || (pos.shape.length === 2 && pos.shape[1] === seq && (pos.shape[0] === b || pos.shape[0] === 1));
    if (!okPos) throw new ShapeError('rope', `positions ${s(pos.shape)} must be [seq] or [batch, seq] for input ${s(x.shape)}`);
    return x;
  },
});

/**
 * `kv_quantize(x)`: what a quantized KV cache reads back of `x` `[..., D]`: each vector along the last axis quantized
 * to `dtype` (int8/int4) with its own scale and dequantized (see `src/ir/kv-cache-quant.ts`). The CPU reference of a
 * quantized KV cache applies it to the keys and values a step appends; WebGPU engines store the integers.
 */
define('kv_quantize', 'normalization', [1], {
  normalize: (_i, a) => {
    if (a.dtype !== 'int8' && a.dtype !== 'int4') throw new ShapeError('kv_quantize', `dtype must be 'int8' or 'int4', got ${JSON.stringify(a.dtype)}`);
    return { dtype: a.dtype };
  },
  infer: ([x]) => {
    if (x.dtype !== 'f32') throw new ShapeError('kv_quantize', `input must be f32, got ${x.dtype}${s(x.shape)}`);
    if (x.shape.length < 1) throw new ShapeError('kv_quantize', 'input must have a last axis');
    return x;
  },
});

// ---------------------------------------------------------------------------------------------------------------
// layout

define('reshape', 'layout', [1], {
  normalize: ([x], a) => {
    const raw = a.shape;
    if (!Array.isArray(raw)) throw new ShapeError('reshape', 'needs a target shape');
    // resolve 0 (copy input dim) and -1 (infer) here so the node holds an explicit shape
    const out: (Dim | -1)[] = raw.map((d: AttrValue, i: number) => {
      if (d instanceof SymDim) return d;
      if (d === 0) {
        if (i >= x.shape.length) throw new ShapeError('reshape', `0 at position ${i} has no input dim to copy (input ${s(x.shape)})`);
        return x.shape[i];
      }
      if (d === -1) return -1;
      if (typeof d === 'number' && Number.isInteger(d) && d > 0) return d;
      throw new ShapeError('reshape', `bad target dim ${JSON.stringify(d)} in ${JSON.stringify(raw)}`);
    });
    const inferIdx = out.indexOf(-1);
    if (inferIdx !== out.lastIndexOf(-1)) throw new ShapeError('reshape', 'at most one -1 in the target shape');
    if (inferIdx >= 0) {
      const known = dimProduct(out.filter((d) => d !== -1) as Dim[]);
      const q = dimDivExact(numel(x.shape), known);
      if (q === undefined) throw new ShapeError('reshape', `cannot infer -1: ${s(x.shape)} has ${dimToString(numel(x.shape))} elements, not divisible by ${dimToString(known)}`);
      out[inferIdx] = q;
    }
    return { shape: out as Dim[] };
  },
  infer: ([x], a) => {
    const shape = a.shape;
    if (numel(shape) !== numel(x.shape)) throw new ShapeError('reshape', `cannot reshape ${s(x.shape)} (${dimToString(numel(x.shape))} elements) to ${s(shape)} (${dimToString(numel(shape))})`);
    return { dtype: x.dtype, shape };
  },
});

define('transpose', 'layout', [1], {
  normalize: ([x], a) => {
    const perm = a.perm === undefined ? x.shape.map((_d, i) => x.shape.length - 1 - i) : ints('transpose', a, 'perm');
    const sorted = [...perm].sort((p, q) => p - q);
    if (perm.length !== x.shape.length || sorted.some((p, i) => p !== i)) throw new ShapeError('transpose', `perm [${perm}] is not a permutation of rank ${x.shape.length} (input ${s(x.shape)})`);
    return { perm };
  },
  infer: ([x], a) => ({ dtype: x.dtype, shape: a.perm.map((p) => x.shape[p]) }),
});

define('concat', 'layout', [1, Infinity], {
  normalize: (inputs, a) => ({ axis: normAxis('concat', num(a, 'axis'), inputs[0].shape.length) }),
  infer: (inputs, a) => {
    const axis = a.axis;
    const dt = sameDType('concat', inputs);
    const r = inputs[0].shape.length;
    let total: Dim = 0;
    for (const x of inputs) {
      if (x.shape.length !== r || x.shape.some((d, i) => i !== axis && d !== inputs[0].shape[i]))
        throw new ShapeError('concat', `operands ${inputs.map((i) => s(i.shape)).join(', ')} differ outside axis ${axis}`);
      total = dimAdd(total, x.shape[axis]);
    }
    const shape = [...inputs[0].shape];
    shape[axis] = total;
    return { dtype: dt, shape };
  },
});

/**
 * `slice` attributes are per-axis `starts`, `ends` (`null` = to the end) and `steps`. On a static axis, starts and
 * ends follow ONNX semantics (negative counts from the end, clamped), or, with step 1, may be symbolic sizes (the
 * result's dim is then `end - start`); on a symbolic axis they must be non-negative with `ends` null, or the static
 * end must be given as a symbolic expression (e.g. `past+seq`).
 */
define('slice', 'layout', [1], {
  normalize: ([x], a) => {
    const axes = ints('slice', a, 'axes').map((ax) => normAxis('slice', ax, x.shape.length));
    const starts = a.starts as (number | SymDim)[];
    const ends = a.ends as (number | SymDim | null)[];
    const steps = (a.steps ?? axes.map(() => 1)) as number[];
    if (!Array.isArray(starts) || !Array.isArray(ends) || starts.length !== axes.length || ends.length !== axes.length || steps.length !== axes.length)
      throw new ShapeError('slice', 'axes, starts, ends and steps must have equal lengths');
    if (new Set(axes).size !== axes.length) throw new ShapeError('slice', `repeated axis in [${axes}]`);
    const outStarts: Dim[] = [];
    const outEnds: (Dim | null)[] = [];
    axes.forEach((ax, i) => {
      const dim = x.shape[ax];
      const step = steps[i];
      if (!Number.isInteger(step) || step === 0) throw new ShapeError('slice', `step must be a non-zero integer, got ${step}`);
      if (typeof dim === 'number') {
        // ONNX clamping: positive steps clamp starts and ends into [0, dim]; negative steps clamp starts into
        // [0, dim-1] and ends into [-1, dim-1], where -1 means "past the front" and is stored as null so that
        // normalizing canonical attributes again is the identity
        const st = starts[i];
        const en = ends[i];
        if (st instanceof SymDim || en instanceof SymDim) {
          // symbolic bounds on a static axis (GPT-2's `bias[:, :, past:past+seq]`): step 1, bounds are sizes within
          // the axis (the kernels clamp at run time); a numeric bound is clamped as usual
          if (step !== 1) throw new ShapeError('slice', `symbolic bounds need step 1 on static axis ${ax} of ${s(x.shape)}`);
          if ((typeof st === 'number' && st < 0) || (typeof en === 'number' && en < 0)) throw new ShapeError('slice', `negative bound with a symbolic one on axis ${ax} of ${s(x.shape)}`);
          outStarts.push(typeof st === 'number' ? Math.min(st, dim) : st);
          outEnds.push(en === null ? dim : typeof en === 'number' ? Math.min(en, dim) : en);
          return;
        }
        const abs = (v: number): number => (v < 0 ? v + dim : v);
        if (step > 0) {
          outStarts.push(Math.min(Math.max(abs(st), 0), dim));
          outEnds.push(en === null ? dim : Math.min(Math.max(abs(en), 0), dim));
        } else {
          outStarts.push(Math.min(Math.max(abs(st), 0), Math.max(dim - 1, 0)));
          const e = en === null ? -1 : Math.min(Math.max(abs(en), -1), dim - 1);
          outEnds.push(e === -1 ? null : e);
        }
      } else {
        if (step !== 1) throw new ShapeError('slice', `only step 1 on symbolic axis ${ax} of ${s(x.shape)}`);
        const st = starts[i];
        const en = ends[i];
        if (typeof st === 'number' && st < 0) throw new ShapeError('slice', `negative start on symbolic axis ${ax} of ${s(x.shape)}`);
        if (typeof en === 'number' && en < 0) throw new ShapeError('slice', `negative end on symbolic axis ${ax} of ${s(x.shape)}`);
        outStarts.push(st);
        outEnds.push(en === null ? dim : en);
      }
    });
    return { axes, starts: outStarts, ends: outEnds, steps };
  },
  infer: ([x], a) => {
    const shape = [...x.shape];
    a.axes.forEach((ax, i) => {
      const st = a.starts[i];
      const step = a.steps[i];
      const en = a.ends[i] ?? -1;
      if (typeof st === 'number' && typeof en === 'number') {
        shape[ax] = step > 0 ? Math.max(0, Math.ceil((en - st) / step)) : Math.max(0, Math.ceil((st - en) / -step));
      } else shape[ax] = dimSub(en, st);
    });
    return { dtype: x.dtype, shape };
  },
});

define('gather', 'gather', [2], {
  normalize: ([x], a) => ({ axis: normAxis('gather', num(a, 'axis', 0), x.shape.length) }),
  infer: ([x, idx], a) => {
    if (idx.dtype !== 'i32' && idx.dtype !== 'u32' && idx.dtype !== 'i64') throw new ShapeError('gather', `indices must be i32, u32 or i64, got ${idx.dtype}${s(idx.shape)}`);
    const axis = a.axis;
    return { dtype: x.dtype, shape: [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)] };
  },
});

define('expand', 'layout', [1], {
  normalize: (_i, a) => ({ shape: shapeAttr('expand', a, 'shape') }),
  infer: ([x], a) => {
    const target = a.shape;
    const shape = broadcastShapes('expand', [x.shape, target]);
    return { dtype: x.dtype, shape };
  },
});

// ---------------------------------------------------------------------------------------------------------------
// attention

/**
 * `attention(q, k, v, mask?)`: q `[B, S, Hq, D]`, k `[B, T, Hkv, D]`, v `[B, T, Hkv, Dv]` with `Hq % Hkv == 0`
 * (GQA/MQA: query head `h` reads KV head `floor(h / (Hq/Hkv))`). `causal` masks key `j` for query `i` when
 * `j > i + (T - S)` (bottom-right aligned, so a KV cache of `T - S` past tokens works). An optional mask broadcastable
 * to `[B, Hq, S, T]` is added to the scores (f32) or selects them (bool, false = masked). Output `[B, S, Hq, Dv]`.
 */
define('attention', 'attention', [3, 4], {
  normalize: ([q], a) => {
    const d = q.shape[3];
    const defScale = typeof d === 'number' ? 1 / Math.sqrt(d) : 1;
    return { causal: bool(a, 'causal', false), scale: Math.fround(num(a, 'scale', defScale)) };
  },
  infer: (inputs) => {
    const [q, k, v, mask] = inputs;
    for (const t of [q, k, v]) requireFloat('attention', t);
    sameDType('attention', [q, k, v]);
    if (q.shape.length !== 4 || k.shape.length !== 4 || v.shape.length !== 4)
      throw new ShapeError('attention', `q, k, v must be [batch, seq, heads, headDim], got ${s(q.shape)}, ${s(k.shape)}, ${s(v.shape)}`);
    const [bq, sq, hq, dq] = q.shape;
    const [bk, tk, hk, dk] = k.shape;
    const [bv, tv, hv, dv] = v.shape;
    if (bq !== bk || bq !== bv) throw new ShapeError('attention', `batch dims differ: q ${s(q.shape)}, k ${s(k.shape)}, v ${s(v.shape)}`);
    if (tk !== tv || hk !== hv) throw new ShapeError('attention', `k ${s(k.shape)} and v ${s(v.shape)} disagree on length or heads`);
    if (dq !== dk) throw new ShapeError('attention', `q ${s(q.shape)} and k ${s(k.shape)} head dims differ`);
    if (typeof hq !== 'number' || typeof hk !== 'number' || hk === 0 || hq % hk !== 0)
      throw new ShapeError('attention', `query heads (${dimToString(hq)}) must be a static multiple of KV heads (${dimToString(hk)})`);
    if (mask) {
      if (mask.dtype !== 'bool' && mask.dtype !== q.dtype) throw new ShapeError('attention', `mask must be bool or ${q.dtype}, got ${mask.dtype}`);
      const full = broadcastShapes('attention', [mask.shape, [bq, hq, sq, tk]]);
      if (full.length !== 4 || full.some((d, i) => d !== [bq, hq, sq, tk][i])) throw new ShapeError('attention', `mask ${s(mask.shape)} does not broadcast to ${s([bq, hq, sq, tk])}`);
    }
    return { dtype: q.dtype, shape: [bq, sq, hq, dv] };
  },
});

/** The sizes of a matmul. */
export interface MatmulDims {
  /** Rows of the result. */
  m: Dim;
  /** Columns of the result. */
  n: Dim;
  /** Contracted length. */
  k: Dim;
  /** Product of the (broadcast) batch dims. */
  batch: Dim;
}

/** The contraction sizes of a matmul, read off its operands' shapes by {@link matmulMNK}. */
export interface MatmulMNK<D extends Dim = Dim> {
  /** Rows of the result. */
  m: D;
  /** Contracted length, as the left operand has it. */
  k: D;
  /** Contracted length, as the right operand has it (equal to `k` in a well-formed matmul). */
  kB: D;
  /** Columns of the result. */
  n: D;
}

/**
 * M, K and N of a matmul whose operands have shapes `a` and `b` (batch dims leading; `a` is `[.., M, K]`, or
 * `[.., K, M]` with `transA`; `b` is `[.., K, N]`, or `[.., N, K]` with `transB`). `kB` is K as `b` has it, equal to
 * `k` when the matmul is well formed. Works on static shapes (`number`) and symbolic ones alike.
 */
export function matmulMNK<D extends Dim>(a: readonly D[], b: readonly D[], transA: boolean, transB: boolean): MatmulMNK<D> {
  const ra = a.length;
  const rb = b.length;
  return {
    m: transA ? a[ra - 1] : a[ra - 2],
    k: transA ? a[ra - 2] : a[ra - 1],
    kB: transB ? b[rb - 1] : b[rb - 2],
    n: transB ? b[rb - 2] : b[rb - 1],
  };
}

/** Output dims of a matmul-like contraction (for reports): `[M, N, K]` of a matmul node's operands. */
export function matmulDims(A: TensorType, B: TensorType, attrs: Attrs): MatmulDims {
  const { m, k, n } = matmulMNK(A.shape, B.shape, !!attrs.transA, !!attrs.transB);
  const batch = dimProduct(broadcastShapes('matmul', [A.shape.slice(0, -2), B.shape.slice(0, -2)]));
  return { m, n, k, batch };
}

/** The FLOPs-relevant size `M*N*K*batch` of a matmul as a dim. */
export function matmulWork(node: Node): Dim {
  const { m, n, k, batch } = matmulDims(node.inputs[0], node.inputs[1], node.attrs);
  return dimMul(dimMul(m, n), dimMul(k, batch));
}

// ---------------------------------------------------------------------------------------------------------------
// fused

/**
 * One step of a fused node's program: an op applied to operands of the fused node (`args[i] >= 0`) or to results
 * of earlier steps (`args[i] = -(j + 1)` for step `j`), with that op's attributes. (A type alias, not an interface,
 * so that a step is an {@link AttrValue}.)
 */
export type FusedStep = {
  /** The op (not a leaf other than `constant`, not `fused`). */
  readonly op: OpName;
  /** Operand references. */
  readonly args: readonly number[];
  /** The op's attributes. */
  readonly attrs: Attrs;
};

/** A fused program with canonical step attributes, and the type of each step. */
export interface FusedProgramTypes {
  /** The steps, attributes normalized. */
  steps: FusedStep[];
  /** Result type of each step. */
  types: TensorType[];
}

/** Type of every step of a fused program given the operand types; throws {@link ShapeError} naming the step. */
export function inferFusedSteps(inputs: readonly TensorType[], steps: readonly FusedStep[]): FusedProgramTypes {
  const types: TensorType[] = [];
  const canon: FusedStep[] = [];
  steps.forEach((st, j) => {
    if (!st || typeof st !== 'object' || typeof st.op !== 'string') throw new ShapeError('fused', `step ${j} is not a step`);
    if (st.op === 'fused' || st.op === 'input' || st.op === 'weight') throw new ShapeError('fused', `step ${j}: '${st.op}' cannot appear inside a fused program`);
    const def = getOpDef(st.op);
    const args = (st.args ?? []) as number[];
    const argTypes = args.map((a) => {
      if (!Number.isInteger(a)) throw new ShapeError('fused', `step ${j} (${st.op}): bad operand reference ${a}`);
      if (a >= 0) {
        if (a >= inputs.length) throw new ShapeError('fused', `step ${j} (${st.op}) reads operand ${a}, but there are ${inputs.length}`);
        return inputs[a];
      }
      const k = -a - 1;
      if (k >= j) throw new ShapeError('fused', `step ${j} (${st.op}) reads step ${k}, which is not earlier`);
      return types[k];
    });
    def.checkArity(argTypes.length);
    const attrs = def.normalize ? def.normalize(argTypes, st.attrs ?? {}) : { ...(st.attrs ?? {}) };
    try {
      types.push(def.infer(argTypes, attrs));
    } catch (e) {
      if (e instanceof ShapeError) throw new ShapeError('fused', `step ${j}: ${e.message}`);
      throw e;
    }
    canon.push({ op: st.op, args: [...args], attrs });
  });
  return { steps: canon, types };
}

/**
 * `fused(operands...) {kind, steps}`: a small program over its operands that one kernel computes — an anchor op
 * (matmul, norm, softmax, attention, …) with elementwise prologues and epilogues, or an elementwise chain. The
 * result is the last step's. `kind` names the kernel family codegen should use (`elementwise`, `matmul`, …).
 */
define('fused', 'fused', [1, Infinity], {
  normalize: (inputs, a) => {
    if (typeof a.kind !== 'string' || !a.kind) throw new ShapeError('fused', "needs a 'kind'");
    if (!Array.isArray(a.steps) || a.steps.length === 0) throw new ShapeError('fused', 'needs at least one step');
    const { steps } = inferFusedSteps(inputs, a.steps as readonly FusedStep[]);
    return { kind: a.kind, steps };
  },
  infer: (inputs, a) => {
    const { types } = inferFusedSteps(inputs, a.steps);
    return types[types.length - 1];
  },
});
