/**
 * Runs one compute kernel over host tensors: upload operands, dispatch, read the output back. For tests and
 * bring-up; the engine runtime keeps buffers on the device across steps instead.
 * @module
 */
// the declarations name WebGPU types (GPUDevice, …): a consumer's compiler gets them from @webgpu/types, a dependency
/// <reference types="@webgpu/types" preserve="true" />
import type { DType } from '../../ir/dtype.js';
import { DeviceError } from '../../errors.js';
import { floatToHalf, halfToFloat } from '../../ir/weights.js';
import { Tensor } from '../cpu/tensor.js';
import type { DimBindings } from '../../ir/dim.js';
import { evalGrid, evalParams, kernelPipelineLayout, type KernelSource } from '../kernel-source.js';

/**
 * Bytes of a host tensor in its GPU storage form (f16 as half bits, bool as u32, i64 as (low, high) u32 pairs),
 * padded to 4 bytes.
 * @internal
 */
export function toDeviceBytes(t: Tensor): Uint8Array {
  let bytes: Uint8Array;
  if (t.dtype === 'f16') {
    const h = new Uint16Array(t.size + (t.size & 1));
    for (let i = 0; i < t.size; i++) h[i] = floatToHalf(t.numbers[i]);
    bytes = new Uint8Array(h.buffer);
  } else if (t.dtype === 'bool') bytes = new Uint8Array(Uint32Array.from(t.data as Uint8Array).buffer);
  else bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return bytes;
}

/**
 * A host tensor from GPU storage bytes.
 * @internal
 */
export function fromDeviceBytes(dtype: DType, shape: readonly number[], bytes: ArrayBuffer): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  switch (dtype) {
    case 'f32': return new Tensor(dtype, shape, new Float32Array(bytes, 0, n).slice());
    case 'i32': return new Tensor(dtype, shape, new Int32Array(bytes, 0, n).slice());
    case 'u32': return new Tensor(dtype, shape, new Uint32Array(bytes, 0, n).slice());
    case 'bool': return new Tensor(dtype, shape, Uint8Array.from(new Uint32Array(bytes, 0, n)));
    case 'i64': return new Tensor(dtype, shape, new BigInt64Array(bytes.slice(0, 8 * n)));
    case 'f16': {
      const h = new Uint16Array(bytes, 0, n);
      const f = new Float32Array(n);
      for (let i = 0; i < n; i++) f[i] = halfToFloat(h[i]);
      return new Tensor(dtype, shape, f);
    }
  }
}

/**
 * An output buffer to allocate for {@link runKernelOnce}.
 * @internal
 */
export interface OutputSpec {
  /** Output dtype. */
  readonly dtype: DType;
  /** Output shape. */
  readonly shape: readonly number[];
}

/** The WGSL lines around 1-based line `line`, numbered, for compilation error messages. */
function wgslContext(wgsl: string, line: number): string {
  const lines = wgsl.split('\n');
  return lines.slice(Math.max(0, line - 3), line + 2).map((l, i) => `${Math.max(1, line - 2) + i}: ${l}`).join('\n');
}

/**
 * Compiles `kernel` into a compute pipeline (entry point `main`, layout from its binding list) on `device`. WGSL errors (with the source
 * lines around the first one) and pipeline validation errors surface as {@link DeviceError}.
 * @internal
 */
export async function compileKernel(device: GPUDevice, kernel: KernelSource): Promise<GPUComputePipeline> {
  const name = `${kernel.family}/${kernel.variant}`;
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code: kernel.wgsl });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length) {
    await device.popErrorScope();
    const where = wgslContext(kernel.wgsl, errors[0].lineNum);
    throw new DeviceError('DEVICE_ERROR', `WGSL compilation failed (${name}): ${errors.map((m) => `line ${m.lineNum}: ${m.message}`).join('; ')}\n${where}`);
  }
  const pipeline = await device.createComputePipelineAsync({ layout: kernelPipelineLayout(device, kernel), compute: { module, entryPoint: 'main' } });
  const err = await device.popErrorScope();
  if (err) throw new DeviceError('DEVICE_ERROR', `pipeline creation failed (${name}): ${err.message}`);
  return pipeline;
}

/**
 * Records one dispatch of `kernel` into `encoder`: `storage` fills the kernel's storage bindings in order, the params
 * uniform is evaluated with `bindings`, and the grid is evaluated likewise (a grid with a zero size dispatches
 * nothing). Returns the params uniform buffer it created, for the caller to destroy once the work is done.
 * @internal
 */
export function encodeKernel(
  device: GPUDevice,
  encoder: GPUCommandEncoder,
  pipeline: GPUComputePipeline,
  kernel: KernelSource,
  storage: readonly GPUBuffer[],
  bindings: DimBindings = {},
): GPUBuffer | undefined {
  const entries: GPUBindGroupEntry[] = storage.map((buffer, binding) => ({ binding, resource: { buffer } }));
  let paramsBuf: GPUBuffer | undefined;
  if (kernel.params.length) {
    const values = evalParams(kernel.params, bindings);
    paramsBuf = device.createBuffer({ size: values.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(paramsBuf, 0, values.buffer as ArrayBuffer, values.byteOffset, values.byteLength);
    entries.push({ binding: storage.length, resource: { buffer: paramsBuf } });
  }
  const grid = kernel.grid.map((g) => evalGrid(g, kernel.params, bindings)) as [number, number, number];
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries }));
  if (grid.every((g) => g > 0)) pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
  pass.end();
  return paramsBuf;
}

/**
 * Compiles and runs a kernel once on `device`. `args` fill the kernel's storage bindings in order: a tensor is
 * uploaded, an {@link OutputSpec} allocates a zeroed buffer that is read back. Params are evaluated with `bindings`.
 * Returns the outputs in order. WGSL and validation errors surface as {@link DeviceError}.
 * @internal
 */
export async function runKernelOnce(device: GPUDevice, kernel: KernelSource, args: readonly (Tensor | OutputSpec)[], bindings: DimBindings = {}): Promise<Tensor[]> {
  if (args.length !== kernel.bindings.length) throw new DeviceError('DEVICE_ERROR', `kernel ${kernel.family}/${kernel.variant} has ${kernel.bindings.length} bindings, got ${args.length} arguments`);
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const pipeline = await compileKernel(device, kernel);
  device.pushErrorScope('validation');
  const buffers: GPUBuffer[] = [];
  const outputs: { buf: GPUBuffer; read: GPUBuffer; spec: OutputSpec; bytes: number }[] = [];
  for (const a of args) {
    if (a instanceof Tensor) {
      const bytes = toDeviceBytes(a);
      const buf = device.createBuffer({ size: Math.max(16, Math.ceil(bytes.byteLength / 4) * 4), usage });
      device.queue.writeBuffer(buf, 0, bytes.buffer, bytes.byteOffset, bytes.byteLength);
      buffers.push(buf);
    } else {
      const n = a.shape.reduce((x, y) => x * y, 1);
      const size = Math.max(16, Math.ceil((n * (a.dtype === 'f16' ? 2 : 4)) / 4) * 4);
      const buf = device.createBuffer({ size, usage });
      const read = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      buffers.push(buf);
      outputs.push({ buf, read, spec: a, bytes: size });
    }
  }
  const enc = device.createCommandEncoder();
  const paramsBuf = encodeKernel(device, enc, pipeline, kernel, buffers, bindings);
  for (const o of outputs) enc.copyBufferToBuffer(o.buf, 0, o.read, 0, o.bytes);
  device.queue.submit([enc.finish()]);
  const err = await device.popErrorScope();
  if (err) throw new DeviceError('DEVICE_ERROR', `WebGPU validation error (${kernel.family}/${kernel.variant}): ${err.message}`);
  const results: Tensor[] = [];
  for (const o of outputs) {
    await o.read.mapAsync(GPUMapMode.READ);
    results.push(fromDeviceBytes(o.spec.dtype, o.spec.shape, o.read.getMappedRange().slice(0)));
    o.read.unmap();
  }
  for (const b of [...buffers, ...outputs.map((o) => o.read), ...(paramsBuf ? [paramsBuf] : [])]) b.destroy();
  return results;
}
