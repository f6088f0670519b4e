// Test runner for KernelSource kernels, built on src/runtime/webgpu/one-shot.ts (compileKernel, encodeKernel and the
// host <-> device byte conversions). Bindings are addressed by name, each with initial contents: host tensors, raw
// u32/i32/f32 words (block tables, ids), zeroed or NaN-poisoned scratch; any number of them are read back after one
// dispatch. Pipelines are cached per device and WGSL text, so a test can run one compiled kernel with several values
// of its dynamic dims.
import type { KernelSource } from '../../src/codegen/kernel.js';
import type { DimBindings } from '../../src/ir/dim.js';
import type { DType } from '../../src/ir/dtype.js';
import { Tensor } from '../../src/runtime/cpu/tensor.js';
import { compileKernel, encodeKernel, fromDeviceBytes, toDeviceBytes } from '../../src/runtime/webgpu/one-shot.js';

/**
 * Contents of one binding: a host tensor (stored as its dtype), raw 32-bit words, a byte count of zeros, or a byte
 * count of all-ones bits (NaN as f32 and f16, so elements a kernel fails to write show up).
 */
export type BufferInit = Tensor | Uint32Array | Int32Array | Float32Array | { readonly zeros: number } | { readonly nan: number };

const pipelines = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

/** The pipeline of `kernel`, compiled once per device and WGSL source (compile errors carry the WGSL context). */
export function pipelineFor(device: GPUDevice, kernel: KernelSource): Promise<GPUComputePipeline> {
  let cache = pipelines.get(device);
  if (!cache) pipelines.set(device, (cache = new Map()));
  let p = cache.get(kernel.wgsl);
  if (!p) cache.set(kernel.wgsl, (p = compileKernel(device, kernel)));
  return p;
}

/** Initial bytes of a binding, padded to a multiple of 4. */
function bytesOf(init: BufferInit): Uint8Array {
  let bytes: Uint8Array;
  if (init instanceof Tensor) bytes = toDeviceBytes(init);
  else if ('zeros' in init) bytes = new Uint8Array(init.zeros);
  else if ('nan' in init) bytes = new Uint8Array(init.nan).fill(0xff);
  else bytes = new Uint8Array(init.buffer, init.byteOffset, init.byteLength);
  if (bytes.byteLength % 4 === 0) return bytes;
  const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  padded.set(bytes);
  return padded;
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
  const storage = kernel.bindings.map((b) => {
    const init = buffers[b.name];
    if (init === undefined) throw new Error(`${kernel.variant}: no contents given for binding '${b.name}'`);
    const bytes = bytesOf(init);
    const buf = device.createBuffer({ size: Math.max(16, Math.ceil(bytes.byteLength / 16) * 16), usage });
    if (bytes.byteLength) device.queue.writeBuffer(buf, 0, bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength);
    made.push(buf);
    byName.set(b.name, buf);
    return buf;
  });
  const enc = device.createCommandEncoder();
  const paramsBuf = encodeKernel(device, enc, pipeline, kernel, storage, dims);
  if (paramsBuf) made.push(paramsBuf);
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

/** The output binding {@link runOutput} reads back. */
export interface OutputBinding {
  /** Element type. */
  readonly dtype: DType;
  /** Shape. */
  readonly shape: readonly number[];
  /** Binding name (default `out`). */
  readonly name?: string;
  /** Initial contents: zeros (default) or NaN, so that elements the kernel does not write fail comparisons. */
  readonly fill?: 'zeros' | 'nan';
}

/**
 * Runs `kernel` with `inputs` (by binding name) and a fresh output binding; returns the output as a host tensor.
 */
export async function runOutput(
  device: GPUDevice,
  kernel: KernelSource,
  inputs: Readonly<Record<string, BufferInit>>,
  output: OutputBinding,
  dims: DimBindings = {},
): Promise<Tensor> {
  const name = output.name ?? 'out';
  const bytes = output.shape.reduce((a, b) => a * b, 1) * (output.dtype === 'f16' ? 2 : 4);
  const init = output.fill === 'nan' ? { nan: bytes } : { zeros: bytes };
  const r = await runNamed(device, kernel, { ...inputs, [name]: init }, dims, [name]);
  return fromDeviceBytes(output.dtype, output.shape, r[name]);
}

/** Names the read-only bindings of `kernel` in order: `operands[i]` fills the i-th one. */
export function readBindings(kernel: KernelSource, operands: readonly BufferInit[]): Record<string, BufferInit> {
  const reads = kernel.bindings.filter((b) => b.access === 'read');
  if (reads.length !== operands.length) throw new Error(`${kernel.variant}: ${reads.length} operands expected, got ${operands.length}`);
  const out: Record<string, BufferInit> = {};
  reads.forEach((b, i) => {
    if (b.name in out) throw new Error(`${kernel.variant}: two bindings are named '${b.name}'`);
    out[b.name] = operands[i];
  });
  return out;
}
