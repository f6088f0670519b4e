/**
 * The dequantizing matmul family: a plain or fused matmul (the dense family's forms: gate and elementwise epilogue)
 * whose B is a quantized `weight` (8, 4 or 2 bits, f32 scales, optional zero points and offsets) stored `[N, K]`
 * and read with `transB`, as llama2.c and Hugging Face store linear weights. Its kernel reads the packed integers
 * and dequantizes them in registers (`src/codegen/matmul/dequant-gemv.ts`; on software rasterizers
 * `dequant-gemv-sweep.ts` for decode and `dequant-gemm.ts` for prefill); the launch binds the weight's payload
 * parts (`packed`, `scales`, `zeroPoints`, `mins`) instead of a dense buffer. It sits before the dense family in the
 * registry; every other matmul stays with the dense one.
 * @module
 */
import type { Node } from '../../ir/node.js';
import type { QuantizedEncoding } from '../../ir/weights.js';
import type { KernelFamily, Launch, LaunchOperand, LowerContext } from '../family.js';
import { generateDequantGemvKernel, type DequantMatmulSpec } from '../matmul/dequant-gemv.js';
import { generateDequantGemmSubgroupKernel } from '../matmul/dequant-gemm.js';
import { generateDequantGemvSweepKernel } from '../matmul/dequant-gemv-sweep.js';
import { chooseDequantMatmulVariant, dequantMatmulCandidates, type DequantMatmulVariant } from '../schedule/dequant-matmul.js';
import { chooseScheduledVariant, kernelSignature } from '../schedule/tuning.js';
import type { KernelSource } from '../kernel.js';
import { dequantFormatOf } from '../dequant.js';
import { acceptsWhenSpecBuilds, encodedMatmulWeight, generatesFor, launchOf, weightPartOperands } from './common.js';
import { matmulSpecOf } from './matmul.js';

/**
 * The quantized B of a plain or fused matmul that the dequantizing kernel reads, with its encoding, or `undefined`
 * when the family does not take the node: B is no `weight`, is dense, is not a 2-D `[N, K]` read with `transB`, has
 * f16 scales or a group size that neither divides K nor covers the whole weight.
 */
export function quantizedMatmulWeight(node: Node, ctx: Pick<LowerContext, 'weightEncoding'>): { weight: Node; encoding: QuantizedEncoding } | undefined {
  const found = encodedMatmulWeight(node, ctx, 'quantized');
  if (!found || found.encoding.scaleDType !== 'f32') return undefined;
  const [N, K] = found.weight.shape as [number, number];
  const g = found.encoding.groupSize;
  return K % g === 0 || g === N * K ? found : undefined;
}

/** The spec and launch operands of a node the family takes. */
function dequantSpecOf(node: Node, ctx: LowerContext): { spec: DequantMatmulSpec; operands: LaunchOperand[] } {
  const { weight, encoding: e } = quantizedMatmulWeight(node, ctx)!;
  const { spec, operands } = matmulSpecOf(node);
  const format = dequantFormatOf(e);
  return {
    spec: { ...spec, expectedM: ctx.expectedSeq, weight: format },
    operands: [operands[0], ...weightPartOperands(weight, format), ...operands.slice(2)],
  };
}

function takes(node: Node, ctx?: LowerContext): boolean {
  if (!ctx || !quantizedMatmulWeight(node, ctx)) return false;
  // the dense family's spec builder decides which fused forms one kernel computes (gate, epilogue operands)
  return acceptsWhenSpecBuilds(matmulSpecOf)(node);
}

function lower(node: Node, ctx: LowerContext): Launch[] {
  const { spec, operands } = dequantSpecOf(node, ctx);
  const generate = (v: DequantMatmulVariant): KernelSource =>
    v.kind === 'dequant-gemm-subgroup' ? generateDequantGemmSubgroupKernel(spec, v) : v.kind === 'dequant-gemv-sweep' ? generateDequantGemvSweepKernel(spec, v) : generateDequantGemvKernel(spec, v);
  const candidates = (): DequantMatmulVariant[] => dequantMatmulCandidates(spec, ctx.target).filter((v) => generatesFor(() => generate(v)));
  const { variant, schedule } = chooseScheduledVariant(kernelSignature('dequant-matmul', spec), chooseDequantMatmulVariant(spec, ctx.target), candidates, ctx.tuning);
  return [launchOf(node, { ...generate(variant), schedule }, operands)];
}

/**
 * The dequantizing matmul family. Its fused form is the dense family's (the fusion passes cannot tell a quantized
 * weight from a dense one, and need not: it computes the same forms); the dense family declares the epilogue anchor.
 */
export const dequantMatmulFamily: KernelFamily = {
  name: 'dequant-matmul',
  ops: ['matmul'],
  fusion: { kind: 'matmul', accepts: acceptsWhenSpecBuilds(matmulSpecOf) },
  takes,
  variants: ['dequant-gemv', 'dequant-gemv-sweep', 'dequant-gemm-subgroup'],
  features: ['shader-f16', 'subgroups'],
  lower,
};
