/**
 * Dynamic imports of Node's built-in modules that bundlers for the browser leave alone: the specifier is built from
 * a parameter, so no bundler resolves it and no minifier folds it into a literal `import("node:…")`.
 * @module
 */

/** Imports Node's built-in module `name` (`os`, `crypto`, `fs/promises`, …). Only call it when running in Node. */
export function importNodeBuiltin<T>(name: string): Promise<T> {
  return import(/* @vite-ignore */ `node:${name}`) as Promise<T>;
}
