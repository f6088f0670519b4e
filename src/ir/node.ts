/**
 * IR nodes: immutable and interned. Building the same (op, inputs, attributes) twice returns the same object, so
 * `a === b` is structural equality and common-subexpression elimination is free. A node's dtype and shape are
 * inferred by its op's type rule when it is built: an ill-typed node cannot exist.
 * @module
 */
import type { DType } from './dtype.js';
import { SymDim, type Shape, shapeToString } from './dim.js';
import { getOpDef, type OpName } from './ops.js';

/** An attribute value: JSON-like data, plus symbolic dims inside shapes. */
export type AttrValue = number | string | boolean | null | SymDim | readonly AttrValue[] | { readonly [key: string]: AttrValue };

/** A node's attributes (frozen). */
export type Attrs = { readonly [key: string]: AttrValue };

/** The type of a value: element dtype and shape. */
export interface TensorType {
  /** Element type. */
  readonly dtype: DType;
  /** Shape (dims may be symbolic). */
  readonly shape: Shape;
}

let nextNodeId = 0;

/**
 * One operation in the graph. Never construct directly: use {@link makeNode} (or a {@link GraphBuilder}). Its
 * `attrs` are loosely typed; read them typed with {@link attrsOf}, or narrow the node with {@link isOp}.
 */
export class Node implements TensorType {
  /** Unique, increasing id (creation order). */
  readonly id: number;
  /** The op. */
  readonly op: OpName;
  /** Operands. */
  readonly inputs: readonly Node[];
  /** Canonical attributes. */
  readonly attrs: Attrs;
  /** Output dtype, inferred. */
  readonly dtype: DType;
  /** Output shape, inferred. */
  readonly shape: Shape;
  /** The interning key. */
  readonly key: string;
  /** @internal */
  constructor(op: OpName, inputs: readonly Node[], attrs: Attrs, type: TensorType, key: string) {
    this.id = nextNodeId++;
    this.op = op;
    this.inputs = inputs;
    this.attrs = attrs;
    this.dtype = type.dtype;
    this.shape = type.shape;
    this.key = key;
    Object.freeze(this);
  }
  /** Rank of the output. */
  get rank(): number {
    return this.shape.length;
  }
  /** `f32[batch,seq,64]`. */
  typeString(): string {
    return `${this.dtype}${shapeToString(this.shape)}`;
  }
}

/**
 * Canonical text of an attribute value (symbolic dims tagged so they never collide with strings).
 * @internal
 */
export function attrKey(v: AttrValue | undefined): string {
  if (v === undefined) return 'u';
  if (v instanceof SymDim) return `$${v.text}`;
  if (Array.isArray(v)) return `[${v.map(attrKey).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as { readonly [key: string]: AttrValue };
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${attrKey(o[k])}`)
      .join(',')}}`;
  }
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  return JSON.stringify(v);
}

function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !(v instanceof SymDim) && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as object)) deepFreeze(x);
  }
  return v;
}

const internTable = new Map<string, WeakRef<Node>>();
const registry = new FinalizationRegistry<string>((key) => {
  const ref = internTable.get(key);
  if (ref && ref.deref() === undefined) internTable.delete(key);
});

/**
 * Builds (or finds) the node for `op(inputs) {attrs}`. The op's definition normalizes the attributes (defaults,
 * negative axes), checks operand types and infers the result type; a violation throws
 * {@link errors!ShapeError | ShapeError} naming the op and the shapes. Operands of commutative ops are put in canonical
 * order.
 */
export function makeNode(op: OpName, inputs: readonly Node[], attrs: Attrs = {}): Node {
  const def = getOpDef(op);
  let operands = inputs;
  if (def.commutative && inputs.length === 2 && inputs[0].id > inputs[1].id) operands = [inputs[1], inputs[0]];
  def.checkArity(operands.length);
  const canon = deepFreeze(def.normalize ? def.normalize(operands, attrs) : { ...attrs });
  const key = `${op}(${operands.map((n) => n.id).join(',')})${attrKey(canon)}`;
  const hit = internTable.get(key)?.deref();
  if (hit) return hit;
  const type = def.infer(operands, canon);
  const node = new Node(op, Object.freeze([...operands]), canon, { dtype: type.dtype, shape: Object.freeze([...type.shape]) }, key);
  internTable.set(key, new WeakRef(node));
  registry.register(node, key);
  return node;
}

/** Rebuilds `node` with new operands (same op and attributes); returns `node` itself when nothing changed. */
export function withInputs(node: Node, inputs: readonly Node[]): Node {
  if (inputs.length === node.inputs.length && inputs.every((x, i) => x === node.inputs[i])) return node;
  return makeNode(node.op, inputs, node.attrs);
}

