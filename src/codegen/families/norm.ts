/**
 * The norm family as the compiler sees it: `rmsnorm` and `layernorm` over the last axis (static), one row per
 * workgroup.
 * @module
 */
import { attrsOf } from '../../ir/attrs.js';
import { UnsupportedOpError } from '../../errors.js';
import { dimProduct } from '../../ir/dim.js';
import { fixedSubgroupSize, hasFeature } from '../../ir/target.js';
import { printNode } from '../../ir/printer.js';
import type { KernelFamily } from '../family.js';
import { generateNormKernel } from '../norm.js';
import { dimText, floatStorage, launchOf } from './common.js';

/** The norm family. */
export const normFamily: KernelFamily = {
  name: 'norm',
  ops: ['rmsnorm', 'layernorm'],
  variants: ['row'],
  features: ['shader-f16', 'subgroups'],
  lower: (node, ctx) => {
    const x = node.inputs[0];
    const cols = x.shape[x.rank - 1];
    if (typeof cols !== 'number') throw new UnsupportedOpError([node.op], `norms need a static last axis: ${printNode(node)}`);
    const k = generateNormKernel({
      kind: node.op as 'rmsnorm' | 'layernorm',
      cols,
      rows: dimText(dimProduct(x.shape.slice(0, -1))),
      dtype: floatStorage(node),
      eps: attrsOf(node, node.op as 'rmsnorm' | 'layernorm').eps,
      bias: node.inputs.length > 2,
      subgroups: hasFeature(ctx.target, 'subgroups'),
      // a CPU rasterizer runs a workgroup on one thread, switching between its subgroups at every barrier: one
      // subgroup per row does the same work with no barrier
      fixedSubgroupSize: ctx.target.deviceClass === 'software-gpu' ? fixedSubgroupSize(ctx.target) : undefined,
      staticLoops: ctx.target.deviceClass !== 'software-gpu',
      nodes: [printNode(node)],
    });
    return [launchOf(node, k, node.inputs)];
  },
};
