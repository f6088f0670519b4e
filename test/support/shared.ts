// Locating ../shared (test data no one here wrote). Tests that need it skip with a clear line when it is absent.
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const sharedDir = resolve(repoRoot, '../shared');
export const hasShared = existsSync(sharedDir);
export function sharedPath(...parts: string[]): string {
  return resolve(sharedDir, ...parts);
}
export function noteMissingShared(what: string): void {
  if (!hasShared) process.stderr.write(`[tensorwright] SKIPPED ${what}: ../shared is absent (CI always has it)\n`);
}
