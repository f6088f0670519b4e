/**
 * A small pattern language for rewrite rules, in the spirit of TVM's `is_op("matmul")(x, is_op("permute_dims")(w))`:
 *
 * ```ts
 * pat.op('mul', [pat.any('x'), pat.constant(1)])     // x * 1 (or 1 * x: commutative ops match both orders)
 * pat.op('matmul', [pat.any('a'), pat.op('transpose', [pat.weight('w')])])
 * ```
 *
 * A {@link Pattern} is plain data: an op (or a set of ops) to match, positional operand patterns, a capture name and a
 * predicate. {@link matchPattern} finds every way a pattern matches a node (operands of commutative binary ops are
 * tried in both orders; a name captured twice must bind the same node both times).
 * @module
 */
import { isOp } from '../ir/attrs.js';
import type { Node } from '../ir/node.js';
import { getOpDef, type OpName } from '../ir/ops.js';

/** What a match binds: capture name to node. */
export type Captures = Readonly<Record<string, Node>>;

/** A pattern over IR nodes. Every field is optional; the empty pattern matches any node. */
export interface Pattern {
  /** The op (or any of the ops) the node must have. */
  readonly op?: OpName | readonly OpName[];
  /** Patterns for the operands, positionally; when given, the operand count must match. */
  readonly inputs?: readonly Pattern[];
  /** Binds the matched node under this name (a name bound twice must be the same node). */
  readonly capture?: string;
  /** Extra condition, checked after the operands matched (so their captures are visible). */
  readonly where?: (node: Node, captures: Captures) => boolean;
}

/** Whether a node is a `constant` holding one value for every element (optionally: this value). */
export function isSplatConstant(node: Node, value?: number): boolean {
  const v = splatValue(node);
  if (v === undefined) return false;
  if (value === undefined) return true;
  return Number.isNaN(value) ? Number.isNaN(v) : v === value;
}

/** The value of a splat constant, or `undefined` when the node is not one. */
export function splatValue(node: Node): number | undefined {
  if (!isOp(node, 'constant')) return undefined;
  const vals = node.attrs.values;
  // a symbolic value (shape arithmetic) is no number a rule can compute with
  return vals.length === 1 && typeof vals[0] === 'number' ? vals[0] : undefined;
}

/** Pattern constructors. */
export const pat = {
  /** Any node; captured under `name` when given. */
  any(name?: string): Pattern {
    return name === undefined ? {} : { capture: name };
  },
  /** A node with this op (or one of these ops), optionally with operand patterns. */
  op(op: OpName | readonly OpName[], inputs?: readonly Pattern[], opts: { capture?: string; where?: Pattern['where'] } = {}): Pattern {
    return { op, ...(inputs ? { inputs } : {}), ...opts };
  },
  /** A splat `constant` (every element equal), with this value when given (`0` matches `-0`; `NaN` matches `NaN`). */
  constant(value?: number, name?: string): Pattern {
    return { op: 'constant', capture: name, where: (n) => isSplatConstant(n, value) };
  },
  /** Any `constant` node (splat or not). */
  anyConstant(name?: string): Pattern {
    return { op: 'constant', capture: name };
  },
  /** A `weight` node. */
  weight(name?: string): Pattern {
    return { op: 'weight', capture: name };
  },
  /** A graph `input` node. */
  input(name?: string): Pattern {
    return { op: 'input', capture: name };
  },
  /** Any node satisfying `pred`. */
  where(pred: (node: Node, captures: Captures) => boolean, name?: string): Pattern {
    return { capture: name, where: pred };
  },
};

function opMatches(p: Pattern, node: Node): boolean {
  if (p.op === undefined) return true;
  return typeof p.op === 'string' ? p.op === node.op : p.op.includes(node.op);
}

/** Every way `operands[i]` matches `patterns[i]` for all `i`, threading captures left to right. */
function* matchAll(patterns: readonly Pattern[], operands: readonly Node[], i: number, caps: Captures): Generator<Captures> {
  if (i === patterns.length) {
    yield caps;
    return;
  }
  for (const c of matchPattern(patterns[i], operands[i], caps)) yield* matchAll(patterns, operands, i + 1, c);
}

/**
 * Every way `pattern` matches `node` (lazily, first match first), each as the captures it binds on top of `captures`.
 * Patterns are small, so the recursion here follows the pattern's depth, not the graph's.
 */
export function* matchPattern(pattern: Pattern, node: Node, captures: Captures = {}): Generator<Captures> {
  if (!opMatches(pattern, node)) return;
  const orders: (readonly Node[])[] = [];
  if (!pattern.inputs) orders.push(node.inputs);
  else if (pattern.inputs.length === node.inputs.length) {
    orders.push(node.inputs);
    if (node.inputs.length === 2 && getOpDef(node.op).commutative && node.inputs[0] !== node.inputs[1]) orders.push([node.inputs[1], node.inputs[0]]);
  }
  for (const operands of orders) {
    const inner = pattern.inputs ? matchAll(pattern.inputs, operands, 0, captures) : [captures][Symbol.iterator]();
    for (let caps of inner) {
      if (pattern.capture !== undefined) {
        const prev = caps[pattern.capture];
        if (prev !== undefined && prev !== node) continue;
        if (prev === undefined) caps = { ...caps, [pattern.capture]: node };
      }
      if (pattern.where && !pattern.where(node, caps)) continue;
      yield caps;
    }
  }
}

/** The first match of `pattern` at `node`, or `undefined`. */
export function matchFirst(pattern: Pattern, node: Node): Captures | undefined {
  for (const c of matchPattern(pattern, node)) return c;
  return undefined;
}
