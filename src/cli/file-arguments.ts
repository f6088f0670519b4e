/**
 * Checks of the CLI's file arguments, run before a command does any work: a missing input file, a file where a folder
 * belongs (or the reverse), or an output path that is an existing file is an {@link InputError} naming the option and
 * the path, so the command fails in one typed line instead of with a system error after minutes of compiling.
 * @module
 */
import { accessSync, constants, statSync, type Stats } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { InputError } from '../errors.js';

function statOf(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

/** `path` (the value of `flag`) must be an existing file. */
export function requireFile(flag: string, path: string): void {
  const st = statOf(path);
  if (!st) throw new InputError(`${flag} ${path}: no such file`);
  if (!st.isFile()) throw new InputError(`${flag} ${path}: is ${st.isDirectory() ? 'a folder' : 'not a regular file'}, expected a file`);
}

/** `path` must be an existing file or folder (a model: one file, or a Hugging Face folder). */
export function requireFileOrFolder(flag: string, path: string): void {
  const st = statOf(path);
  if (!st) throw new InputError(`${flag} ${path}: no such file or folder`);
  if (!st.isFile() && !st.isDirectory()) throw new InputError(`${flag} ${path}: is neither a file nor a folder`);
}

/** `path` must be an existing folder. */
export function requireFolder(flag: string, path: string): void {
  const st = statOf(path);
  if (!st) throw new InputError(`${flag} ${path}: no such folder`);
  if (!st.isDirectory()) throw new InputError(`${flag} ${path}: is a file, expected a folder`);
}

/** `path` must be a saved engine: a folder holding `engine.json` and `weights.bin` (as `Engine.save` writes them). */
export function requireEngineFolder(flag: string, path: string): void {
  requireFolder(flag, path);
  for (const name of ['engine.json', 'weights.bin'])
    if (!statOf(join(path, name))?.isFile()) throw new InputError(`${flag} ${path}: not a saved engine (${name} is missing; write one with \`tensorwright compile -o ${path}\`)`);
}

/**
 * `path` must be usable as an output folder: an existing folder, or a path that can be created (its nearest existing
 * ancestor is a writable folder). An existing file is refused.
 */
export function requireOutputFolder(flag: string, path: string): void {
  const st = statOf(path);
  if (st && !st.isDirectory()) throw new InputError(`${flag} ${path}: is an existing file, expected a folder to write into`);
  let at = resolve(path);
  let ancestor = st ? at : undefined;
  while (!ancestor) {
    const up = dirname(at);
    const s = statOf(up);
    if (s && !s.isDirectory()) throw new InputError(`${flag} ${path}: ${up} is a file, so the folder cannot be created`);
    if (s || up === at) ancestor = up;
    at = up;
  }
  try {
    accessSync(ancestor, constants.W_OK);
  } catch {
    throw new InputError(`${flag} ${path}: ${ancestor} is not writable`);
  }
}
