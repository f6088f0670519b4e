/**
 * Schedule rules of the sparse matmul families: the `sparse-nm-gemv` and `block-sparse-gemv` tunings for a
 * {@link Target} and a shape. Both kernels are lane-group GEMVs ({@link laneGemvTuning}); block-sparse adds a rule
 * for how many of a block row's rows one lane group computes.
 * @module
 */
import type { BlockSparseGemvVariant, BlockSparseMatmulSpec } from '../matmul/block-sparse-gemv.js';
import type { SparseNMGemvVariant, SparseNMMatmulSpec } from '../matmul/sparse-nm-gemv.js';
import { laneGemvTuning, type LaneGemvScheduleTarget } from './lane-gemv.js';

/** Picks the `sparse-nm-gemv` tuning for `spec` on `target`: the lane-group GEMV rules. */
export function chooseSparseNMVariant(spec: SparseNMMatmulSpec, target: LaneGemvScheduleTarget): SparseNMGemvVariant {
  return { kind: 'sparse-nm-gemv', ...laneGemvTuning(spec, target) };
}

/**
 * Picks the `block-sparse-gemv` tuning for `spec` on `target`: the lane-group GEMV rules, with as many columns per
 * lane group (4, 2 or 1) as keep a group's columns inside one block row — the columns must divide the block's rows,
 * and, for a gated matmul, the output columns (so that the up half's columns share a block row too).
 */
export function chooseBlockSparseVariant(spec: BlockSparseMatmulSpec, target: LaneGemvScheduleTarget): BlockSparseGemvVariant {
  const nOut = spec.gated ? spec.N / 2 : spec.N;
  const cols = [4, 2, 1].find((c) => spec.weight.blockRows % c === 0 && (!spec.gated || nOut % c === 0))!;
  return { kind: 'block-sparse-gemv', ...laneGemvTuning(spec, target), colsPerGroup: cols };
}
