/**
 * Dynamic imports of Node's built-in modules that bundlers for the browser leave alone: the specifier is built at run
 * time from a parameter, so no bundler resolves it and no minifier folds it into a literal `node:` import.
 * @module
 */

/** Imports Node's built-in module `name` (`os`, `crypto`, `fs/promises`, …). Only call it when running in Node. */
export function importNodeBuiltin<T>(name: string): Promise<T> {
  // joined at run time: a template or `+` would be folded by minifiers into text that reads as a `node:` import
  const specifier = ['node', name].join(':');
  return import(/* @vite-ignore */ specifier) as Promise<T>;
}
