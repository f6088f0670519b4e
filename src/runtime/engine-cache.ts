/**
 * Engine file caches for the browser: fetched `engine.json` and `weights.bin` kept in the Cache API or in the
 * origin-private file system (OPFS), behind one small store interface. Both are described by the few members the
 * runtime uses ({@link CacheStorageLike}, {@link OpfsDirectoryLike}), so tests (and other hosts) can pass their own.
 *
 * Weights are stored under their URL plus the SHA-256 the manifest records, so a new engine at the same URL misses
 * the cache instead of loading stale weights; the bytes are checked against the hash as they stream to the GPU, and
 * an entry that fails is deleted.
 * @module
 */
import { InputError } from '../errors.js';
import { sha256Hex } from '../util/sha256.js';
import { readStream } from './weight-source.js';

/** Where `Engine.load` keeps fetched engine files: `none` (default), the Cache API, or OPFS. */
export type EngineCacheMode = 'none' | 'cache-api' | 'opfs';

/** The members of a Cache API `Cache` the runtime uses. */
export interface CacheLike {
  /** The stored response for a URL, if any. */
  match(key: string): Promise<Response | undefined>;
  /** Stores a response (reading its body). */
  put(key: string, response: Response): Promise<void>;
  /** Removes an entry. */
  delete(key: string): Promise<boolean>;
}

/** The member of `CacheStorage` (`globalThis.caches`) the runtime uses. */
export interface CacheStorageLike {
  /** Opens (creating if needed) the named cache. */
  open(name: string): Promise<CacheLike>;
}

/** The members of an OPFS `FileSystemWritableFileStream` the runtime uses. */
export interface OpfsWritableLike {
  /** Appends bytes. */
  write(data: Uint8Array): Promise<void>;
  /** Commits the file. */
  close(): Promise<void>;
  /** Discards what was written. */
  abort(reason?: unknown): Promise<void>;
}

/** The members of an OPFS `FileSystemFileHandle` the runtime uses. */
export interface OpfsFileLike {
  /** The file's committed contents. */
  getFile(): Promise<Blob>;
  /** A writer whose contents replace the file when closed. */
  createWritable(): Promise<OpfsWritableLike>;
}

/** The members of an OPFS `FileSystemDirectoryHandle` the runtime uses. */
export interface OpfsDirectoryLike {
  /** A subdirectory (created with `create`). */
  getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<OpfsDirectoryLike>;
  /** A file (created with `create`; rejects when missing otherwise). */
  getFileHandle(name: string, options?: { create?: boolean }): Promise<OpfsFileLike>;
  /** Removes an entry. */
  removeEntry(name: string): Promise<void>;
}

/** A cached file: its bytes as a stream, and its size when known. */
export interface CachedFile {
  /** The bytes. */
  readonly stream: ReadableStream<Uint8Array>;
  /** Bytes in all. */
  readonly size: number | undefined;
}

/** A key-value store of files (the Cache API or OPFS behind one interface). */
export interface EngineFileStore {
  /** What backs the store, for messages. */
  readonly kind: Exclude<EngineCacheMode, 'none'>;
  /** The stored file, if any. */
  get(key: string): Promise<CachedFile | undefined>;
  /** Stores a file from a stream (completely, or not at all). */
  put(key: string, stream: ReadableStream<Uint8Array>, size?: number): Promise<void>;
  /** Removes a file (no error when missing). */
  delete(key: string): Promise<void>;
}

/** Name of the Cache API cache and of the OPFS directory. */
export const ENGINE_CACHE_NAME = 'tensorwright-engines';

/** Header carrying a stored file's size in the Cache API. */
const SIZE_HEADER = 'x-tensorwright-bytes';

/** A store in the Cache API. */
export function cacheApiStore(storage: CacheStorageLike, name = ENGINE_CACHE_NAME): EngineFileStore {
  let cache: Promise<CacheLike> | undefined;
  const open = (): Promise<CacheLike> => (cache ??= storage.open(name));
  return {
    kind: 'cache-api',
    async get(key) {
      const r = await (await open()).match(key);
      if (!r || !r.body) return undefined;
      const size = Number(r.headers.get(SIZE_HEADER) ?? NaN);
      return { stream: r.body, size: Number.isSafeInteger(size) ? size : undefined };
    },
    async put(key, stream, size) {
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
      if (size !== undefined) headers[SIZE_HEADER] = String(size);
      await (await open()).put(key, new Response(stream, { headers }));
    },
    async delete(key) {
      await (await open()).delete(key);
    },
  };
}

/** A store in an OPFS directory (file names are the SHA-256 of the keys). */
export function opfsStore(root: OpfsDirectoryLike | (() => Promise<OpfsDirectoryLike>), name = ENGINE_CACHE_NAME): EngineFileStore {
  let dir: Promise<OpfsDirectoryLike> | undefined;
  const open = (): Promise<OpfsDirectoryLike> => (dir ??= (async () => (await (typeof root === 'function' ? root() : root)).getDirectoryHandle(name, { create: true }))());
  const fileName = async (key: string): Promise<string> => `${await sha256Hex(new TextEncoder().encode(key))}.bin`;
  return {
    kind: 'opfs',
    async get(key) {
      const d = await open();
      const fh = await d.getFileHandle(await fileName(key)).catch(() => undefined);
      if (!fh) return undefined;
      const file = await fh.getFile();
      return { stream: file.stream() as ReadableStream<Uint8Array>, size: file.size };
    },
    async put(key, stream) {
      const fh = await (await open()).getFileHandle(await fileName(key), { create: true });
      const w = await fh.createWritable();
      try {
        for await (const piece of readStream(stream)) await w.write(piece);
      } catch (e) {
        await w.abort(e).catch(() => undefined);
        throw e;
      }
      await w.close();
    },
    async delete(key) {
      await (await open())
        .removeEntry(await fileName(key))
        .catch(() => undefined);
    },
  };
}

/** Options that choose and supply a store (part of the options of `Engine.load`). */
export interface EngineCacheOptions {
  /** Where to keep fetched files (default `none`). Falls back to `none` when the host lacks the storage. */
  readonly cache?: EngineCacheMode;
  /** The Cache API to use (default `globalThis.caches`). */
  readonly caches?: CacheStorageLike;
  /** The OPFS root to use (default `navigator.storage.getDirectory()`). */
  readonly opfs?: OpfsDirectoryLike | (() => Promise<OpfsDirectoryLike>);
  /** Name of the cache or OPFS directory (default {@link ENGINE_CACHE_NAME}). */
  readonly cacheName?: string;
}

/** The store the options ask for, or undefined (no caching asked, or the host has no such storage). */
export function engineFileStore(o: EngineCacheOptions): EngineFileStore | undefined {
  const g = globalThis as { caches?: CacheStorageLike; navigator?: { storage?: { getDirectory?: () => Promise<OpfsDirectoryLike> } } };
  switch (o.cache ?? 'none') {
    case 'none':
      return undefined;
    case 'cache-api': {
      const storage = o.caches ?? g.caches;
      return storage ? cacheApiStore(storage, o.cacheName) : undefined;
    }
    case 'opfs': {
      const storage = g.navigator?.storage;
      const root = o.opfs ?? (storage?.getDirectory ? () => storage.getDirectory!() : undefined);
      return root ? opfsStore(root, o.cacheName) : undefined;
    }
    default:
      throw new InputError(`cache must be 'none', 'cache-api' or 'opfs', got ${JSON.stringify(o.cache)}`);
  }
}

/** The cache key of a weights file: its URL, plus the SHA-256 the manifest records (so a new engine misses). */
export function weightsCacheKey(url: URL, sha256: string | undefined): string {
  if (!sha256) return url.href;
  const u = new URL(url.href);
  u.searchParams.set('tensorwright-sha256', sha256.toLowerCase());
  return u.href;
}
