/**
 * The build plugin (`tensorwright/plugin`, issue #11 item 3): import queries, model imports compiled by esbuild and
 * Vite builds into hashed assets (checked against `compileModel` on the same model and the tokenizer file in
 * ../shared), the build cache (a second build compiles nothing: compile calls counted), ONNX graphs, the dev-server
 * middleware, and typed errors for bad imports. No device is needed: models are compiled for named profiles.
 */
import { build as esbuild } from 'esbuild';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { build as viteBuild } from 'vite';
import { InputError } from '../src/errors.js';
import { compileModel } from '../src/compile.js';
import { createTarget } from '../src/codegen/target.js';
import { loadModel } from '../src/frontends/load.js';
import { esbuild as esbuildPlugin, vite as vitePlugin, parseImportOptions, parseModelImport, isModelImport, serveCachedAssets, DEV_URL_PREFIX, type CompileEvent, type TensorwrightPluginOptions } from '../src/plugin/index.js';
import { chooseVariant, type CompiledModel } from '../src/plugin/client.js';
import { DeviceError } from '../src/errors.js';
import { profileDevice } from '../src/codegen/target.js';
import { describeGPU, type TestGPU } from './helpers/webgpu.js';
import { unmetRequirements } from '../src/plugin/engine-requirements.js';
import { expectThrown } from './support/expect-thrown.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('build plugin tests');

const MODEL = hasShared ? sharedPath('models/stories260K/stories260K.bin') : '';
const TOKENIZER = hasShared ? sharedPath('models/stories260K/tok512.bin') : '';
const tmp = mkdtempSync(join(tmpdir(), 'tw-plugin-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** What `gpu` lacks of a variant's requirements. */
function unmetOf(v: CompiledModel['variants'][number], gpu: TestGPU): string[] {
  return unmetRequirements(v.info.requires, gpu.info);
}

/** SHA-256 of some bytes: compared instead of the bytes (deep equality of a megabyte array is slow). */
function sha(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Bundles `source` (an entry module) with esbuild and the plugin; returns the output folder and the compile events. */
async function bundleWithEsbuild(name: string, source: string, opts: TensorwrightPluginOptions): Promise<{ outdir: string; compiles: CompileEvent[] }> {
  const dir = join(tmp, name);
  const entry = join(tmp, `${name}-entry.js`);
  writeFileSync(entry, source);
  const compiles: CompileEvent[] = [];
  await esbuild({
    entryPoints: [entry],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    outdir: dir,
    logLevel: 'silent',
    // the browser-side client stays an import, so the bundle can be loaded here to read its URLs
    external: ['*/plugin/client.ts', '*/plugin/client.js'],
    plugins: [esbuildPlugin({ log: false, ...opts, onCompile: (e) => compiles.push(e) })],
  });
  return { outdir: dir, compiles };
}

describe('import queries', () => {
  it('reads every option and rejects unknown ones and bad values with InputError naming the parameter', () => {
    expect(isModelImport('./m.bin?tensorwright')).toBe(true);
    expect(isModelImport('./m.bin?quant=int4&tensorwright')).toBe(true);
    expect(isModelImport('./m.bin?url')).toBe(false);
    expect(isModelImport('./tensorwright.bin')).toBe(false);
    expect(parseModelImport('./m.gguf?tensorwright&quant=int4-g32&sparsity=2:4&kvBlockSize=16&kvDtype=f16&precision=f32&target=swiftshader&prefillChunk=32&passes=O2')).toEqual({
      path: './m.gguf',
      options: { quant: 'int4-g32', sparsity: '2:4', kvBlockSize: 16, kvDtype: 'f16', precision: 'f32', target: 'swiftshader', prefillChunk: 32, passes: 'O2' },
    });
    expect(parseImportOptions('tensorwright&dims=seq:8,batch:1')).toEqual({ dims: { seq: 8, batch: 1 } });
    for (const [query, named] of [
      ['tensorwright&quantize=int4', "unknown ?tensorwright option 'quantize'"],
      ['tensorwright&kvBlockSize=1.5', 'kvBlockSize must be an integer'],
      ['tensorwright&temperature=0.8', "unknown ?tensorwright option 'temperature'"],
      ['tensorwright&target=gpu', 'target must be one of device, portable'],
      ['tensorwright&precision=f64', 'precision must be one of'],
      ['tensorwright&dims=seq', 'dims must read name:value'],
      ['tensorwright=yes', 'takes no value'],
    ])
      expect(expectThrown(() => parseImportOptions(query), InputError, query).message).toContain(named);
  });
});

describe.skipIf(!hasShared)('model imports (stories260K)', () => {
  const cacheDir = join(tmp, 'cache');

  it('esbuild: compiles at build time into hashed engine.json, weights.bin and tokenizer assets the module points at', async () => {
    const { outdir, compiles } = await bundleWithEsbuild('esb', `import model from ${JSON.stringify(`${MODEL}?tensorwright`)};\nexport default model;\n`, { cacheDir, target: 'portable' });
    expect(compiles.map((c) => c.path)).toEqual([MODEL]);
    const files = readdirSync(join(outdir, 'tensorwright')).sort();
    expect(files).toHaveLength(3);
    expect(files[0]).toMatch(/^engine-[0-9a-f]{12}\.json$/);
    expect(files[1]).toMatch(/^tokenizer-[0-9a-f]{12}\.bin$/);
    expect(files[2]).toMatch(/^weights-[0-9a-f]{12}\.bin$/);

    // the emitted engine is what compileModel makes of the same model for the same target
    const direct = compileModel(await loadModel(MODEL), { target: createTarget('portable') });
    const manifest = JSON.parse(readFileSync(join(outdir, 'tensorwright', files[0]), 'utf8'));
    expect(manifest.kernels.map((k: { wgsl: string }) => k.wgsl)).toEqual(direct.manifest.kernels.map((k) => k.wgsl));
    expect(manifest.requiredFeatures).toEqual([]);
    expect(sha(readFileSync(join(outdir, 'tensorwright', files[2])))).toBe(sha(direct.weights));
    expect(sha(readFileSync(join(outdir, 'tensorwright', files[1])))).toBe(sha(readFileSync(TOKENIZER)));

    // the module's URLs resolve to the emitted files, and its info describes them
    const model = ((await import(pathToFileURL(join(outdir, 'esb-entry.js')).href)) as { default: CompiledModel }).default;
    expect(model.manifestUrl).toBe(pathToFileURL(join(outdir, 'tensorwright', files[0])).href);
    expect(model.weightsUrl).toBe(pathToFileURL(join(outdir, 'tensorwright', files[2])).href);
    expect(model.tokenizerUrl).toBe(pathToFileURL(join(outdir, 'tensorwright', files[1])).href);
    expect(typeof model.load).toBe('function');
    expect(model.info).toMatchObject({
      format: 'llama2c',
      family: 'llama',
      target: 'portable',
      kernels: direct.manifest.kernels.length,
      weightBytes: direct.weights.byteLength,
      weights: direct.manifest.weights.length,
      vocabSize: 512,
      maxPositions: 512,
      bosId: 1,
      tokenizer: 'llama2c-bin',
      tokenizerBytes: readFileSync(TOKENIZER).byteLength,
    });
    expect(model.info.dispatchesPerToken).toBe(direct.manifest.plans[0].dispatches.length + 1);
  });

  it('a second build finds the build cache and compiles nothing; other options or targets compile again', async () => {
    const first = await bundleWithEsbuild('cache-1', `import m from ${JSON.stringify(`${MODEL}?tensorwright&quant=int8`)};\nexport default m;\n`, { cacheDir, target: 'portable' });
    expect(first.compiles).toHaveLength(1);
    expect(first.compiles[0].options).toEqual({ quant: 'int8', target: 'portable' });
    const second = await bundleWithEsbuild('cache-2', `import m from ${JSON.stringify(`${MODEL}?tensorwright&quant=int8`)};\nexport default m;\n`, { cacheDir, target: 'portable' });
    expect(second.compiles).toHaveLength(0);
    expect(readdirSync(join(second.outdir, 'tensorwright')).sort()).toEqual(readdirSync(join(first.outdir, 'tensorwright')).sort());
    // the same options given as plugin defaults are the same key
    const viaDefaults = await bundleWithEsbuild('cache-3', `import m from ${JSON.stringify(`${MODEL}?tensorwright`)};\nexport default m;\n`, { cacheDir, target: 'portable', defaults: { quant: 'int8' } });
    expect(viaDefaults.compiles).toHaveLength(0);
    const otherTarget = await bundleWithEsbuild('cache-4', `import m from ${JSON.stringify(`${MODEL}?tensorwright&quant=int8&target=swiftshader`)};\nexport default m;\n`, { cacheDir });
    expect(otherTarget.compiles.map((c) => c.options.target)).toEqual(['swiftshader']);
    // two imports of one model in one build compile it once
    const twice = await bundleWithEsbuild('cache-5', `import a from ${JSON.stringify(`${MODEL}?tensorwright&kvBlockSize=32`)};\nimport b from ${JSON.stringify(`${MODEL}?kvBlockSize=32&tensorwright`)};\nexport default [a, b];\n`, { cacheDir });
    expect(twice.compiles).toHaveLength(1);
  });

  it('vite (rollup) build: emits the assets through the bundler and points at them with import.meta URLs', async () => {
    const root = join(tmp, 'vite-app');
    const outDir = join(root, 'dist');
    const entry = join(tmp, 'vite-entry.js');
    writeFileSync(entry, `import model from ${JSON.stringify(`${MODEL}?tensorwright&target=swiftshader`)};\nexport const urls = [model.manifestUrl, model.weightsUrl, model.tokenizerUrl];\nexport const info = model.info;\n`);
    const compiles: CompileEvent[] = [];
    await viteBuild({
      configFile: false,
      root: tmp,
      logLevel: 'silent',
      plugins: [vitePlugin({ cacheDir: join(tmp, 'vite-cache'), log: false, onCompile: (e) => compiles.push(e) })],
      build: { outDir, emptyOutDir: true, minify: false, lib: { entry, formats: ['es'], fileName: 'entry' }, rollupOptions: { external: [/\/plugin\/client\.(ts|js)$/], output: { assetFileNames: 'assets/[name]-[hash][extname]' } } },
    });
    expect(compiles).toHaveLength(1);
    const assets = readdirSync(join(outDir, 'assets')).sort();
    expect(assets.some((f) => /^engine-.+\.json$/.test(f))).toBe(true);
    expect(assets.some((f) => /^weights-.+\.bin$/.test(f))).toBe(true);
    expect(assets.some((f) => /^tokenizer-.+\.bin$/.test(f))).toBe(true);
    const out = readdirSync(outDir).find((f) => /\.m?js$/.test(f))!;
    const mod = (await import(pathToFileURL(join(outDir, out)).href)) as { urls: string[]; info: CompiledModel['info'] };
    for (const u of mod.urls) expect(assets).toContain(decodeURIComponent(new URL(u).pathname).split('/').pop());
    expect(mod.info.target).toBe('swiftshader');
    expect(mod.info.requires).toEqual({ features: ['subgroups'], subgroupSize: 4, maxComputeInvocationsPerWorkgroup: 256, maxStorageBufferBindingSize: expect.any(Number) });
  });

  it('the dev-server middleware serves a cache entry and nothing else', async () => {
    const entry = readdirSync(cacheDir).find((d) => /^[0-9a-f]{32}$/.test(d))!;
    const server: Server = createServer((req, res) => serveCachedAssets(cacheDir, '/')(req, res, () => ((res.statusCode = 418), res.end())));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    try {
      const get = (path: string): Promise<Response> => fetch(`http://127.0.0.1:${port}${path}`);
      const weights = await get(`/${DEV_URL_PREFIX}${entry}/weights.bin`);
      expect(weights.status).toBe(200);
      expect(sha(new Uint8Array(await weights.arrayBuffer()))).toBe(sha(readFileSync(join(cacheDir, entry, 'weights.bin'))));
      expect((await get(`/${DEV_URL_PREFIX}${entry}/engine.json`)).headers.get('content-type')).toBe('application/json');
      expect((await get(`/${DEV_URL_PREFIX}${entry}/info.json`)).status).toBe(404);
      expect((await get(`/${DEV_URL_PREFIX}..%2F..%2Fetc/passwd`)).status).toBe(404);
      expect((await get(`/${DEV_URL_PREFIX}${'0'.repeat(32)}/engine.json`)).status).toBe(404);
      expect((await get('/index.html')).status).toBe(418);
    } finally {
      server.close();
    }
  });

  it('fails the build with a typed message for a missing model, a bad option, or options that do not fit the model', async () => {
    const failure = async (spec: string): Promise<string> => {
      try {
        await bundleWithEsbuild('bad', `import m from ${JSON.stringify(spec)};\nexport default m;\n`, { cacheDir });
      } catch (e) {
        return (e as Error).message;
      }
      throw new Error(`building ${spec} did not fail`);
    };
    expect(await failure(`${join(tmp, 'nope.bin')}?tensorwright`)).toContain('does not exist');
    expect(await failure(`${MODEL}?tensorwright&quant=int3`)).toMatch(/int3/);
    expect(await failure(`${MODEL}?tensorwright&kvBlockSize=3`)).toContain('kv.blockSize must be a power of two');
    expect(await failure(`${MODEL}?tensorwright&dims=seq:4`)).toContain('dims applies to ONNX graphs');
    const garbage = join(tmp, 'garbage.bin');
    writeFileSync(garbage, new Uint8Array(64).fill(7));
    expect(await failure(`${garbage}?tensorwright`)).toMatch(/ModelFormatError|unrecognised|magic|header|dim/i);
  });

  it('compiles GGUF files and ONNX graphs too', async () => {
    const gguf = sharedPath('models/gguf/stories260K-Q8_0.gguf');
    const onnx = sharedPath('onnx/node/test_gemm_default_no_bias/model.onnx');
    const { outdir, compiles } = await bundleWithEsbuild('formats', `import g from ${JSON.stringify(`${gguf}?tensorwright`)};\nimport o from ${JSON.stringify(`${onnx}?tensorwright`)};\nexport default [g, o];\n`, { cacheDir });
    expect(compiles).toHaveLength(2);
    const [g, o] = ((await import(pathToFileURL(join(outdir, 'formats-entry.js')).href)) as { default: CompiledModel[] }).default;
    expect(g.info).toMatchObject({ format: 'gguf', family: 'llama', vocabSize: 512 });
    expect(o.info).toMatchObject({ format: 'onnx' });
    expect(o.info.vocabSize).toBeUndefined();
    expect(o.tokenizerUrl).toBeUndefined();
    const manifest = JSON.parse(readFileSync(new URL(o.manifestUrl), 'utf8'));
    expect(manifest.lm).toBeUndefined();
    expect(manifest.inputs.map((i: { name: string }) => i.name)).toEqual(['a', 'b']);
  });
});

describe.skipIf(!hasShared)('variants: one engine per target, the first the adapter can run', () => {
  let model: CompiledModel;
  const golden = hasShared ? (JSON.parse(readFileSync(sharedPath('golden/stories260K/stories260K-1.json'), 'utf8')) as { prompt: string; prompt_ids: number[]; generated_ids: number[] }) : undefined;

  it('records what each engine needs, and picks by the adapter (subgroup size, features, limits)', async () => {
    const { outdir, compiles } = await bundleWithEsbuild('variants', `import m from ${JSON.stringify(`${MODEL}?tensorwright&target=swiftshader,lavapipe,portable`)};\nexport default m;\n`, { cacheDir: join(tmp, 'variants-cache') });
    expect(compiles.map((c) => c.options.target).sort()).toEqual(['lavapipe', 'portable', 'swiftshader']);
    model = ((await import(pathToFileURL(join(outdir, 'variants-entry.js')).href)) as { default: CompiledModel }).default;
    expect(model.variants.map((v) => v.info.target)).toEqual(['swiftshader', 'lavapipe', 'portable']);
    expect(model.info.target).toBe('swiftshader');
    expect(model.manifestUrl).toBe(model.variants[0].manifestUrl);
    expect(model.variants[2].info.requires).toEqual({ features: [], maxComputeInvocationsPerWorkgroup: 256, maxStorageBufferBindingSize: expect.any(Number) });
    expect(model.variants[2].info.requires.maxStorageBufferBindingSize).toBeLessThanOrEqual(128 * 1024 * 1024);
    expect(model.variants[1].info.requires).toMatchObject({ features: ['subgroups'], subgroupSize: 8 });
    // each adapter gets its own engine (SwiftShader's subgroups of 4, lavapipe's of 8); others the portable one
    expect(chooseVariant(model.variants, { ...profileDevice('swiftshader'), limits: { maxComputeInvocationsPerWorkgroup: 256, maxStorageBufferBindingSize: 1 << 30 } }).info.target).toBe('swiftshader');
    expect(chooseVariant(model.variants, profileDevice('lavapipe')).info.target).toBe('lavapipe');
    expect(chooseVariant(model.variants, { ...profileDevice('lavapipe'), subgroupSize: { min: 8, max: 32 } }).info.target).toBe('portable');
    expect(chooseVariant(model.variants, profileDevice('portable')).info.target).toBe('portable');
    expect(chooseVariant(model.variants, profileDevice('discrete')).info.target).toBe('portable');
    await expect(model.choose(profileDevice('portable'), 'gpu')).rejects.toThrow(/no engine of this model was compiled for target 'gpu' \(compiled: swiftshader, lavapipe, portable\)/);
    await expect(model.choose(profileDevice('portable'), 'lavapipe')).rejects.toThrow(/lavapipe needs feature subgroups/);
    const tiny = { ...profileDevice('portable'), limits: { maxComputeInvocationsPerWorkgroup: 64, maxStorageBufferBindingSize: 1 << 30 } };
    const err = expectThrown(() => chooseVariant(model.variants, tiny), DeviceError);
    expect(err.message).toContain('swiftshader needs feature subgroups, subgroups of exactly 4');
    expect(err.message).toContain('lavapipe needs feature subgroups, subgroups of exactly 8');
    expect(err.message).toContain('portable needs maxComputeInvocationsPerWorkgroup 256 (the adapter\'s is 64)');
  });

  describeGPU('on this machine\'s adapter', (gpu) => {
    it('load() runs the engine the adapter can run, and it reproduces run.c\'s greedy ids', async (ctx) => {
      if (!model || !golden) return ctx.skip();
      const chosen = await model.choose(gpu().info);
      expect(unmetOf(chosen, gpu())).toEqual([]);
      const engine = await model.load();
      expect(engine.manifest.device.description).toBe(chosen.info.device);
      const tokenizer = await model.loadTokenizer();
      const ids = tokenizer.encode(golden.prompt);
      expect(ids).toEqual(golden.prompt_ids);
      const session = await engine.createSession({ device: gpu() });
      try {
        const r = await session.generate(ids, { steps: ids.length + 5, temperature: 0, topp: 0.9, seed: 1 });
        expect(r.generated).toEqual(golden.generated_ids.slice(0, 6));
      } finally {
        await session.destroy();
      }
    }, 300_000);
  });
});
