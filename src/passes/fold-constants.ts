/**
 * Constant folding: a node whose operands are all `constant` nodes or small dense weights is evaluated at compile time
 * with the CPU reference kernels (so folding gives bit-for-bit what the interpreter would), and replaced by its value:
 *
 * - up to {@link MAX_INLINE_CONSTANT} elements: a `constant` node (a splat when every element is equal);
 * - a larger splat: `expand(scalar constant)`, which costs no memory (and is itself a foldable operand);
 * - larger results up to `maxFoldElements` (option, default {@link DEFAULT_MAX_FOLD_ELEMENTS}): a new dense weight.
 *
 * Constants holding symbolic dims (shape arithmetic) fold symbolically, with {@link foldShapeArithmetic}.
 *
 * It does not fold:
 * - nodes reading a graph input (their operands are not all constants, by definition);
 * - results with a symbolic shape, or larger than `maxFoldElements`;
 * - weights that are not dense (folding a quantized or sparse weight would decode it and lose its compression);
 * - into the weight store when that would grow memory: when the result is larger than its operands together, or a
 *   weight operand is also used elsewhere (it would then be stored twice). Transposing a huge shared weight is left to
 *   the layout pass.
 * @module
 */
import { TensorwrightError } from '../errors.js';
import { isStaticShape, numel } from '../ir/dim.js';
import { isOp } from '../ir/attrs.js';
import { makeNode, type Node } from '../ir/node.js';
import { getOpDef, MAX_INLINE_CONSTANT, OP_NAMES, type OpName } from '../ir/ops.js';
import { foldShapeArithmetic, isSymbolicConstant } from '../ir/shape-arith.js';
import { WeightStore } from '../ir/weights.js';
import { evaluateNode, weightTensor } from '../runtime/cpu/interpreter.js';
import { inlineValues, weightPayload, type Tensor } from '../runtime/cpu/tensor.js';
import { rewritePass, type Pass } from './pass.js';
import { isSplatConstant } from './pattern.js';
import type { RewriteContext, RewriteRule } from './rewrite.js';

/**
 * Default of the `maxFoldElements` option: results and weight operands above this many elements are not folded.
 * @internal
 */
export const DEFAULT_MAX_FOLD_ELEMENTS = 16 * 1024 * 1024;

const LEAVES: readonly OpName[] = ['input', 'weight', 'constant'];
const COMPUTE_OPS: readonly OpName[] = OP_NAMES.filter((op) => !LEAVES.includes(op));

function staticNumel(n: Node): number | undefined {
  return isStaticShape(n.shape) ? (numel(n.shape) as number) : undefined;
}

/** A constant broadcast to a larger shape: `expand(constant)`, how large splats are kept. */
function isBroadcastConstant(x: Node): boolean {
  return x.op === 'expand' && x.inputs[0].op === 'constant';
}

/** Whether `x` can be read at compile time: a (broadcast) constant, or a dense weight of at most `cap` elements. */
function isFoldableOperand(x: Node, ctx: RewriteContext, cap: number): boolean {
  if (isSymbolicConstant(x) || (isBroadcastConstant(x) && isSymbolicConstant(x.inputs[0]))) return false; // foldShapeArithmetic's job
  if (x.op === 'constant' || isBroadcastConstant(x)) return isStaticShape(x.shape);
  if (!isOp(x, 'weight')) return false;
  const e = ctx.weights.get(x.attrs.id);
  return e.encoding.kind === 'dense' && (staticNumel(x) ?? Infinity) <= cap;
}

/** Elements an operand occupies in memory (a broadcast constant: those of its constant). */
function storedSize(x: Node): number {
  return staticNumel(isBroadcastConstant(x) ? x.inputs[0] : x) ?? Infinity;
}

function isSplatOperand(x: Node): boolean {
  return isSplatConstant(isBroadcastConstant(x) ? x.inputs[0] : x);
}

function operandValue(x: Node, ctx: RewriteContext): Tensor {
  if (isOp(x, 'weight')) return weightTensor(ctx.weights.get(x.attrs.id));
  if (isBroadcastConstant(x)) return evaluateNode(x, [operandValue(x.inputs[0], ctx)], ctx.graph, {}, {});
  return evaluateNode(x, [], ctx.graph, {}, {});
}

function isSplat(data: ArrayLike<number>): boolean {
  for (let i = 1; i < data.length; i++) if (!Object.is(data[i], data[0])) return false;
  return true;
}

function foldedName(node: Node): string {
  const parts = node.inputs.map((x) => (isOp(x, 'weight') ? x.attrs.name : 'const'));
  return `${node.op}(${parts.join(',')})`;
}

/** Evaluates `node` (all operands foldable) and builds the node holding its value, or `undefined` to decline. */
function fold(node: Node, ctx: RewriteContext): Node | undefined {
  const cap = typeof ctx.options.maxFoldElements === 'number' ? ctx.options.maxFoldElements : DEFAULT_MAX_FOLD_ELEMENTS;
  if (!node.inputs.every((x) => isFoldableOperand(x, ctx, cap))) return undefined;
  const size = staticNumel(node);
  if (size === undefined || size > cap) return undefined;
  const inline = size <= MAX_INLINE_CONSTANT;
  // A result too big to inline goes to the weight store, which must not grow: it has to replace operands at least as
  // large that nothing else uses. The exception is an elementwise function of splats, itself a splat, which is kept
  // as a memory-free broadcast. Check before evaluating, so no time is spent on results that would be dropped.
  const operandSize = node.inputs.reduce((acc, x) => acc + storedSize(x), 0);
  const splatResult = getOpDef(node.op).category === 'elementwise' && node.inputs.every(isSplatOperand);
  const storeWouldGrow = (): boolean => size > operandSize || node.inputs.some((x) => x.op === 'weight' && (ctx.useCount(x) > 1 || ctx.isOutput(x)));
  if (!inline && !splatResult && storeWouldGrow()) return undefined;
  let value: Tensor;
  try {
    value = evaluateNode(node, node.inputs.map((x) => operandValue(x, ctx)), ctx.graph, {}, {});
  } catch (e) {
    if (e instanceof TensorwrightError) return undefined; // e.g. an out-of-range gather index: leave it to run time
    throw e;
  }
  const data = inlineValues(value);
  const shape = value.shape;
  if (data === undefined) return storeWouldGrow() ? undefined : ctx.addWeight(WeightStore.entry(foldedName(node), node.dtype, shape, { values: weightPayload(node.dtype, value) }));
  if (isSplat(data) && (inline || size === 0)) return makeNode('constant', [], { dtype: node.dtype, shape: [...shape], values: size ? [data[0]] : [0] });
  if (isSplat(data)) return makeNode('expand', [makeNode('constant', [], { dtype: node.dtype, shape: [], values: [data[0]] })], { shape: [...shape] });
  if (inline) return makeNode('constant', [], { dtype: node.dtype, shape: [...shape], values: data });
  if (storeWouldGrow()) return undefined;
  return ctx.addWeight(WeightStore.entry(foldedName(node), node.dtype, shape, { values: weightPayload(node.dtype, value) }));
}

/**
 * The folding rule: rooted at every non-leaf op.
 * @internal
 */
export const foldConstantRule: RewriteRule = {
  name: 'fold-constant',
  root: COMPUTE_OPS,
  // a `range` of static length has no operands but folds too; other operand-free ops are leaves
  apply: ({ node }, ctx) => (node.inputs.length ? (foldShapeArithmetic(node) ?? fold(node, ctx)) : node.op === 'range' ? fold(node, ctx) : undefined),
};

/** The `fold-constants` pass. */
export const foldConstantsPass: Pass = rewritePass({
  name: 'fold-constants',
  description: 'evaluate nodes whose operands are all constants or small dense weights at compile time',
  rules: [foldConstantRule],
  kind: 'folded',
});
