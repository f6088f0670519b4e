/**
 * Where the CLI keeps the timing cache (`compile --tune`), and reading and writing it: `--timing-cache FILE` when
 * given, else `timing-cache.json` in the user cache directory (`$TENSORWRIGHT_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/tensorwright`, else `~/.cache/tensorwright`). A compile uses the file by default when it is there.
 * @module
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { InputError } from '../errors.js';
import { TimingCache } from '../tune/timing-cache.js';

/** The timing cache file: the one given, else the user cache directory's. */
export function timingCachePath(given?: string): string {
  if (given) return given;
  const dir = process.env.TENSORWRIGHT_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'tensorwright');
  return join(dir, 'timing-cache.json');
}

/**
 * Reads the timing cache at `path`: an empty cache when there is no file, a typed error when it is not a timing cache
 * ({@link errors!ModelFormatError | ModelFormatError} naming the field) or not readable.
 */
export async function readTimingCache(path: string): Promise<{ cache: TimingCache; existed: boolean }> {
  if (!existsSync(path)) return { cache: new TimingCache(), existed: false };
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new InputError(`--timing-cache ${path}: cannot read it (${(e as Error).message})`);
  }
  return { cache: TimingCache.parse(text, path), existed: true };
}

/** Writes the timing cache to `path` (its folder is created; written to a temporary file, then renamed). */
export async function writeTimingCache(path: string, cache: TimingCache): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(cache.toJSON(), null, 1)}\n`);
  await rename(tmp, path);
}
