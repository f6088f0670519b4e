/**
 * Matmul kernel benchmarks on a WebGPU device: GEMM f32 1024³ (gemm-subgroup, gemm-tiled, naive, and TensorFlow.js's
 * WebGPU backend when installed) and decode GEMV (weights stored [N, K]; 4096x4096 and 11008x4096; M = 1, 4, 16)
 * next to a plain WGSL copy kernel over the same weight bytes, all in one run on one device.
 *
 * Each benchmark cycle is one queue submit of the kernel followed by `onSubmittedWorkDone` (benchmark.js deferred
 * benchmarks), awaited the way the engine runtime awaits its steps: a {@link GpuWaiter} in the device's default mode
 * (`sleep-then-poll` on lavapipe, where Dawn's busy polling of the JS thread would take a core from the device), the
 * same waiter for every implementation, TensorFlow.js included. Run directly with `npx tsx bench/matmul.bench.ts`
 * (flags: `--quick`, `--no-tfjs`, `--json`, `--wait poll|sleep-then-poll`), or call {@link runMatmulBench} from the
 * bench runner.
 * @module
 */
import Benchmark from 'benchmark';
import { evalGrid, evalParams, type KernelSource } from '../src/codegen/kernel.js';
import { generateMatmulKernel, type MatmulSpec, type MatmulVariant } from '../src/codegen/matmul/index.js';
import { chooseMatmulVariant, type MatmulScheduleTarget } from '../src/codegen/schedule/matmul.js';
import { isSoftwareAdapter } from '../src/runtime/device.js';
import { defaultGpuWaitMode, GpuWaiter, type GpuWaitMode } from '../src/runtime/webgpu/gpu-wait.js';
import { runStandalone, splitRows } from './common.js';

/** One measured case. */
export interface MatmulBenchRow {
  /** What was measured, e.g. `gemm 1024x1024x1024 f32`. */
  readonly case: string;
  /** Implementation: a tensorwright kernel variant, `copy`, or `tfjs-webgpu`. */
  readonly impl: string;
  /** Mean seconds per cycle (submit + wait). */
  readonly seconds: number;
  /** Relative margin of error of the mean, in percent. */
  readonly rme: number;
  /** Samples taken. */
  readonly samples: number;
  /** Median seconds per cycle over the samples (each sample is benchmark.js's mean over its cycles). */
  readonly median?: number;
  /** Arithmetic throughput (2·M·N·K / time), for matmuls. */
  readonly gflops?: number;
  /** Memory traffic (bytes read + written / time): weights + activations for GEMV, read + write for copy. */
  readonly gbps?: number;
  /** Extra facts (ratio to the copy kernel, splits). */
  readonly note?: string;
}

/** Options of {@link runMatmulBench}. */
export interface MatmulBenchOptions {
  /** Fewer, shorter cases (GEMV 4096² only, M = 1 and 4, both weight layouts; short sampling). */
  readonly quick?: boolean;
  /** Also measure TensorFlow.js's WebGPU backend (default true; skipped with a note when it cannot be loaded). */
  readonly tfjs?: boolean;
  /** Max seconds of sampling per case (benchmark.js `maxTime`). Default 2 (1 when quick). */
  readonly maxTime?: number;
  /** Progress lines (default: none). */
  readonly log?: (line: string) => void;
  /** How each cycle awaits the GPU (default `poll`; the bench runners pass the device's {@link defaultGpuWaitMode}). */
  readonly wait?: GpuWaitMode;
}

/** Max bytes one binding may cover (`maxStorageBufferBindingSize`, at most 128 MiB on lavapipe). */
function bindingLimit(device: GPUDevice): number {
  return device.limits.maxStorageBufferBindingSize;
}

/** What the schedule rules read of `device`'s adapter (device class, features, subgroup size, limits). */
export function deviceInfoOf(device: GPUDevice): MatmulScheduleTarget {
  const ai = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  const min = ai?.subgroupMinSize;
  const sub = typeof min === 'number' && min > 0 ? { min, max: ai?.subgroupMaxSize ?? min } : undefined;
  return {
    deviceClass: isSoftwareAdapter(ai) ? 'software-gpu' : 'gpu',
    features: [...device.features],
    ...(sub ? { subgroupSize: sub } : {}),
    limits: { maxComputeInvocationsPerWorkgroup: device.limits.maxComputeInvocationsPerWorkgroup },
  };
}

/** A storage buffer filled with small pseudo-random f32 values. */
export function randomBuffer(device: GPUDevice, elements: number, seed: number): GPUBuffer {
  const bytes = Math.max(16, Math.ceil((elements * 4) / 16) * 16);
  const buf = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
  const data = new Float32Array(buf.getMappedRange());
  let s = seed >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = ((s >>> 0) / 4294967296 - 0.5) * 0.1;
  }
  buf.unmap();
  return buf;
}

/** A compiled kernel with bound buffers: `encode` records its dispatch(es). */
export interface Prepared {
  encode(pass: GPUComputePassEncoder): void;
}

async function compile(device: GPUDevice, wgsl: string, label: string): Promise<GPUComputePipeline> {
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code: wgsl, label });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length) {
    await device.popErrorScope();
    throw new Error(`${label}: WGSL error line ${errors[0].lineNum}: ${errors[0].message}`);
  }
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' }, label });
  const err = await device.popErrorScope();
  if (err) throw new Error(`${label}: ${err.message}`);
  return pipeline;
}

/** Binds `kernel` to `buffers` (in binding order) and a params uniform for `dims`. */
export async function prepareKernel(device: GPUDevice, kernel: KernelSource, buffers: readonly GPUBuffer[][]): Promise<Prepared> {
  const pipeline = await compile(device, kernel.wgsl, kernel.variant);
  const values = evalParams(kernel.params, {});
  const grid = kernel.grid.map((g) => evalGrid(g, kernel.params, values)) as [number, number, number];
  const groups = buffers.map((set) =>
    device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: set.map((buffer, binding) => ({ binding, resource: { buffer } })) }),
  );
  return {
    encode(pass) {
      pass.setPipeline(pipeline);
      for (const g of groups) {
        pass.setBindGroup(0, g);
        pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
      }
    },
  };
}

/** One submit of `p`, resolved (through `waiter`, learning under `key`) when the queue is done. */
export async function submitOnce(device: GPUDevice, p: Prepared, waiter: GpuWaiter, key: string): Promise<void> {
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  p.encode(pass);
  pass.end();
  device.queue.submit([enc.finish()]);
  await waiter.wait(key, performance.now(), () => device.queue.onSubmittedWorkDone());
}

/**
 * Measures `cycle` (one GPU submit and its wait) with benchmark.js (deferred) after three warm-up cycles; returns
 * mean seconds, rme, sample count and the median of the samples.
 */
export async function measureCycle(name: string, cycle: () => Promise<void>, maxTime: number): Promise<{ seconds: number; rme: number; samples: number; median: number }> {
  for (let i = 0; i < 3; i++) await cycle(); // warm-up: lavapipe compiles the shader on first use; the waiter learns the time
  return new Promise((resolve, reject) => {
    const bench = new Benchmark(name, {
      defer: true,
      async: true,
      minSamples: 3,
      initCount: 1,
      maxTime,
      fn: (deferred: Benchmark.Deferred) => {
        cycle().then(
          () => deferred.resolve(),
          (e: unknown) => {
            bench.abort();
            reject(e);
          },
        );
      },
    });
    bench.on('complete', () => {
      if (bench.error) reject(bench.error);
      else resolve({ seconds: bench.stats.mean, rme: bench.stats.rme, samples: bench.stats.sample.length, median: median(bench.stats.sample) });
    });
    bench.on('error', () => reject(bench.error));
    bench.run();
  });
}

/** The median of `xs` (the mean of the middle two for an even count). */
function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** WGSL of a plain vec4 copy kernel over `vec4s` elements (grid linearized over x and y). */
function copyKernelWGSL(vec4s: number, gridX: number): string {
  return [
    '// tensorwright benchmark: plain copy (bandwidth baseline)',
    `const VEC4S: u32 = ${vec4s}u;`,
    'const WORKGROUP_SIZE: u32 = 256u;',
    `const GRID_X: u32 = ${gridX}u;`,
    '@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;',
    '@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;',
    '@compute @workgroup_size(WORKGROUP_SIZE)',
    'fn main(@builtin(global_invocation_id) gid: vec3<u32>) {',
    '  let i = gid.x + gid.y * GRID_X * WORKGROUP_SIZE;',
    '  if (i < VEC4S) { dst[i] = src[i]; }',
    '}',
    '',
  ].join('\n');
}

interface TfjsHandle {
  matMul(M: number, N: number, K: number, transB: boolean): Promise<(() => Promise<void>) & { dispose(): void }>;
  version: string;
}

/**
 * TensorFlow.js's WebGPU backend on `device`: registers a backend built around our device (tfjs-backend-webgpu
 * exports `WebGPUBackend(device, adapterInfo)`), and hides a placeholder `navigator.gpu` only while importing and
 * constructing it (tfjs checks `navigator.gpu` to decide that WebGPU exists; our own device code must keep seeing
 * no `navigator.gpu` in Node).
 */
async function loadTfjs(device: GPUDevice, waiter: GpuWaiter): Promise<TfjsHandle> {
  const g = globalThis as unknown as { navigator?: { gpu?: unknown } };
  const hadNavigator = 'navigator' in globalThis;
  const savedGpu = g.navigator?.gpu;
  const coreSpec = '@tensorflow/tfjs-core';
  const backendSpec = '@tensorflow/tfjs-backend-webgpu';
  // typed locally: importing tfjs-core's own types drags in an old @webgpu/types that clashes with ours
  interface TfTensor {
    dispose(): void;
  }
  interface Tf {
    findBackendFactory(name: string): unknown;
    removeBackend(name: string): void;
    registerBackend(name: string, factory: () => never): boolean;
    setBackend(name: string): Promise<boolean>;
    ready(): Promise<void>;
    backend(): unknown;
    version_core: string;
    randomUniform(shape: number[], lo: number, hi: number): TfTensor;
    matMul(a: TfTensor, b: TfTensor, transA: boolean, transB: boolean): TfTensor;
  }
  let tf: Tf;
  try {
    if (!g.navigator) Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true });
    if (!g.navigator!.gpu) (g.navigator as { gpu?: unknown }).gpu = {};
    tf = (await import(coreSpec)) as Tf;
    const wgpu = (await import(backendSpec)) as { WebGPUBackend: new (device: GPUDevice, info?: GPUAdapterInfo) => unknown };
    const ai = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
    const backend = new wgpu.WebGPUBackend(device, ai);
    // tfjs registers its kernels for the backend name 'webgpu': replace its own factory (which would request an
    // adapter through navigator.gpu) by one returning a backend on our device
    if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
    tf.registerBackend('webgpu', () => backend as never);
    if (!(await tf.setBackend('webgpu'))) throw new Error('tf.setBackend failed');
    await tf.ready();
  } finally {
    if (g.navigator) {
      if (savedGpu === undefined) delete (g.navigator as { gpu?: unknown }).gpu;
      else (g.navigator as { gpu?: unknown }).gpu = savedGpu;
    }
    if (!hadNavigator) delete (globalThis as { navigator?: unknown }).navigator;
  }
  // tfjs records into an open compute pass and submits lazily: end the pass and submit explicitly each cycle
  const backend = tf.backend() as unknown as { ensureCommandEncoderReady(): void; endComputePassEncoder(): void; submitQueue(): void };
  for (const m of ['ensureCommandEncoderReady', 'endComputePassEncoder', 'submitQueue'] as const)
    if (typeof backend[m] !== 'function') throw new Error(`this tfjs-backend-webgpu has no ${m}() to flush its queue`);
  return {
    version: tf.version_core,
    async matMul(M, N, K, transB) {
      const a = tf.randomUniform([M, K], -0.05, 0.05);
      const b = tf.randomUniform(transB ? [N, K] : [K, N], -0.05, 0.05);
      const run = async (): Promise<void> => {
        const c = tf.matMul(a, b, false, transB);
        backend.ensureCommandEncoderReady();
        backend.endComputePassEncoder();
        backend.submitQueue();
        await waiter.wait(`tfjs ${M}x${N}x${K}${transB ? ' transB' : ''}`, performance.now(), () => device.queue.onSubmittedWorkDone());
        c.dispose();
      };
      return Object.assign(run, {
        dispose: () => {
          a.dispose();
          b.dispose();
        },
      });
    },
  };
}

function fmt(x: number | undefined, digits = 1): string {
  return x === undefined ? '' : x.toFixed(digits);
}

/** The rows as an aligned text table. */
export function formatMatmulBench(rows: readonly MatmulBenchRow[]): string {
  const head = ['case', 'impl', 'ms', '±%', 'GFLOP/s', 'GB/s', 'note'];
  const body = rows.map((r) => [r.case, r.impl, fmt(r.seconds * 1000, 2), fmt(r.rme, 1), fmt(r.gflops), fmt(r.gbps), r.note ?? '']);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  return [head, ...body].map((cells) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

/**
 * Runs the matmul benchmarks on `device` and returns one row per case. GEMM rows report GFLOP/s; GEMV and copy rows
 * also report GB/s of memory traffic, and each GEMV row's note gives its ratio to the copy kernel's GB/s over the
 * same weight bytes (the goal is ≥ 70% for 4096²). Weights larger than one storage binding are split by rows
 * (one dispatch per part, all in one submit).
 */
export async function runMatmulBench(device: GPUDevice, options: MatmulBenchOptions = {}): Promise<MatmulBenchRow[]> {
  const quick = options.quick ?? false;
  const maxTime = options.maxTime ?? (quick ? 1 : 2);
  const log = options.log ?? (() => {});
  const waiter = new GpuWaiter({ mode: options.wait ?? 'poll' });
  log(`host wait: ${waiter.mode} (the same for every implementation)`);
  const rows: MatmulBenchRow[] = [];
  const push = (r: MatmulBenchRow): void => {
    rows.push(r);
    log(`${r.case} | ${r.impl}: ${fmt(r.seconds * 1000, 2)} ms${r.gflops !== undefined ? `, ${fmt(r.gflops)} GFLOP/s` : ''}${r.gbps !== undefined ? `, ${fmt(r.gbps)} GB/s` : ''}${r.note ? ` (${r.note})` : ''}`);
  };
  const info = deviceInfoOf(device);
  const hasSubgroups = device.features.has('subgroups');
  const limit = bindingLimit(device);

  // --- GEMM 1024³ f32
  const S = 1024;
  const gemmCase = `gemm ${S}x${S}x${S} f32`;
  const flops = 2 * S * S * S;
  {
    const a = randomBuffer(device, S * S, 1);
    const b = randomBuffer(device, S * S, 2);
    const out = randomBuffer(device, S * S, 3);
    const variants: MatmulVariant[] = [
      // the subgroup variant needs a fixed subgroup size; the lavapipe heuristic picks its tuning
      ...(hasSubgroups && info.subgroupSize && info.subgroupSize.min === info.subgroupSize.max
        ? [chooseMatmulVariant({ M: S, N: S, K: S }, { ...info, deviceClass: 'software-gpu' }), { kind: 'gemm-subgroup', subgroupSize: info.subgroupSize.min, rowsPerLane: 1, colsPerLane: 4 } as MatmulVariant]
        : []),
      { kind: 'gemm-tiled' },
      { kind: 'naive' },
    ];
    for (const v of variants) {
      const k = generateMatmulKernel({ M: S, N: S, K: S, variant: v });
      const p = await prepareKernel(device, k, [[a, b, out]]);
      const m = await measureCycle(k.variant, () => submitOnce(device, p, waiter, `${gemmCase} ${k.variant}`), maxTime);
      push({ case: gemmCase, impl: k.variant, ...m, gflops: flops / m.seconds / 1e9 });
    }
    for (const buf of [a, b, out]) buf.destroy();
  }
  let tf: TfjsHandle | undefined;
  if (options.tfjs ?? true) {
    try {
      tf = await loadTfjs(device, waiter);
    } catch (e) {
      log(`tfjs-webgpu skipped: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  if (tf) {
    const run = await tf.matMul(S, S, S, false);
    const m = await measureCycle('tfjs', run, maxTime);
    run.dispose();
    push({ case: gemmCase, impl: `tfjs-webgpu ${tf.version}`, ...m, gflops: flops / m.seconds / 1e9 });
  }
  const gemmRows = rows.filter((r) => r.case === gemmCase);
  const naive = gemmRows.find((r) => r.impl.startsWith('naive'));
  const tfRow = gemmRows.find((r) => r.impl.startsWith('tfjs'));
  const withRatios = gemmRows.map((r) => ({
    ...r,
    note: [naive && r !== naive ? `${(naive.seconds / r.seconds).toFixed(1)}x naive` : '', tfRow && r !== tfRow ? `${(tfRow.seconds / r.seconds).toFixed(1)}x tfjs` : ''].filter(Boolean).join(', ') || undefined,
  }));
  rows.splice(0, gemmRows.length, ...withRatios);

  // --- decode GEMV, weights [N, K], with the copy kernel over the same bytes
  const shapes: [number, number][] = quick ? [[4096, 4096]] : [[4096, 4096], [11008, 4096]];
  const ms = quick ? [1, 4] : [1, 4, 16];
  for (const [N, K] of shapes) {
    const parts = splitRows(N, K, limit);
    const weights = parts.map((n, i) => randomBuffer(device, n * K, 10 + i));
    const copies = parts.map((n) => device.createBuffer({ size: n * K * 4, usage: GPUBufferUsage.STORAGE }));
    const splitNote = parts.length > 1 ? `weights split in ${parts.length} bindings` : '';
    // copy
    const copyParts = await Promise.all(
      parts.map(async (n, i) => {
        const vec4s = (n * K) / 4;
        const groups = Math.ceil(vec4s / 256);
        const gx = Math.min(groups, 65535);
        const pipeline = await compile(device, copyKernelWGSL(vec4s, gx), 'copy');
        const bg = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [weights[i], copies[i]].map((buffer, binding) => ({ binding, resource: { buffer } })) });
        return { pipeline, bg, grid: [gx, Math.ceil(groups / gx)] as const };
      }),
    );
    const copy: Prepared = {
      encode(pass) {
        for (const c of copyParts) {
          pass.setPipeline(c.pipeline);
          pass.setBindGroup(0, c.bg);
          pass.dispatchWorkgroups(c.grid[0], c.grid[1]);
        }
      },
    };
    const weightBytes = N * K * 4;
    const cm = await measureCycle('copy', () => submitOnce(device, copy, waiter, `copy ${N}x${K}`), maxTime);
    const copyGbps = (2 * weightBytes) / cm.seconds / 1e9;
    push({ case: `copy ${N}x${K} f32 (${(weightBytes / 2 ** 20).toFixed(0)} MiB)`, impl: 'copy', ...cm, gbps: copyGbps, note: `read+write; read-only rate ${fmt(weightBytes / cm.seconds / 1e9)} GB/s${splitNote ? `; ${splitNote}` : ''}` });
    for (const M of ms) {
      const x = randomBuffer(device, M * K, 20 + M);
      const outs = parts.map((n) => randomBuffer(device, M * n, 30));
      const specOf = (n: number): MatmulSpec => ({ M, N: n, K, transB: true });
      const variant = chooseMatmulVariant(specOf(N), info);
      const kernels = parts.map((n) => generateMatmulKernel({ ...specOf(n), variant }));
      // all parts of one shape share one kernel when they are the same size
      const prepared = await Promise.all(kernels.map((k, i) => prepareKernel(device, k, [[x, weights[i], outs[i]]])));
      const p: Prepared = { encode: (pass) => prepared.forEach((q) => q.encode(pass)) };
      const m = await measureCycle(kernels[0].variant, () => submitOnce(device, p, waiter, `gemv ${M}x${N}x${K}`), maxTime);
      const traffic = weightBytes + M * K * 4 + M * N * 4;
      const gbps = traffic / m.seconds / 1e9;
      push({
        case: `gemv M=${M} ${N}x${K} f32 W[N,K]`,
        impl: kernels[0].variant,
        ...m,
        gflops: (2 * M * N * K) / m.seconds / 1e9,
        gbps,
        note: `${((gbps / copyGbps) * 100).toFixed(0)}% of copy GB/s${splitNote ? `; ${splitNote}` : ''}`,
      });
      if (tf && M === 1 && N === 4096) {
        const run = await tf.matMul(M, N, K, true);
        const t = await measureCycle('tfjs gemv', run, maxTime);
        run.dispose();
        const g2 = traffic / t.seconds / 1e9;
        push({
          case: `gemv M=${M} ${N}x${K} f32 W[N,K]`,
          impl: `tfjs-webgpu ${tf.version}`,
          ...t,
          gflops: (2 * M * N * K) / t.seconds / 1e9,
          gbps: g2,
          note: `${((g2 / copyGbps) * 100).toFixed(0)}% of copy GB/s; tensorwright's gemv is ${(t.seconds / m.seconds).toFixed(1)}x faster`,
        });
      }
      x.destroy();
      for (const o of outs) o.destroy();
    }
    if (N === 4096) {
      // the same decode product with the weights stored [K, N] (no transpose): why weights should be stored [N, K]
      const x = randomBuffer(device, K, 40);
      const w = randomBuffer(device, N * K, 41);
      const out = randomBuffer(device, N, 42);
      const spec: MatmulSpec = { M: 1, N, K, transB: false };
      const k = generateMatmulKernel({ ...spec, variant: chooseMatmulVariant(spec, info) });
      const p = await prepareKernel(device, k, [[x, w, out]]);
      const m = await measureCycle(k.variant, () => submitOnce(device, p, waiter, `gemv ${N}x${K} [K,N]`), maxTime);
      const traffic = weightBytes + K * 4 + N * 4;
      const nk = rows.find((r) => r.case === `gemv M=1 ${N}x${K} f32 W[N,K]` && !r.impl.startsWith('tfjs'));
      push({
        case: `gemv M=1 ${N}x${K} f32 W[K,N]`,
        impl: k.variant,
        ...m,
        gflops: (2 * N * K) / m.seconds / 1e9,
        gbps: traffic / m.seconds / 1e9,
        note: nk ? `W[N,K] is ${(m.seconds / nk.seconds).toFixed(1)}x faster` : undefined,
      });
      if (tf) {
        // TensorFlow.js's own layout for dense weights (tf.layers.dense keeps its kernel [in, out] = [K, N])
        const run = await tf.matMul(1, N, K, false);
        const t = await measureCycle('tfjs gemv [K,N]', run, maxTime);
        run.dispose();
        push({
          case: `gemv M=1 ${N}x${K} f32 W[K,N]`,
          impl: `tfjs-webgpu ${tf.version}`,
          ...t,
          gflops: (2 * N * K) / t.seconds / 1e9,
          gbps: traffic / t.seconds / 1e9,
          note: nk ? `tensorwright's W[N,K] gemv is ${(t.seconds / nk.seconds).toFixed(1)}x faster` : undefined,
        });
      }
      for (const b of [x, w, out]) b.destroy();
    }
    for (const buf of [...weights, ...copies]) buf.destroy();
  }
  return rows;
}

runStandalone(import.meta.url, { label: 'matmul-bench', run: (device, o) => runMatmulBench(device, { quick: o.quick, tfjs: !o.args.includes('--no-tfjs'), wait: o.wait, log: o.log }), format: formatMatmulBench });
