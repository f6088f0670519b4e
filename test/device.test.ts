// WebGPU device acquisition: features and limits are reported, a compute shader runs, a destroyed device is replaced.
import { afterAll, describe, expect, it } from 'vitest';
import { describeDevice, probeWebGPU, requestGPUDevice, type GPUDeviceHandle } from '../src/runtime/device.js';
import { acquireTestDevice } from './helpers/webgpu.js';

const gpu = await acquireTestDevice();
afterAll(() => gpu?.destroy());

const ADD_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i < arrayLength(&out)) {
    out[i] = a[i] + b[i];
  }
}
`;

/** Adds two f32 arrays on the device and reads the sum back. */
async function addOnGpu(device: GPUDevice, a: Float32Array<ArrayBuffer>, b: Float32Array<ArrayBuffer>): Promise<Float32Array> {
  const bytes = a.byteLength;
  const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const bufA = device.createBuffer({ size: bytes, usage: storage });
  const bufB = device.createBuffer({ size: bytes, usage: storage });
  const bufOut = device.createBuffer({ size: bytes, usage: storage });
  const read = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(bufA, 0, a);
  device.queue.writeBuffer(bufB, 0, b);
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code: ADD_WGSL });
  const messages = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
  expect(messages.map((m) => m.message)).toEqual([]);
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const bindGroup = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [bufA, bufB, bufOut].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(Math.ceil(a.length / 64));
  pass.end();
  enc.copyBufferToBuffer(bufOut, 0, read, 0, bytes);
  device.queue.submit([enc.finish()]);
  expect(await device.popErrorScope()).toBeNull();
  await read.mapAsync(GPUMapMode.READ);
  const result = new Float32Array(read.getMappedRange().slice(0));
  read.unmap();
  for (const buf of [bufA, bufB, bufOut, read]) buf.destroy();
  return result;
}

function inputs(n: number): [Float32Array<ArrayBuffer>, Float32Array<ArrayBuffer>] {
  const a = Float32Array.from({ length: n }, (_, i) => i * 0.5);
  const b = Float32Array.from({ length: n }, (_, i) => 1000 - i * 0.25);
  return [a, b];
}

describe('WebGPU device', () => {
  it.skipIf(!gpu)('reports the adapter, features and limits it got', () => {
    const { info, device } = gpu!;
    expect(['node-dawn', 'browser']).toContain(info.backend);
    expect(info.features).toEqual([...device.features].sort());
    for (const f of ['shader-f16', 'subgroups', 'timestamp-query']) expect(info.features.includes(f) || info.missingFeatures.includes(f)).toBe(true);
    for (const name of ['maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup', 'maxBufferSize'])
      expect(info.limits[name], name).toBeGreaterThan(0);
    // the device got the adapter's maxima, not WebGPU's defaults
    expect(info.limits.maxStorageBufferBindingSize).toBe(device.limits.maxStorageBufferBindingSize);
    expect(info.limits.maxComputeInvocationsPerWorkgroup).toBeGreaterThanOrEqual(256);
    if (info.features.includes('subgroups') && info.subgroupSize) expect(info.subgroupSize.min).toBeLessThanOrEqual(info.subgroupSize.max);
    const line = describeDevice(info);
    expect(line).toContain(info.backend);
    expect(line).not.toContain('\n');
    expect(gpu!.isLost()).toBe(false);
  });

  it.skipIf(!gpu)('probeWebGPU sees the same adapter without creating a device', async () => {
    const probe = await probeWebGPU();
    expect('available' in probe).toBe(false);
    if ('available' in probe) return;
    expect(probe.adapter.description).toBe(gpu!.info.adapter.description);
    expect(probe.limits.maxStorageBufferBindingSize).toBe(gpu!.info.limits.maxStorageBufferBindingSize);
  });

  it.skipIf(!gpu)('adds two arrays of 1000 f32 in a compute shader', async () => {
    const [a, b] = inputs(1000);
    const out = await addOnGpu(gpu!.device, a, b);
    expect(out.length).toBe(1000);
    for (let i = 0; i < 1000; i++) expect(out[i]).toBe(Math.fround(a[i] + b[i]));
  });

  it.skipIf(!gpu)('replaces a destroyed device with a new one', async () => {
    let first: GPUDeviceHandle | undefined = await requestGPUDevice();
    let second: GPUDeviceHandle | undefined;
    try {
      const [a, b] = inputs(100);
      expect(Array.from(await addOnGpu(first.device, a, b))).toEqual(Array.from(a, (x, i) => Math.fround(x + b[i])));
      await first.destroy();
      expect(first.isLost()).toBe(true);
      expect(first.lostInfo()).toMatchObject({ reason: 'destroyed', expected: true });
      await expect(first.lost).resolves.toMatchObject({ expected: true });
      await first.destroy(); // idempotent
      first = undefined;

      second = await requestGPUDevice();
      expect(second.isLost()).toBe(false);
      expect(Array.from(await addOnGpu(second.device, b, a))).toEqual(Array.from(a, (x, i) => Math.fround(b[i] + x)));
    } finally {
      await first?.destroy();
      await second?.destroy();
    }
  });
});
