/**
 * Schedule rules of the attention family: `decode` or `prefill-flash` for a query length, and the decode variant's
 * lanes per head for a device class. Kept apart from the generator (`src/codegen/attention.ts`).
 * @module
 */
import { parseDim } from '../../ir/dim.js';
import type { AttentionVariant } from '../attention.js';
import type { DimLike } from '../kernel.js';

/** `decode` is chosen when the query length is known and at most this. */
export const DECODE_MAX_SEQ = 8;

/**
 * Lanes per query head for the `decode` variant on a device. Real GPUs: 32 (a warp, or half a wave, per head).
 * Software rasterizers run a workgroup's lanes in SIMD batches that are all resumed at every barrier, so idle lanes
 * cost time there: a quarter of the widest head dim, a power of two from 4 to 32. Measured on lavapipe, decode
 * attention per step at ~260 cached tokens: stories260K (D = 8) 2.8–5.1 ms with 32 lanes, 1.1 ms with 4; a model
 * with D = 64 (8 heads x 4 layers) 12–17 ms with 32 lanes, 7–9 ms with 16.
 */
export function decodeRowLanes(headDim: number, valueDim: number, software: boolean): number {
  if (!software) return 32;
  const want = Math.ceil(Math.max(headDim, valueDim) / 4);
  let lanes = 4;
  while (lanes < want && lanes < 32) lanes *= 2;
  return lanes;
}

/**
 * The variant used when the spec does not name one: `decode` when the query length is a number <= {@link
 * DECODE_MAX_SEQ} (or `expectedSeq` is), otherwise `prefill-flash`.
 */
export function chooseAttentionVariant(seq: DimLike, expectedSeq?: number): AttentionVariant['kind'] {
  const s = typeof seq === 'number' ? seq : typeof parseDim(seq) === 'number' ? (parseDim(seq) as number) : expectedSeq;
  return s !== undefined && s <= DECODE_MAX_SEQ ? 'decode' : 'prefill-flash';
}

