/**
 * The N:M-sparse matmul family: a plain or fused matmul (the dense family's forms: gate and elementwise epilogue)
 * whose B is an N:M-sparse `weight` stored `[N, K]` and read with `transB` (the groups of `m` run along K). Its kernel
 * (`src/codegen/matmul/sparse-nm-gemv.ts`; for decode over quantized values on software rasterizers
 * `sparse-nm-gemv-sweep.ts`) reads only the kept values and their positions; the launch binds those
 * payload parts (`values`, or the quantized values' `packed`, `scales`, … with f32 scales; then `indices`) instead of
 * a dense buffer. It sits before the dense family in the registry.
 * @module
 */
import type { Node } from '../../ir/node.js';
import type { KernelFamily, Launch, LaunchOperand, LowerContext } from '../family.js';
import { generateSparseNMGemvKernel, type SparseNMMatmulSpec } from '../matmul/sparse-nm-gemv.js';
import { generateSparseNMGemvSweepKernel } from '../matmul/sparse-nm-gemv-sweep.js';
import { chooseSparseNMMatmulVariant } from '../schedule/sparse-matmul.js';
import { dequantFormatOf } from '../dequant.js';
import { acceptsWhenSpecBuilds, encodedMatmulWeight, launchOf, weightPartOperands } from './common.js';
import { matmulSpecOf } from './matmul.js';

/** The spec and launch operands of a node the family takes. */
function sparseNMSpecOf(node: Node, ctx: LowerContext): { spec: SparseNMMatmulSpec; operands: LaunchOperand[] } {
  const { weight, encoding: e } = encodedMatmulWeight(node, ctx, 'sparse-nm')!;
  const { spec, operands } = matmulSpecOf(node);
  const part = (p: string): LaunchOperand => ({ kind: 'weight-part', node: weight, part: p });
  const values = e.quantizedValues && dequantFormatOf(e.quantizedValues);
  return {
    spec: { ...spec, expectedM: ctx.expectedSeq, weight: { n: e.n, m: e.m, indexBits: e.indexBits ?? 8, ...(values ? { values } : {}) } },
    operands: [operands[0], ...(values ? weightPartOperands(weight, values) : [part('values')]), part('indices'), ...operands.slice(2)],
  };
}

function takes(node: Node, ctx?: LowerContext): boolean {
  const w = ctx && encodedMatmulWeight(node, ctx, 'sparse-nm');
  // the kernel reads f32 scales only (f16 ones would need a repack first)
  if (!w || (w.encoding.quantizedValues && w.encoding.quantizedValues.scaleDType !== 'f32')) return false;
  // the dense family's spec builder decides which fused forms one kernel computes (gate, epilogue operands)
  return acceptsWhenSpecBuilds(matmulSpecOf)(node);
}

function lower(node: Node, ctx: LowerContext): Launch[] {
  const { spec, operands } = sparseNMSpecOf(node, ctx);
  const v = chooseSparseNMMatmulVariant(spec, ctx.target);
  return [launchOf(node, v.kind === 'sparse-nm-gemv-sweep' ? generateSparseNMGemvSweepKernel(spec, v) : generateSparseNMGemvKernel(spec, v), operands)];
}

/**
 * The N:M-sparse matmul family. Its fused form is the dense family's (the fusion passes cannot tell a sparse weight
 * from a dense one, and need not: it computes the same forms); the dense family declares the epilogue anchor.
 */
export const sparseNMMatmulFamily: KernelFamily = {
  name: 'sparse-nm-matmul',
  ops: ['matmul'],
  fusion: { kind: 'matmul', accepts: acceptsWhenSpecBuilds(matmulSpecOf) },
  takes,
  variants: ['sparse-nm-gemv', 'sparse-nm-gemv-sweep'],
  features: ['shader-f16', 'subgroups'],
  lower,
};
