/**
 * What a device must offer to run an engine compiled ahead of time: the features its kernels use, the subgroup size
 * they were written for (kernels for a fixed-size target assume it), the most invocations one workgroup has, and the
 * largest buffer one binding covers. The build records them per compiled variant; the browser side picks the first
 * variant the adapter satisfies, so an engine never runs on a device it would compute garbage on.
 * @module
 */
import type { DeviceInfo } from '../runtime/device.js';
import type { EngineManifest } from '../runtime/engine-manifest.js';

/** What a device must offer to run an engine. */
export interface EngineRequirements {
  /** WebGPU features the kernels use. */
  readonly features: readonly string[];
  /** The subgroup size the kernels assume (the adapter's must be exactly this), when they assume one. */
  readonly subgroupSize?: number;
  /** The most invocations in one workgroup of any kernel. */
  readonly maxComputeInvocationsPerWorkgroup: number;
  /** The largest storage buffer one binding covers (activations, a weight payload, one layer's KV cache). */
  readonly maxStorageBufferBindingSize: number;
}

/** The largest `@workgroup_size` product in the kernels (WebGPU's guaranteed 256 when none is found). */
function largestWorkgroup(manifest: EngineManifest): number {
  let most = 0;
  for (const k of manifest.kernels)
    for (const m of k.wgsl.matchAll(/@workgroup_size\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?(?:,\s*(\d+)\s*)?\)/g)) most = Math.max(most, Number(m[1]) * Number(m[2] ?? 1) * Number(m[3] ?? 1));
  return most || 256;
}

/** The requirements of an engine compiled for `device` (the target's device facts). */
export function requirementsOf(manifest: EngineManifest, device: Pick<DeviceInfo, 'subgroupSize'>): EngineRequirements {
  const features = [...manifest.requiredFeatures].sort();
  const sg = device.subgroupSize;
  const fixed = features.includes('subgroups') && sg && sg.min === sg.max ? sg.min : undefined;
  const parts = manifest.weights.flatMap((w) => w.parts.map((p) => p.byteLength));
  const kv = manifest.kv ? manifest.kv.numBlocks * manifest.kv.blockSize * manifest.kv.numKvHeads * manifest.kv.headDim * (manifest.kv.dtype === 'f16' ? 2 : 4) : 0;
  return {
    features,
    ...(fixed !== undefined ? { subgroupSize: fixed } : {}),
    maxComputeInvocationsPerWorkgroup: largestWorkgroup(manifest),
    maxStorageBufferBindingSize: Math.max(0, kv, ...manifest.slots, ...(manifest.scratch ?? []), ...parts),
  };
}

/** What `device` lacks of `req`, one phrase each (empty when it can run the engine). */
export function unmetRequirements(req: EngineRequirements, device: Pick<DeviceInfo, 'features' | 'limits' | 'subgroupSize'>): string[] {
  const out: string[] = [];
  for (const f of req.features) if (!device.features.includes(f)) out.push(`feature ${f}`);
  if (req.subgroupSize !== undefined) {
    const sg = device.subgroupSize;
    if (!sg || sg.min !== req.subgroupSize || sg.max !== req.subgroupSize) out.push(`subgroups of exactly ${req.subgroupSize} (the adapter's are ${sg ? (sg.min === sg.max ? sg.min : `${sg.min}-${sg.max}`) : 'unknown'})`);
  }
  const limit = (name: 'maxComputeInvocationsPerWorkgroup' | 'maxStorageBufferBindingSize'): void => {
    const have = device.limits[name];
    if (have !== undefined && have < req[name]) out.push(`${name} ${req[name]} (the adapter's is ${have})`);
  };
  limit('maxComputeInvocationsPerWorkgroup');
  limit('maxStorageBufferBindingSize');
  return out;
}
