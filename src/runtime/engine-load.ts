/**
 * Where `Engine.load` finds an engine: a directory path or single-file engine on disk (Node), a URL of an engine
 * directory, an explicit pair of manifest and weights URLs (as a bundler emits hashed assets), a `Response` or bytes
 * holding a single-file engine. Each resolves to the manifest, read now, and a {@link EngineWeightSource}, read when a
 * session is created, optionally through a cache ({@link EngineCacheMode}).
 * @module
 */
import { InputError, ModelFormatError } from '../errors.js';
import { sha256Hex } from '../util/sha256.js';
import { engineFileStore, weightsCacheKey, type EngineCacheOptions, type EngineFileStore } from './engine-cache.js';
import { parseEngineContainer, readEngineContainerStream } from './engine-container.js';
import { parseEngineManifest, type EngineManifest } from './engine-manifest.js';
import type { SessionLoadProgress } from './engine.js';
import { isNode, nodeEngineFiles } from './node-access.js';
import { bytesWeightSource, readStream, type EngineWeightSource, type WeightSourceProgressCallback } from './weight-source.js';

/**
 * An engine given as its files: URLs (or, in Node, paths or `file:` URLs). This is the form a bundler plugin uses
 * for hashed asset names.
 */
export interface EngineFiles {
  /** The manifest (`engine.json`). */
  readonly manifest: string | URL;
  /** The weights (`weights.bin`). */
  readonly weights: string | URL;
  /** The tokenizer stored with the engine (`tokenizer.bin`), if any: what {@link Engine.loadTokenizer} reads. */
  readonly tokenizer?: string | URL;
}

/**
 * What `Engine.load` accepts:
 * - a directory path or a single-file engine's path (Node);
 * - a URL (`http:`, `https:`, `file:` string or `URL`; in a browser also a relative one) of an engine directory:
 *   `engine.json` and `weights.bin` are fetched below it;
 * - {@link EngineFiles}: the manifest and weights URLs (or paths) themselves;
 * - a `Response`, an `ArrayBuffer` or a `Uint8Array` holding a single-file engine (see `engine-container.ts`).
 */
export type EngineSource = string | URL | EngineFiles | Response | ArrayBuffer | Uint8Array;

/** A `fetch` function (the global one by default). */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Options of `Engine.load`. */
export interface EngineLoadOptions extends EngineCacheOptions {
  /**
   * Progress of the sessions this engine creates, used when {@link SessionOptions.onProgress} is not given: the
   * `download` stage (into the cache) and the `weights` stage report bytes as they go.
   */
  readonly onProgress?: (progress: SessionLoadProgress) => void;
  /** Default {@link SessionOptions.uploadChunkBytes} of the engine's sessions. */
  readonly uploadChunkBytes?: number;
  /** Check the weights against the manifest's `weightsSha256` whenever they pass through JS (default true). */
  readonly verify?: boolean;
  /** The `fetch` to use for URLs (default `globalThis.fetch`). */
  readonly fetch?: FetchLike;
}

/** What a source resolves to. */
export interface ResolvedEngine {
  /** The manifest. */
  readonly manifest: EngineManifest;
  /** The weights. */
  readonly weights: EngineWeightSource;
  /** Where the engine's tokenizer would be (a path in Node, else a URL), when the source says. */
  readonly tokenizer?: string | URL;
}

/** A location: a local file (Node) or a URL to fetch. */
type Location = { readonly file: string | URL } | { readonly url: URL };

const SCHEME = /^[a-z][a-z0-9+.-]+:/i; // two letters at least, so a Windows drive (`C:\`) is a path

/** Where a string or URL points. */
function locate(x: string | URL, what: string): Location {
  if (x instanceof URL) return x.protocol === 'file:' && isNode() ? { file: x } : { url: x };
  if (typeof x !== 'string' || x === '') throw new InputError(`${what} must be a non-empty string or a URL, got ${JSON.stringify(x)}`);
  if (SCHEME.test(x)) {
    const u = new URL(x);
    return u.protocol === 'file:' && isNode() ? { file: x } : { url: u };
  }
  if (isNode()) return { file: x };
  const g = globalThis as { location?: { href?: string }; document?: { baseURI?: string } };
  const base = g.document?.baseURI ?? g.location?.href;
  if (!base) throw new InputError(`${what} '${x}' is relative and there is no page URL to resolve it against`);
  return { url: new URL(x, base) };
}

/** Resolves an engine source (see {@link EngineSource}). */
export async function resolveEngineSource(source: EngineSource, o: EngineLoadOptions = {}): Promise<ResolvedEngine> {
  if (source instanceof Uint8Array || source instanceof ArrayBuffer) {
    const bytes = source instanceof Uint8Array ? source : new Uint8Array(source);
    const c = parseEngineContainer(bytes);
    const w = c.weights.bytes!;
    if (c.manifest.weightsSha256 && o.verify !== false) await checkSha256(w, c.manifest.weightsSha256, 'the single-file engine');
    return { manifest: c.manifest, weights: bytesWeightSource(w, { verified: c.manifest.weightsSha256 !== undefined && o.verify !== false, description: 'the single-file engine' }) };
  }
  if (typeof Response !== 'undefined' && source instanceof Response) {
    const what = source.url || 'the response';
    if (!source.ok) throw new InputError(`${what}: HTTP ${source.status} ${source.statusText}`.trim());
    if (!source.body || source.bodyUsed) throw new InputError(`${what} has no body to read (or it was already read)`);
    return readEngineContainerStream(source.body, what);
  }
  if (typeof source === 'object' && source !== null && !(source instanceof URL)) {
    const f = source as Partial<EngineFiles>;
    if (f.manifest === undefined || f.weights === undefined) throw new InputError('an engine given as files needs both { manifest, weights }');
    return resolveFiles(locate(f.manifest, 'manifest'), locate(f.weights, 'weights'), f.tokenizer === undefined ? undefined : locate(f.tokenizer, 'tokenizer'), o);
  }
  if (typeof source !== 'string' && !(source instanceof URL)) throw new InputError(`Engine.load needs a path, a URL, { manifest, weights }, a Response or bytes; got ${typeof source}`);
  const at = locate(source, 'engine');
  if ('file' in at) {
    const files = await nodeEngineFiles(`loading the engine at ${String(at.file)}`);
    return files.readEngineFiles(at.file);
  }
  const base = at.url.href.endsWith('/') ? at.url : new URL(`${at.url.href}/`);
  return resolveFiles({ url: new URL('engine.json', base) }, { url: new URL('weights.bin', base) }, { url: new URL('tokenizer.bin', base) }, o);
}

async function resolveFiles(manifestAt: Location, weightsAt: Location, tokenizerAt: Location | undefined, o: EngineLoadOptions): Promise<ResolvedEngine> {
  const tokenizer = tokenizerAt ? ('file' in tokenizerAt ? tokenizerAt.file : tokenizerAt.url) : undefined;
  const store = engineFileStore(o);
  const fetchFn = fetcher(o);
  let manifest: EngineManifest;
  if ('file' in manifestAt) {
    const files = await nodeEngineFiles(`reading ${String(manifestAt.file)}`);
    manifest = await files.readEngineManifestFile(files.toPath(manifestAt.file));
  } else manifest = await fetchManifest(manifestAt.url, fetchFn, store);
  let weights: EngineWeightSource;
  if ('file' in weightsAt) {
    const files = await nodeEngineFiles(`reading ${String(weightsAt.file)}`);
    weights = await files.localWeightSource(weightsAt.file);
  } else weights = urlWeightSource(weightsAt.url, fetchFn, store, manifest);
  return { manifest, weights, tokenizer };
}

function fetcher(o: EngineLoadOptions): FetchLike {
  const f = o.fetch ?? (typeof fetch === 'function' ? (input: string, init?: RequestInit) => fetch(input, init) : undefined);
  if (!f) throw new InputError('this host has no fetch; pass one in the options');
  return f;
}

/** Fetches a URL; `InputError` for a network failure or an HTTP error status. */
export async function fetchOk(fetchFn: FetchLike, url: URL): Promise<Response> {
  let r: Response;
  try {
    r = await fetchFn(url.href);
  } catch (e) {
    throw new InputError(`fetching ${url.href} failed: ${(e as Error).message}`);
  }
  if (!r.ok) throw new InputError(`fetching ${url.href} failed: HTTP ${r.status} ${r.statusText}`.trim());
  return r;
}

/** The manifest from the network; from the cache when the network fails (offline) and the cache has it. */
async function fetchManifest(url: URL, fetchFn: FetchLike, store: EngineFileStore | undefined): Promise<EngineManifest> {
  let r: Response | undefined;
  let networkError: unknown;
  try {
    r = await fetchFn(url.href);
  } catch (e) {
    networkError = e;
  }
  let text: string;
  if (r) {
    if (!r.ok) throw new InputError(`fetching ${url.href} failed: HTTP ${r.status} ${r.statusText}`.trim());
    text = await r.text();
    if (store) await store.put(url.href, new Response(text).body!).catch(() => undefined);
  } else {
    const hit = store ? await store.get(url.href).catch(() => undefined) : undefined;
    if (!hit) throw new InputError(`fetching ${url.href} failed: ${(networkError as Error)?.message ?? networkError}`);
    text = await new Response(hit.stream).text();
  }
  return parseEngineManifest(text, url.href);
}

/** The exact body length a response announces (not when it is content-encoded: then the header counts compressed bytes). */
function exactLength(r: Response): number | undefined {
  if (r.headers.get('content-encoding')) return undefined;
  const n = Number(r.headers.get('content-length') ?? NaN);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** Report download progress at most every this many bytes. */
const PROGRESS_BYTES = 1 << 20;

/**
 * Weights at a URL: fetched by each session and streamed; with a store, downloaded into it first (the session's
 * `download` stage) and streamed from it (checked against the manifest's hash, and deleted from it when they fail).
 */
function urlWeightSource(url: URL, fetchFn: FetchLike, store: EngineFileStore | undefined, manifest: EngineManifest): EngineWeightSource {
  const body = async (): Promise<ReadableStream<Uint8Array>> => {
    const r = await fetchOk(fetchFn, url);
    if (!r.body) throw new ModelFormatError('weights.bin', 0, 'the response has no body', url.href);
    return r.body;
  };
  if (!store)
    return {
      byteLength: manifest.weightsByteLength,
      description: url.href,
      async *read() {
        yield* readStream(await body());
      },
    };
  const key = weightsCacheKey(url, manifest.weightsSha256);
  let uncached = false;
  return {
    byteLength: manifest.weightsByteLength,
    description: `${url.href} (${store.kind} cache)`,
    async prepare(onProgress: WeightSourceProgressCallback) {
      const hit = await store.get(key).catch(() => undefined);
      if (hit) {
        await hit.stream.cancel().catch(() => undefined);
        const expected = manifest.weightsByteLength;
        // an entry of another length is a leftover (OPFS creates the file before an interrupted write fills it)
        if (expected === undefined || hit.size === undefined || hit.size === expected) {
          uncached = false;
          return false;
        }
        await store.delete(key).catch(() => undefined);
      }
      const r = await fetchOk(fetchFn, url);
      if (!r.body) throw new ModelFormatError('weights.bin', 0, 'the response has no body', url.href);
      const total = manifest.weightsByteLength ?? exactLength(r);
      let loaded = 0;
      let reported = 0;
      const counted = r.body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, ctl) {
            loaded += chunk.byteLength;
            if (loaded - reported >= PROGRESS_BYTES) {
              reported = loaded;
              onProgress({ loadedBytes: loaded, totalBytes: total });
            }
            ctl.enqueue(chunk);
          },
        }),
      );
      try {
        await store.put(key, counted, total);
        uncached = false;
      } catch {
        uncached = true; // the store refused it (quota, …): sessions fetch the weights themselves
      }
      onProgress({ loadedBytes: loaded, totalBytes: total ?? loaded });
      return true;
    },
    async *read() {
      const hit = uncached ? undefined : await store.get(key).catch(() => undefined);
      yield* readStream(hit ? hit.stream : await body());
    },
    invalidate: () => store.delete(key),
  };
}

/** Throws `ModelFormatError` on the `weightsSha256` field when `bytes` do not hash to `expected`. */
export async function checkSha256(bytes: Uint8Array, expected: string, what: string): Promise<void> {
  const got = await sha256Hex(bytes);
  if (got !== expected.toLowerCase()) throw new ModelFormatError('weightsSha256', 0, `the weights of ${what} have SHA-256 ${got}; the manifest records ${expected} (corrupted or mismatched weights)`);
}
