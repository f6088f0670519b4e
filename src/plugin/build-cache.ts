/**
 * The build cache of the plugin: compiled model assets on disk (default `node_modules/.cache/tensorwright/`), one
 * folder per key, where the key hashes the input's content (the model file, the tokenizer files beside it, or every
 * file of a model folder), the import's options, the target device and the compiler's version. A second build of an
 * unchanged model finds its folder and compiles nothing; the dev server serves the assets from there.
 * @module
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { InputError } from '../errors.js';
import { ENGINE_FORMAT_VERSION } from '../runtime/engine-manifest.js';
import type { CompiledAssets, TokenizerAsset } from './compile-assets.js';
import type { CompiledModelInfo, TokenizerFormat } from './client.js';
import type { ModelImportOptions } from './import-query.js';

/** Bumped when the cache's layout or what its key covers changes. */
const CACHE_LAYOUT_VERSION = 1;

/** File names inside a cache entry. */
export const CACHE_FILES = { manifest: 'engine.json', weights: 'weights.bin', info: 'info.json', tokenizer: { 'llama2c-bin': 'tokenizer.bin', 'hf-json': 'tokenizer.json' } } as const;

/** The default cache folder: `node_modules/.cache/tensorwright` under `root`. */
export function defaultCacheDir(root: string): string {
  return join(root, 'node_modules', '.cache', 'tensorwright');
}

/** The tensorwright version (package.json), part of every key so an upgraded compiler recompiles. */
async function compilerVersion(): Promise<string> {
  const text = await readFile(new URL('../../package.json', import.meta.url), 'utf8').catch(() => '{}');
  return String((JSON.parse(text) as { version?: string }).version ?? 'unknown');
}

/** SHA-256 of a file, streamed. */
export function hashFile(path: string): Promise<string> {
  return new Promise((done, fail) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => h.update(chunk))
      .on('error', fail)
      .on('end', () => done(h.digest('hex')));
  });
}

/** Tokenizer files that may sit beside a model file (what the build ships is chosen from these). */
function isTokenizerFile(name: string): boolean {
  return name === 'tokenizer.json' || name === 'tokenizer.bin' || /^tok\d+\.bin$/.test(name);
}

/**
 * The content hash of a model input: of a file, its bytes and those of the tokenizer files beside it; of a folder,
 * every regular file directly in it (by name). Hashes are memoized per path, size and modification time in the cache
 * folder, so an unchanged multi-gigabyte file is not read again on every build.
 */
export async function hashModelInput(path: string, cacheDir: string): Promise<string> {
  const st = await stat(path).catch(() => undefined);
  if (!st) throw new InputError(`model ${path} does not exist`);
  const dir = st.isDirectory() ? path : dirname(path);
  const names = st.isDirectory() ? (await readdir(dir)).sort() : [basename(path), ...(await readdir(dir)).filter((n) => isTokenizerFile(n) && n !== basename(path)).sort()];
  const memoPath = join(cacheDir, 'input-hashes.json');
  const memo = JSON.parse(await readFile(memoPath, 'utf8').catch(() => '{}')) as Record<string, { size: number; mtimeMs: number; sha256: string }>;
  let changed = false;
  const h = createHash('sha256');
  for (const name of names) {
    const p = resolve(dir, name);
    const s = await stat(p);
    if (!s.isFile()) continue;
    let m = memo[p];
    if (!m || m.size !== s.size || m.mtimeMs !== s.mtimeMs) {
      m = { size: s.size, mtimeMs: s.mtimeMs, sha256: await hashFile(p) };
      memo[p] = m;
      changed = true;
    }
    h.update(`${name}\0${m.sha256}\n`);
  }
  if (changed) {
    await mkdir(cacheDir, { recursive: true });
    const tmp = `${memoPath}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(memo));
    await rename(tmp, memoPath);
  }
  return h.digest('hex');
}

/** The cache key of a model import: its input's content hash, its options and its target's key. */
export async function cacheKey(inputHash: string, options: ModelImportOptions, targetKey: string): Promise<string> {
  const what = { layout: CACHE_LAYOUT_VERSION, tensorwright: await compilerVersion(), engineFormat: ENGINE_FORMAT_VERSION, input: inputHash, options, target: targetKey };
  return createHash('sha256').update(JSON.stringify(what)).digest('hex').slice(0, 32);
}

/** One entry of the cache: the folder of a key. */
export class CacheEntry {
  constructor(
    /** The cache folder. */
    readonly cacheDir: string,
    /** The entry's key. */
    readonly key: string,
  ) {}

  /** The entry's folder. */
  get dir(): string {
    return join(this.cacheDir, this.key);
  }

  /** The path of one of the entry's files. */
  file(name: string): string {
    return join(this.dir, name);
  }

  /** Reads the entry's assets, or `undefined` when it is absent or incomplete. */
  async read(): Promise<CompiledAssets | undefined> {
    if (!existsSync(this.file(CACHE_FILES.info))) return undefined;
    try {
      const info = JSON.parse(await readFile(this.file(CACHE_FILES.info), 'utf8')) as CompiledModelInfo & { tokenizerSource?: string };
      const manifest = new Uint8Array(await readFile(this.file(CACHE_FILES.manifest)));
      const weights = new Uint8Array(await readFile(this.file(CACHE_FILES.weights)));
      if (weights.byteLength !== info.weightBytes || manifest.byteLength !== info.manifestBytes) return undefined;
      let tokenizer: TokenizerAsset | undefined;
      if (info.tokenizer) {
        const format: TokenizerFormat = info.tokenizer;
        tokenizer = { format, path: info.tokenizerSource ?? '', bytes: new Uint8Array(await readFile(this.file(CACHE_FILES.tokenizer[format]))) };
      }
      const { tokenizerSource: _src, ...rest } = info;
      return { manifest, weights, info: rest, ...(tokenizer ? { tokenizer } : {}) };
    } catch {
      return undefined;
    }
  }

  /** Writes the entry (into a temporary folder first, renamed into place, so readers never see half an entry). */
  async write(assets: CompiledAssets): Promise<void> {
    const tmp = `${this.dir}.${process.pid}.${Date.now()}.tmp`;
    await mkdir(tmp, { recursive: true });
    await writeFile(join(tmp, CACHE_FILES.manifest), assets.manifest);
    await writeFile(join(tmp, CACHE_FILES.weights), assets.weights);
    if (assets.tokenizer) await writeFile(join(tmp, CACHE_FILES.tokenizer[assets.tokenizer.format]), assets.tokenizer.bytes);
    await writeFile(join(tmp, CACHE_FILES.info), JSON.stringify({ ...assets.info, ...(assets.tokenizer ? { tokenizerSource: assets.tokenizer.path } : {}) }, null, 1));
    await rm(this.dir, { recursive: true, force: true });
    await rename(tmp, this.dir).catch(async (e: unknown) => {
      // another build wrote the same entry meanwhile: theirs is as good as ours
      await rm(tmp, { recursive: true, force: true });
      if (!existsSync(this.file(CACHE_FILES.info))) throw e;
    });
  }
}
