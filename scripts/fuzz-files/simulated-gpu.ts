/**
 * A simulated WebGPU device for the file fuzzer's engine cases: enough of `GPUDevice` for `Engine.createSession` and
 * `EngineSession.step` to run without a GPU, holding no memory for buffers, and checking what a real device checks:
 * the WebIDL conversions that throw (`[EnforceRange]` sizes and workgroup counts), and the validation rules whose
 * failures a real device reports as errors (buffer sizes against `maxBufferSize`, storage and uniform bindings
 * against their limits, `writeBuffer` and `copyBufferToBuffer` ranges, workgroup counts against
 * `maxComputeWorkgroupsPerDimension`, bind groups against their layouts). Errors go to the innermost matching error
 * scope, as on a real device; those no scope catches are collected in {@link SimulatedGpu.uncaptured}, because on a
 * real device they would be printed and the work silently dropped: the runtime handed the device something invalid.
 * @module
 */
import type { DeviceInfo, GPUDeviceHandle } from '../../src/runtime/device.js';

/** The WebGPU flag globals the runtime reads (as the spec numbers them), for hosts without a WebGPU implementation. */
export function defineWebGPUGlobals(): void {
  const g = globalThis as Record<string, unknown>;
  g.GPUBufferUsage ??= { MAP_READ: 1, MAP_WRITE: 2, COPY_SRC: 4, COPY_DST: 8, INDEX: 16, VERTEX: 32, UNIFORM: 64, STORAGE: 128, INDIRECT: 256, QUERY_RESOLVE: 512 };
  g.GPUMapMode ??= { READ: 1, WRITE: 2 };
  g.GPUShaderStage ??= { VERTEX: 1, FRAGMENT: 2, COMPUTE: 4 };
}

/** WebIDL `[EnforceRange] unsigned long long` / `unsigned long`: a TypeError unless finite and in range. */
function enforceRange(v: unknown, max: number, what: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new TypeError(`${what}: ${String(v)} is not a finite number`);
  const t = Math.trunc(n);
  if (t < 0 || t > max) throw new TypeError(`${what}: ${String(v)} is outside [0, ${max}]`);
  return t;
}

const U32 = 2 ** 32 - 1;
const U64 = Number.MAX_SAFE_INTEGER;

interface SimBuffer {
  readonly size: number;
  readonly usage: number;
  readonly label: string;
  mapped?: ArrayBuffer;
}

/** A simulated device and the errors it saw. */
export class SimulatedGpu {
  /** Validation and out-of-memory errors no error scope caught, in order. */
  readonly uncaptured: string[] = [];
  /** Buffers created (bytes in all). */
  bufferBytes = 0;
  private readonly scopes: { filter: string; errors: string[] }[] = [];
  /** The device handle to pass as `createSession({ device })`. */
  readonly handle: GPUDeviceHandle;

  constructor(info: DeviceInfo) {
    defineWebGPUGlobals();
    const limits: Record<string, number> = { maxUniformBufferBindingSize: 65536, maxBufferSize: 2 ** 31, maxStorageBufferBindingSize: 2 ** 27, maxStorageBuffersPerShaderStage: 64, maxComputeWorkgroupsPerDimension: 65535, ...info.limits };
    const error = (filter: 'validation' | 'out-of-memory', message: string): void => {
      for (let i = this.scopes.length - 1; i >= 0; i--)
        if (this.scopes[i].filter === filter) {
          this.scopes[i].errors.push(message);
          return;
        }
      this.uncaptured.push(`${filter}: ${message}`);
    };
    const checkRange = (b: SimBuffer, offset: number, size: number, what: string): void => {
      if (offset % 4 !== 0 || size % 4 !== 0) error('validation', `${what}: offset ${offset} and size ${size} must be multiples of 4`);
      if (offset + size > b.size) error('validation', `${what}: [${offset}, ${offset + size}) is outside the ${b.size}-byte buffer '${b.label}'`);
    };
    const device = {
      features: new Set(info.features),
      limits,
      pushErrorScope: (filter: string) => void this.scopes.push({ filter, errors: [] }),
      popErrorScope: async () => {
        const s = this.scopes.pop();
        if (!s) throw new Error('popErrorScope with no scope (OperationError)');
        return s.errors.length ? { message: s.errors[0] } : null;
      },
      createBuffer: (d: { size: unknown; usage: number; label?: string }): SimBuffer => {
        const size = enforceRange(d.size, U64, 'createBuffer size');
        if (size > limits.maxBufferSize) error('validation', `buffer '${d.label}' of ${size} bytes exceeds maxBufferSize ${limits.maxBufferSize}`);
        this.bufferBytes += size;
        const b: SimBuffer = { size, usage: d.usage, label: d.label ?? '' };
        return Object.assign(b, {
          mapAsync: async () => {
            b.mapped = new ArrayBuffer(Math.min(size, 1 << 20));
          },
          getMappedRange: (offset = 0, length?: number) => {
            if (!b.mapped) throw new Error(`getMappedRange on the unmapped buffer '${b.label}' (OperationError)`);
            return b.mapped.slice(offset, length === undefined ? undefined : offset + length);
          },
          unmap: () => void (b.mapped = undefined),
          destroy: () => undefined,
        });
      },
      queue: {
        writeBuffer: (b: SimBuffer, offset: unknown, data: ArrayBufferView | ArrayBuffer, dataOffset = 0, size?: number) => {
          const o = enforceRange(offset, U64, 'writeBuffer offset');
          const unit = ArrayBuffer.isView(data) && !(data instanceof DataView) ? (data as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT : 1;
          const total = ArrayBuffer.isView(data) ? data.byteLength / unit : data.byteLength;
          const count = size ?? total - dataOffset;
          if (dataOffset + count > total) throw new Error(`writeBuffer: data range [${dataOffset}, ${dataOffset + count}) is outside the ${total}-element source (OperationError)`);
          checkRange(b, o, count * unit, `writeBuffer to '${b.label}'`);
        },
        submit: (cbs: { errors: string[] }[]) => {
          for (const cb of cbs) for (const e of cb.errors) error('validation', `submit: ${e}`);
        },
        onSubmittedWorkDone: async () => undefined,
      },
      createShaderModule: () => ({ getCompilationInfo: async () => ({ messages: [] }) }),
      createBindGroupLayout: (d: { entries: { binding: number; buffer: { type: string } }[] }) => ({ entries: d.entries }),
      createPipelineLayout: (d: { bindGroupLayouts: unknown[] }) => ({ groups: d.bindGroupLayouts }),
      createComputePipelineAsync: async (d: { layout: { groups: unknown[] } }) => ({ getBindGroupLayout: (i: number) => d.layout.groups[i] }),
      createBindGroup: (d: { label?: string; layout: { entries: { binding: number; buffer: { type: string } }[] }; entries: { binding: number; resource: { buffer: SimBuffer; offset?: number; size?: number } }[] }) => {
        if (d.entries.length !== d.layout.entries.length) error('validation', `bind group '${d.label}' has ${d.entries.length} entries for a layout of ${d.layout.entries.length}`);
        for (const e of d.entries) {
          const l = d.layout.entries.find((x) => x.binding === e.binding);
          if (!l) {
            error('validation', `bind group '${d.label}' binds ${e.binding}, which its layout does not have`);
            continue;
          }
          const { buffer, offset = 0 } = e.resource;
          const size = e.resource.size ?? buffer.size - offset;
          if (offset + size > buffer.size) error('validation', `bind group '${d.label}': binding ${e.binding} [${offset}, ${offset + size}) is outside buffer '${buffer.label}'`);
          if (l.buffer.type === 'uniform') {
            if (size > limits.maxUniformBufferBindingSize) error('validation', `bind group '${d.label}': uniform binding of ${size} bytes`);
            if (offset % 256) error('validation', `bind group '${d.label}': uniform offset ${offset} is not a multiple of 256`);
          } else {
            if (size > limits.maxStorageBufferBindingSize) error('validation', `bind group '${d.label}': storage binding ${e.binding} of ${size} bytes exceeds maxStorageBufferBindingSize ${limits.maxStorageBufferBindingSize}`);
            if (size % 4) error('validation', `bind group '${d.label}': storage binding ${e.binding} of ${size} bytes is not a multiple of 4`);
          }
        }
        return {};
      },
      createCommandEncoder: () => {
        const errors: string[] = [];
        return {
          beginComputePass: () => ({
            setPipeline: () => undefined,
            setBindGroup: () => undefined,
            dispatchWorkgroups: (x: unknown, y: unknown = 1, z: unknown = 1) => {
              const dims = [x, y, z].map((v, i) => enforceRange(v, U32, `dispatchWorkgroups ${'xyz'[i]}`));
              if (dims.some((n) => n > limits.maxComputeWorkgroupsPerDimension)) errors.push(`dispatchWorkgroups(${dims}) exceeds maxComputeWorkgroupsPerDimension ${limits.maxComputeWorkgroupsPerDimension}`);
            },
            end: () => undefined,
          }),
          copyBufferToBuffer: (src: SimBuffer, so: unknown, dst: SimBuffer, dso: unknown, size: unknown) => {
            const [a, b, n] = [enforceRange(so, U64, 'copy source offset'), enforceRange(dso, U64, 'copy destination offset'), enforceRange(size, U64, 'copy size')];
            if (a + n > src.size || b + n > dst.size || n % 4) errors.push(`copyBufferToBuffer of ${n} bytes from '${src.label}'@${a} (${src.size}) to '${dst.label}'@${b} (${dst.size})`);
          },
          finish: () => ({ errors }),
        };
      },
      createQuerySet: () => ({ destroy: () => undefined }),
      destroy: () => undefined,
    };
    this.handle = {
      device: device as unknown as GPUDevice,
      info,
      lost: new Promise(() => undefined),
      isLost: () => false,
      lostInfo: () => undefined,
      destroy: async () => undefined,
    };
  }
}
