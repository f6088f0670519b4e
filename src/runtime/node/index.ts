/**
 * The Node entry point of the runtime (`tensorwright/runtime/node`): engine files on disk (directories and
 * single-file engines). `Engine.load(path)` and `Engine.save(dir)` reach the same code through a dynamic import;
 * import this entry to use the file functions directly (or where dynamic imports of sibling modules do not work, as
 * in single-file Node bundles).
 * @module
 */
export * from './engine-files.js';
