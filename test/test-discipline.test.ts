// Tests that cannot pass vacuously: the switches CI sets (REQUIRE_SHARED=1, REQUIRE_WEBGPU=1) turn a missing data
// folder or adapter feature into a failure, and no test asserts wall-clock time (timings live in `npm run bench`).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { gpuHas } from './helpers/webgpu.js';
import { repoRoot, requiredPresent } from './support/shared.js';

describe('test discipline', () => {
  const saved = process.env.REQUIRE_WEBGPU;
  afterEach(() => {
    if (saved === undefined) delete process.env.REQUIRE_WEBGPU;
    else process.env.REQUIRE_WEBGPU = saved;
  });

  it('a required data path that is missing fails instead of skipping', () => {
    const missing = join(repoRoot, 'no-such-folder-for-tests');
    expect(requiredPresent(missing, false)).toBe(false);
    expect(() => requiredPresent(missing, true)).toThrow(/REQUIRE_SHARED=1 but .*no-such-folder-for-tests is missing/);
    expect(requiredPresent(repoRoot, true)).toBe(true);
  });

  it('a missing adapter feature skips on a user machine and fails under REQUIRE_WEBGPU=1', () => {
    const device = { info: { features: ['subgroups'] } };
    delete process.env.REQUIRE_WEBGPU;
    expect(gpuHas(device, 'subgroups')).toBe(true);
    expect(gpuHas(device, 'shader-f16')).toBe(false);
    expect(gpuHas({ features: ['shader-f16'] }, 'shader-f16')).toBe(true);
    process.env.REQUIRE_WEBGPU = '1';
    expect(() => gpuHas(device, 'shader-f16')).toThrow(/REQUIRE_WEBGPU=1 but the test device lacks shader-f16/);
    expect(() => gpuHas(device, 'one fixed subgroup size', false)).toThrow(/one fixed subgroup size/);
  });

  it('no test asserts on wall-clock time', () => {
    const offenders: string[] = [];
    for (const f of readdirSync(join(repoRoot, 'test')).filter((n) => n.endsWith('.test.ts'))) {
      const lines = readFileSync(join(repoRoot, 'test', f), 'utf8').split('\n');
      lines.forEach((l, i) => {
        if (/expect\([^)]*(performance\.now|Date\.now)|\b(ms|elapsed|seconds)\)\.toBeLessThan/.test(l)) offenders.push(`${f}:${i + 1}: ${l.trim()}`);
      });
    }
    expect(offenders).toEqual([]);
  });
});
