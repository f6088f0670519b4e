/**
 * Matmul kernel family: `out[b, m, n] = epilogue(sum_k A[b, m, k] * B[b, k, n])` for one (possibly broadcast) batch
 * dim, with optional transposes, f32 or f16 storage (always f32 accumulation), a fused epilogue computed before the
 * store, and the SwiGLU gate (`out[m, n] = act(acc[m, n]) * acc[m, n + N/2]`).
 *
 * Four variants, because the best kernel differs between software rasterizers and real GPUs:
 * - `gemm-subgroup`: no workgroup memory. Each lane of a subgroup loads the A values of one row once and shares them
 *   with the other lanes through `subgroupBroadcast` at constant lane indices; each lane keeps a register-blocked
 *   `subgroupSize x colsPerLane` output tile in named scalars, and every inner loop is unrolled in the generated text.
 *   Fast on Mesa's lavapipe (llvmpipe), where per-lane storage loads dominate and workgroup-memory tiling does not pay.
 * - `gemm-tiled`: the textbook GPU GEMM — A and B tiles staged in workgroup memory with vec4 global loads, a
 *   register-blocked `threadM x threadN` tile per thread. For real GPUs.
 * - `gemv`: for small M (decode). Groups of `lanesPerColumn` lanes split K between them for a block of output
 *   columns (split-K within a workgroup), read W rows with vec4 loads (best with W stored `[N, K]`, i.e. `transB`),
 *   and reduce with `subgroupAdd` or in workgroup memory.
 * - `naive`: one invocation per output element and a plain loop over K; the correctness and benchmark baseline.
 *
 * Every variant handles ragged shapes (M, N, K not multiples of the tile or of 4: loads are clamped or guarded,
 * vec4 paths only where the contiguous dim and the batch strides are multiples of 4), a dynamic M (a dim expression
 * such as `seq`, passed in the params uniform), and grids over the 65535-workgroups-per-dimension limit (the
 * workgroup index is linearized over a 2-D grid).
 *
 * Assumption of the subgroup variants: the device's subgroup size equals `subgroupSize` and subgroups are consecutive
 * ranges of `local_invocation_index` (true on lavapipe, size 8); {@link chooseMatmulVariant} only picks them when the
 * adapter reports a fixed subgroup size.
 * @module
 */
import { InputError } from '../../errors.js';
import type { KernelSource } from '../kernel.js';
import { chooseMatmulVariant, PLAIN_GPU } from '../schedule/matmul.js';
import { makeCtx } from './common.js';
import { genSubgroupGemm } from './gemm-subgroup.js';
import { genTiled } from './gemm-tiled.js';
import { genGemv } from './gemv.js';
import { genNaive } from './naive.js';
import type { MatmulSpec, MatmulVariant } from './spec.js';

export * from './spec.js';
export { generateGeneralMatmulKernel, type GeneralMatmulSpec } from './general.js';

/** The variant `spec` names, or the schedule rules' choice for a plain GPU. */
function resolveVariant(spec: MatmulSpec): MatmulVariant {
  const v = spec.variant;
  if (v === undefined) return chooseMatmulVariant(spec, PLAIN_GPU);
  return typeof v === 'string' ? ({ kind: v } as MatmulVariant) : v;
}

/** WebGPU features a matmul kernel for `spec` needs (`shader-f16` for f16 storage, `subgroups` for subgroup variants): those the generated kernel declares. */
export function matmulRequiredFeatures(spec: MatmulSpec, variant: MatmulVariant = resolveVariant(spec)): string[] {
  return [...(generateMatmulKernel({ ...spec, variant }).features ?? [])];
}


/**
 * Generates the WGSL kernel for `spec` in the variant `spec.variant` (default: the schedule rules' choice for a GPU
 * without subgroups).
 *
 * Bindings: `a`, `b`, the epilogue operands in order, `out`; then the params uniform when M, the batch or a batch
 * stride is a dim expression. Grid: the workgroup index is linear over `[x, y]` (column tiles fastest, then row
 * tiles, then batches).
 * @throws {@link ShapeError} for impossible sizes; {@link InputError} for inconsistent tuning or epilogues.
 */
export function generateMatmulKernel(spec: MatmulSpec): KernelSource {
  const c = makeCtx(spec);
  const v = resolveVariant(spec);
  switch (v.kind) {
    case 'naive': return genNaive(c, v);
    case 'gemm-subgroup': return genSubgroupGemm(c, v);
    case 'gemm-tiled': return genTiled(c, v);
    case 'gemv': return genGemv(c, v);
    default: throw new InputError(`unknown matmul variant ${JSON.stringify((v as { kind: unknown }).kind)}`);
  }
}
