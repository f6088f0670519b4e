/**
 * Sparse matmul kernel benchmarks on a WebGPU device: decode GEMV (M = 1, weights stored [N, K]; 1024², 2048² and
 * 4096², or 1024² only with `--quick`) over a block-sparse
 * weight at densities 0.5, 0.25 and 0.1 (32x32 and 16x16 blocks) and over a 2:4-pruned weight, next to the dense f32
 * GEMV of the same shape, all in one run on one device with the same host wait (see bench/matmul.bench.ts for how a
 * cycle is measured). Each row's note gives its speed-up over the dense GEMV of its shape. Run directly with
 * `npx tsx bench/sparse-matmul.bench.ts` (flags: `--quick`, `--json`, `--wait poll|sleep-then-poll`), or call
 * {@link runSparseMatmulBench} from the bench runner.
 * @module
 */
import type { KernelSource } from '../src/codegen/kernel.js';
import { generateMatmulKernel } from '../src/codegen/matmul/index.js';
import { generateBlockSparseGemvKernel, type BlockSparseMatmulSpec } from '../src/codegen/matmul/block-sparse-gemv.js';
import { generateSparseNMGemvKernel, type SparseNMMatmulSpec } from '../src/codegen/matmul/sparse-nm-gemv.js';
import { chooseMatmulVariant } from '../src/codegen/schedule/matmul.js';
import { chooseBlockSparseVariant, chooseSparseNMVariant } from '../src/codegen/schedule/sparse-matmul.js';
import { pruneNM, toBlockSparse } from '../src/ir/sparsify.js';
import { defaultGpuWaitMode, GpuWaiter, type GpuWaitMode } from '../src/runtime/webgpu/gpu-wait.js';
import { Rng } from '../src/util/random.js';
import { bufferOf, payloadBytes, runStandalone } from './common.js';
import { deviceInfoOf, formatMatmulBench, measureCycle, prepareKernel, randomBuffer, submitOnce, type MatmulBenchRow } from './matmul.bench.js';

/** Options of {@link runSparseMatmulBench}. */
export interface SparseMatmulBenchOptions {
  /** One shape (1024x1024) instead of three, and short sampling. */
  readonly quick?: boolean;
  /** Max seconds of sampling per case (benchmark.js `maxTime`). Default 2 (1 when quick). */
  readonly maxTime?: number;
  /** Progress lines (default: none). */
  readonly log?: (line: string) => void;
  /** How each cycle awaits the GPU (default `poll`; the bench runners pass the device's {@link defaultGpuWaitMode}). */
  readonly wait?: GpuWaitMode;
}

/**
 * Runs the sparse GEMV benchmarks on `device` and returns one row per case: the dense f32 GEMV, then 2:4 and
 * block-sparse at each density, per shape. GB/s counts the bytes each kernel's weight occupies plus x and out.
 */
export async function runSparseMatmulBench(device: GPUDevice, options: SparseMatmulBenchOptions = {}): Promise<MatmulBenchRow[]> {
  const quick = options.quick ?? false;
  const maxTime = options.maxTime ?? (quick ? 1 : 2);
  const log = options.log ?? (() => {});
  const waiter = new GpuWaiter({ mode: options.wait ?? 'poll' });
  const firstUse = new GpuWaiter({ mode: 'poll' });
  const target = deviceInfoOf(device);
  const rows: MatmulBenchRow[] = [];
  for (const [N, K] of quick ? [[1024, 1024]] : [[1024, 1024], [2048, 2048], [4096, 4096]]) {
    const shape = `gemv M=1 ${N}x${K}`;
    const dense = new Rng(N + K).normals(N * K, 0.05);
    const x = randomBuffer(device, K, 1);
    const out = randomBuffer(device, N, 2);
    let denseSeconds = 0;
    /** Measures `kernel` bound to x, the weight `parts`, out; pushes its row. */
    const measure = async (kernel: KernelSource, parts: GPUBuffer[], weightBytes: number, what: string): Promise<void> => {
      const p = await prepareKernel(device, kernel, [[x, ...parts, out]]);
      // lavapipe compiles the pipeline on its first dispatch: keep that (hundreds of ms) out of the waiter's estimate
      await submitOnce(device, p, firstUse, 'first use');
      const m = await measureCycle(`${shape} ${what}`, () => submitOnce(device, p, waiter, `${shape} ${what}`), maxTime);
      if (!denseSeconds) denseSeconds = m.seconds;
      rows.push({
        case: `${shape} ${what}`,
        impl: kernel.variant,
        ...m,
        gbps: (weightBytes + 4 * (K + N)) / m.seconds / 1e9,
        note: `${(denseSeconds / m.seconds).toFixed(2)}x dense (weight ${(weightBytes / 2 ** 20).toFixed(2)} MiB)`,
      });
      log(`${rows[rows.length - 1].case}: ${(m.seconds * 1000).toFixed(2)} ms`);
    };
    const w = bufferOf(device, dense);
    await measure(generateMatmulKernel({ M: 1, N, K, transB: true, variant: chooseMatmulVariant({ M: 1, N, K, transB: true }, target) }), [w], N * K * 4, 'dense f32');
    w.destroy();
    const nm = pruneNM('w', [N, K], dense, { n: 2, m: 4 });
    const nmSpec: SparseNMMatmulSpec = { M: 1, N, K, transB: true, weight: { n: 2, m: 4, indexBits: nm.encoding.kind === 'sparse-nm' ? nm.encoding.indexBits ?? 8 : 8 } };
    const nmParts = [bufferOf(device, nm.data.values), bufferOf(device, nm.data.indices)];
    await measure(generateSparseNMGemvKernel(nmSpec, chooseSparseNMVariant(nmSpec, target)), nmParts, payloadBytes(nm), '2:4');
    for (const b of nmParts) b.destroy();
    for (const block of [32, 16])
      for (const density of [0.5, 0.25, 0.1]) {
        const bs = toBlockSparse('w', [N, K], dense, { blockRows: block, blockCols: block, density });
        const spec: BlockSparseMatmulSpec = { M: 1, N, K, transB: true, weight: { blockRows: block, blockCols: block } };
        const parts = [bufferOf(device, bs.data.rowPtr), bufferOf(device, bs.data.colIdx), bufferOf(device, bs.data.blocks)];
        await measure(generateBlockSparseGemvKernel(spec, chooseBlockSparseVariant(spec, target)), parts, payloadBytes(bs), `block ${block}x${block} density ${density}`);
        for (const b of parts) b.destroy();
      }
    x.destroy();
    out.destroy();
  }
  return rows;
}

runStandalone(import.meta.url, { label: 'sparse-matmul-bench', run: (device, o) => runSparseMatmulBench(device, { quick: o.quick, wait: o.wait, log: o.log }), format: formatMatmulBench });
