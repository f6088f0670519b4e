/**
 * The published package, as a user gets it: `npm pack` (whose `prepare` script builds dist/) makes the tarball, which
 * is unpacked into a temporary project. There the declarations must type-check in a strict consumer
 * (`strict`, `skipLibCheck: false`, `node16` and `bundler` resolution), the packed CLI must run, and the README's
 * API example (the fenced blocks after an `<!-- api-example: ... -->` marker, in order) must run as pasted with
 * `import ... from 'tensorwright'`.
 *
 * Installing: the tarball is extracted into the project's `node_modules/tensorwright`, and each of its declared
 * `dependencies` is a symlink to the repository's `node_modules` copy. `npm install --offline <tarball>` is not used
 * because it is not reliable after `npm ci`: `npm ci` caches the tarballs the lockfile names but not the registry
 * metadata (packuments) that resolving the tarball's semver ranges needs, so an offline install fails with ENOTCACHED
 * on a clean CI cache, and online it would download. TypeScript is the repository's own.
 * @module
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeWebGPU } from '../src/runtime/device.js';
import { hasShared, noteMissingShared, repoRoot, sharedPath } from './support/shared.js';

const run = promisify(execFile);
const LONG = 600_000;

/** `{ code, output }` of a command; a non-zero exit is a result here, not an exception. */
async function sh(cmd: string, args: readonly string[], cwd: string): Promise<{ code: number; stdout: string; output: string }> {
  try {
    const r = await run(cmd, args, { cwd, maxBuffer: 64 << 20, env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? tmpdir() } });
    return { code: 0, stdout: r.stdout, output: `${r.stdout}${r.stderr}` };
  } catch (e) {
    const x = e as { code?: number | string; stdout?: string; stderr?: string; message: string };
    return { code: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout ?? '', output: `${x.stdout ?? ''}${x.stderr ?? ''}${x.message}` };
  }
}

/** The README's API example: the ```ts blocks that follow an `<!-- api-example: <kind> ... -->` line, in order. */
function readmeExamples(): { kind: string; code: string }[] {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  return [...readme.matchAll(/^<!-- api-example: ([\w-]+)[^\n]*-->\n```ts\n([\s\S]*?)^```$/gm)].map((m) => ({ kind: m[1], code: m[2] }));
}

/** A strict consumer's use of the API: the compiler, the runtime entry point, typed errors. */
const CONSUMER = `import { compile, compileModel, createTarget, loadModel, readOnnx, GraphBuilder, runGraph, runPasses, Tensor, requestGPUDevice, InputError, type LoadedModel } from 'tensorwright';
import { Engine, type EngineSession, type GPUDeviceHandle } from 'tensorwright/runtime';

export async function build(path: string): Promise<Engine> {
  const model: LoadedModel = await loadModel(path);
  const gpu: GPUDeviceHandle = await requestGPUDevice();
  const engine = await compile(model, { device: gpu.info, quant: 'int8', kv: { blockSize: 16, dtype: 'f32' } });
  const session: EngineSession = await engine.createSession({ device: gpu, profile: true });
  const r = await session.generate([1, 2, 3], { steps: 8, temperature: 0, topp: 0.9, seed: 1 });
  const ids: number[] = r.generated;
  const ms: number = session.lastProfile.reduce((a, t) => a + t.ms, 0);
  console.log(ids, ms, compileModel(model, { target: createTarget('lavapipe') }).manifest.kernels.length);
  await session.destroy();
  await engine.save('engine/');
  return Engine.load('engine/');
}

export async function graphs(): Promise<number> {
  const b = new GraphBuilder();
  const x = b.input('x', 'f32', ['batch', 4]);
  const g = runPasses(b.build({ y: b.relu(x) }), 'O3').graph;
  const out = runGraph(g, { x: Tensor.from('f32', [1, 4], [1, -2, 3, -4]) });
  const onnx = await readOnnx('model.onnx');
  try {
    runGraph(onnx.graph, {});
  } catch (e) {
    if (e instanceof InputError) console.log(e.code);
  }
  // @ts-expect-error the declarations are real types, not any: a device must be a device
  await compile(await loadModel('m.bin'), { device: 42 });
  return out.y?.shape.length ?? 0;
}
`;

noteMissingShared('the README API example run (it loads stories260K.bin)');

describe('the npm package', () => {
  let dir = '';
  let project = '';
  let files: string[] = [];
  let pkg: { version: string; license: string; dependencies: Record<string, string>; exports: Record<string, string | Record<string, string>> };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tw-package-'));
    // --json keeps stdout to the JSON (prepare's output goes to stderr)
    const pack = await sh('npm', ['pack', '--json', '--pack-destination', dir], repoRoot);
    if (pack.code !== 0) throw new Error(`npm pack failed:\n${pack.output}`);
    const [info] = JSON.parse(pack.stdout) as { filename: string; files: { path: string }[] }[];
    files = info.files.map((f) => f.path);
    project = join(dir, 'consumer');
    const installed = join(project, 'node_modules', 'tensorwright');
    mkdirSync(installed, { recursive: true });
    const tar = await sh('tar', ['-xzf', join(dir, info.filename), '-C', installed, '--strip-components=1'], dir);
    if (tar.code !== 0) throw new Error(`tar failed:\n${tar.output}`);
    pkg = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
    for (const dep of Object.keys(pkg.dependencies)) {
      const link = join(project, 'node_modules', dep);
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync(join(repoRoot, 'node_modules', dep), link, 'junction');
    }
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  }, LONG);
  // the links into the repository's node_modules are removed, not followed
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('holds dist, bin, README and LICENSE, every export target, and no sources, tests or source maps', () => {
    for (const f of ['LICENSE', 'README.md', 'package.json', 'bin/tensorwright.js', 'dist/cli/main.js']) expect(files).toContain(f);
    const targets = Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e)));
    for (const t of targets) expect(files, t).toContain(t.replace(/^\.\//, ''));
    expect(files.filter((f) => /^(src|test|bench|scripts)\//.test(f))).toEqual([]);
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
  });

  it('its LICENSE is the MIT license package.json names', () => {
    expect(pkg.license).toBe('MIT');
    const license = readFileSync(join(project, 'node_modules', 'tensorwright', 'LICENSE'), 'utf8');
    expect(license).toMatch(/^MIT License\n\nCopyright \(c\) 2026 the tensorwright authors\n/);
    expect(license).toContain('THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND');
  });

  it('the packed CLI runs and prints the package version', async () => {
    const r = await sh(process.execPath, [join(project, 'node_modules', 'tensorwright', 'bin', 'tensorwright.js'), '--version'], project);
    expect(r.code, r.output).toBe(0);
    expect(r.stdout).toBe(`${pkg.version}\n`);
  });

  it('a strict consumer type-checks against the published declarations (skipLibCheck false; node16 and bundler resolution)', async () => {
    const examples = readmeExamples();
    writeFileSync(join(project, 'consumer.ts'), CONSUMER);
    writeFileSync(join(project, 'readme-example.ts'), examples.map((e) => e.code).join('\n'));
    const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
    const common = { target: 'ES2022', strict: true, skipLibCheck: false, noEmit: true, noUncheckedIndexedAccess: true, exactOptionalPropertyTypes: true };
    for (const [name, resolution] of [['node16', { module: 'node16', moduleResolution: 'node16' }], ['bundler', { module: 'esnext', moduleResolution: 'bundler' }]] as const) {
      writeFileSync(join(project, `tsconfig.${name}.json`), JSON.stringify({ compilerOptions: { ...common, ...resolution }, files: ['consumer.ts', 'readme-example.ts'] }));
      const r = await sh(process.execPath, [tsc, '-p', `tsconfig.${name}.json`], project);
      expect(r.code, `${name}:\n${r.output}`).toBe(0);
    }
  }, LONG);

  it.skipIf(!hasShared)('the README API example runs as pasted (its WebGPU part matches the CPU reference when there is an adapter)', async () => {
    const examples = readmeExamples();
    expect(examples.map((e) => e.kind)).toEqual(['cpu', 'webgpu']);
    const probe = await probeWebGPU();
    const gpu = !('available' in probe);
    if (!gpu && process.env.REQUIRE_WEBGPU === '1') throw new Error(`REQUIRE_WEBGPU=1 but no WebGPU adapter: ${(probe as { reason: string }).reason}`);
    if (!gpu) process.stderr.write('[tensorwright] README example: no WebGPU adapter, its webgpu block SKIPPED\n');
    const blocks = examples.filter((e) => gpu || e.kind !== 'webgpu');
    // after the example, its results as one JSON line (the test's addition, not part of the README)
    const report = `\nconsole.log(JSON.stringify({ out: out.shape, cpu: r.generated${gpu ? ', webgpu: generated.generated' : ''} }));\n`;
    writeFileSync(join(project, 'example.mjs'), blocks.map((e) => e.code).join('\n') + report);
    symlinkSync(sharedPath('models/stories260K/stories260K.bin'), join(project, 'stories260K.bin'));
    const r = await sh(process.execPath, ['example.mjs'], project);
    expect(r.code, r.output).toBe(0);
    const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { out: number[]; cpu: number[]; webgpu?: number[] };
    expect(result.out).toEqual([2, 32]);
    expect(result.cpu.length).toBeGreaterThan(0);
    if (gpu) {
      expect(result.webgpu).toEqual(result.cpu);
      expect(existsSync(join(project, 'engine', 'engine.json'))).toBe(true);
    }
  }, LONG);
});
