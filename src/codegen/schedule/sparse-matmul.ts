/**
 * Schedule rules of the sparse matmul families: the `sparse-nm-gemv` tuning for a {@link Target} and a shape, a
 * lane-group GEMV ({@link laneGemvTuning}).
 * @module
 */
import type { SparseNMGemvVariant, SparseNMMatmulSpec } from '../matmul/sparse-nm-gemv.js';
import { laneGemvTuning, type LaneGemvScheduleTarget } from './lane-gemv.js';

/** Picks the `sparse-nm-gemv` tuning for `spec` on `target`: the lane-group GEMV rules. */
export function chooseSparseNMVariant(spec: SparseNMMatmulSpec, target: LaneGemvScheduleTarget): SparseNMGemvVariant {
  return { kind: 'sparse-nm-gemv', ...laneGemvTuning(spec, target) };
}
