/**
 * Building the {@link Target}: once, from a WebGPU adapter's {@link DeviceInfo} or from a named profile (to compile
 * or inspect without a device), with the precision policy and KV-cache layout asked for, and the fusion patterns of
 * the kernel families. This is the one place that classifies a device.
 * @mergeModuleWith compile
 * @module
 */
import { InputError } from '../errors.js';
import { discreteGpuProfile, lavapipeProfile } from '../ir/device-profile.js';
import { KV_CACHE_DTYPES } from '../ir/kv-cache-quant.js';
import type { DeviceClass, KvCacheLayout, PrecisionPolicy, Target } from '../ir/target.js';
import { isSoftwareAdapter, type DeviceInfo } from '../runtime/device.js';
import { fusionPatternsOf } from './families/index.js';

/**
 * Named device profiles a target can be built from without an adapter: `lavapipe` (Mesa's software Vulkan, as Dawn
 * in Node sees it), `discrete` (a typical discrete GPU), `swiftshader` (Chrome's software WebGPU, the fallback adapter
 * of headless Chromium) and `portable` (no optional feature and WebGPU's default limits: kernels every WebGPU
 * implementation runs, for engines built ahead of time for unknown browsers).
 */
export type TargetProfileName = 'lavapipe' | 'discrete' | 'swiftshader' | 'portable';

/** Options of {@link createTarget}. */
export interface TargetOptions {
  /** Precision policy (default `auto`: f16 where the device has it and it is faster). */
  readonly precision?: PrecisionPolicy;
  /** KV-cache layout (default 16 tokens per block, f32). */
  readonly kv?: Partial<KvCacheLayout>;
  /** Override of the storage-binding limit (tests use a small one to exercise weight splitting). */
  readonly maxStorageBufferBindingSize?: number;
}

/** Tokens per KV-cache block unless asked otherwise. */
export const DEFAULT_KV_BLOCK_SIZE = 16;

/**
 * The adapters named profiles stand for: lavapipe on this project's CI machines, a typical discrete GPU, Chromium's
 * SwiftShader (as Chromium 156 reports it: subgroups of 4, 256 invocations per workgroup, no `shader-f16`), and a
 * portable device with no optional feature and WebGPU's default limits.
 */
const PROFILE_DEVICES: Readonly<Record<TargetProfileName, DeviceInfo>> = {
  lavapipe: {
    backend: 'node-dawn',
    adapter: { vendor: 'mesa', architecture: '', device: 'llvmpipe (LLVM, 256 bits)', description: 'lavapipe (profile)', isFallbackAdapter: false },
    features: ['shader-f16', 'subgroups', 'timestamp-query'],
    missingFeatures: [],
    limits: { maxStorageBufferBindingSize: 128 * 1024 * 1024, maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupStorageSize: 32768, maxComputeWorkgroupsPerDimension: 65535 },
    subgroupSize: { min: 8, max: 8 },
    wgslLanguageFeatures: ['packed_4x8_integer_dot_product'],
  },
  discrete: {
    backend: 'node-dawn',
    adapter: { vendor: 'generic', architecture: 'discrete', device: 'discrete GPU (profile)', description: 'discrete GPU (profile)', isFallbackAdapter: false },
    features: ['shader-f16', 'subgroups', 'timestamp-query'],
    missingFeatures: [],
    limits: { maxStorageBufferBindingSize: 1024 * 1024 * 1024, maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupStorageSize: 32768, maxComputeWorkgroupsPerDimension: 65535 },
    subgroupSize: { min: 32, max: 32 },
    wgslLanguageFeatures: ['packed_4x8_integer_dot_product'],
  },
  swiftshader: {
    backend: 'browser',
    adapter: { vendor: 'google', architecture: 'swiftshader', device: 'SwiftShader', description: 'swiftshader (profile)', isFallbackAdapter: true },
    features: ['subgroups', 'timestamp-query'],
    missingFeatures: ['shader-f16'],
    limits: { maxStorageBufferBindingSize: 128 * 1024 * 1024, maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupStorageSize: 16384, maxComputeWorkgroupsPerDimension: 65535 },
    subgroupSize: { min: 4, max: 4 },
  },
  portable: {
    backend: 'browser',
    adapter: { vendor: '', architecture: '', device: 'any WebGPU device', description: 'portable (profile)', isFallbackAdapter: false },
    features: [],
    missingFeatures: ['shader-f16', 'subgroups', 'timestamp-query'],
    limits: { maxStorageBufferBindingSize: 128 * 1024 * 1024, maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupStorageSize: 16384, maxComputeWorkgroupsPerDimension: 65535 },
  },
};

/** The device info a named profile stands for. */
export function profileDevice(name: string): DeviceInfo {
  if (!Object.prototype.hasOwnProperty.call(PROFILE_DEVICES, name)) throw new InputError(`unknown device profile '${name}'; known profiles: ${Object.keys(PROFILE_DEVICES).join(', ')}`);
  return PROFILE_DEVICES[name as TargetProfileName];
}

function checkKv(kv: KvCacheLayout): KvCacheLayout {
  const b = kv.blockSize;
  if (!Number.isInteger(b) || b < 1 || b > 256 || (b & (b - 1)) !== 0) throw new InputError(`kv.blockSize must be a power of two from 1 to 256, got ${b}`);
  if (!KV_CACHE_DTYPES.includes(kv.dtype)) throw new InputError(`kv.dtype must be one of ${KV_CACHE_DTYPES.map((d) => `'${d}'`).join(', ')}, got ${JSON.stringify(kv.dtype)}`);
  return kv;
}

/**
 * The target for a device (a {@link DeviceInfo} from `requestGPUDevice` or `probeWebGPU`, or a profile name). The
 * device class is decided here, once: a software rasterizer (lavapipe, SwiftShader, WARP) or a GPU.
 * @throws {@link errors!InputError | InputError} for an unknown profile, a bad precision or KV layout, or
 * `kv.dtype: 'f16'` on a device without `shader-f16`.
 */
export function createTarget(device: DeviceInfo | TargetProfileName, o: TargetOptions = {}): Target {
  const info = typeof device === 'string' ? profileDevice(device) : device;
  const deviceClass: DeviceClass = isSoftwareAdapter(info.adapter) || info.adapter.isFallbackAdapter ? 'software-gpu' : 'gpu';
  const base = deviceClass === 'software-gpu' ? lavapipeProfile : discreteGpuProfile;
  const hasF16 = info.features.includes('shader-f16');
  const maxBinding = o.maxStorageBufferBindingSize ?? info.limits.maxStorageBufferBindingSize ?? base.maxStorageBufferBindingSize;
  const precision = o.precision ?? 'auto';
  if (precision !== 'auto' && precision !== 'f32' && precision !== 'f16') throw new InputError(`precision must be 'auto', 'f32' or 'f16', got ${JSON.stringify(precision)}`);
  const kv = checkKv({ blockSize: o.kv?.blockSize ?? DEFAULT_KV_BLOCK_SIZE, dtype: o.kv?.dtype ?? 'f32' });
  if (kv.dtype === 'f16' && !hasF16) throw new InputError(`kv.dtype 'f16' needs the shader-f16 feature, which ${info.adapter.device || 'this device'} lacks`);
  return Object.freeze({
    name: base.name,
    deviceClass,
    adapter: { vendor: info.adapter.vendor, architecture: info.adapter.architecture, device: info.adapter.device, description: info.adapter.description },
    features: [...info.features].sort(),
    limits: { ...info.limits, maxStorageBufferBindingSize: maxBinding },
    ...(info.subgroupSize ? { subgroupSize: { ...info.subgroupSize } } : {}),
    ...(info.wgslLanguageFeatures ? { wgslLanguageFeatures: [...info.wgslLanguageFeatures].sort() } : {}),
    profile: { ...base, hasF16: hasF16 && base.hasF16, maxStorageBufferBindingSize: maxBinding },
    precision,
    kv,
    fusion: fusionPatternsOf(),
  });
}
