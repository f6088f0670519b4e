// Test runner for KernelSource kernels: compile once, then run on host tensors with the params uniform filled from
// symbol bindings (so one compiled kernel can run with several values of a dynamic dim).
import type { KernelSource } from '../../src/codegen/kernel.js';
import { evalGrid, evalParams } from '../../src/codegen/kernel.js';
import type { DimBindings } from '../../src/ir/dim.js';
import type { DType } from '../../src/ir/dtype.js';
import type { Tensor } from '../../src/runtime/cpu/tensor.js';
import { fromDeviceBytes, toDeviceBytes } from '../../src/runtime/webgpu/one-shot.js';

/** A compiled kernel that can be run many times. */
export interface PreparedKernel {
  readonly kernel: KernelSource;
  /**
   * Runs the kernel: `operands` fill the read-only bindings in order, the (single) read_write binding is the output
   * of `output.dtype`/`output.shape`; params are evaluated with `dims`.
   */
  run(operands: readonly Tensor[], output: { dtype: DType; shape: readonly number[] }, dims?: DimBindings): Promise<Tensor>;
}

function withLines(wgsl: string, line: number): string {
  const lines = wgsl.split('\n');
  return lines.slice(Math.max(0, line - 3), line + 2).map((l, i) => `${Math.max(1, line - 2) + i}: ${l}`).join('\n');
}

/** Compiles `kernel` on `device`; throws with the WGSL context of the first compilation error. */
export async function prepareKernel(device: GPUDevice, kernel: KernelSource): Promise<PreparedKernel> {
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code: kernel.wgsl });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length) {
    await device.popErrorScope();
    const e = errors[0];
    throw new Error(`WGSL compilation of ${kernel.variant} failed: line ${e.lineNum}: ${e.message}\n${withLines(kernel.wgsl, e.lineNum)}`);
  }
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const err = await device.popErrorScope();
  if (err) throw new Error(`pipeline creation for ${kernel.variant} failed: ${err.message}`);
  return {
    kernel,
    async run(operands, output, dims = {}) {
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
      const reads = kernel.bindings.filter((b) => b.access === 'read');
      if (reads.length !== operands.length) throw new Error(`${kernel.variant}: ${reads.length} operands expected, got ${operands.length}`);
      device.pushErrorScope('validation');
      const made: GPUBuffer[] = [];
      const buffers = operands.map((t) => {
        const bytes = toDeviceBytes(t);
        const buf = device.createBuffer({ size: Math.max(16, Math.ceil(bytes.byteLength / 16) * 16), usage });
        device.queue.writeBuffer(buf, 0, bytes.buffer, bytes.byteOffset, bytes.byteLength);
        made.push(buf);
        return buf;
      });
      const n = output.shape.reduce((a, b) => a * b, 1);
      const outBytes = Math.max(16, Math.ceil((n * (output.dtype === 'f16' ? 2 : 4)) / 16) * 16);
      const out = device.createBuffer({ size: outBytes, usage });
      const read = device.createBuffer({ size: outBytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      made.push(out, read);
      // poison the output so unwritten elements show up as NaN
      device.queue.writeBuffer(out, 0, new Uint8Array(outBytes).fill(0xff));
      const entries: GPUBindGroupEntry[] = [];
      let next = 0;
      kernel.bindings.forEach((b, i) => entries.push({ binding: i, resource: { buffer: b.access === 'read' ? buffers[next++] : out } }));
      const values = evalParams(kernel.params, dims);
      if (kernel.params.length) {
        const ub = device.createBuffer({ size: values.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
        device.queue.writeBuffer(ub, 0, values.buffer as ArrayBuffer, values.byteOffset, values.byteLength);
        made.push(ub);
        entries.push({ binding: kernel.bindings.length, resource: { buffer: ub } });
      }
      const grid = kernel.grid.map((g) => evalGrid(g, kernel.params, values)) as [number, number, number];
      const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
      pass.end();
      enc.copyBufferToBuffer(out, 0, read, 0, outBytes);
      device.queue.submit([enc.finish()]);
      const err2 = await device.popErrorScope();
      if (err2) {
        for (const b of made) b.destroy();
        throw new Error(`${kernel.variant}: WebGPU validation error: ${err2.message}`);
      }
      await read.mapAsync(GPUMapMode.READ);
      const result = fromDeviceBytes(output.dtype, output.shape, read.getMappedRange().slice(0));
      read.unmap();
      for (const b of made) b.destroy();
      return result;
    },
  };
}

/** Compiles and runs `kernel` once. */
export async function runKernel(
  device: GPUDevice,
  kernel: KernelSource,
  operands: readonly Tensor[],
  output: { dtype: DType; shape: readonly number[] },
  dims: DimBindings = {},
): Promise<Tensor> {
  return (await prepareKernel(device, kernel)).run(operands, output, dims);
}
