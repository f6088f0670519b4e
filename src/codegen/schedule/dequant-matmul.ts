/**
 * Schedule rules of the dequantizing matmul family: the `dequant-gemv` tuning for a {@link Target} and a shape.
 * @module
 */
import { fixedSubgroupSize, hasFeature } from '../../ir/target.js';
import type { DequantGemmSubgroupVariant } from '../matmul/dequant-gemm.js';
import { dequantByWord, type DequantGemvVariant, type DequantMatmulSpec } from '../matmul/dequant-gemv.js';
import { sweepFits, type DequantGemvSweepVariant } from '../matmul/dequant-gemv-sweep.js';
import { expectedRows, laneGemvTuning, type LaneGemvScheduleTarget } from './lane-gemv.js';
import { SOFTWARE_GEMV_MAX_M } from './matmul.js';

/** A variant of the dequantizing matmul family, with its tuning. */
export type DequantMatmulVariant = DequantGemvVariant | DequantGemvSweepVariant | DequantGemmSubgroupVariant;

/**
 * Picks the kernel for `spec` on `target`: on software rasterizers with one fixed subgroup size, M above
 * {@link SOFTWARE_GEMV_MAX_M} and B readable by whole words, `dequant-gemm-subgroup` (each dequantized word serves
 * `subgroupSize·rowsPerLane` rows; rowsPerLane 2 when M > 8); for M = 1 there, `dequant-gemv-sweep`
 * ({@link softwareSweepTuning}); otherwise `dequant-gemv` ({@link chooseDequantGemvVariant}).
 */
export function chooseDequantMatmulVariant(spec: DequantMatmulSpec, target: LaneGemvScheduleTarget): DequantMatmulVariant {
  const gemm = softwareGemmTuning(spec, target, dequantByWord(spec.K, spec.weight));
  if (gemm) return { kind: 'dequant-gemm-subgroup', ...gemm };
  const sweep = softwareSweepTuning(spec, target);
  return sweep ?? chooseDequantGemvVariant(spec, target);
}

/** Output columns a `dequant-gemv-sweep` workgroup sweeps, at most: measured on lavapipe, 32 beat 8 and 16 (fewer A loads per column) and matched 64–128. */
export const SWEEP_COLS = 32;

/**
 * The `dequant-gemv-sweep` tuning for decode on a software rasterizer, or `undefined` where it does not apply: the
 * device has subgroups of one fixed size of at most 16, M is 1, and the kernel fits ({@link sweepFits}). Columns per
 * workgroup: {@link SWEEP_COLS}, fewer when that would leave fewer than 16 workgroups.
 */
export function softwareSweepTuning(spec: DequantMatmulSpec, target: Pick<LaneGemvScheduleTarget, 'deviceClass' | 'features' | 'subgroupSize'>): DequantGemvSweepVariant | undefined {
  const sg = fixedSubgroupSize(target);
  if (!(target.deviceClass === 'software-gpu' && hasFeature(target, 'subgroups') && sg !== undefined && sg <= 16)) return undefined;
  if (expectedRows(spec) !== 1 || !sweepFits(spec, sg)) return undefined;
  const nOut = spec.gated ? spec.N / 2 : spec.N;
  return { kind: 'dequant-gemv-sweep', subgroupSize: sg, colsPerWorkgroup: Math.max(1, Math.min(SWEEP_COLS, Math.floor(nOut / 16))) };
}

/**
 * The subgroup GEMM tuning of a matmul over a packed weight (quantized or codebook), or `undefined` when a GEMV
 * serves it better: only on software rasterizers with one fixed subgroup size of at most 16, M above
 * {@link SOFTWARE_GEMV_MAX_M}, and B readable by whole words (`byWord`).
 */
export function softwareGemmTuning(
  spec: Pick<DequantMatmulSpec, 'M' | 'expectedM' | 'N' | 'gated'>,
  target: Pick<LaneGemvScheduleTarget, 'deviceClass' | 'features' | 'subgroupSize'>,
  byWord: boolean,
): Omit<DequantGemmSubgroupVariant, 'kind'> | undefined {
  const m = expectedRows(spec);
  const sg = fixedSubgroupSize(target);
  if (!(target.deviceClass === 'software-gpu' && hasFeature(target, 'subgroups') && sg !== undefined && sg <= 16 && m > SOFTWARE_GEMV_MAX_M && byWord)) return undefined;
  const nOut = spec.gated ? spec.N / 2 : spec.N;
  return { subgroupSize: sg, rowsPerLane: m > sg ? 2 : 1, colsPerLane: 4, subgroupsPerWorkgroup: Math.max(1, Math.min(8, Math.ceil(nOut / (sg * 4)))) };
}

/** Picks the `dequant-gemv` tuning for `spec` on `target`: the lane-group GEMV rules ({@link laneGemvTuning}). */
export function chooseDequantGemvVariant(spec: Pick<DequantMatmulSpec, 'M' | 'expectedM'>, target: LaneGemvScheduleTarget): DequantGemvVariant {
  return { kind: 'dequant-gemv', ...laneGemvTuning(spec, target) };
}

/**
 * The variants the tuner may time for `spec` on `target`, besides {@link chooseDequantMatmulVariant}'s pick:
 * neighbours in the same regime (decode sweeps and lane-group GEMVs for M = 1, subgroup GEMMs and 4-row GEMVs for
 * prefill). The family drops the ones its generators refuse.
 */
export function dequantMatmulCandidates(spec: DequantMatmulSpec, target: LaneGemvScheduleTarget): DequantMatmulVariant[] {
  const pick = chooseDequantMatmulVariant(spec, target);
  const lane = laneGemvTuning(spec, target);
  const maxInv = target.limits.maxComputeInvocationsPerWorkgroup ?? 256;
  const out: DequantMatmulVariant[] = [];
  const gemvs = (): void => {
    for (const workgroupSize of [64, 256]) for (const colsPerGroup of [4, 8])
      if (workgroupSize <= maxInv && lane.lanesPerColumn <= workgroupSize) out.push({ kind: 'dequant-gemv', ...lane, workgroupSize, colsPerGroup });
  };
  if (pick.kind === 'dequant-gemv-sweep') {
    for (const colsPerWorkgroup of [8, 16, 32, 64]) out.push({ ...pick, colsPerWorkgroup });
    gemvs();
  } else if (pick.kind === 'dequant-gemm-subgroup') {
    for (const rowsPerLane of [1, 2]) for (const subgroupsPerWorkgroup of [4, 8]) out.push({ ...pick, rowsPerLane, subgroupsPerWorkgroup });
    gemvs();
  } else gemvs();
  return out;
}
