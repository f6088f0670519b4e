/**
 * The elementwise family as the compiler sees it: one pointwise op, or a `fused {kind: 'elementwise'}` program of
 * them; its pointwise ops are what the fusion passes may chain and absorb into epilogues.
 * @module
 */
import type { Node } from '../../ir/node.js';
import { ELEMENTWISE_KERNEL_OPS, generateElementwiseKernel } from '../elementwise.js';
import type { KernelFamily, Launch } from '../family.js';
import { launchOf, unfuse } from './common.js';

function lowerElementwise(node: Node): Launch[] {
  if (node.op !== 'fused') {
    const k = generateElementwiseKernel(node, { fuse: (n) => n === node });
    return [launchOf(node, k, k.operands)];
  }
  const steps = new Set(unfuse(node));
  const root = [...steps][steps.size - 1];
  const k = generateElementwiseKernel(root, { fuse: (n) => steps.has(n) });
  return [launchOf(node, k, k.operands)];
}

/** The elementwise family. */
export const elementwiseFamily: KernelFamily = {
  name: 'elementwise',
  ops: [...ELEMENTWISE_KERNEL_OPS],
  fusion: { kind: 'elementwise', pointwiseOps: ELEMENTWISE_KERNEL_OPS, accepts: () => true },
  variants: ['elementwise'],
  features: ['shader-f16'],
  lower: lowerElementwise,
};
