/**
 * Typed attributes. Every op that carries attributes has a type for its canonical attributes (what its definition's
 * `normalize` produces, and so what a built node holds) in {@link OpAttrs}. Read them through {@link attrsOf} (which
 * checks the op) or narrow a node with {@link isOp}; a `NodeOf<'slice'>` has `attrs: SliceAttrs`.
 *
 * The attribute types are type aliases, not interfaces, so that they are assignable to {@link Attrs} (a node built
 * from typed attributes needs no cast).
 * @module
 */
import { InternalError } from '../errors.js';
import type { Dim } from './dim.js';
import type { DType } from './dtype.js';
import { Node, type Attrs } from './node.js';
import type { FusedStep, OpName } from './ops.js';

/** `input`: a graph input. */
export type InputAttrs = {
  /** The input's name (unique in a graph). */
  readonly name: string;
  /** Element type. */
  readonly dtype: DType;
  /** Shape (dims may be symbolic). */
  readonly shape: readonly Dim[];
};

/** `weight`: a tensor of the weight store. */
export type WeightAttrs = {
  /** Key in the weight store. */
  readonly id: string;
  /** Name shown in listings (the id when none was given). */
  readonly name: string;
  /** Element type. */
  readonly dtype: DType;
  /** Shape. */
  readonly shape: readonly Dim[];
};

/** `constant`: a small inline tensor. */
export type ConstantAttrs = {
  /** Element type. */
  readonly dtype: DType;
  /** Static shape. */
  readonly shape: readonly number[];
  /** One value (a splat) or one per element; i32 constants may hold symbolic dims (shape arithmetic). */
  readonly values: readonly Dim[];
};

/** `gelu`: which formula. */
export type GeluAttrs = {
  /** `tanh` for the tanh approximation, `none` for the erf form. */
  readonly approximate: 'none' | 'tanh';
};

/** `cast`: the target dtype. */
export type CastAttrs = {
  /** Target dtype. */
  readonly to: DType;
};

/**
 * Activation quantization of a W8A8 matmul (`matmul` with {@link MatmulAttrs.actQuant}): the rows of A are rounded to
 * int8 with a scale per tensor (`scale`, calibrated) or per row (`'per-token'`: `max|row| / 127`), B to int8 per
 * output channel (symmetric), and the product is an integer dot rescaled by both scales. The exact arithmetic is the
 * CPU reference's (`src/runtime/cpu/w8a8.ts`).
 */
export type ActivationQuant = {
  /** The activations' scale: a calibrated per-tensor value, or `'per-token'` (absmax of each row / 127). */
  readonly scale: number | 'per-token';
};

/** `matmul`: operand transposes (of the last two axes), and optionally W8A8 activation quantization. */
export type MatmulAttrs = {
  /** Whether A is read transposed. */
  readonly transA: boolean;
  /** Whether B is read transposed. */
  readonly transB: boolean;
  /** W8A8: A and B are rounded to int8 and multiplied as integers (absent: a float matmul). */
  readonly actQuant?: ActivationQuant;
};

/** `sum`, `mean`, `max`: the reduced axes. */
export type ReduceAttrs = {
  /** Reduced axes, non-negative, sorted, distinct. */
  readonly axes: readonly number[];
  /** Whether reduced axes are kept as size 1. */
  readonly keepDims: boolean;
};

/** An op attribute that is one non-negative axis (`softmax`, `concat`, `gather`). */
export type AxisAttrs = {
  /** The axis (non-negative). */
  readonly axis: number;
};

/** `rmsnorm`, `layernorm`: the epsilon added to the variance. */
export type NormAttrs = {
  /** Epsilon. */
  readonly eps: number;
};

/** `rope`: rotary position embedding. */
export type RopeAttrs = {
  /** Base of the rotation frequencies. */
  readonly theta: number;
  /** `interleaved` (llama2.c adjacent pairs) or `half` (NeoX: first half with second half). */
  readonly style: 'interleaved' | 'half';
  /** How many leading dims of each head are rotated (even). */
  readonly rotaryDim: number;
};

/** `kv_quantize`: the integer type of the quantized KV cache whose stored values the op computes. */
export type KvQuantizeAttrs = {
  /** `int8` or `int4` (see `src/ir/kv-cache-quant.ts`). */
  readonly dtype: 'int8' | 'int4';
};

/** `range`: how many values. */
export type RangeAttrs = {
  /** The length of `[0, 1, …, length - 1]` (static or symbolic). */
  readonly length: Dim;
};

/** `reshape`, `expand`: the target shape. */
export type ShapeAttrs = {
  /** Target shape, explicit (no 0 or -1 left). */
  readonly shape: readonly Dim[];
};

/** `transpose`: the permutation. */
export type TransposeAttrs = {
  /** Output axis `i` is input axis `perm[i]`. */
  readonly perm: readonly number[];
};

/** `slice`: per-axis bounds (see the op's documentation in ops.ts for the clamping rules). */
export type SliceAttrs = {
  /** Sliced axes (non-negative, distinct). */
  readonly axes: readonly number[];
  /** Start of each axis (clamped, or symbolic). */
  readonly starts: readonly Dim[];
  /** End of each axis (exclusive); `null` means past the front, with a negative step. */
  readonly ends: readonly (Dim | null)[];
  /** Step of each axis (non-zero). */
  readonly steps: readonly number[];
};

/** `attention`: masking and score scale. */
export type AttentionAttrs = {
  /** Whether key `j` is masked for query `i` when `j > i + (T - S)`. */
  readonly causal: boolean;
  /** Scale of the scores (default `1/sqrt(headDim)`). */
  readonly scale: number;
};

/** `fused`: a small program one kernel computes. */
export type FusedAttrs = {
  /** The kernel family codegen should use (`elementwise`, `matmul`, …). */
  readonly kind: string;
  /** The program; the result is the last step's. */
  readonly steps: readonly FusedStep[];
};

/** The canonical attributes of each op that has any. Ops not listed here have none (`{}`). */
export interface OpAttrs {
  /** Graph input. */
  input: InputAttrs;
  /** Weight-store tensor. */
  weight: WeightAttrs;
  /** Inline constant. */
  constant: ConstantAttrs;
  /** The index vector `[0, …, length - 1]`. */
  range: RangeAttrs;
  /** GELU. */
  gelu: GeluAttrs;
  /** Dtype conversion. */
  cast: CastAttrs;
  /** Matrix product. */
  matmul: MatmulAttrs;
  /** Sum over axes. */
  sum: ReduceAttrs;
  /** Mean over axes. */
  mean: ReduceAttrs;
  /** Max over axes. */
  max: ReduceAttrs;
  /** Softmax over one axis. */
  softmax: AxisAttrs;
  /** RMS norm over the last axis. */
  rmsnorm: NormAttrs;
  /** Layer norm over the last axis. */
  layernorm: NormAttrs;
  /** Rotary embedding. */
  rope: RopeAttrs;
  /** What a quantized KV cache stores of each vector. */
  kv_quantize: KvQuantizeAttrs;
  /** Reshape. */
  reshape: ShapeAttrs;
  /** Transpose. */
  transpose: TransposeAttrs;
  /** Concatenation along one axis. */
  concat: AxisAttrs;
  /** Strided slice. */
  slice: SliceAttrs;
  /** Gather along one axis. */
  gather: AxisAttrs;
  /** Broadcast to a shape. */
  expand: ShapeAttrs;
  /** Fused attention. */
  attention: AttentionAttrs;
  /** Fused program. */
  fused: FusedAttrs;
}

/** The attribute type of op `O`: its entry in {@link OpAttrs}, or loose {@link Attrs} for an op without one. */
export type AttrsOf<O extends OpName> = O extends keyof OpAttrs ? OpAttrs[O] : Attrs;

/** Anything with an op and its attributes: a {@link Node}, a {@link FusedStep}, an interpreter's op instance. */
export type OpLike = {
  /** The op. */
  readonly op: OpName;
  /** Its attributes. */
  readonly attrs: Attrs;
};

/** A node (or step) known to be an `O` one, its `attrs` typed (what {@link isOp} narrows to). */
export type NodeOf<O extends OpName, T extends OpLike = Node> = T & {
  /** The op, known. */
  readonly op: O;
  /** Its attributes, typed. */
  readonly attrs: AttrsOf<O>;
};

/** True when `x` (a node, or a fused step) is an `op` one; narrows it to {@link NodeOf}, whose `attrs` are typed. */
export function isOp<O extends OpName, T extends OpLike>(x: T, op: O): x is NodeOf<O, T> {
  return x.op === op;
}

/**
 * The attributes of `x` (a node, or a fused step), typed for `op`. Throws {@link InternalError} when `x` is not an
 * `op` one: that is a compiler bug (the caller assumed the wrong op), not a user error.
 */
export function attrsOf<O extends keyof OpAttrs>(x: OpLike, op: O): OpAttrs[O] {
  if (x.op !== op) throw new InternalError(`expected a '${op}' node, got '${x.op}'${x instanceof Node ? ` (${x.typeString()})` : ''}`);
  return x.attrs as OpAttrs[O];
}

/** A node (or step) as a union discriminated by `op`: `switch (t.op)` narrows `t.attrs` in each case. */
export type TypedOp = {
  [O in OpName]: {
    /** The op (the discriminant). */
    readonly op: O;
    /** Its attributes, typed for the op. */
    readonly attrs: AttrsOf<O>;
  };
}[OpName];

/** `x` as a {@link TypedOp}, for a `switch` over its op that reads typed attributes in each case. */
export function typedOp(x: OpLike): TypedOp {
  // sound: a node's (or step's) attributes are its op's canonical ones
  return x as TypedOp;
}
