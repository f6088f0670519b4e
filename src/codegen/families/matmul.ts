/**
 * The matmul family as the compiler sees it: a plain `matmul`, or a `fused {kind: 'matmul'}` whose program is the
 * matmul, optionally the SwiGLU/GeGLU gate (`act(slice(mm, 0:H)) * slice(mm, H:2H)`), then an elementwise epilogue
 * over the output. The tuned variants (`src/codegen/matmul/`) take static N and K > 0 and float data; the general
 * kernel takes the rest unfused. The variant comes from the schedule rules (`src/codegen/schedule/matmul.ts`).
 * @module
 */
import { attrsOf, isOp } from '../../ir/attrs.js';
import { UnsupportedOpError } from '../../errors.js';
import { dimMul, dimProduct, numel, type Dim } from '../../ir/dim.js';
import type { Node } from '../../ir/node.js';
import { printNode } from '../../ir/printer.js';
import type { KernelFamily, Launch, LowerContext } from '../family.js';
import { generateGeneralMatmulKernel, generateMatmulKernel, type MatmulActivation, type MatmulEpilogueOperand, type MatmulSpec } from '../matmul/index.js';
import { chooseMatmulVariant, matmulCandidates } from '../schedule/matmul.js';
import { chooseScheduledVariant, kernelSignature } from '../schedule/tuning.js';
import type { KernelSource } from '../kernel.js';
import type { MatmulVariant, MatmulVariantKind } from '../matmul/spec.js';
import { epilogueExpr, pointwiseEpilogue } from './epilogue.js';
import { acceptsWhenSpecBuilds, dimText, floatStorage, generatesFor, launchOf, unfuse } from './common.js';

/** How an epilogue operand of shape `s` maps onto an output `[..., M, N]`. */
function broadcastKind(s: readonly Dim[], out: readonly Dim[]): MatmulEpilogueOperand['broadcast'] | undefined {
  if (numel(s) === 1) return 'scalar';
  const r = out.length;
  const N = out[r - 1];
  const M = out[r - 2];
  const lead = s.slice(0, -1);
  if (s[s.length - 1] === N && lead.every((d) => d === 1)) return 'row';
  if (s.length === out.length && s.every((d, i) => d === out[i])) return 'full';
  if (s[s.length - 1] === 1 && s[s.length - 2] === M && s.slice(0, -2).every((d) => d === 1)) return 'col';
  return undefined;
}

const GATE_ACTIVATIONS: Readonly<Record<string, MatmulActivation>> = { silu: 'silu', relu: 'relu', sigmoid: 'sigmoid' };

/** Whether a plain matmul needs {@link generateGeneralMatmulKernel}: a dynamic N or K, K = 0, or integer data. */
function needsGeneralMatmul(mm: Node): boolean {
  const [A, B] = mm.inputs;
  const { transA, transB } = attrsOf(mm, 'matmul');
  const K = transA ? A.shape[A.rank - 2] : A.shape[A.rank - 1];
  const N = transB ? B.shape[B.rank - 2] : B.shape[B.rank - 1];
  return typeof N !== 'number' || typeof K !== 'number' || K === 0 || mm.dtype === 'i32';
}

/**
 * The tuned-kernel spec (without a variant) and operand nodes of a plain or fused matmul. Throws
 * {@link UnsupportedOpError} for a form no tuned kernel computes.
 */
export function matmulSpecOf(node: Node): { spec: MatmulSpec; operands: Node[] } {
  const steps = node.op === 'fused' ? unfuse(node) : [node];
  const mm = steps[0];
  if (mm.op !== 'matmul') throw new UnsupportedOpError([mm.op], `a matmul kernel cannot start with ${printNode(mm)}`);
  const [A, B] = mm.inputs;
  const { transA, transB } = attrsOf(mm, 'matmul');
  const ra = A.shape.length;
  const rb = B.shape.length;
  const M = transA ? A.shape[ra - 1] : A.shape[ra - 2];
  const K = transA ? A.shape[ra - 2] : A.shape[ra - 1];
  const N = transB ? B.shape[rb - 2] : B.shape[rb - 1];
  if (typeof N !== 'number' || typeof K !== 'number' || needsGeneralMatmul(mm)) throw new UnsupportedOpError(['matmul'], `fused matmul kernels need static N and K > 0 and float data: ${printNode(mm)}`);
  const outBatch = mm.shape.slice(0, -2);
  const batch = dimProduct(outBatch);
  const strideOf = (x: Node, mk: Dim): number | string => {
    const b = x.shape.slice(0, -2);
    if (numel(b) === 1) return 0;
    if (b.length === outBatch.length && b.every((d, i) => d === outBatch[i])) return dimText(mk);
    throw new UnsupportedOpError(['matmul'], `matmul kernels broadcast a whole operand's batch or none of it: ${printNode(mm)}`);
  };
  const spec: { -readonly [K in keyof MatmulSpec]: MatmulSpec[K] } = {
    M: dimText(M),
    N,
    K,
    batch: dimText(batch),
    batchStrides: { a: strideOf(A, dimProduct([M, K])), b: strideOf(B, K * N) },
    transA,
    transB,
    dtypes: { a: floatStorage(A), b: floatStorage(B), out: floatStorage(node) },
    nodes: [printNode(node)],
  };
  const operands: Node[] = [A, B];
  let value: Node = mm;
  let rest = steps.slice(1);
  // SwiGLU / GeGLU: act(slice(mm, 0:H)) * slice(mm, H:2H)
  if (rest.length >= 4) {
    const [s0, act, s1, mul] = rest;
    const half = N / 2;
    const isSlice = (s: Node, start: number): boolean =>
      isOp(s, 'slice') && s.inputs[0] === mm && s.attrs.axes.length === 1 && s.attrs.axes[0] === mm.rank - 1 && s.attrs.starts[0] === start && s.attrs.ends[0] === start + half;
    const actName = isOp(act, 'gelu') ? (act.attrs.approximate === 'tanh' ? 'gelu_tanh' : 'gelu') : GATE_ACTIVATIONS[act.op];
    if (isSlice(s0, 0) && act.inputs[0] === s0 && actName && isSlice(s1, half) && mul.op === 'mul' && new Set(mul.inputs).has(act) && new Set(mul.inputs).has(s1)) {
      spec.gated = { activation: actName as MatmulActivation };
      value = mul;
      rest = rest.slice(4);
    }
  }
  if (rest.length) {
    const ep = pointwiseEpilogue('matmul', value, rest, broadcastKind);
    spec.epilogue = {
      operands: ep.operands.map((x, i) => ({ name: `ep_${i}`, dtype: x.dtype as 'f32' | 'f16', broadcast: ep.broadcasts[i] })),
      expr: (acc, load) => epilogueExpr(ep.body, acc, load),
      helpers: ep.helpers,
    };
    operands.push(...ep.operands);
  }
  return { spec, operands };
}

function generalMatmulLaunch(mm: Node): Launch {
  const [A, B] = mm.inputs;
  if (mm.dtype !== 'i32' && mm.dtype !== 'f32' && mm.dtype !== 'f16') throw new UnsupportedOpError(['matmul'], `no WebGPU matmul kernel for ${mm.dtype} data: ${printNode(mm)}`);
  const { transA, transB } = attrsOf(mm, 'matmul');
  const M = mm.shape[mm.rank - 2];
  const N = mm.shape[mm.rank - 1];
  const K = transA ? A.shape[A.rank - 2] : A.shape[A.rank - 1];
  // legalization left each operand's batch either whole or broadcast (stride 0)
  const stride = (x: Node, rows: Dim, cols: Dim): number | string => (numel(x.shape.slice(0, -2)) === 1 ? 0 : dimText(dimMul(rows, cols)));
  const k = generateGeneralMatmulKernel({
    M: dimText(M),
    N: dimText(N),
    K: dimText(K),
    batch: dimText(dimProduct(mm.shape.slice(0, -2))),
    batchStrides: { a: stride(A, M, K), b: stride(B, K, N) },
    transA,
    transB,
    dtype: mm.dtype,
    nodes: [printNode(mm)],
  });
  return launchOf(mm, k, [A, B]);
}

function lowerMatmul(node: Node, ctx: LowerContext): Launch[] {
  if (node.op === 'matmul' && needsGeneralMatmul(node)) return [generalMatmulLaunch(node)];
  const { spec, operands } = matmulSpecOf(node);
  const planned = { ...spec, expectedM: ctx.expectedSeq };
  const generate = (variant: MatmulVariant | MatmulVariantKind): KernelSource => generateMatmulKernel({ ...planned, variant });
  if (ctx.variants?.matmul) return [launchOf(node, generate(ctx.variants.matmul), operands)];
  const heuristic = chooseMatmulVariant(planned, ctx.target);
  const candidates = (): MatmulVariant[] => matmulCandidates(planned, ctx.target).filter((v) => generatesFor(() => generate(v)));
  const { variant, schedule } = chooseScheduledVariant(kernelSignature('matmul', planned), heuristic, candidates, ctx.tuning);
  return [launchOf(node, { ...generate(variant), schedule }, operands)];
}

/** The matmul family: GEMM/GEMV with fused epilogues and the gate, and the general kernel. */
export const matmulFamily: KernelFamily = {
  name: 'matmul',
  ops: ['matmul'],
  fusion: {
    kind: 'matmul',
    epilogueAnchor: true,
    accepts: acceptsWhenSpecBuilds(matmulSpecOf),
  },
  variants: ['gemv', 'gemm-subgroup', 'gemm-tiled', 'naive', 'general'],
  features: ['shader-f16', 'subgroups'],
  lower: lowerMatmul,
};
