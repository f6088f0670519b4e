/**
 * The CPU reference backend: an interpreter that runs any graph on host tensors. It is the oracle every pass and
 * kernel is tested against, and the `cpu` backend wherever no WebGPU adapter exists.
 * @module
 */
import { InputError, UnsupportedOpError } from '../../errors.js';
import { evalDim, evalShape, shapeToString, SymDim, type Dim, type DimBindings } from '../../ir/dim.js';
import type { Graph } from '../../ir/graph.js';
import type { Node } from '../../ir/node.js';
import { decodeWeight, type WeightEntry } from '../../ir/weights.js';
import { inferFusedSteps } from '../../ir/ops.js';
import { attrsOf, typedOp, type OpLike } from '../../ir/attrs.js';
import * as K from './kernels.js';
import { asInputDType, Tensor, roundToHalf } from './tensor.js';
import { int8WeightOfEntry, int8WeightOfValues, isInt8PerChannel, w8a8Matmul, type Int8Weight } from './w8a8.js';

const decoded = new WeakMap<WeightEntry, Tensor>();
/** The entry each decoded weight tensor came from (W8A8 matmuls read an int8 weight's stored integers). */
const entryOf = new WeakMap<Tensor, WeightEntry>();
/** Int8 views of B operands of W8A8 matmuls, by tensor (a weight's, computed once). */
const int8Of = new WeakMap<Tensor, Int8Weight>();

/** B of a W8A8 matmul as int8 per output channel: a weight's stored integers, or its values rounded. */
function int8Operand(b: Tensor, transB: boolean): Int8Weight {
  let w = int8Of.get(b);
  if (!w) {
    const e = entryOf.get(b);
    w = e && transB && isInt8PerChannel(e) ? int8WeightOfEntry(e) : int8WeightOfValues(b, transB);
    if (e) int8Of.set(b, w);
  }
  return w;
}

/**
 * The host tensor for a weight (decoded once per entry and cached).
 * @internal
 */
export function weightTensor(e: WeightEntry): Tensor {
  let t = decoded.get(e);
  if (!t) {
    if (e.encoding.kind === 'dense' && e.dtype === 'i64') {
      const n = e.shape.reduce((a, b) => a * b, 1);
      t = new Tensor('i64', e.shape, new BigInt64Array(Int32Array.from(e.data.values.subarray(0, 2 * n)).buffer));
    } else if (e.encoding.kind === 'dense' && e.dtype !== 'f32' && e.dtype !== 'f16') {
      const v = e.data.values;
      t = Tensor.from(e.dtype, e.shape, v);
    } else {
      const f = decodeWeight(e);
      t = new Tensor(e.dtype === 'f16' ? 'f16' : e.dtype, e.shape, e.dtype === 'f16' ? roundToHalf(Float32Array.from(f)) : f);
    }
    decoded.set(e, t);
    entryOf.set(t, e);
  }
  return t;
}

/**
 * Binds every symbolic dim of the graph's inputs from the shapes of the tensors given, checks the static dims and the
 * consistency of composite dims, and returns the bindings. Throws {@link InputError} naming the input and dim.
 * @internal
 */
export function bindInputs(g: Graph, inputs: Readonly<Record<string, Tensor>>, given: DimBindings = {}): DimBindings {
  const b: Record<string, number> = { ...given };
  const pending: [string, number, Dim, number][] = [];
  for (const inp of g.inputs) {
    const name = inp.attrs.name;
    const t = inputs[name] && asInputDType(inputs[name], inp.dtype);
    if (!t) throw new InputError(`missing graph input '${name}' (${inp.typeString()})`);
    if (t.dtype !== inp.dtype) throw new InputError(`input '${name}' must be ${inp.dtype}, got ${t.dtype}`);
    if (t.shape.length !== inp.shape.length) throw new InputError(`input '${name}' must have rank ${inp.shape.length} (${inp.typeString()}), got [${t.shape}]`);
    inp.shape.forEach((d, i) => {
      const actual = t.shape[i];
      if (d instanceof SymDim && d.terms.size === 1 && d.terms.get(d.symbols()[0]) === 1 && d.symbols().length === 1) {
        const s = d.symbols()[0];
        if (b[s] !== undefined && b[s] !== actual) throw new InputError(`input '${name}' dim ${i} is ${actual}, but '${s}' is already ${b[s]}`);
        b[s] = actual;
      } else pending.push([name, i, d, actual]);
    });
  }
  for (const [name, i, d, actual] of pending) {
    const want = evalDim(d, b);
    if (want !== actual) throw new InputError(`input '${name}' dim ${i} must be ${typeof d === 'number' ? d : `${d.text} = ${want}`}, got ${actual}`);
  }
  for (const k of Object.keys(b)) if (!Number.isInteger(b[k]) || b[k] < 0) throw new InputError(`dim '${k}' = ${b[k]} is not a size`);
  return b;
}

/** Options for {@link runGraph}. */
export interface RunOptions {
  /** Values for symbolic dims that no input determines. */
  bindings?: DimBindings;
  /** Also return the value of every node (for debugging and differential tests). */
  keepAll?: boolean;
  /**
   * Called after each node is evaluated, with its value and its operands' values (calibration watches matmul inputs
   * through it). The tensors are the interpreter's own: an observer must not change them.
   */
  observe?: NodeObserver;
  /**
   * Called after each op is evaluated, the steps of fused programs included (a fused node itself is not reported), with
   * the op and its operands' values: sees an op whatever fusion did to the graph (H2O eviction watches `attention`
   * through it). The tensors are the interpreter's own: an observer must not change them.
   */
  observeOps?: OpObserver;
}

/** A {@link RunOptions.observeOps} callback: an op (a node or a fused step), its value, and its operands' values. */
export type OpObserver = (op: OpLike, value: Tensor, operands: readonly Tensor[]) => void;

/** A {@link RunOptions.observe} callback: a node, its value, and its operands' values in operand order. */
export type NodeObserver = (node: Node, value: Tensor, operands: readonly Tensor[]) => void;

/** Runs a graph on the CPU; returns its outputs by name. */
export function runGraph(g: Graph, inputs: Readonly<Record<string, Tensor>>, opts: RunOptions = {}): Record<string, Tensor> {
  const bindings = bindInputs(g, inputs, opts.bindings);
  const nodes = g.nodes();
  // free each intermediate after its last use
  const lastUse = new Map<Node, number>();
  nodes.forEach((n, i) => n.inputs.forEach((x) => lastUse.set(x, i)));
  const keep = new Set(g.outputNodes);
  const values = new Map<Node, Tensor>();
  nodes.forEach((n, i) => {
    const args = n.inputs.map((x) => values.get(x)!);
    const value = evaluateNode(n, args, g, inputs, bindings, opts.observeOps);
    if (n.op !== 'fused') opts.observeOps?.(n, value, args);
    values.set(n, value);
    opts.observe?.(n, value, args);
    if (!opts.keepAll) for (const x of new Set(n.inputs)) if (lastUse.get(x) === i && !keep.has(x)) values.delete(x);
  });
  const out: Record<string, Tensor> = {};
  for (const o of g.outputs) out[o.name] = values.get(o.node)!;
  return out;
}

/**
 * What evaluating an op needs to know about it: op, attributes and result type.
 * @internal
 */
export interface OpInstance {
  /** The op. */
  readonly op: Node['op'];
  /** Its attributes. */
  readonly attrs: Node['attrs'];
  /** Result dtype. */
  readonly dtype: Node['dtype'];
  /** Result shape (may be symbolic). */
  readonly shape: Node['shape'];
}

/**
 * Evaluates one node (or a step of a fused program) given its operands' values.
 * @internal
 */
export function evaluateNode(n: OpInstance, args: Tensor[], g: Graph, inputs: Readonly<Record<string, Tensor>>, bindings: DimBindings, observeOps?: OpObserver): Tensor {
  const t = typedOp(n);
  switch (t.op) {
    case 'input':
      return asInputDType(inputs[t.attrs.name], n.dtype);
    case 'weight':
      return weightTensor(g.weights.get(t.attrs.id));
    case 'constant':
      // i32 constants may hold symbolic dims (shape arithmetic): they take the run's values
      return K.constant(n.dtype, evalShape(n.shape, bindings), t.attrs.values.map((v) => evalDim(v, bindings)));
    case 'range':
      return K.range(evalDim(t.attrs.length, bindings));
    case 'neg': case 'abs': case 'exp': case 'log': case 'sqrt': case 'rsqrt': case 'reciprocal': case 'tanh': case 'erf': case 'sin': case 'cos': case 'silu': case 'gelu': case 'relu': case 'sigmoid':
      return K.unary(t.op, t.attrs, args[0]);
    case 'add': case 'sub': case 'mul': case 'div': case 'pow': case 'maximum': case 'minimum': case 'equal': case 'less': case 'greater':
      return K.binary(t.op, args[0], args[1], n.dtype);
    case 'where':
      return K.where(args[0], args[1], args[2]);
    case 'cast':
      return K.cast(args[0], n.dtype);
    case 'matmul':
      if (t.attrs.actQuant) return w8a8Matmul(args[0], int8Operand(args[1], t.attrs.transB), t.attrs.actQuant);
      return K.matmul(args[0], args[1], t.attrs.transA, t.attrs.transB);
    case 'sum': case 'mean': case 'max':
      return K.reduce(t.op, args[0], t.attrs.axes, t.attrs.keepDims);
    case 'softmax':
      return K.softmax(args[0], t.attrs.axis);
    case 'rmsnorm':
      return K.rmsnorm(args[0], args[1], t.attrs.eps);
    case 'layernorm':
      return K.layernorm(args[0], args[1], args[2], t.attrs.eps);
    case 'rope':
      return K.rope(args[0], args[1], t.attrs.theta, t.attrs.style, t.attrs.rotaryDim);
    case 'kv_quantize':
      return K.kvQuantize(args[0], t.attrs.dtype);
    case 'reshape':
      return args[0].reshape(evalShape(n.shape, bindings));
    case 'transpose':
      return K.transpose(args[0], t.attrs.perm);
    case 'concat':
      return K.concat(args, t.attrs.axis);
    case 'slice':
      return K.slice(args[0], t.attrs.axes, t.attrs.starts.map((d) => evalDim(d, bindings)), t.attrs.ends.map((d) => (d === null ? -1 : evalDim(d, bindings))), t.attrs.steps);
    case 'gather':
      return K.gather(args[0], args[1], t.attrs.axis, `gather to ${n.dtype}${shapeToString(n.shape)}`);
    case 'expand':
      return K.expand(args[0], evalShape(n.shape, bindings));
    case 'attention':
      return K.attention(args[0], args[1], args[2], args[3], t.attrs.causal, t.attrs.scale);
    case 'fused':
      return evaluateFused(n, args, g, inputs, bindings, observeOps);
    default:
      throw new UnsupportedOpError([n.op], `the CPU backend cannot run op '${n.op}'`);
  }
}

/** Runs a fused node's program step by step with the reference kernels (so fusion never changes the numbers). */
function evaluateFused(n: OpInstance, args: Tensor[], g: Graph, inputs: Readonly<Record<string, Tensor>>, bindings: DimBindings, observeOps?: OpObserver): Tensor {
  // infer step types from the node's own (possibly symbolic) operand types, so steps whose attributes mention
  // symbolic dims type-check; evaluateNode resolves them with the bindings
  const operandTypes = 'inputs' in n ? (n as Node).inputs : args.map((t) => ({ dtype: t.dtype, shape: t.shape }));
  const { steps, types } = inferFusedSteps(operandTypes, attrsOf(n, 'fused').steps);
  const results: Tensor[] = [];
  steps.forEach((st, j) => {
    const operands = st.args.map((r) => (r >= 0 ? args[r] : results[-r - 1]));
    const step = { op: st.op, attrs: st.attrs, dtype: types[j].dtype, shape: types[j].shape };
    const value = evaluateNode(step, operands, g, inputs, bindings, observeOps);
    if (step.op !== 'fused') observeOps?.(step, value, operands);
    results.push(value);
  });
  return results[results.length - 1];
}
