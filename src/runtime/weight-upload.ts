/**
 * The weight uploader: streams an engine's `weights.bin` from a {@link EngineWeightSource} into the GPU buffers of its
 * payload parts through `queue.writeBuffer` calls of at most a chunk size each, reporting bytes as it goes and
 * checking the SHA-256 the manifest records while the bytes pass. At most one chunk of weights is held in JS memory
 * (plus the source's own read buffer), whatever the model's size.
 * @module
 */
import { ModelFormatError } from '../errors.js';
import { createSha256, type Sha256 } from '../util/sha256.js';
import type { EngineWeightSource } from './weight-source.js';

/** Default size of one staging write: 8 MiB. */
export const DEFAULT_UPLOAD_CHUNK_BYTES = 8 << 20;

/** Pieces at least this long (or a whole chunk, when chunks are smaller) are written from without staging. */
const DIRECT_MIN_BYTES = 1 << 20;

/** One destination: the bytes `[byteOffset, byteOffset + byteLength)` of `weights.bin` go to offset 0 of `buffer`. */
export interface WeightUploadTarget {
  /** Offset in `weights.bin` (a multiple of 4). */
  readonly byteOffset: number;
  /** Bytes (the buffer holds them rounded up to a multiple of 4). */
  readonly byteLength: number;
  /** The GPU buffer. */
  readonly buffer: GPUBuffer;
}

/** Options of {@link uploadWeights}. */
export interface WeightUploadOptions {
  /** Largest `writeBuffer` call in bytes (rounded down to a multiple of 4; default {@link DEFAULT_UPLOAD_CHUNK_BYTES}). */
  readonly chunkBytes?: number;
  /** The exact length `weights.bin` must have, when the manifest or container records it. */
  readonly expectedBytes?: number;
  /** The SHA-256 (hex) the bytes must have; checked unless undefined. */
  readonly sha256?: string;
  /** Called after each chunk with the bytes of `weights.bin` read so far (non-decreasing) and the total. */
  readonly onProgress?: (loadedBytes: number, totalBytes: number) => void;
  /** Wait for the queue to drain after this many bytes, so the driver's staging memory stays bounded (default 8 chunks). */
  readonly drainBytes?: number;
}

/**
 * Uploads `source` into `targets`. Throws `ModelFormatError` when the bytes end before a part does
 * (`weights.bin`), their length differs from `expectedBytes` (`weightsByteLength`), or their hash differs from
 * `sha256` (`weightsSha256`); in each case the source's cached copy, if any, is invalidated first.
 */
export async function uploadWeights(queue: GPUQueue, targets: readonly WeightUploadTarget[], source: EngineWeightSource, o: WeightUploadOptions = {}): Promise<void> {
  const chunk = Math.max(4, Math.floor((o.chunkBytes ?? DEFAULT_UPLOAD_CHUNK_BYTES) / 4) * 4);
  const drainEvery = o.drainBytes ?? 8 * chunk;
  const sorted = [...targets].sort((a, b) => a.byteOffset - b.byteOffset);
  const needed = sorted.reduce((m, t) => Math.max(m, t.byteOffset + t.byteLength), 0);
  const total = o.expectedBytes ?? source.byteLength ?? needed;
  const hash: Sha256 | undefined = o.sha256 !== undefined ? await createSha256() : undefined;
  const pad = new Uint8Array(4);
  let first = 0; // first target not yet fully written
  let sinceDrain = 0;

  /** Writes the bytes of `block` (file offsets `[start, start + block.length)`) to every target they overlap. */
  const flush = async (block: Uint8Array, start: number): Promise<void> => {
    const end = start + block.byteLength;
    for (let j = first; j < sorted.length && sorted[j].byteOffset < end; j++) {
      const t = sorted[j];
      const s = Math.max(start, t.byteOffset);
      const e = Math.min(end, t.byteOffset + t.byteLength);
      if (e <= s) continue;
      const whole = (e - s) & ~3;
      const src = block.subarray(s - start, e - start);
      if (whole > 0) queue.writeBuffer(t.buffer, s - t.byteOffset, src.buffer as ArrayBuffer, src.byteOffset, whole);
      if (whole < src.byteLength) {
        // the part's last 1–3 bytes: writeBuffer writes whole words, so pad them with zeros
        pad.fill(0);
        pad.set(src.subarray(whole));
        queue.writeBuffer(t.buffer, s - t.byteOffset + whole, pad.buffer, 0, 4);
      }
    }
    while (first < sorted.length && sorted[first].byteOffset + sorted[first].byteLength <= end) first++;
    sinceDrain += block.byteLength;
    if (sinceDrain >= drainEvery) {
      sinceDrain = 0;
      await queue.onSubmittedWorkDone();
    }
    o.onProgress?.(end, Math.max(total, end));
  };

  // small pieces (network chunks) gather in a staging buffer up to a whole chunk; large ones (files, memory) are
  // written from directly. Every block but the last has a length that is a multiple of 4, so blocks start 4-aligned.
  const direct = Math.min(chunk, DIRECT_MIN_BYTES);
  let staging = new Uint8Array(0);
  let fill = 0;
  let blockStart = 0;
  let read = 0;
  for await (const piece of source.read()) {
    hash?.update(piece);
    read += piece.byteLength;
    let off = 0;
    while (off < piece.byteLength) {
      const left = piece.byteLength - off;
      if (fill === 0 && left >= direct) {
        const n = Math.min(chunk, left & ~3);
        await flush(piece.subarray(off, off + n), blockStart);
        blockStart += n;
        off += n;
        continue;
      }
      const take = Math.min(chunk - fill, left);
      if (staging.byteLength < fill + take) {
        const grown = new Uint8Array(Math.min(chunk, Math.max(fill + take, 2 * staging.byteLength, 1 << 16)));
        grown.set(staging.subarray(0, fill));
        staging = grown;
      }
      staging.set(piece.subarray(off, off + take), fill);
      fill += take;
      off += take;
      if (fill === chunk) {
        await flush(staging, blockStart);
        blockStart += chunk;
        fill = 0;
      }
    }
  }
  if (fill > 0) await flush(staging.subarray(0, fill), blockStart);
  if (read === 0) o.onProgress?.(0, total);
  const got = hash?.hex();
  const hashBad = got !== undefined && o.sha256 !== undefined && got !== o.sha256.toLowerCase();
  const lengthBad = o.expectedBytes !== undefined && read !== o.expectedBytes;
  if (read < needed || lengthBad || hashBad) await source.invalidate?.().catch(() => undefined);
  if (read < needed) {
    const t = sorted.find((x) => x.byteOffset + x.byteLength > read)!;
    throw new ModelFormatError('weights.bin', read, `${source.description} ends after ${read} bytes, inside a weight payload (bytes ${t.byteOffset}..${t.byteOffset + t.byteLength})`);
  }
  if (lengthBad) throw new ModelFormatError('weightsByteLength', read, `${source.description} has ${read} bytes; the manifest records ${o.expectedBytes}`);
  if (hashBad) throw new ModelFormatError('weightsSha256', 0, `the weights of ${source.description} have SHA-256 ${got}; the manifest records ${o.sha256} (corrupted or mismatched weights)`);
}
