/**
 * Helpers the kernel benchmarks share: weight payloads as storage buffers, reading a buffer back, splitting a dense
 * weight that outgrows one storage binding, and the compiler's {@link Target} for a bench's device.
 * @module
 */
import { createTarget } from '../src/codegen/target.js';
import type { Target } from '../src/ir/target.js';
import type { WeightArray, WeightEntry } from '../src/ir/weights.js';
import type { DeviceInfo } from '../src/runtime/device.js';
import { defaultGpuWaitMode, type GpuWaitMode } from '../src/runtime/webgpu/gpu-wait.js';
import { pathToFileURL } from 'node:url';

/** A storage buffer holding `data`'s bytes (padded to 16). */
export function bufferOf(device: GPUDevice, data: WeightArray): GPUBuffer {
  const buf = device.createBuffer({ size: Math.max(16, Math.ceil(data.byteLength / 16) * 16), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  buf.unmap();
  return buf;
}

/** Bytes of a weight's payload (every part: packed integers or indices, scales, zero points, tables, …). */
export function payloadBytes(e: WeightEntry): number {
  return Object.values(e.data).reduce((a, d) => a + d.byteLength, 0);
}

/** The first `elements` f32 values of `buf` (which needs `COPY_SRC`), copied back to the host. */
export async function readF32(device: GPUDevice, buf: GPUBuffer, elements: number): Promise<Float32Array> {
  const bytes = elements * 4;
  const read = device.createBuffer({ size: Math.max(16, bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buf, 0, read, 0, bytes);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(read.getMappedRange(0, bytes).slice(0));
  read.unmap();
  read.destroy();
  return out;
}

/** Splits N rows of a [N, K] f32 weight into parts of whole rows (multiples of 4) that each fit one storage binding. */
export function splitRows(n: number, k: number, limit: number): number[] {
  const parts = Math.ceil((n * k * 4) / limit);
  const base = Math.ceil(n / parts / 4) * 4;
  const out: number[] = [];
  for (let left = n; left > 0; left -= base) out.push(Math.min(base, left));
  return out;
}

/**
 * The compiler's {@link Target} for `device` (what `compile({ device })` builds from the handle's info): the
 * adapter, enabled features, every numeric limit and the subgroup sizes, read off the device, and the WGSL language
 * features (the GPU object's, not the device's: pass the handle's `info.wgslLanguageFeatures`).
 */
export function targetOf(device: GPUDevice, languageFeatures?: readonly string[]): Target {
  const ai = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  const limits: Record<string, number> = {};
  // the limits are accessors on the prototype, so for…in (not Object.keys) lists them
  for (const name in device.limits) {
    const v: unknown = Reflect.get(device.limits, name);
    if (typeof v === 'number') limits[name] = v;
  }
  const min = ai?.subgroupMinSize;
  const max = ai?.subgroupMaxSize;
  const info: DeviceInfo = {
    backend: 'node-dawn',
    adapter: { vendor: ai?.vendor ?? '', architecture: ai?.architecture ?? '', device: ai?.device ?? '', description: ai?.description ?? '', isFallbackAdapter: Boolean(ai?.isFallbackAdapter) },
    features: [...device.features].sort(),
    missingFeatures: [],
    limits,
    ...(typeof min === 'number' && typeof max === 'number' && min > 0 ? { subgroupSize: { min, max } } : {}),
    // the WGSL language features are the GPU object's (the `webgpu` package installs navigator.gpu only in browsers)
    ...(languageFeatures ? { wgslLanguageFeatures: [...languageFeatures].sort() } : {}),
  };
  return createTarget(info);
}

/** What a kernel bench module gives {@link runStandalone}: how to run it on a device and how to print its rows. */
export interface StandaloneBench<Row> {
  /** The device label, e.g. `quant-matmul-bench`. */
  readonly label: string;
  /** Runs the bench; `quick`, the host wait and a progress logger come from the command line. */
  run(device: GPUDevice, o: { quick: boolean; wait: GpuWaitMode; log: (line: string) => void; args: readonly string[]; languageFeatures: readonly string[] }): Promise<Row[]>;
  /** The rows as a table (without `--json`). */
  format(rows: Row[]): string;
}

/**
 * Runs a kernel bench module as a command (`npx tsx bench/X.bench.ts [--quick] [--json] [--wait poll|sleep-then-poll]`)
 * when `moduleUrl` is the script node was started with: the device's description to stderr, the rows to stdout.
 */
export function runStandalone<Row>(moduleUrl: string, bench: StandaloneBench<Row>): void {
  if (!(process.argv[1] && moduleUrl === pathToFileURL(process.argv[1]).href)) return;
  const main = async (): Promise<void> => {
    const args = process.argv.slice(2);
    const { requestGPUDevice, describeDevice } = await import('../src/runtime/device.js');
    const handle = await requestGPUDevice({ label: bench.label });
    try {
      process.stderr.write(`device: ${describeDevice(handle.info)}\n`);
      const waitArg = args.includes('--wait') ? args[args.indexOf('--wait') + 1] : undefined;
      if (waitArg !== undefined && waitArg !== 'poll' && waitArg !== 'sleep-then-poll') throw new Error(`--wait must be poll or sleep-then-poll, got ${waitArg}`);
      const wait = (waitArg as GpuWaitMode | undefined) ?? defaultGpuWaitMode(handle.info);
      const rows = await bench.run(handle.device, { quick: args.includes('--quick'), wait, log: (l) => process.stderr.write(`  ${l}\n`), args, languageFeatures: handle.info.wgslLanguageFeatures ?? [] });
      process.stdout.write(args.includes('--json') ? `${JSON.stringify(rows, null, 2)}\n` : `${bench.format(rows)}\n`);
    } finally {
      await handle.destroy();
    }
  };
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  });
}
