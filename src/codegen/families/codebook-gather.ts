/**
 * The codebook gather family: an embedding lookup (`gather` along axis 0) whose table is a codebook (look-up table)
 * 2-D `weight` (NF4, k-means, ternary, binary, log2 from `--quant`). Its kernel (`src/codegen/codebook-gather.ts`)
 * decodes each looked-up element in registers; the launch binds the weight's payload parts (`indices`, `codebook`,
 * `scales`) instead of a dense table. It sits before the copy family in the registry; every other gather stays with
 * that one.
 * @module
 */
import { attrsOf } from '../../ir/attrs.js';
import { numel } from '../../ir/dim.js';
import type { Node } from '../../ir/node.js';
import { printNode } from '../../ir/printer.js';
import type { CodebookWeightFormat } from '../codebook.js';
import { generateCodebookEmbeddingKernel } from '../codebook-gather.js';
import type { KernelFamily, Launch, LowerContext } from '../family.js';
import { codebookFormatOfNode, codebookPartOperands } from './codebook-matmul.js';
import { dimText, floatStorage, launchOf } from './common.js';

/**
 * The codebook table of an embedding lookup the family takes, with its format, or `undefined`: the node is no
 * `gather` along axis 0, or its table is no static 2-D codebook `weight` with 1, 2, 4 or 8-bit indices.
 */
function codebookTable(node: Node, ctx: Pick<LowerContext, 'weightEncoding'>): { table: Node; format: CodebookWeightFormat } | undefined {
  if (node.op !== 'gather' || attrsOf(node, 'gather').axis !== 0) return undefined;
  const [table] = node.inputs;
  if (table.rank !== 2 || !table.shape.every((d) => typeof d === 'number')) return undefined;
  const format = codebookFormatOfNode(table, ctx);
  return format && { table, format };
}

function takes(node: Node, ctx?: LowerContext): boolean {
  return !!ctx && !!codebookTable(node, ctx);
}

function lower(node: Node, ctx: LowerContext): Launch[] {
  const { table, format } = codebookTable(node, ctx)!;
  const ids = node.inputs[1];
  const [vocab, dim] = table.shape as [number, number];
  const kernel = generateCodebookEmbeddingKernel({
    vocab,
    dim,
    count: dimText(numel(ids.shape)),
    dtype: floatStorage(node),
    indexDType: ids.dtype === 'u32' ? 'u32' : ids.dtype === 'i64' ? 'i64' : 'i32',
    weight: format,
    nodes: [printNode(node)],
  });
  return [launchOf(node, kernel, [...codebookPartOperands(table, format), ids])];
}

/** The codebook gather family. */
export const codebookGatherFamily: KernelFamily = {
  name: 'codebook-gather',
  ops: ['gather'],
  takes,
  variants: ['codebook-embedding'],
  features: ['shader-f16'],
  lower,
};
