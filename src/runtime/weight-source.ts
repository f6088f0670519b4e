/**
 * Weight sources: where an {@link Engine}'s weight bytes (`weights.bin`, or the weights section of a single-file
 * engine) come from when a session uploads them. The engine keeps a source, not the bytes: a file, a URL, a cache
 * entry or a stream is read front to back, in small chunks, each time a session is created; only a compiled engine
 * (or one loaded from bytes already in memory) holds them in JS memory.
 * @module
 */
import { InputError } from '../errors.js';

/** What a {@link EngineWeightSource} reports while it prepares (e.g. downloads its bytes into a cache). */
export interface WeightSourceProgress {
  /** Bytes done so far. */
  readonly loadedBytes: number;
  /** Bytes in all (when known). */
  readonly totalBytes: number | undefined;
}

/** Where a stage of reading weights stands. */
export type WeightSourceProgressCallback = (p: WeightSourceProgress) => void;

/**
 * The bytes of `weights.bin`, read front to back. Each chunk `read` yields is valid only until the next one is
 * requested (a file source reuses one buffer). A source built on a one-shot stream can be read once.
 */
export interface EngineWeightSource {
  /** Bytes in all, when known before reading (a file's size, a Content-Length); undefined when only the end of the stream tells. */
  readonly byteLength: number | undefined;
  /** The bytes themselves, when they are already in JS memory (a compiled engine, a single-file engine given as bytes). */
  readonly bytes?: Uint8Array;
  /** Whether the bytes were already checked against the manifest's `weightsSha256` (no need to hash them again). */
  readonly verified?: boolean;
  /** A short description for messages (a path or URL). */
  readonly description: string;
  /**
   * Work before reading, reported as byte progress (e.g. downloading the weights into a cache). Resolves to whether
   * there was any (sessions report a `download` stage only then).
   */
  prepare?(onProgress: WeightSourceProgressCallback): Promise<boolean>;
  /** Reads the bytes in order, as chunks of any size. */
  read(): AsyncIterable<Uint8Array>;
  /** Forgets any cached copy (called when the bytes fail their integrity check, so the next load fetches them anew). */
  invalidate?(): Promise<void>;
}

/** Largest chunk the in-memory source yields (the uploader splits further by its own chunk size). */
const MEMORY_CHUNK = 8 << 20;

/** A source over bytes held in memory (no copy: chunks are views of `bytes`). */
export function bytesWeightSource(bytes: Uint8Array, opts: { verified?: boolean; description?: string } = {}): EngineWeightSource {
  return {
    byteLength: bytes.byteLength,
    bytes,
    verified: opts.verified ?? false,
    description: opts.description ?? 'weights in memory',
    async *read() {
      for (let at = 0; at < bytes.byteLength; at += MEMORY_CHUNK) yield bytes.subarray(at, Math.min(bytes.byteLength, at + MEMORY_CHUNK));
    },
  };
}

/**
 * A source over a one-shot byte stream (a `Response` body, the rest of a single-file engine after its header). The
 * first chunks may come from `head` (bytes already taken off the stream).
 */
export function streamWeightSource(stream: ReadableStream<Uint8Array>, byteLength: number | undefined, description: string, head?: Uint8Array): EngineWeightSource {
  let used = false;
  return {
    byteLength,
    description,
    read() {
      if (used) throw new InputError(`the weights of ${description} came from a one-shot stream and were already read by an earlier session; load the engine again for another session`);
      used = true;
      return readStream(stream, head);
    },
  };
}

/** Yields `head` (when non-empty), then the chunks of `stream`; releases the stream's lock when done or abandoned. */
export async function* readStream(stream: ReadableStream<Uint8Array>, head?: Uint8Array): AsyncGenerator<Uint8Array> {
  if (head && head.byteLength) yield head;
  const reader = stream.getReader();
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        finished = true;
        return;
      }
      if (value.byteLength) yield value;
    }
  } finally {
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

/** A source that each `read` opens anew (a URL fetched again, a cache entry, a file). */
export function reopeningWeightSource(description: string, byteLength: number | undefined, open: () => Promise<AsyncIterable<Uint8Array>>, extra: Pick<EngineWeightSource, 'prepare' | 'invalidate'> = {}): EngineWeightSource {
  return {
    byteLength,
    description,
    ...extra,
    async *read() {
      yield* await open();
    },
  };
}
