/**
 * The build plugin (an `unplugin`, so one implementation serves Vite, Rollup, esbuild and webpack): an import of a
 * model with the `?tensorwright` query is compiled at build time, in Node, into hashed assets (`engine.json`,
 * `weights.bin`, the tokenizer) and replaced by a small module describing them. Compiled assets are kept in a build
 * cache keyed by the input's content and the options, so a rebuild of an unchanged model compiles nothing; Vite's dev
 * server serves them from there.
 * @module
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { createUnplugin, type UnpluginBuildContext, type UnpluginContextMeta, type UnpluginOptions } from 'unplugin';
import { InputError } from '../errors.js';
import { cacheKey, CacheEntry, CACHE_FILES, defaultCacheDir, hashModelInput } from './build-cache.js';
import { compileModelAssets, resolveTarget, type CompiledAssets } from './compile-assets.js';
import { serveCachedAssets, DEV_URL_PREFIX } from './dev-server.js';
import { isModelImport, mergeImportOptions, parseModelImport, targetsOf, type ModelImportOptions, type ModelTargetName } from './import-query.js';
import { modelModuleCode, type AssetUrl, type VariantAssets } from './module-code.js';

/** What {@link TensorwrightPluginOptions.onCompile} is told about each model the build compiles (cache misses only). */
export interface CompileEvent {
  /** The model file or folder. */
  readonly path: string;
  /** Its options, defaults included (with the one target this compile is for). */
  readonly options: ModelImportOptions;
  /** The build-cache key its assets are stored under. */
  readonly key: string;
}

/** Options of the tensorwright build plugin. */
export interface TensorwrightPluginOptions {
  /**
   * The device models are compiled for unless an import says otherwise (`?tensorwright&target=…`): `portable` (the
   * default: no optional WebGPU feature, default limits, so every browser runs the kernels), `swiftshader`,
   * `lavapipe`, `discrete`, or `device` (the build machine's own WebGPU adapter, through `requestGPUDevice`). A list
   * compiles one engine per target; the browser runs the first its adapter can (e.g. `['swiftshader', 'portable']`).
   */
  target?: ModelTargetName | readonly ModelTargetName[];
  /** Compile options every model import starts from; an import's query parameters override them. */
  defaults?: ModelImportOptions;
  /** The build cache folder (default `node_modules/.cache/tensorwright` under the current directory). */
  cacheDir?: string;
  /**
   * A public URL prefix the assets are served under (e.g. `https://cdn.example.com/models/`): asset URLs become this
   * prefix plus the emitted file name. By default they are resolved as the bundler resolves its own assets.
   */
  publicPath?: string;
  /** Called each time a model is actually compiled (not when its assets come from the build cache). */
  onCompile?: (event: CompileEvent) => void;
  /** Where progress lines go (default: stderr); `false` silences them. */
  log?: ((line: string) => void) | false;
}

/** The emitted file names of esbuild and webpack builds: a folder, then `<name>-<content hash>.<ext>`. */
function hashedFileName(name: string, bytes: Uint8Array): string {
  const hash = createHash('sha256').update(bytes).digest('hex').slice(0, 12);
  const dot = name.lastIndexOf('.');
  return `tensorwright/${name.slice(0, dot)}-${hash}${name.slice(dot)}`;
}

interface NativeRollupContext {
  emitFile(file: { type: 'asset'; name: string; source: Uint8Array }): string;
}

/** The plugin's hooks for one build (what `createUnplugin` adapts to each bundler). */
export function tensorwrightPluginHooks(options: TensorwrightPluginOptions = {}, meta: Pick<UnpluginContextMeta, 'framework'> = { framework: 'vite' }): UnpluginOptions {
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir(process.cwd()));
  const log = options.log === false ? () => {} : (options.log ?? ((line: string) => process.stderr.write(`[tensorwright] ${line}\n`)));
  const inFlight = new Map<string, Promise<{ key: string; assets: CompiledAssets }>>();
  let viteServe = false;
  let viteBase = '/';

  /** The assets of a model import for one target: from the build cache, or compiled (and cached) now. One compile per key at a time. */
  async function assetsFor(path: string, opts: ModelImportOptions & { target: ModelTargetName }): Promise<{ key: string; assets: CompiledAssets }> {
    const target = await resolveTarget(opts.target);
    const key = await cacheKey(await hashModelInput(path, cacheDir), opts, target.key);
    let job = inFlight.get(key);
    if (!job) {
      job = (async () => {
        const entry = new CacheEntry(cacheDir, key);
        const cached = await entry.read();
        if (cached) {
          log(`${path}: compiled assets from the build cache (${entry.dir})`);
          return { key, assets: cached };
        }
        options.onCompile?.({ path, options: opts, key });
        const assets = await compileModelAssets(path, opts, target);
        await entry.write(assets);
        const i = assets.info;
        log(`${path}: compiled for ${i.target} (${i.device}): ${i.kernels} kernels, ${i.dispatchesPerToken} dispatches per token, ${(i.weightBytes / 1024).toFixed(0)} KiB of weights${assets.tokenizer ? `, tokenizer ${assets.tokenizer.path}` : ''}`);
        return { key, assets };
      })().finally(() => inFlight.delete(key));
      inFlight.set(key, job);
    }
    return job;
  }

  /** Emits one asset the way the current bundler wants it, and says how the generated code finds it. */
  async function emit(ctx: UnpluginBuildContext, name: string, bytes: Uint8Array): Promise<AssetUrl> {
    if (meta.framework === 'vite' || meta.framework === 'rollup' || meta.framework === 'rolldown') {
      const referenceId = (ctx as unknown as NativeRollupContext).emitFile({ type: 'asset', name, source: bytes });
      return { kind: 'rollup', referenceId };
    }
    const fileName = hashedFileName(name, bytes);
    if (meta.framework === 'esbuild') {
      const native = ctx.getNativeBuildContext?.();
      const o = native?.framework === 'esbuild' ? native.build.initialOptions : undefined;
      const outdir = o?.outdir ?? (o?.outfile ? dirname(o.outfile) : undefined);
      if (!outdir) throw new InputError('the tensorwright esbuild plugin writes model assets next to the bundle: give esbuild an outdir or outfile');
      await mkdir(dirname(join(outdir, fileName)), { recursive: true });
      await writeFile(join(outdir, fileName), bytes);
    } else {
      ctx.emitFile({ type: 'asset', fileName, source: bytes });
    }
    if (options.publicPath !== undefined) return { kind: 'url', url: options.publicPath + fileName };
    return meta.framework === 'webpack' || meta.framework === 'rspack' ? { kind: 'webpack', fileName } : { kind: 'relative', fileName };
  }

  return {
    name: 'tensorwright',
    enforce: 'pre',
    resolveId: {
      filter: { id: /[?&]tensorwright(&|$)/ },
      handler(id, importer) {
        if (!isModelImport(id)) return null;
        const q = id.indexOf('?');
        const path = id.slice(0, q);
        const abs = isAbsolute(path) ? path : resolve(importer ? dirname(importer.split('?')[0]) : process.cwd(), path);
        return abs + id.slice(q);
      },
    },
    load: {
      filter: { id: /[?&]tensorwright(&|$)/ },
      async handler(id) {
        if (!isModelImport(id)) return null;
        const { path, options: own } = parseModelImport(id);
        this.addWatchFile(path);
        const opts = mergeImportOptions({ target: options.target ?? 'portable', ...options.defaults }, own);
        const variants: VariantAssets[] = [];
        let tokenizer: AssetUrl | undefined;
        for (const t of targetsOf(opts)) {
          const { key, assets } = await assetsFor(path, { ...opts, target: t });
          const at = (file: string): AssetUrl => ({ kind: 'url', url: `${viteBase}${DEV_URL_PREFIX}${key}/${file}` });
          const emitted = async (file: string, bytes: Uint8Array): Promise<AssetUrl> => (viteServe ? at(file) : emit(this, file, bytes));
          variants.push({ manifest: await emitted(CACHE_FILES.manifest, assets.manifest), weights: await emitted(CACHE_FILES.weights, assets.weights), info: assets.info });
          // every variant ships the same tokenizer file: emit it once
          if (assets.tokenizer && !tokenizer) tokenizer = await emitted(CACHE_FILES.tokenizer[assets.tokenizer.format], assets.tokenizer.bytes);
        }
        return modelModuleCode(variants, tokenizer);
      },
    },
    vite: {
      configResolved(config) {
        viteServe = config.command === 'serve';
        viteBase = config.base.endsWith('/') ? config.base : `${config.base}/`;
      },
      configureServer(server) {
        server.middlewares.use(serveCachedAssets(cacheDir, viteBase));
      },
    },
    esbuild: { loader: 'js' },
  };
}

/**
 * The tensorwright build plugin for every bundler `unplugin` supports: `tensorwright.vite(options)`,
 * `tensorwright.rollup(options)`, `tensorwright.esbuild(options)`, `tensorwright.webpack(options)`, ….
 */
export const tensorwright = createUnplugin<TensorwrightPluginOptions | undefined, false>((options, meta) => tensorwrightPluginHooks(options ?? {}, meta));
