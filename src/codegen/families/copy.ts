/**
 * The data-movement family as the compiler sees it: `gather` (an embedding lookup when it reads rows of a static
 * `[vocab, dim]` table), `transpose`, `slice` and `concat` as copy kernels. (A lookup in a quantized table goes to the
 * dequant-gather family, before this one in the registry.)
 * @module
 */
import { attrsOf } from '../../ir/attrs.js';
import { numel } from '../../ir/dim.js';
import type { Node } from '../../ir/node.js';
import { printNode } from '../../ir/printer.js';
import type { KernelFamily, Launch } from '../family.js';
import { generateConcatKernel, generateEmbeddingKernel, generateGatherKernel, generateSliceKernel, generateTransposeKernel } from '../gather.js';
import { dimText, launchOf } from './common.js';

function lowerCopy(node: Node): Launch[] {
  const label = printNode(node);
  const x = node.inputs[0];
  switch (node.op) {
    case 'gather': {
      const [table, ids] = node.inputs;
      const { axis } = attrsOf(node, 'gather');
      const indexDType = ids.dtype === 'u32' ? 'u32' : ids.dtype === 'i64' ? 'i64' : 'i32';
      const count = dimText(numel(ids.shape));
      const k =
        axis === 0 && table.rank === 2 && typeof table.shape[0] === 'number' && typeof table.shape[1] === 'number'
          ? generateEmbeddingKernel({ vocab: table.shape[0], dim: table.shape[1], count, dtype: node.dtype, indexDType, nodes: [label] })
          : generateGatherKernel({ shape: table.shape.map(dimText), axis, count, dtype: node.dtype, indexDType, nodes: [label] });
      return [launchOf(node, k, [table, ids])];
    }
    case 'transpose':
      return [launchOf(node, generateTransposeKernel({ shape: x.shape.map(dimText), perm: [...attrsOf(node, 'transpose').perm], dtype: node.dtype, nodes: [label] }), [x])];
    case 'slice': {
      const a = attrsOf(node, 'slice');
      const starts = x.shape.map((): number | string => 0);
      const steps = x.shape.map(() => 1);
      a.axes.forEach((ax, i) => {
        starts[ax] = dimText(a.starts[i]);
        steps[ax] = a.steps[i];
      });
      return [launchOf(node, generateSliceKernel({ shape: x.shape.map(dimText), starts, steps, outShape: node.shape.map(dimText), dtype: node.dtype, nodes: [label] }), [x])];
    }
    default:
      return [launchOf(node, generateConcatKernel({ shapes: node.inputs.map((i) => i.shape.map(dimText)), axis: attrsOf(node, 'concat').axis, dtype: node.dtype, nodes: [label] }), node.inputs)];
  }
}

/** The data-movement family. */
export const copyFamily: KernelFamily = {
  name: 'copy',
  ops: ['gather', 'transpose', 'slice', 'concat'],
  variants: ['embedding', 'gather', 'transpose', 'slice', 'concat'],
  features: ['shader-f16'],
  lower: lowerCopy,
};
