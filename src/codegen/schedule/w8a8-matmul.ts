/**
 * Schedule rules of the W8A8 matmul family: the `w8a8-gemv` tuning for a {@link Target} and a shape. The packed
 * 4×8 integer dot product is used where the target's WGSL has it; the kernel otherwise unpacks the bytes.
 * @module
 */
import { hasLanguageFeature, type Target } from '../../ir/target.js';
import { PACKED_DOT_FEATURE, type W8A8GemvVariant, type W8A8MatmulSpec } from '../matmul/w8a8-gemv.js';

/** What the rules read of a target. */
export type W8A8ScheduleTarget = Pick<Target, 'limits' | 'wgslLanguageFeatures'>;

/** Columns per lane group: each workgroup quantizes its row of A once for (64 / 8) · 4 = 32 columns. */
export const COLS_PER_THREAD = 4;

/**
 * Picks the `w8a8-gemv` tuning: 64 invocations (fewer where the device allows fewer), 8 lanes per column for rows of
 * at least 256 values (4 for shorter ones, whose few words would leave lanes idle), {@link COLS_PER_THREAD} columns
 * per lane group, and
 * `dot4I8Packed` where the target's WGSL has {@link PACKED_DOT_FEATURE}.
 */
export function chooseW8A8Variant(spec: Pick<W8A8MatmulSpec, 'K'>, target: W8A8ScheduleTarget): W8A8GemvVariant {
  const workgroupSize = Math.min(64, target.limits.maxComputeInvocationsPerWorkgroup ?? 256);
  return { kind: 'w8a8-gemv', workgroupSize, lanesPerColumn: Math.min(workgroupSize, spec.K >= 256 ? 8 : 4), colsPerThread: COLS_PER_THREAD, packedDot: hasLanguageFeature(target, PACKED_DOT_FEATURE) };
}

/** The variants the tuner may time besides {@link chooseW8A8Variant}'s pick: 4, 8 or 16 lanes, 2, 4 or 8 columns per lane group, 64 or 128 invocations. */
export function w8a8Candidates(spec: Pick<W8A8MatmulSpec, 'K'>, target: W8A8ScheduleTarget): W8A8GemvVariant[] {
  const pick = chooseW8A8Variant(spec, target);
  const maxInv = target.limits.maxComputeInvocationsPerWorkgroup ?? 256;
  const out: W8A8GemvVariant[] = [];
  for (const workgroupSize of [64, 128]) for (const lanesPerColumn of [4, 8, 16]) for (const colsPerThread of [2, 4, 8]) if (workgroupSize <= maxInv) out.push({ ...pick, workgroupSize, lanesPerColumn, colsPerThread });
  return out;
}
