/**
 * WebGPU legalization: rewrites a graph into the forms the WebGPU kernels implement, without changing what it
 * computes:
 * - a softmax over another axis than the last is wrapped in transposes (the kernel normalizes rows);
 * - a reduction of an empty tensor becomes its identity value (no kernel reads the empty input);
 * - a matmul that broadcasts only part of an operand's batch gets that operand expanded first (the kernels broadcast
 *   a whole operand's batch or none of it).
 *
 * Fused nodes need no legalization: the fusion passes form only the patterns the target's kernel families accept.
 * @module
 */
import { attrsOf } from '../ir/attrs.js';
import { numel } from '../ir/dim.js';
import { makeNode, type Node } from '../ir/node.js';
import { rewritePass } from './pass.js';
import type { RewriteRule } from './rewrite.js';

/**
 * `softmax(x, axis)` → `transpose(softmax(transpose(x), last))` when `axis` is not the last one.
 * @internal
 */
export const softmaxLastAxisRule: RewriteRule = {
  name: 'softmax-last-axis',
  root: 'softmax',
  apply: ({ node }) => {
    const last = node.rank - 1;
    const { axis } = attrsOf(node, 'softmax');
    if (axis === last) return undefined;
    const perm = node.shape.map((_d, i) => (i === axis ? last : i === last ? axis : i));
    const moved = makeNode('transpose', [node.inputs[0]], { perm });
    return makeNode('transpose', [makeNode('softmax', [moved], { ...node.attrs, axis: last })], { perm });
  },
};

/**
 * A reduction over no elements is its identity (sum 0, max the lowest value, mean NaN).
 * @internal
 */
export const emptyReductionRule: RewriteRule = {
  name: 'empty-reduction',
  root: ['sum', 'mean', 'max'],
  apply: ({ node }) => {
    if (numel(node.inputs[0].shape) !== 0 || numel(node.shape) === 0) return undefined;
    if (node.dtype === 'i64' && node.op === 'max') return undefined; // -2^63 is no inline constant: the kernel starts there
    const lowest = node.dtype === 'i32' ? -(2 ** 31) : node.dtype === 'u32' ? 0 : -Infinity;
    const value = node.op === 'sum' ? 0 : node.op === 'max' ? lowest : NaN;
    return makeNode('expand', [makeNode('constant', [], { dtype: node.dtype, shape: [], values: [value] })], { shape: [...node.shape] });
  },
};

/**
 * An operand of a matmul whose batch dims are neither all broadcast nor the output's is expanded to the output's batch.
 * @internal
 */
export const expandMatmulBatchRule: RewriteRule = {
  name: 'expand-matmul-batch',
  root: 'matmul',
  apply: ({ node }) => {
    const outBatch = node.shape.slice(0, -2);
    const fix = (x: Node): Node => {
      const b = x.shape.slice(0, -2);
      if (numel(b) === 1 || (b.length === outBatch.length && b.every((d, i) => d === outBatch[i]))) return x;
      return makeNode('expand', [x], { shape: [...outBatch, ...x.shape.slice(-2)] });
    };
    const [a, b] = node.inputs.map(fix);
    return a === node.inputs[0] && b === node.inputs[1] ? undefined : makeNode('matmul', [a, b], node.attrs);
  },
};

/** The `legalize-webgpu` pass. */
export const legalizeWebGPUPass = rewritePass({
  name: 'legalize-webgpu',
  description: 'rewrite into the forms the WebGPU kernels implement (softmax over the last axis, empty reductions, whole-batch matmul operands)',
  rules: [softmaxLastAxisRule, emptyReductionRule, expandMatmulBatchRule],
});
