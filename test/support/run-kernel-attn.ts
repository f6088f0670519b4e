// Test runner for KernelSource kernels whose bindings are addressed by name: any number of read_write bindings with
// initial contents (KV-cache pools, scratch buffers), raw u32/i32 arrays (block tables, ids) next to host tensors,
// and several buffers read back after one dispatch. Pipelines are cached per device and WGSL text, so a test can run
// one compiled kernel with several values of its dynamic dims. (test/support/run-kernel.ts covers the simpler
// "read-only operands in, one output out" case.)
import type { KernelSource } from '../../src/codegen/kernel.js';
import { evalGrid, evalParams } from '../../src/codegen/kernel.js';
import type { DimBindings } from '../../src/ir/dim.js';
import type { DType } from '../../src/ir/dtype.js';
import { Tensor } from '../../src/runtime/cpu/tensor.js';
import { fromDeviceBytes, toDeviceBytes } from '../../src/runtime/webgpu/one-shot.js';

/** Contents of one binding: a host tensor (stored as its dtype), raw 32-bit words, or a byte count of zeros. */
export type BufferInit = Tensor | Uint32Array | Int32Array | Float32Array | { readonly zeros: number };

const pipelines = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

function context(wgsl: string, line: number): string {
  const lines = wgsl.split('\n');
  return lines.slice(Math.max(0, line - 3), line + 2).map((l, i) => `${Math.max(1, line - 2) + i}: ${l}`).join('\n');
}

/** Compiles (once per device and source) the pipeline of `kernel`; throws with WGSL context on compile errors. */
export function pipelineFor(device: GPUDevice, kernel: KernelSource): Promise<GPUComputePipeline> {
  let cache = pipelines.get(device);
  if (!cache) pipelines.set(device, (cache = new Map()));
  let p = cache.get(kernel.wgsl);
  if (!p) {
    p = (async () => {
      device.pushErrorScope('validation');
      const module = device.createShaderModule({ code: kernel.wgsl });
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === 'error');
      if (errors.length) {
        await device.popErrorScope();
        const e = errors[0];
        throw new Error(`WGSL compilation of ${kernel.family}/${kernel.variant} failed: line ${e.lineNum}: ${e.message}\n${context(kernel.wgsl, e.lineNum)}`);
      }
      const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
      const err = await device.popErrorScope();
      if (err) throw new Error(`pipeline creation for ${kernel.family}/${kernel.variant} failed: ${err.message}`);
      return pipeline;
    })();
    cache.set(kernel.wgsl, p);
  }
  return p;
}

function bytesOf(init: BufferInit): Uint8Array {
  if (init instanceof Tensor) return toDeviceBytes(init);
  if ('zeros' in init) return new Uint8Array(init.zeros);
  return new Uint8Array(init.buffer, init.byteOffset, init.byteLength);
}

/**
 * Runs `kernel` once: every binding must have an entry in `buffers` (by binding name); params are evaluated from
 * `dims`. Returns the final bytes of the bindings named in `read`.
 */
export async function runNamed(
  device: GPUDevice,
  kernel: KernelSource,
  buffers: Readonly<Record<string, BufferInit>>,
  dims: DimBindings,
  read: readonly string[],
): Promise<Record<string, ArrayBuffer>> {
  const pipeline = await pipelineFor(device, kernel);
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  device.pushErrorScope('validation');
  const made: GPUBuffer[] = [];
  const byName = new Map<string, GPUBuffer>();
  const entries: GPUBindGroupEntry[] = kernel.bindings.map((b, i) => {
    const init = buffers[b.name];
    if (init === undefined) throw new Error(`${kernel.variant}: no contents given for binding '${b.name}'`);
    let bytes = bytesOf(init);
    if (bytes.byteLength % 4) {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      bytes = padded;
    }
    const buf = device.createBuffer({ size: Math.max(16, Math.ceil(bytes.byteLength / 16) * 16), usage });
    if (bytes.byteLength) device.queue.writeBuffer(buf, 0, bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength);
    made.push(buf);
    byName.set(b.name, buf);
    return { binding: i, resource: { buffer: buf } };
  });
  const values = evalParams(kernel.params, dims);
  if (kernel.params.length) {
    const ub = device.createBuffer({ size: values.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(ub, 0, values.buffer as ArrayBuffer, values.byteOffset, values.byteLength);
    made.push(ub);
    entries.push({ binding: kernel.bindings.length, resource: { buffer: ub } });
  }
  const grid = kernel.grid.map((g) => evalGrid(g, kernel.params, values)) as [number, number, number];
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries }));
  if (grid.every((g) => g > 0)) pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
  pass.end();
  const staging = read.map((name) => {
    const src = byName.get(name);
    if (!src) throw new Error(`${kernel.variant}: cannot read back '${name}': no such binding`);
    const dst = device.createBuffer({ size: src.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    made.push(dst);
    enc.copyBufferToBuffer(src, 0, dst, 0, src.size);
    return dst;
  });
  device.queue.submit([enc.finish()]);
  const err = await device.popErrorScope();
  if (err) {
    for (const b of made) b.destroy();
    throw new Error(`${kernel.variant}: WebGPU validation error: ${err.message}`);
  }
  const out: Record<string, ArrayBuffer> = {};
  for (let k = 0; k < read.length; k++) {
    await staging[k].mapAsync(GPUMapMode.READ);
    out[read[k]] = staging[k].getMappedRange().slice(0);
    staging[k].unmap();
  }
  for (const b of made) b.destroy();
  return out;
}

/** Host tensor of `dtype`/`shape` from bytes read back by {@link runNamed}. */
export function tensorFrom(dtype: DType, shape: readonly number[], bytes: ArrayBuffer): Tensor {
  return fromDeviceBytes(dtype, shape, bytes);
}
