/**
 * Schedule rules shared by the lane-group GEMV kernels over encoded weights (`dequant-gemv`, `sparse-nm-gemv`,
 * `block-sparse-gemv`): how many lanes split K per column block, how they reduce, how many rows share a weight read.
 * @module
 */
import { parseDim } from '../../ir/dim.js';
import { fixedSubgroupSize, hasFeature, type Target } from '../../ir/target.js';

/** What the lane-group GEMV rules read of a {@link Target}. */
export type LaneGemvScheduleTarget = Pick<Target, 'deviceClass' | 'features' | 'subgroupSize' | 'limits'>;

/** The tuning every lane-group GEMV kernel takes (each kernel's variant adds its kind and its own knobs). */
export interface LaneGemvTuning {
  /** Invocations per workgroup. */
  readonly workgroupSize: number;
  /** Lanes splitting K for one block of columns. */
  readonly lanesPerColumn: number;
  /** Output columns per lane group. */
  readonly colsPerGroup: number;
  /** Output rows per workgroup. */
  readonly rowsPerBlock: number;
  /** How the lanes of a group combine their partial sums (absent with one lane). */
  readonly reduction?: 'subgroup' | 'workgroup';
  /** The device's subgroup size, for the subgroup reduction. */
  readonly subgroupSize?: number;
}

/** M of a spec: its static value, else the expected M (the plan's token count), else 1. */
export function expectedRows(spec: { readonly M: number | string; readonly expectedM?: number }): number {
  const parsedM = typeof spec.M === 'string' ? parseDim(spec.M) : spec.M;
  return typeof parsedM === 'number' ? parsedM : spec.expectedM ?? 1;
}

/**
 * The lane-group GEMV tuning for `spec` on `target`: one row per workgroup for decode (M = 1), four otherwise (each
 * weight read serves four rows). Software rasterizers: lane groups of the fixed subgroup size reducing with
 * `subgroupAdd` when the device has subgroups, else one lane per column block. Real GPUs: 32 lanes per column block,
 * reducing with `subgroupAdd` when subgroups are a fixed 32 lanes, else in workgroup memory.
 */
export function laneGemvTuning(spec: { readonly M: number | string; readonly expectedM?: number }, target: LaneGemvScheduleTarget): LaneGemvTuning {
  const rowsPerBlock = expectedRows(spec) <= 1 ? 1 : 4;
  const sg = fixedSubgroupSize(target);
  const subgroups = hasFeature(target, 'subgroups') && sg !== undefined;
  if (target.deviceClass === 'software-gpu') {
    return subgroups && sg <= 64
      ? { workgroupSize: 64, lanesPerColumn: sg, colsPerGroup: 4, rowsPerBlock, reduction: 'subgroup', subgroupSize: sg }
      : { workgroupSize: 64, lanesPerColumn: 1, colsPerGroup: 4, rowsPerBlock };
  }
  const wg = Math.min(256, target.limits.maxComputeInvocationsPerWorkgroup ?? 256);
  const lanes = Math.min(32, wg);
  return { workgroupSize: wg, lanesPerColumn: lanes, colsPerGroup: 4, rowsPerBlock, reduction: subgroups && sg === lanes ? 'subgroup' : 'workgroup', subgroupSize: sg ?? 32 };
}
