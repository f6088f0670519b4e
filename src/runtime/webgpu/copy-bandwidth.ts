/**
 * The memory bandwidth a device reaches with a plain WGSL copy kernel (`dst[i] = src[i]` over `vec4<f32>`): the
 * roofline that memory-bound kernels, decode GEMVs above all, are measured against. The figure counts the bytes
 * the kernel reads plus the bytes it writes per second, as the matmul benchmark's copy rows do, so a kernel that
 * only reads (a GEMV streaming its weights) at this rate is at the copy's bandwidth.
 * @module
 */
import { GpuWaiter, type GpuWaitMode } from './gpu-wait.js';

/** Options of {@link measureCopyBandwidth}. */
export interface CopyBandwidthOptions {
  /**
   * Bytes to copy (default 64 MiB, beyond any cache), capped by the device's `maxStorageBufferBindingSize` and
   * `maxBufferSize`; rounded down to whole `vec4<f32>`s.
   */
  readonly bytes?: number;
  /** Timed submits; the figure is their median (default 7). Two untimed submits run first. */
  readonly runs?: number;
  /** How the host waits for each submit (default `poll`). */
  readonly wait?: GpuWaitMode;
}

/** What {@link measureCopyBandwidth} measured. */
export interface CopyBandwidth {
  /** Bytes read plus bytes written per second, in GB/s (1e9 bytes), at the median submit time. */
  readonly gbps: number;
  /** Bytes the kernel copied (read once and written once). */
  readonly bytes: number;
  /** The median time of one submit, in milliseconds. */
  readonly medianMs: number;
  /** The timed submits. */
  readonly runs: number;
}

const WORKGROUP_SIZE = 256;

/** WGSL of the copy kernel over `vec4s` elements, the grid linearized over x and y (`gridX` workgroups along x). */
function copyKernel(vec4s: number, gridX: number): string {
  return [
    '// tensorwright: plain copy (device bandwidth baseline)',
    `const VEC4S: u32 = ${vec4s}u;`,
    `const GRID_X: u32 = ${gridX}u;`,
    '@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;',
    '@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;',
    `@compute @workgroup_size(${WORKGROUP_SIZE})`,
    'fn main(@builtin(global_invocation_id) gid: vec3<u32>) {',
    `  let i = gid.x + gid.y * GRID_X * ${WORKGROUP_SIZE}u;`,
    '  if (i < VEC4S) { dst[i] = src[i]; }',
    '}',
    '',
  ].join('\n');
}

/**
 * Measures the device's copy bandwidth: one dispatch copying `bytes` from one storage buffer to another per submit,
 * timed from submit until the queue reports the work done, the median over `runs` submits. The buffers are freed
 * before it returns.
 */
export async function measureCopyBandwidth(device: GPUDevice, options: CopyBandwidthOptions = {}): Promise<CopyBandwidth> {
  const runs = options.runs ?? 7;
  if (!(Number.isInteger(runs) && runs >= 1)) throw new RangeError(`runs must be an integer >= 1, got ${runs}`);
  const cap = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
  const bytes = Math.floor(Math.min(options.bytes ?? 64 * 2 ** 20, cap) / 16) * 16;
  if (!(bytes >= 16)) throw new RangeError(`the copy needs at least 16 bytes, got ${bytes}`);
  const vec4s = bytes / 16;
  const groups = Math.ceil(vec4s / WORKGROUP_SIZE);
  const gridX = Math.min(groups, device.limits.maxComputeWorkgroupsPerDimension);
  const gridY = Math.ceil(groups / gridX);
  const src = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE, label: 'copy-bandwidth src' });
  const dst = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE, label: 'copy-bandwidth dst' });
  try {
    const module = device.createShaderModule({ code: copyKernel(vec4s, gridX), label: 'copy-bandwidth' });
    const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: 'copy-bandwidth' });
    const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [src, dst].map((buffer, binding) => ({ binding, resource: { buffer } })) });
    const waiter = new GpuWaiter({ mode: options.wait ?? 'poll' });
    const once = async (): Promise<number> => {
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(gridX, gridY);
      pass.end();
      const t = performance.now();
      device.queue.submit([enc.finish()]);
      await waiter.wait('copy-bandwidth', t, () => device.queue.onSubmittedWorkDone());
      return performance.now() - t;
    };
    // untimed: the first submit clears the fresh buffers and the driver may compile on first use
    for (let i = 0; i < 2; i++) await once();
    const times: number[] = [];
    for (let i = 0; i < runs; i++) times.push(await once());
    times.sort((a, b) => a - b);
    const h = times.length >> 1;
    const medianMs = times.length % 2 ? times[h] : (times[h - 1] + times[h]) / 2;
    return { gbps: (2 * bytes) / (medianMs / 1000) / 1e9, bytes, medianMs, runs };
  } finally {
    src.destroy();
    dst.destroy();
  }
}
