/**
 * Schedule rules of the sparse matmul families: the `sparse-nm-gemv`, `sparse-nm-gemv-sweep` and `block-sparse-gemv`
 * tunings for a {@link Target} and a shape. The GEMVs are lane-group GEMVs ({@link laneGemvTuning}); block-sparse adds
 * a rule for how many of a block row's rows one lane group computes; decode over quantized N:M values on a software
 * rasterizer sweeps columns as the dequantizing family does.
 * @module
 */
import { fixedSubgroupSize, hasFeature } from '../../ir/target.js';
import type { BlockSparseGemvVariant, BlockSparseMatmulSpec } from '../matmul/block-sparse-gemv.js';
import type { SparseNMGemvVariant, SparseNMMatmulSpec } from '../matmul/sparse-nm-gemv.js';
import { sparseNMSweepUnitWords, type SparseNMGemvSweepVariant } from '../matmul/sparse-nm-gemv-sweep.js';
import { SWEEP_COLS } from './dequant-matmul.js';
import { expectedRows, laneGemvTuning, type LaneGemvScheduleTarget } from './lane-gemv.js';

/**
 * Picks the N:M-sparse kernel for `spec` on `target`: `sparse-nm-gemv-sweep` for decode (M = 1) on a software
 * rasterizer with one fixed subgroup size of at most 16, where the sweep computes the weight
 * ({@link sparseNMSweepUnitWords}; {@link SWEEP_COLS} columns per workgroup, fewer when that would leave fewer than
 * 16 workgroups), else `sparse-nm-gemv` ({@link chooseSparseNMVariant}).
 */
export function chooseSparseNMMatmulVariant(spec: SparseNMMatmulSpec, target: LaneGemvScheduleTarget): SparseNMGemvVariant | SparseNMGemvSweepVariant {
  const sg = fixedSubgroupSize(target);
  if (target.deviceClass === 'software-gpu' && hasFeature(target, 'subgroups') && sg !== undefined && sg <= 16 && expectedRows(spec) === 1 && sparseNMSweepUnitWords(spec, sg)) {
    const nOut = spec.gated ? spec.N / 2 : spec.N;
    return { kind: 'sparse-nm-gemv-sweep', subgroupSize: sg, colsPerWorkgroup: Math.max(1, Math.min(SWEEP_COLS, Math.floor(nOut / 16))) };
  }
  return chooseSparseNMVariant(spec, target);
}

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
