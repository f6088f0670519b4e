/**
 * The block-sparse matmul family: a plain or fused matmul (the dense family's forms: gate and elementwise epilogue)
 * whose B is a block-sparse `weight` (block CSR) stored `[N, K]` and read with `transB`. Its kernel
 * (`src/codegen/matmul/block-sparse-gemv.ts`) iterates only the stored blocks; the launch binds the payload parts
 * (`rowPtr`, `colIdx`, `blocks`) instead of a dense buffer. It sits before the dense family in the registry.
 * @module
 */
import type { Node } from '../../ir/node.js';
import type { KernelFamily, Launch, LaunchOperand, LowerContext } from '../family.js';
import { generateBlockSparseGemvKernel, type BlockSparseMatmulSpec } from '../matmul/block-sparse-gemv.js';
import { chooseBlockSparseVariant } from '../schedule/sparse-matmul.js';
import { acceptsWhenSpecBuilds, encodedMatmulWeight, launchOf } from './common.js';
import { matmulSpecOf } from './matmul.js';

/** The spec and launch operands of a node the family takes. */
function blockSparseSpecOf(node: Node, ctx: LowerContext): { spec: BlockSparseMatmulSpec; operands: LaunchOperand[] } {
  const { weight, encoding: e } = encodedMatmulWeight(node, ctx, 'sparse-block')!;
  const { spec, operands } = matmulSpecOf(node);
  const part = (p: string): LaunchOperand => ({ kind: 'weight-part', node: weight, part: p });
  return {
    spec: { ...spec, expectedM: ctx.expectedSeq, weight: { blockRows: e.blockRows, blockCols: e.blockCols } },
    operands: [operands[0], part('rowPtr'), part('colIdx'), part('blocks'), ...operands.slice(2)],
  };
}

function takes(node: Node, ctx?: LowerContext): boolean {
  if (!ctx || !encodedMatmulWeight(node, ctx, 'sparse-block')) return false;
  // the dense family's spec builder decides which fused forms one kernel computes (gate, epilogue operands)
  return acceptsWhenSpecBuilds(matmulSpecOf)(node);
}

function lower(node: Node, ctx: LowerContext): Launch[] {
  const { spec, operands } = blockSparseSpecOf(node, ctx);
  return [launchOf(node, generateBlockSparseGemvKernel(spec, chooseBlockSparseVariant(spec, ctx.target)), operands)];
}

/**
 * The block-sparse matmul family. Its fused form is the dense family's (the fusion passes cannot tell a sparse weight
 * from a dense one, and need not: it computes the same forms); the dense family declares the epilogue anchor.
 */
export const blockSparseMatmulFamily: KernelFamily = {
  name: 'block-sparse-matmul',
  ops: ['matmul'],
  fusion: { kind: 'matmul', accepts: acceptsWhenSpecBuilds(matmulSpecOf) },
  takes,
  variants: ['block-sparse-gemv'],
  features: ['shader-f16', 'subgroups'],
  lower,
};
