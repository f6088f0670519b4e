/**
 * Schedule rules of the dequantizing matmul family: the `dequant-gemv` tuning for a {@link Target} and a shape.
 * @module
 */
import { parseDim } from '../../ir/dim.js';
import { fixedSubgroupSize, hasFeature, type Target } from '../../ir/target.js';
import type { DequantGemmSubgroupVariant } from '../matmul/dequant-gemm.js';
import { dequantByWord, type DequantGemvVariant, type DequantMatmulSpec } from '../matmul/dequant-gemv.js';
import { SOFTWARE_GEMV_MAX_M } from './matmul.js';

/** A variant of the dequantizing matmul family, with its tuning. */
export type DequantMatmulVariant = DequantGemvVariant | DequantGemmSubgroupVariant;

/**
 * Picks the kernel for `spec` on `target`: on software rasterizers with one fixed subgroup size, M above
 * {@link SOFTWARE_GEMV_MAX_M} and B readable by whole words, `dequant-gemm-subgroup` (each dequantized word serves
 * `subgroupSize·rowsPerLane` rows; rowsPerLane 2 when M > 8); otherwise `dequant-gemv`
 * ({@link chooseDequantGemvVariant}).
 */
export function chooseDequantMatmulVariant(spec: DequantMatmulSpec, target: Pick<Target, 'deviceClass' | 'features' | 'subgroupSize' | 'limits'>): DequantMatmulVariant {
  const gemm = softwareGemmTuning(spec, target, dequantByWord(spec.K, spec.weight));
  return gemm ? { kind: 'dequant-gemm-subgroup', ...gemm } : chooseDequantGemvVariant(spec, target);
}

/**
 * The subgroup GEMM tuning of a matmul over a packed weight (quantized or codebook), or `undefined` when a GEMV
 * serves it better: only on software rasterizers with one fixed subgroup size of at most 16, M above
 * {@link SOFTWARE_GEMV_MAX_M}, and B readable by whole words (`byWord`).
 */
export function softwareGemmTuning(
  spec: Pick<DequantMatmulSpec, 'M' | 'expectedM' | 'N' | 'gated'>,
  target: Pick<Target, 'deviceClass' | 'features' | 'subgroupSize'>,
  byWord: boolean,
): Omit<DequantGemmSubgroupVariant, 'kind'> | undefined {
  const parsedM = typeof spec.M === 'string' ? parseDim(spec.M) : spec.M;
  const m = typeof parsedM === 'number' ? parsedM : spec.expectedM ?? 1;
  const sg = fixedSubgroupSize(target);
  if (!(target.deviceClass === 'software-gpu' && hasFeature(target, 'subgroups') && sg !== undefined && sg <= 16 && m > SOFTWARE_GEMV_MAX_M && byWord)) return undefined;
  const nOut = spec.gated ? spec.N / 2 : spec.N;
  return { subgroupSize: sg, rowsPerLane: m > sg ? 2 : 1, colsPerLane: 4, subgroupsPerWorkgroup: Math.max(1, Math.min(8, Math.ceil(nOut / (sg * 4)))) };
}

/**
 * Picks the `dequant-gemv` tuning for `spec` on `target` (M is `spec.M` when static, else `spec.expectedM`): one row
 * per workgroup for decode (M = 1), four otherwise (each weight block read once per four rows). Software rasterizers:
 * lane groups of the fixed subgroup size reducing with `subgroupAdd` when the device has subgroups, else one lane
 * per column block. Real GPUs: 32 lanes per column block, reducing with `subgroupAdd` when subgroups are a fixed 32
 * lanes, else in workgroup memory.
 */
export function chooseDequantGemvVariant(spec: Pick<DequantMatmulSpec, 'M' | 'expectedM'>, target: Pick<Target, 'deviceClass' | 'features' | 'subgroupSize' | 'limits'>): DequantGemvVariant {
  const parsedM = typeof spec.M === 'string' ? parseDim(spec.M) : spec.M;
  const m = typeof parsedM === 'number' ? parsedM : spec.expectedM ?? 1;
  const rowsPerBlock = m <= 1 ? 1 : 4;
  const sg = fixedSubgroupSize(target);
  const subgroups = hasFeature(target, 'subgroups') && sg !== undefined;
  if (target.deviceClass === 'software-gpu') {
    return subgroups && sg <= 64
      ? { kind: 'dequant-gemv', workgroupSize: 64, lanesPerColumn: sg, colsPerGroup: 4, rowsPerBlock, reduction: 'subgroup', subgroupSize: sg }
      : { kind: 'dequant-gemv', workgroupSize: 64, lanesPerColumn: 1, colsPerGroup: 4, rowsPerBlock };
  }
  const wg = Math.min(256, target.limits.maxComputeInvocationsPerWorkgroup ?? 256);
  const lanes = Math.min(32, wg);
  return { kind: 'dequant-gemv', workgroupSize: wg, lanesPerColumn: lanes, colsPerGroup: 4, rowsPerBlock, reduction: subgroups && sg === lanes ? 'subgroup' : 'workgroup', subgroupSize: sg ?? 32 };
}
