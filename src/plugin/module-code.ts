/**
 * The JavaScript a model import turns into: a small module whose default export is the {@link CompiledModel} for the
 * emitted assets (their URLs, the build's summary, `load()` and `loadTokenizer()`), built by the browser-side client.
 * How an asset's URL is written depends on the bundler that emitted it.
 * @module
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { CompiledModelInfo } from './client.js';

/** How the generated code finds an emitted asset at run time. */
export type AssetUrl =
  /** Rollup and Vite builds: `import.meta.ROLLUP_FILE_URL_<referenceId>`, which the bundler rewrites. */
  | { readonly kind: 'rollup'; readonly referenceId: string }
  /** A file next to the output bundle (esbuild): resolved against the bundle's own `import.meta.url`. */
  | { readonly kind: 'relative'; readonly fileName: string }
  /** A file under webpack's output: prefixed with `__webpack_public_path__` at run time. */
  | { readonly kind: 'webpack'; readonly fileName: string }
  /** A fixed URL (the dev server's, or one under a configured public path). */
  | { readonly kind: 'url'; readonly url: string };

/** The URLs of one compiled engine's assets, with the build's summary of it. */
export interface VariantAssets {
  /** `engine.json`. */
  readonly manifest: AssetUrl;
  /** `weights.bin`. */
  readonly weights: AssetUrl;
  /** What the build says about it. */
  readonly info: CompiledModelInfo;
}

/** A JavaScript expression for an asset's URL. */
export function urlExpression(u: AssetUrl): string {
  switch (u.kind) {
    case 'rollup':
      return `import.meta.ROLLUP_FILE_URL_${u.referenceId}`;
    case 'relative':
      return `new URL(${JSON.stringify(`./${u.fileName}`)}, import.meta.url).href`;
    case 'webpack':
      return `__webpack_public_path__ + ${JSON.stringify(u.fileName)}`;
    case 'url':
      return JSON.stringify(u.url);
  }
}

/**
 * The path of the browser-side client module the generated code imports: the compiled `client.js` beside this file
 * (the published package), or `client.ts` when the plugin runs from source.
 */
export function clientModulePath(): string {
  const js = fileURLToPath(new URL('./client.js', import.meta.url));
  return existsSync(js) ? js : fileURLToPath(new URL('./client.ts', import.meta.url));
}

/** The source of a model import's module: its engines (one per target, preferred first) and its tokenizer. */
export function modelModuleCode(variants: readonly VariantAssets[], tokenizer: AssetUrl | undefined, clientPath = clientModulePath()): string {
  const variant = (v: VariantAssets): string => `    { manifestUrl: ${urlExpression(v.manifest)}, weightsUrl: ${urlExpression(v.weights)}, info: ${JSON.stringify(v.info)} },`;
  return [
    `import { compiledModel } from ${JSON.stringify(clientPath.split('\\').join('/'))};`,
    'export default compiledModel({',
    '  variants: [',
    ...variants.map(variant),
    '  ],',
    `  tokenizerUrl: ${tokenizer ? urlExpression(tokenizer) : 'undefined'},`,
    '});',
    '',
  ].join('\n');
}
