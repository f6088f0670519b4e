// The `tensorwright/runtime` entry point runs saved engines without the compiler: bundling it must not pull in the
// pass pipeline, codegen or compile().
import { build } from 'esbuild';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './support/shared.js';

describe('runtime entry point', () => {
  it('bundles without src/passes, src/codegen or src/compile.ts', async () => {
    const r = await build({
      entryPoints: [`${repoRoot}/src/runtime/index.ts`],
      bundle: true,
      write: false,
      platform: 'node',
      format: 'esm',
      metafile: true,
      external: ['webgpu'],
      logLevel: 'silent',
    });
    const inputs = Object.keys(r.metafile.inputs);
    expect(inputs.some((p) => p.includes('src/runtime/engine.ts'))).toBe(true);
    const forbidden = inputs.filter((p) => /src\/(passes|codegen)\/|src\/compile\.ts|src\/frontends\//.test(p));
    expect(forbidden).toEqual([]);
  });
});
