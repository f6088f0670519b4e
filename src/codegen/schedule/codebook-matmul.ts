/**
 * Schedule rules of the codebook matmul family: the kernel and its tuning for a {@link Target} and a shape. The
 * kernels have the dequantizing ones' structures, so they take those kernels' tuning rules
 * ({@link softwareGemmTuning}, {@link chooseDequantGemvVariant}).
 * @module
 */
import type { Target } from '../../ir/target.js';
import type { CodebookGemmSubgroupVariant } from '../matmul/codebook-gemm.js';
import { codebookByWord, type CodebookGemvVariant, type CodebookMatmulSpec } from '../matmul/codebook-gemv.js';
import { chooseDequantGemvVariant, softwareGemmTuning } from './dequant-matmul.js';

/** A variant of the codebook matmul family, with its tuning. */
export type CodebookMatmulVariant = CodebookGemvVariant | CodebookGemmSubgroupVariant;

/**
 * Picks the kernel for `spec` on `target`: `codebook-gemm-subgroup` where `dequant-gemm-subgroup` would be picked
 * (software rasterizers with one fixed subgroup size, prefill, B readable by whole words), else `codebook-gemv`, tuned
 * as `dequant-gemv` is for the same M and target (one row per workgroup for decode, four otherwise; subgroup,
 * workgroup-memory or no lane reduction).
 */
export function chooseCodebookMatmulVariant(spec: CodebookMatmulSpec, target: Pick<Target, 'deviceClass' | 'features' | 'subgroupSize' | 'limits'>): CodebookMatmulVariant {
  const gemm = softwareGemmTuning(spec, target, codebookByWord(spec.K, spec.weight));
  return gemm ? { kind: 'codebook-gemm-subgroup', ...gemm } : { ...chooseDequantGemvVariant(spec, target), kind: 'codebook-gemv' };
}
