/**
 * What an op converter works with: {@link OnnxValue}s (an IR node plus the ONNX element type it stands for) and an
 * {@link OpContext} that reads the node's attributes and inputs and builds IR nodes with eager constant folding.
 *
 * Eager folding is what lets the IR, which infers shapes at construction, take in ONNX shape subgraphs: every node
 * whose operands are all constants is evaluated as it is built (symbolic shape arithmetic by `ir/shape-arith`, numbers by
 * the reference kernels), so by the time a `Reshape` reads its shape operand it is a constant.
 * @module
 */
import { ModelFormatError, TensorwrightError } from '../../errors.js';
import { isStaticShape, numel, shapeEquals, SymDim, type Dim } from '../../ir/dim.js';
import type { DType } from '../../ir/dtype.js';
import { Graph, topoOrder } from '../../ir/graph.js';
import { makeNode, type AttrValue, type Attrs, type Node } from '../../ir/node.js';
import { BINARY_OPS, COMPARE_OPS, MAX_INLINE_CONSTANT, type OpName } from '../../ir/ops.js';
import { decodeWeight, WeightStore, type WeightEntry } from '../../ir/weights.js';
import { constantDims, foldShapeArithmetic, isSymbolicConstant } from '../../ir/shape-arith.js';
import { evaluateNode } from '../../runtime/cpu/interpreter.js';
import { inlineValues, weightPayload, type Tensor } from '../../runtime/cpu/tensor.js';
import type { AttributeMsg, NodeMsg } from './schema.js';
import { decodeTensor, defaultOnnxType, int64ToBigInt, int64ToNumber, type TensorSource } from './tensor.js';

/** A value of the ONNX graph as the importer holds it. */
export interface OnnxValue {
  /** The IR node computing it (absent only for a uint64 constant whose values do not fit 32 bits: see `wide`). */
  readonly node?: Node;
  /**
   * The ONNX element type (several ONNX types share one IR dtype: INT32/INT8 are i32; INT64 is i32 where its values
   * are known to fit, shapes and small constants, and i64 otherwise: graph inputs, wide constants and what they reach).
   */
  readonly type: number;
  /** A 64-bit constant with values outside 32 bits, also kept as numbers for the inputs that clamp them (Slice bounds). */
  readonly wide?: { readonly shape: readonly number[]; readonly values: readonly number[] };
  /** Set on QuantizeLinear results, so a DequantizeLinear of them can become a float fake-quant composite. */
  readonly quantized?: { readonly x: Node; readonly scale: Node; readonly zeroPoint: Node | undefined; readonly axis: number; readonly blockSize: number };
}

/** A node of the ONNX graph was not convertible: recorded, so that one error can list every such node. */
export class NodeUnsupported extends Error {
  /** Graph inputs that a shape operand of the node is computed from (they would have to be known at import). */
  readonly shapeInputs: readonly string[];
  constructor(message: string, shapeInputs: readonly string[] = []) {
    super(message);
    this.name = 'NodeUnsupported';
    this.shapeInputs = shapeInputs;
  }
}

/**
 * Most elements the importer materializes for a table it computes itself (`Range`, `Trilu`'s and causal masks): the
 * optimizer's folding limit, so a hostile shape cannot make the importer allocate without bound.
 */
export const MAX_COMPUTED_ELEMENTS = 1 << 24;

/** Elements above which a float constant (initializer or `Constant`) goes to the weight store rather than inline. */
export const INLINE_FLOAT_LIMIT = 16;

const EMPTY_GRAPH = new Graph([], [], new WeightStore());

/** Host value of a constant node (symbolic values not allowed). */
function constantTensor(n: Node): Tensor {
  return evaluateNode(n, [], EMPTY_GRAPH, {}, {});
}

/**
 * Folds `node` when all its operands are constants: symbolically (shape arithmetic) or numerically with the
 * reference kernels, into a `constant` of at most {@link MAX_INLINE_CONSTANT} elements. Returns `node` otherwise.
 */
export function foldEagerly(node: Node): Node {
  if (node.inputs.length === 0 || !node.inputs.every((x) => x.op === 'constant')) return node;
  const symbolic = foldShapeArithmetic(node);
  if (symbolic) return symbolic;
  if (node.inputs.some(isSymbolicConstant) || !isStaticShape(node.shape) || (numel(node.shape) as number) > MAX_INLINE_CONSTANT) return node;
  let t: Tensor;
  try {
    t = evaluateNode(node, node.inputs.map(constantTensor), EMPTY_GRAPH, {}, {});
  } catch (e) {
    if (e instanceof TensorwrightError) return node; // e.g. an out-of-range gather index: the interpreter reports it at run time
    throw e;
  }
  const values = inlineValues(t);
  if (!values) return node; // i64 values beyond ±2^53: computed at run time
  return makeNode('constant', [], { dtype: node.dtype, shape: [...t.shape], values });
}

/** What the graph import shares with every op converter. */
export interface ImportServices {
  /** Default-domain opset of the model. */
  readonly opset: number;
  /** Adds a weight and returns its node. */
  addWeight(entry: WeightEntry): Node;
  /** Where tensors come from (for attribute tensors). */
  readonly source: TensorSource;
  /** A weight added so far, by id. */
  weight(id: string): WeightEntry;
}

/** One ONNX node being converted: its attributes, its inputs, and node building with eager folding. */
export class OpContext {
  /** The node. */
  readonly node: NodeMsg;
  /** How messages name it: `Reshape 'name'`. */
  readonly label: string;
  /** Its input values (`undefined` for an omitted optional input). */
  readonly inputs: readonly (OnnxValue | undefined)[];
  /** Default-domain opset. */
  readonly opset: number;
  private readonly services: ImportServices;
  private readonly attrs: Map<string, AttributeMsg>;

  constructor(node: NodeMsg, label: string, inputs: readonly (OnnxValue | undefined)[], services: ImportServices) {
    this.node = node;
    this.label = label;
    this.inputs = inputs;
    this.opset = services.opset;
    this.services = services;
    this.attrs = new Map(node.attribute.map((a) => [a.name, a]));
  }

  // ----- errors

  /** Throws: this node uses a feature tensorwright does not support. */
  unsupported(message: string): never {
    throw new NodeUnsupported(message);
  }

  /**
   * Throws: a shape operand (`from`, when it is a node) is computed from data at run time. When it is computed from
   * graph inputs only, the error names them: given as `shapeInputs` at import, they make it a constant.
   */
  dataDependent(what: string, from?: Node): never {
    const inputs = from ? topoOrder([from]).filter((n) => n.op === 'input').map((n) => String(n.attrs.name)) : [];
    const hint = inputs.length ? `; give ${inputs.map((n) => `'${n}'`).join(', ')} as shape inputs to specialize it` : '';
    throw new NodeUnsupported(`data-dependent shape: ${what} is computed at run time (it does not fold to a constant)${hint}`, inputs);
  }

  /** A {@link ModelFormatError} about this node. */
  malformed(message: string): ModelFormatError {
    return new ModelFormatError(`node ${this.label}`, 0, message, this.services.source.file);
  }

  // ----- attributes

  /** Whether the attribute is present. */
  has(name: string): boolean {
    return this.attrs.has(name);
  }

  private attr(name: string): AttributeMsg | undefined {
    const a = this.attrs.get(name);
    if (a?.refAttrName) this.unsupported(`attribute '${name}' refers to a function attribute`);
    return a;
  }

  /** An INT attribute (as a number; a value beyond ±2^53 is an error). */
  int(name: string, def?: number): number {
    const a = this.attr(name);
    if (!a) {
      if (def === undefined) throw this.malformed(`missing attribute '${name}'`);
      return def;
    }
    const v = int64ToNumber(a.i);
    if (v === undefined) throw this.malformed(`attribute '${name}' = ${int64ToBigInt(a.i)} is out of range`);
    return v;
  }

  /** A FLOAT attribute. */
  float(name: string, def?: number): number {
    const a = this.attr(name);
    if (!a) {
      if (def === undefined) throw this.malformed(`missing attribute '${name}'`);
      return def;
    }
    return a.f;
  }

  /** A STRING attribute. */
  string(name: string, def?: string): string {
    const a = this.attr(name);
    if (!a) {
      if (def === undefined) throw this.malformed(`missing attribute '${name}'`);
      return def;
    }
    return new TextDecoder().decode(a.s);
  }

  /** An INTS attribute (`undefined` when absent); values beyond ±2^53 clamp (they are only ever bounds). */
  ints(name: string): number[] | undefined {
    const a = this.attr(name);
    return a ? a.ints.map((v) => int64ToNumber(v) ?? Number(int64ToBigInt(v))) : undefined;
  }

  /** An INTS attribute as exact int64 values (`undefined` when absent). */
  ints64(name: string): bigint[] | undefined {
    const a = this.attr(name);
    return a ? a.ints.map((v) => BigInt.asIntN(64, int64ToBigInt(v))) : undefined;
  }

  /** A FLOATS attribute (`undefined` when absent). */
  floats(name: string): number[] | undefined {
    return this.attr(name)?.floats;
  }

  /** A TENSOR attribute decoded to a value (`undefined` when absent). */
  tensorAttr(name: string): OnnxValue | undefined {
    const a = this.attr(name);
    if (!a) return undefined;
    if (!a.t) throw this.malformed(`attribute '${name}' holds no tensor`);
    return this.tensorValue(a.t, `attribute '${name}' of ${this.label}`);
  }

  /** A decoded tensor as a value: a constant (or a weight named `name` when it is a large float tensor). */
  tensorValue(msg: Parameters<typeof decodeTensor>[0], what: string, name = what): OnnxValue {
    const d = decodeTensor(msg, { ...this.services.source, what }, { allowWide: true });
    if (d.wide) return { type: d.type, wide: { shape: d.shape, values: d.wide }, ...(d.tensor ? { node: this.fromHost(d.tensor, name) } : {}) };
    return { type: d.type, node: this.fromHost(d.tensor!, name) };
  }

  /** A node holding host values: an inline constant when small enough, else a weight. */
  fromHost(t: Tensor, name: string): Node {
    const inlineLimit = t.dtype === 'f32' || t.dtype === 'f16' ? INLINE_FLOAT_LIMIT : MAX_INLINE_CONSTANT;
    const exact = inlineValues(t); // undefined for i64 values beyond ±2^53, which only the weight store holds
    if (exact && (t.size <= inlineLimit || isUniform(t))) {
      const values = t.size === 0 ? [0] : isUniform(t) ? [exact[0]] : exact;
      if (t.size <= MAX_INLINE_CONSTANT) return makeNode('constant', [], { dtype: t.dtype, shape: [...t.shape], values });
      return makeNode('expand', [makeNode('constant', [], { dtype: t.dtype, shape: [], values })], { shape: [...t.shape] });
    }
    return this.services.addWeight(WeightStore.entry(name, t.dtype, t.shape, { values: weightPayload(t.dtype, t) }));
  }

  /** The weight entry of a `weight` node. */
  weightEntry(n: Node): WeightEntry {
    return this.services.weight(String(n.attrs.id));
  }

  /** The numeric values of a constant or dense weight node (row-major), or `undefined` when not readable here. */
  readValues(n: Node): ArrayLike<number> | undefined {
    if (n.op === 'constant') {
      const d = constantDims(n);
      return d && d.every((v) => typeof v === 'number') ? (d as number[]) : undefined;
    }
    if (n.op === 'expand' && n.inputs[0].op === 'constant' && isStaticShape(n.shape)) {
      const v = this.readValues(n.inputs[0]);
      return v && v.length === 1 ? new Array<number>(numel(n.shape) as number).fill(v[0]) : undefined;
    }
    if (n.op !== 'weight') return undefined;
    const e = this.weightEntry(n);
    if (e.encoding.kind !== 'dense') return undefined;
    return e.dtype === 'f16' ? decodeWeight(e) : e.data.values;
  }

  /** Throws (unsupported) when a table of `n` elements is too large to compute at import. */
  checkTableSize(n: number, what: string): void {
    if (!(n <= MAX_COMPUTED_ELEMENTS)) this.unsupported(`${what} of ${n} elements is too large to compute while importing (max ${MAX_COMPUTED_ELEMENTS})`);
  }

  /** Adds a weight entry and returns its node. */
  addWeight(entry: WeightEntry): Node {
    return this.services.addWeight(entry);
  }

  // ----- inputs

  /** Whether input `i` is given. */
  hasInput(i: number): boolean {
    return this.inputs[i] !== undefined;
  }

  /** The value of input `i` (required). */
  value(i: number): OnnxValue {
    const v = this.inputs[i];
    if (!v) throw this.malformed(`input ${i} is required`);
    return v;
  }

  /** The node of input `i` (required). */
  x(i: number): Node {
    const v = this.value(i);
    if (!v.node) throw this.malformed(`input ${i} ('${this.node.input[i]}') holds uint64 values outside the uint32 range tensorwright computes uint64 in`);
    return v.node;
  }

  /** The node of optional input `i`, or `undefined`. */
  opt(i: number): Node | undefined {
    return this.hasInput(i) ? this.x(i) : undefined;
  }

  /** The ONNX element type of input `i`. */
  type(i: number): number {
    return this.value(i).type;
  }

  /** The values of constant input `i` as dims (symbolic allowed); a non-constant is a data-dependent shape. */
  dims(i: number, what: string): Dim[] {
    const v = this.value(i);
    if (v.wide) return [...v.wide.values];
    const d = constantDims(v.node!);
    if (!d) return this.dataDependent(`${what} ('${this.node.input[i]}')`, v.node);
    return d;
  }

  /** The values of constant input `i` as numbers (int64 values beyond int32 included, for bounds). */
  numbers(i: number, what: string): number[] {
    const d = this.dims(i, what);
    if (!d.every((x) => typeof x === 'number')) this.unsupported(`${what} ('${this.node.input[i]}') must be static, got [${d.join(', ')}]`);
    return d as number[];
  }

  // ----- building

  /**
   * Builds an IR node (folding it when its operands are constants). Operands that must share a dtype and mix i32 and
   * i64 (both ONNX INT64) are unified: i64 constants that fit int32 become i32 (so shape arithmetic keeps folding),
   * else the i32 operands widen to i64.
   */
  op(op: OpName, inputs: readonly Node[], attrs: Attrs = {}): Node {
    return foldEagerly(makeNode(op, unifyInt64(op, inputs), attrs));
  }

  /** A constant of `dtype` (a scalar unless `shape` is given). */
  constant(values: number | readonly (number | SymDim)[], dtype: DType, shape: readonly number[] = []): Node {
    return makeNode('constant', [], { dtype, shape: [...shape], values: typeof values === 'number' ? [values] : ([...values] as AttrValue[]) });
  }

  /** A scalar constant of `like`'s dtype. */
  scalar(v: number, like: Node | DType): Node {
    return this.constant(v, typeof like === 'string' ? like : like.dtype);
  }

  /** `x` as `dtype` (no node when it already is). */
  cast(x: Node, dtype: DType): Node {
    return x.dtype === dtype ? x : this.op('cast', [x], { to: dtype });
  }

  /** `reshape(x, shape)`, no node when the shape is already `x`'s. */
  reshape(x: Node, shape: readonly Dim[]): Node {
    if (shapeEquals(shape, x.shape)) return x;
    if (shape.some((d) => d === 0)) return this.empty(x.dtype, shape);
    return this.op('reshape', [x], { shape: [...shape] });
  }

  /** An empty tensor of this (zero-element) shape. */
  empty(dtype: DType, shape: readonly Dim[]): Node {
    return makeNode('expand', [this.constant(0, dtype)], { shape: [...shape] });
  }

  /** A value of `node` with ONNX type `type` (default: the usual type for its dtype). */
  out(node: Node, type?: number): OnnxValue {
    return { node, type: type ?? defaultOnnxType(node.dtype) };
  }
}

/** Operand positions that must share one dtype, per op. */
function sameTypeOperands(op: OpName, n: number): number[] {
  if (op === 'where') return [1, 2];
  if (op === 'concat' || POINTWISE_SAME.has(op)) return Array.from({ length: n }, (_v, i) => i);
  return [];
}

const POINTWISE_SAME: ReadonlySet<string> = new Set<string>([...BINARY_OPS, ...COMPARE_OPS]);

/** `inputs` with i32 and i64 operands that must agree unified (see {@link OpContext.op}). */
function unifyInt64(op: OpName, inputs: readonly Node[]): readonly Node[] {
  const same = sameTypeOperands(op, inputs.length);
  if (!same.some((i) => inputs[i].dtype === 'i64') || !same.some((i) => inputs[i].dtype === 'i32')) return inputs;
  const narrowable = (x: Node): boolean => x.op === 'constant' && (x.attrs.values as readonly number[]).every((v) => v === (v | 0));
  const to = same.every((i) => inputs[i].dtype !== 'i64' || narrowable(inputs[i])) ? 'i32' : 'i64';
  return inputs.map((x, i) => (same.includes(i) && (x.dtype === 'i32' || x.dtype === 'i64') && x.dtype !== to ? foldEagerly(makeNode('cast', [x], { to })) : x));
}

function isUniform(t: Tensor): boolean {
  const d = t.data;
  for (let i = 1; i < d.length; i++) if (!Object.is(d[i], d[0])) return false;
  return d.length > 0;
}
