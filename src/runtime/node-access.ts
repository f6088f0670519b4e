/**
 * The runtime's door to Node's file system: whether it runs in Node, and the Node-only engine-file module loaded
 * through a computed dynamic import, so that bundlers for the browser neither follow nor include it.
 * @module
 */
import { InputError } from '../errors.js';

/** Whether the code runs in Node (not a browser or a worker). */
export function isNode(): boolean {
  return typeof process !== 'undefined' && typeof process.versions?.node === 'string';
}

type EngineFilesModule = typeof import('./node/engine-files.js');

let engineFiles: Promise<EngineFilesModule> | undefined;

/**
 * The Node engine-file module (`./node/engine-files.js`). Throws `InputError` outside Node, naming `what` needed it
 * (a path or a `file:` URL is only readable there).
 */
export async function nodeEngineFiles(what: string): Promise<EngineFilesModule> {
  if (!isNode()) throw new InputError(`${what} needs Node's file system; in a browser pass an http(s) URL, a Response or the bytes`);
  engineFiles ??= importBeside<EngineFilesModule>('./node/engine-files.js');
  return engineFiles;
}

/**
 * Imports a module beside this one through a parameter, so that bundlers neither follow the import nor fold the
 * specifier into a literal (the module is only ever loaded in Node, from the unbundled package).
 */
function importBeside<T>(specifier: string): Promise<T> {
  return import(/* @vite-ignore */ specifier) as Promise<T>;
}
