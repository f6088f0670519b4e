/**
 * Device profiles: the few facts about a target that graph passes base decisions on (whether to use f16, how large
 * one storage buffer may be, the subgroup width). Passes read them from `PassContext.device` (a {@link Target}'s `profile`); they never query a
 * device themselves.
 * @module
 */

/** What graph passes may assume about the target device. */
export interface DeviceProfile {
  /** Short name, for reports (`cpu`, `lavapipe`, `discrete-gpu`). */
  readonly name: string;
  /** Whether the device can compute in f16 (WebGPU `shader-f16`). */
  readonly hasF16: boolean;
  /** Whether f16 arithmetic and f16 storage are actually faster than f32 there. */
  readonly f16Faster: boolean;
  /** Largest storage buffer one binding may cover, in bytes (WebGPU `maxStorageBufferBindingSize`). */
  readonly maxStorageBufferBindingSize: number;
  /** Subgroup (warp/wave) width, when known. */
  readonly subgroupSize?: number;
}

/** The CPU reference backend: no native f16 (it only emulates rounding), no buffer-size limit to speak of. */
export const cpuProfile: DeviceProfile = Object.freeze({
  name: 'cpu',
  hasF16: false,
  f16Faster: false,
  maxStorageBufferBindingSize: Number.MAX_SAFE_INTEGER,
});

/** Mesa's lavapipe (software Vulkan): supports f16 but computes it no faster than f32; WebGPU's default limits. */
export const lavapipeProfile: DeviceProfile = Object.freeze({
  name: 'lavapipe',
  hasF16: true,
  f16Faster: false,
  maxStorageBufferBindingSize: 128 * 1024 * 1024,
});

/** A typical discrete GPU: fast f16, large buffers, 32-wide subgroups. */
export const discreteGpuProfile: DeviceProfile = Object.freeze({
  name: 'discrete-gpu',
  hasF16: true,
  f16Faster: true,
  maxStorageBufferBindingSize: 1024 * 1024 * 1024,
  subgroupSize: 32,
});

/** The preset profiles by name. */
export const DEVICE_PROFILES: Readonly<Record<string, DeviceProfile>> = Object.freeze({
  cpu: cpuProfile,
  lavapipe: lavapipeProfile,
  'discrete-gpu': discreteGpuProfile,
});
