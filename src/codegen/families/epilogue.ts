/**
 * Elementwise epilogues of a fused program, as WGSL: the steps after an anchor's value (a matmul's accumulator, a
 * rope's rotated element) become one f32 expression of that value (`ACC`) and of extra operands (`LOAD<i>`), each
 * read at the output element according to how its shape broadcasts onto the output. Families that fuse epilogues
 * (matmul, rope) build theirs here and say which broadcasts their kernels can index.
 * @module
 */
import { UnsupportedOpError } from '../../errors.js';
import { isOp } from '../../ir/attrs.js';
import type { Dim } from '../../ir/dim.js';
import type { Node } from '../../ir/node.js';
import { printNode } from '../../ir/printer.js';
import { ELEMENTWISE_KERNEL_OPS, scalarExpr } from '../elementwise.js';
import { literal, usesBitsHelper } from '../wgsl.js';

/** An epilogue as an expression over the anchor's value and its extra operands. */
export interface PointwiseEpilogue<Broadcast extends string> {
  /** Operand nodes read by the epilogue, in binding order. */
  readonly operands: readonly Node[];
  /** How each operand maps onto the output (`broadcastOf`'s answer). */
  readonly broadcasts: readonly Broadcast[];
  /** The stored value's f32 expression: `ACC` stands for the anchor's value, `LOAD<i>` for operand `i`. */
  readonly body: string;
  /** Names of WGSL helpers the expression calls. */
  readonly helpers: readonly string[];
}

/** The literal of a single-value constant node, else undefined. */
function splatLiteral(n: Node, helpers: Set<string>): string | undefined {
  const v = isOp(n, 'constant') ? n.attrs.values : undefined;
  if (!(v && v.length === 1 && typeof v[0] === 'number')) return undefined;
  const lit = literal(n.dtype, v[0]);
  if (usesBitsHelper(lit)) helpers.add('bits_f32');
  return lit;
}

/**
 * The epilogue computing `steps` (elementwise ops over `value`'s shape, in program order) from `value`.
 * `broadcastOf` says how an operand of a given shape maps onto the output (undefined: the kernel cannot read it).
 * Throws {@link UnsupportedOpError} (naming `family`) for a step that is not elementwise over the output or an
 * operand the kernel cannot index.
 */
export function pointwiseEpilogue<Broadcast extends string>(
  family: string,
  value: Node,
  steps: readonly Node[],
  broadcastOf: (shape: readonly Dim[], out: readonly Dim[]) => Broadcast | undefined,
): PointwiseEpilogue<Broadcast> {
  const outShape = value.shape;
  const operands: Node[] = [];
  const broadcasts: Broadcast[] = [];
  const exprOf = new Map<Node, string>([[value, 'ACC']]);
  const helpers = new Set<string>();
  for (const st of steps) {
    const splat = splatLiteral(st, helpers);
    if (splat !== undefined) {
      exprOf.set(st, splat);
      continue;
    }
    if (!ELEMENTWISE_KERNEL_OPS.has(st.op) || st.shape.length !== outShape.length || !st.shape.every((d, i) => d === outShape[i]))
      throw new UnsupportedOpError([st.op], `${family} epilogues are elementwise over the output: ${printNode(st)}`);
    const args = st.inputs.map((x) => {
      const e = exprOf.get(x) ?? splatLiteral(x, helpers);
      if (e !== undefined) return e;
      const kind = broadcastOf(x.shape, outShape);
      if (!kind || (x.dtype !== 'f32' && x.dtype !== 'f16')) throw new UnsupportedOpError([st.op], `epilogue operand ${printNode(x)} does not map onto the ${family} output`);
      let i = operands.indexOf(x);
      if (i < 0) {
        i = operands.push(x) - 1;
        broadcasts.push(kind);
      }
      return `LOAD${i}`;
    });
    exprOf.set(st, `(${scalarExpr(st, args, helpers)})`);
  }
  return { operands, broadcasts, body: exprOf.get(steps[steps.length - 1]) ?? 'ACC', helpers: [...helpers] };
}

/** `body` with `ACC` replaced by `acc` and each `LOAD<i>` by `load(i)`. */
export function epilogueExpr(body: string, acc: string, load: (i: number) => string): string {
  return body.replace(/ACC/g, `(${acc})`).replace(/LOAD(\d+)/g, (_m, i: string) => load(Number(i)));
}
