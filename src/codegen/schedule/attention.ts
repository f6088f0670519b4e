/**
 * Schedule rules of the attention family: `decode` or `prefill-flash` for a query length, and the decode variant's
 * lanes per head for a device class, and whether decode over a paged ragged batch splits the keys (`split-kv`). Kept
 * apart from the generator (`src/codegen/attention.ts`).
 * @module
 */
import { parseDim } from '../../ir/dim.js';
import type { AttentionVariant, SubgroupDecodeAttentionVariant, SplitKvAttentionVariant } from '../attention.js';
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


/** Fewest keys a split of the `split-kv` variant holds (its fixed split size): fewer make the merge cost more than it saves. */
export const SPLIT_KV_MIN_KEYS = 256;

/** Contexts of at least this many keys (the plan's longest) are long enough for `split-kv`. */
export const SPLIT_KV_MIN_CONTEXT = 1024;

/**
 * Workgroups a discrete GPU runs at once, roughly (some 30–130 compute units, several workgroups each): decode
 * attention launching fewer leaves the GPU partly idle while each workgroup walks the whole context.
 */
export const GPU_RESIDENT_WORKGROUPS = 256;

/** Most splits a `split-kv` attention has (the last split takes the rest of a longer context). */
export const SPLIT_KV_MAX_SPLITS = 64;

/** What the split-KV rule reads. */
export interface SplitKvFacts {
  /** A software rasterizer (lavapipe: a few CPU cores, already filled by rows x heads workgroups). */
  readonly software: boolean;
  /** Query rows the plan's kernels are chosen for (`expectedSeq`). */
  readonly rows: number;
  /** Workgroups per row of the single-pass `decode` layout (KV heads x head chunks). */
  readonly workgroupsPerRow: number;
  /** The longest context (keys) a row attends to, when known. */
  readonly maxKvLen?: number;
}

/** The `split-kv` variant for a context of `maxKvLen` keys: fixed splits of {@link SPLIT_KV_MIN_KEYS}, enough to cover it. */
export function splitKvVariant(maxKvLen: number): SplitKvAttentionVariant {
  return { kind: 'split-kv', splitKeys: SPLIT_KV_MIN_KEYS, splits: Math.max(1, Math.min(SPLIT_KV_MAX_SPLITS, Math.ceil(maxKvLen / SPLIT_KV_MIN_KEYS))) };
}

/**
 * Whether decode attention over a paged ragged batch splits the keys across workgroups (flash-decoding): on GPUs only
 * (software rasterizers have a few cores that rows x heads workgroups already fill), for long contexts (at least
 * {@link SPLIT_KV_MIN_CONTEXT} keys), when rows x heads workgroups are fewer than the device runs at once
 * ({@link GPU_RESIDENT_WORKGROUPS}). Not measured on a real GPU yet: the thresholds are estimates, and `compile --tune`
 * times both variants.
 */
export function chooseSplitKv(f: SplitKvFacts): boolean {
  if (f.software || f.maxKvLen === undefined) return false;
  return f.maxKvLen >= SPLIT_KV_MIN_CONTEXT && f.rows * f.workgroupsPerRow < GPU_RESIDENT_WORKGROUPS;
}

/** What the `decode-subgroup` rule reads. */
export interface SubgroupDecodeFacts {
  /** A software rasterizer. */
  readonly software: boolean;
  /** The device's fixed subgroup size, when it has one and the `subgroups` feature. */
  readonly subgroupSize?: number;
  /** Query/key and value head dims. */
  readonly D: number;
  readonly Dv: number;
  /** Whether the KV pool is a float type (f32/f16). */
  readonly floatPool: boolean;
}

/**
 * The `decode-subgroup` attention for decode rows over a paged KV cache, or `undefined` where the tiled `decode`
 * stays: on software rasterizers with one fixed subgroup size of at most 16, head dims multiples of 4 up to 256, and
 * float pools. Measured on lavapipe (2 cores; 12 heads of 64, 12 dispatches as in a step of the synthetic 110M
 * Llama, interleaved in one process): 1 row at ~40 keys 13.9 ms tiled against 1.5 ms; 16 rows at ~50 keys
 * 228-421 ms against 32-60 ms. A workgroup there is one CPU thread, and the tiled layout's barriers and staging cost
 * more than the keys' arithmetic. GPUs keep the tiled layout (not measured here).
 */
export function chooseSubgroupDecode(f: SubgroupDecodeFacts): SubgroupDecodeAttentionVariant | undefined {
  const sg = f.subgroupSize;
  if (!f.software || sg === undefined || sg > 16 || !f.floatPool) return undefined;
  if (f.D % 4 !== 0 || f.Dv % 4 !== 0 || f.D > 256 || f.Dv > 256) return undefined;
  return { kind: 'decode-subgroup', subgroupSize: sg };
}

