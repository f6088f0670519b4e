/**
 * The softmax family as the compiler sees it: `softmax` over the last axis (legalization moves another axis last).
 * @module
 */
import { attrsOf } from '../../ir/attrs.js';
import { UnsupportedOpError } from '../../errors.js';
import { dimProduct } from '../../ir/dim.js';
import { printNode } from '../../ir/printer.js';
import { fixedSubgroupSize, hasFeature } from '../../ir/target.js';
import type { KernelFamily } from '../family.js';
import { generateSoftmaxKernel } from '../softmax.js';
import { dimText, floatStorage, launchOf } from './common.js';

/** The softmax family. */
export const softmaxFamily: KernelFamily = {
  name: 'softmax',
  ops: ['softmax'],
  variants: ['row'],
  features: ['shader-f16', 'subgroups'],
  lower: (node, ctx) => {
    const x = node.inputs[0];
    if (attrsOf(node, 'softmax').axis !== x.rank - 1) throw new UnsupportedOpError(['softmax'], `WebGPU softmax runs over the last axis: ${printNode(node)}`);
    const k = generateSoftmaxKernel({
      cols: dimText(x.shape[x.rank - 1]),
      rows: dimText(dimProduct(x.shape.slice(0, -1))),
      dtype: floatStorage(node),
      subgroups: hasFeature(ctx.target, 'subgroups'),
      // a CPU rasterizer runs a workgroup on one thread, switching between its subgroups at every barrier: one
      // subgroup per row does the same work with no barrier
      fixedSubgroupSize: ctx.target.deviceClass === 'software-gpu' ? fixedSubgroupSize(ctx.target) : undefined,
      staticLoops: ctx.target.deviceClass !== 'software-gpu',
      nodes: [printNode(node)],
    });
    return [launchOf(node, k, [x])];
  },
};
