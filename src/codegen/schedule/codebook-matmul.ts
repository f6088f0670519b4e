/**
 * Schedule rules of the codebook matmul family: the `codebook-gemv` tuning for a {@link Target} and a shape. The
 * kernel has `dequant-gemv`'s structure, so it takes that kernel's tuning rules ({@link chooseDequantGemvVariant}).
 * @module
 */
import type { Target } from '../../ir/target.js';
import type { CodebookGemvVariant, CodebookMatmulSpec } from '../matmul/codebook-gemv.js';
import { chooseDequantGemvVariant } from './dequant-matmul.js';

/** A variant of the codebook matmul family, with its tuning. */
export type CodebookMatmulVariant = CodebookGemvVariant;

/**
 * Picks the kernel for `spec` on `target`: `codebook-gemv`, tuned as `dequant-gemv` is for the same M and target
 * (one row per workgroup for decode, four otherwise; subgroup, workgroup-memory or no lane reduction).
 */
export function chooseCodebookMatmulVariant(spec: CodebookMatmulSpec, target: Pick<Target, 'deviceClass' | 'features' | 'subgroupSize' | 'limits'>): CodebookMatmulVariant {
  return { ...chooseDequantGemvVariant(spec, target), kind: 'codebook-gemv' };
}
