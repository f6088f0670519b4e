/**
 * `tensorwright/plugin`: the build-step plugin. With it, `import model from './model.bin?tensorwright'` (also GGUF
 * files, Hugging Face folders and ONNX graphs; options as query parameters, e.g.
 * `?tensorwright&quant=int4-g32&kvBlockSize=16`) compiles the model at build time and gives the app
 * `{ manifestUrl, weightsUrl, tokenizerUrl, info, load(), loadTokenizer() }`.
 *
 * ```ts
 * // vite.config.ts
 * import { vite as tensorwright } from 'tensorwright/plugin';
 * export default { plugins: [tensorwright({ target: 'portable' })] };
 * ```
 * @module
 */
import { tensorwright } from './plugin.js';

export { tensorwright, tensorwrightPluginHooks, type TensorwrightPluginOptions, type CompileEvent } from './plugin.js';
export { isModelImport, parseModelImport, parseImportOptions, MODEL_TARGETS, IMPORT_QUERY_KEY, type ModelImport, type ModelImportOptions, type ModelTargetName } from './import-query.js';
export { defaultCacheDir } from './build-cache.js';
export { serveCachedAssets, DEV_URL_PREFIX } from './dev-server.js';
export { chooseVariant, type CompiledModel, type CompiledModelAssets, type CompiledModelInfo, type CompiledModelLoadOptions, type CompiledVariant, type TokenizerFormat } from './client.js';
export { requirementsOf, unmetRequirements, type EngineRequirements } from './engine-requirements.js';

/** The plugin for Vite (`plugins: [vite(options)]`). */
export const vite = tensorwright.vite;
/** The plugin for Rollup (`plugins: [rollup(options)]`). */
export const rollup = tensorwright.rollup;
/** The plugin for esbuild (`plugins: [esbuild(options)]`). */
export const esbuild = tensorwright.esbuild;
/** The plugin for webpack (`plugins: [webpack(options)]`). */
export const webpack = tensorwright.webpack;
