/**
 * The dequantizing gather family: an embedding lookup (`gather` along axis 0) whose table is a quantized 2-D
 * `weight` (8, 4 or 2 bits, f32 scales, optional zero points and offsets), as GGUF files store `token_embd.weight`.
 * Its kernel (`src/codegen/dequant-gather.ts`) dequantizes each looked-up element in registers; the launch binds the
 * weight's payload parts (`packed`, `scales`, `zeroPoints`, `mins`) instead of a dense table. It sits before the
 * copy family in the registry; every other gather stays with that one.
 * @module
 */
import { attrsOf } from '../../ir/attrs.js';
import { numel } from '../../ir/dim.js';
import type { Node } from '../../ir/node.js';
import { printNode } from '../../ir/printer.js';
import type { QuantizedEncoding } from '../../ir/weights.js';
import { dequantFormatOf } from '../dequant.js';
import { generateDequantEmbeddingKernel } from '../dequant-gather.js';
import type { KernelFamily, Launch, LowerContext } from '../family.js';
import { dequantEncodingOf, dimText, floatStorage, launchOf, weightPartOperands } from './common.js';

/**
 * The quantized table of an embedding lookup the family takes, with its encoding, or `undefined`: the node is no
 * `gather` along axis 0, its table is no static 2-D `weight`, is dense or has f16 scales.
 */
function quantizedTable(node: Node, ctx: Pick<LowerContext, 'weightEncoding'>): { table: Node; encoding: QuantizedEncoding } | undefined {
  if (node.op !== 'gather' || attrsOf(node, 'gather').axis !== 0) return undefined;
  const [table] = node.inputs;
  if (table.rank !== 2 || !table.shape.every((d) => typeof d === 'number')) return undefined;
  const encoding = dequantEncodingOf(table, ctx);
  return encoding && { table, encoding };
}

function takes(node: Node, ctx?: LowerContext): boolean {
  return !!ctx && !!quantizedTable(node, ctx);
}

function lower(node: Node, ctx: LowerContext): Launch[] {
  const { table, encoding } = quantizedTable(node, ctx)!;
  const ids = node.inputs[1];
  const [vocab, dim] = table.shape as [number, number];
  const weight = dequantFormatOf(encoding);
  const kernel = generateDequantEmbeddingKernel({
    vocab,
    dim,
    count: dimText(numel(ids.shape)),
    dtype: floatStorage(node),
    indexDType: ids.dtype === 'u32' ? 'u32' : ids.dtype === 'i64' ? 'i64' : 'i32',
    weight,
    nodes: [printNode(node)],
  });
  return [launchOf(node, kernel, [...weightPartOperands(table, weight), ids])];
}

/** The dequantizing gather family. */
export const dequantGatherFamily: KernelFamily = {
  name: 'dequant-gather',
  ops: ['gather'],
  takes,
  variants: ['dequant-embedding'],
  features: ['shader-f16'],
  lower,
};
