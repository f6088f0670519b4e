/**
 * The codebook matmul family: a plain or fused matmul (the dense family's forms: gate and elementwise epilogue)
 * whose B is a codebook (look-up table) `weight` — NF4, k-means, ternary, binary, log2 from `--quant` — stored
 * `[N, K]` and read with `transB`. Its kernels (`src/codegen/matmul/codebook-gemv.ts`, and `codebook-gemm.ts` for
 * prefill on software rasterizers) read the packed indices and look them up in the table in registers or workgroup
 * memory; the launch binds the weight's payload parts
 * (`indices`, `codebook`, `scales`) instead of a dense buffer. It sits before the dense family in the registry; every
 * other matmul stays with the dense one.
 * @module
 */
import type { Node } from '../../ir/node.js';
import { numel } from '../../ir/dim.js';
import type { KernelFamily, Launch, LaunchOperand, LowerContext, WeightPartOperand } from '../family.js';
import { codebookFormatOf, codebookParts, type CodebookWeightFormat } from '../codebook.js';
import { generateCodebookGemmSubgroupKernel } from '../matmul/codebook-gemm.js';
import { codebookMatmulProblem, generateCodebookGemvKernel, type CodebookMatmulSpec } from '../matmul/codebook-gemv.js';
import { chooseCodebookMatmulVariant } from '../schedule/codebook-matmul.js';
import { acceptsWhenSpecBuilds, launchOf, unfuse } from './common.js';
import { matmulSpecOf } from './matmul.js';

/**
 * The format of `n` when it is a static codebook `weight` whose index width the kernels read (1, 2, 4 or 8 bits),
 * else `undefined`.
 */
export function codebookFormatOfNode(n: Node, ctx: Pick<LowerContext, 'weightEncoding'>): CodebookWeightFormat | undefined {
  if (n.op !== 'weight') return undefined;
  const enc = ctx.weightEncoding(n);
  const count = numel(n.shape);
  return enc.kind === 'codebook' && typeof count === 'number' ? codebookFormatOf(enc, count) : undefined;
}

/** The launch operands binding the payload parts of codebook `weight`, read in format `w`, in binding order. */
export function codebookPartOperands(weight: Node, w: CodebookWeightFormat): WeightPartOperand[] {
  return codebookParts(w).map((part) => ({ kind: 'weight-part', node: weight, part }));
}

/**
 * The codebook B of a plain or fused matmul that the family's kernel reads, with its format, or `undefined` when the
 * family does not take the node: B is no codebook `weight`, is not a 2-D `[N, K]` read with `transB`, or has a format
 * the kernel does not read ({@link codebookMatmulProblem}).
 */
export function codebookMatmulWeight(node: Node, ctx: Pick<LowerContext, 'weightEncoding'>): { weight: Node; format: CodebookWeightFormat } | undefined {
  const mm = node.op === 'fused' ? unfuse(node)[0] : node;
  if (mm.op !== 'matmul') return undefined;
  const [, B] = mm.inputs;
  if (B.rank !== 2 || !mm.attrs.transB) return undefined;
  const format = codebookFormatOfNode(B, ctx);
  if (!format) return undefined;
  const [N, K] = B.shape as [number, number];
  return codebookMatmulProblem(N, K, format) ? undefined : { weight: B, format };
}

/** The spec and launch operands of a node the family takes. */
function codebookSpecOf(node: Node, ctx: LowerContext): { spec: CodebookMatmulSpec; operands: LaunchOperand[] } {
  const { weight, format } = codebookMatmulWeight(node, ctx)!;
  const { spec, operands } = matmulSpecOf(node);
  return {
    spec: { ...spec, expectedM: ctx.expectedSeq, weight: format },
    operands: [operands[0], ...codebookPartOperands(weight, format), ...operands.slice(2)],
  };
}

function takes(node: Node, ctx?: LowerContext): boolean {
  if (!ctx || !codebookMatmulWeight(node, ctx)) return false;
  // the dense family's spec builder decides which fused forms one kernel computes (gate, epilogue operands)
  return acceptsWhenSpecBuilds(matmulSpecOf)(node);
}

function lower(node: Node, ctx: LowerContext): Launch[] {
  const { spec, operands } = codebookSpecOf(node, ctx);
  const v = chooseCodebookMatmulVariant(spec, ctx.target);
  const kernel = v.kind === 'codebook-gemm-subgroup' ? generateCodebookGemmSubgroupKernel(spec, v) : generateCodebookGemvKernel(spec, v);
  return [launchOf(node, kernel, operands)];
}

/**
 * The codebook matmul family. Its fused form is the dense family's (the fusion passes cannot tell a codebook weight
 * from a dense one, and need not: it computes the same forms); the dense family declares the epilogue anchor.
 */
export const codebookMatmulFamily: KernelFamily = {
  name: 'codebook-matmul',
  ops: ['matmul'],
  fusion: { kind: 'matmul', accepts: acceptsWhenSpecBuilds(matmulSpecOf) },
  takes,
  variants: ['codebook-gemv', 'codebook-gemm-subgroup'],
  features: ['shader-f16', 'subgroups'],
  lower,
};
