/**
 * Schedule rules of the matmul family: which variant, with which tuning, for a {@link Target} and a shape. Kept apart
 * from the generators (as TVM's dlight keeps `gemv.py` apart from the kernels), measured on the devices named below.
 * @module
 */
import { parseDim } from '../../ir/dim.js';
import { fixedSubgroupSize, hasFeature, type Target } from '../../ir/target.js';
import type { MatmulSpec, MatmulVariant } from '../matmul/spec.js';

/** What {@link chooseMatmulVariant} reads of a {@link Target}. */
export type MatmulScheduleTarget = Pick<Target, 'deviceClass' | 'features' | 'subgroupSize' | 'limits'>;

/** A GPU with no optional features and default limits: the variant a spec without a target gets. */
export const PLAIN_GPU: MatmulScheduleTarget = Object.freeze({ deviceClass: 'gpu', features: [], limits: {} });

/** Largest M for which {@link chooseMatmulVariant} picks `gemv` on a real GPU. */
export const GEMV_MAX_M = 16;

/**
 * Largest M for which {@link chooseMatmulVariant} picks `gemv` on a software rasterizer. Measured on lavapipe
 * (4096x4096 weights stored [N, K]): at M = 4 the subgroup GEMM ran ~2x faster than `gemv` with 4 rows per
 * workgroup, at M = 16 ~4x faster; at M = 1 `gemv` was ahead. Per-lane loads are what costs there, and the GEMM
 * shares each activation value across the subgroup while `gemv` reloads it in every lane group.
 */
export const SOFTWARE_GEMV_MAX_M = 2;

/**
 * Picks a variant and its tuning for `spec` on `target` (M is `spec.M` when static, else `spec.expectedM`).
 *
 * Software rasterizers (lavapipe), from measurements there: `gemv` for M ≤ {@link SOFTWARE_GEMV_MAX_M} (8 lanes per
 * column block reducing with subgroupAdd, or one lane per column block without subgroups); otherwise
 * `gemm-subgroup` when the device has subgroups of one fixed size — 8·rowsPerLane rows per subgroup, with
 * rowsPerLane 1 (M ≤ 8), 2, or 4 for large products (more reuse of every loaded value, at ~2x the compile time) —
 * and `gemm-tiled` without subgroups (2–4x faster than `naive` there). Real GPUs: `gemv` for M ≤ {@link GEMV_MAX_M}
 * (whole-workgroup split-K when N is small, else 32 lanes per column block), otherwise `gemm-tiled` with 64x64 tiles
 * (32x32 when the output is small).
 */
export function chooseMatmulVariant(spec: MatmulSpec, target: MatmulScheduleTarget): MatmulVariant {
  const hasSubgroups = hasFeature(target, 'subgroups');
  const software = target.deviceClass === 'software-gpu';
  const fixedSg = fixedSubgroupSize(target);
  const parsedM = typeof spec.M === 'string' ? parseDim(spec.M) : spec.M;
  const m = typeof parsedM === 'number' ? parsedM : spec.expectedM;
  const nOut = spec.gated ? spec.N / 2 : spec.N;
  const maxInv = target.limits.maxComputeInvocationsPerWorkgroup ?? 256;
  if (software) {
    const sg = fixedSg ?? 8; // lavapipe's subgroups are the SIMD width: 8 lanes with 256-bit vectors
    if (m !== undefined && m <= SOFTWARE_GEMV_MAX_M) {
      const rows = Math.max(1, m);
      return hasSubgroups
        ? { kind: 'gemv', workgroupSize: 64, lanesPerColumn: sg, colsPerGroup: 4, rowsPerBlock: rows, reduction: 'subgroup', subgroupSize: sg }
        : { kind: 'gemv', workgroupSize: 64, lanesPerColumn: 1, colsPerGroup: 4, rowsPerBlock: rows };
    }
    if (hasSubgroups && sg <= 16) {
      const big = (m ?? 0) * nOut >= 512 * 512;
      const rowsPerLane = m !== undefined && m <= sg ? 1 : big ? 4 : 2;
      // enough subgroups to cover N, at most 8 per workgroup
      const subgroupsPerWorkgroup = Math.max(1, Math.min(8, Math.ceil(nOut / (sg * 4))));
      return { kind: 'gemm-subgroup', subgroupSize: sg, rowsPerLane, colsPerLane: 4, subgroupsPerWorkgroup };
    }
    return { kind: 'gemm-tiled', tileM: 32, tileN: 32, tileK: 16, threadM: 2, threadN: 2, unrollTileK: false };
  }
  if (m !== undefined && m <= GEMV_MAX_M) {
    // enough column blocks to fill the GPU? otherwise split K across the whole workgroup
    const wg = Math.min(256, maxInv);
    const lanes = nOut / 4 < 1024 ? wg : Math.min(32, wg);
    const reduction = hasSubgroups && fixedSg !== undefined && lanes === fixedSg ? 'subgroup' : 'workgroup';
    return { kind: 'gemv', workgroupSize: wg, lanesPerColumn: lanes, colsPerGroup: 4, rowsPerBlock: Math.min(Math.max(1, m), 4), reduction, subgroupSize: fixedSg ?? 32 };
  }
  const small = (m ?? 1024) * nOut < 256 * 256;
  return small || maxInv < 256 ? { kind: 'gemm-tiled', tileM: 32, tileN: 32, tileK: 16, threadM: 2, threadN: 2 } : { kind: 'gemm-tiled', tileM: 64, tileN: 64, tileK: 16, threadM: 4, threadN: 4 };
}


/**
 * The variants the tuner may time for `spec` on `target`, besides {@link chooseMatmulVariant}'s pick: neighbours of
 * the rule's tuning in the same regime (GEMV for small M, GEMM otherwise), so a timing table can only move a kernel
 * within what the rules consider sound for the device. The family drops the ones its generators refuse.
 */
export function matmulCandidates(spec: MatmulSpec, target: MatmulScheduleTarget): MatmulVariant[] {
  const pick = chooseMatmulVariant(spec, target);
  const sg = fixedSubgroupSize(target);
  const hasSubgroups = hasFeature(target, 'subgroups') && sg !== undefined;
  const maxInv = target.limits.maxComputeInvocationsPerWorkgroup ?? 256;
  const out: MatmulVariant[] = [];
  if (pick.kind === 'gemv') {
    const lanes = [pick.lanesPerColumn ?? 8, 32].filter((l, i, a) => a.indexOf(l) === i);
    for (const colsPerGroup of [4, 8])
      for (const workgroupSize of [64, 256])
        for (const lanesPerColumn of lanes) {
          if (workgroupSize > maxInv || lanesPerColumn > workgroupSize) continue;
          const reduction = lanesPerColumn === 1 ? undefined : hasSubgroups && lanesPerColumn === sg ? 'subgroup' : 'workgroup';
          out.push({ ...pick, workgroupSize, colsPerGroup, lanesPerColumn, reduction, subgroupSize: sg ?? pick.subgroupSize });
        }
    return out;
  }
  if (pick.kind === 'gemm-subgroup') {
    for (const rowsPerLane of [1, 2, 4]) for (const subgroupsPerWorkgroup of [4, 8]) out.push({ ...pick, rowsPerLane, subgroupsPerWorkgroup });
    out.push({ kind: 'gemm-tiled', tileM: 32, tileN: 32, tileK: 16, threadM: 2, threadN: 2, unrollTileK: false });
    return out;
  }
  if (pick.kind === 'gemm-tiled') {
    const unroll = target.deviceClass === 'software-gpu' ? { unrollTileK: false } : {};
    for (const [tileM, tileN, threadM, threadN] of [[32, 32, 2, 2], [64, 64, 4, 4], [64, 32, 4, 2], [128, 64, 8, 4], [64, 128, 4, 8]] as const)
      if ((tileM / threadM) * (tileN / threadN) <= maxInv) out.push({ kind: 'gemm-tiled', tileM, tileN, tileK: 16, threadM, threadN, ...unroll });
    return out;
  }
  return out;
}
