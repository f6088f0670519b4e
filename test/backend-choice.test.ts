// `--backend auto` for a model: both backends decode stories260K, the faster is recorded per model shape and adapter
// in the user cache directory, and the next choice reads it.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { backendChoiceKey, backendChoicePath, chooseBackendFor } from '../src/cli/backend-choice.js';
import { pickBackend } from '../src/cli/model-input.js';
import { loadModel, type LoadedModel } from '../src/frontends/load.js';
import { probeWebGPU, type DeviceInfo } from '../src/runtime/device.js';
import { acquireTestDevice } from './helpers/webgpu.js';
import { hasShared, noteMissingShared, sharedPath } from './support/shared.js';

noteMissingShared('backend choice tests');

const saved = { dir: process.env.TENSORWRIGHT_CACHE_DIR, mode: process.env.TENSORWRIGHT_AUTO_BACKEND };
afterEach(() => {
  for (const [k, v] of [['TENSORWRIGHT_CACHE_DIR', saved.dir], ['TENSORWRIGHT_AUTO_BACKEND', saved.mode]] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

let info: DeviceInfo | null = null;
let model: LoadedModel;
beforeAll(async () => {
  const gpu = await acquireTestDevice();
  await gpu?.destroy();
  const probe = await probeWebGPU();
  info = gpu && !('available' in probe) ? probe : null;
  if (hasShared) model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
}, 120_000);

describe.skipIf(!hasShared)('--backend auto for a model', () => {
  it('measures both backends once, records the faster, and reads the record next time', async (ctx) => {
    if (!info) return ctx.skip();
    process.env.TENSORWRIGHT_CACHE_DIR = mkdtempSync(join(tmpdir(), 'tw-cache-'));
    process.env.TENSORWRIGHT_AUTO_BACKEND = 'measure';
    const first = await chooseBackendFor(info, { model });
    expect(first.cpu_tok_s).toBeGreaterThan(0);
    expect(first.webgpu_tok_s).toBeGreaterThan(0);
    expect(first.backend).toBe(first.webgpu_tok_s >= first.cpu_tok_s ? 'webgpu' : 'cpu');
    const file = JSON.parse(readFileSync(backendChoicePath(), 'utf8')) as { version: number; choices: Record<string, unknown> };
    expect(file.version).toBe(1);
    expect(file.choices[backendChoiceKey(info, { model })]).toEqual(first);
    // the record decides from now on: make it say the other backend, and pickBackend follows it
    const other = first.backend === 'cpu' ? 'webgpu' : 'cpu';
    file.choices[backendChoiceKey(info, { model })] = { ...first, backend: other };
    writeFileSync(backendChoicePath(), JSON.stringify(file));
    expect(await pickBackend('auto', { model })).toBe(other);
    // another weight format is another model: a key of its own
    expect(backendChoiceKey(info, { model, quant: 'int8' })).not.toBe(backendChoiceKey(info, { model }));
    // explicit backends and the no-measure mode never measure
    expect(await pickBackend('cpu', { model })).toBe('cpu');
    process.env.TENSORWRIGHT_AUTO_BACKEND = 'webgpu';
    expect(await pickBackend('auto', { model })).toBe('webgpu');
    process.env.TENSORWRIGHT_AUTO_BACKEND = 'fastest';
    await expect(pickBackend('auto', { model })).rejects.toThrow(/TENSORWRIGHT_AUTO_BACKEND/);
  }, 120_000);

  it('a malformed record file is ignored (measured again and rewritten), not an error', async (ctx) => {
    if (!info) return ctx.skip();
    process.env.TENSORWRIGHT_CACHE_DIR = mkdtempSync(join(tmpdir(), 'tw-cache-'));
    writeFileSync(backendChoicePath(), '{"version": 1, "choices": ');
    const c = await chooseBackendFor(info, { model });
    expect(['cpu', 'webgpu']).toContain(c.backend);
    expect(JSON.parse(readFileSync(backendChoicePath(), 'utf8')).choices[backendChoiceKey(info, { model })].backend).toBe(c.backend);
  }, 120_000);
});
