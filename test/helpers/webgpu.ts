/**
 * WebGPU for vitest: acquire a device, or skip GPU tests loudly when the machine has no adapter.
 *
 * Usage (top-level await works in test files):
 * ```ts
 * const gpu = await acquireTestDevice();
 * afterAll(() => gpu?.destroy());
 * it.skipIf(!gpu)('runs on the GPU', async () => { ... gpu!.device ... });
 * ```
 * or wrap a whole block with {@link describeGPU}. With `REQUIRE_WEBGPU=1` (CI with lavapipe), a missing adapter fails
 * the tests instead of skipping them. Dawn works in vitest's default `forks` pool (not in `threads`).
 * @module
 */
import { afterAll, beforeAll, beforeEach, describe } from 'vitest';
import { DeviceError } from '../../src/errors.js';
import { requestGPUDevice, type GPUDeviceHandle, type RequestGPUDeviceOptions } from '../../src/runtime/device.js';

/** The device handle GPU tests get. */
export type TestGPU = GPUDeviceHandle;

const WARNED = Symbol.for('tensorwright.test.webgpuSkipWarned');

/** True when GPU tests must run (`REQUIRE_WEBGPU=1`): a missing adapter is then a failure, not a skip. */
export function webgpuRequired(): boolean {
  return process.env.REQUIRE_WEBGPU === '1';
}

/**
 * A fresh WebGPU device for a test file, or null when there is no adapter (after printing one loud
 * `[tensorwright] WebGPU tests SKIPPED` line to stderr, once per process). Throws when `REQUIRE_WEBGPU=1` and there is
 * no adapter, and whenever an adapter exists but the device request fails. Destroy the device in `afterAll`.
 */
export async function acquireTestDevice(options: RequestGPUDeviceOptions = {}): Promise<TestGPU | null> {
  try {
    return await requestGPUDevice({ label: 'tensorwright-test', ...options });
  } catch (e) {
    if (!(e instanceof DeviceError) || e.code !== 'NO_ADAPTER') throw e;
    if (webgpuRequired()) throw new Error(`REQUIRE_WEBGPU=1 but ${e.message}`, { cause: e });
    const proc = process as unknown as Record<symbol, boolean>;
    if (!proc[WARNED]) {
      proc[WARNED] = true;
      process.stderr.write(`[tensorwright] WebGPU tests SKIPPED: no adapter (${e.message}) — set REQUIRE_WEBGPU=1 to fail instead\n`);
    }
    return null;
  }
}

/**
 * Whether the test device has an adapter feature (or a device fact a test needs, such as one fixed subgroup size:
 * pass `present` computed by the test). False means "skip this test" on a user's machine; with `REQUIRE_WEBGPU=1`
 * (CI) a missing feature throws instead, so a feature-gated kernel test cannot pass by skipping there.
 */
export function gpuHas(gpu: { readonly info: { readonly features: readonly string[] } } | { readonly features: readonly string[] }, feature: string, present?: boolean): boolean {
  const features = 'info' in gpu ? gpu.info.features : gpu.features;
  const ok = present ?? features.includes(feature);
  if (!ok && webgpuRequired()) throw new Error(`REQUIRE_WEBGPU=1 but the test device lacks ${feature}, which this test needs`);
  return ok;
}

/**
 * A `describe` block whose tests run with a shared device: acquired in `beforeAll`, destroyed in `afterAll`, and every
 * test skipped when there is no adapter. `fn` gets an accessor for the device handle (valid inside tests and hooks).
 */
export function describeGPU(name: string, fn: (gpu: () => TestGPU) => void, options: RequestGPUDeviceOptions = {}): void {
  describe(name, () => {
    let gpu: TestGPU | null = null;
    beforeAll(async () => {
      gpu = await acquireTestDevice(options);
    });
    afterAll(async () => {
      await gpu?.destroy();
      gpu = null;
    });
    beforeEach((ctx) => {
      if (!gpu) ctx.skip();
    });
    fn(() => {
      if (!gpu) throw new Error('describeGPU: no WebGPU device (the test should have been skipped)');
      return gpu;
    });
  });
}
