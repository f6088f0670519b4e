// The Target and the WebGPU pipeline without a device: one classification of the device, the precision policy and
// KV layout reaching the engine, fusion that forms only what a kernel family implements, and the family registry.
import { describe, expect, it } from 'vitest';
import { compileModel } from '../src/compile.js';
import { KERNEL_FAMILIES, familyOf } from '../src/codegen/families/index.js';
import { createTarget } from '../src/codegen/target.js';
import { InputError } from '../src/errors.js';
import { loadModel } from '../src/frontends/load.js';
import { pagedAttentionOf } from '../src/ir/paged-kv.js';
import { hasShared, sharedPath } from './support/shared.js';

const STORIES = hasShared ? sharedPath('models/stories260K/stories260K.bin') : '';

describe('Target', () => {
  it('is built once from a profile or an adapter, with the device class, precision and KV layout', () => {
    const lp = createTarget('lavapipe');
    expect(lp).toMatchObject({ name: 'lavapipe', deviceClass: 'software-gpu', precision: 'auto', kv: { blockSize: 16, dtype: 'f32' } });
    expect(lp.profile).toMatchObject({ hasF16: true, f16Faster: false });
    const gpu = createTarget('discrete', { precision: 'f16', kv: { blockSize: 32, dtype: 'f16' } });
    expect(gpu).toMatchObject({ deviceClass: 'gpu', precision: 'f16', kv: { blockSize: 32, dtype: 'f16' } });
    expect(gpu.profile.f16Faster).toBe(true);
    expect(Object.isFrozen(gpu)).toBe(true);
  });
  it('rejects bad KV layouts, precisions and profiles with typed errors', () => {
    expect(() => createTarget('lavapipe', { kv: { blockSize: 12 } })).toThrow(InputError);
    expect(() => createTarget('lavapipe', { kv: { blockSize: 512 } })).toThrow(/power of two from 1 to 256/);
    expect(() => createTarget('lavapipe', { precision: 'bf16' as never })).toThrow(/precision must be/);
    expect(() => createTarget('tpu' as never)).toThrow(/unknown device profile 'tpu'.*lavapipe, discrete/);
    const noF16 = { backend: 'node-dawn' as const, adapter: { vendor: 'x', architecture: '', device: 'old gpu', description: '', isFallbackAdapter: false }, features: [], missingFeatures: [], limits: {} };
    expect(() => createTarget(noF16, { kv: { dtype: 'f16' } })).toThrow(/shader-f16.*old gpu/);
    expect(createTarget(noF16).profile.hasF16).toBe(false);
  });
});

describe('kernel family registry', () => {
  it('every form has a family that takes any node of it (the last family listed for a form has no takes() filter)', () => {
    const owners = new Map<string, string[]>();
    for (const f of KERNEL_FAMILIES) for (const form of [...f.ops, ...(f.fusion ? [`fused:${f.fusion.kind}`] : [])]) owners.set(form, [...(owners.get(form) ?? []), f.name]);
    for (const [form, fams] of owners) expect(KERNEL_FAMILIES.find((f) => f.name === fams[fams.length - 1])!.takes, form).toBeUndefined();
    expect(owners.has('fused:matmul') && owners.has('fused:rope') && owners.has('fused:elementwise')).toBe(true);
  });
  it('the target fusion patterns are the families declarations', () => {
    const t = createTarget('lavapipe');
    expect([...t.fusion.epilogueAnchors].sort()).toEqual(['matmul', 'rope']);
    expect(t.fusion.prologueAnchors).toEqual(['rope']);
    expect(t.fusion.elementwiseOps.has('silu') && t.fusion.elementwiseOps.has('where')).toBe(true);
  });
});

describe.skipIf(!hasShared)('the WebGPU pipeline on stories260K (no device)', () => {
  it('fusion forms only what a family accepts, and every fused node has a family', async () => {
    const model = await loadModel(STORIES);
    const target = createTarget('lavapipe');
    const c = compileModel(model, { target, prefillChunk: 16 });
    const paged = pagedAttentionOf(c.pipeline.graph);
    expect(paged.size).toBe(5);
    for (const n of c.pipeline.graph.nodes()) {
      if (n.op !== 'fused') continue;
      expect(paged.has(n) || target.fusion.accepts(n), `${String(n.attrs.kind)} #${n.id}`).toBe(true);
      expect(familyOf(n)).toBeDefined();
    }
  });
  it("precision 'f32' keeps every weight f32 on a device with f16; 'f16' stores the matmul weights in f16", async () => {
    const model = await loadModel(STORIES);
    const f32 = compileModel(model, { target: createTarget('discrete', { precision: 'f32' }), prefillChunk: 8 });
    expect(f32.manifest.weights.map((w) => w.dtype).filter((d) => d !== 'f32')).toEqual([]);
    expect(f32.manifest.requiredFeatures).not.toContain('shader-f16');
    const auto = compileModel(model, { target: createTarget('lavapipe'), prefillChunk: 8 });
    expect(auto.manifest.weights.every((w) => w.dtype === 'f32'), 'auto on lavapipe (f16 not faster)').toBe(true);
    for (const t of [createTarget('lavapipe', { precision: 'f16' }), createTarget('discrete')]) {
      const c = compileModel(model, { target: t, prefillChunk: 8 });
      const f16 = c.manifest.weights.filter((w) => w.dtype === 'f16');
      // the merged QKV, output, gated FFN and down projections of 5 layers
      expect(f16.length, `${t.name} ${t.precision}`).toBeGreaterThanOrEqual(5 * 4);
      expect(c.manifest.requiredFeatures).toContain('shader-f16');
    }
  });
  it('the KV layout of the target reaches the engine manifest', async () => {
    const model = await loadModel(STORIES);
    for (const blockSize of [8, 32]) {
      const c = compileModel(model, { target: createTarget('lavapipe', { kv: { blockSize } }), prefillChunk: 8 });
      expect(c.manifest.kv).toMatchObject({ blockSize, dtype: 'f32', numBlocks: Math.ceil(model.maxPositions / blockSize) });
    }
  });
});
