// Locating ../shared (test data no one here wrote). On a user's machine, tests that need it skip with one loud line
// when it is absent; with REQUIRE_SHARED=1 (CI sets it) a missing ../shared, or a missing folder or file in it that a
// test asks for, is a failure instead, so no test can pass vacuously there.
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const sharedDir = resolve(repoRoot, '../shared');

/** Whether `path` exists; throws when it does not and `require` (default: `REQUIRE_SHARED=1`) is set. */
export function requiredPresent(path: string, require = process.env.REQUIRE_SHARED === '1'): boolean {
  if (existsSync(path)) return true;
  if (require) throw new Error(`REQUIRE_SHARED=1 but ${path} is missing (tests would skip without it)`);
  return false;
}

/** Whether `../shared/<parts>` (or `../shared` itself) is there; see {@link requiredPresent}. */
export function sharedPresent(...parts: string[]): boolean {
  return requiredPresent(resolve(sharedDir, ...parts));
}

export const hasShared = sharedPresent();
export function sharedPath(...parts: string[]): string {
  return resolve(sharedDir, ...parts);
}
export function noteMissingShared(what: string): void {
  if (!hasShared) process.stderr.write(`[tensorwright] SKIPPED ${what}: ../shared is absent (CI always has it)\n`);
}
