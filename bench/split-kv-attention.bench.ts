/**
 * Decode attention over a paged context, batch 1 (one query row): the single-pass tiled `decode` kernel (one workgroup
 * per KV head walks every key), `split-kv` (flash-decoding: one workgroup per KV head and split of 256 keys, then the
 * merge; contexts of 1024 keys and more) and, on devices with one fixed subgroup size, `decode-subgroup` (one subgroup
 * per query head, lanes taking the keys in turn), on the device at hand. Each cycle is one submit of the attention's dispatches (one, or the partial
 * kernel and the merge) and a wait, as the engine runs them. Heads as a 7B llama (32 query heads, 8 KV heads of 128)
 * and as a small model (8 heads of 64), f32 pools of 16-token blocks, contexts of 64, 1024 and 4096 keys (64 and
 * 1024 with `--quick`). Run with `npx tsx bench/split-kv-attention.bench.ts [--quick] [--json]`.
 *
 * On software rasterizers (lavapipe: a few CPU cores) the KV heads alone fill the device, so splitting only adds the
 * merge: the schedule rule keeps single pass there. The case for splitting is GPUs with far more cores than KV heads.
 * @module
 */
import { generatePagedAttentionKernel, generateSplitKvMergeKernel, type AttentionVariant } from '../src/codegen/attention.js';
import { evalGrid, evalParams, type KernelSource } from '../src/codegen/kernel.js';
import { decodeRowLanes, splitKvVariant } from '../src/codegen/schedule/attention.js';
import { isSoftwareAdapter } from '../src/runtime/device.js';
import { GpuWaiter, type GpuWaitMode } from '../src/runtime/webgpu/gpu-wait.js';
import { runStandalone } from './common.js';
import { measureCycle } from './matmul.bench.js';

/** One measured case. */
export interface SplitKvBenchRow {
  /** Heads and context. */
  readonly case: string;
  /** Kernel variant (the partial kernel's for split-KV). */
  readonly impl: string;
  /** Median ms per cycle (submit + wait). */
  readonly ms: number;
  /** Relative margin of error of the mean, percent. */
  readonly rme: number;
}

const BLOCK = 16;

function storage(device: GPUDevice, bytes: number, fill?: (i: number) => number): GPUBuffer {
  const buf = device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, mappedAtCreation: true });
  if (fill) {
    const a = new Float32Array(buf.getMappedRange());
    for (let i = 0; i < a.length; i++) a[i] = fill(i);
  }
  buf.unmap();
  return buf;
}

async function pipelineOf(device: GPUDevice, k: KernelSource, buffers: GPUBuffer[], dims: Record<string, number>): Promise<(pass: GPUComputePassEncoder) => void> {
  const values = evalParams(k.params, dims);
  const params = device.createBuffer({ size: Math.max(16, values.byteLength), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(params, 0, values.buffer as ArrayBuffer, 0, values.byteLength);
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: k.wgsl }), entryPoint: 'main' } });
  const entries: GPUBindGroupEntry[] = buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));
  if (k.params.length) entries.push({ binding: buffers.length, resource: { buffer: params } });
  const bg = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  const grid = k.grid.map((g) => evalGrid(g, k.params, values)) as [number, number, number];
  return (pass) => {
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bg);
    pass.dispatchWorkgroups(...grid);
  };
}

async function measure(device: GPUDevice, heads: { Hq: number; Hkv: number; D: number }, ctx: number, variant: AttentionVariant, software: boolean, wait: GpuWaitMode, maxTime: number): Promise<SplitKvBenchRow> {
  const { Hq, Hkv, D } = heads;
  const spec = { numHeads: Hq, numKvHeads: Hkv, headDim: D, dtype: 'f32' as const, causal: true, blockSize: BLOCK, ragged: true, staticLoops: !software, variant };
  const k = generatePagedAttentionKernel(spec);
  const blocks = Math.ceil(ctx / BLOCK);
  const q = storage(device, Hq * D * 4, (i) => Math.sin(i) * 0.5);
  const kPool = storage(device, blocks * BLOCK * Hkv * D * 4, (i) => Math.cos(i * 0.37) * 0.5);
  const vPool = storage(device, blocks * BLOCK * Hkv * D * 4, (i) => Math.sin(i * 0.11));
  const table = storage(device, blocks * 4);
  device.queue.writeBuffer(table, 0, Uint32Array.from({ length: blocks }, (_v, i) => (i * 7) % blocks));
  const positions = storage(device, 4);
  device.queue.writeBuffer(positions, 0, Int32Array.of(ctx - 1));
  const rowSeq = storage(device, 4);
  const out = storage(device, Hq * D * 4);
  const dims = { seq: 1, table_stride: blocks };
  const made = [q, kPool, vPool, table, positions, rowSeq, out];
  const steps: ((pass: GPUComputePassEncoder) => void)[] = [];
  if (variant.kind === 'split-kv') {
    const splits = k.grid[2] as number;
    const partials = storage(device, Hq * splits * (D + 2) * 4);
    made.push(partials);
    steps.push(await pipelineOf(device, k, [q, kPool, vPool, table, positions, rowSeq, partials], dims));
    steps.push(await pipelineOf(device, generateSplitKvMergeKernel({ numHeads: Hq, valueDim: D, splits, dtype: 'f32' }), [partials, out], dims));
  } else steps.push(await pipelineOf(device, k, [q, kPool, vPool, table, positions, rowSeq, out], dims));
  const waiter = new GpuWaiter({ mode: wait });
  const name = `${k.variant} ${ctx}`;
  const cycle = async (): Promise<void> => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const s of steps) s(pass);
    pass.end();
    device.queue.submit([enc.finish()]);
    await waiter.wait(name, performance.now(), () => device.queue.onSubmittedWorkDone());
  };
  const m = await measureCycle(name, cycle, maxTime);
  for (const b of made) b.destroy();
  return { case: `Hq ${Hq} / Hkv ${Hkv} x ${D}, ${ctx} keys, batch 1`, impl: k.variant, ms: m.median * 1000, rme: m.rme };
}

/** Runs the bench (see the module comment). */
export async function runSplitKvBench(device: GPUDevice, o: { quick: boolean; wait: GpuWaitMode; log: (line: string) => void }): Promise<SplitKvBenchRow[]> {
  const ai = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  const software = isSoftwareAdapter(ai);
  const min = (ai as { subgroupMinSize?: number } | undefined)?.subgroupMinSize;
  const subgroupSize = device.features.has('subgroups') && min !== undefined && min === (ai as { subgroupMaxSize?: number }).subgroupMaxSize ? min : undefined;
  const rows: SplitKvBenchRow[] = [];
  for (const heads of [{ Hq: 32, Hkv: 8, D: 128 }, { Hq: 8, Hkv: 8, D: 64 }])
    for (const ctx of o.quick ? [64, 1024] : [64, 1024, 4096]) {
      const rowLanes = decodeRowLanes(heads.D, heads.D, software);
      const variants: AttentionVariant[] = [{ kind: 'decode', rowLanes }, { ...splitKvVariant(ctx), rowLanes }];
      // the subgroup decode layout where the device has one fixed subgroup size (what its schedule rule needs)
      if (subgroupSize !== undefined) variants.push({ kind: 'decode-subgroup', subgroupSize });
      for (const variant of variants) {
        if (variant.kind === 'split-kv' && ctx < 1024) continue;
        const r = await measure(device, heads, ctx, variant, software, o.wait, o.quick ? 0.5 : 1.5);
        o.log(`${r.case}: ${r.impl} ${r.ms.toFixed(3)} ms`);
        rows.push(r);
      }
    }
  return rows;
}

/** The rows as a table. */
export function formatSplitKvBench(rows: SplitKvBenchRow[]): string {
  const lines = ['| case | kernel | median ms | ±% |', '|---|---|---|---|'];
  for (const r of rows) lines.push(`| ${r.case} | ${r.impl} | ${r.ms.toFixed(3)} | ${r.rme.toFixed(1)} |`);
  return lines.join('\n');
}

runStandalone(import.meta.url, { label: 'split-kv-attention-bench', run: (device, o) => runSplitKvBench(device, o), format: formatSplitKvBench });
